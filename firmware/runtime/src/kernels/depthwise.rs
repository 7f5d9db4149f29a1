//! Depthwise 2-D convolution (depth multiplier 1), channels-last, TFLite semantics:
//!
//! ```text
//! y[oy][ox][c] = requant(bias[c] + Σ_{in-bounds ky, kx} w[ky][kx][c] · (x[iy][ix][c] − z_in))
//! ```
//!
//! Weights are `[kernel_h][kernel_w][c]` (TFLite's layout), so for one tap the
//! weights of consecutive channels are contiguous, like the input pixel's
//! channels. The kernel therefore works per output pixel on a block of up to
//! [`BLOCK`] channels with int32 accumulators on the stack: each in-bounds tap
//! adds `x · w` over a contiguous run of channels (no strided loads, no
//! per-channel loop bookkeeping), then each accumulator is requantized.
//! Interior windows start from `bias − z_in · Σ w` (precomputed per channel);
//! windows that hang over an edge start from the plain bias and accumulate
//! `w · (x − z_in)` directly. All in wrapping int32, as TFLite's accumulator.

use super::conv::{ConvStep, validate_conv};
use super::window::Taps;
use super::{ChannelQuant, ChannelTable, ConvParams, Requantizer};
use crate::error::Error;
use crate::model::Layer;
use crate::ops::Operator;

/// Channels per block: the accumulators and per-channel data of a block live
/// on the stack (40 bytes per channel, 320 in all). Eight matches the
/// channel counts of tiny models, which then take the fixed-length path.
const BLOCK: usize = 8;

/// Int8 depthwise convolution.
///
/// * `input`: `in_h × in_w × c` (HWC).
/// * `weights`: `[kernel_h][kernel_w][c]`.
/// * `channels`: `c` channel-table entries, with the plain (unfolded) bias.
/// * `output`: `out_h × out_w × c` (HWC).
///
/// Writes nothing if `p.out_channels ≠ p.in_channels` or a slice length
/// disagrees with `p`.
pub fn depthwise_conv2d(p: &ConvParams, input: &[i8], weights: &[i8], channels: &[u8], output: &mut [i8]) {
    depthwise_conv2d_rounded::<false, _>(p, input, weights, channels, output)
}

/// [`depthwise_conv2d`] with TFLite's single rounding when `SINGLE` (see
/// [`super::Requantizer::apply_rounded`]).
pub fn depthwise_conv2d_rounded<const SINGLE: bool, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) {
    depthwise_layer::<SINGLE, false, 0, C>(p, input, weights, channels, output)
}

/// [`depthwise_conv2d_rounded`], for a compiled model's layer function
/// when `OWN_COPY` (its shape is then constant): a window wholly inside
/// the input is summed one channel at a time, its taps at constant
/// offsets, so the sum stays in a register instead of a block of
/// accumulators on the stack (Cortex-M4, depthwise 8×8×8 3×3: 9.12 → see
/// the README, instructions per MAC).
#[inline(always)]
pub fn depthwise_layer<const SINGLE: bool, const OWN_COPY: bool, const WINDOW: usize, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) {
    let win = p.window;
    let ch = p.in_channels;
    let lengths_ok = p.out_channels == ch
        && win.input_len(ch) == Some(input.len())
        && win.kernel_len().and_then(|k| k.checked_mul(ch)) == Some(weights.len())
        && channels.holds(ch)
        && win.output_len(ch) == Some(output.len());
    if !lengths_ok || ch == 0 {
        return;
    }
    // On the M4/M7, whole words of four channels (see `depthwise_quads`),
    // the rest in blocks below.
    #[cfg(tinykd_dsp)]
    let first = quads_first::<SINGLE, WINDOW, C>(p, input, weights, channels, output);
    #[cfg(not(tinykd_dsp))]
    let first = 0;
    blocks_from::<SINGLE, OWN_COPY, C>(first, p, input, weights, channels, output)
}

