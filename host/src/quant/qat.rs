//! Quantization-aware training: fine-tunes a float student so that its
//! *int8* version — what ships — scores better, with the distillation loss
//! that trained it (teacher logits, labels, augmented views).
//!
//! The forward pass is not a float imitation of the device: it *is* the
//! device's arithmetic. Each step quantizes the current weights with frozen
//! activation parameters (calibrated once, before training) and runs the
//! batch through `tinykd-runtime` layer by layer, so the logits the loss
//! sees are exactly the int8 logits the exported `.tkd` produces, bit for
//! bit. The backward pass is the float student's, evaluated at those
//! values (straight-through estimator): the weights used are the
//! dequantized int8 weights and biases, each layer's input is the
//! dequantized int8 activation the runtime produced, the rounding is
//! treated as the identity, and the gradient stops where a fused ReLU /
//! ReLU6 clamp (or int8 saturation) held the output. The float weights
//! take the update, and the next step re-quantizes them.
//!
//! BatchNorm is folded into the preceding layer before training (with its
//! running statistics, as the quantizer does), so the trained network is
//! the one the device runs; dropout is off.

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::Activation;

use super::calibration::TensorRange;
use super::lower::{OpKind, lower, quantize_ops};
use super::{Calibration, Scheme, WeightScales, calibrate, quantize_with_params};
use crate::distill::optimizer::Adam;
use crate::distill::trainer::{Batch, Batches, batch_loss};
use crate::distill::{TrainConfig, TrainSet, ValSet};
use crate::export::tkd::{TkdModel, encode};
use crate::progress::Progress;
use crate::student::{Device, Layer, Student, Tape};

/// What a QAT run did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QatReport {
    pub steps: usize,
    /// Validation accuracy of the int8 model before QAT (post-training
    /// quantization with the same frozen activation parameters).
    pub start_val_accuracy: Option<f64>,
    pub best_val_accuracy: Option<f64>,
    /// Step of the kept weights.
    pub best_step: usize,
    pub final_train_loss: f64,
}

/// The student with every BatchNorm folded into the weighted layer before
/// it (running statistics): the same function at inference, the shape the
/// device runs. A BatchNorm after anything else is left alone (and the
/// quantizer refuses it).
pub fn fold_batch_norm(student: &Student) -> Student {
    let mut s = student.clone();
    let mut i = 0;
    while i + 1 < s.layers.len() {
        let folded = if s.layers[i].is_weighted() { s.layers[i + 1].kind().folded_affine() } else { None };
        if let Some((a, b)) = folded {
            let params = s.layers[i].params_mut();
            let [weight, bias] = <[&mut Vec<f32>; 2]>::try_from(params).unwrap_or_else(|_| unreachable!());
            let per_channel = weight.len() / bias.len().max(1);
            for (o, (scale, shift)) in a.iter().zip(&b).enumerate() {
                weight[o * per_channel..(o + 1) * per_channel].iter_mut().for_each(|w| *w *= scale);
                bias[o] = bias[o] * scale + shift;
            }
            s.layers.remove(i + 1);
            s.shapes.remove(i + 1);
            // The BatchNorm's output is now activation i + 1.
            for l in &mut s.layers {
                if let Layer::Add(add) = l
                    && add.from > i + 1
                {
                    add.from -= 1;
                }
            }
        }
        i += 1;
    }
    s
}

