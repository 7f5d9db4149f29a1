//! Post-training int8 quantization to the TFLite spec:
//! per-output-channel symmetric int8 weights, per-tensor asymmetric int8
//! activations, int32 bias at `s_in · s_w`, Q31 requantization multipliers.
//! Activation ranges come from [`calibration`].

pub mod calibration;

pub use calibration::{calibrate, calibrate_resolved};
pub mod qat;

use anyhow::{Result, bail};
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::{Activation, Op, layer};
use tinykd_runtime::kernels::{ChannelQuant, Clamp};

use crate::export::tkd::{TkdLayer, TkdModel};
use crate::student::layer::DeviceWeights;
use crate::student::{Device, Layer, Student};

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

/// A weighted layer with what is fused into it on the device.
pub(super) struct Fused<'a> {
    /// Weights in the device layout and bias, BatchNorm folded in.
    weights: DeviceWeights,
    activation: Activation,
    layer: &'a Layer,
    /// Index of the activation (in `Student::activations`) that is this op's output.
    output_act: usize,
}

/// Folds a following BatchNorm and picks up a following activation.
pub(super) fn fuse(student: &Student, i: usize) -> Result<(Fused<'_>, usize)> {
    let layer = &student.layers[i];
    // The layout the device feeds this layer: a layer that is nothing on the
    // device (flatten, dropout) in between changes nothing, so look through them.
    let mut k = i;
    while k > 0 && student.layers[k - 1].device() == Device::Nothing {
        k -= 1;
    }
    let in_shape = student.shapes[k];
    let Some(mut f) = layer.kind().device_weights(in_shape) else {
        bail!("layer {i} ({layer:?}) has no weights to quantize")
    };
    let mut j = i + 1;
    if let Some((a, b)) = student.layers.get(j).and_then(|l| l.kind().folded_affine()) {
        let per_channel = f.per_channel;
        for (o, (scale, shift)) in a.iter().zip(&b).enumerate() {
            f.weights[o * per_channel..(o + 1) * per_channel].iter_mut().for_each(|w| *w *= scale);
            f.bias[o] = f.bias[o] * scale + shift;
        }
        j += 1;
    }
    let activation = match student.layers.get(j).map(Layer::device) {
        Some(Device::Activation(a)) => {
            j += 1;
            a
        }
        _ => Activation::None,
    };
    Ok((Fused { weights: f, activation, layer, output_act: j }, j))
}

fn clamp_for(activation: Activation, out: QuantParams) -> Clamp {
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
/// the input, then one per weighted layer's output (as [`calibrate`] lists
/// them). Weights and biases are quantized from the current float values.
pub fn quantize_with_params(student: &Student, params: &[QuantParams], g: Scheme) -> Result<TkdModel> {
    let Some(&input) = params.first() else { bail!("no quantization parameters for the input") };
    let mut next_params = params[1..].iter().copied();
    let mut layers = Vec::new();
    let mut in_params = input;
    let mut i = 0;
    while i < student.layers.len() {
        let [c, h, w] = student.shapes[i];
        let input_len = c * h * w;
        let layer = &student.layers[i];
        match layer.device() {
            Device::Weighted => {
                let Some(out) = next_params.next() else {
                    bail!("no quantization parameters for the output of layer {i}")
                };
                let (layer, next) = weighted_layer(student, i, in_params, out, g)?;
                layers.push(layer);
                in_params = out;
                i = next;
            }
            Device::Unweighted => {
                let Some((op, params)) = layer.kind().device_op(student.shapes[i])? else {
                    bail!("layer {i} ({layer:?}) has no operator on the device")
                };
                let output_len = student.shapes[i + 1].iter().product();
                layers.push(pass_through(op, params, input_len, output_len, in_params));
                i += 1;
            }
            Device::Nothing => i += 1,
            Device::Folded | Device::Activation(_) => {
                bail!("layer {i} ({layer:?}) cannot be quantized on its own: it must follow a dense or conv layer")
            }
        }
    }
    let output = layers.last().map(|l| l.output).unwrap_or(input);
    Ok(TkdModel {
        input_shape: student.input_shape.clone(),
        input,
        output,
        classes: student.classes,
        layers,
        data_channels_last: false,
        single_rounding: g.rounding == Rounding::Single,
    })
}

/// The weighted layer `i` with what is fused into it, quantized: int8
/// weights, and per channel the int32 bias and requantization multiplier.
/// Returns the layer and the index of the first layer after the fused ones.
fn weighted_layer(
    student: &Student,
    i: usize,
    in_params: QuantParams,
    out: QuantParams,
    g: Scheme,
) -> Result<(TkdLayer, usize)> {
    let (f, next) = fuse(student, i)?;
    let in_shape = student.shapes[i];
    let DeviceWeights { weights, bias, per_channel, folds_input_zero_point } = &f.weights;
    let channels = bias.len();
    let mut q_weights = Vec::with_capacity(weights.len());
    let mut table = Vec::with_capacity(channels);
    let mut weight_scales = Vec::with_capacity(channels);
    let scales = layer_weight_scales(weights, *per_channel, g.weight_scales);
    for (o, &s_w) in scales.iter().enumerate() {
        let row = &weights[o * per_channel..(o + 1) * per_channel];
        let q_row: Vec<i8> = row.iter().map(|w| quantize_weight(*w, s_w)).collect();
        let acc_scale = in_params.scale as f64 * s_w as f64;
        let bias = quantize_bias(bias[o], acc_scale);
        // Fully connected folds −z_in·Σw into the bias (plain dot
        // product on the device); convolutions skip padded taps,
        // so they keep TFLite's plain bias and subtract z_in per tap.
        let stored = if *folds_input_zero_point {
            bias - in_params.zero_point as i64 * q_row.iter().map(|w| *w as i64).sum::<i64>()
        } else {
            bias
        };
        let stored =
            i32::try_from(stored).map_err(|_| anyhow::anyhow!("bias of layer {i} channel {o} overflows int32"))?;
        let (multiplier, shift) = quantize_multiplier(acc_scale / out.scale as f64);
        table.push(ChannelQuant { bias: stored, multiplier, shift });
        weight_scales.push(s_w);
        q_weights.extend(q_row);
    }
    let Some((op, params)) = f.layer.kind().device_op(in_shape)? else {
        bail!("layer {i} has no operator on the device")
    };
    let q_weights = f.layer.kind().device_layout(q_weights, in_shape);
    let layer = TkdLayer {
        op,
        activation: f.activation,
        clamp: clamp_for(f.activation, out),
        input_len: in_shape.iter().product(),
        output_len: student.shapes[next].iter().product(),
        params,
        input_zero_point: in_params.zero_point,
        output: out,
        weights: q_weights,
        channels: table,
        weight_scales,
        input: None,
        second: None,
    };
    Ok((layer, next))
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
fn pass_through(
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
        ] {
            let (err, agree) = int8_vs_float(spec, &shape, 10);
            assert!(err < 0.08, "{spec}: relative error {err}");
            assert!(agree > 0.85, "{spec}: argmax agreement {agree}");
        }
    }
}
