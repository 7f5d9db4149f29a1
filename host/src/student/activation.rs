//! ReLU and ReLU6: on the device, the clamp of the operator before them.

use anyhow::Result;
use tinykd_runtime::format::Activation;

use super::layer::{Device, LayerKind, Saved};
use super::onnx::{Builder, Cursor};
use super::simd::vectorised;

/// `max(x, 0)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Relu {}

/// `min(max(x, 0), 6)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Relu6 {}

impl Relu {
    /// The activation of one value (also applied inside a BatchNorm before it in training).
    #[inline(always)]
    pub fn apply(v: f32) -> f32 {
        v.max(0.0)
    }
}

impl Relu6 {
    /// The activation of one value (also applied inside a BatchNorm before it in training).
    #[inline(always)]
    pub fn apply(v: f32) -> f32 {
        v.clamp(0.0, 6.0)
    }
}

impl LayerKind for Relu {
    fn forward(&self, x: &[f32], _: usize) -> Vec<f32> {
        vectorised(
            #[inline(always)]
            || x.iter().map(|v| Relu::apply(*v)).collect(),
        )
    }

    fn forward_owned(&self, x: Vec<f32>, _: usize) -> Vec<f32> {
        vectorised(
            #[inline(always)]
            || x.into_iter().map(Relu::apply).collect(),
        )
    }

    /// In place: the output gradient's buffer becomes the input's.
    fn backward(&self, x: &[f32], _: &Saved, d: &mut Vec<f32>, _: usize, _: &mut [Vec<f32>], _: bool) -> Vec<f32> {
        vectorised(
            #[inline(always)]
            || d.iter_mut().zip(x).for_each(|(g, v)| *g = if *v > 0.0 { *g } else { 0.0 }),
        );
        std::mem::take(d)
    }

    fn device(&self) -> Device {
        Device::Activation(Activation::Relu)
    }

    fn onnx(&self, b: &mut Builder, _: &mut Cursor) -> Result<()> {
        b.op("Relu", &[], vec![]);
        Ok(())
    }
}

impl LayerKind for Relu6 {
    fn forward(&self, x: &[f32], _: usize) -> Vec<f32> {
        vectorised(
            #[inline(always)]
            || x.iter().map(|v| Relu6::apply(*v)).collect(),
        )
    }

    fn forward_owned(&self, x: Vec<f32>, _: usize) -> Vec<f32> {
        vectorised(
            #[inline(always)]
            || x.into_iter().map(Relu6::apply).collect(),
        )
    }

    fn backward(&self, x: &[f32], _: &Saved, d: &mut Vec<f32>, _: usize, _: &mut [Vec<f32>], _: bool) -> Vec<f32> {
        vectorised(
            #[inline(always)]
            || d.iter_mut().zip(x).for_each(|(g, v)| *g = if *v > 0.0 && *v < 6.0 { *g } else { 0.0 }),
        );
        std::mem::take(d)
    }

    fn device(&self) -> Device {
        Device::Activation(Activation::Relu6)
    }

    fn onnx(&self, b: &mut Builder, _: &mut Cursor) -> Result<()> {
        let lo = b.init_f32("zero", &[], &[0.0]);
        let hi = b.init_f32("six", &[], &[6.0]);
        b.op("Clip", &[lo, hi], vec![]);
        Ok(())
    }
}
