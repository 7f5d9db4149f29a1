//! Depthwise convolution (one filter per channel, depth multiplier 1),
//! channels-first like the other layers: input `[C, H, W]`, weight
//! `[C][kh][kw]`. Direct loops, computed channels-last: the per-channel
//! work is too small for a GEMM to pay off, and rows are short (5 wide in
//! a keyword spotter) while the channels are many, so each tap is one
//! vector operation over the channels.

use anyhow::Result;
use rand::{Rng, RngCore};
use tinykd_runtime::format::{Op, layer::PARAM_COUNT};

use super::batchnorm::{dot, sum};
use super::geometry::{Shape, fits, tap_runs, window2d};
use super::layer::{Device, DeviceWeights, LayerKind, Saved, weight_and_bias, window_params};
use super::onnx::{Builder, Cursor, attr_int, window_attrs};
use super::simd::vectorised;
use super::spec::Padding;
use super::transpose::transpose;

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

    /// The weights as `[kh·kw][C]`, a row per tap.
    fn weight_rows(&self) -> Vec<f32> {
        let c = self.in_shape[0];
        let taps = self.kernel[0] * self.kernel[1];
        let mut t = vec![0.0; self.weight.len()];
        for ci in 0..c {
            for k in 0..taps {
                t[k * c + ci] = self.weight[ci * taps + k];
            }
        }
        t
    }

    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        if self.rows_first() {
            return vectorised(
                #[inline(always)]
                || self.forward_chw(x, n),
            );
        }
        vectorised(
            #[inline(always)]
            || self.forward_hwc(&to_hwc(x, n, self.in_shape), n),
        )
    }

    /// Whether output rows are wide enough to be the vectors (each tap a
    /// run along a row, no transposes), rather than the channels.
    fn rows_first(&self) -> bool {
        self.out_shape()[2] >= ROWS_FIRST_WIDTH
    }

    /// Forward channels-first: each plane zero-padded and split into its
    /// stride phases (see [`PhasePlanes`]), each tap one run over the
    /// whole plane.
    #[inline(always)]
    fn forward_chw(&self, x: &[f32], n: usize) -> Vec<f32> {
        let [c, h, w] = self.in_shape;
        let [_, oh, ow] = self.out_shape();
        let taps = self.kernel[0] * self.kernel[1];
        let g = PhasePlanes::new(self);
        let mut split = vec![0.0; g.len()];
        let mut out = vec![0.0; g.cols];
        let mut y = vec![0.0; n * c * oh * ow];
        for (k, (ys, xs)) in y.chunks_exact_mut(oh * ow).zip(x.chunks_exact(h * w)).enumerate() {
            let ci = k % c;
            g.split(xs, &mut split);
            out.fill(self.bias[ci]);
            for (&wv, &at) in self.weight[ci * taps..(ci + 1) * taps].iter().zip(&g.taps) {
                out.iter_mut().zip(&split[at..at + g.cols]).for_each(|(y, x)| *y += wv * x);
            }
            g.crop(&out, ys);
        }
        y
    }

    /// Backward channels-first (see [`Depthwise::forward_chw`]): per tap,
    /// the weight gradient is one dot product over the plane and the input
    /// gradient one run added into the split plane's gradient.
    #[inline(always)]
    fn backward_chw(
        &self,
        x: &[f32],
        dy: &[f32],
        n: usize,
        gw: &mut [f32],
        gb: &mut [f32],
        input_grad: bool,
    ) -> Vec<f32> {
        let [c, h, w] = self.in_shape;
        let [_, oh, ow] = self.out_shape();
        let taps = self.kernel[0] * self.kernel[1];
        let g = PhasePlanes::new(self);
        let mut split = vec![0.0; g.len()];
        let mut dsplit = vec![0.0; if input_grad { g.len() } else { 0 }];
        // The dropped columns stay zero: they add nothing to any sum.
        let mut dout = vec![0.0; g.cols];
        let mut dx = vec![0.0; if input_grad { n * c * h * w } else { 0 }];
        for (k, (ds, xs)) in dy.chunks_exact(oh * ow).zip(x.chunks_exact(h * w)).take(n * c).enumerate() {
            let ci = k % c;
            gb[ci] += sum(ds);
            g.split(xs, &mut split);
            g.spread(ds, &mut dout);
            let (gws, ws) = (&mut gw[ci * taps..(ci + 1) * taps], &self.weight[ci * taps..(ci + 1) * taps]);
            for (gv, &at) in gws.iter_mut().zip(&g.taps) {
                *gv += dot(&dout, &split[at..at + g.cols]);
            }
            if input_grad {
                dsplit.fill(0.0);
                for (&wv, &at) in ws.iter().zip(&g.taps) {
                    dsplit[at..at + g.cols].iter_mut().zip(&dout).for_each(|(g, d)| *g += wv * d);
                }
                g.gather(&dsplit, &mut dx[k * h * w..(k + 1) * h * w]);
            }
        }
        dx
    }

    /// Forward from the channels-last input `xt` (`[n][H·W][C]`).
    #[inline(always)]
    fn forward_hwc(&self, xt: &[f32], n: usize) -> Vec<f32> {
        let [c, h, w] = self.in_shape;
        let out = self.out_shape();
        let p = out[1] * out[2];
        let s = self.stride[1];
        let wt = self.weight_rows();
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        let mut yt = Vec::with_capacity(n * p * c);
        for _ in 0..n * p {
            yt.extend_from_slice(&self.bias);
        }
        for smp in 0..n {
            let xs = &xt[smp * h * w * c..(smp + 1) * h * w * c];
            let ys = &mut yt[smp * p * c..(smp + 1) * p * c];
            for r in &runs {
                let wr = &wt[r.tap * c..(r.tap + 1) * c];
                for j in 0..r.len {
                    let (o, i) = (r.out + j, r.input + j * s);
                    let (yr, xr) = (&mut ys[o * c..(o + 1) * c], &xs[i * c..(i + 1) * c]);
                    for ((y, x), w) in yr.iter_mut().zip(xr).zip(wr) {
                        *y += x * w;
                    }
                }
            }
        }
        to_chw(&yt, n, out)
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
        if self.rows_first() {
            return vectorised(
                #[inline(always)]
                || self.backward_chw(x, dy, n, gw, gb, input_grad),
            );
        }
        vectorised(
            #[inline(always)]
            || self.backward_hwc(&to_hwc(x, n, self.in_shape), dy, n, gw, gb, input_grad),
        )
    }

    /// [`Depthwise::backward_with`] from the channels-last input `xt`.
    /// Channels-last, each tap is a vector operation over the channels
    /// (64 in a keyword spotter) instead of a run along a row (5 wide).
    #[inline(always)]
    fn backward_hwc(
        &self,
        xt: &[f32],
        dy: &[f32],
        n: usize,
        gw: &mut [f32],
        gb: &mut [f32],
        input_grad: bool,
    ) -> Vec<f32> {
        let [c, h, w] = self.in_shape;
        let out = self.out_shape();
        let p = out[1] * out[2];
        let s = self.stride[1];
        let taps = self.kernel[0] * self.kernel[1];
        let wt = self.weight_rows();
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        let dyt = to_hwc(dy, n, out);
        let mut gwt = vec![0.0; taps * c];
        let mut dxt = vec![0.0; if input_grad { n * h * w * c } else { 0 }];
        for smp in 0..n {
            let xs = &xt[smp * h * w * c..(smp + 1) * h * w * c];
            let ds = &dyt[smp * p * c..(smp + 1) * p * c];
            for row in ds.chunks_exact(c) {
                gb.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
            for r in &runs {
                let (wr, gr) = (&wt[r.tap * c..(r.tap + 1) * c], &mut gwt[r.tap * c..(r.tap + 1) * c]);
                for j in 0..r.len {
                    let (o, i) = (r.out + j, r.input + j * s);
                    let (dr, xr) = (&ds[o * c..(o + 1) * c], &xs[i * c..(i + 1) * c]);
                    for ((g, d), x) in gr.iter_mut().zip(dr).zip(xr) {
                        *g += d * x;
                    }
                    if input_grad {
                        let dxr = &mut dxt[(smp * h * w + i) * c..(smp * h * w + i + 1) * c];
                        for ((g, d), w) in dxr.iter_mut().zip(dr).zip(wr) {
                            *g += d * w;
                        }
                    }
                }
            }
        }
        for ci in 0..c {
            for k in 0..taps {
                gw[ci * taps + k] += gwt[k * c + ci];
            }
        }
        if input_grad { to_chw(&dxt, n, self.in_shape) } else { Vec::new() }
    }
}

