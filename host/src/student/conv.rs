//! 2-D convolution (1-D is H = 1) on im2col + SGEMM, channels-first like
//! PyTorch: input `[C, H, W]`, weight `[O][C][kh][kw]`. Padding follows
//! TFLite (`geometry::window`), so training sees the device's windows.

use anyhow::Result;
use rand::Rng;
use tinykd_runtime::format::{Op, layer::PARAM_COUNT};

use super::batchnorm::sum;
use super::geometry::{Shape, TapRun, fits, tap_runs, window2d};
use super::layer::{Device, DeviceWeights, LayerKind, Saved, weight_and_bias, window_params};
use super::onnx::{Builder, Cursor, window_attrs};
use super::sgemm::{dots_gather, gemm, gemm_gather, packed};
use super::spec::Padding;

/// A convolution layer with its geometry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conv {
    pub in_shape: Shape,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    /// Per axis `[height, width]` (saved as one number when they agree).
    #[serde(with = "super::geometry::one_or_two")]
    pub stride: [usize; 2],
    pub padding: Padding,
    /// `[O][C][kh][kw]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Conv {
    /// He-normal initialisation. `None` when a VALID window does not fit.
    pub fn new(
        in_shape: Shape,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        rng: &mut impl Rng,
    ) -> Option<Conv> {
        if !fits(in_shape, kernel, stride, padding) {
            return None;
        }
        let fan_in = in_shape[0] * kernel[0] * kernel[1];
        let weight = super::he_normal(out_channels * fan_in, fan_in, rng)?;
        Some(Conv { in_shape, out_channels, kernel, stride, padding, weight, bias: vec![0.0; out_channels] })
    }

    /// Output shape and leading padding (top, left).
    pub fn geometry(&self) -> (Shape, [usize; 2]) {
        let ([oh, ow], pad) = window2d(self.in_shape, self.kernel, self.stride, self.padding);
        ([self.out_channels, oh, ow], pad)
    }

    pub fn out_shape(&self) -> Shape {
        self.geometry().0
    }

    fn patch_len(&self) -> usize {
        self.in_shape[0] * self.kernel[0] * self.kernel[1]
    }

    /// im2col of one sample into columns `offset..offset + oh·ow` of a
    /// `[C·kh·kw][stride]` matrix. `cols` must start zeroed: taps outside the
    /// input are skipped, which is the zero padding.
    fn im2col(&self, runs: &[TapRun], x: &[f32], cols: &mut [f32], stride: usize, offset: usize) {
        let [c, h, w] = self.in_shape;
        let taps = self.kernel[0] * self.kernel[1];
        for ci in 0..c {
            let xc = &x[ci * h * w..(ci + 1) * h * w];
            for r in runs {
                let dst = &mut cols[(ci * taps + r.tap) * stride + offset + r.out..][..r.len];
                let s = self.stride[1];
                let src = &xc[r.input..r.input + (r.len - 1) * s + 1];
                if s == 1 {
                    dst.copy_from_slice(src);
                } else {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = src[j * s];
                    }
                }
            }
        }
    }

    /// Adds columns `offset..offset + oh·ow` of a `[C·kh·kw][stride]` matrix
    /// back into an input-shaped gradient.
    fn col2im(&self, runs: &[TapRun], cols: &[f32], dx: &mut [f32], stride: usize, offset: usize) {
        let [c, h, w] = self.in_shape;
        let taps = self.kernel[0] * self.kernel[1];
        for ci in 0..c {
            let dxc = &mut dx[ci * h * w..(ci + 1) * h * w];
            for r in runs {
                let src = &cols[(ci * taps + r.tap) * stride + offset + r.out..][..r.len];
                let s = self.stride[1];
                let dst = &mut dxc[r.input..r.input + (r.len - 1) * s + 1];
                if s == 1 {
                    dst.iter_mut().zip(src).for_each(|(d, v)| *d += *v);
                } else {
                    for (j, v) in src.iter().enumerate() {
                        dst[j * s] += *v;
                    }
                }
            }
        }
    }

    /// A 1×1 convolution at stride 1: a matrix product per sample, on the
    /// input as it is (its im2col matrix would be a copy of it).
    pub fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1]
    }

    /// Samples per GEMM of a batch of `n`: enough output positions for an
    /// efficient product, few enough that the group's im2col matrix stays
    /// in the core's cache between being written and being multiplied.
    fn group(&self, n: usize) -> usize {
        let p: usize = self.out_shape()[1..].iter().product();
        if self.patch_len() * n * p <= WHOLE_BATCH_COLS {
            return n.max(1);
        }
        (GEMM_COLUMNS / p.max(1)).clamp(1, n.max(1))
    }

    /// [`Conv::group`], and the matrix product for it: a small
    /// convolution (its whole batch one group) multiplies with
    /// `matrixmultiply` alone, as it always has (its students keep their
    /// rounding bit for bit); a large one with [`gemm`], which streams the
    /// wide operand where that is faster.
    #[allow(clippy::type_complexity)]
    fn group_and_product(
        &self,
        n: usize,
    ) -> (usize, fn(usize, usize, usize, &[f32], isize, isize, &[f32], isize, isize, f32, &mut [f32])) {
        let g = self.group(n);
        (g, if g >= n { packed } else { gemm })
    }

    /// Forward over a batch. A pointwise convolution is one GEMM per
    /// sample on its input; any other runs a group of samples at a time
    /// through an im2col matrix `[C·kh·kw][group·P]` and one GEMM.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let [o, oh, ow] = self.out_shape();
        let p = oh * ow;
        let k = self.patch_len();
        let in_len: usize = self.in_shape.iter().product();
        // Every sample's output starts as the bias.
        let mut y = vec![0.0; n * o * p];
        for (row, b) in y.chunks_exact_mut(p).zip(self.bias.iter().cycle()) {
            row.fill(*b);
        }
        if self.pointwise() {
            let gemm = self.group_and_product(n).1;
            for (ys, xs) in y.chunks_exact_mut(o * p).zip(x.chunks_exact(k * p)) {
                gemm(o, k, p, &self.weight, k as isize, 1, xs, p as isize, 1, 1.0, ys);
            }
            return y;
        }
        let (g, gemm) = self.group_and_product(n);
        if let Some(pd) = (g < n).then(|| self.padded()).flatten() {
            let mut xpad = vec![0.0; pd.plane_len(self.in_shape[0])];
            let mut ypad = vec![0.0; o * pd.cols];
            for (xs, ys) in x.chunks_exact(in_len).zip(y.chunks_exact_mut(o * p)).take(n) {
                pd.pad(xs, self.in_shape, &mut xpad);
                gemm_gather(o, k, pd.cols, &self.weight, k as isize, 1, &xpad, &pd.taps, 0.0, &mut ypad);
                for (yrow, prow) in ys.chunks_exact_mut(p).zip(ypad.chunks_exact(pd.cols)) {
                    pd.unpad_add(prow, yrow, ow);
                }
            }
            return y;
        }
        let gp = g * p;
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        // Zeroed once: every group writes the same in-bounds entries, and
        // the others are the zero padding.
        let ld = row_stride(gp);
        let mut cols = vec![0.0; k * ld];
        let mut out = vec![0.0; if g > 1 { o * gp } else { 0 }];
        for first in (0..n).step_by(g) {
            let m = g.min(n - first);
            for j in 0..m {
                let s = first + j;
                self.im2col(&runs, &x[s * in_len..(s + 1) * in_len], &mut cols, ld, j * p);
            }
            // The product's rows are m·P long (the last group may be short).
            let mp = m * p;
            if m == 1 {
                // One sample: the product's layout is the sample's, added onto its bias in place.
                let ys = &mut y[first * o * p..(first + 1) * o * p];
                gemm(o, k, p, &self.weight, k as isize, 1, &cols, ld as isize, 1, 1.0, ys);
                continue;
            }
            gemm(o, k, mp, &self.weight, k as isize, 1, &cols, ld as isize, 1, 0.0, &mut out);
            for j in 0..m {
                let ys = &mut y[(first + j) * o * p..(first + j + 1) * o * p];
                for (oc, row) in ys.chunks_exact_mut(p).enumerate() {
                    row.iter_mut().zip(&out[oc * mp + j * p..oc * mp + (j + 1) * p]).for_each(|(d, v)| *d += v);
                }
            }
        }
        y
    }

    /// Accumulates `dW`, `db` into `gw`, `gb`; returns `dx`.
    pub fn backward(&self, x: &[f32], dy: &[f32], n: usize, gw: &mut [f32], gb: &mut [f32]) -> Vec<f32> {
        self.backward_with(x, dy, n, gw, gb, true)
    }

    /// [`Conv::backward`]; `input_grad: false` skips `dx` (the first
    /// layer's is never used) and returns an empty vector. The im2col
    /// matrices are built again, a group at a time, rather than kept from
    /// the forward pass: a whole batch's would be kh·kw times its input.
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
        let [o, oh, ow] = self.out_shape();
        let p = oh * ow;
        let k = self.patch_len();
        // db: each channel's sum over the batch, in sample order.
        let (g, gemm) = self.group_and_product(n);
        let whole_batch = g >= n;
        for (oc, g) in gb.iter_mut().enumerate() {
            let planes = (0..n).map(|s| &dy[(s * o + oc) * p..(s * o + oc + 1) * p]);
            // A small convolution (its batch one group) keeps the serial
            // sum it always had, and with it its students' rounding.
            *g += if whole_batch { planes.flatten().sum::<f32>() } else { planes.map(sum).sum::<f32>() };
        }
        // A large stride-1 SAME convolution with odd windows takes its input
        // gradient as a convolution of dY (at the end), not through col2im.
        let transposed = (input_grad && !whole_batch).then(|| self.transposed()).flatten();
        let scatter = input_grad && transposed.is_none();
        let mut dx = vec![0.0; if scatter { n * in_len } else { 0 }];
        if let Some(pd) = (!whole_batch && !scatter).then(|| self.padded()).flatten() {
            // dW[O×K] += dY[O×cols] · (implicit im2col)ᵀ, per sample; dY
            // spread over the padded width with zeros in the dropped columns.
            let [c, _, _] = self.in_shape;
            let mut xpad = vec![0.0; pd.plane_len(c)];
            let mut dypad = vec![0.0; o * pd.cols];
            for (xs, ds) in x.chunks_exact(in_len).zip(dy.chunks_exact(o * p)).take(n) {
                pd.pad(xs, self.in_shape, &mut xpad);
                for (prow, drow) in dypad.chunks_exact_mut(pd.cols).zip(ds.chunks_exact(p)) {
                    pd.spread(drow, prow, ow);
                }
                dots_gather(o, pd.cols, k, &dypad, pd.cols, &xpad, &pd.taps, 1.0, gw);
            }
            return transposed.map_or(dx, |t| t.forward(dy, n));
        }
        if self.pointwise() {
            for (s, (ds, xs)) in dy.chunks_exact(o * p).zip(x.chunks_exact(k * p)).take(n).enumerate() {
                // dW[O×C] += dY_s[O×P] · X_sᵀ[P×C]
                gemm(o, p, k, ds, p as isize, 1, xs, 1, p as isize, 1.0, gw);
                if input_grad {
                    // dX_s[C×P] = Wᵀ[C×O] · dY_s[O×P]
                    let dxs = &mut dx[s * in_len..(s + 1) * in_len];
                    gemm(k, o, p, &self.weight, 1, k as isize, ds, p as isize, 1, 0.0, dxs);
                }
            }
            return dx;
        }
        let gp = g * p;
        let runs = tap_runs(self.in_shape, self.kernel, self.stride, self.padding);
        let ld = row_stride(gp);
        let mut cols = vec![0.0; k * ld];
        let mut dyg = vec![0.0; o * ld];
        let mut dcols = vec![0.0; if scatter { k * gp } else { 0 }];
        for first in (0..n).step_by(g) {
            let m = g.min(n - first);
            for j in 0..m {
                let s = first + j;
                self.im2col(&runs, &x[s * in_len..(s + 1) * in_len], &mut cols, ld, j * p);
                for oc in 0..o {
                    dyg[oc * ld + j * p..oc * ld + (j + 1) * p]
                        .copy_from_slice(&dy[(s * o + oc) * p..(s * o + oc + 1) * p]);
                }
            }
            let mp = m * p;
            // dW[O×K] += dY[O×mP] · colsᵀ[mP×K]
            gemm(o, mp, k, &dyg, ld as isize, 1, &cols, 1, ld as isize, 1.0, gw);
            if scatter {
                // dcols[K×mP] = Wᵀ[K×O] · dY[O×mP], rows m·P long.
                gemm(k, o, mp, &self.weight, 1, k as isize, &dyg, ld as isize, 1, 0.0, &mut dcols);
                for j in 0..m {
                    let s = first + j;
                    self.col2im(&runs, &dcols, &mut dx[s * in_len..(s + 1) * in_len], mp, j * p);
                }
            }
        }
        match transposed {
            Some(t) => t.forward(dy, n),
            None => dx,
        }
    }

    /// The implicit-im2col geometry of a stride-1 convolution whose
    /// outputs are wide enough (see [`Padded`]); `None` otherwise.
    fn padded(&self) -> Option<Padded> {
        if self.stride != [1, 1] || self.pointwise() {
            return None;
        }
        let ([oh, ow], [pt, pl]) = window2d(self.in_shape, self.kernel, self.stride, self.padding);
        let [kh, kw] = self.kernel;
        let (hp, wp) = (oh + kh - 1, ow + kw - 1);
        let cols = (oh - 1) * wp + ow;
        if cols < IMPLICIT_COLUMNS {
            return None;
        }
        let c = self.in_shape[0];
        let taps = (0..c)
            .flat_map(|ci| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| ci * hp * wp + ky * wp + kx)))
            .collect();
        Some(Padded { hp, wp, pt, pl, cols, taps })
    }

    /// The convolution whose forward pass is this one's input gradient,
    /// when there is one of the same form: at stride 1, SAME, odd windows
    /// (TFLite pads (k − 1)/2 on both sides), dX = dY convolved with the
    /// weights turned 180° and their channels swapped, SAME again. Its
    /// product is `C × (O·kh·kw) × P`, as deep as a forward pass's, where
    /// `Wᵀ · dY` is `(C·kh·kw) × O × P`, only `O` deep, and its result is
    /// a matrix kh·kw times the input to add back into it.
    fn transposed(&self) -> Option<Conv> {
        let [kh, kw] = self.kernel;
        if self.stride != [1, 1] || self.padding != Padding::Same || kh % 2 == 0 || kw % 2 == 0 || self.pointwise() {
            return None;
        }
        let [c, h, w] = self.in_shape;
        let o = self.out_channels;
        let mut weight = vec![0.0; self.weight.len()];
        for oc in 0..o {
            for ci in 0..c {
                for y in 0..kh {
                    for x in 0..kw {
                        weight[((ci * o + oc) * kh + kh - 1 - y) * kw + kw - 1 - x] =
                            self.weight[((oc * c + ci) * kh + y) * kw + x];
                    }
                }
            }
        }
        Some(Conv {
            in_shape: [o, h, w],
            out_channels: c,
            kernel: self.kernel,
            stride: [1, 1],
            padding: Padding::Same,
            weight,
            bias: vec![0.0; c],
        })
    }
}

