//! The addition that closes a residual block, `res( … )`: the block's
//! input (an earlier activation) is added to its body's output, through a
//! 1×1 convolution with the body's stride when their shapes differ (the
//! projection shortcut of ResNet).
//!
//! The addition reads two activations, so it is the one layer that does
//! not run on its input alone: the student's passes give it the block's
//! input (see `Student::forward` and `training.rs`), and its backward pass
//! returns a second gradient, the block input's.

use anyhow::Result;
use rand::RngCore;
use tinykd_runtime::format::{Op, layer::PARAM_COUNT};

use super::Shape;
use super::conv::Conv;
use super::layer::{Device, LayerKind, Saved};
use super::onnx::{Builder, Cursor};

/// `y = x + skip` or `y = x + projection(skip)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Add {
    /// The activation added: the input of layer `from` (the block's first
    /// layer), numbered as `Student::activations` lists them.
    pub from: usize,
    /// `[C, H, W]` of the sum and of both summands.
    pub shape: Shape,
    /// The 1×1 convolution that brings the block's input to the body's
    /// shape, when they differ.
    pub projection: Option<Conv>,
}

impl Add {
    /// The sum of the body's output `x` and the block's input `skip`.
    pub fn forward_skip(&self, mut x: Vec<f32>, skip: &[f32], n: usize) -> Vec<f32> {
        match &self.projection {
            Some(p) => x.iter_mut().zip(p.forward(skip, n)).for_each(|(a, b)| *a += b),
            None => x.iter_mut().zip(skip).for_each(|(a, b)| *a += b),
        }
        x
    }

    /// The block input's gradient for the sum's gradient `d` (the body's
    /// is `d` itself), the block's input being `skip`; accumulates the
    /// projection's gradients into `grads`.
    pub fn skip_grad(&self, skip: &[f32], d: &[f32], n: usize, grads: &mut [Vec<f32>]) -> Vec<f32> {
        match &self.projection {
            Some(p) => {
                let (gw, gb) = grads.split_at_mut(1);
                p.backward_with(skip, d, n, &mut gw[0], &mut gb[0], true)
            }
            None => d.to_vec(),
        }
    }
}

impl LayerKind for Add {
    fn params(&self) -> Vec<&Vec<f32>> {
        self.projection.as_ref().map_or_else(Vec::new, |p| vec![&p.weight, &p.bias])
    }

    fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
        self.projection.as_mut().map_or_else(Vec::new, |p| vec![&mut p.weight, &mut p.bias])
    }

    fn decays(&self, i: usize) -> bool {
        i == 0
    }

    fn macs(&self) -> usize {
        self.projection.as_ref().map_or(0, LayerKind::macs)
    }

    /// Unreachable: the addition runs through [`Add::forward_skip`], which
    /// the student's passes call with the block's input.
    fn forward(&self, _: &[f32], _: usize) -> Vec<f32> {
        unreachable!("a residual addition runs with its block's input (Add::forward_skip)")
    }

    fn forward_train(&self, _: &[f32], _: usize, _: &mut dyn RngCore) -> (Vec<f32>, Saved) {
        unreachable!("a residual addition runs with its block's input (Add::forward_skip)")
    }

    /// The body's gradient is the sum's; the block input's comes from
    /// [`Add::skip_grad`].
    fn backward(&self, _: &[f32], _: &Saved, d: &mut Vec<f32>, _: usize, _: &mut [Vec<f32>], _: bool) -> Vec<f32> {
        std::mem::take(d)
    }

    fn device(&self) -> Device {
        Device::Add
    }

    fn device_op(&self, _: Shape) -> Result<Option<(Op, [u16; PARAM_COUNT])>> {
        Ok(Some((Op::Add, [0; PARAM_COUNT])))
    }

    /// `Add(x, skip)`, the skip through its projection `Conv` first.
    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()> {
        let body = b.x.clone();
        let Some(skip) = b.activations.get(self.from).cloned() else {
            anyhow::bail!("the residual block's input (activation {}) is not in the graph", self.from)
        };
        b.x = skip;
        let skip = match &self.projection {
            Some(p) => {
                let mut from = Cursor { shape: p.in_shape, ..*at };
                p.onnx(b, &mut from)?;
                b.x.clone()
            }
            None => b.x.clone(),
        };
        b.x = body;
        b.op("Add", &[skip], vec![]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::spec::Padding;
    use crate::student::testing::check_gradients;
    use rand::SeedableRng;

    /// d(Σ r·y)/dx is r, and the block input's gradient goes through the
    /// projection (finite differences on both inputs and its parameters).
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (from_shape, shape) = ([2, 6, 5], [3, 3, 3]);
        let p = Conv::new(from_shape, 3, [1, 1], [2, 2], Padding::Same, &mut rng).unwrap();
        let add = Add { from: 0, shape, projection: Some(Conv { bias: vec![0.1, -0.2, 0.3], ..p }) };
        let n = 2;
        let (skip_len, len) = (60, 27);
        // One input vector: the body's output, then the block's input.
        let split = |x: &[f32]| (x[..n * len].to_vec(), x[n * len..].to_vec());
        let with = |params: &[Vec<f32>]| {
            let mut a = add.clone();
            a.params_mut().into_iter().zip(params).for_each(|(p, v)| *p = v.clone());
            a
        };
        check_gradients(
            n * (len + skip_len),
            n * len,
            add.params().into_iter().cloned().collect(),
            |x, params| {
                let (body, skip) = split(x);
                with(params).forward_skip(body, &skip, n)
            },
            |x, params, dy, grads| {
                let (_, skip) = split(x);
                let a = with(params);
                let mut dx = a.backward(&[], &Saved::Nothing, &mut dy.to_vec(), n, grads, true);
                dx.extend(a.skip_grad(&skip, dy, n, grads));
                dx
            },
        );
        // Without a projection the block input's gradient is the sum's.
        let identity = Add { from: 0, shape, projection: None };
        let y = identity.forward_skip(vec![1.0, 2.0], &[0.5, -1.0], 1);
        assert_eq!(y, [1.5, 1.0]);
        assert_eq!(identity.skip_grad(&[0.5, -1.0], &[3.0, 4.0], 1, &mut []), [3.0, 4.0]);
    }
}
