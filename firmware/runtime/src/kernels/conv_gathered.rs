//! [`super::conv`] for short filters (up to [`MAX_WINDOW`] values,
//! `kernel_h · kernel_w · in_c`), in a compiled model's per-layer copies.
//!
//! The general kernel reads each window in place as `kernel_h` runs of
//! `kernel_w · in_c` bytes. With few input channels a run is a handful of
//! bytes, its loop set-up costs more than its multiply-accumulates, and
//! windows over an edge take a slower path (measured on Cortex-M3: 17
//! instructions per MAC for 8×8×1→8 3×3, 5.3 for 4×4×8→16 3×3 whose map is
//! three-quarters edges). Here each output pixel's window is first gathered
//! once, as `x − z_in` with 0 for taps in the padding (TFLite's sum over
//! in-bounds taps, exactly), into a stack buffer of the filter's length laid
//! out like one filter; then every output channel is one straight dot
//! product of the buffer with its filter, two channels per pass, edges
//! included. Per core (instructions per MAC on the benchmark's shapes, with
//! CMSIS-NN's, are in the README):
//!
//! * windows under 16 values: a portable loop, which LLVM unrolls
//!   completely (the length is a constant in a layer's copy) and, when it
//!   unrolls the channel loop too, folds each channel's requantization;
//! * Armv7-M, 16 values or more: two pixels per pass through a hand-written
//!   `mla` loop, or on the M4 with input channels in fours, one pixel
//!   through SMLAD on a window gathered in SXTB16's order.
//!
//! Only a compiled model's per-layer copies take it (the `specialized`
//! engine). In the shared kernel of the `compiled` and `interpreted`
//! engines, whose point is the smallest image, the single-input version ran
//! at 12.4 per MAC on 8×8×1→8 for 1 KB more flash, so they keep the general
//! path.

use super::dot::{INTERLEAVE_MIN, dot2_interleaved, dot2x2_wide, dot2x3_wide, dot4_interleaved};
use super::window::Taps;
use super::{ChannelTable, ConvParams, Requantizer};

/// Largest window (`kernel_h · kernel_w · in_c` values) this kernel takes
/// on any core: 3×3 over 16 channels. Each layer's copy has a buffer of its
/// own window's size (`WINDOW`, two bytes per value) on the stack.
pub const MAX_WINDOW: usize = 144;

/// Largest window gathered on this core. Armv7-M runs long windows through
/// a hand-written loop (SMLAD on the M4: conv 8×8×16→16, 144 values, 2.56
/// instructions per MAC against the general kernel's 3.37; `mla` on the
/// M3: see the README); elsewhere LLVM's loop over a window it no longer
/// unrolls completely lost to the general kernel's (M3 before its loop:
/// 4.12 against 3.45).
const CORE_MAX_WINDOW: usize = if cfg!(any(tinykd_dsp, tinykd_v7m)) { MAX_WINDOW } else { 80 };

/// Whether [`conv2d_gathered`] with a `window`-value buffer takes a layer
/// of this shape.
///
/// On RISC-V only single-input-channel layers: there the general kernel ran
/// the main job's multi-channel layers faster (rv32imac, whole model
/// 128,842 vs 137,281 instructions with them gathered).
#[inline(always)]
pub(super) fn applies(p: &ConvParams, window: usize) -> bool {
    if cfg!(target_arch = "riscv32") && p.in_channels != 1 {
        return false;
    }
    window <= CORE_MAX_WINDOW
        && p.window.kernel_len().and_then(|k| k.checked_mul(p.in_channels)).is_some_and(|k| k <= window)
}