/// A stride-1 convolution as a product with its im2col matrix left
/// implicit: the input copied once into zero-padded planes `hp × wp`, the
/// outputs computed over the padded width (`cols` positions, the columns
/// from `ow` on dropped), so the im2col row of tap `(ci, ky, kx)` is the
/// padded input itself from offset `taps[…] = ci·hp·wp + ky·wp + kx`. No
/// im2col copy (nine times the input for a 3×3 window), at the price of
/// `(kw − 1) / ow` wasted columns (6 % at ResNet-8's 32-wide maps).
struct Padded {
    hp: usize,
    wp: usize,
    pt: usize,
    pl: usize,
    cols: usize,
    taps: Vec<usize>,
}

impl Padded {
    fn plane_len(&self, channels: usize) -> usize {
        channels * self.hp * self.wp
    }

    /// One sample `[C, H, W]` into the padded planes (whose border stays zero).
    fn pad(&self, xs: &[f32], [c, h, w]: Shape, buf: &mut [f32]) {
        for ci in 0..c {
            for iy in 0..h {
                let at = ci * self.hp * self.wp + (iy + self.pt) * self.wp + self.pl;
                buf[at..at + w].copy_from_slice(&xs[(ci * h + iy) * w..(ci * h + iy + 1) * w]);
            }
        }
    }

