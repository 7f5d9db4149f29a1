//! Activation ranges from a calibration set: the observed min/max, a
//! percentile clip, or the clip that minimises the int8 quantization error.
//!
//! Clipping trades the rare extreme values (saturated) for a finer step on
//! the common ones. `percentile` keeps the central 99.99 % of the values;
//! `mse` tries shrinking the observed range in steps and keeps the one with
//! the least mean squared error between the values and their int8 round
//! trip (saturation included), on up to 65,536 evenly spaced values.

use anyhow::{Result, bail};

use super::lower::{OpKind, lower};
use super::{Calibration, Scheme, activation_params, quantize_with_params, range_params};
use crate::export::tkd::TkdModel;
use crate::student::{Layer, Student};

/// Share of values `percentile` keeps inside the range (split over both tails).
const PERCENTILE_KEEP: f64 = 0.9999;
/// Values the MSE search evaluates at most (evenly spaced through the tensor).
const MSE_SAMPLE: usize = 65_536;
/// Candidate clips: the observed range scaled by 1, 0.98, …, 0.70. The
/// floor matters: post-ReLU activations are mostly small, so their MSE keeps
/// falling as the range shrinks to a third, while the rare large values it
/// saturates are the ones that carry the signal through max pools (measured:
/// a 0.30 floor took the digits CNN from 97.8 % to 81.6 %; 0.70 keeps it,
/// and MNIST-1D gains 0.1 pt).
const MSE_STEPS: usize = 16;

/// The range of every tensor [`quantize_with_params`] needs parameters for:
/// the input, then the output of each device operator that computes new
/// values (a weighted layer with what fuses into it, a residual block's
/// projection and addition), chosen by `method` on `n` calibration samples.
pub fn calibrate(
    student: &Student,
    calib: &[f32],
    n: usize,
    method: Calibration,
    g: Scheme,
) -> Result<Vec<TensorRange>> {
    Ok(calibrate_resolved(student, calib, n, method, g)?.1)
}

/// [`calibrate`], also naming the concrete method used: `method` itself, or
/// what `auto` stands for on this student and calibration set — each
/// method's int8 student runs the calibration samples through the runtime,
/// and the one whose dequantized logits stay closest to the float student's
/// (least mean squared difference) wins; ties keep the earlier of minmax,
/// mse, percentile. One pass of float activations serves every method.
///
/// Why the logits and not each tensor's own error: a clip that lowers one
/// tensor's error can still cost the output (a saturated pre-pool peak), and
/// the logits are what the argmax reads. (min/max lost 0.7 pt on the
/// MNIST-1D α = 0 baseline, where the clipping methods lost none; README.)
pub fn calibrate_resolved(
    student: &Student,
    calib: &[f32],
    n: usize,
    method: Calibration,
    g: Scheme,
) -> Result<(Calibration, Vec<TensorRange>)> {
    if n == 0 {
        bail!("the calibration set is empty");
    }
    let acts = student.activations(calib, n);
    if method != Calibration::Auto {
        return Ok((method, ranges_from(student, &acts, method)?));
    }
    // The last activation is the float student's output.
    let float_logits = acts.last().map_or(&[][..], |a| a.as_slice());
    let mut best: Option<(f64, Calibration, Vec<TensorRange>)> = None;
    for method in [Calibration::Minmax, Calibration::Mse, Calibration::Percentile] {
        let ranges = ranges_from(student, &acts, method)?;
        let q = quantize_with_params(student, &range_params(&ranges), g)?;
        let err = logit_error(&q, calib, n, float_logits)?;
        if best.as_ref().is_none_or(|(e, _, _)| err < *e) {
            best = Some((err, method, ranges));
        }
    }
    best.map(|(_, method, ranges)| (method, ranges)).ok_or_else(|| anyhow::anyhow!("no calibration method to try"))
}

/// The ranges a concrete `method` picks from the student's float
/// activations (`Student::activations` on the calibration set).
fn ranges_from(student: &Student, acts: &[Vec<f32>], method: Calibration) -> Result<Vec<TensorRange>> {
    let ops = lower(student)?;
    let calibrated: Vec<_> = ops.iter().filter(|o| o.kind != OpKind::Unweighted).collect();
    let mut ranges = vec![choose(&acts[0], method)];
    for (k, op) in calibrated.iter().enumerate() {
        // The logits are never clipped: saturated logits tie, and the
        // argmax then picks the first of them, not the largest.
        let method = if k + 1 == calibrated.len() { Calibration::Minmax } else { method };
        let values = match (op.output_act, &student.layers[op.layer]) {
            (Some(a), _) => std::borrow::Cow::Borrowed(&acts[a]),
            (None, Layer::Add(add)) => {
                let Some(p) = &add.projection else { bail!("layer {} has no projection", op.layer) };
                let n = acts[op.input_act].len() / p.in_shape.iter().product::<usize>().max(1);
                std::borrow::Cow::Owned(p.forward(&acts[op.input_act], n))
            }
            (None, l) => bail!("layer {} ({l:?}) computes no activation", op.layer),
        };
        ranges.push(choose(&values, method));
    }
    Ok(ranges)
}

