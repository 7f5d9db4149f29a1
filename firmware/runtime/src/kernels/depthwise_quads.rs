//! [`super::depthwise`] on the Cortex-M4/M7: four channels per pass, each
//! tap one word of input and one word of weights (four consecutive
//! channels, contiguous in both), unpacked by SXTB16 into even and odd
//! halfword pairs and multiplied into four accumulators by SMLABB/SMLATT:
//! ten instructions per four multiply-accumulates, where a byte at a time
//! takes three per one.
//!
//! Every window, edge or not, starts from `bias − z_in · Σ w` over the
//! whole filter, and a tap outside the input reads `z_in` in place of an
//! input value: it adds `z_in · w`, cancelling its own share of the
//! folded term, so the sum is `bias + Σ_inside (x − z_in) · w`, TFLite's,
//! in wrapping int32 like TFLite's accumulator. Edge windows thus take the
//! same multiply-accumulates as interior ones instead of a slower
//! offsetting path (on KWS's 25×5 maps 45 % of the pixels are edges).
//!
//! The host's tests run the same walk with a portable [`tap`] (see the
//! proptest in [`super::depthwise`]); the emulator harness compares the M4
//! board with the host on every input.

use super::depthwise::{ring_width, ring_window};
use super::dot::unpack_word as unpack;
use super::{ChannelTable, ConvParams, Requantizer};
use crate::requant::QuantizedMultiplier;

/// Channels per pass: one word of int8.
pub(super) const QUAD: usize = 4;

/// The depthwise convolution over channels `0..c − c % 4`, for slices
/// whose lengths the caller has checked against `p` (depth multiplier 1,
/// an int8 input zero point).
#[inline(always)]
pub(super) fn depthwise_quads<const SINGLE: bool, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) {
    let win = p.window;
    let (ch, in_w, kh, kw) = (p.in_channels, win.in_w(), win.kernel_h(), win.kernel_w());
    let outside = u32::from_ne_bytes([p.input_zero_point as u8; 4]);
    // A window wholly inside the input spans this much of it from its
    // first tap (`Window` kernels are at least 1×1).
    let span = ((kh - 1) * in_w + (kw - 1)) * ch + QUAD;
    for c0 in (0..ch / QUAD).map(|g| g * QUAD) {
        let Some((start, requant)) = group(p, weights, channels, c0) else { return };
        for (oy, out_row) in output.chunks_exact_mut(win.out_w() * ch).enumerate() {
            let rows = win.rows(oy);
            for (ox, pixel) in out_row.chunks_exact_mut(ch).enumerate() {
                let cols = win.cols(ox);
                let mut acc = start;
                if win.is_full(rows, cols) {
                    // Every tap at a constant offset from the window's first.
                    let base = (rows.i0 * in_w + cols.i0) * ch + c0;
                    let Some(x) = input.get(base..base + span) else { return };
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let (xi, wi) = ((ky * in_w + kx) * ch, (ky * kw + kx) * ch + c0);
                            let (Some(x), Some(w)) = (word(x, xi), word(weights, wi)) else { return };
                            tap(&mut acc, x, w);
                        }
                    }
                } else {
                    for ky in 0..kh {
                        let iy = (rows.k0..rows.k1).contains(&ky).then(|| rows.i0 + ky - rows.k0);
                        for kx in 0..kw {
                            let x = match (iy, (cols.k0..cols.k1).contains(&kx)) {
                                (Some(iy), true) => {
                                    let Some(x) = word(input, (iy * in_w + cols.i0 + kx - cols.k0) * ch + c0) else {
                                        return;
                                    };
                                    x
                                }
                                _ => outside,
                            };
                            let Some(w) = word(weights, (ky * kw + kx) * ch + c0) else { return };
                            tap(&mut acc, x, w);
                        }
                    }
                }
                let Some(out) = pixel.get_mut(c0..c0 + QUAD) else { return };
                store::<SINGLE>(out, acc, &requant);
            }
        }
    }
}

