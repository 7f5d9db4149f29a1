//! Post-training int8 quantization to the TFLite spec (DESIGN §6):
//! per-output-channel symmetric int8 weights, per-tensor asymmetric int8
//! activations, int32 bias at `s_in · s_w`, Q31 requantization multipliers.

use anyhow::{Result, bail};
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::{Activation, Op, layer};
use tinykd_runtime::kernels::{ChannelQuant, Clamp};

use crate::export::tkd::{TkdLayer, TkdModel};
use crate::student::{Layer, Student};

/// How activation ranges are taken from the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// The observed minimum and maximum.
    #[default]
    Minmax,
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

/// Quantizes a real value with the runtime's own rounding.
pub fn quantize_value(x: f32, p: QuantParams) -> i8 {
    tinykd_runtime::quantize(x, p)
}

fn range(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// Quantizes a trained student, calibrating activation ranges on `calib`
/// (`n` samples).
pub fn quantize_student(student: &Student, calib: &[f32], n: usize, _method: Calibration) -> Result<TkdModel> {
    if n == 0 {
        bail!("the calibration set is empty");
    }
    let (lo, hi) = range(calib);
    let input = activation_params(lo, hi);
    let block_outs = student.block_outputs(calib, n);

    let mut layers = Vec::new();
    let mut in_params = input;
    let mut block = 0;
    let mut iter = student.layers.iter().peekable();
    while let Some(l) = iter.next() {
        let Layer::Dense(d) = l else { continue };
        // The activation fused into this dense layer, if the next
        // non-structural layer is one.
        let activation = loop {
            match iter.peek() {
                Some(Layer::Dropout { .. } | Layer::Flatten) => {
                    iter.next();
                }
                Some(Layer::Relu) => {
                    iter.next();
                    break Activation::Relu;
                }
                Some(Layer::Relu6) => {
                    iter.next();
                    break Activation::Relu6;
                }
                _ => break Activation::None,
            }
        };
        let (olo, ohi) = range(&block_outs[block]);
        let out = activation_params(olo, ohi);
        let clamp = match activation {
            Activation::None => Clamp { min: -128, max: 127 },
            Activation::Relu => Clamp { min: out.zero_point.clamp(-128, 127) as i8, max: 127 },
            Activation::Relu6 => Clamp {
                min: out.zero_point.clamp(-128, 127) as i8,
                max: (out.zero_point + (6.0 / out.scale).round() as i32).clamp(-128, 127) as i8,
            },
        };
        let mut weights = Vec::with_capacity(d.weight.len());
        let mut channels = Vec::with_capacity(d.outputs);
        let mut weight_scales = Vec::with_capacity(d.outputs);
        for o in 0..d.outputs {
            let row = &d.weight[o * d.inputs..(o + 1) * d.inputs];
            let max_abs = row.iter().fold(0f32, |a, w| a.max(w.abs()));
            let s_w = if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 };
            let q_row: Vec<i8> = row.iter().map(|w| (w / s_w).round().clamp(-127.0, 127.0) as i8).collect();
            let acc_scale = in_params.scale as f64 * s_w as f64;
            let bias = (d.bias[o] as f64 / acc_scale).round().clamp(i32::MIN as f64, i32::MAX as f64) as i64;
            let row_sum: i64 = q_row.iter().map(|w| *w as i64).sum();
            // Fold −z_in·Σw into the bias so the kernel's inner loop is a plain dot product.
            let folded = bias - in_params.zero_point as i64 * row_sum;
            let folded = i32::try_from(folded)
                .map_err(|_| anyhow::anyhow!("bias of layer {block} output {o} overflows int32"))?;
            let (multiplier, shift) = quantize_multiplier(acc_scale / out.scale as f64);
            channels.push(ChannelQuant { bias: folded, multiplier, shift });
            weight_scales.push(s_w);
            weights.extend(q_row);
        }
        let mut params = [0u16; layer::PARAM_COUNT];
        params[0] = u16::try_from(d.inputs)?;
        params[1] = u16::try_from(d.outputs)?;
        layers.push(TkdLayer {
            op: Op::FullyConnected,
            activation,
            clamp,
            input_len: d.inputs,
            output_len: d.outputs,
            params,
            input_zero_point: in_params.zero_point,
            output: out,
            weights,
            channels,
            weight_scales,
        });
        in_params = out;
        block += 1;
    }
    let output = layers.last().map(|l| l.output).unwrap_or(input);
    Ok(TkdModel { input_shape: student.input_shape.clone(), input, output, classes: student.classes, layers })
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

    #[test]
    fn quantized_dense_matches_float_closely() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let s = Student::from_spec("dense(16) relu dense(4)", &[8], 4, &mut rng).unwrap();
        let n = 64;
        let x: Vec<f32> = (0..n * 8).map(|i| ((i * 31 % 23) as f32 - 11.0) / 11.0).collect();
        let q = quantize_student(&s, &x, n, Calibration::Minmax).unwrap();
        let bytes = crate::export::tkd::encode(&q).unwrap();
        let m = tinykd_runtime::Model::from_bytes(&bytes).unwrap();
        let float = s.forward(&x, n);
        let mut arena = vec![0u8; m.arena_bytes()];
        let mut max_err = 0f32;
        for i in 0..n {
            let qi: Vec<i8> = x[i * 8..(i + 1) * 8].iter().map(|v| quantize_value(*v, m.input_quant())).collect();
            let out = m.run(&qi, &mut arena).unwrap();
            for (c, v) in out.iter().enumerate() {
                let real = tinykd_runtime::dequantize(*v, m.output_quant());
                max_err = max_err.max((real - float[i * 4 + c]).abs());
            }
        }
        let (lo, hi) = range(&float);
        assert!(max_err < 0.05 * (hi - lo), "max error {max_err} on a range of {}", hi - lo);
    }
}