/// Longest buffer (in halfword pairs) a compiled layer's ring of unpacked
/// rows may take on the stack: 4 KB, e.g. 3×3 windows over rows up to
/// 100 wide (wider layers take the word-at-a-time path).
pub const RING_MAX: usize = 512;

/// The `WINDOW` a compiled model's depthwise layer runs with on the
/// Cortex-M4/M7: the pairs of its unpacked filter and ring of padded rows
/// (see `depthwise_quads::depthwise_ring`), or 0 when it has under four
/// channels, a stride, or the buffer would pass [`RING_MAX`]. A strided
/// layer unpacks every input row for a quarter of the windows (2×2):
/// VWW's depthwise 48×48×16 3×3 s2 took 5.97 instructions per MAC
/// through the ring, 5.00 a word at a time.
pub fn ring_window(p: &ConvParams) -> usize {
    let win = p.window;
    if p.in_channels < 4 || p.out_channels != p.in_channels || win.stride_h() != 1 || win.stride_w() != 1 {
        return 0;
    }
    let ring = ring_width(p).and_then(|w| (2 * win.kernel_h() - 1).checked_mul(w));
    let total = ring.and_then(|r| win.kernel_len().and_then(|t| r.checked_add(t)));
    total.filter(|&t| t <= RING_MAX).unwrap_or(0)
}

/// Pairs in one padded row of the ring: every column the windows reach,
/// padding included (`None` on overflow).
pub(super) fn ring_width(p: &ConvParams) -> Option<usize> {
    let win = p.window;
    (win.out_w() - 1).checked_mul(win.stride_w())?.checked_add(win.kernel_w())
}

/// [`depthwise_quads::depthwise_quads`] where it applies (an int8 input
/// zero point, as every validated model has), through the ring of
/// unpacked rows when `WINDOW` holds the layer's [`ring_window`] (a
/// compiled layer's is exactly it), returning the first channel it left
/// to the blocks.
#[cfg(any(tinykd_dsp, test))]
#[inline(always)]
fn quads_first<const SINGLE: bool, const WINDOW: usize, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) -> usize {
    use super::depthwise_quads::{QUAD, depthwise_quads, depthwise_ring};
    if !(-128..=127).contains(&p.input_zero_point) || p.in_channels < QUAD {
        return 0;
    }
    if (1..=WINDOW).contains(&ring_window(p)) {
        depthwise_ring::<SINGLE, WINDOW, C>(p, input, weights, channels, output);
    } else {
        depthwise_quads::<SINGLE, C>(p, input, weights, channels, output);
    }
    p.in_channels - p.in_channels % QUAD
}