/// Output rows at least this wide run channels-first (a keyword
/// spotter's 5-wide rows run channels-last; MobileNet's 48- and 24-wide
/// ones channels-first, which spares four transposes of the layer's
/// activations per step).
const ROWS_FIRST_WIDTH: usize = 16;

/// A plane zero-padded and split into its stride phases, so that every
/// tap of the window is one contiguous run over the whole plane.
///
/// The padded input pixel `(y, x)` goes to phase `(y mod sh, x mod sw)`,
/// row `y / sh`, column `x / sw` of an `h2 × w2` phase plane. Output
/// `(oy, ox)` reads tap `(ky, kx)` at row `oy + ky / sh`, column
/// `ox + kx / sw` of phase `(ky mod sh, kx mod sw)`; computed over the
/// phase planes' width `w2` (`cols` positions, the columns from `ow` on
/// dropped), the outputs of one tap are then the phase plane itself from
/// offset `taps[tap]`. No bounds per row, no short runs: at the price of
/// `w2 − ow` wasted columns per row (one or two of 48).
struct PhasePlanes {
    stride: [usize; 2],
    pad: [usize; 2],
    in_hw: [usize; 2],
    out_w: usize,
    h2: usize,
    w2: usize,
    cols: usize,
    taps: Vec<usize>,
}