    /// Adds an output row over the padded width (`cols` long) into its
    /// `[oh·ow]` plane, the dropped columns left out.
    fn unpad_add(&self, padded: &[f32], plane: &mut [f32], ow: usize) {
        for (row, src) in plane.chunks_exact_mut(ow).zip(padded.chunks(self.wp)) {
            row.iter_mut().zip(src).for_each(|(d, v)| *d += v);
        }
    }

    /// An `[oh·ow]` plane spread over the padded width (the dropped
    /// columns keep their zeros).
    fn spread(&self, plane: &[f32], padded: &mut [f32], ow: usize) {
        for (row, dst) in plane.chunks_exact(ow).zip(padded.chunks_mut(self.wp)) {
            dst[..ow].copy_from_slice(row);
        }
    }
}

/// Fewer output positions per sample (ResNet-8's 8×8 maps) make the
/// implicit product's weight gradient too shallow a sum: such layers go
/// through grouped im2col matrices instead.
const IMPLICIT_COLUMNS: usize = 256;

/// Output positions per GEMM in [`Conv::forward`] and its backward pass
/// (measured on ResNet-8 and MobileNetV1 training: 256 was as fast as any
/// of 64 … 4,096, 4,096 a third slower).
const GEMM_COLUMNS: usize = 256;