/// The convolution, for a layer [`applies`] accepts and slices whose
/// lengths the caller has checked against `p`.
#[inline(always)]
pub(super) fn conv2d_gathered<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) {
    let win = p.window;
    let (kh, kw, in_c, out_c) = (win.kernel_h(), win.kernel_w(), p.in_channels, p.out_channels);
    let taps = kh * kw * in_c;
    if taps > WINDOW || out_c == 0 {
        return;
    }
    let mut pixels = output.chunks_exact_mut(out_c);
    // Long windows take two pixels per pass (raster order; a pair may span
    // two rows), each weight load feeding both, through the Armv7-M `mla`
    // loop: on the M3, and on the M4 unless the input channels come in
    // fours (its SMLAD path below needs whole groups of four; measured on
    // 8×8×3→8: 5.88 instructions per MAC through SMLAD with a slot computed
    // per value, see the README for this path). An odd last pixel's partner
    // holds stale values and is not written.
    // Not in a build optimised for size (`tinykd_small`): see the README.
    let pairs = !cfg!(tinykd_small) && (cfg!(tinykd_v7m) || (cfg!(tinykd_dsp) && in_c % 4 != 0));
    if pairs && WINDOW >= INTERLEAVE_MIN {
        let mut patches = [[0i16; WINDOW]; 2];
        let (mut oy, mut ox) = (0, 0);
        let mut next = |patch: &mut [i16; WINDOW]| {
            if oy >= win.out_h() {
                return false;
            }
            gather(p, win.rows(oy), win.cols(ox), input, patch);
            ox += 1;
            if ox == win.out_w() {
                (oy, ox) = (oy + 1, 0);
            }
            true
        };
        loop {
            let [first, second] = &mut patches;
            if !next(first) {
                return;
            }
            let Some(p0) = pixels.next() else { return };
            let p1 = if next(second) { pixels.next() } else { None };
            pixel_pair_channels::<SINGLE, LAYER, WINDOW, C>(p, &patches, taps, weights, channels, p0, p1);
        }
    }
    let mut patch = [0i16; WINDOW];
    for oy in 0..win.out_h() {
        let rows = win.rows(oy);
        for ox in 0..win.out_w() {
            let Some(pixel) = pixels.next() else { return };
            gather(p, rows, win.cols(ox), input, &mut patch);
            pixel_channels::<SINGLE, LAYER, WINDOW, C>(p, &patch, taps, weights, channels, pixel);
        }
    }
}

/// Writes one output pixel's window into `patch`, laid out like a filter
/// (on cores with SMLAD, input channels in fours and 16 values or more: in
/// [`dot2_interleaved`]'s order): `x − z_in` for in-bounds taps, 0 for
/// taps in the padding.
#[inline(always)]
fn gather<const WINDOW: usize>(p: &ConvParams, rows: Taps, cols: Taps, input: &[i8], patch: &mut [i16; WINDOW]) {
    let win = p.window;
    let (kh, kw, in_c, in_w, zin) = (win.kernel_h(), win.kernel_w(), p.in_channels, win.in_w(), p.input_zero_point);
    let taps = kh * kw * in_c;
    if rows.len() != kh || cols.len() != kw {
        // Padding taps contribute `x − z_in = 0`.
        for v in patch.iter_mut().take(taps) {
            *v = 0;
        }
    }
    // The in-bounds taps: `rows.len()` runs of `cols.len() · in_c` values.
    let n = cols.len() * in_c;
    let (mut src, mut dst) = ((rows.i0 * in_w + cols.i0) * in_c, (rows.k0 * kw + cols.k0) * in_c);
    for _ in 0..rows.len() {
        let Some(s) = input.get(src..src + n) else { return };
        if cfg!(tinykd_dsp) && in_c % 4 == 0 && taps >= INTERLEAVE_MIN {
            // Whole groups of four (runs and offsets are multiples of
            // four): each stored `x0, x2, x1, x3` with constant offsets
            // instead of a slot computed per value.
            let Some(d) = patch.get_mut(dst..dst + n) else { return };
            for (d, s) in d.chunks_exact_mut(4).zip(s.chunks_exact(4)) {
                let v = |i: usize| (s[i] as i32 - zin) as i16;
                d.copy_from_slice(&[v(0), v(2), v(1), v(3)]);
            }
        } else {
            let Some(d) = patch.get_mut(dst..dst + n) else { return };
            for (d, s) in d.iter_mut().zip(s) {
                *d = (*s as i32 - zin) as i16;
            }
        }
        (src, dst) = (src + in_w * in_c, dst + kw * in_c);
    }
}