/// The depthwise convolution of channels `first..` in blocks of [`BLOCK`],
/// for slices whose lengths [`depthwise_layer`] has checked.
#[inline(always)]
fn blocks_from<const SINGLE: bool, const OWN_COPY: bool, C: ChannelTable>(
    first: usize,
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) {
    let win = p.window;
    let ch = p.in_channels;
    let (in_w, kw, zin) = (win.in_w(), win.kernel_w(), p.input_zero_point);
    let blank = Channel {
        bias: 0,
        full_bias: 0,
        requant: Requantizer::new(ChannelQuant { bias: 0, multiplier: 0, shift: 0 }, 0, p.clamp),
    };
    for c0 in (first..ch).step_by(BLOCK) {
        let n = BLOCK.min(ch - c0);
        let mut block = [blank; BLOCK];
        for (k, chan) in block.iter_mut().enumerate().take(n) {
            let Some(q) = channels.channel(c0 + k) else { return };
            // Σ w of this channel over every tap of the filter.
            let wsum = weights.iter().skip(c0 + k).step_by(ch).fold(0i32, |s, w| s.wrapping_add(*w as i32));
            *chan = Channel {
                bias: q.bias,
                full_bias: q.bias.wrapping_sub(zin.wrapping_mul(wsum)),
                requant: Requantizer::prepared(q.multiplier, p.output_zero_point, p.clamp),
            };
        }
        let block = &block[..n];
        for (oy, out_row) in output.chunks_exact_mut(win.out_w() * ch).enumerate() {
            let rows = win.rows(oy);
            for (ox, pixel) in out_row.chunks_exact_mut(ch).enumerate() {
                let cols = win.cols(ox);
                let full = win.is_full(rows, cols);
                if OWN_COPY && full {
                    full_window_by_channel::<SINGLE, C>(p, input, weights, channels, c0, block, rows, cols, pixel);
                    continue;
                }
                let mut acc = [0i32; BLOCK];
                for (a, chan) in acc.iter_mut().zip(block) {
                    *a = if full { chan.full_bias } else { chan.bias };
                }
                let acc = &mut acc[..n];
                for (ky, iy) in rows.iter() {
                    for (kx, ix) in cols.iter() {
                        let x = (iy * in_w + ix) * ch + c0;
                        let w = (ky * kw + kx) * ch + c0;
                        let (Some(x), Some(w)) = (input.get(x..x + n), weights.get(w..w + n)) else { return };
                        match (full, <&mut [i32; BLOCK]>::try_from(&mut *acc), x.try_into(), w.try_into()) {
                            // A whole block: fixed length, so its MACs are straight-line code.
                            (true, Ok(acc), Ok(x), Ok(w)) => tap_block(acc, x, w),
                            (true, ..) => tap(acc, x, w),
                            (false, ..) => tap_offset(acc, x, w, zin),
                        }
                    }
                }
                let Some(out) = pixel.get_mut(c0..c0 + n) else { return };
                for (k, ((y, a), chan)) in out.iter_mut().zip(acc.iter()).zip(block).enumerate() {
                    let Some(requant) = requantizer(p, channels, c0 + k, chan) else { return };
                    *y = requant.apply_rounded::<SINGLE>(*a);
                }
            }
        }
    }
}

/// One pixel's channels `c0..c0 + block.len()` over a window wholly
/// inside the input, one channel at a time (see [`depthwise_layer`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn full_window_by_channel<const SINGLE: bool, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    c0: usize,
    block: &[Channel],
    rows: Taps,
    cols: Taps,
    pixel: &mut [i8],
) {
    let win = p.window;
    let (ch, in_w, kh, kw) = (p.in_channels, win.in_w(), win.kernel_h(), win.kernel_w());
    // The window's span in the input and in the weights, checked once.
    let base = (rows.i0 * in_w + cols.i0) * ch + c0;
    let n = block.len();
    // (A kernel is at least 1×1: `Window::new` refuses 0.)
    let span = ((kh.saturating_sub(1)) * in_w + kw.saturating_sub(1)) * ch + n;
    let taps = (kh * kw).saturating_sub(1) * ch + n;
    let (Some(x), Some(w), Some(out)) =
        (input.get(base..base + span), weights.get(c0..c0 + taps), pixel.get_mut(c0..c0 + n))
    else {
        return;
    };
    for (k, (y, chan)) in out.iter_mut().zip(block).enumerate() {
        let mut acc = chan.full_bias;
        for ky in 0..kh {
            for kx in 0..kw {
                let (xi, wi) = ((ky * in_w + kx) * ch + k, (ky * kw + kx) * ch + k);
                let (Some(x), Some(w)) = (x.get(xi), w.get(wi)) else { return };
                acc = acc.wrapping_add(*x as i32 * *w as i32);
            }
        }
        let Some(requant) = requantizer(p, channels, c0 + k, chan) else { return };
        *y = requant.apply_rounded::<SINGLE>(acc);
    }
}

