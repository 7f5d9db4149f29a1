//! Max, average and global average pooling, channels-last, TFLite semantics.
//!
//! Input and output share their quantization, so there is no requantization:
//! the max (or the rounded average) of int8 values is already the int8
//! result, then clamped to the fused activation range. Taps outside the
//! input are skipped: they are not max candidates and not counted in the
//! average (TFLite's `filter_count`).

use super::{ChannelTable, Clamp, PoolParams};
use crate::error::Error;
use crate::model::Layer;
use crate::ops::Operator;

/// Channels accumulated at once by the average pools: a stack block of
/// int32 sums, since the arena has no scratch space and an int8 output slot
/// cannot hold a sum.
const BLOCK: usize = 16;

/// Largest window (element count) an average pool accepts: with at most
/// 2^23 int8 values, `|sum| ≤ 2^30` and `sum ± count/2` cannot overflow
/// int32, so the result equals the exact (i64) definition.
/// `Model::from_bytes` refuses larger windows.
pub const MAX_AVG_COUNT: usize = 1 << 23;

/// Checks the HWC lengths of a pool against its window.
fn lengths_ok(p: &PoolParams, input: &[i8], output: &[i8]) -> bool {
    p.channels != 0
        && p.window.input_len(p.channels) == Some(input.len())
        && p.window.output_len(p.channels) == Some(output.len())
}

/// Int8 max pool: `y[oy][ox][c] = clamp(max over in-bounds taps of x[iy][ix][c])`.
///
/// The output pixel itself is the running maximum. It starts at the clamp's
/// lower bound, since `max(lo, taps…)` is the lower clamp of the maximum
/// (every window has at least one in-bounds tap), and each in-bounds input
/// pixel is folded in with a contiguous element-wise max over the channels.
/// The upper clamp is a second pass, skipped when it cannot bind (127).
/// Writes nothing if a slice length disagrees with `p`.
pub fn max_pool2d(p: &PoolParams, input: &[i8], output: &mut [i8]) {
    if !lengths_ok(p, input, output) {
        return;
    }
    let (win, ch) = (p.window, p.channels);
    for (oy, out_row) in output.chunks_exact_mut(win.out_w() * ch).enumerate() {
        let rows = win.rows(oy);
        for (ox, pixel) in out_row.chunks_exact_mut(ch).enumerate() {
            let cols = win.cols(ox);
            pixel.fill(p.clamp.min);
            for (_, iy) in rows.iter() {
                for (_, ix) in cols.iter() {
                    let start = (iy * win.in_w() + ix) * ch;
                    let Some(x) = input.get(start..start + ch) else { return };
                    for (m, v) in pixel.iter_mut().zip(x) {
                        *m = (*m).max(*v);
                    }
                }
            }
            if p.clamp.max < i8::MAX {
                for m in pixel.iter_mut() {
                    *m = (*m).min(p.clamp.max);
                }
            }
        }
    }
}

/// Int8 average pool: `y[oy][ox][c] = clamp(rounded average of the in-bounds
/// taps of x[..][..][c])`, see [`rounded_average`].
///
/// Per output pixel, channels go in blocks of [`BLOCK`] int32 sums on the
/// stack; each in-bounds input pixel adds a contiguous run of channels.
/// Writes nothing if a slice length disagrees with `p`.
pub fn avg_pool2d(p: &PoolParams, input: &[i8], output: &mut [i8]) {
    if !lengths_ok(p, input, output) {
        return;
    }
    let (win, ch) = (p.window, p.channels);
    for (oy, out_row) in output.chunks_exact_mut(win.out_w() * ch).enumerate() {
        let rows = win.rows(oy);
        for (ox, pixel) in out_row.chunks_exact_mut(ch).enumerate() {
            let cols = win.cols(ox);
            let count = i32::try_from(rows.len() * cols.len()).unwrap_or(0);
            for c0 in (0..ch).step_by(BLOCK) {
                let n = BLOCK.min(ch - c0);
                let mut acc = [0i32; BLOCK];
                for (_, iy) in rows.iter() {
                    for (_, ix) in cols.iter() {
                        let start = (iy * win.in_w() + ix) * ch + c0;
                        let Some(x) = input.get(start..start + n) else { return };
                        add(&mut acc, x);
                    }
                }
                let Some(out) = pixel.get_mut(c0..c0 + n) else { return };
                for (y, sum) in out.iter_mut().zip(acc) {
                    *y = p.clamp.apply(rounded_average(sum, count));
                }
            }
        }
    }
}