/// [`depthwise_quads`] for a compiled model's layer whose
/// [`super::depthwise::ring_window`] is `WINDOW` (or less; not 0): per group of four
/// channels, the filter's taps are unpacked once into halfword pairs on
/// the stack, and so is each input row, into a ring of padded rows (a
/// column or row outside the input holds `z_in`). Every window, edge or
/// not, then reads its taps at constant offsets from one pointer, each as
/// two words (`ldrd`) against two of the filter's: six instructions per
/// four multiply-accumulates, and the input's unpacking is done once per
/// value instead of once per window it falls in (nine times for 3×3).
///
/// The ring is laid out as [`super::conv_packed_rows`]'s: padded row `r`
/// at slot `r mod kh`, and slots below `kh − 1` again `kh` slots on, so
/// a window's rows are `kh` consecutive slots.
#[inline(always)]
pub(super) fn depthwise_ring<const SINGLE: bool, const WINDOW: usize, C: ChannelTable>(
    p: &ConvParams,
    input: &[i8],
    weights: &[i8],
    channels: C,
    output: &mut [i8],
) {
    let win = p.window;
    let (ch, in_h, in_w, kh, kw) = (p.in_channels, win.in_h(), win.in_w(), win.kernel_h(), win.kernel_w());
    let (out_w, sh, sw) = (win.out_w(), win.stride_h(), win.stride_w());
    // The buffer holds at least the layer's ring (a compiled layer's
    // `WINDOW` is exactly it).
    if !(1..=WINDOW).contains(&ring_window(p)) {
        return;
    }
    let Some(width) = ring_width(p) else { return };
    let taps = kh * kw;
    let zin = p.input_zero_point;
    let outside = unpack(u32::from_ne_bytes([zin as u8; 4]));
    // One window's taps from its first: `kh` slots of `width` pairs.
    let span = (kh - 1) * width + kw;
    let mut buf = [[0u32; 2]; WINDOW];
    let (filter, ring) = buf.split_at_mut(taps);
    for c0 in (0..ch / QUAD).map(|g| g * QUAD) {
        let Some((start, requant)) = group(p, weights, channels, c0) else { return };
        for (t, f) in filter.iter_mut().enumerate() {
            let Some(w) = word(weights, t * ch + c0) else { return };
            *f = unpack(w);
        }
        // The next padded row to unpack (rows the stride skips are not).
        let mut next = 0;
        for (oy, out_row) in output.chunks_exact_mut(out_w * ch).enumerate() {
            let top = oy * sh;
            next = next.max(top);
            while next < top + kh {
                let slot = next % kh;
                let Some(row) = ring.get_mut(slot * width..(slot + 1) * width) else { return };
                let iy = next.checked_sub(win.pad_top()).filter(|&r| r < in_h);
                for (v, pair) in row.iter_mut().enumerate() {
                    let ix = v.checked_sub(win.pad_left()).filter(|&c| c < in_w);
                    *pair = match (iy, ix) {
                        (Some(iy), Some(ix)) => {
                            let Some(x) = word(input, (iy * in_w + ix) * ch + c0) else { return };
                            unpack(x)
                        }
                        _ => outside,
                    };
                }
                if slot + 1 < kh {
                    let (lower, upper) = ring.split_at_mut((slot + kh) * width);
                    let (Some(row), Some(copy)) = (lower.get(slot * width..(slot + 1) * width), upper.get_mut(..width))
                    else {
                        return;
                    };
                    copy.copy_from_slice(row);
                }
                next += 1;
            }
            let first = (top % kh) * width;
            for (ox, pixel) in out_row.chunks_exact_mut(ch).enumerate() {
                let at = first + ox * sw;
                let Some(x) = ring.get(at..at + span) else { return };
                let mut acc = start;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let (Some(x), Some(w)) = (x.get(ky * width + kx), filter.get(ky * kw + kx)) else { return };
                        tap_unpacked(&mut acc, *x, *w);
                    }
                }
                let Some(out) = pixel.get_mut(c0..c0 + QUAD) else { return };
                store::<SINGLE>(out, acc, &requant);
            }
        }
    }
}

/// Channels `c0..c0 + 4`: where each window's sum starts (`bias − z_in ·
/// Σ w` over the whole filter) and their requantizers.
#[inline(always)]
fn group<C: ChannelTable>(
    p: &ConvParams,
    weights: &[i8],
    channels: C,
    c0: usize,
) -> Option<([i32; QUAD], [Requantizer; QUAD])> {
    let mut start = [0i32; QUAD];
    let mut requant = [Requantizer::prepared(QuantizedMultiplier::new(0, 0), 0, p.clamp); QUAD];
    for k in 0..QUAD {
        let q = channels.channel(c0 + k)?;
        let wsum = weights.iter().skip(c0 + k).step_by(p.in_channels).fold(0i32, |s, w| s.wrapping_add(*w as i32));
        start[k] = q.bias.wrapping_sub(p.input_zero_point.wrapping_mul(wsum));
        requant[k] = Requantizer::prepared(q.multiplier, p.output_zero_point, p.clamp);
    }
    Some((start, requant))
}

