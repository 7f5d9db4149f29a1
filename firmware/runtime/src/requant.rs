//! Fixed-point requantization, exactly as TensorFlow Lite's reference
//! `MultiplyByQuantizedMultiplier` (gemmlowp's saturating rounding doubling
//! high multiply followed by a rounding right shift). Integer only: a
//! Cortex-M0 has no FPU, and bit-exactness with TFLite depends on every
//! rounding step matching.

/// `(a · b · 2) >> 32` with round-half-away-from-zero, saturating the single
/// overflow case `i32::MIN · i32::MIN`.
#[inline(always)]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division (not shift) truncates toward zero, as in the reference.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent`, rounding half away from zero. `exponent` is in `0..=31`.
#[inline(always)]
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i32;
    (x >> exponent) + (remainder > threshold) as i32
}

/// Multiplies `x` by the real number `multiplier · 2^(shift − 31)`.
///
/// `multiplier` is a Q31 value in `[2^30, 2^31)` (or 0) and `shift` is in
/// `-31..=30`, as produced by the host's `quantize_multiplier`.
#[inline(always)]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = if shift > 0 { shift as u32 } else { 0 };
    let right = if shift > 0 { 0 } else { (-shift) as u32 };
    // The reference multiplies without overflow checks; wrapping keeps the
    // same two's-complement result without a panic path.
    let high = saturating_rounding_doubling_high_mul(x.wrapping_shl(left), multiplier);
    rounding_divide_by_pot(high, right)
}

/// TFLite's single-rounding `MultiplyByQuantizedMultiplier` (compiled with
/// `TFLITE_SINGLE_ROUNDING`, as desktop TFLite's optimised kernels compute):
/// `(x · multiplier + 2^(t − 1)) >> t` with `t = 31 − shift`, one rounding
/// (ties toward +∞). `multiplier ≥ 0`, `shift` in `-31..=30`; the result is
/// saturated to i32 (the reference only asserts it fits).
#[inline(always)]
pub fn multiply_by_quantized_multiplier_single(x: i32, multiplier: i32, shift: i32) -> i32 {
    let t = 31 - shift.clamp(-31, 30);
    let v = (x as i64 * multiplier as i64 + (1i64 << (t - 1))) >> t;
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// [`multiply_by_quantized_multiplier`] for one fixed `(multiplier, shift)`,
/// with the per-channel work (shift split, rounding mask) done once, so the
/// per-output cost is a shift, one `smlal`, and the rounding.
///
/// Bit-identical to [`multiply_by_quantized_multiplier`] for every `x`
/// (proptest below) when `multiplier ≥ 0` and `shift` is in `-31..=30` —
/// every multiplier TFLite derives is in `[2^30, 2^31)` or 0, and
/// `Model::from_bytes` refuses others. A negative multiplier is taken as 0
/// (it would only matter for `i32::MIN · i32::MIN`, the reference's one
/// saturating case, and dropping that test saves every output a compare and
/// a branch); outside the shift range the reference is undefined, and this
/// type stays panic-free and clamps the shift into that range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizedMultiplier {
    multiplier: i32,
    /// Right shifts of 2 or more: `2^(right − 2)`, the high word of the
    /// combined rounding term (see [`QuantizedMultiplier::apply`]). Others:
    /// `2^right − 1`, the bits the right shift drops (half of it is the
    /// rounding threshold for non-negative values).
    round: i32,
    left: u8,
    right: u8,
    /// `right − 1` for right shifts of 2 or more, below 32 by construction.
    high_shift: u8,
}

impl QuantizedMultiplier {
    /// `const`: a compiled model's channel tables are prepared at compile
    /// time (see [`crate::kernels::PreparedChannel`]).
    pub const fn new(multiplier: i32, shift: i32) -> QuantizedMultiplier {
        // Shifts outside `-31..=30` (undefined in the reference) are clamped
        // into it, as `multiply_by_quantized_multiplier_single` does.
        let left = if shift > 30 {
            30
        } else if shift > 0 {
            shift as u8
        } else {
            0
        };
        let right = if shift > 0 {
            0
        } else if shift < -31 {
            31
        } else {
            (-shift) as u8
        };
        let round = if right >= 2 { 1 << (right - 2) } else { ((1i64 << right) - 1) as i32 };
        let high_shift = if right >= 2 { right - 1 } else { 0 };
        QuantizedMultiplier { multiplier: if multiplier > 0 { multiplier } else { 0 }, round, left, right, high_shift }
    }

