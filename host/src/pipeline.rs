//! The pipeline stages as library calls: what the CLI commands and
//! `tinykd run` execute.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::data::{Dataset, LoadOptions, SplitName};
use crate::distill::{self, LossConfig, LossKind, TrainConfig, TrainSet, ValSet};
use crate::progress::Progress;
use crate::quant::{self, Calibration};
use crate::student::{Checkpoint, Student};
use crate::teacher::{BackendChoice, OutputKind, Teacher};
use crate::util::{accuracy, argmax_rows};
use npyz::WriterBuilder;

/// Everything `distill` needs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DistillOptions {
    pub teachers: Vec<PathBuf>,
    pub data: PathBuf,
    pub student: String,
    pub temperature: f32,
    pub alpha: f32,
    pub loss: LossKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub seed: u64,
    pub val_fraction: f32,
    pub backend: BackendChoice,
    pub teacher_output: Option<String>,
    pub input_scale: f32,
    /// Also train the same student on hard labels only (α = 0) for comparison.
    pub baseline: bool,
}

impl DistillOptions {
    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.teachers.is_empty() && self.alpha > 0.0 {
            bail!("--teacher is required unless --alpha 0");
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!("--alpha must be in [0, 1], got {}", self.alpha);
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!("--temperature must be positive, got {}", self.temperature);
        }
        if self.epochs == 0 || self.batch_size == 0 {
            bail!("--epochs and --batch-size must be at least 1");
        }
        if !(0.0..0.9).contains(&self.val_fraction) {
            bail!("--val-fraction must be in [0, 0.9), got {}", self.val_fraction);
        }
        if self.learning_rate <= 0.0 || !self.learning_rate.is_finite() {
            bail!("--lr must be positive");
        }
        Ok(())
    }
}

/// Teacher logits for the splits distillation uses.
#[derive(Debug, Clone)]
pub struct TeacherLogits {
    pub classes: usize,
    pub train: Vec<f32>,
    pub test: Vec<f32>,
    pub backends: Vec<String>,
    pub kinds: Vec<OutputKind>,
}

/// Runs every teacher over train and test; an ensemble averages tempered
/// probabilities (returned as logits whose softmax at T is that mean).
pub fn teacher_logits(
    teachers: &[PathBuf],
    data: &Dataset,
    backend: BackendChoice,
    output: Option<&str>,
    temperature: f32,
    progress: &Progress,
) -> Result<TeacherLogits> {
    let mut all = Vec::new();
    let mut backends = Vec::new();
    let mut kinds = Vec::new();
    for path in teachers {
        let mut t = Teacher::open(path, backend, output)?;
        progress.note(&format!("teacher {}: backend {} ({})", path.display(), t.backend_name(), t.backend_note));
        let train = t.logits(&data.train.x, data.train.n, &data.sample_shape, progress)?;
        let test = t.logits(&data.test.x, data.test.n, &data.sample_shape, progress)?;
        if data.class_count > train.classes {
            bail!(
                "{}: teacher has {} classes but the labels in {} go up to {} (class count mismatch)",
                path.display(),
                train.classes,
                data.path.display(),
                data.class_count - 1
            );
        }
        if let Some((c, _, _)) = all.first() {
            if *c != train.classes {
                bail!("{}: teacher has {} classes, the first teacher has {c}", path.display(), train.classes);
            }
        }
        backends.push(t.backend_name().to_owned());
        kinds.push(train.kind);
        all.push((train.classes, train.logits, test.logits));
    }
    let classes = all[0].0;
    if all.len() == 1 {
        let (_, train, test) = all.remove(0);
        return Ok(TeacherLogits { classes, train, test, backends, kinds });
    }
    let combine = |members: Vec<&Vec<f32>>| -> Vec<f32> {
        let n = members[0].len() / classes;
        let mut out = vec![0f32; n * classes];
        for i in 0..n {
            let mut mean = vec![0f64; classes];
            for m in &members {
                let p = distill::loss::softmax(&m[i * classes..(i + 1) * classes], temperature);
                for (a, b) in mean.iter_mut().zip(p) {
                    *a += b / members.len() as f64;
                }
            }
            for (o, p) in out[i * classes..(i + 1) * classes].iter_mut().zip(mean) {
                *o = (temperature as f64 * p.max(1e-30).ln()) as f32;
            }
        }
        out
    };
    let train = combine(all.iter().map(|m| &m.1).collect());
    let test = combine(all.iter().map(|m| &m.2).collect());
    Ok(TeacherLogits { classes, train, test, backends, kinds })
}

/// Train/validation index split: stratified by label, seeded.
pub fn split_validation(labels: Option<&[i64]>, n: usize, fraction: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if fraction <= 0.0 {
        return ((0..n).collect(), Vec::new());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0F5A);
    let mut groups: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for i in 0..n {
        groups.entry(labels.map_or(0, |y| y[i])).or_default().push(i);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (_, mut idx) in groups {
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f32) * fraction).round() as usize;
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

fn gather(x: &[f32], len: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&i| x[i * len..(i + 1) * len].iter().copied()).collect()
}

