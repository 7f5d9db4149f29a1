//! Flatten: `[C, H, W]` to `[C·H·W]`. Nothing on the device, whose
//! activations are flat already (the dense layer after it reads them
//! channels-last, see `Dense::device_weights`).

use anyhow::Result;

use super::Shape;
use super::layer::{Device, LayerKind, Saved};
use super::onnx::{Builder, Cursor};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Flatten {}

impl LayerKind for Flatten {
    fn out_shape(&self, input: Shape) -> Shape {
        [input.iter().product(), 1, 1]
    }

    fn forward(&self, x: &[f32], _: usize) -> Vec<f32> {
        x.to_vec()
    }

    fn forward_owned(&self, x: Vec<f32>, _: usize) -> Vec<f32> {
        x
    }

    fn backward(&self, _: &[f32], _: &Saved, d: &mut Vec<f32>, _: usize, _: &mut [Vec<f32>], _: bool) -> Vec<f32> {
        std::mem::take(d)
    }

    fn device(&self) -> Device {
        Device::Nothing
    }

    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()> {
        at.flatten(b);
        Ok(())
    }
}
