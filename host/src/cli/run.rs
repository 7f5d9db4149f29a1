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
use crate::pipeline::stages::{InputHash, Stages};
use crate::pipeline::{self, DistillOptions};
use crate::progress::Progress;
use crate::quant::{Calibration, Rounding, WeightScales};
use crate::teacher::BackendChoice;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    data: PathBuf,
    #[serde(default)]
    teachers: Vec<PathBuf>,
    /// Teacher scores computed elsewhere (`--teacher-logits`), instead of `teachers`.
    teacher_logits: Option<PathBuf>,
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
    export: Option<ExportSection>,
    sweep: Option<SweepSection>,
    device: Option<DeviceSection>,
}

/// `[device]`: a real board on a serial port — flash it (probe-rs) unless
/// `flash = false`, then stream the test split to it. Never skipped: the
/// board's state is not an input tinykd can hash.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct DeviceSection {
    board: String,
    port: String,
    #[serde(default = "default_baud")]
    baud: u32,
    #[serde(default = "default_true")]
    flash: bool,
    limit: Option<usize>,
}

fn default_baud() -> u32 {
    115_200
}

fn default_true() -> bool {
    true
}

/// `[sweep]`: distil over a grid and keep the best validation row (α = 0
/// is always in the grid: its row is the baseline).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct SweepSection {
    temperatures: Vec<f32>,
    alphas: Vec<f32>,
    #[serde(default = "default_seeds")]
    seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// `[export] formats = ["tflite", "onnx", …]`: the student in other formats.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ExportSection {
    formats: Vec<crate::export::Format>,
}

/// One exported file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ExportRecord {
    format: String,
    file: PathBuf,
    bytes: u64,
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

#[derive(Debug, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct QuantizeSection {
    calibration: Calibration,
    calibration_samples: Option<usize>,
    /// Quantization-aware training steps (0: post-training quantization only).
    qat_steps: usize,
    qat_learning_rate: Option<f32>,
    weight_scales: WeightScales,
    rounding: Rounding,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct EmulateSection {
    board: String,
    limit: Option<usize>,
}