/// Mean squared difference between `q`'s dequantized int8 logits (run by
/// the runtime) and `float_logits` on `n` channels-first samples.
pub(super) fn logit_error(q: &TkdModel, x: &[f32], n: usize, float_logits: &[f32]) -> Result<f64> {
    let bytes = crate::export::tkd::encode(q)?;
    let model = crate::int8::parse(&bytes)?;
    let inputs = crate::int8::quantize_inputs(&model, x);
    let (_, logits) = crate::int8::run_quantized(&model, &inputs, n)?;
    let p = model.output_quant();
    let sum: f64 = logits
        .iter()
        .zip(float_logits)
        .map(|(&q, &f)| (((q as i32 - p.zero_point) as f32 * p.scale - f) as f64).powi(2))
        .sum();
    Ok(sum / logits.len().max(1) as f64)
}

/// One activation tensor's observed range and the range `method` chose.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TensorRange {
    pub min: f32,
    pub max: f32,
    pub clip_min: f32,
    pub clip_max: f32,
}

/// The range to quantize `values` with.
pub fn choose(values: &[f32], method: Calibration) -> TensorRange {
    let (min, max) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    if values.is_empty() {
        return TensorRange { min: 0.0, max: 0.0, clip_min: 0.0, clip_max: 0.0 };
    }
    let (clip_min, clip_max) = match method {
        // `calibrate` resolves `Auto` on the logits first; a lone tensor
        // has nothing better than its observed range.
        Calibration::Minmax | Calibration::Auto => (min, max),
        Calibration::Percentile => percentile(values),
        Calibration::Mse => mse(values, min, max),
    };
    TensorRange { min, max, clip_min, clip_max }
}

/// The (1 − keep)/2 and (1 + keep)/2 quantiles (nearest rank).
fn percentile(values: &[f32]) -> (f32, f32) {
    let mut v = values.to_vec();
    let n = v.len();
    let tail = ((n as f64) * (1.0 - PERCENTILE_KEEP) / 2.0).floor() as usize;
    let (lo_i, hi_i) = (tail.min(n - 1), n - 1 - tail.min(n - 1));
    let lo = *v.select_nth_unstable_by(lo_i, f32::total_cmp).1;
    let hi = *v.select_nth_unstable_by(hi_i, f32::total_cmp).1;
    (lo, hi)
}

/// Mean squared error of quantizing `sample` with the range `[lo, hi]`.
fn quantization_mse(sample: &[f32], lo: f32, hi: f32) -> f64 {
    let p = activation_params(lo, hi);
    let err: f64 = sample
        .iter()
        .map(|&x| {
            let q = super::quantize_value(x, p);
            let back = (q as i32 - p.zero_point) as f32 * p.scale;
            ((back - x) as f64).powi(2)
        })
        .sum();
    err / sample.len().max(1) as f64
}

fn mse(values: &[f32], min: f32, max: f32) -> (f32, f32) {
    let stride = values.len().div_ceil(MSE_SAMPLE).max(1);
    let sample: Vec<f32> = values.iter().step_by(stride).copied().collect();
    let mut best = (quantization_mse(&sample, min, max), min, max);
    for k in 1..MSE_STEPS {
        let f = 1.0 - 0.02 * k as f32;
        let (lo, hi) = (min * f, max * f);
        let e = quantization_mse(&sample, lo, hi);
        // Ties keep the wider range: no clipping without a gain.
        if e < best.0 {
            best = (e, lo, hi);
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_keeps_the_observed_range() {
        let r = choose(&[-1.0, 0.5, 3.0], Calibration::Minmax);
        assert_eq!((r.min, r.max, r.clip_min, r.clip_max), (-1.0, 3.0, -1.0, 3.0));
    }

    #[test]
    fn percentile_drops_a_lone_outlier() {
        // 100,000 values in [0, 1) and one at 100: the 99.99 % range ends near 1.
        let mut v: Vec<f32> = (0..100_000).map(|i| i as f32 / 100_000.0).collect();
        v.push(100.0);
        let r = choose(&v, Calibration::Percentile);
        assert_eq!(r.max, 100.0);
        assert!(r.clip_max < 1.0 && r.clip_max > 0.99, "{r:?}");
        assert!(r.clip_min >= 0.0 && r.clip_min < 0.01, "{r:?}");
    }

    #[test]
    fn mse_clips_a_gaussian_tail_and_leaves_a_uniform_range_alone() {
        // Uniform values: any clip only adds saturation error.
        let uniform: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        let r = choose(&uniform, Calibration::Mse);
        assert_eq!((r.clip_min, r.clip_max), (r.min, r.max));
        // ReLU of a standard normal (100,000 values): the far tail is rare
        // enough that a finer step for the bulk wins.
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        let relu: Vec<f32> = (0..100_000).map(|_| normal.sample(&mut rng).max(0.0)).collect();
        let r = choose(&relu, Calibration::Mse);
        assert!(r.clip_max < r.max, "{r:?}");
        assert!(quantization_mse(&relu, r.clip_min, r.clip_max) < quantization_mse(&relu, r.min, r.max));
    }
}
