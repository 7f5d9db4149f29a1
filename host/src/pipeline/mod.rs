//! The pipeline stages as library calls: what the CLI commands and
//! `tinykd run` execute.

mod board;
mod distill;
pub mod init;
pub mod run;
pub mod stages;
mod sweep;
mod teach;

pub use board::{device_inputs, emulate_model, emulate_model_with, verify_model_on_port};
pub use teach::{TeachOptions, TeachReport, teach};

pub use distill::{DistillOutcome, Prepared, StepBudget, TrainedStudent, distill, prepare, prepare_for, train_student};
pub use sweep::{SweepOptions, SweepOutcome, sweep};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use npyz::WriterBuilder;

use crate::data::{Dataset, Layout, ReadOptions, SplitName};
use crate::distill::{Checkpoint, DistillOptions};
use crate::progress::Progress;
use crate::quant::{self, Calibration};
use crate::student::Student;
use crate::teacher::{BackendChoice, Teacher};
use crate::util::{accuracy, argmax_rows};

/// Result of quantizing a checkpoint.
#[derive(Debug, Clone)]
pub struct QuantizeOutcome {
    pub bytes: Vec<u8>,
    pub float_accuracy: f64,
    pub int8_accuracy: f64,
    /// Share of test samples where int8 and float predictions agree.
    pub float_agreement: f64,
    /// The calibration method used (`auto` resolved).
    pub calibration: Calibration,
    /// Every calibrated tensor's observed and chosen range.
    pub ranges: Vec<quant::calibration::TensorRange>,
    /// Quantization-aware training, when asked: its report and the test
    /// accuracy of the post-training int8 model it started from.
    pub qat: Option<(quant::qat::QatReport, f64)>,
}

/// How to quantize: the calibration method and how many train samples
/// calibrate (evenly spaced through the split; `None`: all of them).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantizeOptions {
    pub calibration: Calibration,
    pub samples: Option<usize>,
    /// Quantization-aware training steps after calibration (0: post-training
    /// quantization only).
    pub qat_steps: usize,
    /// QAT learning rate (`None`: a third of the distillation's).
    pub qat_learning_rate: Option<f32>,
    /// One weight scale per output channel or per layer.
    pub weight_scales: quant::WeightScales,
    /// How requantization rounds (TFLite Micro's two roundings or one).
    pub rounding: quant::Rounding,
}

impl QuantizeOptions {
    fn scheme(&self) -> quant::Scheme {
        quant::Scheme { weight_scales: self.weight_scales, rounding: self.rounding }
    }
}

impl From<Calibration> for QuantizeOptions {
    fn from(calibration: Calibration) -> Self {
        QuantizeOptions { calibration, ..Default::default() }
    }
}

/// Quantizes a checkpoint with (part of) the train split as calibration set
/// and measures float vs int8 test accuracy.
pub fn quantize(
    checkpoint: &Path,
    data_path: &Path,
    options: impl Into<QuantizeOptions>,
    read: ReadOptions,
    progress: &Progress,
) -> Result<QuantizeOutcome> {
    let options = options.into();
    let ck = Checkpoint::load(checkpoint)?;
    let data = Dataset::load(data_path, read.for_model(ck.layout()))?;
    check_student_data(&ck.student, &data)?;
    let len = data.sample_len();
    let n = options.samples.map_or(data.train.n, |k| k.clamp(1, data.train.n));
    let calib: std::borrow::Cow<'_, [f32]> = if n == data.train.n {
        std::borrow::Cow::Borrowed(&data.train.x)
    } else {
        (0..n).flat_map(|i| data.train.sample(i * data.train.n / n, len).iter().copied()).collect()
    };
    let (mut method, mut ranges) =
        quant::calibrate_resolved(&ck.student, &calib, n, options.calibration, options.scheme())?;
    let mut q = quant::quantize_with_params(&ck.student, &quant::range_params(&ranges), options.scheme())?;
    q.data_channels_last = data.layout == Layout::ChannelsLast;
    let mut bytes = crate::export::tkd::encode(&q)?;
    let y = data.labels(SplitName::Test)?;
    let float_pred = argmax_rows(&ck.student.forward(&data.test.x, data.test.n), ck.student.classes);
    let (mut int8_pred, _) = crate::int8::run_int8(&bytes, &data.test.x, data.test.n)?;
    let mut qat = None;
    if options.qat_steps > 0 {
        // `auto` before QAT is the observed range: a clipped range saturates
        // the values QAT's straight-through gradient then cannot reach
        // (measured on the five example students: QAT from min/max ranges
        // ended level with or up to 0.7 pt above QAT from the post-training
        // choice, never below).
        method = match options.calibration {
            Calibration::Auto => Calibration::Minmax,
            m => m,
        };
        let options = QuantizeOptions { calibration: method, ..options };
        // The ranges reported are the ones QAT calibrated and shipped.
        let (mut model, qat_ranges, report) =
            quantization_aware(&ck, data_path, &data, &calib, n, options, read, progress)?;
        ranges = qat_ranges;
        model.data_channels_last = q.data_channels_last;
        let ptq = accuracy(&int8_pred, y);
        bytes = crate::export::tkd::encode(&model)?;
        int8_pred = crate::int8::run_int8(&bytes, &data.test.x, data.test.n)?.0;
        qat = Some((report, ptq));
    }
    Ok(QuantizeOutcome {
        float_accuracy: accuracy(&float_pred, y),
        int8_accuracy: accuracy(&int8_pred, y),
        float_agreement: float_pred.iter().zip(&int8_pred).filter(|(a, b)| a == b).count() as f64 / y.len() as f64,
        bytes,
        calibration: method,
        ranges,
        qat,
    })
}