/// `report.md`, `report.html` and their plots, from the stage records and
/// the int8 student's predictions on the test split.
#[allow(clippy::too_many_arguments)]
fn write_report(
    config: &Path,
    out_dir: &Path,
    data_path: &Path,
    read: crate::data::ReadOptions,
    opts: &DistillOptions,
    distilled: &DistillRecord,
    quantized: &QuantizeRecord,
    boards: &[&serde_json::Value],
    tkd: &Path,
) -> Result<()> {
    let blob = crate::export::tkd::read(tkd)?;
    let data = crate::data::Dataset::load(data_path, read.for_model(crate::export::tkd::data_layout(&blob)))?;
    let labels = data.labels(crate::data::SplitName::Test)?;
    let (pred, _) = pipeline::run_int8(&blob, &data.test.x, data.test.n)?;
    let classes = tinykd_runtime::Model::from_bytes(&blob).map_err(|e| anyhow::anyhow!("{e}"))?.class_count();
    let p = |v: f64| format!("{:.2} %", v * 100.0);
    let mut facts = vec![
        ("student".to_owned(), opts.student.clone()),
        ("parameters".to_owned(), distilled.parameters.to_string()),
        ("temperature, α".to_owned(), {
            let (t, a) = distilled.temperature_alpha(opts);
            format!("{t}, {a}{}", if distilled.sweep.is_some() { " (selected by the sweep)" } else { "" })
        }),
        ("optimizer steps".to_owned(), distilled.steps.to_string()),
    ];
    let mut accuracies = Vec::new();
    if let Some(t) = distilled.teacher_test_accuracy {
        facts.push(("teacher test accuracy".into(), p(t)));
        accuracies.push(("teacher".to_owned(), t));
    }
    facts.push(("float student test accuracy".into(), p(distilled.float_test_accuracy)));
    accuracies.push(("float student".into(), distilled.float_test_accuracy));
    if let Some(ptq) = quantized.ptq_int8_test_accuracy {
        facts.push(("int8 student, post-training".into(), p(ptq)));
    }
    facts.push(("int8 student test accuracy (.tkd)".into(), p(quantized.int8_test_accuracy)));
    accuracies.push(("int8 student".into(), quantized.int8_test_accuracy));
    facts.push(("int8 model".into(), format!("{} bytes", quantized.tkd_bytes)));
    if let (Some((bf, _)), Some((bi, _))) = (distilled.baseline, quantized.baseline) {
        facts.push(("α = 0 baseline, float / int8".into(), format!("{} / {}", p(bf), p(bi))));
    }
    let mut footprint = Vec::new();
    let model = tinykd_runtime::Model::from_bytes(&blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    for e in boards {
        let board = e["board"].as_str().unwrap_or("?").to_owned();
        if let Some(acc) = e["accuracy"].as_f64() {
            let n = e["n"].as_u64().unwrap_or(0);
            facts.push((format!("on {board} ({n} test samples)"), p(acc)));
            accuracies.push((format!("device ({n})"), acc));
        }
        facts.push(("agreement with the host".into(), p(e["agreement"].as_f64().unwrap_or(0.0))));
        facts.push((
            "instructions per inference".into(),
            format!("{:.0}", e["instructions_per_inference"].as_f64().unwrap_or(0.0)),
        ));
        // A real board's report has no image size (nothing was built here).
        let measured = e["flash_bytes"].as_u64().is_some_and(|f| f > 0);
        if let (Ok(b), true) = (crate::device::board(&board), measured) {
            footprint.push(crate::report::Footprint {
                board,
                flash_used: e["flash_bytes"].as_u64().unwrap_or(0),
                flash_total: b.flash_bytes,
                ram_used: e["ram_bytes"].as_u64().unwrap_or(0),
                ram_total: b.ram_bytes,
                measured: true,
            });
        }
    }
    // The other boards: the fit check's estimate (model + firmware, arena +
    // receive buffer + stack).
    for b in crate::device::BOARDS {
        if footprint.iter().any(|f| f.board == b.name) {
            continue;
        }
        let need = crate::device::fit_estimate(b, &model);
        footprint.push(crate::report::Footprint {
            board: b.name.to_owned(),
            flash_used: need.flash,
            flash_total: b.flash_bytes,
            ram_used: need.ram,
            ram_total: b.ram_bytes,
            measured: false,
        });
    }
    let report = crate::report::Report {
        title: format!("tinykd run {}", config.display()),
        facts,
        kd_curve: distilled.curve.clone(),
        baseline_curve: distilled.baseline_curve.clone(),
        confusion: crate::report::confusion_matrix(labels, &pred, classes),
        accuracies,
        footprint,
        sweep: distilled.sweep.as_ref().map(|s| (s.rows.clone(), s.best, s.baseline)),
    };
    crate::report::write(out_dir, &report)?;
    Ok(())
}

/// Which model a format exports (the float checkpoint or the int8 blob) and
/// the file it goes to.
fn export_target<'a>(f: crate::export::Format, ckpt: &'a Path, tkd: &'a Path, dir: &Path) -> (&'a Path, PathBuf) {
    use crate::export::Format;
    match f {
        Format::Onnx => (ckpt, dir.join("student.onnx")),
        Format::OnnxQdq => (tkd, dir.join("student_int8.onnx")),
        Format::Tflite => (tkd, dir.join("student.tflite")),
        Format::C => (tkd, dir.join("student.h")),
        Format::Rust => (tkd, dir.join("student.rs")),
    }
}

/// What the distill stage reports (kept in `stages.json` for skipped runs).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DistillRecord {
    teacher_test_accuracy: Option<f64>,
    teacher_backends: Vec<String>,
    parameters: usize,
    float_test_accuracy: f64,
    steps: usize,
    /// The α = 0 baseline's float test accuracy and steps.
    baseline: Option<(f64, usize)>,
    curve: Vec<crate::distill::CurvePoint>,
    baseline_curve: Option<Vec<crate::distill::CurvePoint>>,
    /// The grid, when the run swept.
    sweep: Option<SweepRecord>,
}

impl DistillRecord {
    /// The distilled student's T and α: the sweep's selection, else the config's.
    fn temperature_alpha(&self, opts: &DistillOptions) -> (String, f32) {
        match &self.sweep {
            Some(s) => (s.temperature.map_or("–".into(), |t| t.to_string()), s.alpha),
            None => (opts.temperature.to_string(), opts.alpha),
        }
    }
}

/// A sweep's grid and selection.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SweepRecord {
    rows: Vec<pipeline::SweepRow>,
    best: usize,
    baseline: usize,
    /// The selected T (none for α = 0) and α.
    temperature: Option<f32>,
    alpha: f32,
}

