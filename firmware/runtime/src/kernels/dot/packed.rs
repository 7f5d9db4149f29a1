//! Two pixels in one word: `x0 + x1·2^23` (both offset inputs, `x − z_in`,
//! so `|x| ≤ 255`), multiplied by an int8 weight with one 32×32→64-bit
//! multiply-accumulate (`smlal`), gives `w·x0 + w·x1·2^23`. Summed over a
//! window the 64-bit accumulator holds `A + B·2^23` with `A = Σ w·x0` and
//! `B = Σ w·x1` exactly; while `|A| < 2^22`, `A` is the sign-extended low
//! 23 bits and `B` the rest. Every product is at most `255 · 128`, so a
//! run of up to [`PACKED_MAX`] values is safe whatever its weights; longer
//! windows are summed in runs of that length, each unpacked on its own,
//! unless [`whole_runs`] finds the layer's filters small enough for one.
//!
//! Used on Cortex-M4/M7 only, where `smlal` takes one cycle like `mla`:
//! there it is two multiply-accumulates per instruction without SMLAD's
//! unpacking of weight words. On the Cortex-M3 `smlal` takes 4 to 7 cycles
//! against `mla`'s 2: it would cut instructions but not time, so the M3
//! keeps its `mla` loops.
//!
//! TFLite's accumulator is an int32 that wraps; under this bound neither
//! sum reaches 2^31, so both are the int32 sums exactly.

/// Where the second pixel sits in a packed word: `255 · 2^23 + 255` still
/// fits an i32, and the first pixel's sum has 22 bits and a sign.
pub const PAIR_SHIFT: u32 = 23;

/// Longest window whose sums stay unpackable for any int8 weights and
/// inputs: `128 · 255 · 128 < 2^22`.
pub const PACKED_MAX: usize = 128;

/// One packed word from two pixels' offset inputs (each in `-255..=255`).
#[inline(always)]
pub fn pack(x0: i32, x1: i32) -> i32 {
    x0.wrapping_add(x1.wrapping_shl(PAIR_SHIFT))
}

/// `[A, B]` from an accumulator `A + B·2^23` with `|A| < 2^22`.
#[inline(always)]
pub fn unpack(acc: i64) -> [i32; 2] {
    let a = ((acc as i32) << (32 - PAIR_SHIFT)) >> (32 - PAIR_SHIFT);
    [a, (acc.wrapping_sub(a as i64) >> PAIR_SHIFT) as i32]
}

/// `Σ w·x` of packed words against one filter, over the common length,
/// packed (callers keep runs short enough to unpack: [`PACKED_MAX`]
/// values, or what [`whole_runs`] allows).
#[inline(always)]
pub(super) fn dot_packed_run(x: &[i32], w: &[i8]) -> i64 {
    #[cfg(tinykd_dsp)]
    return super::dsp::dot_packed_run(x, w);
    #[cfg(not(tinykd_dsp))]
    dot_packed_portable(x, w)
}

/// `Σ w·x` in plain Rust.
#[inline(always)]
pub(super) fn dot_packed_portable(x: &[i32], w: &[i8]) -> i64 {
    x.iter().zip(w).fold(0i64, |s, (x, w)| s.wrapping_add(*x as i64 * *w as i64))
}

/// [`dot_packed_run`] for three filters `W` apart from `f`'s start
/// (`f` at least `2·W + x.len()` long; zeros otherwise): on the
/// M4/M7 a hand-written loop, 7 instructions per 6 multiply-accumulates
/// (one word load, three byte loads, three `smlal`; the other filters at
/// constant offsets).
#[inline(always)]
fn dot2x3_packed_run<const W: usize>(x: &[i32], f: &[i8]) -> [i64; 3] {
    #[cfg(tinykd_dsp)]
    return super::dsp::dot2x3_packed_run::<W>(x, f);
    #[cfg(not(tinykd_dsp))]
    match f.get(..(2 * W + x.len())) {
        Some(f) => core::array::from_fn(|k| dot_packed_portable(x, &f[k * W..])),
        None => [0; 3],
    }
}

/// Feeds `x` to `run` whole when `whole` (see [`whole_runs`]) or when it
/// is at most [`PACKED_MAX`] values, else in pieces of that many (each
/// with its index in the filter), handing each piece's sums to `flush` to
/// be unpacked. Both shapes are constant for a constant length.
#[inline(always)]
fn in_pieces<'a, A>(x: &'a [i32], whole: bool, mut run: impl FnMut(&'a [i32], usize) -> A, mut flush: impl FnMut(A)) {
    if whole || x.len() <= PACKED_MAX {
        return flush(run(x, 0));
    }
    for (k, piece) in x.chunks(PACKED_MAX).enumerate() {
        flush(run(piece, k * PACKED_MAX));
    }
}

