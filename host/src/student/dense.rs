//! Dense (fully connected) layer on `matrixmultiply`'s SGEMM: `y = x Wᵀ + b`
//! with `W` stored `[out][in]`, the layout the int8 kernel reads.

use anyhow::Result;
use rand::Rng;
use tinykd_runtime::format::{Op, layer::PARAM_COUNT};

use super::Shape;
use super::layer::{Device, DeviceWeights, LayerKind, Saved, u16p, weight_and_bias};
use super::onnx::{Builder, Cursor, attr_int};
// Dense layers are small beside convolutions: `matrixmultiply` alone.
use super::sgemm::packed;

/// Weights and bias of a dense layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
    /// `[outputs][inputs]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    /// He-normal initialisation (suits the ReLU that usually follows), zero bias.
    pub fn new(inputs: usize, outputs: usize, rng: &mut impl Rng) -> Dense {
        // A layer always has inputs (shapes are never empty), so fan_in > 0.
        let weight = super::he_normal(inputs * outputs, inputs, rng).expect("finite std");
        Dense { inputs, outputs, weight, bias: vec![0.0; outputs] }
    }

    /// Number of trainable parameters.
    pub fn param_count(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// Forward pass over a batch `x` of `[n][inputs]`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut y: Vec<f32> = (0..n).flat_map(|_| self.bias.iter().copied()).collect();
        // y[n×out] += x[n×in] · Wᵀ[in×out]
        packed(
            n,
            self.inputs,
            self.outputs,
            x,
            self.inputs as isize,
            1,
            &self.weight,
            1,
            self.inputs as isize,
            1.0,
            &mut y,
        );
        y
    }

    /// Backward pass: accumulates `dW`, `db` into `gw`, `gb` and returns `dx`.
    /// `input_grad: false` skips `dx` and returns an empty vector.
    pub fn backward_into(
        &self,
        x: &[f32],
        dy: &[f32],
        n: usize,
        gw: &mut [f32],
        gb: &mut [f32],
        input_grad: bool,
    ) -> Vec<f32> {
        // dW[out×in] += dyᵀ[out×n] · x[n×in]
        packed(self.outputs, n, self.inputs, dy, 1, self.outputs as isize, x, self.inputs as isize, 1, 1.0, gw);
        for row in dy.chunks_exact(self.outputs) {
            for (g, d) in gb.iter_mut().zip(row) {
                *g += d;
            }
        }
        if !input_grad {
            return Vec::new();
        }
        // dx[n×in] = dy[n×out] · W[out×in]
        let mut dx = vec![0.0; n * self.inputs];
        packed(
            n,
            self.outputs,
            self.inputs,
            dy,
            self.outputs as isize,
            1,
            &self.weight,
            self.inputs as isize,
            1,
            0.0,
            &mut dx,
        );
        dx
    }
}

impl LayerKind for Dense {
    weight_and_bias!();

    fn out_shape(&self, _: Shape) -> Shape {
        [self.outputs, 1, 1]
    }

    fn macs(&self) -> usize {
        self.inputs * self.outputs
    }

    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        Dense::forward(self, x, n)
    }

    fn backward(
        &self,
        x: &[f32],
        _: &Saved,
        d: &mut Vec<f32>,
        n: usize,
        grads: &mut [Vec<f32>],
        input_grad: bool,
    ) -> Vec<f32> {
        let (gw, gb) = grads.split_at_mut(1);
        self.backward_into(x, d, n, &mut gw[0], &mut gb[0], input_grad)
    }

    fn device(&self) -> Device {
        Device::Weighted
    }

    /// The device flattens channels-last: the input columns are permuted
    /// from the student's `C, H, W` order to `H, W, C`.
    fn device_weights(&self, [c, h, w]: Shape) -> Option<DeviceWeights> {
        let p = h * w;
        let mut wt = self.weight.clone();
        if c > 1 && p > 1 {
            for o in 0..self.outputs {
                let row = &self.weight[o * self.inputs..(o + 1) * self.inputs];
                let dst = &mut wt[o * self.inputs..(o + 1) * self.inputs];
                for ci in 0..c {
                    for pi in 0..p {
                        dst[pi * c + ci] = row[ci * p + pi];
                    }
                }
            }
        }
        Some(DeviceWeights {
            weights: wt,
            bias: self.bias.clone(),
            per_channel: self.inputs,
            folds_input_zero_point: true,
        })
    }

    fn device_op(&self, _: Shape) -> Result<Option<(Op, [u16; PARAM_COUNT])>> {
        let mut params = [0u16; PARAM_COUNT];
        params[0] = u16p(self.inputs, "dense inputs")?;
        params[1] = u16p(self.outputs, "dense outputs")?;
        Ok(Some((Op::FullyConnected, params)))
    }

    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()> {
        at.flatten(b);
        let wt = b.init_f32("weight", &[self.outputs, self.inputs], &self.weight);
        let bias = b.init_f32("bias", &[self.outputs], &self.bias);
        b.op("Gemm", &[wt, bias], vec![attr_int("transB", 1)]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn forward_hand_computed() {
        let d = Dense { inputs: 2, outputs: 2, weight: vec![1.0, 2.0, -1.0, 0.5], bias: vec![0.5, -1.0] };
        // x = [[1, 1], [2, -2]]
        assert_eq!(d.forward(&[1.0, 1.0, 2.0, -2.0], 2), vec![3.5, -1.5, -1.5, -4.0]);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let d = Dense::new(5, 3, &mut rng);
        let n = 4;
        let x: Vec<f32> = (0..n * 5).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
        let w_out: Vec<f32> = (0..n * 3).map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0).collect();
        // Loss = Σ w_out · y, so dy = w_out.
        let loss =
            |d: &Dense, x: &[f32]| -> f64 { d.forward(x, n).iter().zip(&w_out).map(|(a, b)| (*a * *b) as f64).sum() };
        let mut g = Dense { weight: vec![0.0; d.weight.len()], bias: vec![0.0; d.bias.len()], ..d.clone() };
        let dx = d.backward_into(&x, &w_out, n, &mut g.weight, &mut g.bias, true);
        let h = 1e-2f32;
        for i in 0..d.weight.len() {
            let (mut p, mut m) = (d.clone(), d.clone());
            p.weight[i] += h;
            m.weight[i] -= h;
            let num = (loss(&p, &x) - loss(&m, &x)) / (2.0 * h as f64);
            assert!((num - g.weight[i] as f64).abs() < 1e-3, "dW[{i}]: {num} vs {}", g.weight[i]);
        }
        for i in 0..d.bias.len() {
            let (mut p, mut m) = (d.clone(), d.clone());
            p.bias[i] += h;
            m.bias[i] -= h;
            let num = (loss(&p, &x) - loss(&m, &x)) / (2.0 * h as f64);
            assert!((num - g.bias[i] as f64).abs() < 1e-3, "db[{i}]");
        }
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let num = (loss(&d, &xp) - loss(&d, &xm)) / (2.0 * h as f64);
            assert!((num - dx[i] as f64).abs() < 1e-3, "dx[{i}]");
        }
    }
}
