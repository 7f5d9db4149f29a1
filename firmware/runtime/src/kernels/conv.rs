//! Regular 2-D convolution (1-D is `H = 1`), channels-last, TFLite semantics:
//!
//! ```text
//! y[oy][ox][o] = requant(bias[o] + Σ_{in-bounds ky, kx} Σ_c w[o][ky][kx][c] · (x[iy][ix][c] − z_in))
//! ```
//!
//! computed directly on the activation (no im2col buffer: the arena has no
//! scratch space) as `Σ w·x − z_in · Σ w`. For a fixed output channel and
//! kernel row, the in-bounds taps of one window are contiguous in both the
//! weights (`[o][ky][kx0..kx1][..]`) and the input (`[iy][ix0..ix1][..]`), so
//! the inner loop is a plain int8 dot product over `(kx1 − kx0) · in_c`
//! elements. Two output channels are computed together so each input load
//! feeds two multiply-accumulates. Loops go channel pair, output row, then
//! pixel; the interior pixels of a row (windows entirely inside the input
//! horizontally) share their weight runs and `bias − z_in · Σ w`, so they run
//! in one tight loop ([`interior_run`]) whose input window just advances by
//! `stride · in_c`; pixels whose windows hang over the left or right edge
//! take [`edge_pixel`], which sums their in-bounds weights. Integer
//! arithmetic wraps like TFLite's int32 accumulator, so the rearrangement
//! is bit-exact.
//!
//! On Cortex-M3 (measured under QEMU with LTO) the inner loop ([`dot2`])
//! runs 12 byte loads, 8 `mla` and 9 address/loop instructions per 4 input
//! bytes (29 instructions per 8 MACs); each output also pays about 30 for
//! requantization. Blocking 2 pixels × 2 channels, or 3-4 channels, needs
//! fewer loads per MAC but does not fit the 13 allocatable registers once
//! LLVM unrolls the loop, and the spills made it slower.

use super::dot::dot2;
use super::window::Taps;
use super::{ChannelTable, ConvParams, Epilogue, Requantizer, Store};
use crate::error::Error;
use crate::model::Layer;
use crate::ops::Operator;

/// Int8 convolution.
///
/// * `input`: `in_h × in_w × in_c` (HWC).
/// * `weights`: `[out_c][kernel_h][kernel_w][in_c]`.
/// * `channels`: `out_c` channel-table entries, with the plain (unfolded) bias.
/// * `output`: `out_h × out_w × out_c` (HWC).
///
/// Writes nothing if a slice length disagrees with `p` (checked once here).
pub fn conv2d(p: &ConvParams, input: &[i8], weights: &[i8], channels: &[u8], output: &mut [i8]) {
    conv2d_rounded::<false>(p, input, weights, channels, output)
}

/// [`conv2d`] with TFLite's single rounding when `SINGLE` (see
/// [`super::Requantizer::apply_rounded`]).
pub fn conv2d_rounded<const SINGLE: bool>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: &[u8],
    output: &mut [i8],
) {
    conv2d_layer::<SINGLE, { usize::MAX }, 0, _>(p, input, weights, channels, output)
}

/// [`conv2d_rounded`]'s body, inlined into its caller, with its helpers
/// instantiated once per `LAYER`: a compiled model gives each layer its own
/// copy, which LLVM specialises to that layer's constant shape. `WINDOW`
/// (its filter's length, or 0): a layer whose filter fits takes the
/// gathering kernel with a buffer of that many values (see
/// [`super::conv_gathered`]).
#[inline(always)]
pub fn conv2d_layer<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) {
    conv2d_layer_with::<SINGLE, LAYER, WINDOW, C, Store>(p, input, weights, channels, output, &Store)
}

