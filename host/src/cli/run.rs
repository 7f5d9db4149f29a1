//! `tinykd run CONFIG.toml`: the whole pipeline from one file.
//!
//! ```toml
//! data = "../data/mnist1d.npz"             # relative to this file
//! teachers = ["../teachers/mnist1d_cnn.onnx"]
//! backend = "tract"                         # auto | ort | tract
//! student = "dense(64) relu dense(32) relu dense(10)"
//!
//! [distill]                                 # every key optional
//! temperature = 4.0
//! alpha = 0.9
//! epochs = 60
//!
//! [emulate]                                 # optional
//! board = "qemu-mps2-an385"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::distill::{LossKind, Optimizer, Schedule};
use crate::pipeline::{self, DistillOptions};
use crate::progress::Progress;
use crate::quant::Calibration;
use crate::teacher::BackendChoice;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    data: PathBuf,
    #[serde(default)]
    teachers: Vec<PathBuf>,
    #[serde(default)]
    backend: BackendChoice,
    teacher_output: Option<String>,
    teacher_output_kind: Option<crate::teacher::OutputKind>,
    /// A spec string, or the TOML form: an array of layer tables.
    student: StudentField,
    /// Output directory; default `out/<config name>` under the current directory.
    out_dir: Option<PathBuf>,
    /// How the data file stores a sample's axes.
    #[serde(default)]
    layout: crate::data::Layout,
    #[serde(default)]
    distill: DistillSection,
    #[serde(default)]
    quantize: QuantizeSection,
    emulate: Option<EmulateSection>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StudentField {
    Spec(String),
    Layers(Vec<crate::student::LayerSpec>),
}

impl StudentField {
    fn spec(&self) -> Result<String> {
        match self {
            StudentField::Spec(s) => Ok(s.clone()),
            StudentField::Layers(l) => crate::student::spec::from_layers(l),
        }
    }
}

/// Every key optional: unset keys keep `tinykd distill`'s defaults.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct DistillSection {
    temperature: Option<f32>,
    alpha: Option<f32>,
    loss: Option<LossKind>,
    epochs: Option<usize>,
    steps: Option<usize>,
    batch_size: Option<usize>,
    learning_rate: Option<f32>,
    weight_decay: Option<f32>,
    seed: Option<u64>,
    val_fraction: Option<f32>,
    input_scale: Option<f32>,
    baseline: Option<bool>,
    optimizer: Option<Optimizer>,
    schedule: Option<Schedule>,
    warmup_epochs: Option<usize>,
    patience: Option<usize>,
    shift: Option<usize>,
    noise: Option<f32>,
    views: Option<usize>,
    mixup: Option<f32>,
    mixup_share: Option<f32>,
    labelled_fraction: Option<f32>,
    use_unlabeled: Option<bool>,
}