/// The row stride of a matrix with rows `len` long: a multiple of 16
/// floats (one 64-byte cache line), never of 64 (256 bytes). Rows 4 KiB
/// apart (1,024 output positions: ResNet-8's 32×32 maps) all fall in the
/// same sets of the L1 cache, and a product reading down their columns
/// evicts its own operand: measured twice as slow for 16×144×1024.
fn row_stride(len: usize) -> usize {
    let ld = len.next_multiple_of(16);
    if ld.is_multiple_of(64) { ld + 16 } else { ld }
}

/// A batch whose im2col matrix has at most this many values (1 MiB) runs
/// as one group: one GEMM is cheaper than several small ones.
const WHOLE_BATCH_COLS: usize = 1 << 18;

impl LayerKind for Conv {
    weight_and_bias!();

    fn out_shape(&self, _: Shape) -> Shape {
        Conv::out_shape(self)
    }

    fn macs(&self) -> usize {
        Conv::out_shape(self).iter().product::<usize>() * self.in_shape[0] * self.kernel[0] * self.kernel[1]
    }

    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        Conv::forward(self, x, n)
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

    /// `[O][C][kh][kw]` → `[O][kh][kw][C]`.
    fn device_weights(&self, _: Shape) -> Option<DeviceWeights> {
        let [c, _, _] = self.in_shape;
        let [kh, kw] = self.kernel;
        let k = c * kh * kw;
        let mut wt = vec![0.0; self.weight.len()];
        for o in 0..self.out_channels {
            for ci in 0..c {
                for y in 0..kh {
                    for x in 0..kw {
                        wt[o * k + (y * kw + x) * c + ci] = self.weight[o * k + (ci * kh + y) * kw + x];
                    }
                }
            }
        }
        Some(DeviceWeights { weights: wt, bias: self.bias.clone(), per_channel: k, folds_input_zero_point: false })
    }

