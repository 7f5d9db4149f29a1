//! Post-training int8 quantization to the TFLite spec:
//! per-output-channel symmetric int8 weights, per-tensor asymmetric int8
//! activations, int32 bias at `s_in · s_w`, Q31 requantization multipliers.
//! Activation ranges come from [`calibration`].

pub mod calibration;
mod lower;

pub use calibration::{calibrate, calibrate_resolved};
pub mod qat;

use anyhow::{Result, bail};
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::{Activation, Op, layer};
use tinykd_runtime::kernels::{ChannelQuant, Clamp};

use crate::export::tkd::{TkdLayer, TkdModel};
use crate::student::Student;

/// How activation ranges are taken from the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// Whichever of the three below keeps the int8 logits closest to the
    /// float student's on the calibration samples.
    #[default]
    Auto,
    /// The observed minimum and maximum.
    Minmax,
    /// The central 99.99 % of the observed values (rare extremes saturate).
    Percentile,
    /// The clip of the observed range with the least int8 round-trip error.
    Mse,
}

/// How many scales a layer's int8 weights get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WeightScales {
    /// One scale per output channel (TFLite's int8 default; most accurate).
    #[default]
    PerChannel,
    /// One scale for the whole layer, for runtimes and accelerators that take
    /// nothing else (e.g. microflow's fully connected layers).
    PerTensor,
}

/// How requantization rounds (see `tinykd_runtime::format::FLAG_SINGLE_ROUNDING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// TFLite Micro's and CMSIS-NN's two roundings: bit-exact with TFLite
    /// Micro (its default build) and the TFLite export.
    #[default]
    Tflm,
    /// One rounding (TFLite's `TFLITE_SINGLE_ROUNDING`), as desktop
    /// TFLite's optimised kernels and onnxruntime compute: the QDQ export
    /// then agrees with the device.
    Single,
}

/// The int8 scheme beyond the activation ranges: weight-scale granularity
/// and requantization rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scheme {
    pub weight_scales: WeightScales,
    pub rounding: Rounding,
}

impl From<WeightScales> for Scheme {
    fn from(weight_scales: WeightScales) -> Scheme {
        Scheme { weight_scales, ..Default::default() }
    }
}

/// The weight scale of each of a layer's output channels, `weights` being
/// `[out][per_channel]`: its own `max |w| / 127`, or the layer's.
pub(crate) fn layer_weight_scales(weights: &[f32], per_channel: usize, g: WeightScales) -> Vec<f32> {
    let rows = weights.chunks(per_channel.max(1));
    match g {
        WeightScales::PerChannel => rows.map(weight_scale).collect(),
        WeightScales::PerTensor => vec![weight_scale(weights); rows.len()],
    }
}

/// Splits a positive real multiplier into a Q31 mantissa and a power-of-two
/// exponent, as TFLite's `QuantizeMultiplier`: `real = m · 2^(shift − 31)`.
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if real <= 0.0 || !real.is_finite() {
        return (0, 0);
    }
    let mut shift = real.log2().floor() as i32 + 1;
    let mut q = real / 2f64.powi(shift); // in [0.5, 1)
    // Guard log2 rounding at exact powers of two.
    if q >= 1.0 {
        q /= 2.0;
        shift += 1;
    } else if q < 0.5 {
        q *= 2.0;
        shift -= 1;
    }
    let mut q_fixed = (q * (1u64 << 31) as f64).round() as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    if shift > 30 {
        return (i32::MAX, 30);
    }
    (q_fixed as i32, shift)
}

/// Asymmetric int8 parameters covering `[min, max]` (always including 0,
/// so that zero — padding, ReLU's floor — is exact).
pub fn activation_params(min: f32, max: f32) -> QuantParams {
    let (min, max) = (min.min(0.0), max.max(0.0));
    if max - min <= f32::EPSILON {
        return QuantParams { scale: 1.0, zero_point: 0 };
    }
    let scale = (max - min) / 255.0;
    let zp = (-128.0 - min / scale).round().clamp(-128.0, 127.0) as i32;
    QuantParams { scale, zero_point: zp }
}

/// Symmetric int8 scale of one output channel's weights: `max |w| / 127`
/// (1 for an all-zero row).
pub(crate) fn weight_scale(row: &[f32]) -> f32 {
    let max_abs = row.iter().fold(0f32, |a, w| a.max(w.abs()));
    if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 }
}

/// A weight in int8 steps of `s_w` (`[-127, 127]`).
pub(crate) fn quantize_weight(w: f32, s_w: f32) -> i8 {
    (w / s_w).round().clamp(-127.0, 127.0) as i8
}