impl PhasePlanes {
    fn new(d: &Depthwise) -> PhasePlanes {
        let ([_, oh, ow], pad) = d.geometry();
        let [_, h, w] = d.in_shape;
        let ([kh, kw], [sh, sw]) = (d.kernel, d.stride);
        // The padded extent the window reaches, or the input's if longer (VALID).
        let h2 = ((oh - 1) * sh + kh).max(pad[0] + h).div_ceil(sh);
        let w2 = ((ow - 1) * sw + kw).max(pad[1] + w).div_ceil(sw);
        let taps = (0..kh)
            .flat_map(|ky| (0..kw).map(move |kx| ((ky % sh) * sw + kx % sw) * h2 * w2 + (ky / sh) * w2 + kx / sw))
            .collect();
        PhasePlanes { stride: d.stride, pad, in_hw: [h, w], out_w: ow, h2, w2, cols: (oh - 1) * w2 + ow, taps }
    }

    /// Floats of a split plane.
    fn len(&self) -> usize {
        self.stride[0] * self.stride[1] * self.h2 * self.w2
    }

    /// Calls `f(row, column phase, first column, phase row start)` for
    /// every input row and column phase: the row's columns `first`,
    /// `first + sw`, … go to the phase plane from `start` on.
    fn rows(&self, mut f: impl FnMut(usize, usize, usize)) {
        let ([sh, sw], [pt, pl], [h, _]) = (self.stride, self.pad, self.in_hw);
        for iy in 0..h {
            let py = iy + pt;
            for px in 0..sw {
                // The first column of this phase: (ix + pl) ≡ px (mod sw).
                let first = (px + sw - pl % sw) % sw;
                let start = ((py % sh) * sw + px) * self.h2 * self.w2 + (py / sh) * self.w2 + (first + pl) / sw;
                f(iy, first, start);
            }
        }
    }

    /// An input plane `[h·w]` into `buf`, whose padding keeps its zeros.
    fn split(&self, plane: &[f32], buf: &mut [f32]) {
        let (w, sw) = (self.in_hw[1], self.stride[1]);
        self.rows(|iy, first, start| {
            let row = &plane[iy * w..(iy + 1) * w];
            if sw == 1 {
                buf[start..start + w].copy_from_slice(row);
            } else {
                row.iter().skip(first).step_by(sw).zip(&mut buf[start..]).for_each(|(v, o)| *o = *v);
            }
        });
    }

    /// The inverse of [`PhasePlanes::split`]: the input pixels of a split
    /// plane (a gradient) back into plane order, the padding left out.
    fn gather(&self, buf: &[f32], plane: &mut [f32]) {
        let (w, sw) = (self.in_hw[1], self.stride[1]);
        self.rows(|iy, first, start| {
            let row = &mut plane[iy * w..(iy + 1) * w];
            if sw == 1 {
                row.copy_from_slice(&buf[start..start + w]);
            } else {
                row.iter_mut().skip(first).step_by(sw).zip(&buf[start..]).for_each(|(o, v)| *o = *v);
            }
        });
    }