/// [`conv2d_layer`] putting each output value through `epilogue` (see
/// [`Epilogue`]) instead of storing it.
#[inline(always)]
pub fn conv2d_layer_with<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable, E: Epilogue>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
    epilogue: &E,
) {
    let win = p.window;
    let (in_c, out_c) = (p.in_channels, p.out_channels);
    let filter_len = win.kernel_len().and_then(|k| k.checked_mul(in_c));
    let lengths_ok = win.input_len(in_c) == Some(input.len())
        && filter_len.and_then(|f| f.checked_mul(out_c)) == Some(weights.len())
        && channels.holds(out_c)
        && win.output_len(out_c) == Some(output.len());
    let Some(filter_len) = filter_len else { return };
    if !lengths_ok || out_c == 0 || filter_len == 0 {
        return;
    }
    // Per-layer copies only: see `conv_gathered`.
    if WINDOW > 0 && super::conv_gathered::applies(p, WINDOW) {
        return super::conv_gathered::conv2d_gathered::<SINGLE, LAYER, WINDOW, C, E>(
            p, input, weights, channels, output, epilogue,
        );
    }
    let g = Geometry {
        in_c,
        in_w: win.in_w(),
        kw: win.kernel_w(),
        x_stride: win.in_w() * in_c,
        w_stride: win.kernel_w() * in_c,
        zin: p.input_zero_point,
    };
    let interior = win.full_cols();
    let out_row_len = win.out_w() * out_c;

    // Output channels in pairs; an odd last channel is paired with itself and
    // written once (simpler than a second copy of the loops, and only one
    // channel of the layer pays for it).
    for o0 in (0..out_c).step_by(2) {
        let o1 = if o0 + 1 < out_c { o0 + 1 } else { o0 };
        let mut filters = weights.chunks_exact(filter_len);
        let (Some(f0), Some(f1)) = (filters.nth(o0), weights.chunks_exact(filter_len).nth(o1)) else {
            return;
        };
        let (Some(q0), Some(q1)) = (channels.channel(o0), channels.channel(o1)) else {
            return;
        };
        let pair = Pair {
            o: [o0, o1],
            f: [f0, f1],
            bias: [q0.bias, q1.bias],
            r: [
                Requantizer::prepared(q0.multiplier, p.output_zero_point, p.clamp),
                Requantizer::prepared(q1.multiplier, p.output_zero_point, p.clamp),
            ],
            epilogue,
        };
        for (oy, out_row) in output.chunks_exact_mut(out_row_len).enumerate() {
            let rows = win.rows(oy);
            let mut pixels = out_row.chunks_exact_mut(out_c);
            for ox in 0..interior.start {
                let Some(pixel) = pixels.next() else { return };
                edge_pixel::<SINGLE, LAYER, E>(&g, &pair, input, rows, win.cols(ox), pixel);
            }
            if !interior.is_empty() {
                // Every interior window of this row has the same taps, hence the
                // same weight runs and zero-point correction; only its input
                // start moves, by `stride · in_c` per pixel.
                let first = win.cols(interior.start);
                let taps = g.runs(rows, first);
                let (Some(a), Some(b)) = (taps.weights(f0), taps.weights(f1)) else { return };
                let bias = [g.folded_bias(q0.bias, &taps, a), g.folded_bias(q1.bias, &taps, b)];
                let run = Interior { g: &g, taps, step: win.stride_w() * in_c, count: interior.len(), a, b, bias };
                interior_run::<SINGLE, LAYER, E>(&run, &pair, input, &mut pixels);
            }
            for ox in interior.end..win.out_w() {
                let Some(pixel) = pixels.next() else { return };
                edge_pixel::<SINGLE, LAYER, E>(&g, &pair, input, rows, win.cols(ox), pixel);
            }
        }
    }
}

/// Layer geometry in bytes.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    in_c: usize,
    in_w: usize,
    kw: usize,
    /// Input bytes between kernel rows.
    x_stride: usize,
    /// Filter bytes between kernel rows.
    w_stride: usize,
    zin: i32,
}

/// Where one window's in-bounds taps are: `rows` runs of `len` bytes,
/// `x_stride` apart from input offset `x`, `w_stride` apart from filter offset `w`.
#[derive(Debug, Clone, Copy)]
struct Runs {
    rows: usize,
    len: usize,
    x: usize,
    x_span: usize,
    w: usize,
    w_span: usize,
}

impl Runs {
    /// The window's part of a filter.
    #[inline(always)]
    fn weights(self, f: &[i8]) -> Option<&[i8]> {
        f.get(self.w..self.w + self.w_span)
    }
}

impl Geometry {
    #[inline(always)]
    fn runs(&self, rows: Taps, cols: Taps) -> Runs {
        let len = cols.len() * self.in_c;
        let span = |stride: usize| if rows.len() == 0 { 0 } else { (rows.len() - 1) * stride + len };
        Runs {
            rows: rows.len(),
            len,
            x: (rows.i0 * self.in_w + cols.i0) * self.in_c,
            x_span: span(self.x_stride),
            w: (rows.k0 * self.kw + cols.k0) * self.in_c,
            w_span: span(self.w_stride),
        }
    }