/// A bias in int32 steps of the accumulator scale `s_in · s_w` (saturating).
pub(crate) fn quantize_bias(b: f32, acc_scale: f64) -> i64 {
    (b as f64 / acc_scale).round().clamp(i32::MIN as f64, i32::MAX as f64) as i64
}

/// Quantizes a real value with the runtime's own rounding.
pub fn quantize_value(x: f32, p: QuantParams) -> i8 {
    tinykd_runtime::quantize(x, p)
}

#[cfg(test)]
fn range(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

pub(crate) fn clamp_for(activation: Activation, out: QuantParams) -> Clamp {
    match activation {
        Activation::None => Clamp { min: -128, max: 127 },
        Activation::Relu => Clamp { min: out.zero_point.clamp(-128, 127) as i8, max: 127 },
        Activation::Relu6 => Clamp {
            min: out.zero_point.clamp(-128, 127) as i8,
            max: (out.zero_point + (6.0 / out.scale).round() as i32).clamp(-128, 127) as i8,
        },
    }
}

/// Quantizes a trained student, calibrating activation ranges on `calib`
/// (`n` samples, the data's layout).
pub fn quantize_student(student: &Student, calib: &[f32], n: usize, method: Calibration) -> Result<TkdModel> {
    Ok(quantize_student_ranges(student, calib, n, method, Scheme::default())?.0)
}

/// The activation parameters of calibrated ranges (as [`calibrate`] lists them).
pub fn range_params(ranges: &[calibration::TensorRange]) -> Vec<QuantParams> {
    ranges.iter().map(|r| activation_params(r.clip_min, r.clip_max)).collect()
}

/// [`quantize_student`], also returning each calibrated tensor's observed
/// and chosen range (the input first, then every weighted layer's output).
pub fn quantize_student_ranges(
    student: &Student,
    calib: &[f32],
    n: usize,
    method: Calibration,
    g: Scheme,
) -> Result<(TkdModel, Vec<calibration::TensorRange>)> {
    let ranges = calibrate(student, calib, n, method, g)?;
    Ok((quantize_with_params(student, &range_params(&ranges), g)?, ranges))
}

/// Quantizes `student` with fixed activation parameters: `params[0]` for
/// the input, then one per tensor [`calibrate`] lists. Weights and biases
/// are quantized from the current float values. A convolution whose
/// output only a residual addition reads is fused into it (the same
/// arithmetic, one tensor less in the arena).
pub fn quantize_with_params(student: &Student, params: &[QuantParams], g: Scheme) -> Result<TkdModel> {
    let mut m = lower::quantize_ops(student, params, g)?;
    crate::export::fuse::add_over_dying_inputs(&mut m.layers);
    crate::export::fuse::conv_add(&mut m.layers);
    Ok(m)
}

/// TFLite's int8 softmax parameters for an input at scale `input_scale`
/// and inverse temperature `beta` (`PreprocessSoftmaxScaling` and
/// `CalculateInputRadius`, 5 integer bits): the multiplier and left shift
/// of `β · s_in · 2^26`, and the smallest difference from a row's maximum
/// that still counts (`diff_min`).
pub fn softmax_params(input_scale: f32, beta: f64) -> Result<ChannelQuant> {
    const INTEGER_BITS: i32 = 5;
    let real = (beta * input_scale as f64 * (1u64 << (31 - INTEGER_BITS)) as f64).min(i32::MAX as f64);
    let (multiplier, left_shift) = quantize_multiplier(real);
    if !(real.is_finite() && real > 0.0 && (0..=30).contains(&left_shift)) {
        bail!(
            "softmax with β = {beta} on inputs at scale {input_scale} has no int8 form (β · scale · 2^26 = {real:e})"
        );
    }
    let radius =
        ((1i64 << INTEGER_BITS) - 1) as f64 * (1u64 << (31 - INTEGER_BITS)) as f64 / (1u64 << left_shift) as f64;
    Ok(ChannelQuant { bias: -(radius.floor() as i32), multiplier, shift: left_shift })
}

/// An int8 softmax over rows of `depth` values (`len` in all) quantized
/// with `input`, output at TFLite's scale 1/256 and zero point −128.
pub fn softmax_layer(input: QuantParams, len: usize, depth: usize, beta: f64) -> Result<TkdLayer> {
    if depth == 0 || !len.is_multiple_of(depth) {
        bail!("softmax over rows of {depth} does not divide {len} values");
    }
    let mut params = [0u16; layer::PARAM_COUNT];
    params[0] = crate::student::layer::u16p(depth, "softmax depth")?;
    Ok(TkdLayer {
        op: Op::Softmax,
        activation: Activation::None,
        clamp: Clamp { min: -128, max: 127 },
        input_len: len,
        output_len: len,
        params,
        input_zero_point: input.zero_point,
        output: QuantParams { scale: 1.0 / 256.0, zero_point: -128 },
        weights: Vec::new(),
        channels: vec![softmax_params(input.scale, beta)?],
        weight_scales: vec![beta as f32],
        input: None,
        second: None,
    })
}

/// TFLite's int8 addition parameters (`CalculateOpDataAdd`, 20 bits of
/// headroom) for inputs quantized as `a` and `b` into `output`: each
/// input's zero point with its multiplier to twice the larger input
/// scale, and the sum's multiplier to the output scale (see
/// `tinykd_runtime::kernels::add`).
pub fn add_entries(a: QuantParams, b: QuantParams, output: QuantParams) -> Result<[ChannelQuant; 3]> {
    let twice_max = 2.0 * (a.scale as f64).max(b.scale as f64);
    let real_out = twice_max / ((1u64 << tinykd_runtime::kernels::add::LEFT_SHIFT) as f64 * output.scale as f64);
    for (what, s) in [("first input", a.scale), ("second input", b.scale), ("output", output.scale)] {
        if !(s.is_finite() && s > 0.0) {
            bail!("add {what} scale {s} is not a positive number");
        }
    }
    for (what, z) in [("first input", a.zero_point), ("second input", b.zero_point), ("output", output.zero_point)] {
        if !(-128..=127).contains(&z) {
            bail!("add {what} zero point {z} is not int8");
        }
    }
    let entry = |zero_point: i32, real: f64| {
        let (multiplier, shift) = quantize_multiplier(real);
        ChannelQuant { bias: zero_point, multiplier, shift }
    };
    Ok([
        entry(a.zero_point, a.scale as f64 / twice_max),
        entry(b.zero_point, b.scale as f64 / twice_max),
        entry(0, real_out),
    ])
}

/// An int8 addition of two `len`-value tensors quantized as `a` and `b`,
/// the sum quantized as `output` and clamped to `clamp` (its fused
/// activation); tensors 0 and 1 until the caller wires it.
pub fn add_layer(
    a: QuantParams,
    b: QuantParams,
    output: QuantParams,
    len: usize,
    activation: Activation,
    clamp: Clamp,
) -> Result<TkdLayer> {
    Ok(TkdLayer {
        op: Op::Add,
        activation,
        clamp,
        input_len: len,
        output_len: len,
        params: [0; layer::PARAM_COUNT],
        input_zero_point: a.zero_point,
        output,
        weights: Vec::new(),
        channels: add_entries(a, b, output)?.to_vec(),
        weight_scales: vec![a.scale, b.scale, output.scale],
        input: None,
        second: None,
    })
}

/// A layer that keeps its input's quantization (pools).
pub(crate) fn pass_through(
    op: Op,
    params: [u16; layer::PARAM_COUNT],
    input_len: usize,
    output_len: usize,
    q: QuantParams,
) -> TkdLayer {
    TkdLayer {
        op,
        activation: Activation::None,
        clamp: Clamp { min: -128, max: 127 },
        input_len,
        output_len,
        params,
        input_zero_point: q.zero_point,
        output: q,
        weights: Vec::new(),
        channels: Vec::new(),
        weight_scales: Vec::new(),
        input: None,
        second: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_hand_cases() {
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        assert_eq!(quantize_multiplier(0.25), (1 << 30, -1));
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        assert_eq!(quantize_multiplier(0.75), (3 << 29, 0));
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        // Values just below a power of two round up into the next exponent.
        let (m, s) = quantize_multiplier(0.999_999_999_9);
        assert_eq!((m, s), (1 << 30, 1));
        for real in [1e-6, 3.3e-3, 0.0421, 0.9, 1.7, 12.5] {
            let (m, s) = quantize_multiplier(real);
            let back = m as f64 * 2f64.powi(s - 31);
            assert!((back / real - 1.0).abs() < 1e-9, "{real}: {m} {s}");
            assert!(m >= 1 << 30);
        }
    }

    /// A lone extreme input value (in a feature the student ignores)
    /// stretches min/max calibration's input range until most inputs share a
    /// few int8 steps; `auto` sees it in the logits and takes the method
    /// that clips it.
    #[test]
    fn auto_calibration_avoids_a_range_one_outlier_ruins() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut s = Student::from_spec("dense(16) relu dense(4)", &[12], 4, &mut rng).unwrap();
        // Feature 5 feeds nothing: the outlier changes no float logit.
        s.layers[0].params_mut()[0].chunks_mut(12).for_each(|row| row[5] = 0.0);
        let n = 4000;
        let mut x: Vec<f32> = (0..n * 12).map(|_| rng.random_range(-1.0..1.0)).collect();
        x[5] = 400.0;
        let float = s.forward(&x, n);
        let (auto, _) = calibrate_resolved(&s, &x, n, Calibration::Auto, Scheme::default()).unwrap();
        assert_ne!(auto, Calibration::Auto);
        let error = |m| {
            let (q, _) = quantize_student_ranges(&s, &x, n, m, Scheme::default()).unwrap();
            calibration::logit_error(&q, &x, n, &float).unwrap()
        };
        let (minmax, chosen) = (error(Calibration::Minmax), error(auto));
        assert_ne!(auto, Calibration::Minmax, "minmax error {minmax}");
        assert!(chosen < minmax / 4.0, "{auto:?}: {chosen} vs minmax {minmax}");
        for m in [Calibration::Mse, Calibration::Percentile] {
            assert!(chosen <= error(m), "{auto:?} {chosen} vs {m:?}");
        }
        // An explicit method is kept as it is.
        let (kept, _) = calibrate_resolved(&s, &x, n, Calibration::Minmax, Scheme::default()).unwrap();
        assert_eq!(kept, Calibration::Minmax);
    }

    #[test]
    fn activation_params_cover_zero_and_range() {
        let p = activation_params(0.0, 2.55);
        assert_eq!(p.zero_point, -128);
        assert!((p.scale - 0.01).abs() < 1e-7);
        let p = activation_params(-1.0, 1.0);
        assert_eq!(p.zero_point, -1); // -128 + 127.5 = -0.5, rounded half away from zero
        let p = activation_params(0.5, 0.5); // positive-only data still includes 0
        assert_eq!(p.zero_point, -128);
        assert_eq!(activation_params(0.0, 0.0), QuantParams { scale: 1.0, zero_point: 0 });
    }

    /// Runs a student in float and as int8 through the runtime; returns the
    /// largest logit error relative to the logit range, and the share of equal argmaxes.
    fn int8_vs_float(spec: &str, shape: &[usize], classes: usize) -> (f32, f64) {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let s = Student::from_spec(spec, shape, classes, &mut rng).unwrap();
        let len: usize = shape.iter().product();
        let n = 64;
        let x: Vec<f32> = (0..n * len).map(|i| ((i * 31 % 23) as f32 - 11.0) / 11.0).collect();
        let q = quantize_student(&s, &x, n, Calibration::Minmax).unwrap();
        let bytes = crate::export::tkd::encode(&q).unwrap();
        let (pred, logits) = crate::int8::run_int8(&bytes, &x, n).unwrap();
        let m = tinykd_runtime::Model::from_bytes(&bytes).unwrap();
        let float = s.forward(&x, n);
        let (lo, hi) = range(&float);
        let max_err = logits
            .iter()
            .zip(&float)
            .map(|(q, f)| (tinykd_runtime::dequantize(*q, m.output_quant()) - f).abs())
            .fold(0f32, f32::max);
        let fpred = crate::util::argmax_rows(&float, classes);
        let agree = pred.iter().zip(&fpred).filter(|(a, b)| a == b).count() as f64 / n as f64;
        (max_err / (hi - lo), agree)
    }

    #[test]
    fn quantized_dense_matches_float_closely() {
        let (err, _) = int8_vs_float("dense(16) relu dense(4)", &[8], 4);
        assert!(err < 0.05, "relative error {err}");
    }

    #[test]
    fn quantized_conv_students_match_float_closely() {
        for (spec, shape) in [
            ("conv1d(8,k5,s2) relu conv1d(16,k3,s2) relu gap dense(10)", vec![40]),
            ("conv1d(6,k3) bn relu maxpool(2) dwconv1d(k3,s2) relu6 avgpool(2) flatten dense(10)", vec![2, 24]),
            ("conv2d(4,k3) relu conv2d(8,k3,s2,valid) relu flatten dense(10)", vec![1, 8, 8]),
            ("conv2d(4,k3,s2) relu dwconv2d(k3) relu gap dense(10)", vec![3, 6, 6]),
            // Residual blocks: identity and projection shortcuts.
            ("conv2d(4,k3) bn relu res(conv2d(4,k3) bn relu conv2d(4,k3) bn) relu gap dense(10)", vec![3, 6, 6]),
            ("conv1d(4,k3) relu res(conv1d(8,k3,s2) relu conv1d(8,k3)) relu6 gap dense(10)", vec![2, 24]),
        ] {
            let (err, agree) = int8_vs_float(spec, &shape, 10);
            assert!(err < 0.08, "{spec}: relative error {err}");
            assert!(agree > 0.85, "{spec}: argmax agreement {agree}");
        }
    }
}
