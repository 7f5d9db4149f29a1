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
//! * 16 values or more, two pixels per pass: on the Cortex-M3 through a
//!   hand-written `mla` loop;
//! * on the M4/M7 every window of 16 values or more, and shorter ones of
//!   more than one row, take [`super::conv_packed_rows`] instead: two
//!   pixels packed in one word per value, read from packed input rows;
//! * in a build for size (`tinykd_small`) one pixel, on the M4 through
//!   SMLAD on a window gathered in SXTB16's order.
//!
//! Only a compiled model's per-layer copies take it (the `specialized`
//! engine). In the shared kernel of the `compiled` and `interpreted`
//! engines, whose point is the smallest image, the single-input version ran
//! at 12.4 per MAC on 8×8×1→8 for 1 KB more flash, so they keep the general
//! path.

#[cfg(any(tinykd_dsp, test))]
use super::dot::packed::{dot_packed, dot2x3_packed, pack};
use super::dot::{INTERLEAVE_MIN, dot2_interleaved, dot2x2_wide, dot2x3_wide};
use super::window::Taps;
use super::{ChannelTable, ConvParams, Epilogue, Requantizer};

/// Largest window (`kernel_h · kernel_w · in_c` values) this kernel takes
/// on any core: 3×3 over 64 channels. Each layer's copy has a buffer of its
/// own window's size (`WINDOW` values) on the stack: two bytes per value
/// for one pixel, four for two (eight on the M4/M7's packed rows). From
/// 144 (3×3×16) to 576, ResNet-8's 3×3 convolutions over 32 and 64
/// channels left the general kernel: 16×16×32→32 on the M4 2.57 → 1.39
/// instructions per MAC, 8×8×64→64 2.49 → 1.41, on the M3 2.74 → 2.14.
pub const MAX_WINDOW: usize = 576;

/// Largest window gathered on this core. Armv7-M runs long windows through
/// hand-written loops (`mla` on the M3, `smlal` on packed pairs on the M4:
/// see the README; the M4's first, SMLAD, already ran conv 8×8×16→16, 144
/// values, at 2.56 instructions per MAC against the general kernel's
/// 3.37); elsewhere LLVM's loop over a window it no longer unrolls
/// completely lost to the general kernel's (M3 before its loop: 4.12
/// against 3.45).
const CORE_MAX_WINDOW: usize = if cfg!(any(tinykd_dsp, tinykd_v7m)) { MAX_WINDOW } else { 80 };

/// The buffer a compiled layer's copy gathers this convolution's filter
/// into, `kernel_h · kernel_w · in_c` values, if it is at most
/// [`MAX_WINDOW`] (the board build's `WINDOW`; on the M4/M7 its packed
/// rows take twice that many words of stack).
pub fn gathered_window(p: &ConvParams) -> Option<usize> {
    p.window.kernel_len().and_then(|k| k.checked_mul(p.in_channels)).filter(|&n| n <= MAX_WINDOW)
}

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
pub(super) fn conv2d_gathered<
    const SINGLE: bool,
    const LAYER: usize,
    const WINDOW: usize,
    C: ChannelTable,
    E: Epilogue,
>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
    epilogue: &E,
) {
    let win = p.window;
    let (kh, kw, in_c, out_c) = (win.kernel_h(), win.kernel_w(), p.in_channels, p.out_channels);
    let taps = kh * kw * in_c;
    if taps > WINDOW || out_c == 0 {
        return;
    }
    let mut pixels = output.chunks_exact_mut(out_c);
    // On the M4/M7: two pixels per pass packed in one word per value, two
    // multiply-accumulates per `smlal` (see `dot::packed`; measured in the
    // README). Not in a build optimised for size (`tinykd_small`).
    #[cfg(tinykd_dsp)]
    if !cfg!(tinykd_small) && (WINDOW >= INTERLEAVE_MIN || kh > 1) {
        return super::conv_packed_rows::conv2d_packed_rows::<SINGLE, LAYER, WINDOW, C, E>(
            p, input, weights, channels, output, epilogue,
        );
    }
    // Long windows take two pixels per pass (raster order; a pair may span
    // two rows), each weight load feeding both, through the Armv7-M `mla`
    // loop, on the M3. An odd last pixel's partner holds stale values and
    // is not written. Each pixel of the pair has its own inlined gathering:
    // one shared call site ran the main-job CNN at 58,768 instructions
    // instead of 57,595 (its flash 24 B larger, the digits CNN's 0.6 KB
    // smaller).
    // Not in a build optimised for size (`tinykd_small`): see the README.
    if cfg!(tinykd_v7m) && !cfg!(tinykd_small) && WINDOW >= INTERLEAVE_MIN {
        let mut patches = [[0i16; WINDOW]; 2];
        let mut raster = Raster::new(p);
        while let Some((y0, x0)) = raster.next() {
            let [first, second] = &mut patches;
            gather(p, win.rows(y0), win.cols(x0), input, first);
            let Some(p0) = pixels.next() else { return };
            let p1 = raster.next().and_then(|(y1, x1)| {
                gather(p, win.rows(y1), win.cols(x1), input, second);
                pixels.next()
            });
            pixel_pair_channels::<SINGLE, LAYER, WINDOW, C, E>(p, &patches, taps, weights, channels, p0, p1, epilogue);
        }
        return;
    }
    let mut patch = [0i16; WINDOW];
    for oy in 0..win.out_h() {
        let rows = win.rows(oy);
        for ox in 0..win.out_w() {
            let Some(pixel) = pixels.next() else { return };
            gather(p, rows, win.cols(ox), input, &mut patch);
            pixel_channels::<SINGLE, LAYER, WINDOW, C, E>(p, &patch, taps, weights, channels, pixel, epilogue);
        }
    }
}