/// The student as the device holds it, dequantized: per-channel int8
/// weights and int32 biases (at `s_in · s_w`) back in float.
fn fake_quantized(student: &Student, params: &[QuantParams], g: WeightScales) -> Result<Student> {
    let mut s = student.clone();
    let ops = lower(student)?;
    // The parameters of each device tensor: the input's, then each operator's output's.
    let tensor_params: Vec<QuantParams> =
        std::iter::once(params[0]).chain(ops.iter().map(|o| params[o.param])).collect();
    for op in ops.iter().filter(|o| matches!(o.kind, OpKind::Weighted | OpKind::Projection)) {
        let s_in = tensor_params[op.input].scale;
        let mut p = s.layers[op.layer].params_mut();
        let per_channel = p[0].len() / p[1].len().max(1);
        // The quantizer's own rounding, so the backward pass sees the shipped weights.
        let scales = super::layer_weight_scales(p[0], per_channel, g);
        for (row, s_w) in p[0].chunks_mut(per_channel.max(1)).zip(&scales) {
            row.iter_mut().for_each(|w| *w = super::quantize_weight(*w, *s_w) as f32 * s_w);
        }
        for (b, s_w) in p[1].iter_mut().zip(&scales) {
            let acc = (s_in as f64) * (*s_w as f64);
            *b = (super::quantize_bias(*b, acc) as f64 * acc) as f32;
        }
    }
    Ok(s)
}

/// `[N, H, W, C]` int8 to dequantized `[N, C, H, W]` float.
fn dequantize_chw(q: &[i8], p: QuantParams, [c, h, w]: [usize; 3]) -> Vec<f32> {
    let len = c * h * w;
    let mut out = vec![0.0; q.len()];
    for (src, dst) in q.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        for pi in 0..h * w {
            for ci in 0..c {
                dst[ci * h * w + pi] = p.scale * (src[pi * c + ci] as i32 - p.zero_point) as f32;
            }
        }
    }
    out
}

/// The int8 forward pass of a batch through the runtime, layer by layer:
/// every student layer's input (dequantized, channels first) for the
/// backward pass, and the dequantized logits. `blob` holds one layer per
/// device operator of `student` (`lower::quantize_ops`, not fused further).
/// A fused ReLU's recorded "input" is +1 where the int8 output was strictly
/// inside its clamp and −1 where the clamp held it, so the ReLU's backward
/// applies the straight-through mask.
fn forward(student: &Student, blob: &[u8], x: &[f32], n: usize) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
    let model = crate::int8::parse(blob)?;
    let layers = model.layers().collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ops = lower(student)?;
    if ops.len() != layers.len() {
        bail!("the int8 model has {} layers for the student's {} device operators", layers.len(), ops.len());
    }
    let q_in = crate::int8::quantize_inputs(&model, x);
    // outs[k]: runtime layer k's outputs for the whole batch (HWC).
    let mut outs: Vec<Vec<i8>> = layers.iter().map(|l| vec![0i8; n * l.output_len]).collect();
    let len = model.input_len();
    // One sample's tensors: the input, then every layer's output.
    let mut tensors: Vec<Vec<i8>> = vec![Vec::new(); layers.len() + 1];
    for i in 0..n {
        tensors[0].clear();
        tensors[0].extend_from_slice(&q_in[i * len..(i + 1) * len]);
        for (k, l) in layers.iter().enumerate() {
            let mut out = std::mem::take(&mut tensors[k + 1]);
            out.clear();
            // A two-input layer finds its second input in its output.
            match tensors.get(l.second_tensor as usize) {
                Some(second) if l.second_tensor != tinykd_runtime::format::NO_TENSOR => out.extend_from_slice(second),
                _ => out.resize(l.output_len, 0),
            }
            model.run_layer_at(k, &tensors[l.input_tensor as usize], &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
            outs[k][i * l.output_len..(i + 1) * l.output_len].copy_from_slice(&out);
            tensors[k + 1] = out;
        }
    }
    let in_shape = crate::student::geometry::as_chw(&student.input_shape).unwrap_or([1, 1, len]);
    let mut acts: Vec<Option<Vec<f32>>> = vec![None; student.layers.len() + 1];
    acts[0] = Some(dequantize_chw(&q_in, model.input_quant(), in_shape));
    for ((op, l), out) in ops.iter().zip(&layers).zip(&outs) {
        let Some(a) = op.output_act else { continue };
        let shape = student.shapes[a];
        acts[a] = Some(dequantize_chw(out, l.output, shape));
        if op.activation != Activation::None {
            let (lo, hi) = (l.clamp.min, l.clamp.max);
            let pass: Vec<i8> = out.iter().map(|q| if *q > lo && *q < hi { 1 } else { -1 }).collect();
            acts[a - 1] = Some(dequantize_chw(&pass, QuantParams { scale: 1.0, zero_point: 0 }, shape));
        }
    }
    // What is nothing on the device (flatten, dropout) passes its input on.
    for (j, layer) in student.layers.iter().enumerate() {
        if acts[j + 1].is_none() && layer.device() == Device::Nothing {
            acts[j + 1] = acts[j].clone();
        }
    }
    let mut acts = acts.into_iter().enumerate().map(|(j, a)| {
        a.ok_or_else(|| {
            anyhow::anyhow!(
                "layer {j} ({:?}) cannot be trained quantized: fold or remove it first",
                student.layers.get(j)
            )
        })
    });
    let inputs = acts.by_ref().take(student.layers.len()).collect::<Result<Vec<_>>>()?;
    let logits = acts.next().transpose()?.unwrap_or_default();
    Ok((inputs, logits))
}