/// Int8 global average pool: `y[c] = clamp(rounded average of x[h][w][c]
/// over all h, w)`; `input` is `pixels × channels` (HWC), `output` is
/// `channels` long. Writes nothing if the lengths disagree.
// Not inlined in builds for speed: inlined into a layer's function it
// took the M3's digits image 1 KB more flash and 500 B more stack.
#[cfg_attr(not(tinykd_small), inline(never))]
pub fn global_avg_pool(channels: usize, clamp: Clamp, input: &[i8], output: &mut [i8]) {
    if channels == 0 || output.len() != channels || input.len() % channels != 0 {
        return;
    }
    let count = i32::try_from(input.len() / channels).unwrap_or(0);
    for (b, block) in output.chunks_mut(GAP_BLOCK).enumerate() {
        let c0 = b * GAP_BLOCK;
        let mut acc = [0i32; GAP_BLOCK];
        for pixel in input.chunks_exact(channels) {
            let Some(x) = pixel.get(c0..c0 + block.len()) else { continue };
            // In a build for speed a whole block at a fixed length, so its
            // sums stay in registers (the main job's GAP 1×10×24 + FC
            // 24→10: M3 3,188 → 2,070, M4 2,905 → 1,930 instructions;
            // digits' 4×4×16 + FC 16→10, two blocks, within 15 and 115
            // more).
            match <&[i8; GAP_BLOCK]>::try_from(x) {
                // The same sum, its length now a constant.
                Ok(whole) if !cfg!(tinykd_small) => add(&mut acc, whole),
                _ => add(&mut acc, x),
            }
        }
        averages(block, &acc, count, clamp);
    }
}

/// `y[i] = clamp(rounded average of acc[i] over count)`. Not inlined in
/// a build for speed, so that LLVM does not unroll the divisions over a
/// whole block (flash).
#[cfg_attr(tinykd_small, inline(always))]
#[cfg_attr(not(tinykd_small), inline(never))]
fn averages(y: &mut [i8], acc: &[i32], count: i32, clamp: Clamp) {
    for (y, sum) in y.iter_mut().zip(acc) {
        *y = clamp.apply(rounded_average(*sum, count));
    }
}

/// Channels the global average pool sums at once: in a build for speed
/// eight, whose sums fit the registers of every core (sixteen spilled on
/// Armv7-M); in a build for size the average pools' block.
const GAP_BLOCK: usize = if cfg!(tinykd_small) { BLOCK } else { 8 };

/// `acc[i] += x[i]` over the shorter of the two (`x` of fixed length:
/// unrolled).
#[inline(always)]
fn add<const N: usize>(acc: &mut [i32; N], x: &[i8]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a = a.wrapping_add(*v as i32);
    }
}

/// TFLite's rounded average of `count` values summing to `sum`: half away
/// from zero, `(sum ± count/2) / count` with division truncating toward
/// zero. `count ≤ 0` cannot come from a window; it gives 0 rather than a
/// division panic.
#[inline]
pub fn rounded_average(sum: i32, count: i32) -> i32 {
    if count <= 0 {
        return 0;
    }
    let half = count / 2;
    if sum > 0 { sum.wrapping_add(half) / count } else { sum.wrapping_sub(half) / count }
}

/// The max pool operator ([`crate::format::Op::MaxPool2d`]).
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d;
/// The average pool operator ([`crate::format::Op::AvgPool2d`]).
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2d;
/// The global average pool operator ([`crate::format::Op::GlobalAvgPool`]).
#[derive(Debug, Clone, Copy)]
pub struct GlobalAvgPool;

/// A global average pool, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalPoolStep {
    pub channels: usize,
    pub clamp: Clamp,
}

/// Checks a windowed pool's record (an average pool's window too).
fn validate_pool(l: &Layer, average: bool) -> Result<(), Error> {
    let p = l.pool_params()?;
    if p.window.input_len(p.channels) != Some(l.input_len) {
        return Err(Error::Malformed("pool input length is not in_h × in_w × c"));
    }
    if p.window.output_len(p.channels) != Some(l.output_len) {
        return Err(Error::Malformed("pool output length does not match its shape and padding"));
    }
    if average && p.window.kernel_len().is_none_or(|n| n > MAX_AVG_COUNT) {
        return Err(Error::Malformed("average pool window has more than 2^23 taps"));
    }
    if l.weights_len != 0 || l.channel_count != 0 {
        return Err(Error::Malformed("pooling layer has weights or a channel table"));
    }
    Ok(())
}

