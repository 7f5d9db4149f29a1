//! Depthwise convolution (one filter per channel, depth multiplier 1),
//! channels-first: input `[C, H, W]`, weight `[C][kh][kw]`. Direct loops:
//! the per-channel work is too small for a GEMM to pay off.

use anyhow::Result;
use rand::Rng;
use tinykd_runtime::format::{Op, layer::PARAM_COUNT};

use super::geometry::{Shape, TapRun, fits, tap_runs, window2d};
use super::layer::{Device, DeviceWeights, LayerKind, Saved, weight_and_bias, window_params};
use super::onnx::{Builder, Cursor, attr_int, window_attrs};
use super::spec::Padding;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Depthwise {
    pub in_shape: Shape,
    pub kernel: [usize; 2],
    /// Per axis `[height, width]` (saved as one number when they agree).
    #[serde(with = "super::geometry::one_or_two")]
    pub stride: [usize; 2],
    pub padding: Padding,
    /// `[C][kh][kw]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Depthwise {
    pub fn new(
        in_shape: Shape,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        rng: &mut impl Rng,
    ) -> Option<Depthwise> {
        if !fits(in_shape, kernel, stride, padding) {
            return None;
        }
        let fan_in = kernel[0] * kernel[1];
        let weight = super::he_normal(in_shape[0] * fan_in, fan_in, rng)?;
        Some(Depthwise { in_shape, kernel, stride, padding, weight, bias: vec![0.0; in_shape[0]] })
    }

    pub fn geometry(&self) -> (Shape, [usize; 2]) {
        let ([oh, ow], pad) = window2d(self.in_shape, self.kernel, self.stride, self.padding);
        ([self.in_shape[0], oh, ow], pad)
    }

    pub fn out_shape(&self) -> Shape {
        self.geometry().0
    }

    /// Visits the in-bounds taps run by run: `(o, i, k, len)` means outputs
    /// `o..o + len` read inputs `i, i + stride, …` with weight `k`.
    fn runs(&self, runs: &[TapRun], mut f: impl FnMut(usize, usize, usize, usize)) {
        let ([c, oh, ow], _) = self.geometry();
        let [_, h, w] = self.in_shape;
        let taps = self.kernel[0] * self.kernel[1];
        for ci in 0..c {
            for r in runs {
                f(ci * oh * ow + r.out, ci * h * w + r.input, ci * taps + r.tap, r.len);
            }
        }
    }

    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let in_len: usize = self.in_shape.iter().product();
        let [c, oh, ow] = self.out_shape();
        let p = oh * ow;
        let s = self.stride[1];
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        let mut y = vec![0.0; n * c * p];
        for smp in 0..n {
            let xs = &x[smp * in_len..(smp + 1) * in_len];
            let ys = &mut y[smp * c * p..(smp + 1) * c * p];
            for (ci, b) in self.bias.iter().enumerate() {
                ys[ci * p..(ci + 1) * p].iter_mut().for_each(|v| *v = *b);
            }
            self.runs(&runs, |o, i, k, len| {
                let w = self.weight[k];
                let src = &xs[i..i + (len - 1) * s + 1];
                for (j, d) in ys[o..o + len].iter_mut().enumerate() {
                    *d += src[j * s] * w;
                }
            });
        }
        y
    }

    pub fn backward(&self, x: &[f32], dy: &[f32], n: usize, gw: &mut [f32], gb: &mut [f32]) -> Vec<f32> {
        self.backward_with(x, dy, n, gw, gb, true)
    }

    /// `input_grad: false` skips `dx` and returns an empty vector.
    pub fn backward_with(
        &self,
        x: &[f32],
        dy: &[f32],
        n: usize,
        gw: &mut [f32],
        gb: &mut [f32],
        input_grad: bool,
    ) -> Vec<f32> {
        let in_len: usize = self.in_shape.iter().product();
        let [c, oh, ow] = self.out_shape();
        let p = oh * ow;
        let s = self.stride[1];
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        let mut dx = vec![0.0; if input_grad { n * in_len } else { 0 }];
        for smp in 0..n {
            let xs = &x[smp * in_len..(smp + 1) * in_len];
            let dys = &dy[smp * c * p..(smp + 1) * c * p];
            let dxs = if input_grad { &mut dx[smp * in_len..(smp + 1) * in_len] } else { &mut [][..] };
            for (ci, g) in gb.iter_mut().enumerate() {
                *g += dys[ci * p..(ci + 1) * p].iter().sum::<f32>();
            }
            self.runs(&runs, |o, i, k, len| {
                let w = self.weight[k];
                let mut acc = 0.0;
                let src = &xs[i..i + (len - 1) * s + 1];
                for (j, g) in dys[o..o + len].iter().enumerate() {
                    acc += g * src[j * s];
                }
                gw[k] += acc;
                if !input_grad {
                    return;
                }
                let dst = &mut dxs[i..i + (len - 1) * s + 1];
                for (j, g) in dys[o..o + len].iter().enumerate() {
                    dst[j * s] += g * w;
                }
            });
        }
        dx
    }
}