/// Output pixels in raster order.
struct Raster {
    oy: usize,
    ox: usize,
    out_h: usize,
    out_w: usize,
}

impl Raster {
    #[inline(always)]
    fn new(p: &ConvParams) -> Raster {
        Raster { oy: 0, ox: 0, out_h: p.window.out_h(), out_w: p.window.out_w() }
    }

    /// The next pixel's `(oy, ox)`.
    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.oy >= self.out_h || self.out_w == 0 {
            return None;
        }
        let at = (self.oy, self.ox);
        self.ox += 1;
        if self.ox == self.out_w {
            (self.oy, self.ox) = (self.oy + 1, 0);
        }
        Some(at)
    }
}

/// Calls `put(dst, run)` for each in-bounds run of one pixel's window:
/// `rows.len()` runs of `cols.len() · in_c` input values, `dst` where the
/// run starts in a buffer laid out like one filter. Stops at a run outside
/// `input`.
#[cfg(any(tinykd_dsp, test))]
#[inline(always)]
fn window_runs<'a>(p: &ConvParams, rows: Taps, cols: Taps, input: &'a [i8], mut put: impl FnMut(usize, &'a [i8])) {
    let win = p.window;
    let (kw, in_c, in_w) = (win.kernel_w(), p.in_channels, win.in_w());
    let n = cols.len() * in_c;
    let (mut src, mut dst) = ((rows.i0 * in_w + cols.i0) * in_c, (rows.k0 * kw + cols.k0) * in_c);
    for _ in 0..rows.len() {
        let Some(s) = input.get(src..src + n) else { return };
        put(dst, s);
        (src, dst) = (src + in_w * in_c, dst + kw * in_c);
    }
}

/// Writes one output pixel's window into `patch`, laid out like a filter
/// (on cores with SMLAD, windows of 16 values or more: in
/// [`dot2_interleaved`]'s order, which only the one-pixel pass reads
/// there): `x − z_in` for in-bounds taps, 0 for taps in the padding.
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
    // The in-bounds taps: `rows.len()` runs of `cols.len() · in_c` values
    // (the walk `window_runs` does for the packed gathering; through its
    // closure here, the M3's 8×8×1→8 ran 30,410 → 31,415 instructions).
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
    if cfg!(tinykd_dsp) && in_c % 4 != 0 && taps >= INTERLEAVE_MIN {
        // Groups of four straddle the runs: gathered in order, then each
        // whole group reordered `x0, x2, x1, x3` (the last `taps % 4` stay).
        for g in patch[..taps.min(WINDOW)].chunks_exact_mut(4) {
            g.swap(1, 2);
        }
    }
}

/// Packs one pixel's window into `packed` (see `dot::packed`), laid out
/// like a filter: the first of a pair (`second` false) sets each value to
/// its `x − z_in` (0 in the padding), the second adds its own shifted.
#[cfg(any(tinykd_dsp, test))]
#[inline(always)]
pub(super) fn gather_packed<const WINDOW: usize>(
    p: &ConvParams,
    rows: Taps,
    cols: Taps,
    input: &[i8],
    packed: &mut [i32; WINDOW],
    second: bool,
) {
    let win = p.window;
    let (kh, kw, zin) = (win.kernel_h(), win.kernel_w(), p.input_zero_point);
    if !second && (rows.len() != kh || cols.len() != kw) {
        for v in packed.iter_mut() {
            *v = 0;
        }
    }
    window_runs(p, rows, cols, input, |dst, s| {
        let Some(d) = packed.get_mut(dst..dst + s.len()) else { return };
        for (d, s) in d.iter_mut().zip(s) {
            let v = *s as i32 - zin;
            *d = if second { pack(*d, v) } else { v };
        }
    });
}