    /// Outputs over the phase width (`cols`) into their `[oh·ow]` plane.
    fn crop(&self, out: &[f32], plane: &mut [f32]) {
        for (row, src) in plane.chunks_exact_mut(self.out_w).zip(out.chunks(self.w2)) {
            row.copy_from_slice(&src[..self.out_w]);
        }
    }

    /// An `[oh·ow]` plane over the phase width (the dropped columns keep
    /// what they hold: zeros).
    fn spread(&self, plane: &[f32], out: &mut [f32]) {
        for (row, dst) in plane.chunks_exact(self.out_w).zip(out.chunks_mut(self.w2)) {
            dst[..self.out_w].copy_from_slice(row);
        }
    }
}

/// `[n][C][H·W]` → `[n][H·W][C]` (collected in order: no zeroing pass).
fn to_hwc(x: &[f32], n: usize, [c, h, w]: Shape) -> Vec<f32> {
    transpose(x, n, c, h * w)
}

/// `[n][H·W][C]` → `[n][C][H·W]`.
fn to_chw(t: &[f32], n: usize, [c, h, w]: Shape) -> Vec<f32> {
    transpose(t, n, h * w, c)
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

    /// Keeps the channels-last input for the backward pass.
    fn forward_train(&self, x: &[f32], n: usize, _: &mut dyn RngCore) -> (Vec<f32>, Saved) {
        if self.rows_first() {
            return (
                vectorised(
                    #[inline(always)]
                    || self.forward_chw(x, n),
                ),
                Saved::Nothing,
            );
        }
        let xt = to_hwc(x, n, self.in_shape);
        (
            vectorised(
                #[inline(always)]
                || self.forward_hwc(&xt, n),
            ),
            Saved::ChannelsLast(xt),
        )
    }

    fn replay(&self, x: &[f32], n: usize) -> Saved {
        if self.rows_first() {
            return Saved::Nothing;
        }
        Saved::ChannelsLast(to_hwc(x, n, self.in_shape))
    }

    fn backward(
        &self,
        x: &[f32],
        saved: &Saved,
        d: &mut Vec<f32>,
        n: usize,
        grads: &mut [Vec<f32>],
        input_grad: bool,
    ) -> Vec<f32> {
        let (gw, gb) = grads.split_at_mut(1);
        match saved {
            Saved::ChannelsLast(xt) => vectorised(
                #[inline(always)]
                || self.backward_hwc(xt, d, n, &mut gw[0], &mut gb[0], input_grad),
            ),
            _ => self.backward_with(x, d, n, &mut gw[0], &mut gb[0], input_grad),
        }
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
    fn phase_planes_split_and_gather_a_plane() {
        // 2 × 5 at stride 2, SAME 3 × 3: padding (0, 1) before and after
        // → padded 3 × 6 (the window reaches 2·2 + 3 = 7 columns: w2 = 4);
        // phase (0, 1) holds padded columns 1, 3, 5 = input columns 0, 2, 4.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let d = Depthwise::new([1, 2, 5], [3, 3], [2, 2], Padding::Same, &mut rng).unwrap();
        let g = PhasePlanes::new(&d);
        assert_eq!((g.h2, g.w2, g.pad), (2, 4, [0, 1]));
        let plane: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        let mut buf = vec![0.0; g.len()];
        g.split(&plane, &mut buf);
        let phase = |py: usize, px: usize| buf[(py * 2 + px) * 8..(py * 2 + px + 1) * 8].to_vec();
        assert_eq!(phase(0, 0), [0.0, 2.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(phase(0, 1), [1.0, 3.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(phase(1, 0), [0.0, 7.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(phase(1, 1), [6.0, 8.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // Tap (1, 2): phase (1, 0), column 1.
        assert_eq!(g.taps[5], 2 * 8 + 1);
        let mut back = vec![0.0; 10];
        g.gather(&buf, &mut back);
        assert_eq!(back, plane);
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
            // Rows wide enough to run channels-first, strides 1 and 2.
            ([2, 3, 20], [3, 3], [1, 1], Padding::Same),
            ([2, 4, 34], [3, 3], [2, 2], Padding::Same),
            ([1, 2, 40], [1, 5], [1, 2], Padding::Valid),
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