/// Channel `c`'s requantizer where an output uses it: read from a prepared
/// table (so a compiled model's constant table folds into the code; through
/// the block's copy LLVM did not fold it, see the README), or the block's
/// copy decoded from a raw table.
#[inline(always)]
fn requantizer<C: ChannelTable>(p: &ConvParams, channels: C, c: usize, chan: &Channel) -> Option<Requantizer> {
    if C::PREPARED {
        // `?`, not a `map` closure, which every layer would share (see
        // `fully_connected::rows_by`).
        let q = channels.channel(c)?;
        Some(Requantizer::prepared(q.multiplier, p.output_zero_point, p.clamp))
    } else {
        Some(chan.requant)
    }
}

/// Per-channel data, decoded once per block.
#[derive(Debug, Clone, Copy)]
struct Channel {
    /// The channel table's (plain) bias.
    bias: i32,
    /// `bias − z_in · Σ w` over the whole filter: the start of an interior window.
    full_bias: i32,
    requant: Requantizer,
}

/// [`tap`] for a whole block.
#[inline(always)]
fn tap_block(acc: &mut [i32; BLOCK], x: &[i8; BLOCK], w: &[i8; BLOCK]) {
    for k in 0..BLOCK {
        acc[k] = acc[k].wrapping_add(x[k] as i32 * w[k] as i32);
    }
}

/// `acc[c] += x[c] · w[c]`: one tap of an interior window.
#[inline(always)]
fn tap(acc: &mut [i32], x: &[i8], w: &[i8]) {
    for ((a, x), w) in acc.iter_mut().zip(x).zip(w) {
        *a = a.wrapping_add(*x as i32 * *w as i32);
    }
}

/// `acc[c] += w[c] · (x[c] − z_in)`: one tap of an edge window (the
/// definition itself, since only some taps of the filter are in bounds).
#[inline(always)]
fn tap_offset(acc: &mut [i32], x: &[i8], w: &[i8], zin: i32) {
    for ((a, x), w) in acc.iter_mut().zip(x).zip(w) {
        *a = a.wrapping_add((*x as i32).wrapping_sub(zin).wrapping_mul(*w as i32));
    }
}

/// The depthwise convolution operator ([`crate::format::Op::DepthwiseConv2d`]).
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseConv2d;

impl Operator for DepthwiseConv2d {
    type Step<'a, C: ChannelTable> = ConvStep<'a, C>;

    fn validate(l: &Layer) -> Result<(), Error> {
        validate_conv(l, true)
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
        if LAYER != usize::MAX {
            depthwise_layer::<SINGLE, true, WINDOW, _>(&s.params, input, s.weights, s.channels, output)
        } else {
            depthwise_conv2d_rounded::<SINGLE, _>(&s.params, input, s.weights, s.channels, output)
        }
        Ok(())
    }