/// A windowed pool step as Rust source.
#[cfg(feature = "codegen")]
fn pool_source(l: &Layer, krate: &str) -> alloc::string::String {
    alloc::format!("{krate}::compiled::pool({:?}, {})", l.params, crate::ops::clamp_source(krate, l.clamp))
}

/// The operator impl of a windowed pool, `$average` whether it averages.
macro_rules! windowed_pool {
    ($ty:ty, $kernel:ident, $average:literal) => {
        impl Operator for $ty {
            type Step<'a, C: ChannelTable> = PoolParams;

            fn validate(l: &Layer) -> Result<(), Error> {
                validate_pool(l, $average)
            }

            fn decode<'a>(l: &Layer, _: &'a [i8], _: &'a [u8]) -> Result<PoolParams, Error> {
                l.pool_params()
            }

            #[inline(always)]
            fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
                p: &PoolParams,
                input: &[i8],
                output: &mut [i8],
            ) -> Result<(), Error> {
                $kernel(p, input, output);
                Ok(())
            }

            fn channels<C: ChannelTable>(_: &PoolParams) -> Option<C> {
                None
            }

            fn with_channels<'a, C: ChannelTable, D: ChannelTable>(p: Self::Step<'a, C>, _: D) -> Self::Step<'a, D> {
                p
            }

            #[cfg(feature = "codegen")]
            fn source(
                _: &PoolParams,
                l: &Layer,
                krate: &str,
                _: &mut dyn FnMut(&[i8]) -> alloc::string::String,
            ) -> alloc::string::String {
                pool_source(l, krate)
            }
        }
    };
}

windowed_pool!(MaxPool2d, max_pool2d, false);
windowed_pool!(AvgPool2d, avg_pool2d, true);

impl Operator for GlobalAvgPool {
    type Step<'a, C: ChannelTable> = GlobalPoolStep;

    fn validate(l: &Layer) -> Result<(), Error> {
        let [in_h, in_w, c, rest @ ..] = l.params.map(usize::from);
        if rest.iter().any(|&v| v != 0) {
            return Err(Error::Malformed("global average pool parameters 3..12 must be 0"));
        }
        if in_h == 0 || in_w == 0 || c == 0 {
            return Err(Error::Malformed("global average pool dimension is 0"));
        }
        if in_h * in_w > MAX_AVG_COUNT {
            return Err(Error::Malformed("global average pool has more than 2^23 positions"));
        }
        if in_h.checked_mul(in_w).and_then(|n| n.checked_mul(c)) != Some(l.input_len) {
            return Err(Error::Malformed("global average pool input length is not in_h × in_w × c"));
        }
        if l.output_len != c {
            return Err(Error::Malformed("global average pool output length is not c"));
        }
        if l.weights_len != 0 || l.channel_count != 0 {
            return Err(Error::Malformed("pooling layer has weights or a channel table"));
        }
        Ok(())
    }