/// What the quantize stage reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct QuantizeRecord {
    int8_test_accuracy: f64,
    ptq_int8_test_accuracy: Option<f64>,
    qat: Option<serde_json::Value>,
    int8_float_agreement: f64,
    tkd_bytes: usize,
    /// The baseline's int8 (shipped) and post-training test accuracies.
    baseline: Option<(f64, Option<f64>)>,
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
    opts.teacher_logits = cfg.teacher_logits.as_ref().map(|p| resolve(base, p));
    opts.backend = cfg.backend;
    opts.teacher_output = cfg.teacher_output.clone();
    opts.teacher_output_kind = cfg.teacher_output_kind;
    opts.layout = cfg.layout;
    cfg.distill.apply(&mut opts);
    let read = crate::data::ReadOptions { input_scale: opts.input_scale, layout: Some(opts.layout) };
    let started = std::time::Instant::now();
    let mut stages = Stages::load(&out_dir);
    // The teacher cache's key: the ONNX files with their external tensor
    // data and the chosen output; then any score file.
    let teachers = crate::teacher::cache::teacher_key(&opts.teachers, opts.teacher_output.as_deref())?;
    let teacher_hash =
        opts.teacher_logits.iter().try_fold(InputHash::new("teachers").value(&teachers)?, |h, f| h.path(f))?.finish();
    let data_hash = InputHash::new("data").path(&data)?.finish();
    let ckpt = out_dir.join("student.ckpt");
    let baseline_ckpt = out_dir.join("baseline.ckpt");

    // Distill (the student and its α = 0 baseline).
    // Where the teacher cache lives changes no result.
    let key = InputHash::new("distill")
        .value(&DistillOptions { cache_dir: None, ..opts.clone() })?
        .value(&(&teacher_hash, &data_hash))?
        .value(&cfg.sweep)?
        .finish();
    let distilled: DistillRecord = match stages.fresh("distill", &key) {
        Some(r) => {
            progress.note(&format!("distill: inputs unchanged, skipped ({} kept)", ckpt.display()));
            r
        }
        None if cfg.sweep.is_some() => {
            let Some(sw) = &cfg.sweep else { unreachable!() };
            let so = pipeline::SweepOptions {
                base: opts.clone(),
                temperatures: sw.temperatures.clone(),
                alphas: sw.alphas.clone(),
                students: vec![opts.student.clone()],
                seeds: sw.seeds.clone(),
                out_dir: out_dir.clone(),
            };
            let outcome = pipeline::sweep(&so, progress)?;
            outcome.checkpoint.save(&ckpt)?;
            let b = &outcome.baseline_run;
            crate::student::Checkpoint::new(b.student.clone(), json!({"alpha": 0.0, "layout": opts.layout}))
                .save(&baseline_ckpt)?;
            let (c, row) = (&outcome.chosen_run, &outcome.rows[outcome.best]);
            let r = DistillRecord {
                teacher_test_accuracy: outcome.teacher_test_accuracy,
                teacher_backends: Vec::new(),
                parameters: c.student.param_count(),
                float_test_accuracy: c.test_accuracy,
                steps: c.report.steps,
                baseline: Some((b.test_accuracy, b.report.steps)),
                curve: c.report.curve.clone(),
                baseline_curve: Some(b.report.curve.clone()),
                sweep: Some(SweepRecord {
                    rows: outcome.rows.clone(),
                    best: outcome.best,
                    baseline: outcome.baseline,
                    temperature: row.temperature,
                    alpha: row.alpha,
                }),
            };
            stages.store("distill", &key, &[ckpt.as_path(), baseline_ckpt.as_path()], &r)?;
            r
        }
        None => {
            let outcome = pipeline::distill(&opts, progress)?;
            outcome.checkpoint.save(&ckpt)?;
            let mut outputs = vec![ckpt.as_path()];
            if let Some(b) = &outcome.baseline {
                crate::student::Checkpoint::new(b.student.clone(), json!({"alpha": 0.0, "layout": opts.layout}))
                    .save(&baseline_ckpt)?;
                outputs.push(&baseline_ckpt);
            }
            let r = DistillRecord {
                teacher_test_accuracy: outcome.teacher_test_accuracy,
                teacher_backends: outcome.teacher_backends.clone(),
                parameters: outcome.kd.student.param_count(),
                float_test_accuracy: outcome.kd.test_accuracy,
                steps: outcome.kd.report.steps,
                baseline: outcome.baseline.as_ref().map(|b| (b.test_accuracy, b.report.steps)),
                curve: outcome.kd.report.curve.clone(),
                baseline_curve: outcome.baseline.as_ref().map(|b| b.report.curve.clone()),
                sweep: None,
            };
            stages.store("distill", &key, &outputs, &r)?;
            r
        }
    };

    // Quantize (PTQ, then QAT when asked) the student and the baseline.
    let qopts = pipeline::QuantizeOptions {
        calibration: cfg.quantize.calibration,
        samples: cfg.quantize.calibration_samples,
        qat_steps: cfg.quantize.qat_steps,
        qat_learning_rate: cfg.quantize.qat_learning_rate,
        weight_scales: cfg.quantize.weight_scales,
        rounding: cfg.quantize.rounding,
    };
    let tkd = out_dir.join("student.tkd");
    let baseline_tkd = out_dir.join("baseline.tkd");
    let mut key = InputHash::new("quantize").value(&cfg.quantize)?.value(&(&teacher_hash, &data_hash))?.path(&ckpt)?;
    if distilled.baseline.is_some() {
        key = key.path(&baseline_ckpt)?;
    }
    let key = key.finish();
    let quantized: QuantizeRecord = match stages.fresh("quantize", &key) {
        Some(r) => {
            progress.note(&format!("quantize: inputs unchanged, skipped ({} kept)", tkd.display()));
            r
        }
        None => {
            let q = pipeline::quantize(&ckpt, &data, qopts, read, progress)?;
            crate::util::write_atomic(&tkd, &q.bytes)?;
            let mut outputs = vec![tkd.as_path()];
            let baseline = match distilled.baseline {
                Some(_) => {
                    let bq = pipeline::quantize(&baseline_ckpt, &data, qopts, read, progress)?;
                    crate::util::write_atomic(&baseline_tkd, &bq.bytes)?;
                    outputs.push(&baseline_tkd);
                    Some((bq.int8_accuracy, bq.qat.as_ref().map(|(_, ptq)| *ptq)))
                }
                None => None,
            };
            let r = QuantizeRecord {
                int8_test_accuracy: q.int8_accuracy,
                ptq_int8_test_accuracy: q.qat.as_ref().map(|(_, ptq)| *ptq),
                qat: q.qat.as_ref().map(|(r, _)| serde_json::to_value(r)).transpose()?,
                int8_float_agreement: q.float_agreement,
                tkd_bytes: q.bytes.len(),
                baseline,
            };
            stages.store("quantize", &key, &outputs, &r)?;
            r
        }
    };

    // Export to the formats listed.
    let exports: Vec<ExportRecord> = match &cfg.export {
        Some(x) => {
            let key = InputHash::new("export").value(x)?.path(&ckpt)?.path(&tkd)?.finish();
            match stages.fresh("export", &key) {
                Some(r) => {
                    progress.note("export: inputs unchanged, skipped");
                    r
                }
                None => {
                    let mut records = Vec::new();
                    for f in &x.formats {
                        let (source, file) = export_target(*f, &ckpt, &tkd, &out_dir);
                        crate::export::export(source, *f, &file)?;
                        let bytes = std::fs::metadata(&file)?.len();
                        let format =
                            clap::ValueEnum::to_possible_value(f).map_or_else(String::new, |v| v.get_name().to_owned());
                        records.push(ExportRecord { format, file, bytes });
                    }
                    let outputs: Vec<&Path> = records.iter().map(|r| r.file.as_path()).collect();
                    stages.store("export", &key, &outputs, &records)?;
                    records
                }
            }
        }
        None => Vec::new(),
    };

    // Emulate on a board.
    let emulation: Option<serde_json::Value> = match &cfg.emulate {
        Some(e) => {
            let key = InputHash::new("emulate").value(e)?.value(&data_hash)?.path(&tkd)?.finish();
            match stages.fresh("emulate", &key) {
                Some(r) => {
                    progress.note(&format!("emulate: inputs unchanged, skipped (on {})", e.board));
                    Some(r)
                }
                None => {
                    let r = super::emulate_model(&tkd, &data, crate::data::SplitName::Test, &e.board, e.limit, read)?;
                    let r = serde_json::to_value(r)?;
                    stages.store("emulate", &key, &[], &r)?;
                    Some(r)
                }
            }
        }
        None => None,
    };
    // A real board.
    let device: Option<serde_json::Value> = match &cfg.device {
        Some(dv) => {
            let board = crate::device::board(&dv.board)?;
            if dv.flash {
                let f = crate::device::flash(board, &tkd, false, crate::device::FirmwareBuild::default())?;
                progress.note(&format!("flashed {} ({} B of firmware)", board.name, f.flash_bytes));
            }
            let (q, n, labels) =
                super::commands::device_inputs(&tkd, &data, crate::data::SplitName::Test, dv.limit, read)?;
            let r = crate::device::verify_port(&dv.port, dv.baud, Some(board), &tkd, &q, n, labels.as_deref())
                .with_context(|| format!("verifying {} on {}", tkd.display(), dv.port))?;
            Some(serde_json::to_value(r)?)
        }
        None => None,
    };
    let qat_steps = quantized.qat.as_ref().and_then(|q| q["steps"].as_u64());
    let summary = json!({
        "config": path,
        "teacher_test_accuracy": distilled.teacher_test_accuracy,
        "teacher_backends": distilled.teacher_backends,
        "student": opts.student,
        "parameters": distilled.parameters,
        "temperature": distilled.sweep.as_ref().map_or(Some(opts.temperature), |s| s.temperature),
        "alpha": distilled.sweep.as_ref().map_or(opts.alpha, |s| s.alpha),
        "sweep": distilled.sweep,
        "steps": distilled.steps,
        "baseline_steps": distilled.baseline.map(|b| b.1),
        "float_test_accuracy": distilled.float_test_accuracy,
        "int8_test_accuracy": quantized.int8_test_accuracy,
        "ptq_int8_test_accuracy": quantized.ptq_int8_test_accuracy,
        "qat": quantized.qat,
        "int8_float_agreement": quantized.int8_float_agreement,
        "baseline_float_test_accuracy": distilled.baseline.map(|b| b.0),
        "baseline_int8_test_accuracy": quantized.baseline.map(|b| b.0),
        "baseline_ptq_int8_test_accuracy": quantized.baseline.and_then(|b| b.1),
        "tkd_bytes": quantized.tkd_bytes,
        "emulation": emulation,
        "device": device,
        "exports": exports,
        "seconds": started.elapsed().as_secs_f64(),
        "out_dir": out_dir,
    });
    crate::util::write_atomic(&out_dir.join("report.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    let boards: Vec<&serde_json::Value> = emulation.iter().chain(&device).collect();
    write_report(path, &out_dir, &data, read, &opts, &distilled, &quantized, &boards, &tkd)?;
    if as_json {
        outln!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    outln!("tinykd run {} ({:.1} s)", path.display(), started.elapsed().as_secs_f64());
    let (t, a) = distilled.temperature_alpha(&opts);
    outln!(
        "  student {} ({} parameters), T = {t}, α = {a}{}",
        opts.student,
        distilled.parameters,
        if distilled.sweep.is_some() { " (selected by the sweep)" } else { "" }
    );
    if let Some(t) = distilled.teacher_test_accuracy {
        outln!(
            "  teacher                          test accuracy {}  ({})",
            pct(t),
            if distilled.teacher_backends.is_empty() {
                "logits from the cache".to_string()
            } else {
                distilled.teacher_backends.join(", ")
            }
        );
    }
    outln!(
        "  distilled student, float         test accuracy {}  ({} optimizer steps)",
        pct(distilled.float_test_accuracy),
        distilled.steps
    );
    match (quantized.ptq_int8_test_accuracy, qat_steps) {
        (Some(ptq), Some(steps)) => {
            outln!("  distilled student, int8 PTQ      test accuracy {}", pct(ptq));
            outln!(
                "  distilled student, int8 QAT      test accuracy {}  ({} bytes; {steps} QAT steps)",
                pct(quantized.int8_test_accuracy),
                quantized.tkd_bytes
            );
        }
        _ => outln!(
            "  distilled student, int8 (.tkd)   test accuracy {}  ({} bytes)",
            pct(quantized.int8_test_accuracy),
            quantized.tkd_bytes
        ),
    }
    if let (Some((bf, bsteps)), Some((bi, bptq))) = (distilled.baseline, quantized.baseline) {
        outln!("  baseline (α = 0), float          test accuracy {}  ({bsteps} optimizer steps)", pct(bf));
        match bptq {
            Some(ptq) => {
                outln!("  baseline (α = 0), int8 PTQ       test accuracy {}", pct(ptq));
                outln!("  baseline (α = 0), int8 QAT       test accuracy {}", pct(bi));
            }
            None => outln!("  baseline (α = 0), int8           test accuracy {}", pct(bi)),
        }
    }
    for e in emulation.iter().chain(&device) {
        let f = |k: &str| e[k].as_f64().unwrap_or(0.0);
        if let Some(acc) = e["accuracy"].as_f64() {
            outln!(
                "  on {:<28} test accuracy {}  agreement {}",
                e["board"].as_str().unwrap_or("?"),
                pct(acc),
                pct(f("agreement"))
            );
        }
        outln!(
            "    {:.0} instructions/inference, flash {} B, RAM {} B",
            f("instructions_per_inference"),
            f("flash_bytes"),
            f("ram_bytes")
        );
    }
    for x in &exports {
        outln!("  exported {:<8} {} ({} bytes)", x.format, x.file.display(), x.bytes);
    }
    outln!("  artefacts in {}", out_dir.display());
    Ok(())
}