    fn device_op(&self, in_shape: Shape) -> Result<Option<(Op, [u16; PARAM_COUNT])>> {
        Ok(Some((Op::Conv2d, window_params(in_shape, self.out_channels, self.kernel, self.stride, self.padding)?)))
    }

    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()> {
        let s = at.shape;
        let dims = [&[self.out_channels, s[0]][..], &at.kernel_dims(self.kernel)].concat();
        let wt = b.init_f32("weight", &dims, &self.weight);
        let bias = b.init_f32("bias", &[self.out_channels], &self.bias);
        b.op("Conv", &[wt, bias], window_attrs(s, self.kernel, self.stride, self.padding, at.one_d));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::testing::check_gradients;
    use rand::SeedableRng;

    #[test]
    fn forward_hand_computed_1d() {
        // One channel, kernel 3, SAME, stride 1: x = [1, 2, 3, 4], w = [1, 0, -1], b = 0.5.
        // Windows (zero-padded): [0,1,2] → -2, [1,2,3] → -2, [2,3,4] → -2, [3,4,0] → 3; + 0.5.
        let c = Conv {
            in_shape: [1, 1, 4],
            out_channels: 1,
            kernel: [1, 3],
            stride: [1, 1],
            padding: Padding::Same,
            weight: vec![1.0, 0.0, -1.0],
            bias: vec![0.5],
        };
        assert_eq!(c.forward(&[1.0, 2.0, 3.0, 4.0], 1), vec![-1.5, -1.5, -1.5, 3.5]);
    }

    #[test]
    fn forward_hand_computed_stride2_valid() {
        // x = [1..=5], kernel 2 VALID stride 2 → windows [1,2], [3,4]; w = [1, 1] → [3, 7].
        let c = Conv {
            in_shape: [1, 1, 5],
            out_channels: 1,
            kernel: [1, 2],
            stride: [2, 2],
            padding: Padding::Valid,
            weight: vec![1.0, 1.0],
            bias: vec![0.0],
        };
        assert_eq!(c.forward(&[1.0, 2.0, 3.0, 4.0, 5.0], 1), vec![3.0, 7.0]);
    }

    #[test]
    fn forward_matches_direct_loops_on_every_geometry() {
        use crate::student::testing::{conv_geometries, direct_conv};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        for (shape, k, s, pad) in conv_geometries() {
            let conv = Conv::new(shape, 3, k, s, pad, &mut rng).unwrap();
            let conv = Conv { bias: vec![0.1, -0.2, 0.3], ..conv };
            let n = 2;
            let x: Vec<f32> = (0..n * shape.iter().product::<usize>()).map(|i| (i % 7) as f32 - 3.0).collect();
            let want = direct_conv(&x, n, shape, &conv.weight, &conv.bias, k, s, pad, false);
            let got = conv.forward(&x, n);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{shape:?} k{k:?} s{s:?} {pad:?}: {got:?} vs {want:?}");
            }
        }
    }