/// Channel `ch`'s outputs of two pixels from their sums `s` (`p1` is
/// `None` for an odd last pixel); false past the channel table.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn store_pair<const SINGLE: bool, C: ChannelTable, E: Epilogue>(
    p: &ConvParams,
    channels: C,
    ch: usize,
    s: [i32; 2],
    p0: &mut [i8],
    p1: Option<&mut [i8]>,
    epilogue: &E,
) -> bool {
    let Some(q) = channels.channel(ch) else { return false };
    let r = Requantizer::prepared(q.multiplier, p.output_zero_point, p.clamp);
    if let Some(y) = p0.get_mut(ch) {
        epilogue.put(y, r.apply_rounded::<SINGLE>(q.bias.wrapping_add(s[0])));
    }
    if let Some(y) = p1.and_then(|p1| p1.get_mut(ch)) {
        epilogue.put(y, r.apply_rounded::<SINGLE>(q.bias.wrapping_add(s[1])));
    }
    true
}

/// Windows from this length on have [`packed_pair_channels`] inlined into
/// their layer's copy. A model's layers of one shape share one out-of-line
/// copy (LLVM merges the identical per-layer functions), which then reads
/// its shape and quantization as arguments instead of constants: inlined,
/// each layer's copy has its own folded in (MLPerf Tiny on the M4: KWS
/// 6.67 → 6.08 M instructions, VWW 19.0 → 18.0 M, ResNet-8 21.6 → 20.5 M).
/// Shorter windows keep the call: inlined, the main job's layers (36 and
/// 48 values) took 2 % more instructions.
pub(super) const INLINE_CHANNELS_FROM: usize = 64;

/// [`packed_pair_channels_body`] inlined for long windows, out of line for
/// short ones (see [`INLINE_CHANNELS_FROM`]).
#[cfg(any(tinykd_dsp, test))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn packed_pair_channels<
    const SINGLE: bool,
    const LAYER: usize,
    const WINDOW: usize,
    C: ChannelTable,
    E: Epilogue,
>(
    p: &ConvParams,
    packed: &[i32; WINDOW],
    taps: usize,
    whole: bool,
    weights: &[i8],
    channels: C,
    p0: &mut [i8],
    p1: Option<&mut [i8]>,
    epilogue: &E,
) {
    if WINDOW >= INLINE_CHANNELS_FROM {
        packed_pair_channels_body::<SINGLE, LAYER, WINDOW, C, E>(
            p, packed, taps, whole, weights, channels, p0, p1, epilogue,
        )
    } else {
        packed_pair_channels_call::<SINGLE, LAYER, WINDOW, C, E>(
            p, packed, taps, whole, weights, channels, p0, p1, epilogue,
        )
    }
}

/// [`packed_pair_channels_body`] out of line: the channel loop keeps its
/// registers instead of sharing them with the pixel loops.
#[cfg(any(tinykd_dsp, test))]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn packed_pair_channels_call<
    const SINGLE: bool,
    const LAYER: usize,
    const WINDOW: usize,
    C: ChannelTable,
    E: Epilogue,
>(
    p: &ConvParams,
    packed: &[i32; WINDOW],
    taps: usize,
    whole: bool,
    weights: &[i8],
    channels: C,
    p0: &mut [i8],
    p1: Option<&mut [i8]>,
    epilogue: &E,
) {
    packed_pair_channels_body::<SINGLE, LAYER, WINDOW, C, E>(
        p, packed, taps, whole, weights, channels, p0, p1, epilogue,
    )
}

/// Every output channel of two pixels from their packed windows, three
/// channels per pass while they last when the filter fills the buffer.
#[cfg(any(tinykd_dsp, test))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn packed_pair_channels_body<
    const SINGLE: bool,
    const LAYER: usize,
    const WINDOW: usize,
    C: ChannelTable,
    E: Epilogue,
>(
    p: &ConvParams,
    packed: &[i32; WINDOW],
    taps: usize,
    whole: bool,
    weights: &[i8],
    channels: C,
    p0: &mut [i8],
    mut p1: Option<&mut [i8]>,
    epilogue: &E,
) {
    let out_c = p.out_channels;
    let mut o = 0;
    if taps == WINDOW {
        while o + 3 <= out_c {
            let Some(f) = weights.get(o * taps..(o + 3) * taps) else { return };
            let s = dot2x3_packed::<WINDOW>(packed, f, whole);
            for (k, s) in s.into_iter().enumerate() {
                if !store_pair::<SINGLE, C, E>(p, channels, o + k, s, p0, p1.as_deref_mut(), epilogue) {
                    return;
                }
            }
            o += 3;
        }
    }
    let x = &packed[..taps.min(WINDOW)];
    while o < out_c {
        let Some(a) = weights.get(o * taps..(o + 1) * taps) else { return };
        if !store_pair::<SINGLE, C, E>(p, channels, o, dot_packed(x, a, whole), p0, p1.as_deref_mut(), epilogue) {
            return;
        }
        o += 1;
    }
}