    /// `x · multiplier · 2^(shift − 31)`, rounded as TFLite does.
    #[inline(always)]
    pub fn apply(self, x: i32) -> i32 {
        if self.right >= 2 {
            // Both roundings in one 64-bit sum: with `e = right`, the
            // reference is `(h + 2^(e−1) − [h < 0]) >> e` of
            // `h = (P + 2^30) >> 31`, `P = x · multiplier`; adding whole
            // multiples of 2^31 before a floor shift commutes with it, so
            // that is `(P + 2^30 + 2^(30+e) − [h < 0] · 2^31) >> (31 + e)`,
            // which cannot overflow in 64 bits. `[x < 0]` may stand for
            // `[h < 0]`: they differ only where `h = 0`, and there both
            // terms shift to 0. The high word of the sum is
            // `round − [x < 0]`, the low word `2^30 + [x < 0] · 2^31` (no
            // carry between them), and the result is the high word shifted
            // by `e − 1`: no mask, compare or second rounding step.
            let neg = x >> 31;
            let nudge = ((self.round.wrapping_add(neg) as i64) << 32) | ((1u32 << 30) | ((neg as u32) << 31)) as i64;
            let sum = (x as i64 * self.multiplier as i64).wrapping_add(nudge);
            return ((sum >> 32) as i32) >> self.high_shift();
        }
        let x = x.wrapping_shl(self.left as u32);
        // The high multiply: the reference adds 2^30 (product ≥ 0) or
        // 1 − 2^30 (product < 0) and divides by 2^31 truncating toward zero.
        // For a negative sum, truncation is `(v + 2^31 − 1) >> 31`, which
        // with the negative nudge is again `(product + 2^30) >> 31`: one
        // formula, no sign test. With `0 ≤ multiplier < 2^31` the result
        // fits in i32 for every `x` (the reference saturates only MIN · MIN).
        let high = ((x as i64 * self.multiplier as i64 + (1 << 30)) >> 31) as i32;
        // Rounding right shift (here by 0 or 1), half away from zero (as
        // `rounding_divide_by_pot`).
        let threshold = (self.round >> 1) + (high < 0) as i32;
        (high >> self.right) + ((high & self.round) > threshold) as i32
    }

    /// [`QuantizedMultiplier::apply`] (`SINGLE`: [`apply_single`](Self::apply_single))
    /// held within ±2^30, for a result about to be clamped to int8 around
    /// a zero point: the same int8 after any int8 zero point and clamp.
    /// Right shifts of 2 or more need no clamp (their result is within
    /// ±2^29: `|x · multiplier| < 2^62`, shifted by at least 33).
    #[inline(always)]
    pub fn apply_bounded<const SINGLE: bool>(self, x: i32) -> i32 {
        const BOUND: i32 = 1 << 30;
        // The test first and a return of its own: with one computation and
        // the clamp chosen after it, FC 512→64 on the M3 ran 79,120 →
        // 79,218 instructions.
        if self.right >= 2 {
            return if SINGLE { self.apply_single(x) } else { self.apply(x) };
        }
        let v = if SINGLE { self.apply_single(x) } else { self.apply(x) };
        v.clamp(-BOUND, BOUND - 1)
    }

    /// The fast paths' shift of the sum's high word, known to the compiler
    /// to be below 32, so the shift needs no masking instruction.
    #[inline(always)]
    fn high_shift(self) -> u32 {
        let s = self.high_shift as u32;
        // SAFETY: `new`, the only constructor, sets `high_shift` to
        // `right − 1` with `right ≤ 31`, or 0.
        #[allow(unsafe_code)]
        unsafe {
            core::hint::assert_unchecked(s < 32)
        };
        s
    }