/// Int8 accuracy of `model` on the validation set.
fn int8_accuracy(model: &TkdModel, val: &ValSet<'_>) -> Result<f64> {
    let blob = encode(model)?;
    let (pred, _) = crate::int8::run_int8(&blob, val.x, val.n)?;
    Ok(crate::util::accuracy(&pred, val.labels))
}

/// Fine-tunes `student` quantization-aware on `set` (the distillation set:
/// views, teacher logits, labels) for `cfg.steps` steps and returns the int8
/// model of the QAT checkpoint with the best validation accuracy (the last
/// one without validation data). Activation ranges are calibrated once on `calib` (`n`
/// samples) with `method` and then frozen.
#[allow(clippy::too_many_arguments)]
pub fn train(
    student: &Student,
    set: TrainSet<'_>,
    val: Option<ValSet<'_>>,
    calib: &[f32],
    n_calib: usize,
    method: Calibration,
    g: Scheme,
    cfg: &TrainConfig,
    progress: &Progress,
) -> Result<(TkdModel, Vec<TensorRange>, QatReport)> {
    let mut folded = fold_batch_norm(student);
    if folded.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_))) {
        bail!("quantization-aware training needs every BatchNorm right after a dense or conv layer");
    }
    let ranges = calibrate(&folded, calib, n_calib, method, g)?;
    let params = super::range_params(&ranges);
    let start = quantize_with_params(&folded, &params, g)?;
    let start_acc = val.as_ref().map(|v| int8_accuracy(&start, v)).transpose()?;
    // The kept weights are the best QAT checkpoint by validation, never the
    // starting point: the float student was itself picked for its
    // validation accuracy, so its score there is biased upward and would
    // win ties it does not deserve (measured: it kept the post-training
    // model while QAT's last weights were 0.3–0.4 pt better on test).
    let mut best: Option<(Option<f64>, usize, TkdModel)> = None;

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let batch_size = cfg.batch_size.max(1);
    let period = cfg.eval_every.max(1);
    let mut adam = Adam::new(&folded);
    let mut batches = Batches::new(set.n);
    let (mut period_loss, mut period_samples, mut last_loss) = (0.0, 0usize, 0.0);
    let bar = progress.bar(cfg.steps.div_ceil(period) as u64, "qat");
    for step in 0..cfg.steps {
        let Batch { samples: batch, rows, x } = batches.next(set, batch_size, &mut rng);
        let b = batch.len();
        let model = quantize_ops(&folded, &params, g)?;
        let (inputs, logits) = forward(&folded, &encode(&model)?, &x, b)?;
        let (dlogits, loss) = batch_loss(&logits, &batch, &rows, set, cfg, b);
        period_loss += loss;
        period_samples += b;
        let fq = fake_quantized(&folded, &params, g.weight_scales)?;
        let tape = Tape::replay(&fq, inputs, b);
        let mut grads = fq.zero_grads();
        fq.backward(&tape, dlogits, b, &mut grads);
        adam.step(&mut folded, &grads, cfg.lr_at(step, cfg.steps), cfg.weight_decay, cfg.optimizer);

        let done = step + 1;
        if done % period != 0 && done != cfg.steps {
            continue;
        }
        last_loss = period_loss / period_samples.max(1) as f64;
        (period_loss, period_samples) = (0.0, 0);
        match &val {
            Some(v) => {
                let model = quantize_with_params(&folded, &params, g)?;
                let acc = int8_accuracy(&model, v)?;
                // Ties keep the later weights, as the float trainer does.
                if best.as_ref().is_none_or(|(b, _, _)| b.is_none_or(|b| acc >= b)) {
                    best = Some((Some(acc), done, model));
                }
                bar.set_message(format!("loss {last_loss:.4} int8 val {:.2}%", acc * 100.0));
            }
            None => {
                best = Some((None, done, quantize_with_params(&folded, &params, g)?));
                bar.set_message(format!("loss {last_loss:.4}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (best_val_accuracy, best_step, model) = match best {
        Some(b) => b,
        None => (start_acc, 0, quantize_with_params(&folded, &params, g)?),
    };
    Ok((
        model,
        ranges,
        QatReport {
            steps: cfg.steps,
            start_val_accuracy: start_acc,
            best_val_accuracy,
            best_step,
            final_train_loss: last_loss,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::Rng;

    fn student(spec: &str, shape: &[usize], seed: u64) -> Student {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut s = Student::from_spec(spec, shape, 3, &mut rng).unwrap();
        for layer in &mut s.layers {
            if let Layer::BatchNorm(bn) = layer {
                bn.running_mean.iter_mut().for_each(|m| *m = rng.random_range(-0.5..0.5));
                bn.running_var.iter_mut().for_each(|v| *v = rng.random_range(0.5..2.0));
                bn.gamma.iter_mut().for_each(|g| *g = rng.random_range(0.5..1.5));
            }
        }
        s
    }

    /// AdamW on the labels alone (α = 0), evaluated every step.
    fn config(steps: usize, batch_size: usize, learning_rate: f32, schedule: crate::distill::Schedule) -> TrainConfig {
        TrainConfig {
            steps,
            eval_every: 1,
            batch_size,
            learning_rate,
            weight_decay: 0.0,
            optimizer: crate::distill::Optimizer::Adamw,
            schedule,
            warmup_steps: 0,
            patience: 0,
            seed: 1,
            loss: crate::distill::LossConfig { kind: crate::distill::LossKind::Kl, temperature: 1.0, alpha: 0.0 },
        }
    }

    #[test]
    fn folding_batch_norm_keeps_the_function() {
        let s = student("conv1d(4,k3,s2) bn relu dwconv1d(k3) bn relu6 flatten dense(6) bn relu dense(3)", &[2, 12], 1);
        let f = fold_batch_norm(&s);
        let r =
            student("conv1d(4,k3) bn relu res(conv1d(6,k3,s2) bn relu conv1d(6,k3) bn) relu gap dense(3)", &[2, 12], 1);
        let folded = fold_batch_norm(&r);
        let x: Vec<f32> = (0..5 * 24).map(|i| ((i * 29) % 23) as f32 * 0.1 - 1.1).collect();
        for (u, v) in r.forward(&x, 5).iter().zip(&folded.forward(&x, 5)) {
            assert!((u - v).abs() < 1e-4, "residual: {u} vs {v}");
        }
        assert!(!f.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_))));
        assert_eq!(f.shapes.len(), f.layers.len() + 1);
        let x: Vec<f32> = (0..5 * 24).map(|i| ((i * 37) % 23) as f32 * 0.1 - 1.1).collect();
        let (a, b) = (s.forward(&x, 5), f.forward(&x, 5));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-4, "{u} vs {v}");
        }
    }

    /// What QAT optimizes is what ships: the logits its forward pass feeds
    /// the loss are the runtime's int8 logits of the exported blob, dequantized.
    #[test]
    fn the_training_forward_pass_is_the_runtimes_int8_output() {
        for (spec, shape) in [
            ("conv1d(4,k3,s2) bn relu maxpool(2) conv1d(6,k3) relu6 gap dense(3)", &[2, 20][..]),
            ("conv2d(4,k3) relu avgpool(2) dwconv2d(k3) relu flatten dropout(0.1) dense(3)", &[1, 8, 8]),
            ("dense(8) bn relu dense(3)", &[10]),
            (
                "conv2d(4,k3) bn relu res(conv2d(6,k3,s2) bn relu conv2d(6,k3) bn) relu res(conv2d(6,k3)) gap dense(3)",
                &[2, 8, 8],
            ),
        ] {
            let s = fold_batch_norm(&student(spec, shape, 2));
            let len: usize = shape.iter().product();
            let n = 16;
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-1.0..1.0)).collect();
            let single = Scheme { rounding: super::super::Rounding::Single, ..Default::default() };
            for g in [WeightScales::PerChannel.into(), WeightScales::PerTensor.into(), single] {
                let ranges = calibrate(&s, &x, n, Calibration::Minmax, g).unwrap();
                let params = super::super::range_params(&ranges);
                let blob = encode(&quantize_ops(&s, &params, g).unwrap()).unwrap();
                let m = tinykd_runtime::Model::from_bytes(&blob).unwrap();
                assert_eq!(m.single_rounding(), g == single);
                let (inputs, logits) = forward(&s, &blob, &x, n).unwrap();
                assert_eq!(inputs.len(), s.layers.len(), "{spec}");
                let (_, int8) = crate::int8::run_int8(&blob, &x, n).unwrap();
                let m = tinykd_runtime::Model::from_bytes(&blob).unwrap();
                let q = m.output_quant();
                let want: Vec<f32> = int8.iter().map(|v| q.scale * (*v as i32 - q.zero_point) as f32).collect();
                assert_eq!(logits, want, "{spec} {g:?}");
                // What ships fuses a convolution into the addition reading it: the same int8 logits.
                let shipped = quantize_with_params(&s, &params, g).unwrap();
                let (_, fused) = crate::int8::run_int8(&encode(&shipped).unwrap(), &x, n).unwrap();
                assert_eq!(fused, int8, "{spec} {g:?}");
                let adds = spec.matches("res(").count();
                assert_eq!(shipped.layers.len() + adds, m.layer_count(), "{spec}");
            }
        }
    }

    /// The straight-through gradients train through the int8 forward pass:
    /// from random weights (chance accuracy), QAT alone learns a separable
    /// problem, and its int8 model is what it reports.
    #[test]
    fn qat_alone_learns_a_separable_problem() {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let c = i % 3;
            let jitter = ((i * 37 % 17) as f32 - 8.0) / 30.0;
            x.extend_from_slice(&[c as f32 - 1.0 + jitter, jitter, 0.5 - jitter]);
            y.push(c);
        }
        let labels: Vec<Option<usize>> = y.iter().map(|c| Some(*c)).collect();
        let y: Vec<i64> = y.iter().map(|c| *c as i64).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let s = Student::from_spec("dense(8) bn relu dense(3)", &[3], 3, &mut rng).unwrap();
        let set = TrainSet { x: &x, n: 300, views: 1, labels: &labels, teacher: None, mix: &[] };
        let val = ValSet { x: &x, n: 300, labels: &y };
        let cfg = TrainConfig { eval_every: 50, ..config(400, 32, 1e-2, crate::distill::Schedule::Cosine) };
        let (model, _, report) =
            train(&s, set, Some(val), &x, 300, Calibration::Minmax, Scheme::default(), &cfg, &Progress::hidden())
                .unwrap();
        let acc = int8_accuracy(&model, &ValSet { x: &x, n: 300, labels: &y }).unwrap();
        assert!(report.start_val_accuracy.unwrap() < 0.8, "{report:?}");
        assert!(acc > 0.95, "int8 accuracy after QAT {acc}; {report:?}");
        assert_eq!(Some(acc), report.best_val_accuracy);
    }

    /// MLPerf Tiny's three architectures at full width (and MobileNet at
    /// MLPerf's 0.25 on 96×96): the QAT forward pass is the runtime's int8
    /// output, and two QAT steps move the shipped weights.
    #[test]
    fn the_named_architectures_at_full_width_train_with_qat() {
        for (spec, shape) in [
            ("ds-cnn-s", &[1, 49, 10][..]),
            ("resnet8", &[3, 32, 32]),
            ("mobilenet-v1(1)", &[3, 32, 32]),
            ("mobilenet-v1(0.25)", &[3, 96, 96]),
        ] {
            let s = student(spec, shape, 6);
            let folded = fold_batch_norm(&s);
            let len: usize = shape.iter().product();
            let n = 4;
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-1.0..1.0)).collect();
            let g = Scheme::default();
            let params = super::super::range_params(&calibrate(&folded, &x, n, Calibration::Minmax, g).unwrap());
            let start = quantize_with_params(&folded, &params, g).unwrap();
            let blob = encode(&quantize_ops(&folded, &params, g).unwrap()).unwrap();
            let (_, logits) = forward(&folded, &blob, &x, n).unwrap();
            let (_, int8) = crate::int8::run_int8(&blob, &x, n).unwrap();
            let q = tinykd_runtime::Model::from_bytes(&blob).unwrap().output_quant();
            let want: Vec<f32> = int8.iter().map(|v| q.scale * (*v as i32 - q.zero_point) as f32).collect();
            assert_eq!(logits, want, "{spec}");

            let labels: Vec<Option<usize>> = (0..n).map(|i| Some(i % 3)).collect();
            let set = TrainSet { x: &x, n, views: 1, labels: &labels, teacher: None, mix: &[] };
            let cfg = config(2, n, 1e-3, crate::distill::Schedule::Constant);
            let (model, _, report) =
                train(&s, set, None, &x, n, Calibration::Minmax, g, &cfg, &Progress::hidden()).unwrap();
            assert_eq!((report.steps, report.best_step), (2, 2), "{spec}");
            assert!(report.final_train_loss.is_finite(), "{spec}: {report:?}");
            let moved = model.layers.iter().zip(&start.layers).filter(|(a, b)| a.weights != b.weights).count();
            assert!(moved > 0, "{spec}: QAT left every weight where it was");
        }
    }

    #[test]
    fn fake_quantized_weights_are_the_blobs_weights() {
        let s = fold_batch_norm(&student("conv1d(4,k3) bn relu flatten dense(3)", &[2, 9], 4));
        let x: Vec<f32> = (0..8 * 18).map(|i| ((i * 13) % 17) as f32 * 0.1 - 0.8).collect();
        for g in [WeightScales::PerChannel, WeightScales::PerTensor] {
            let ranges = calibrate(&s, &x, 8, Calibration::Minmax, g.into()).unwrap();
            let params = super::super::range_params(&ranges);
            let model = quantize_with_params(&s, &params, g.into()).unwrap();
            let fq = fake_quantized(&s, &params, g).unwrap();
            // Channel 0 of the conv: same multiset of values (layouts differ).
            let Layer::Conv(c) = &fq.layers[0] else { panic!() };
            let l = &model.layers[0];
            let mut a: Vec<f32> = c.weight[..c.weight.len() / 4].to_vec();
            let mut b: Vec<f32> =
                l.weights[..l.weights.len() / 4].iter().map(|q| *q as f32 * l.weight_scales[0]).collect();
            a.sort_by(f32::total_cmp);
            b.sort_by(f32::total_cmp);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() <= 1e-6 * u.abs().max(1.0), "{u} vs {v}");
            }
            let distinct = l.weight_scales.iter().filter(|s| **s != l.weight_scales[0]).count();
            assert_eq!(distinct == 0, g == WeightScales::PerTensor, "{g:?}: {:?}", l.weight_scales);
        }
    }
}