    /// `bias − z_in · Σ w` over the window's weight runs `w`.
    #[inline(always)]
    fn folded_bias(&self, bias: i32, runs: &Runs, w: &[i8]) -> i32 {
        let mut s = 0i32;
        for r in 0..runs.rows {
            let o = r * self.w_stride;
            s = s.wrapping_add(w.get(o..o + runs.len).map_or(0, sum));
        }
        bias.wrapping_sub(self.zin.wrapping_mul(s))
    }
}

/// One output channel pair: indices, filters, biases, requantizers, and
/// what to do with each output.
#[derive(Debug, Clone, Copy)]
struct Pair<'a, E> {
    o: [usize; 2],
    f: [&'a [i8]; 2],
    bias: [i32; 2],
    r: [Requantizer; 2],
    epilogue: &'a E,
}

impl<E: Epilogue> Pair<'_, E> {
    /// Requantizes and writes the pair's two outputs of one pixel (one, for
    /// an odd last channel paired with itself). One bounds check for both.
    #[inline(always)]
    fn store<const SINGLE: bool>(&self, pixel: &mut [i8], bias: [i32; 2], dot: [i32; 2]) {
        let Some((y0, rest)) = pixel.get_mut(self.o[0]..=self.o[1]).and_then(|y| y.split_first_mut()) else {
            return;
        };
        self.epilogue.put(y0, self.r[0].apply_rounded::<SINGLE>(bias[0].wrapping_add(dot[0])));
        if let Some(y1) = rest.first_mut() {
            self.epilogue.put(y1, self.r[1].apply_rounded::<SINGLE>(bias[1].wrapping_add(dot[1])));
        }
    }
}

/// The interior pixels of one output row for one channel pair: same taps,
/// weight runs and bias; the input window moves by `step` bytes per pixel.
#[derive(Debug)]
struct Interior<'a> {
    g: &'a Geometry,
    taps: Runs,
    step: usize,
    count: usize,
    a: &'a [i8],
    b: &'a [i8],
    bias: [i32; 2],
}

/// Not inlined on purpose: inlined into `conv2d`, the dot product's pointers
/// were pushed to the stack by the outer loops' state (about 4 instructions
/// per MAC instead of 3.6); one call per output row and channel pair keeps
/// its registers free without paying a call per pixel.
#[inline(never)]
fn interior_run<'o, const SINGLE: bool, const LAYER: usize, E: Epilogue>(
    run: &Interior,
    pair: &Pair<E>,
    input: &[i8],
    pixels: &mut impl Iterator<Item = &'o mut [i8]>,
) {
    let (g, t) = (run.g, &run.taps);
    let mut x = t.x;
    // Two pixels at a time: each weight load feeds two pixels, each input
    // load two channels. With SMLAD (two MACs per instruction, four bytes
    // per step) the one-pixel loop is faster on runs of 8 bytes or more
    // (measured: conv 8×8×16→16 3.94 vs 4.03 instructions per MAC on M4);
    // shorter runs never reach its word loop, and pair up.
    if cfg!(tinykd_dsp) && t.len >= 8 {
        for _ in 0..run.count {
            let (Some(pixel), Some(xs)) = (pixels.next(), input.get(x..x + t.x_span)) else { return };
            let d = window_dot2(xs, g.x_stride, run.a, run.b, g.w_stride, t.len, t.rows);
            pair.store::<SINGLE>(pixel, run.bias, d);
            x += run.step;
        }
        return;
    }
    // An odd last pixel runs as a pair with itself (its second result is
    // dropped): one copy of the loop, a smaller engine.
    for k in (0..run.count).step_by(2) {
        let second = k + 1 < run.count;
        let (Some(p0), Some(x0)) = (pixels.next(), input.get(x..x + t.x_span)) else { return };
        let x1 = if second { x + run.step } else { x };
        let Some(x1) = input.get(x1..x1 + t.x_span) else { return };
        let d = window_dot2x2(x0, x1, g.x_stride, run.a, run.b, g.w_stride, t.len, t.rows);
        pair.store::<SINGLE>(p0, run.bias, [d[0], d[1]]);
        if second {
            let Some(p1) = pixels.next() else { return };
            pair.store::<SINGLE>(p1, run.bias, [d[2], d[3]]);
        }
        x += 2 * run.step;
    }
}

