//! Dropout: in training, each value kept with probability `1 − p` and
//! scaled by `1 / (1 − p)`; the identity at inference, so nothing on the
//! device or in the exported graph.

use anyhow::Result;
use rand::{Rng, RngCore};

use super::layer::{Device, LayerKind, Saved};
use super::onnx::{Builder, Cursor};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dropout {
    pub p: f32,
}

impl LayerKind for Dropout {
    fn forward(&self, x: &[f32], _: usize) -> Vec<f32> {
        x.to_vec()
    }

    fn forward_owned(&self, x: Vec<f32>, _: usize) -> Vec<f32> {
        x
    }

    fn forward_train(&self, x: &[f32], _: usize, rng: &mut dyn RngCore) -> (Vec<f32>, Saved) {
        let keep = 1.0 - self.p;
        let mask: Vec<f32> = (0..x.len()).map(|_| if rng.random::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
        let out = x.iter().zip(&mask).map(|(v, k)| v * k).collect();
        (out, Saved::Mask(mask))
    }

    fn backward(&self, _: &[f32], saved: &Saved, d: &mut Vec<f32>, _: usize, _: &mut [Vec<f32>], _: bool) -> Vec<f32> {
        match saved {
            Saved::Mask(m) => d.iter().zip(m).map(|(g, k)| g * k).collect(),
            _ => std::mem::take(d),
        }
    }

    fn device(&self) -> Device {
        Device::Nothing
    }

    fn onnx(&self, _: &mut Builder, _: &mut Cursor) -> Result<()> {
        Ok(())
    }
}