    /// A batch runs in groups of samples (the last one short): the same
    /// outputs and gradients as sample by sample.
    #[test]
    fn grouped_batches_match_one_sample_at_a_time() {
        use crate::student::testing::direct_conv;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        // Strided (the input gradient through col2im), and stride 1 with odd
        // windows (the input gradient a convolution of dY), 2-D and 1-D.
        for (shape, k, s, n) in
            [([8, 1, 200], [1, 5], [2, 2], 71), ([16, 9, 7], [3, 3], [1, 1], 61), ([8, 1, 100], [1, 5], [1, 1], 71)]
        {
            let conv = Conv::new(shape, 4, k, s, Padding::Same, &mut rng).unwrap();
            let (in_len, out_len) = (shape.iter().product::<usize>(), conv.out_shape().iter().product::<usize>());
            assert!(conv.group(n) < n && !n.is_multiple_of(conv.group(n)), "several groups, the last one short");
            assert_eq!(conv.transposed().is_some(), s == [1, 1], "{shape:?}");
            let x: Vec<f32> = (0..n * in_len).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
            let dy: Vec<f32> = (0..n * out_len).map(|i| ((i * 104_729) % 11) as f32 - 5.0).collect();
            let want = direct_conv(&x, n, shape, &conv.weight, &conv.bias, k, s, Padding::Same, false);
            let got = conv.forward(&x, n);
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-3), "{shape:?}");
            let (mut gw, mut gb) = (vec![0.0; conv.weight.len()], vec![0.0; 4]);
            let dx = conv.backward(&x, &dy, n, &mut gw, &mut gb);
            let (mut gw1, mut gb1) = (vec![0.0; conv.weight.len()], vec![0.0; 4]);
            for i in 0..n {
                let one = |v: &[f32], len: usize| v[i * len..(i + 1) * len].to_vec();
                let dx1 = conv.backward(&one(&x, in_len), &one(&dy, out_len), 1, &mut gw1, &mut gb1);
                assert!(dx1.iter().zip(&dx[i * in_len..]).all(|(a, b)| (a - b).abs() < 1e-3), "{shape:?} dx");
            }
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(u, v)| (u - v).abs() <= 1e-3 * (1.0 + u.abs()));
            assert!(close(&gw, &gw1) && close(&gb, &gb1), "{shape:?} weight gradients");
        }
    }

    /// Large stride-1 convolutions multiply with their im2col matrix left
    /// implicit (padded planes): the same outputs and gradients as one
    /// sample at a time through im2col, with and without the input gradient.
    #[test]
    fn implicit_im2col_matches_one_sample_at_a_time() {
        use crate::student::testing::direct_conv;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        for (shape, k, pad, n) in [
            ([8, 20, 20], [3, 3], Padding::Same, 13),
            ([12, 22, 21], [3, 2], Padding::Valid, 11),
            ([4, 1, 600], [1, 5], Padding::Same, 30),
        ] {
            let conv = Conv::new(shape, 5, k, [1, 1], pad, &mut rng).unwrap();
            let conv = Conv { bias: vec![0.1, -0.2, 0.3, 0.0, 0.5], ..conv };
            assert!(conv.group(n) < n && conv.padded().is_some(), "{shape:?}: implicit");
            let (in_len, out_len) = (shape.iter().product::<usize>(), conv.out_shape().iter().product::<usize>());
            let x: Vec<f32> = (0..n * in_len).map(|i| ((i * 7919) % 13) as f32 * 0.25 - 1.5).collect();
            let dy: Vec<f32> = (0..n * out_len).map(|i| ((i * 104_729) % 11) as f32 * 0.25 - 1.25).collect();
            let want = direct_conv(&x, n, shape, &conv.weight, &conv.bias, k, [1, 1], pad, false);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(u, v)| (u - v).abs() <= 1e-3 * (1.0 + u.abs()));
            assert!(close(&conv.forward(&x, n), &want), "{shape:?} forward");
            let (mut gw1, mut gb1) = (vec![0.0; conv.weight.len()], vec![0.0; 5]);
            let mut dx1 = Vec::new();
            for i in 0..n {
                let one = |v: &[f32], len: usize| v[i * len..(i + 1) * len].to_vec();
                dx1.extend(conv.backward(&one(&x, in_len), &one(&dy, out_len), 1, &mut gw1, &mut gb1));
            }
            for input_grad in [true, false] {
                let (mut gw, mut gb) = (vec![0.0; conv.weight.len()], vec![0.0; 5]);
                let dx = conv.backward_with(&x, &dy, n, &mut gw, &mut gb, input_grad);
                assert!(close(&gw1, &gw) && close(&gb1, &gb), "{shape:?} weight gradients ({input_grad})");
                if input_grad {
                    assert!(close(&dx1, &dx), "{shape:?} dx");
                } else {
                    assert!(dx.is_empty());
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (shape, k, s, pad) in [
            ([2, 1, 9], [1, 3], [2, 2], Padding::Same),
            ([2, 5, 5], [3, 3], [1, 1], Padding::Same),
            ([1, 6, 6], [3, 3], [2, 2], Padding::Valid),
            // KWS's first layer in small: a tall window, strides per axis.
            ([1, 9, 5], [4, 2], [2, 1], Padding::Same),
            ([2, 7, 6], [3, 2], [1, 2], Padding::Valid),
            // Pointwise: a product per sample on the input itself.
            ([3, 4, 5], [1, 1], [1, 1], Padding::Same),
        ] {
            let conv = Conv::new(shape, 3, k, s, pad, &mut rng).unwrap();
            let n = 2;
            let in_len: usize = shape.iter().product();
            let out_len: usize = conv.out_shape().iter().product();
            check_gradients(
                n * in_len,
                n * out_len,
                vec![conv.weight.clone(), conv.bias.clone()],
                |x, params| {
                    let c = Conv { weight: params[0].clone(), bias: params[1].clone(), ..conv.clone() };
                    c.forward(x, n)
                },
                |x, params, dy, grads| {
                    let c = Conv { weight: params[0].clone(), bias: params[1].clone(), ..conv.clone() };
                    let (gw, rest) = grads.split_at_mut(1);
                    c.backward(x, dy, n, &mut gw[0], &mut rest[0])
                },
            );
        }
    }
}