/// [`super::dot::window2x2`] for two windows `x0`, `x1` at once, with one
/// kernel row as [`super::dot::dot2x2`] itself. The check stays here, out
/// of `window2x2`: inside it, the Cortex-M0 build of the main job's 1-D
/// CNN took 18 % more instructions (measured: 246k vs 290k; same code,
/// LLVM allocated the loop's registers differently).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn window_dot2x2(
    x0: &[i8],
    x1: &[i8],
    x_stride: usize,
    a: &[i8],
    b: &[i8],
    w_stride: usize,
    len: usize,
    rows: usize,
) -> [i32; 4] {
    if rows == 1 {
        return super::dot::dot2x2(x0, x1, a, b);
    }
    super::dot::window2x2(x0, x1, x_stride, a, b, w_stride, len, rows)
}

/// One output pixel whose window may hang over an edge: TFLite's own sum,
/// `bias + Σ w·(x − z_in)` over the in-bounds taps (the padding's real
/// zero adds nothing), in one pass for both channels — each window shape
/// occurs a few times per layer, so folding `z_in · Σ w` for it (a second
/// pass over the weights) cost more than the subtraction it saves.
#[inline(never)]
fn edge_pixel<const SINGLE: bool, const LAYER: usize, E: Epilogue>(
    g: &Geometry,
    pair: &Pair<E>,
    input: &[i8],
    rows: Taps,
    cols: Taps,
    pixel: &mut [i8],
) {
    let runs = g.runs(rows, cols);
    let (Some(x), Some(a), Some(b)) =
        (input.get(runs.x..runs.x + runs.x_span), runs.weights(pair.f[0]), runs.weights(pair.f[1]))
    else {
        return;
    };
    let (mut s0, mut s1) = (0i32, 0i32);
    for r in 0..runs.rows {
        let (xo, wo) = (r * g.x_stride, r * g.w_stride);
        let (Some(x), Some(a), Some(b)) =
            (x.get(xo..xo + runs.len), a.get(wo..wo + runs.len), b.get(wo..wo + runs.len))
        else {
            break;
        };
        for ((x, a), b) in x.iter().zip(a).zip(b) {
            // |x − z_in| ≤ 255 and |w| ≤ 128: each product fits; the sum wraps
            // like TFLite's int32 accumulator.
            let v = *x as i32 - g.zin;
            s0 = s0.wrapping_add(v * *a as i32);
            s1 = s1.wrapping_add(v * *b as i32);
        }
    }
    pair.store::<SINGLE>(pixel, pair.bias, [s0, s1]);
}

/// Sum of int8 values (wrapping, like the accumulator it corrects).
#[inline(always)]
pub(crate) fn sum(w: &[i8]) -> i32 {
    w.iter().fold(0i32, |s, v| s.wrapping_add(*v as i32))
}

/// `[Σ x·a, Σ x·b]` over one window: kernel row `r` pairs `x[r·x_stride..][..len]`
/// with `a[r·w_stride..][..len]` and `b[r·w_stride..][..len]`. Each input
/// byte is loaded once for two multiply-accumulates (two output channels).
#[inline(always)]
fn window_dot2(x: &[i8], x_stride: usize, a: &[i8], b: &[i8], w_stride: usize, len: usize, rows: usize) -> [i32; 2] {
    if rows == 1 {
        // 1-D convolutions (and 2-D windows cut to one row by an edge): one run.
        return dot2(x, a, b);
    }
    let [mut s0, mut s1] = [0i32; 2];
    for r in 0..rows {
        let (xo, wo) = (r * x_stride, r * w_stride);
        let (Some(x), Some(a), Some(b)) = (x.get(xo..xo + len), a.get(wo..wo + len), b.get(wo..wo + len)) else {
            break;
        };
        let [d0, d1] = dot2(x, a, b);
        s0 = s0.wrapping_add(d0);
        s1 = s1.wrapping_add(d1);
    }
    [s0, s1]
}

/// The convolution operator ([`crate::format::Op::Conv2d`]).
#[derive(Debug, Clone, Copy)]
pub struct Conv2d;