    fn window<C: ChannelTable>(s: &ConvStep<'_, C>) -> usize {
        ring_window(&s.params)
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
        super::conv::conv_source(l, krate, s.weights, tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::{self, conv_case, conv_params, quant, table};
    use super::super::{Clamp, Padding, Window};
    use super::*;
    use proptest::prelude::*;

    const HALF: i32 = 1 << 30; // 0.5 in Q31, shift 0

    fn params(win: Window, c: usize, zin: i32, zout: i32, clamp: Clamp) -> ConvParams {
        ConvParams {
            window: win,
            in_channels: c,
            out_channels: c,
            input_zero_point: zin,
            output_zero_point: zout,
            clamp,
        }
    }

    #[test]
    fn hand_computed_1d_same_three_channels() {
        // Width 3, 3 channels, kernel 3, stride 1, SAME (pad 1 each side), z_in = 2.
        // x[w] = [[2, 3, 4], [4, 6, 8], [0, 0, 0]] -> x − z_in = [[0, 1, 2], [2, 4, 6], [−2, −2, −2]].
        // w[kx] = [[1, 1, 1], [2, 0, −1], [3, −1, 1]]; biases [0, 10, −10]; all × 0.5, z_out 0.
        // Channel 0 (w = 1, 2, 3; x−z = 0, 2, −2):
        //   ox 0 (taps 1, 2): 2·0 + 3·2 = 6;  ox 1: 0 + 4 − 6 = −2;  ox 2 (taps 0, 1): 2 − 4 = −2.
        //   × 0.5 -> [3, −1, −1].
        // Channel 1 (w = 1, 0, −1; x−z = 1, 4, −2):
        //   ox 0: 0·1 − 4 = −4; ox 1: 1 + 0 + 2 = 3; ox 2: 4 + 0 = 4; + 10 -> [6, 13, 14]
        //   × 0.5 -> [3, 7, 7] (6.5 -> 7).
        // Channel 2 (w = 1, −1, 1; x−z = 2, 6, −2):
        //   ox 0: −2 + 6 = 4; ox 1: 2 − 6 − 2 = −6; ox 2: 6 + 2 = 8; − 10 -> [−6, −16, −2]
        //   × 0.5 -> [−3, −8, −1].
        let win = Window::new(1, 3, 1, 3, 1, Padding::Same).unwrap();
        let x = [2, 3, 4, 4, 6, 8, 0, 0, 0];
        let w = [1, 1, 1, 2, 0, -1, 3, -1, 1];
        let t = table(&[
            ChannelQuant { bias: 0, multiplier: HALF, shift: 0 },
            ChannelQuant { bias: 10, multiplier: HALF, shift: 0 },
            ChannelQuant { bias: -10, multiplier: HALF, shift: 0 },
        ]);
        let mut out = [0i8; 9];
        depthwise_conv2d(&params(win, 3, 2, 0, Clamp { min: -128, max: 127 }), &x, &w, &t, &mut out);
        assert_eq!(out, [3, 3, -3, -1, 7, -8, -1, 7, -1]);
    }

    #[test]
    fn hand_computed_2d_valid_stride_2() {
        // 3×3×2 input, channel 0 = 1..=9 and channel 1 = −1..=−9 (row-major), z_in = 0.
        // 2×2 kernel, stride 2, VALID: a single output window {0, 1, 3, 4}.
        // Channel 0 weights [[1, 0], [0, 1]] (a diagonal): 1 + 5 = 6.
        // Channel 1 weights [[1, 1], [1, 1]]: −(1 + 2 + 4 + 5) = −12.
        // × 0.5 shift 1 (× 1), z_out −3: [3, −15]; clamp [−10, 127]: [3, −10].
        let win = Window::new(3, 3, 2, 2, 2, Padding::Valid).unwrap();
        let x: Vec<i8> = (1..=9).flat_map(|v| [v, -v]).collect();
        let w = [1, 1, 0, 1, 0, 1, 1, 1]; // [ky][kx][c]
        let t = table(&[
            ChannelQuant { bias: 0, multiplier: HALF, shift: 1 },
            ChannelQuant { bias: 0, multiplier: HALF, shift: 1 },
        ]);
        let mut out = [0i8; 2];
        depthwise_conv2d(&params(win, 2, 0, -3, Clamp { min: -10, max: 127 }), &x, &w, &t, &mut out);
        assert_eq!(out, [3, -10]);
    }

    #[test]
    fn channel_mismatch_writes_nothing() {
        let win = Window::new(1, 2, 1, 1, 1, Padding::Valid).unwrap();
        let mut p = params(win, 1, 0, 0, Clamp { min: -128, max: 127 });
        p.out_channels = 2;
        let t = table(&[ChannelQuant { bias: 0, multiplier: HALF, shift: 0 }; 2]);
        let mut out = [9i8; 4];
        depthwise_conv2d(&p, &[1, 2], &[1], &t, &mut out);
        assert_eq!(out, [9; 4]);
    }

    /// [`quads_first`] through the ring where the layer has one, with a
    /// buffer larger than any test case needs (inputs up to 9 wide, 4×5
    /// kernels: at most 72 pairs).
    fn with_ring<const SINGLE: bool, C: ChannelTable>(
        p: &ConvParams,
        x: &[i8],
        w: &[i8],
        t: C,
        out: &mut [i8],
    ) -> usize {
        assert!(ring_window(p) <= 80, "a ring of {} pairs: enlarge the test's buffer", ring_window(p));
        quads_first::<SINGLE, 80, C>(p, x, w, t, out)
    }

    proptest! {
        #[test]
        fn matches_naive_reference((p, x, w, ch) in conv_case(true), q in quant()) {
            let want = reference::depthwise_conv2d(p, &x, &w, &ch, q);
            let mut got = vec![0i8; want.len()];
            depthwise_conv2d(&conv_params(p, q), &x, &w, &table(&ch), &mut got);
            prop_assert_eq!(&got, &want);
        }

        /// The M4/M7's four channels per pass (the rest in blocks), both
        /// roundings, against the shared kernel.
        #[test]
        fn quads_match_the_shared_kernel((p, x, w, ch) in conv_case(true), q in quant()) {
            let (params, t) = (conv_params(p, q), table(&ch));
            for single in [false, true] {
                let mut want = vec![0i8; reference::depthwise_conv2d(p, &x, &w, &ch, q).len()];
                let mut got = vec![3i8; want.len()];
                let mut ring = vec![4i8; want.len()];
                if single {
                    depthwise_conv2d_rounded::<true, _>(&params, &x, &w, t.as_slice(), &mut want);
                    let first = quads_first::<true, 0, _>(&params, &x, &w, t.as_slice(), &mut got);
                    blocks_from::<true, false, _>(first, &params, &x, &w, t.as_slice(), &mut got);
                    let first = with_ring::<true, _>(&params, &x, &w, t.as_slice(), &mut ring);
                    blocks_from::<true, false, _>(first, &params, &x, &w, t.as_slice(), &mut ring);
                } else {
                    want = reference::depthwise_conv2d(p, &x, &w, &ch, q);
                    let first = quads_first::<false, 0, _>(&params, &x, &w, t.as_slice(), &mut got);
                    blocks_from::<false, true, _>(first, &params, &x, &w, t.as_slice(), &mut got);
                    let first = with_ring::<false, _>(&params, &x, &w, t.as_slice(), &mut ring);
                    blocks_from::<false, true, _>(first, &params, &x, &w, t.as_slice(), &mut ring);
                }
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(&ring, &want);
            }
        }

        /// A compiled model's own copy (windows inside the input summed
        /// channel by channel), with the raw table and a prepared one, both
        /// roundings.
        #[test]
        fn own_copies_match_the_shared_kernel((p, x, w, ch) in conv_case(true), q in quant()) {
            let (params, t) = (conv_params(p, q), table(&ch));
            let prepared: Vec<_> = (0..ch.len()).filter_map(|o| t.as_slice().channel(o)).collect();
            for single in [false, true] {
                let mut want = vec![0i8; reference::depthwise_conv2d(p, &x, &w, &ch, q).len()];
                let (mut own, mut own_prepared) = (vec![1i8; want.len()], vec![2i8; want.len()]);
                if single {
                    depthwise_conv2d_rounded::<true, _>(&params, &x, &w, t.as_slice(), &mut want);
                    depthwise_layer::<true, true, 0, _>(&params, &x, &w, t.as_slice(), &mut own);
                    depthwise_layer::<true, true, 0, _>(&params, &x, &w, prepared.as_slice(), &mut own_prepared);
                } else {
                    want = reference::depthwise_conv2d(p, &x, &w, &ch, q);
                    depthwise_layer::<false, true, 0, _>(&params, &x, &w, t.as_slice(), &mut own);
                    depthwise_layer::<false, true, 0, _>(&params, &x, &w, prepared.as_slice(), &mut own_prepared);
                }
                prop_assert_eq!(&own, &want);
                prop_assert_eq!(&own_prepared, &want);
            }
        }
    }
}