impl LayerKind for Depthwise {
    weight_and_bias!();

    fn out_shape(&self, _: Shape) -> Shape {
        Depthwise::out_shape(self)
    }

    fn macs(&self) -> usize {
        Depthwise::out_shape(self).iter().product::<usize>() * self.kernel[0] * self.kernel[1]
    }

    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        Depthwise::forward(self, x, n)
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
        self.backward_with(x, d, n, &mut gw[0], &mut gb[0], input_grad)
    }

    fn device(&self) -> Device {
        Device::Weighted
    }

    /// Kept per channel (`[C][kh·kw]`) for quantization, transposed by
    /// [`LayerKind::device_layout`].
    fn device_weights(&self, _: Shape) -> Option<DeviceWeights> {
        let [kh, kw] = self.kernel;
        Some(DeviceWeights {
            weights: self.weight.clone(),
            bias: self.bias.clone(),
            per_channel: kh * kw,
            folds_input_zero_point: false,
        })
    }

    /// `[C][kh·kw]` → `[kh·kw][C]` (TFLite's depthwise layout).
    fn device_layout(&self, q: Vec<i8>, [c, _, _]: Shape) -> Vec<i8> {
        let taps = self.kernel[0] * self.kernel[1];
        let mut t = vec![0i8; q.len()];
        for ci in 0..c {
            for k in 0..taps {
                t[k * c + ci] = q[ci * taps + k];
            }
        }
        t
    }

    fn device_op(&self, in_shape: Shape) -> Result<Option<(Op, [u16; PARAM_COUNT])>> {
        let params = window_params(in_shape, in_shape[0], self.kernel, self.stride, self.padding)?;
        Ok(Some((Op::DepthwiseConv2d, params)))
    }

    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()> {
        let s = at.shape;
        let dims = [&[s[0], 1][..], &at.kernel_dims(self.kernel)].concat();
        let wt = b.init_f32("weight", &dims, &self.weight);
        let bias = b.init_f32("bias", &[s[0]], &self.bias);
        let mut attrs = window_attrs(s, self.kernel, self.stride, self.padding, at.one_d);
        attrs.push(attr_int("group", s[0] as i64));
        b.op("Conv", &[wt, bias], attrs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::testing::check_gradients;
    use rand::SeedableRng;

    #[test]
    fn forward_hand_computed() {
        // Two channels, kernel 2 VALID: ch0 x=[1,2,3] w=[1,1] → [3,5]; ch1 x=[1,0,-1] w=[2,-1] → [2,1]; bias [0, 1].
        let d = Depthwise {
            in_shape: [2, 1, 3],
            kernel: [1, 2],
            stride: [1, 1],
            padding: Padding::Valid,
            weight: vec![1.0, 1.0, 2.0, -1.0],
            bias: vec![0.0, 1.0],
        };
        assert_eq!(d.forward(&[1.0, 2.0, 3.0, 1.0, 0.0, -1.0], 1), vec![3.0, 5.0, 3.0, 2.0]);
    }

    #[test]
    fn forward_matches_direct_loops_on_every_geometry() {
        use crate::student::testing::{conv_geometries, direct_conv};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for (shape, k, s, pad) in conv_geometries() {
            let d = Depthwise { bias: vec![0.5, -0.5], ..Depthwise::new(shape, k, s, pad, &mut rng).unwrap() };
            let n = 2;
            let x: Vec<f32> = (0..n * shape.iter().product::<usize>()).map(|i| (i % 5) as f32 - 2.0).collect();
            let want = direct_conv(&x, n, shape, &d.weight, &d.bias, k, s, pad, true);
            let got = d.forward(&x, n);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{shape:?} k{k:?} s{s:?} {pad:?}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for (shape, k, s, pad) in [
            ([3, 1, 8], [1, 3], [2, 2], Padding::Same),
            ([2, 5, 4], [3, 3], [1, 1], Padding::Same),
            ([2, 5, 5], [3, 3], [2, 2], Padding::Valid),
            // Rectangular windows, strides per axis.
            ([2, 8, 5], [5, 1], [1, 1], Padding::Same),
            ([2, 7, 6], [2, 3], [2, 1], Padding::Same),
        ] {
            let d = Depthwise::new(shape, k, s, pad, &mut rng).unwrap();
            let n = 2;
            let in_len: usize = shape.iter().product();
            let out_len: usize = d.out_shape().iter().product();
            let mk = |p: &[Vec<f32>]| Depthwise { weight: p[0].clone(), bias: p[1].clone(), ..d.clone() };
            check_gradients(
                n * in_len,
                n * out_len,
                vec![d.weight.clone(), d.bias.clone()],
                |x, p| mk(p).forward(x, n),
                |x, p, dy, g| {
                    let (gw, gb) = g.split_at_mut(1);
                    mk(p).backward(x, dy, n, &mut gw[0], &mut gb[0])
                },
            );
        }
    }
}
