//! Int8 softmax over the last axis, TensorFlow Lite's integer algorithm
//! (its reference kernel, which TFLite Micro and CMSIS-NN's
//! `arm_softmax_s8` compute bit for bit): no float, no table.
//!
//! Per row of `depth` values: `d = x − max(row)`; where `d ≥ diff_min`,
//! `d` is rescaled by `β · s_in` (a Q31 multiplier and a left shift, fixed
//! at quantization) into a Q5.26 number, `exp(d)` is evaluated in Q0.31 by
//! gemmlowp's polynomial on `[−1/4, 0)` and barrel shifter of constant
//! factors, and the exponentials are summed in Q12.19. The output is
//! `exp(d) / Σ exp` in steps of 1/256 with zero point −128, through a
//! Newton–Raphson reciprocal of the sum; values below `diff_min` give −128.
//!
//! The record: `params[0]` = `depth`; one channel-table entry holding
//! `diff_min` (bias field), the multiplier and the left shift; output
//! scale 1/256, zero point −128 (TFLite's int8 softmax output).

use super::{ChannelQuant, ChannelTable};
use crate::error::Error;
use crate::model::Layer;
use crate::ops::Operator;
use crate::requant::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul as mul};

/// Integer bits of the rescaled differences (Q5.26).
const DIFF_INTEGER_BITS: u32 = 5;
/// Integer bits of the sum of exponentials (Q12.19).
const SUM_INTEGER_BITS: u32 = 12;
/// Longest row: a longer one can overflow the Q12.19 sum (`exp(0)` is 1).
pub const MAX_DEPTH: usize = (1 << SUM_INTEGER_BITS) - 1;
/// Output zero point of TFLite's int8 softmax (scale 1/256).
pub const OUTPUT_ZERO_POINT: i32 = -128;

/// A softmax layer, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxStep {
    /// Values per row (the last axis).
    pub depth: usize,
    /// `β · s_in · 2^26` as a Q31 multiplier and a left shift.
    pub multiplier: i32,
    pub left_shift: i32,
    /// Differences below this (≤ 0) are taken as `exp = 0`.
    pub diff_min: i32,
}

/// `x · 2^exponent` saturated to int32 (gemmlowp's
/// `SaturatingRoundingMultiplyByPOT` for a positive exponent).
#[inline(always)]
fn saturating_shift_left(x: i32, exponent: u32) -> i32 {
    let threshold = (1i32 << (31 - exponent)) - 1;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << exponent
    }
}

/// `exp(a)` for `a` in `[−1/4, 0)`, Q0.31 in and out: Taylor around −1/8.
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const EXP_MINUS_ONE_EIGHTH: i32 = 1_895_147_668;
    const ONE_THIRD: i32 = 715_827_883;
    let x = a.wrapping_add(1 << 28);
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let poly = rounding_divide_by_pot(mul(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2), 1);
    EXP_MINUS_ONE_EIGHTH.wrapping_add(mul(EXP_MINUS_ONE_EIGHTH, x.wrapping_add(poly)))
}

/// `exp(a)` for `a ≤ 0` in Q5.26, as Q0.31 (gemmlowp's
/// `exp_on_negative_values` with 5 integer bits).
pub(crate) fn exp_on_negative_values(a: i32) -> i32 {
    const FRACTIONAL_BITS: u32 = 31 - DIFF_INTEGER_BITS;
    let one_quarter = 1i32 << (FRACTIONAL_BITS - 2);
    let a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter;
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(saturating_shift_left(
        a_mod_quarter_minus_one_quarter,
        DIFF_INTEGER_BITS,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    // exp(−2^k) for k = −2..=4, applied for each bit of the remainder.
    const FACTORS: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    for (exponent, factor) in FACTORS {
        if remainder & (1 << (FRACTIONAL_BITS as i32 + exponent)) != 0 {
            result = mul(result, factor);
        }
    }
    if a == 0 { i32::MAX } else { result }
}

/// `1 / (1 + a)` for `a` in `[0, 1)`, Q0.31 in and out: three
/// Newton–Raphson steps in Q2.29 (gemmlowp's
/// `one_over_one_plus_x_for_x_in_0_1`).
fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    const FORTY_EIGHT_OVER_SEVENTEEN: i32 = 1_515_870_810;
    const MINUS_THIRTY_TWO_OVER_SEVENTEEN: i32 = -1_010_580_540;
    const ONE_Q2: i32 = 1 << 29;
    // (a + 1) / 2, rounded half away from zero.
    let sum = a as i64 + i32::MAX as i64;
    let half_denominator = ((sum + if sum >= 0 { 1 } else { -1 }) / 2) as i32;
    let mut x = FORTY_EIGHT_OVER_SEVENTEEN.wrapping_add(mul(half_denominator, MINUS_THIRTY_TWO_OVER_SEVENTEEN));
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x);
        let one_minus = ONE_Q2.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(saturating_shift_left(mul(x, one_minus), 2));
    }
    saturating_shift_left(x, 1)
}