    fn decode<'a>(l: &Layer, _: &'a [i8], _: &'a [u8]) -> Result<GlobalPoolStep, Error> {
        Ok(GlobalPoolStep { channels: l.params[2].into(), clamp: l.clamp })
    }

    #[inline(always)]
    fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
        s: &GlobalPoolStep,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error> {
        global_avg_pool(s.channels, s.clamp, input, output);
        Ok(())
    }

    fn channels<C: ChannelTable>(_: &GlobalPoolStep) -> Option<C> {
        None
    }

    fn with_channels<'a, C: ChannelTable, D: ChannelTable>(s: Self::Step<'a, C>, _: D) -> Self::Step<'a, D> {
        s
    }

    #[cfg(feature = "codegen")]
    fn source(
        s: &GlobalPoolStep,
        _: &Layer,
        krate: &str,
        _: &mut dyn FnMut(&[i8]) -> alloc::string::String,
    ) -> alloc::string::String {
        alloc::format!(
            "{krate}::kernels::pool::GlobalPoolStep {{ channels: {}, clamp: {} }}",
            s.channels,
            crate::ops::clamp_source(krate, s.clamp)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::{self, Quant};
    use super::super::{Padding, Window};
    use super::*;
    use proptest::prelude::*;

    const FULL: Clamp = Clamp { min: -128, max: 127 };

    fn params(win: Window, channels: usize, clamp: Clamp) -> PoolParams {
        PoolParams { window: win, channels, clamp }
    }

    #[test]
    fn rounded_average_hand_cases() {
        assert_eq!(rounded_average(5, 2), 3); // 2.5 -> 3
        assert_eq!(rounded_average(-5, 2), -3); // -2.5 -> -3
        assert_eq!(rounded_average(7, 3), 2); // 2.33 -> 2
        assert_eq!(rounded_average(8, 3), 3); // 2.67 -> 3
        assert_eq!(rounded_average(-8, 3), -3);
        assert_eq!(rounded_average(0, 4), 0);
        assert_eq!(rounded_average(-128 * (1 << 23), 1 << 23), -128); // the largest window, no overflow
        assert_eq!(rounded_average(9, 0), 0);
    }

    #[test]
    fn hand_computed_max_pool_same_with_edges() {
        // 1-D width 5, 2 channels, pool 2, stride 2, SAME: out 3, total pad
        // max(2·2 + 2 − 5, 0) = 1, 0 before, so the last window is {4} alone.
        // x[w] = [[1, −1], [3, −5], [−2, 0], [−7, −8], [6, −128]].
        // Windows {0,1}: [3, −1]; {2,3}: [−2, 0]; {4}: [6, −128].
        // Clamp [−4, 5]: [3, −1], [−2, 0], [5, −4].
        let win = Window::new(1, 5, 1, 2, 2, Padding::Same).unwrap();
        let x = [1, -1, 3, -5, -2, 0, -7, -8, 6, -128];
        let mut out = [0i8; 6];
        max_pool2d(&params(win, 2, Clamp { min: -4, max: 5 }), &x, &mut out);
        assert_eq!(out, [3, -1, -2, 0, 5, -4]);
    }

    #[test]
    fn hand_computed_max_pool_2d_valid() {
        // 3×3×1 input [[1, 9, 2], [4, 5, 6], [−1, 8, 0]], pool 2×2, stride 1, VALID: 2×2.
        // Windows: max(1, 9, 4, 5) = 9, max(9, 2, 5, 6) = 9, max(4, 5, −1, 8) = 8, max(5, 6, 8, 0) = 8.
        let win = Window::new(3, 3, 2, 2, 1, Padding::Valid).unwrap();
        let mut out = [0i8; 4];
        max_pool2d(&params(win, 1, FULL), &[1, 9, 2, 4, 5, 6, -1, 8, 0], &mut out);
        assert_eq!(out, [9, 9, 8, 8]);
    }

    #[test]
    fn hand_computed_avg_pool_counts_only_in_bounds_taps() {
        // 3×3×1 input [[1, 2, 3], [4, 5, 6], [7, 8, −9]], pool 2×2, stride 2, SAME:
        // out 2×2, total pad max(2 + 2 − 3, 0) = 1, 0 before (the pad is after).
        //   (0,0): {1, 2, 4, 5} = 12 / 4 = 3.
        //   (0,1): {3, 6} = 9 / 2 = 4.5 -> 5 (half away from zero).
        //   (1,0): {7, 8} = 15 / 2 = 7.5 -> 8.
        //   (1,1): {−9} = −9 / 1 = −9; clamp [−5, 127] -> −5.
        // Counting the padded taps as zeros would give 9 / 4 -> 2 instead of 5.
        let win = Window::new(3, 3, 2, 2, 2, Padding::Same).unwrap();
        let mut out = [0i8; 4];
        avg_pool2d(&params(win, 1, Clamp { min: -5, max: 127 }), &[1, 2, 3, 4, 5, 6, 7, 8, -9], &mut out);
        assert_eq!(out, [3, 5, 8, -5]);
    }

    #[test]
    fn hand_computed_avg_pool_negative_ties_and_many_channels() {
        // 1-D width 2, 20 channels (more than one block of 16), pool 2, VALID:
        // channel c has values [−c, −c − 1], average −c − 0.5 -> −c − 1
        // (half away from zero): (−2c − 1 − 1) / 2 = −c − 1.
        let win = Window::new(1, 2, 1, 2, 1, Padding::Valid).unwrap();
        let x: Vec<i8> = (0..2).flat_map(|w| (0..20).map(move |c| -c - w)).collect();
        let mut out = [0i8; 20];
        avg_pool2d(&params(win, 20, FULL), &x, &mut out);
        let want: Vec<i8> = (0..20).map(|c| -c - 1).collect();
        assert_eq!(out.to_vec(), want);
    }

    #[test]
    fn hand_computed_global_avg_pool() {
        // 2×2 pixels, 2 channels: channel 0 = [1, 2, 3, 5] (11 / 4 = 2.75 -> 3),
        // channel 1 = [−1, −2, −3, −4] (−10 / 4 = −2.5 -> −3). Clamp [−2, 127] -> [3, −2].
        let mut out = [0i8; 2];
        global_avg_pool(2, Clamp { min: -2, max: 127 }, &[1, -1, 2, -2, 3, -3, 5, -4], &mut out);
        assert_eq!(out, [3, -2]);
        // Inconsistent lengths write nothing.
        let mut out = [9i8; 2];
        global_avg_pool(2, FULL, &[1, 2, 3], &mut out);
        global_avg_pool(0, FULL, &[1, 2], &mut out[..0]);
        assert_eq!(out, [9, 9]);
    }

    /// A random pool case: params (rectangular windows, a stride per axis)
    /// and input (values often at the int8 ends, where the clamps act).
    fn pool_case() -> impl Strategy<Value = (reference::Params, Vec<i8>)> {
        (1u16..6, 1u16..9, 1u16..20, 1u16..4, 1u16..5, (1u16..4, 1u16..4), 0u16..2).prop_flat_map(
            |(in_h, in_w, c, kh, kw, (sh, sw), pad)| {
                let (kh, kw) = if pad == 0 { (kh.min(in_h), kw.min(in_w)) } else { (kh, kw) };
                let n = (in_h * in_w * c) as usize;
                let p = reference::pool_record([in_h, in_w, c, kh, kw, sh, pad, sw]);
                (Just(p), proptest::collection::vec(reference::edgy_i8(), n))
            },
        )
    }

    fn pool_params(p: reference::Params, q: Quant) -> PoolParams {
        let pad = Padding::from_u16(p[6]).unwrap();
        let [in_h, in_w, kh, kw, sh, sw] = [p[0], p[1], p[3], p[4], p[5], p[8]].map(usize::from);
        let win = Window::with_strides(in_h, in_w, kh, kw, sh, sw, pad).unwrap();
        params(win, p[2] as usize, Clamp { min: q.min, max: q.max })
    }

    fn clamp_range() -> impl Strategy<Value = Quant> {
        (reference::edgy_i8(), reference::edgy_i8()).prop_map(|(a, b)| Quant {
            zin: 0,
            zout: 0,
            min: a.min(b),
            max: a.max(b),
        })
    }

    proptest! {
        #[test]
        fn max_pool_matches_naive_reference((p, x) in pool_case(), q in clamp_range()) {
            let want = reference::max_pool2d(p, &x, q);
            let mut got = vec![0i8; want.len()];
            max_pool2d(&pool_params(p, q), &x, &mut got);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn avg_pool_matches_naive_reference((p, x) in pool_case(), q in clamp_range()) {
            let want = reference::avg_pool2d(p, &x, q);
            let mut got = vec![0i8; want.len()];
            avg_pool2d(&pool_params(p, q), &x, &mut got);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn global_avg_pool_matches_naive_reference((p, x) in pool_case(), q in clamp_range()) {
            let want = reference::global_avg_pool(p, &x, q);
            let mut got = vec![0i8; p[2] as usize];
            global_avg_pool(p[2] as usize, Clamp { min: q.min, max: q.max }, &x, &mut got);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn rounded_average_matches_i64(vals in proptest::collection::vec(any::<i8>(), 1..300)) {
            let wide: Vec<i64> = vals.iter().map(|v| *v as i64).collect();
            let sum = vals.iter().map(|v| *v as i32).sum::<i32>();
            prop_assert_eq!(rounded_average(sum, vals.len() as i32) as i64, reference::rounded_average(&wide));
        }
    }
}