/// [`pixel_pair_channels_body`] inlined for long windows, out of line for
/// short ones (as [`packed_pair_channels`]; on the M3 the KWS model's
/// layers took 7.74 → 7.70 M instructions inlined).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pixel_pair_channels<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable, E: Epilogue>(
    p: &ConvParams,
    patches: &[[i16; WINDOW]; 2],
    taps: usize,
    weights: &[i8],
    channels: C,
    p0: &mut [i8],
    p1: Option<&mut [i8]>,
    epilogue: &E,
) {
    if WINDOW >= INLINE_CHANNELS_FROM {
        pixel_pair_channels_body::<SINGLE, LAYER, WINDOW, C, E>(p, patches, taps, weights, channels, p0, p1, epilogue)
    } else {
        pixel_pair_channels_call::<SINGLE, LAYER, WINDOW, C, E>(p, patches, taps, weights, channels, p0, p1, epilogue)
    }
}

/// [`pixel_pair_channels_body`] out of line.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn pixel_pair_channels_call<
    const SINGLE: bool,
    const LAYER: usize,
    const WINDOW: usize,
    C: ChannelTable,
    E: Epilogue,
>(
    p: &ConvParams,
    patches: &[[i16; WINDOW]; 2],
    taps: usize,
    weights: &[i8],
    channels: C,
    p0: &mut [i8],
    p1: Option<&mut [i8]>,
    epilogue: &E,
) {
    pixel_pair_channels_body::<SINGLE, LAYER, WINDOW, C, E>(p, patches, taps, weights, channels, p0, p1, epilogue)
}

/// Every output channel of two pixels from their gathered windows (`p1` is
/// `None` for an odd last pixel).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pixel_pair_channels_body<
    const SINGLE: bool,
    const LAYER: usize,
    const WINDOW: usize,
    C: ChannelTable,
    E: Epilogue,
>(
    p: &ConvParams,
    patches: &[[i16; WINDOW]; 2],
    taps: usize,
    weights: &[i8],
    channels: C,
    p0: &mut [i8],
    mut p1: Option<&mut [i8]>,
    epilogue: &E,
) {
    let n = taps.min(WINDOW);
    let (x0, x1) = (&patches[0][..n], &patches[1][..n]);
    let mut store = |ch: usize, s0: i32, s1: i32| {
        store_pair::<SINGLE, C, E>(p, channels, ch, [s0, s1], p0, p1.as_deref_mut(), epilogue)
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
fn pixel_channels<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable, E: Epilogue>(
    p: &ConvParams,
    patch: &[i16; WINDOW],
    taps: usize,
    weights: &[i8],
    channels: C,
    pixel: &mut [i8],
    epilogue: &E,
) {
    let x = &patch[..taps.min(WINDOW)];
    let requant = |o: usize, acc: i32| {
        channels.channel(o).map(|q| {
            Requantizer::prepared(q.multiplier, p.output_zero_point, p.clamp)
                .apply_rounded::<SINGLE>(q.bias.wrapping_add(acc))
        })
    };
    let out_c = pixel.len();
    if cfg!(tinykd_small) && !cfg!(tinykd_dsp) {
        // Built for size, without SMLAD's window order: one channel per
        // pass, one requantization in the code instead of two (microflow's
        // shape on the M3: 582 → 420 B for its three layers' loops).
        for (o, y) in pixel.iter_mut().enumerate() {
            let Some(a) = weights.get(o * taps..(o + 1) * taps) else { return };
            let acc = x.iter().zip(a).fold(0i32, |s, (x, w)| s.wrapping_add(*x as i32 * *w as i32));
            let Some(v) = requant(o, acc) else { return };
            epilogue.put(y, v);
        }
        return;
    }
    let mut o = 0;
    while o < out_c {
        let Some(a) = weights.get(o * taps..(o + 1) * taps) else { return };
        // An odd last channel pairs with itself and is written once.
        let b = if o + 1 < out_c { weights.get((o + 1) * taps..(o + 2) * taps) } else { Some(a) };
        let Some(b) = b else { return };
        let [s0, s1] = dot2_interleaved(x, a, b);
        let Some(y0) = requant(o, s0) else { return };
        epilogue.put(&mut pixel[o], y0);
        if o + 1 < out_c {
            let Some(y1) = requant(o + 1, s1) else { return };
            epilogue.put(&mut pixel[o + 1], y1);
        }
        o += 2;
    }
}