/// One pixel's four outputs, requantized.
#[inline(always)]
fn store<const SINGLE: bool>(out: &mut [i8], acc: [i32; QUAD], requant: &[Requantizer; QUAD]) {
    for ((y, a), r) in out.iter_mut().zip(acc).zip(requant) {
        *y = r.apply_rounded::<SINGLE>(a);
    }
}

/// `acc[k] += x[k] · w[k]` of four channels unpacked by [`unpack`] (SXTB16's pairs).
#[inline(always)]
fn tap_unpacked(acc: &mut [i32; QUAD], x: [u32; 2], w: [u32; 2]) {
    #[cfg(tinykd_dsp)]
    {
        let [a0, a1, a2, a3] = acc;
        // SAFETY: register-only instructions. SMLABB/SMLATT wrap modulo
        // 2^32 like `wrapping_add` (they only set the sticky Q flag,
        // which nothing reads).
        #[allow(unsafe_code)]
        unsafe {
            core::arch::asm!(
                "smlabb {a0}, {xe}, {we}, {a0}",
                "smlatt {a2}, {xe}, {we}, {a2}",
                "smlabb {a1}, {xo}, {wo}, {a1}",
                "smlatt {a3}, {xo}, {wo}, {a3}",
                xe = in(reg) x[0],
                xo = in(reg) x[1],
                we = in(reg) w[0],
                wo = in(reg) w[1],
                a0 = inout(reg) *a0,
                a1 = inout(reg) *a1,
                a2 = inout(reg) *a2,
                a3 = inout(reg) *a3,
                options(pure, nomem, nostack),
            );
        }
    }
    #[cfg(not(tinykd_dsp))]
    {
        let half = |v: u32, k: u32| (v >> (16 * k)) as u16 as i16 as i32;
        for (k, a) in acc.iter_mut().enumerate() {
            let (pair, hi) = (k % 2, (k / 2) as u32);
            *a = a.wrapping_add(half(x[pair], hi) * half(w[pair], hi));
        }
    }
}

/// Four int8 values at `at` as one little-endian word (an unaligned
/// `ldr` on Armv7E-M).
#[inline(always)]
fn word(v: &[i8], at: usize) -> Option<u32> {
    let b = v.get(at..at.checked_add(QUAD)?)?;
    Some(u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]))
}

/// `acc[k] += x[k] · w[k]` for the four bytes of each word: one `asm!`
/// for the unpacking and the multiply-accumulates. (As [`unpack`] then
/// [`tap_unpacked`], VWW's strided depthwise 48×48×16 took 5.55
/// instructions per MAC instead of 5.00.)
#[inline(always)]
pub(super) fn tap(acc: &mut [i32; QUAD], x: u32, w: u32) {
    #[cfg(tinykd_dsp)]
    {
        let [a0, a1, a2, a3] = acc;
        // SAFETY: register-only instructions, wrapping as in [`tap_unpacked`].
        #[allow(unsafe_code)]
        unsafe {
            core::arch::asm!(
                "sxtb16 {xo}, {x}, ror #8",
                "sxtb16 {x}, {x}",
                "sxtb16 {wo}, {w}, ror #8",
                "sxtb16 {w}, {w}",
                "smlabb {a0}, {x}, {w}, {a0}",
                "smlatt {a2}, {x}, {w}, {a2}",
                "smlabb {a1}, {xo}, {wo}, {a1}",
                "smlatt {a3}, {xo}, {wo}, {a3}",
                x = inout(reg) x => _,
                w = inout(reg) w => _,
                xo = out(reg) _,
                wo = out(reg) _,
                a0 = inout(reg) *a0,
                a1 = inout(reg) *a1,
                a2 = inout(reg) *a2,
                a3 = inout(reg) *a3,
                options(pure, nomem, nostack),
            );
        }
    }
    #[cfg(not(tinykd_dsp))]
    tap_unpacked(acc, unpack(x), unpack(w));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_hand_computed() {
        // Bytes (little-endian) x = [1, −2, 127, −128], w = [3, 4, −128, −1].
        let x = u32::from_le_bytes([1, (-2i8) as u8, 127, 128]);
        let w = u32::from_le_bytes([3, 4, 128, 255]);
        let mut acc = [10, 0, -1, i32::MAX];
        tap(&mut acc, x, w);
        // 10 + 3, −8, −1 − 16256, MAX + 128 wraps.
        assert_eq!(acc, [13, -8, -16257, i32::MAX.wrapping_add(128)]);
    }
}