/// A trained student with its test accuracy.
#[derive(Debug, Clone)]
pub struct TrainedStudent {
    pub student: Student,
    pub report: distill::TrainReport,
    pub test_accuracy: f64,
    pub teacher_agreement: Option<f64>,
}

/// Outcome of a distillation.
#[derive(Debug, Clone)]
pub struct DistillOutcome {
    pub kd: TrainedStudent,
    pub baseline: Option<TrainedStudent>,
    pub teacher_test_accuracy: Option<f64>,
    pub teacher_backends: Vec<String>,
    pub checkpoint: Checkpoint,
}

/// Loads the data, runs the teachers, trains the student (and its α = 0
/// baseline), and returns the checkpoint to save.
pub fn distill(opts: &DistillOptions, progress: &Progress) -> Result<DistillOutcome> {
    opts.validate()?;
    let data = Dataset::load(&opts.data, LoadOptions { input_scale: opts.input_scale })?;
    let y_train = data.labels(SplitName::Train).ok();
    if y_train.is_none() && opts.alpha < 1.0 {
        bail!("{}: y_train is missing; without labels use --alpha 1", opts.data.display());
    }
    let y_test = data.labels(SplitName::Test)?;
    let teacher = if opts.teachers.is_empty() {
        None
    } else {
        Some(teacher_logits(
            &opts.teachers,
            &data,
            opts.backend,
            opts.teacher_output.as_deref(),
            opts.temperature,
            progress,
        )?)
    };
    let classes = teacher.as_ref().map_or(data.class_count, |t| t.classes);
    if classes < 2 {
        bail!("{}: needs at least 2 classes", opts.data.display());
    }
    let teacher_test_accuracy = teacher.as_ref().map(|t| accuracy(&argmax_rows(&t.test, classes), y_test));
    if let Some(acc) = teacher_test_accuracy {
        progress.note(&format!("teacher test accuracy: {:.2}%", acc * 100.0));
    }

    let len = data.sample_len();
    let (train_idx, val_idx, val_data) = match (&data.val, data.labels(SplitName::Val)) {
        (Some(v), Ok(y)) => ((0..data.train.n).collect(), Vec::new(), Some((v.x.clone(), y.to_vec(), v.n))),
        _ => {
            let (t, v) = split_validation(y_train, data.train.n, opts.val_fraction, opts.seed);
            let vd = (!v.is_empty() && y_train.is_some()).then(|| {
                let y = y_train.unwrap_or_default();
                (gather(&data.train.x, len, &v), v.iter().map(|&i| y[i]).collect::<Vec<_>>(), v.len())
            });
            (t, v, vd)
        }
    };
    let _ = val_idx;
    let x = gather(&data.train.x, len, &train_idx);
    let labels: Vec<Option<usize>> = train_idx.iter().map(|&i| y_train.map(|y| y[i] as usize)).collect();
    let tl = teacher.as_ref().map(|t| gather(&t.train, classes, &train_idx));
    let set = TrainSet { x: &x, n: train_idx.len(), labels: &labels, teacher: tl.as_deref() };
    let val = val_data.as_ref().map(|(x, y, n)| ValSet { x, n: *n, labels: y });

    let train_one = |alpha: f32, what: &str| -> Result<TrainedStudent> {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let mut student = Student::from_spec(&opts.student, &data.sample_shape, classes, &mut rng)?;
        let cfg = TrainConfig {
            epochs: opts.epochs,
            batch_size: opts.batch_size,
            learning_rate: opts.learning_rate,
            weight_decay: opts.weight_decay,
            seed: opts.seed,
            loss: LossConfig { kind: opts.loss, temperature: opts.temperature, alpha },
        };
        let set = if alpha > 0.0 { set } else { TrainSet { teacher: None, ..set } };
        progress.note(&format!(
            "training {what} student '{}' ({} parameters, α = {alpha})",
            opts.student,
            student.param_count()
        ));
        let report = distill::train(&mut student, set, val, &cfg, progress);
        let logits = student.forward(&data.test.x, data.test.n);
        let pred = argmax_rows(&logits, classes);
        let test_accuracy = accuracy(&pred, y_test);
        let teacher_agreement = teacher.as_ref().map(|t| {
            let tp = argmax_rows(&t.test, classes);
            pred.iter().zip(&tp).filter(|(a, b)| a == b).count() as f64 / pred.len() as f64
        });
        Ok(TrainedStudent { student, report, test_accuracy, teacher_agreement })
    };
    let kd = train_one(opts.alpha, if opts.alpha > 0.0 { "distilled" } else { "hard-label" })?;
    let baseline = if opts.baseline && opts.alpha > 0.0 { Some(train_one(0.0, "baseline (α = 0)")?) } else { None };

    let training = json!({
        "options": opts,
        "teacher_backends": teacher.as_ref().map(|t| t.backends.clone()),
        "teacher_output_kinds": teacher.as_ref().map(|t| t.kinds.clone()),
        "teacher_test_accuracy": teacher_test_accuracy,
        "report": kd.report,
        "test_accuracy": kd.test_accuracy,
        "teacher_agreement": kd.teacher_agreement,
        "baseline_test_accuracy": baseline.as_ref().map(|b| b.test_accuracy),
        "parameters": kd.student.param_count(),
    });
    let checkpoint = Checkpoint::new(kd.student.clone(), training);
    Ok(DistillOutcome {
        kd,
        baseline,
        teacher_test_accuracy,
        teacher_backends: teacher.map(|t| t.backends).unwrap_or_default(),
        checkpoint,
    })
}

