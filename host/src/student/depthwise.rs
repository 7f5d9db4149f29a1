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
            return self.forward_chw(x, n);
        }
        self.forward_hwc(&to_hwc(x, n, self.in_shape), n)
    }

    /// Whether output rows are wide enough to be the vectors (each tap a
    /// run along a row, no transposes), rather than the channels.
    fn rows_first(&self) -> bool {
        self.out_shape()[2] >= ROWS_FIRST_WIDTH
    }

    /// Forward channels-first: each tap of each channel one run along a row
    /// (a strided layer reads its input split into column phases, where
    /// the run is contiguous again).
    fn forward_chw(&self, x: &[f32], n: usize) -> Vec<f32> {
        let [c, h, w] = self.in_shape;
        let p = self.out_shape()[1..].iter().product::<usize>();
        let taps = self.kernel[0] * self.kernel[1];
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        let phases = Phases::new(w, self.stride[1]);
        let mut split = vec![0.0; if phases.strided() { phases.len(h) } else { 0 }];
        let mut y = vec![0.0; n * c * p];
        for (k, (ys, xs)) in y.chunks_exact_mut(p).zip(x.chunks_exact(h * w)).enumerate() {
            let ci = k % c;
            ys.fill(self.bias[ci]);
            let src = phases.split(xs, &mut split);
            for r in &runs {
                let wv = self.weight[ci * taps + r.tap];
                let i = phases.at(r.input);
                ys[r.out..r.out + r.len].iter_mut().zip(&src[i..i + r.len]).for_each(|(y, x)| *y += wv * x);
            }
        }
        y
    }

    /// Backward channels-first (see [`Depthwise::forward_chw`]).
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
        let p = self.out_shape()[1..].iter().product::<usize>();
        let taps = self.kernel[0] * self.kernel[1];
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        let phases = Phases::new(w, self.stride[1]);
        let strided = phases.strided();
        let mut split = vec![0.0; if strided { phases.len(h) } else { 0 }];
        let mut dsplit = vec![0.0; if strided && input_grad { phases.len(h) } else { 0 }];
        let mut dx = vec![0.0; if input_grad { n * c * h * w } else { 0 }];
        for (k, (ds, xs)) in dy.chunks_exact(p).zip(x.chunks_exact(h * w)).take(n * c).enumerate() {
            let ci = k % c;
            gb[ci] += sum(ds);
            let src = phases.split(xs, &mut split);
            // The input gradient gathers in phases too, merged into the plane after.
            let dxs: &mut [f32] = match (input_grad, strided) {
                (false, _) => &mut [],
                (true, false) => &mut dx[k * h * w..(k + 1) * h * w],
                (true, true) => {
                    dsplit.fill(0.0);
                    &mut dsplit
                }
            };
            for r in &runs {
                let d = &ds[r.out..r.out + r.len];
                let i = phases.at(r.input);
                gw[ci * taps + r.tap] += dot(d, &src[i..i + r.len]);
                if input_grad {
                    let wv = self.weight[ci * taps + r.tap];
                    dxs[i..i + r.len].iter_mut().zip(d).for_each(|(g, d)| *g += wv * d);
                }
            }
            if input_grad && strided {
                phases.merge(&dsplit, &mut dx[k * h * w..(k + 1) * h * w]);
            }
        }
        dx
    }

    /// Forward from the channels-last input `xt` (`[n][H·W][C]`).
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
            return self.backward_chw(x, dy, n, gw, gb, input_grad);
        }
        self.backward_hwc(&to_hwc(x, n, self.in_shape), dy, n, gw, gb, input_grad)
    }

    /// [`Depthwise::backward_with`] from the channels-last input `xt`.
    /// Channels-last, each tap is a vector operation over the channels
    /// (64 in a keyword spotter) instead of a run along a row (5 wide).
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