/// A convolution (regular or depthwise), decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvStep<'a, C> {
    pub params: ConvParams,
    pub weights: &'a [i8],
    pub channels: C,
}

/// Checks a convolution record (regular, or depthwise when `depthwise`).
pub(crate) fn validate_conv(l: &Layer, depthwise: bool) -> Result<(), Error> {
    let p = l.conv_params()?;
    if depthwise && p.out_channels != p.in_channels {
        return Err(Error::Malformed("depthwise convolution needs out_c == in_c"));
    }
    // The kernels subtract it from int8 inputs; TFLite's int8 zero points are int8.
    if !(-128..=127).contains(&p.input_zero_point) {
        return Err(Error::Malformed("convolution input zero point is outside -128..=127"));
    }
    if p.window.input_len(p.in_channels) != Some(l.input_len) {
        return Err(Error::Malformed("convolution input length is not in_h × in_w × in_c"));
    }
    if p.window.output_len(p.out_channels) != Some(l.output_len) {
        return Err(Error::Malformed("convolution output length does not match its shape and padding"));
    }
    let filter = p.window.kernel_len().and_then(|k| k.checked_mul(p.in_channels));
    let weights = if depthwise { filter } else { filter.and_then(|f| f.checked_mul(p.out_channels)) };
    if weights != Some(l.weights_len) {
        return Err(Error::Malformed("convolution weight count does not match its shape"));
    }
    if l.channel_count != p.out_channels {
        return Err(Error::Malformed("channel table size differs from output channels"));
    }
    Ok(())
}

/// A convolution step as Rust source (regular or depthwise).
#[cfg(feature = "codegen")]
pub(crate) fn conv_source(
    l: &Layer,
    krate: &str,
    weights: &[i8],
    tensors: &mut dyn FnMut(&[i8]) -> alloc::string::String,
) -> alloc::string::String {
    alloc::format!(
        "{krate}::kernels::conv::ConvStep {{ params: {krate}::compiled::conv({:?}, {}, {}, {}), {} }}",
        l.params,
        l.input_zero_point,
        l.output.zero_point,
        crate::ops::clamp_source(krate, l.clamp),
        tensors(weights)
    )
}

impl Operator for Conv2d {
    type Step<'a, C: ChannelTable> = ConvStep<'a, C>;

    fn validate(l: &Layer) -> Result<(), Error> {
        validate_conv(l, false)
    }