    /// [`multiply_by_quantized_multiplier_single`] with this multiplier: one
    /// rounding instead of [`QuantizedMultiplier::apply`]'s two.
    #[inline(always)]
    pub fn apply_single(self, x: i32) -> i32 {
        if self.right >= 2 {
            // `t = 31 + e ≥ 33`: the rounding term `2^(30+e)` is the high
            // word `round`, and the sum's high word shifted by `e − 1` is
            // the result, which fits (`|x · multiplier| < 2^62`).
            let sum = (x as i64 * self.multiplier as i64).wrapping_add((self.round as i64) << 32);
            return ((sum >> 32) as i32) >> self.high_shift();
        }
        // t = 31 − shift = 31 + right − left, in 1..=62 (right is 0 when left > 0).
        let t = 31 + self.right as u32 - self.left as u32;
        let v = (x as i64 * self.multiplier as i64 + (1i64 << (t - 1))) >> t;
        v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_mul_hand_cases() {
        // 2^30 is 0.5 in Q31: x * 0.5, rounded half away from zero.
        assert_eq!(saturating_rounding_doubling_high_mul(10, 1 << 30), 5);
        assert_eq!(saturating_rounding_doubling_high_mul(11, 1 << 30), 6);
        // The reference's nudge makes negative ties round toward zero: -5.5 -> -5.
        assert_eq!(saturating_rounding_doubling_high_mul(-11, 1 << 30), -5);
        assert_eq!(saturating_rounding_doubling_high_mul(-13, 1 << 30), -6);
        assert_eq!(saturating_rounding_doubling_high_mul(-10, 1 << 30), -5);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX), i32::MAX - 1);
    }

    #[test]
    fn divide_by_pot_hand_cases() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 -> 3
        assert_eq!(rounding_divide_by_pot(-5, 1), -3); // -2.5 -> -3
        assert_eq!(rounding_divide_by_pot(7, 2), 2); // 1.75 -> 2
        assert_eq!(rounding_divide_by_pot(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot(6, 2), 2); // 1.5 -> 2
        assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5 -> -2
        assert_eq!(rounding_divide_by_pot(5, 0), 5);
    }

    #[test]
    fn multiplier_hand_cases() {
        // 0.75 = 0.75 * 2^0 -> multiplier round(0.75 * 2^31), shift 0.
        let m = (0.75f64 * (1u64 << 31) as f64).round() as i32;
        assert_eq!(multiply_by_quantized_multiplier(100, m, 0), 75);
        // 0.1875 = 0.75 * 2^-2: 100 * 0.1875 = 18.75 -> 19.
        assert_eq!(multiply_by_quantized_multiplier(100, m, -2), 19);
        assert_eq!(multiply_by_quantized_multiplier(-100, m, -2), -19);
        // 1.5 = 0.75 * 2^1.
        assert_eq!(multiply_by_quantized_multiplier(7, m, 1), 11); // 10.5 -> 11
        assert_eq!(multiply_by_quantized_multiplier(0, m, -5), 0);
    }

    #[test]
    fn precomputed_multiplier_edge_cases() {
        for (x, m, shift) in [
            (i32::MIN, i32::MAX, 0),
            (i32::MAX, 1 << 30, 30),
            (i32::MAX, i32::MAX, -31),
            (-1, 1 << 30, 0),
            (-11, 1 << 30, 0),
            (i32::MIN, 1 << 30, -31),
            (1 << 20, i32::MAX, 30),
            (0, 0, 0),
        ] {
            assert_eq!(
                QuantizedMultiplier::new(m, shift).apply(x),
                multiply_by_quantized_multiplier(x, m, shift),
                "x={x} m={m} shift={shift}"
            );
        }
    }

    #[test]
    fn single_rounding_hand_cases() {
        // 932 · 0.7892 / 64 = 11.4923: two roundings give 735.51 → 736, then
        // 736 / 64 = 11.5 → 12; one rounding gives 11.
        let (m, shift) = (1_694_734_064, -6);
        assert_eq!(multiply_by_quantized_multiplier(932, m, shift), 12);
        assert_eq!(multiply_by_quantized_multiplier_single(932, m, shift), 11);
        assert_eq!(QuantizedMultiplier::new(m, shift).apply_single(932), 11);
        // Ties go up (toward +∞): 0.5 · 5 = 2.5 → 3, 0.5 · −5 = −2.5 → −2.
        assert_eq!(multiply_by_quantized_multiplier_single(5, 1 << 30, 0), 3);
        assert_eq!(multiply_by_quantized_multiplier_single(-5, 1 << 30, 0), -2);
        // A left shift: 7 · 0.75 · 2 = 10.5 → 11.
        let three_quarters = (0.75f64 * (1u64 << 31) as f64).round() as i32;
        assert_eq!(multiply_by_quantized_multiplier_single(7, three_quarters, 1), 11);
    }

    #[test]
    fn a_negative_multiplier_is_taken_as_zero() {
        for x in [i32::MIN, -5, 0, 7, i32::MAX] {
            assert_eq!(QuantizedMultiplier::new(i32::MIN, 0).apply(x), 0);
            assert_eq!(QuantizedMultiplier::new(-3, -4).apply(x), 0);
        }
    }

    proptest::proptest! {
        #[test]
        fn precomputed_multiplier_is_bit_identical(x: i32, m in 0..=i32::MAX, shift in -31i32..=30) {
            proptest::prop_assert_eq!(QuantizedMultiplier::new(m, shift).apply(x), multiply_by_quantized_multiplier(x, m, shift));
        }

        #[test]
        fn bounded_is_the_result_held_within_two_to_the_thirty(x: i32, m in 0..=i32::MAX, shift in -31i32..=30) {
            let q = QuantizedMultiplier::new(m, shift);
            let hold = |v: i32| v.clamp(-(1 << 30), (1 << 30) - 1);
            proptest::prop_assert_eq!(q.apply_bounded::<false>(x), hold(q.apply(x)));
            proptest::prop_assert_eq!(q.apply_bounded::<true>(x), hold(q.apply_single(x)));
        }

        #[test]
        fn precomputed_single_rounding_is_bit_identical(x: i32, m in 0..=i32::MAX, shift in -31i32..=30) {
            proptest::prop_assert_eq!(
                QuantizedMultiplier::new(m, shift).apply_single(x),
                multiply_by_quantized_multiplier_single(x, m, shift)
            );
        }

        #[test]
        fn single_rounding_is_the_nearest_integer(x in -1_000_000i32..1_000_000, q in 0.5f64..1.0, shift in -20i32..2) {
            let m = (q * (1u64 << 31) as f64).round().min(i32::MAX as f64) as i32;
            let real = x as f64 * (m as f64 / (1u64 << 31) as f64) * 2f64.powi(shift);
            let got = multiply_by_quantized_multiplier_single(x, m, shift);
            proptest::prop_assert!((got as f64 - real).abs() <= 0.5 + 1e-9, "x={x} m={m} shift={shift} got={got} real={real}");
        }

        #[test]
        fn precomputed_multiplier_small_values(x in -70_000i32..70_000, m in (1i32 << 30)..=i32::MAX, shift in -31i32..=2) {
            proptest::prop_assert_eq!(QuantizedMultiplier::new(m, shift).apply(x), multiply_by_quantized_multiplier(x, m, shift));
        }

        #[test]
        fn matches_real_multiplication(x in -1_000_000i32..1_000_000, q in 0.5f64..1.0, shift in -20i32..2) {
            let m = (q * (1u64 << 31) as f64).round().min(i32::MAX as f64) as i32;
            let real = x as f64 * (m as f64 / (1u64 << 31) as f64) * 2f64.powi(shift);
            let got = multiply_by_quantized_multiplier(x, m, shift);
            // Two roundings (high mul, then shift) stay within one unit.
            proptest::prop_assert!((got as f64 - real).abs() <= 1.0, "x={x} m={m} shift={shift} got={got} real={real}");
        }
    }
}