/// Quantization-aware fine-tuning of a checkpoint with the distillation
/// that trained it: the options its training record holds (teacher, T, α,
/// loss, augmentation; teacher logits from the cache), on `data_path`. A
/// checkpoint without that record fine-tunes on the hard labels.
#[allow(clippy::too_many_arguments)]
fn quantization_aware(
    ck: &Checkpoint,
    data_path: &Path,
    data: &Dataset,
    calib: &[f32],
    n_calib: usize,
    options: QuantizeOptions,
    read: ReadOptions,
    progress: &Progress,
) -> Result<(crate::export::tkd::TkdModel, Vec<quant::calibration::TensorRange>, quant::qat::QatReport)> {
    let mut opts = match ck.training.options.clone() {
        Some(o) => o,
        None => {
            progress.note("the checkpoint records no distillation options: QAT fine-tunes on the labels (α = 0)");
            let mut o = DistillOptions::new(Vec::new(), data_path.to_path_buf(), &ck.student.spec);
            o.alpha = 0.0;
            o.input_scale = read.input_scale;
            o.layout = data.layout;
            o
        }
    };
    opts.data = data_path.to_path_buf();
    opts.baseline = false;
    if opts.teachers.iter().chain(&opts.teacher_logits).any(|t| !t.exists()) {
        bail!(
            "QAT distils with the checkpoint's teacher {}, which is not there (run it where the teacher is, or without --qat-steps)",
            opts.teachers
                .iter()
                .chain(&opts.teacher_logits)
                .map(|t| t.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let p = prepare(&opts, progress)?;
    if p.classes != ck.student.classes {
        bail!("the teacher has {} classes, the student {}", p.classes, ck.student.classes);
    }
    let rows = distill::TrainRows::new(&p, opts.alpha);
    let set = rows.set(&p);
    let val = p.val.as_ref().map(|(x, y, n)| crate::distill::ValSet { x, n: *n, labels: y });
    let steps = options.qat_steps;
    let cfg = crate::distill::TrainConfig {
        steps,
        eval_every: (steps / 20).max(1),
        batch_size: opts.batch_size,
        learning_rate: options.qat_learning_rate.unwrap_or(opts.learning_rate / 3.0),
        weight_decay: opts.weight_decay,
        optimizer: opts.optimizer,
        schedule: crate::distill::Schedule::Cosine,
        warmup_steps: 0,
        patience: 0,
        seed: opts.seed,
        loss: crate::distill::LossConfig { kind: opts.loss, temperature: opts.temperature, alpha: opts.alpha },
    };
    progress.note(&format!(
        "quantization-aware training: {steps} steps, learning rate {}, T = {}, α = {}",
        cfg.learning_rate, opts.temperature, opts.alpha
    ));
    quant::qat::train(&ck.student, set, val, calib, n_calib, options.calibration, options.scheme(), &cfg, progress)
}

fn check_student_data(s: &Student, data: &Dataset) -> Result<()> {
    if s.input_len() != data.sample_len() {
        bail!(
            "{}: samples have shape {:?} but the student expects {:?}",
            data.path.display(),
            data.sample_shape,
            s.input_shape
        );
    }
    if data.class_count > s.classes {
        bail!(
            "{}: labels go up to {} but the student has {} classes",
            data.path.display(),
            data.class_count - 1,
            s.classes
        );
    }
    Ok(())
}

/// What kind of model a path holds, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Teacher,
    Float,
    Int8,
}

impl ModelKind {
    pub fn of(path: &Path) -> Result<ModelKind> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("onnx") => Ok(ModelKind::Teacher),
            Some("ckpt") | Some("json") => Ok(ModelKind::Float),
            Some("tkd") => Ok(ModelKind::Int8),
            _ => bail!("{}: unknown model type (expected .onnx, .ckpt or .tkd)", path.display()),
        }
    }
}