/// The reciprocal of a Q12.19 sum as a Q0.31 scale and the number of bits
/// the sum has above 1.0 (TFLite's `GetReciprocal`).
fn reciprocal(sum: i32) -> (i32, u32) {
    let headroom_plus_one = (sum as u32).leading_zeros();
    let bits_over_unit = SUM_INTEGER_BITS.saturating_sub(headroom_plus_one);
    let shifted_minus_one = ((sum as u32).wrapping_shl(headroom_plus_one)).wrapping_sub(1 << 31) as i32;
    (one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), bits_over_unit)
}

/// `x − max`, rescaled into Q5.26, or `None` below `diff_min`.
#[inline(always)]
fn scaled_diff(s: &SoftmaxStep, diff: i32) -> Option<i32> {
    (diff >= s.diff_min).then(|| mul(diff.wrapping_mul(1 << s.left_shift), s.multiplier))
}

/// Int8 softmax of `input` (rows of `s.depth` values) into `output`.
/// Writes nothing if the lengths disagree with the step.
pub fn softmax(s: &SoftmaxStep, input: &[i8], output: &mut [i8]) {
    if s.depth == 0 || s.depth > MAX_DEPTH || input.len() != output.len() || input.len() % s.depth != 0 {
        return;
    }
    if !(0..=30).contains(&s.left_shift) {
        return;
    }
    for (row, out) in input.chunks_exact(s.depth).zip(output.chunks_exact_mut(s.depth)) {
        let max = row.iter().copied().max().unwrap_or(0) as i32;
        let mut sum = 0i32;
        for &v in row {
            if let Some(d) = scaled_diff(s, v as i32 - max) {
                sum = sum.wrapping_add(rounding_divide_by_pot(exp_on_negative_values(d), SUM_INTEGER_BITS));
            }
        }
        let (scale, bits_over_unit) = reciprocal(sum);
        let exponent = (bits_over_unit + 31 - 8).min(31);
        for (y, &v) in out.iter_mut().zip(row) {
            *y = match scaled_diff(s, v as i32 - max) {
                Some(d) => {
                    let unsaturated = rounding_divide_by_pot(mul(scale, exp_on_negative_values(d)), exponent);
                    (unsaturated + OUTPUT_ZERO_POINT).clamp(-128, 127) as i8
                }
                None => i8::MIN,
            };
        }
    }
}

/// The softmax operator ([`crate::format::Op::Softmax`]).
#[derive(Debug, Clone, Copy)]
pub struct Softmax;

impl Operator for Softmax {
    type Step<'a, C: ChannelTable> = SoftmaxStep;

    fn validate(l: &Layer) -> Result<(), Error> {
        let depth = l.params[0] as usize;
        if depth == 0 || depth > MAX_DEPTH {
            return Err(Error::Malformed("softmax depth is 0 or more than 4095"));
        }
        if l.params[1..].iter().any(|&p| p != 0) {
            return Err(Error::Malformed("softmax parameters 1..12 must be 0"));
        }
        if l.input_len % depth != 0 || l.output_len != l.input_len {
            return Err(Error::Malformed("softmax lengths are not whole rows of its depth"));
        }
        if l.weights_len != 0 || l.channel_count != 1 {
            return Err(Error::Malformed("softmax has weights or not one channel entry"));
        }
        if l.output.zero_point != OUTPUT_ZERO_POINT {
            return Err(Error::Malformed("softmax output zero point is not -128"));
        }
        Ok(())
    }