impl DistillSection {
    fn apply(&self, o: &mut DistillOptions) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { o.$f = v; } )* };
        }
        set!(
            temperature,
            alpha,
            loss,
            batch_size,
            learning_rate,
            weight_decay,
            seed,
            val_fraction,
            input_scale,
            baseline,
            optimizer,
            schedule,
            warmup_epochs,
            patience,
            labelled_fraction,
            use_unlabeled
        );
        if self.epochs.is_some() || self.steps.is_some() {
            (o.epochs, o.steps) = (self.epochs, self.steps);
        }
        if let Some(v) = self.shift {
            o.augment.shift = v;
        }
        if let Some(v) = self.noise {
            o.augment.noise = v;
        }
        if let Some(v) = self.views {
            o.augment.views = v;
        }
        if let Some(v) = self.mixup {
            o.augment.mixup = v;
        }
        if let Some(v) = self.mixup_share {
            o.augment.mixup_share = v;
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct QuantizeSection {
    calibration: Calibration,
    calibration_samples: Option<usize>,
    /// Quantization-aware training steps (0: post-training quantization only).
    qat_steps: usize,
    qat_learning_rate: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmulateSection {
    board: String,
    limit: Option<usize>,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn pct(v: f64) -> String {
    format!("{:6.2}%", v * 100.0)
}

/// Runs a config file end to end and prints the accuracy summary.
pub fn run_config(path: &Path, as_json: bool, progress: &Progress) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
    let cfg: Config = toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    let out_dir = cfg.out_dir.clone().map(|d| resolve(base, &d)).unwrap_or_else(|| PathBuf::from("out").join(stem));
    let data = resolve(base, &cfg.data);
    let mut opts = DistillOptions::new(
        cfg.teachers.iter().map(|t| resolve(base, t)).collect(),
        data.clone(),
        &cfg.student.spec()?,
    );
    opts.backend = cfg.backend;
    opts.teacher_output = cfg.teacher_output.clone();
    opts.teacher_output_kind = cfg.teacher_output_kind;
    opts.layout = cfg.layout;
    cfg.distill.apply(&mut opts);
    let read = crate::data::ReadOptions { input_scale: opts.input_scale, layout: Some(opts.layout) };
    let started = std::time::Instant::now();
    let outcome = pipeline::distill(&opts, progress)?;
    let qopts = pipeline::QuantizeOptions {
        calibration: cfg.quantize.calibration,
        samples: cfg.quantize.calibration_samples,
        qat_steps: cfg.quantize.qat_steps,
        qat_learning_rate: cfg.quantize.qat_learning_rate,
    };
    let ckpt = out_dir.join("student.ckpt");
    outcome.checkpoint.save(&ckpt)?;
    let q = pipeline::quantize(&ckpt, &data, qopts, read, progress)?;
    let tkd = out_dir.join("student.tkd");
    crate::util::write_atomic(&tkd, &q.bytes)?;
    let baseline_int8 = match &outcome.baseline {
        Some(b) => {
            let p = out_dir.join("baseline.ckpt");
            crate::student::Checkpoint::new(b.student.clone(), json!({"alpha": 0.0, "layout": opts.layout}))
                .save(&p)?;
            let bq = pipeline::quantize(&p, &data, qopts, read, progress)?;
            crate::util::write_atomic(&out_dir.join("baseline.tkd"), &bq.bytes)?;
            Some((bq.int8_accuracy, bq.qat.as_ref().map(|(_, ptq)| *ptq)))
        }
        None => None,
    };
    let emulation = match &cfg.emulate {
        Some(e) => Some(super::emulate_model(&tkd, &data, crate::data::SplitName::Test, &e.board, e.limit, read)?),
        None => None,
    };
    let summary = json!({
        "config": path,
        "teacher_test_accuracy": outcome.teacher_test_accuracy,
        "teacher_backends": outcome.teacher_backends,
        "student": opts.student,
        "parameters": outcome.kd.student.param_count(),
        "temperature": opts.temperature,
        "alpha": opts.alpha,
        "steps": outcome.kd.report.steps,
        "baseline_steps": outcome.baseline.as_ref().map(|b| b.report.steps),
        "float_test_accuracy": outcome.kd.test_accuracy,
        "int8_test_accuracy": q.int8_accuracy,
        "ptq_int8_test_accuracy": q.qat.as_ref().map(|(_, ptq)| *ptq),
        "qat": q.qat.as_ref().map(|(r, _)| r),
        "int8_float_agreement": q.float_agreement,
        "baseline_float_test_accuracy": outcome.baseline.as_ref().map(|b| b.test_accuracy),
        "baseline_int8_test_accuracy": baseline_int8.map(|b| b.0),
        "baseline_ptq_int8_test_accuracy": baseline_int8.and_then(|b| b.1),
        "tkd_bytes": q.bytes.len(),
        "emulation": emulation,
        "seconds": started.elapsed().as_secs_f64(),
        "out_dir": out_dir,
    });
    crate::util::write_atomic(&out_dir.join("report.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    if as_json {
        outln!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    outln!("tinykd run {} ({:.1} s)", path.display(), started.elapsed().as_secs_f64());
    outln!(
        "  student {} ({} parameters), T = {}, α = {}",
        opts.student,
        outcome.kd.student.param_count(),
        opts.temperature,
        opts.alpha
    );
    if let Some(t) = outcome.teacher_test_accuracy {
        outln!(
            "  teacher                          test accuracy {}  ({})",
            pct(t),
            if outcome.teacher_backends.is_empty() {
                "logits from the cache".to_string()
            } else {
                outcome.teacher_backends.join(", ")
            }
        );
    }
    outln!(
        "  distilled student, float         test accuracy {}  ({} optimizer steps)",
        pct(outcome.kd.test_accuracy),
        outcome.kd.report.steps
    );
    if let Some((r, ptq)) = &q.qat {
        outln!("  distilled student, int8 PTQ      test accuracy {}", pct(*ptq));
        outln!(
            "  distilled student, int8 QAT      test accuracy {}  ({} bytes; {} QAT steps)",
            pct(q.int8_accuracy),
            q.bytes.len(),
            r.steps
        );
    } else {
        outln!("  distilled student, int8 (.tkd)   test accuracy {}  ({} bytes)", pct(q.int8_accuracy), q.bytes.len());
    }
    if let (Some(b), Some(bi)) = (&outcome.baseline, baseline_int8) {
        outln!(
            "  baseline (α = 0), float          test accuracy {}  ({} optimizer steps)",
            pct(b.test_accuracy),
            b.report.steps
        );
        match bi.1 {
            Some(ptq) => {
                outln!("  baseline (α = 0), int8 PTQ       test accuracy {}", pct(ptq));
                outln!("  baseline (α = 0), int8 QAT       test accuracy {}", pct(bi.0));
            }
            None => outln!("  baseline (α = 0), int8           test accuracy {}", pct(bi.0)),
        }
    }
    if let Some(e) = &emulation {
        if let Some(acc) = e.accuracy {
            outln!("  on {} (QEMU)      test accuracy {}  agreement {}", e.board, pct(acc), pct(e.agreement));
        }
        outln!(
            "    {:.0} instructions/inference, flash {} B, RAM {} B",
            e.instructions_per_inference,
            e.flash_bytes,
            e.ram_bytes
        );
    }
    outln!("  artefacts in {}", out_dir.display());
    Ok(())
}