/// `[x0·w, x1·w]`: two pixels' packed window `x` against one filter, over
/// the common length; in one run if `whole` (which [`whole_runs`] must
/// have allowed for this filter), else in runs of [`PACKED_MAX`].
#[inline(always)]
pub fn dot_packed(x: &[i32], w: &[i8], whole: bool) -> [i32; 2] {
    let mut s = [0i32; 2];
    in_pieces(x, whole, |x, at| w.get(at..).map_or(0, |w| dot_packed_run(x, w)), |acc| s = add(s, unpack(acc)));
    s
}

/// Two pixels' packed window `x` against three consecutive filters of `W`
/// weights (`f`, at least `3·W` long; zeros otherwise), runs as in
/// [`dot_packed`]: `[[x0·a, x1·a], [x0·b, x1·b], [x0·c, x1·c]]`.
#[inline(always)]
pub fn dot2x3_packed<const W: usize>(x: &[i32; W], f: &[i8], whole: bool) -> [[i32; 2]; 3] {
    let mut s = [[0i32; 2]; 3];
    let Some(f) = f.get(..3 * W) else { return s };
    in_pieces(
        x,
        whole,
        |x, at| f.get(at..).map_or([0; 3], |f| dot2x3_packed_run::<W>(x, f)),
        |acc| {
            for (s, a) in s.iter_mut().zip(acc) {
                *s = add(*s, unpack(a));
            }
        },
    );
    s
}

/// Whether a window of `taps` packed words stays unpackable in one run
/// against each of these filters (`weights`, `taps` each) for inputs
/// offset by `z_in`: every filter's `Σ |w| · max |x − z_in| < 2^22`
/// ([`PACKED_MAX`] values are safe for any weights). Trained filters are
/// far from the worst case (all ±128), so a 3×3×16 window of 144 values
/// is one run instead of 128 + 16, each run costing a restart and an
/// unpacking.
pub fn whole_runs(weights: &[i8], taps: usize, zin: i32) -> bool {
    // The largest |x − z_in| over int8 x.
    let reach = (127 - zin as i64).max(zin as i64 + 128);
    if taps == 0 || reach <= 0 {
        return false;
    }
    let bound = (1i64 << (PAIR_SHIFT - 1)) / reach;
    weights.chunks(taps).all(|w| (abs_sum(w) as i64) < bound)
}

/// `Σ |w|`: on the M4/M7 four bytes per `usada8`.
#[inline(always)]
fn abs_sum(w: &[i8]) -> u32 {
    #[cfg(tinykd_dsp)]
    return super::dsp::abs_sum(w);
    #[cfg(not(tinykd_dsp))]
    w.iter().map(|w| w.unsigned_abs() as u32).sum()
}