    fn decode<'a>(l: &Layer, _: &'a [i8], channels: &'a [u8]) -> Result<SoftmaxStep, Error> {
        let q = ChannelQuant::read(channels, 0).ok_or(Error::Malformed("channel table out of bounds"))?;
        let step =
            SoftmaxStep { depth: l.params[0].into(), multiplier: q.multiplier, left_shift: q.shift, diff_min: q.bias };
        // Every difference at or above `diff_min` must shift without overflow.
        let widest = (step.diff_min as i64) << step.left_shift.clamp(0, 31);
        if !(0..=30).contains(&step.left_shift) || step.diff_min > 0 || widest < i32::MIN as i64 {
            return Err(Error::Malformed("softmax multiplier, shift or diff_min out of range"));
        }
        Ok(step)
    }

    #[inline(always)]
    fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
        s: &SoftmaxStep,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error> {
        softmax(s, input, output);
        Ok(())
    }

    fn channels<C: ChannelTable>(_: &SoftmaxStep) -> Option<C> {
        None
    }

    fn with_channels<'a, C: ChannelTable, D: ChannelTable>(s: Self::Step<'a, C>, _: D) -> Self::Step<'a, D> {
        s
    }

    #[cfg(feature = "codegen")]
    fn source(
        s: &SoftmaxStep,
        _: &Layer,
        krate: &str,
        _: &mut dyn FnMut(&[i8]) -> alloc::string::String,
    ) -> alloc::string::String {
        alloc::format!(
            "{krate}::kernels::softmax::SoftmaxStep {{ depth: {}, multiplier: {}, left_shift: {}, diff_min: {} }}",
            s.depth,
            s.multiplier,
            s.left_shift,
            s.diff_min
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// TFLite's `PreprocessSoftmaxScaling` and `CalculateInputRadius` for
    /// `β · s_in`, as the host computes them.
    fn step(depth: usize, beta_scale: f64) -> SoftmaxStep {
        let real = (beta_scale * (1u64 << (31 - DIFF_INTEGER_BITS)) as f64).min(i32::MAX as f64);
        let mut shift = real.log2().floor() as i32 + 1;
        let mut q = (real / 2f64.powi(shift) * (1u64 << 31) as f64).round() as i64;
        if q == 1 << 31 {
            q /= 2;
            shift += 1;
        }
        let radius = (((1 << DIFF_INTEGER_BITS) - 1) as f64 * (1u64 << (31 - DIFF_INTEGER_BITS)) as f64
            / (1u64 << shift) as f64)
            .floor() as i32;
        SoftmaxStep { depth, multiplier: q as i32, left_shift: shift, diff_min: -radius }
    }

    fn float_softmax(row: &[i8], beta_scale: f64) -> Vec<f64> {
        let max = *row.iter().max().unwrap() as f64;
        let e: Vec<f64> = row.iter().map(|&v| ((v as f64 - max) * beta_scale).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    #[test]
    fn exp_hand_cases() {
        // exp(0) = 1 (saturated Q0.31), exp(−1) and exp(−1/4) within 1e−6.
        assert_eq!(exp_on_negative_values(0), i32::MAX);
        let q26 = |x: f64| (x * (1 << 26) as f64) as i32;
        for x in [-0.25, -1.0, -2.5, -7.0, -20.0] {
            let got = exp_on_negative_values(q26(x)) as f64 / 2f64.powi(31);
            assert!((got - x.exp()).abs() < 1e-6, "exp({x}) = {got}");
        }
    }

    #[test]
    fn reciprocal_hand_cases() {
        // 1 / (1 + 0.5) and 1 / (1 + 0) in Q0.31.
        let got = one_over_one_plus_x_for_x_in_0_1(1 << 30) as f64 / 2f64.powi(31);
        assert!((got - 2.0 / 3.0).abs() < 1e-8, "{got}");
        assert!(one_over_one_plus_x_for_x_in_0_1(0) >= i32::MAX - 1);
    }

    #[test]
    fn equal_inputs_share_the_probability() {
        // Four equal logits: 1/4 each = 64 steps of 1/256 above −128.
        let s = step(4, 0.1);
        let mut y = [0i8; 4];
        softmax(&s, &[7, 7, 7, 7], &mut y);
        assert_eq!(y, [-64; 4]);
        // One logit far above the others takes it all (255/256 at most: 127).
        let s = step(3, 0.1);
        let mut y = [0i8; 3];
        softmax(&s, &[127, -128, -128], &mut y);
        assert_eq!(y, [127, -128, -128]);
    }

    #[test]
    fn rows_are_independent_and_bad_lengths_write_nothing() {
        let s = step(2, 0.05);
        let mut y = [0i8; 4];
        softmax(&s, &[1, 1, 50, -50], &mut y);
        assert_eq!(&y[..2], &[0, 0]);
        assert!(y[2] > y[3]);
        let mut y = [5i8; 3];
        softmax(&s, &[1, 2, 3], &mut y);
        assert_eq!(y, [5; 3]);
    }

    proptest! {
        /// Within one step of the exact probabilities (β · s_in from tiny
        /// to large, rows of 1 to 64 values).
        #[test]
        fn close_to_the_real_softmax(
            row in proptest::collection::vec(any::<i8>(), 1..64),
            beta_scale in 0.001f64..2.0,
        ) {
            let s = step(row.len(), beta_scale);
            let mut y = vec![0i8; row.len()];
            softmax(&s, &row, &mut y);
            for (got, p) in y.iter().zip(float_softmax(&row, beta_scale)) {
                let want = (p * 256.0 - 128.0).round().clamp(-128.0, 127.0);
                prop_assert!((*got as f64 - want).abs() <= 1.0, "{got} vs {want} (p = {p})");
            }
        }
    }
}