/// A plane of rows `w` wide, its columns split by phase modulo the
/// stride `s`: row `iy`'s columns `ix ≡ φ (mod s)` sit contiguously at
/// `iy·s·hw + φ·hw + ix / s` (`hw = ⌈w / s⌉`). A run of taps, which reads
/// every `s`-th column of one row, is then a contiguous run (vector
/// operations where it was a strided, scalar one). Stride 1 is the plane
/// itself.
struct Phases {
    w: usize,
    s: usize,
    hw: usize,
}

impl Phases {
    fn new(w: usize, s: usize) -> Phases {
        Phases { w, s, hw: w.div_ceil(s) }
    }

    fn strided(&self) -> bool {
        self.s > 1
    }

    /// Floats of a split plane of `h` rows.
    fn len(&self, h: usize) -> usize {
        h * self.s * self.hw
    }

    /// Where the plane's flat index `input` is in the split plane.
    fn at(&self, input: usize) -> usize {
        if !self.strided() {
            return input;
        }
        let (iy, ix) = (input / self.w, input % self.w);
        iy * self.s * self.hw + (ix % self.s) * self.hw + ix / self.s
    }

    /// The plane split into `buf` (the plane itself at stride 1).
    fn split<'a>(&self, plane: &'a [f32], buf: &'a mut [f32]) -> &'a [f32] {
        if !self.strided() {
            return plane;
        }
        for (iy, row) in plane.chunks_exact(self.w).enumerate() {
            for (phase, out) in buf[iy * self.s * self.hw..].chunks_exact_mut(self.hw).take(self.s).enumerate() {
                row.iter().skip(phase).step_by(self.s).zip(out).for_each(|(v, o)| *o = *v);
            }
        }
        buf
    }

    /// A split plane written back into plane order.
    fn merge(&self, split: &[f32], plane: &mut [f32]) {
        for (iy, row) in plane.chunks_exact_mut(self.w).enumerate() {
            for (phase, src) in split[iy * self.s * self.hw..].chunks_exact(self.hw).take(self.s).enumerate() {
                row.iter_mut().skip(phase).step_by(self.s).zip(src).for_each(|(o, v)| *o = *v);
            }
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

/// Each of `n` `rows × cols` matrices transposed.
fn transpose(x: &[f32], n: usize, rows: usize, cols: usize) -> Vec<f32> {
    // In 8 × 8 tiles: a tile's reads and writes each touch 8 cache lines,
    // where a whole row's writes would touch one line per value.
    const TILE: usize = 8;
    let mut t = vec![0.0; n * rows * cols];
    for (src, dst) in x.chunks_exact(rows * cols).zip(t.chunks_exact_mut(rows * cols)) {
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (0..cols).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    let row = &src[r * cols..(r + 1) * cols];
                    for c in c0..(c0 + TILE).min(cols) {
                        dst[c * rows + r] = row[c];
                    }
                }
            }
        }
    }
    t
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
            return (self.forward_chw(x, n), Saved::Nothing);
        }
        let xt = to_hwc(x, n, self.in_shape);
        (self.forward_hwc(&xt, n), Saved::ChannelsLast(xt))
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
            Saved::ChannelsLast(xt) => self.backward_hwc(xt, d, n, &mut gw[0], &mut gb[0], input_grad),
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
    fn phases_split_and_merge_a_plane() {
        // Two rows of 5 at stride 2: phases of 3 (columns 0, 2, 4 | 1, 3).
        let ph = Phases::new(5, 2);
        let plane: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let mut buf = vec![-1.0; ph.len(2)];
        let split = ph.split(&plane, &mut buf).to_vec();
        assert_eq!(split[..5], [0.0, 2.0, 4.0, 1.0, 3.0]);
        assert_eq!(split[6..11], [5.0, 7.0, 9.0, 6.0, 8.0]);
        // Row 1, column 3 → phase 1, index 1.
        assert_eq!(ph.at(8), 6 + 3 + 1);
        let mut back = vec![0.0; 10];
        ph.merge(&split, &mut back);
        assert_eq!(back, plane);
        // Stride 1 is the plane itself.
        assert_eq!(Phases::new(5, 1).at(8), 8);
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