    fn decode<'a>(l: &Layer, weights: &'a [i8], channels: &'a [u8]) -> Result<ConvStep<'a, &'a [u8]>, Error> {
        Ok(ConvStep { params: l.conv_params()?, weights, channels })
    }

    #[inline(always)]
    fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
        s: &ConvStep<'_, C>,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error> {
        conv2d_layer::<SINGLE, LAYER, WINDOW, _>(&s.params, input, s.weights, s.channels, output);
        Ok(())
    }

    /// The filter's length when the gathering kernel takes it (see
    /// [`super::conv_gathered`]).
    fn window<C: ChannelTable>(s: &ConvStep<'_, C>) -> usize {
        super::conv_gathered::gathered_window(&s.params).unwrap_or(0)
    }

    fn channels<C: ChannelTable>(s: &ConvStep<'_, C>) -> Option<C> {
        Some(s.channels)
    }

    fn with_channels<'a, C: ChannelTable, D: ChannelTable>(s: Self::Step<'a, C>, channels: D) -> Self::Step<'a, D> {
        ConvStep { params: s.params, weights: s.weights, channels }
    }

    #[cfg(feature = "codegen")]
    fn source(
        s: &ConvStep<'_, &[u8]>,
        l: &Layer,
        krate: &str,
        tensors: &mut dyn FnMut(&[i8]) -> alloc::string::String,
    ) -> alloc::string::String {
        conv_source(l, krate, s.weights, tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv_gathered::MAX_WINDOW;
    use super::super::reference::{self, conv_case, conv_case_up_to, conv_params, quant, table};
    use super::super::{ChannelQuant, Clamp, Padding, Window};
    use super::*;
    use proptest::prelude::*;

    const HALF: i32 = 1 << 30; // 0.5 in Q31, shift 0
    const FULL: Clamp = Clamp { min: -128, max: 127 };

    fn params(win: Window, in_c: usize, out_c: usize, zin: i32, zout: i32, clamp: Clamp) -> ConvParams {
        ConvParams {
            window: win,
            in_channels: in_c,
            out_channels: out_c,
            input_zero_point: zin,
            output_zero_point: zout,
            clamp,
        }
    }

    #[test]
    fn hand_computed_1d_same_two_channels_in_and_out() {
        // 1-D, width 3, 2 input channels, kernel 3, stride 1, SAME (pad 1 each side).
        // HWC input x[w][c] = [[1, 2], [3, 4], [5, 6]], z_in = 1, so x − z_in =
        // [[0, 1], [2, 3], [4, 5]].
        // Filter 0 = [[1, 0], [0, 1], [1, 1]] (taps kx = 0, 1, 2; [c0, c1]), bias 2.
        // Filter 1 = [[-1, -1], [2, 0], [0, -2]], bias -6.
        //   ox 0 (taps 1, 2 on inputs 0, 1): f0: 0·0 + 1·1 + 1·2 + 1·3 = 6; f1: 2·0 + 0·1 + 0·2 − 2·3 = −6.
        //   ox 1 (all taps):                  f0: 0 + 3 + 4 + 5 = 12;        f1: −0 − 1 + 4 + 0 + 0 − 10 = −7.
        //   ox 2 (taps 0, 1 on inputs 1, 2):  f0: 2 + 0 + 0 + 5 = 7;         f1: −2 − 3 + 8 + 0 = 3.
        // With biases: f0 = [8, 14, 9], f1 = [−12, −13, −3]; × 0.5 (ties away
        // from zero, except the reference's negative ties toward zero):
        // f0 = [4, 7, 5] (4.5 → 5); f1 = [−6, −6, −1] (−6.5 → −6, −1.5 → −1);
        // + z_out 10: [14, 17, 15] and [4, 4, 9], interleaved HWC.
        let win = Window::new(1, 3, 1, 3, 1, Padding::Same).unwrap();
        let w = [1, 0, 0, 1, 1, 1, -1, -1, 2, 0, 0, -2];
        let t = table(&[
            ChannelQuant { bias: 2, multiplier: HALF, shift: 0 },
            ChannelQuant { bias: -6, multiplier: HALF, shift: 0 },
        ]);
        let mut out = [0i8; 6];
        conv2d(&params(win, 2, 2, 1, 10, FULL), &[1, 2, 3, 4, 5, 6], &w, &t, &mut out);
        assert_eq!(out, [14, 4, 17, 4, 15, 9]);
    }

    #[test]
    fn hand_computed_2d_valid_stride_2_odd_channel_count() {
        // 4×4×1 input x = 0..16 (row-major), z_in = 0; one 2×2 filter
        // [[1, 1], [1, 1]] (a 2×2 box sum), stride 2, VALID: out 2×2.
        // Windows: {0,1,4,5} = 10, {2,3,6,7} = 18, {8,9,12,13} = 42, {10,11,14,15} = 50.
        // Multiplier 0.5, shift −1 (× 0.25): 2.5 → 3, 4.5 → 5, 10.5 → 11, 12.5 → 13.
        // ReLU-style clamp [4, 127] lifts the first to 4.
        let win = Window::new(4, 4, 2, 2, 2, Padding::Valid).unwrap();
        let x: Vec<i8> = (0..16).collect();
        let t = table(&[ChannelQuant { bias: 0, multiplier: HALF, shift: -1 }]);
        let mut out = [0i8; 4];
        conv2d(&params(win, 1, 1, 0, 0, Clamp { min: 4, max: 127 }), &x, &[1, 1, 1, 1], &t, &mut out);
        assert_eq!(out, [4, 5, 11, 13]);
        let mut out = [0i8; 4];
        conv2d_layer::<false, 0, 4, &[u8]>(
            &params(win, 1, 1, 0, 0, Clamp { min: 4, max: 127 }),
            &x,
            &[1, 1, 1, 1],
            &t,
            &mut out,
        );
        assert_eq!(out, [4, 5, 11, 13]);
    }

    #[test]
    fn hand_computed_zero_point_on_padded_edges() {
        // 2×2×1 input all equal to z_in = −5 (real zero), 3×3 SAME filter of
        // ones, bias 7, multiplier 0.5 shift 1 (× 1): every window sums
        // (x − z_in) = 0, so every output is the bias 7 — including the corner
        // windows whose taps mostly fall outside. Had the padding been filled
        // with raw zeros instead of skipped, the corners would see
        // 5 · (0 − (−5)) = 25 extra.
        let win = Window::new(2, 2, 3, 3, 1, Padding::Same).unwrap();
        let t = table(&[ChannelQuant { bias: 7, multiplier: HALF, shift: 1 }]);
        let mut out = [0i8; 4];
        conv2d(&params(win, 1, 1, -5, 0, FULL), &[-5; 4], &[1; 9], &t, &mut out);
        assert_eq!(out, [7; 4]);
        // The same through a compiled layer's copy (the gathering kernel).
        let mut out = [0i8; 4];
        conv2d_layer::<false, 0, 9, &[u8]>(&params(win, 1, 1, -5, 0, FULL), &[-5; 4], &[1; 9], &t, &mut out);
        assert_eq!(out, [7; 4]);
    }

    #[test]
    fn inconsistent_lengths_write_nothing() {
        let win = Window::new(1, 3, 1, 3, 1, Padding::Same).unwrap();
        let t = table(&[ChannelQuant { bias: 0, multiplier: HALF, shift: 0 }]);
        let mut out = [9i8; 3];
        conv2d(&params(win, 1, 1, 0, 0, FULL), &[1, 2], &[1, 1, 1], &t, &mut out);
        conv2d(&params(win, 1, 1, 0, 0, FULL), &[1, 2, 3], &[1, 1], &t, &mut out);
        conv2d(&params(win, 1, 1, 0, 0, FULL), &[1, 2, 3], &[1, 1, 1], &t[..11], &mut out);
        conv2d(&params(win, 1, 1, 0, 0, FULL), &[1, 2, 3], &[1, 1, 1], &t, &mut out[..2]);
        assert_eq!(out, [9; 3]);
    }

    proptest! {
        #[test]
        fn matches_naive_reference((p, x, w, ch) in conv_case(false), q in quant()) {
            let want = reference::conv2d(p, &x, &w, &ch, q);
            let mut got = vec![0i8; want.len()];
            conv2d(&conv_params(p, q), &x, &w, &table(&ch), &mut got);
            prop_assert_eq!(got, want);
        }

        /// Filters on both sides of the gathering kernel's limit
        /// (`conv_gathered::MAX_WINDOW`, 144 values), one input channel or
        /// several, in the shared kernel and in a compiled layer's own copy
        /// (which gathers small filters), with the raw channel table and
        /// one prepared at compile time, with both roundings.
        #[test]
        fn compiled_layer_copies_match_naive_reference(
            (p, x, w, ch) in conv_case_up_to(false, 1..20, (7, 8)),
            q in quant(),
        ) {
            let want = reference::conv2d(p, &x, &w, &ch, q);
            let (params, t) = (conv_params(p, q), table(&ch));
            let mut got = vec![0i8; want.len()];
            conv2d(&params, &x, &w, &t, &mut got);
            prop_assert_eq!(&got, &want);
            let mut layer = vec![0i8; want.len()];
            conv2d_layer::<false, 0, MAX_WINDOW, &[u8]>(&params, &x, &w, &t, &mut layer);
            prop_assert_eq!(&layer, &want);
            let (mut single, mut single_layer) = (vec![0i8; want.len()], vec![0i8; want.len()]);
            conv2d_rounded::<true>(&params, &x, &w, &t, &mut single);
            conv2d_layer::<true, 0, MAX_WINDOW, &[u8]>(&params, &x, &w, &t, &mut single_layer);
            prop_assert_eq!(&single_layer, &single);
            let prepared: Vec<_> = (0..ch.len()).filter_map(|o| t.as_slice().channel(o)).collect();
            prop_assert_eq!(prepared.len(), ch.len());
            let prepared = prepared.as_slice();
            conv2d_layer::<false, 0, MAX_WINDOW, _>(&params, &x, &w, prepared, &mut layer);
            prop_assert_eq!(&layer, &want);
            conv2d_layer::<true, 0, MAX_WINDOW, _>(&params, &x, &w, prepared, &mut single_layer);
            prop_assert_eq!(&single_layer, &single);
        }
    }
}