/// Evaluation of one model on one split.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub model: PathBuf,
    pub kind: ModelKind,
    pub split: SplitName,
    pub n: usize,
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub classes: usize,
    #[serde(skip)]
    pub pred: Vec<usize>,
    #[serde(skip)]
    pub logits: Logits,
}

/// Logits as the model produces them.
#[derive(Debug, Clone, Default)]
pub enum Logits {
    #[default]
    None,
    Float(Vec<f32>),
    Int8(Vec<i8>),
}

/// Evaluates a teacher, float checkpoint or `.tkd` on a split.
pub fn evaluate(
    model: &Path,
    data_path: &Path,
    split: SplitName,
    backend: BackendChoice,
    teacher_output: Option<&str>,
    read: ReadOptions,
    progress: &Progress,
) -> Result<EvalReport> {
    evaluate_with(model, data_path, split, backend, teacher_output, None, read, progress)
}

/// `evaluate`, with the teacher's output kind forced when `kind` is given.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    model: &Path,
    data_path: &Path,
    split: SplitName,
    backend: BackendChoice,
    teacher_output: Option<&str>,
    output_kind: Option<crate::teacher::OutputKind>,
    read: ReadOptions,
    progress: &Progress,
) -> Result<EvalReport> {
    let kind = ModelKind::of(model)?;
    // Students remember the layout they were trained on; a teacher takes the
    // file's own layout whatever it is.
    let (checkpoint, blob) = match kind {
        ModelKind::Teacher => (None, None),
        ModelKind::Float => (Some(Checkpoint::load(model)?), None),
        ModelKind::Int8 => (None, Some(crate::int8::read(model)?)),
    };
    let model_layout = match (&checkpoint, &blob) {
        (Some(ck), _) => ck.layout(),
        (_, Some(bytes)) => crate::int8::data_layout(bytes),
        _ => None,
    };
    let data = Dataset::load(data_path, read.for_model(model_layout))?;
    let s = data.split(split)?;
    let labels = s.y.as_deref();
    let (pred, logits, classes, backend_name) = match (checkpoint, blob) {
        (Some(ck), _) => {
            check_student_data(&ck.student, &data)?;
            let l = ck.student.forward(&s.x, s.n);
            (argmax_rows(&l, ck.student.classes), Logits::Float(l), ck.student.classes, None)
        }
        (_, Some(bytes)) => {
            let m = crate::int8::parse(&bytes)?;
            crate::int8::check_model_data(&m, &data)?;
            let (p, l) = crate::int8::run_int8(&bytes, &s.x, s.n)?;
            (p, Logits::Int8(l), m.class_count(), None)
        }
        _ => {
            let mut t = Teacher::open(model, backend, teacher_output)?;
            t.expected_classes = (data.class_count > 0).then_some(data.class_count);
            t.kind_override = output_kind;
            progress.note(&format!("teacher {}: backend {} ({})", model.display(), t.backend_name(), t.backend_note));
            let out = t.logits(&data.stored_order(&s.x), s.n, &data.stored_shape, progress)?;
            (
                argmax_rows(&out.logits, out.classes),
                Logits::Float(out.logits),
                out.classes,
                Some(t.backend_name().to_owned()),
            )
        }
    };
    if let Some(y) = labels
        && let Some(bad) = y.iter().find(|v| **v as usize >= classes)
    {
        bail!("{}: label {bad} is out of range for a model with {classes} classes", data_path.display());
    }
    Ok(EvalReport {
        model: model.to_path_buf(),
        kind,
        split,
        n: s.n,
        accuracy: labels.map(|y| accuracy(&pred, y)),
        backend: backend_name,
        classes,
        pred,
        logits,
    })
}

/// Writes `pred` (int32 [N]) and `logits` ([N, C]) to an `.npz`, atomically.
pub fn save_outputs(path: &Path, report: &EvalReport) -> Result<()> {
    let n = report.n as u64;
    let c = report.classes as u64;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut npz = npyz::npz::NpzWriter::new(&mut buf);
        let pred: Vec<i32> = report.pred.iter().map(|p| *p as i32).collect();
        let mut w = npz.array::<i32>("pred", Default::default())?.default_dtype().shape(&[n]).begin_nd()?;
        w.extend(pred)?;
        w.finish()?;
        match &report.logits {
            Logits::Float(l) => {
                let mut w =
                    npz.array::<f32>("logits", Default::default())?.default_dtype().shape(&[n, c]).begin_nd()?;
                w.extend(l.iter().copied())?;
                w.finish()?;
            }
            Logits::Int8(l) => {
                let mut w = npz.array::<i8>("logits", Default::default())?.default_dtype().shape(&[n, c]).begin_nd()?;
                w.extend(l.iter().copied())?;
                w.finish()?;
            }
            Logits::None => {}
        }
    }
    crate::util::write_atomic(path, &buf.into_inner())
        .with_context(|| format!("{}: cannot save outputs", path.display()))
}