/// Result of quantizing a checkpoint.
#[derive(Debug, Clone)]
pub struct QuantizeOutcome {
    pub bytes: Vec<u8>,
    pub float_accuracy: f64,
    pub int8_accuracy: f64,
    /// Share of test samples where int8 and float predictions agree.
    pub float_agreement: f64,
}

/// Quantizes a checkpoint with the train split as calibration set and
/// measures float vs int8 test accuracy.
pub fn quantize(
    checkpoint: &Path,
    data_path: &Path,
    calibration: Calibration,
    input_scale: f32,
) -> Result<QuantizeOutcome> {
    let ck = Checkpoint::load(checkpoint)?;
    let data = Dataset::load(data_path, LoadOptions { input_scale })?;
    check_student_data(&ck.student, &data)?;
    let q = quant::quantize_student(&ck.student, &data.train.x, data.train.n, calibration)?;
    let bytes = crate::export::tkd::encode(&q)?;
    let y = data.labels(SplitName::Test)?;
    let float_pred = argmax_rows(&ck.student.forward(&data.test.x, data.test.n), ck.student.classes);
    let (int8_pred, _) = run_int8(&bytes, &data.test.x, data.test.n)?;
    Ok(QuantizeOutcome {
        float_accuracy: accuracy(&float_pred, y),
        int8_accuracy: accuracy(&int8_pred, y),
        float_agreement: float_pred.iter().zip(&int8_pred).filter(|(a, b)| a == b).count() as f64 / y.len() as f64,
        bytes,
    })
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

/// Quantizes inputs with the model's input parameters (the runtime's rounding).
pub fn quantize_inputs(model: &tinykd_runtime::Model<'_>, x: &[f32]) -> Vec<i8> {
    let p = model.input_quant();
    x.iter().map(|v| tinykd_runtime::quantize(*v, p)).collect()
}

/// Runs a `.tkd` blob through the firmware runtime: predictions and int8 logits.
pub fn run_int8(bytes: &[u8], x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<i8>)> {
    let model = tinykd_runtime::Model::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let len = model.input_len();
    if x.len() != n * len {
        bail!("inputs have {} values per sample, the model expects {len}", x.len() / n.max(1));
    }
    let q = quantize_inputs(&model, x);
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut pred = Vec::with_capacity(n);
    let mut logits = Vec::with_capacity(n * model.class_count());
    for i in 0..n {
        let out = model.run(&q[i * len..(i + 1) * len], &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
        pred.push(tinykd_runtime::argmax(out));
        logits.extend_from_slice(out);
    }
    Ok((pred, logits))
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
    input_scale: f32,
    progress: &Progress,
) -> Result<EvalReport> {
    let kind = ModelKind::of(model)?;
    let data = Dataset::load(data_path, LoadOptions { input_scale })?;
    let s = data.split(split)?;
    let labels = s.y.as_deref();
    let (pred, logits, classes, backend_name) = match kind {
        ModelKind::Teacher => {
            let mut t = Teacher::open(model, backend, teacher_output)?;
            progress.note(&format!("teacher {}: backend {} ({})", model.display(), t.backend_name(), t.backend_note));
            let out = t.logits(&s.x, s.n, &data.sample_shape, progress)?;
            (
                argmax_rows(&out.logits, out.classes),
                Logits::Float(out.logits),
                out.classes,
                Some(t.backend_name().to_owned()),
            )
        }
        ModelKind::Float => {
            let ck = Checkpoint::load(model)?;
            check_student_data(&ck.student, &data)?;
            let l = ck.student.forward(&s.x, s.n);
            (argmax_rows(&l, ck.student.classes), Logits::Float(l), ck.student.classes, None)
        }
        ModelKind::Int8 => {
            let bytes = crate::export::tkd::read(model)?;
            let m = tinykd_runtime::Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
            if m.input_len() != data.sample_len() {
                bail!(
                    "{}: samples have shape {:?} but the model expects {:?}",
                    data_path.display(),
                    data.sample_shape,
                    m.input_shape()
                );
            }
            let (p, l) = run_int8(&bytes, &s.x, s.n)?;
            (p, Logits::Int8(l), m.class_count(), None)
        }
    };
    if let Some(y) = labels {
        if let Some(bad) = y.iter().find(|v| **v as usize >= classes) {
            bail!("{}: label {bad} is out of range for a model with {classes} classes", data_path.display());
        }
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