#[inline(always)]
fn add(a: [i32; 2], b: [i32; 2]) -> [i32; 2] {
    [a[0].wrapping_add(b[0]), a[1].wrapping_add(b[1])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sums(x0: &[i32], x1: &[i32], w: &[i8]) -> [i32; 2] {
        let s = |x: &[i32]| x.iter().zip(w).map(|(x, w)| x * *w as i32).sum();
        [s(x0), s(x1)]
    }

    fn packed(x0: &[i32], x1: &[i32]) -> Vec<i32> {
        x0.iter().zip(x1).map(|(a, b)| pack(*a, *b)).collect()
    }

    #[test]
    fn hand_computed() {
        // x0 = [3, -2], x1 = [-5, 7], w = [4, -6]: A = 12 + 12 = 24,
        // B = −20 − 42 = −62.
        let x = packed(&[3, -2], &[-5, 7]);
        assert_eq!(dot_packed(&x, &[4, -6], false), [24, -62]);
        // The extremes: 128 values of ±255 against −128 give ±4,177,920 in
        // both halves, just under 2^22.
        let (hi, lo) = (vec![255; PACKED_MAX], vec![-255; PACKED_MAX]);
        let w = vec![-128i8; PACKED_MAX];
        for (x0, x1) in [(&hi, &lo), (&lo, &hi), (&hi, &hi), (&lo, &lo)] {
            assert_eq!(unpack(dot_packed_run(&packed(x0, x1), &w)), sums(x0, x1, &w));
        }
        assert_eq!(unpack(0), [0, 0]);
    }

    #[test]
    fn three_filters_at_offsets() {
        let x0: Vec<i32> = (0..20).map(|i| i * 13 % 511 - 255).collect();
        let x1: Vec<i32> = (0..20).map(|i| 255 - i * 29 % 511).collect();
        let x: [i32; 20] = packed(&x0, &x1).try_into().unwrap();
        let f: Vec<i8> = (0..60).map(|i| (i * 37 % 256 - 128) as i8).collect();
        let s = dot2x3_packed::<20>(&x, &f, false);
        for k in 0..3 {
            assert_eq!(s[k], sums(&x0, &x1, &f[k * 20..(k + 1) * 20]), "filter {k}");
        }
        assert_eq!(dot2x3_packed::<20>(&x, &f[..59], false), [[0; 2]; 3]);
    }

    #[test]
    fn whole_runs_at_the_bound() {
        // z_in = −128: |x − z_in| up to 255, so Σ|w| must stay under
        // 2^22 / 255 = 16,448: 144 weights of ±114 (16,416) fit, ±115
        // (16,560) do not; nor does one filter of three over the bound.
        let mut w: Vec<i8> = (0..144).map(|i| if i % 2 == 0 { 114 } else { -114 }).collect();
        assert!(whole_runs(&w, 144, -128));
        assert!(whole_runs(&w, 144, 0));
        w.extend((0..144).map(|_| -115i8));
        assert!(!whole_runs(&w, 144, -128));
        // z_in = 0: |x| up to 128, so 144 × 115 · 128 = 2,119,680 fits.
        assert!(whole_runs(&w, 144, 0));
        // The worst case does not fit even at PACKED_MAX + 1 values.
        assert!(!whole_runs(&[-128; 129], 129, -128));
        assert!(!whole_runs(&[], 0, 0));
        // The exact sum, at every length (words and a tail).
        for n in 0..12 {
            let w: Vec<i8> = (0..n).map(|i| [-128, 127, -1, 0, 5][i % 5]).collect();
            assert_eq!(abs_sum(&w), w.iter().map(|w| w.unsigned_abs() as u32).sum::<u32>());
        }
    }

    proptest! {
        /// Whole 144-value windows in one run wherever `whole_runs` allows,
        /// every input at its extreme in the worst case, weights up to the
        /// bound and past it.
        #[test]
        fn one_run_where_whole_runs_allows(
            zin in prop_oneof![Just(-128i32), Just(127), Just(0), -128i32..=127],
            x in proptest::collection::vec(any::<(i8, i8)>(), 144),
            f in (100i8..=127).prop_flat_map(|m| proptest::collection::vec(prop_oneof![Just(m), Just(-m), -m..=m], 3 * 144)),
        ) {
            let x0: Vec<i32> = x.iter().map(|p| p.0 as i32 - zin).collect();
            let x1: Vec<i32> = x.iter().map(|p| p.1 as i32 - zin).collect();
            let packed: [i32; 144] = packed(&x0, &x1).try_into().unwrap();
            let whole = whole_runs(&f, 144, zin);
            let s = dot2x3_packed::<144>(&packed, &f, whole);
            for k in 0..3 {
                let w = &f[k * 144..(k + 1) * 144];
                prop_assert_eq!(s[k], sums(&x0, &x1, w));
                prop_assert_eq!(dot_packed(&packed, w, whole), sums(&x0, &x1, w));
            }
        }

        #[test]
        fn unpacks_both_pixels(
            (x0, x1, w) in (0..=PACKED_MAX).prop_flat_map(|n| (
                proptest::collection::vec(-255i32..=255, n),
                proptest::collection::vec(-255i32..=255, n),
                proptest::collection::vec(any::<i8>(), n),
            )),
        ) {
            prop_assert_eq!(unpack(dot_packed_run(&packed(&x0, &x1), &w)), sums(&x0, &x1, &w));
        }

        /// Windows longer than one run: 3×3 over 16 channels, every value
        /// at its extreme in the worst case.
        #[test]
        fn long_windows_in_runs(
            x0 in proptest::collection::vec(prop_oneof![Just(-255i32), Just(255), -255i32..=255], 144),
            x1 in proptest::collection::vec(prop_oneof![Just(-255i32), Just(255), -255i32..=255], 144),
            f in proptest::collection::vec(prop_oneof![Just(-128i8), Just(127), any::<i8>()], 3 * 144),
        ) {
            let x: [i32; 144] = packed(&x0, &x1).try_into().unwrap();
            let s = dot2x3_packed::<144>(&x, &f, false);
            for k in 0..3 {
                let w = &f[k * 144..(k + 1) * 144];
                prop_assert_eq!(s[k], sums(&x0, &x1, w));
                prop_assert_eq!(dot_packed(&x, w, false), sums(&x0, &x1, w));
            }
        }
    }
}