/// Every output channel of two pixels from their gathered windows (`p1` is
/// `None` for an odd last pixel). Not inlined, as [`pixel_channels`].
#[inline(never)]
fn pixel_pair_channels<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
    p: &ConvParams,
    patches: &[[i16; WINDOW]; 2],
    taps: usize,
    weights: &[i8],
    channels: C,
    p0: &mut [i8],
    mut p1: Option<&mut [i8]>,
) {
    let n = taps.min(WINDOW);
    let (x0, x1) = (&patches[0][..n], &patches[1][..n]);
    // Channel `ch`'s outputs of both pixels from its two sums.
    let mut store = |ch: usize, s0: i32, s1: i32| {
        let Some(q) = channels.channel(ch) else { return false };
        let r = Requantizer::prepared(q.multiplier, p.output_zero_point, p.clamp);
        if let Some(y) = p0.get_mut(ch) {
            *y = r.apply_rounded::<SINGLE>(q.bias.wrapping_add(s0));
        }
        if let Some(y) = p1.as_deref_mut().and_then(|p1| p1.get_mut(ch)) {
            *y = r.apply_rounded::<SINGLE>(q.bias.wrapping_add(s1));
        }
        true
    };
    let out_c = p.out_channels;
    let mut o = 0;
    // Three channels per pass while they last, when the filter fills the
    // buffer (the loop addresses the second pixel and the other filters
    // at offsets of `WINDOW`): 11 instructions per 6 MACs instead of 8 per
    // 4. The last one or two channels take the pair loop below.
    if taps == WINDOW && WINDOW >= INTERLEAVE_MIN {
        while o + 3 <= out_c {
            let Some(f) = weights.get(o * taps..(o + 3) * taps) else { return };
            let s = dot2x3_wide::<WINDOW>(patches, f);
            for k in 0..3 {
                if !store(o + k, s[k], s[3 + k]) {
                    return;
                }
            }
            o += 3;
        }
    }
    while o < out_c {
        // An odd last channel pairs with itself and is written once.
        let second = o + 1 < out_c;
        let Some(a) = weights.get(o * taps..(o + 1) * taps) else { return };
        let b = if second { weights.get((o + 1) * taps..(o + 2) * taps) } else { Some(a) };
        let Some(b) = b else { return };
        let s = dot2x2_wide(x0, x1, a, b);
        if !store(o, s[0], s[2]) || (second && !store(o + 1, s[1], s[3])) {
            return;
        }
        o += 2;
    }
}

/// Every output channel of one pixel from its gathered window. Not
/// inlined: the channel loop keeps its registers instead of sharing them
/// with the pixel loops.
#[inline(never)]
fn pixel_channels<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
    p: &ConvParams,
    patch: &[i16; WINDOW],
    taps: usize,
    weights: &[i8],
    channels: C,
    pixel: &mut [i8],
) {
    let x = &patch[..taps.min(WINDOW)];
    let requant = |o: usize, acc: i32| {
        channels.channel(o).map(|q| {
            Requantizer::prepared(q.multiplier, p.output_zero_point, p.clamp)
                .apply_rounded::<SINGLE>(q.bias.wrapping_add(acc))
        })
    };
    let out_c = pixel.len();
    let mut o = 0;
    // Four channels per pass on cores with SMLAD when the filter fills the
    // buffer (the other filters are at offsets of `WINDOW`), not in a
    // build optimised for size: 24 instructions per 16 MACs against 14
    // per 8. The last one to three channels take the pair loop below.
    if cfg!(tinykd_dsp) && !cfg!(tinykd_small) && taps == WINDOW && WINDOW >= INTERLEAVE_MIN {
        while o + 4 <= out_c {
            let Some(f) = weights.get(o * taps..(o + 4) * taps) else { return };
            let s = dot4_interleaved::<WINDOW>(patch, f);
            for (k, s) in s.into_iter().enumerate() {
                let Some(y) = requant(o + k, s) else { return };
                pixel[o + k] = y;
            }
            o += 4;
        }
    }
    while o < out_c {
        let Some(a) = weights.get(o * taps..(o + 1) * taps) else { return };
        // An odd last channel pairs with itself and is written once.
        let b = if o + 1 < out_c { weights.get((o + 1) * taps..(o + 2) * taps) } else { Some(a) };
        let Some(b) = b else { return };
        let [s0, s1] = dot2_interleaved(x, a, b);
        let Some(y0) = requant(o, s0) else { return };
        pixel[o] = y0;
        if o + 1 < out_c {
            let Some(y1) = requant(o + 1, s1) else { return };
            pixel[o + 1] = y1;
        }
        o += 2;
    }
}
