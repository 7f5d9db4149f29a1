//! `tinykd run CONFIG.toml`: every stage from one config file — distill (or
//! sweep), quantize, export, emulate, a real board — each skipped while its
//! inputs are unchanged (`stages.json`), then `report.json`, `report.md`
//! and `report.html`. The CLI prints the returned [`RunSummary`].

mod config;
mod records;
mod report;

pub use config::{Config, DeviceSection, EmulateSection, ExportSection, QuantizeSection, SweepSection, resolve};
pub use records::{DistillRecord, ExportRecord, QuantizeRecord, RunSummary, SweepRecord};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::data::{ReadOptions, SplitName};
use crate::device::EmulationReport;
use crate::distill::{Checkpoint, DistillOptions, TrainingRecord};
use crate::pipeline;
use crate::pipeline::stages::{InputHash, Stages};
use crate::progress::Progress;

/// A run's inputs, resolved against the config file's directory.
struct Run<'a> {
    cfg: Config,
    path: &'a Path,
    out_dir: PathBuf,
    data: PathBuf,
    opts: DistillOptions,
    read: ReadOptions,
    teacher_hash: String,
    data_hash: String,
    ckpt: PathBuf,
    baseline_ckpt: PathBuf,
    tkd: PathBuf,
    baseline_tkd: PathBuf,
}

impl<'a> Run<'a> {
    fn new(path: &'a Path) -> Result<Run<'a>> {
        let cfg = Config::read(path)?;
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
        let read = ReadOptions { input_scale: opts.input_scale, layout: Some(opts.layout) };
        // The teacher cache's key: the ONNX files with their external tensor
        // data and the chosen output; then any score file.
        let teachers = crate::teacher::cache::teacher_key(&opts.teachers, opts.teacher_output.as_deref())?;
        let teacher_hash = opts
            .teacher_logits
            .iter()
            .try_fold(InputHash::new("teachers").value(&teachers)?, |h, f| h.path(f))?
            .finish();
        let data_hash = InputHash::new("data").path(&data)?.finish();
        Ok(Run {
            ckpt: out_dir.join("student.ckpt"),
            baseline_ckpt: out_dir.join("baseline.ckpt"),
            tkd: out_dir.join("student.tkd"),
            baseline_tkd: out_dir.join("baseline.tkd"),
            cfg,
            path,
            out_dir,
            data,
            opts,
            read,
            teacher_hash,
            data_hash,
        })
    }

    /// The α = 0 baseline's checkpoint.
    fn save_baseline(&self, student: &crate::student::Student) -> Result<()> {
        let training = TrainingRecord { alpha: Some(0.0), layout: Some(self.opts.layout), ..Default::default() };
        Checkpoint::new(student.clone(), training).save(&self.baseline_ckpt)
    }

    /// Distill (the student and its α = 0 baseline), or sweep.
    fn distill(&self, stages: &mut Stages, progress: &Progress) -> Result<DistillRecord> {
        // Where the teacher cache lives changes no result.
        let key = InputHash::new("distill")
            .value(&DistillOptions { cache_dir: None, ..self.opts.clone() })?
            .value(&(&self.teacher_hash, &self.data_hash))?
            .value(&self.cfg.sweep)?
            .finish();
        if let Some(r) = stages.fresh("distill", &key) {
            progress.note(&format!("distill: inputs unchanged, skipped ({} kept)", self.ckpt.display()));
            return Ok(r);
        }
        let (record, outputs) = match &self.cfg.sweep {
            Some(sw) => (self.sweep(sw, progress)?, vec![self.ckpt.as_path(), self.baseline_ckpt.as_path()]),
            None => {
                let outcome = pipeline::distill(&self.opts, progress)?;
                outcome.checkpoint.save(&self.ckpt)?;
                let mut outputs = vec![self.ckpt.as_path()];
                if let Some(b) = &outcome.baseline {
                    self.save_baseline(&b.student)?;
                    outputs.push(&self.baseline_ckpt);
                }
                let record = DistillRecord {
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
                (record, outputs)
            }
        };
        stages.store("distill", &key, &outputs, &record)?;
        Ok(record)
    }

    fn sweep(&self, sw: &SweepSection, progress: &Progress) -> Result<DistillRecord> {
        let so = pipeline::SweepOptions {
            base: self.opts.clone(),
            temperatures: sw.temperatures.clone(),
            alphas: sw.alphas.clone(),
            students: vec![self.opts.student.clone()],
            seeds: sw.seeds.clone(),
            out_dir: self.out_dir.clone(),
        };
        let outcome = pipeline::sweep(&so, progress)?;
        outcome.checkpoint.save(&self.ckpt)?;
        let b = &outcome.baseline_run;
        self.save_baseline(&b.student)?;
        let (c, row) = (&outcome.chosen_run, &outcome.rows[outcome.best]);
        Ok(DistillRecord {
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
        })
    }

    /// Quantize (PTQ, then QAT when asked) the student and the baseline.
    fn quantize(&self, distilled: &DistillRecord, stages: &mut Stages, progress: &Progress) -> Result<QuantizeRecord> {
        let q = &self.cfg.quantize;
        let qopts = pipeline::QuantizeOptions {
            calibration: q.calibration,
            samples: q.calibration_samples,
            qat_steps: q.qat_steps,
            qat_learning_rate: q.qat_learning_rate,
            weight_scales: q.weight_scales,
            rounding: q.rounding,
        };
        let mut key =
            InputHash::new("quantize").value(q)?.value(&(&self.teacher_hash, &self.data_hash))?.path(&self.ckpt)?;
        if distilled.baseline.is_some() {
            key = key.path(&self.baseline_ckpt)?;
        }
        let key = key.finish();
        if let Some(r) = stages.fresh("quantize", &key) {
            progress.note(&format!("quantize: inputs unchanged, skipped ({} kept)", self.tkd.display()));
            return Ok(r);
        }
        let q = pipeline::quantize(&self.ckpt, &self.data, qopts, self.read, progress)?;
        crate::util::write_atomic(&self.tkd, &q.bytes)?;
        let mut outputs = vec![self.tkd.as_path()];
        let baseline = match distilled.baseline {
            Some(_) => {
                let bq = pipeline::quantize(&self.baseline_ckpt, &self.data, qopts, self.read, progress)?;
                crate::util::write_atomic(&self.baseline_tkd, &bq.bytes)?;
                outputs.push(&self.baseline_tkd);
                Some((bq.int8_accuracy, bq.qat.as_ref().map(|(_, ptq)| *ptq)))
            }
            None => None,
        };
        let record = QuantizeRecord {
            int8_test_accuracy: q.int8_accuracy,
            ptq_int8_test_accuracy: q.qat.as_ref().map(|(_, ptq)| *ptq),
            qat: q.qat.as_ref().map(|(r, _)| r.clone()),
            int8_float_agreement: q.float_agreement,
            tkd_bytes: q.bytes.len(),
            baseline,
        };
        stages.store("quantize", &key, &outputs, &record)?;
        Ok(record)
    }

    /// Export to the formats listed.
    fn export(&self, stages: &mut Stages, progress: &Progress) -> Result<Vec<ExportRecord>> {
        let Some(x) = &self.cfg.export else { return Ok(Vec::new()) };
        let key = InputHash::new("export").value(x)?.path(&self.ckpt)?.path(&self.tkd)?.finish();
        if let Some(r) = stages.fresh("export", &key) {
            progress.note("export: inputs unchanged, skipped");
            return Ok(r);
        }
        let mut records = Vec::new();
        for f in &x.formats {
            let (source, file) = export_target(*f, &self.ckpt, &self.tkd, &self.out_dir);
            crate::export::export(source, *f, &file)?;
            let bytes = std::fs::metadata(&file)?.len();
            let format = clap::ValueEnum::to_possible_value(f).map_or_else(String::new, |v| v.get_name().to_owned());
            records.push(ExportRecord { format, file, bytes });
        }
        let outputs: Vec<&Path> = records.iter().map(|r| r.file.as_path()).collect();
        stages.store("export", &key, &outputs, &records)?;
        Ok(records)
    }

    /// Emulate on a board.
    fn emulate(&self, stages: &mut Stages, progress: &Progress) -> Result<Option<EmulationReport>> {
        let Some(e) = &self.cfg.emulate else { return Ok(None) };
        let key = InputHash::new("emulate").value(e)?.value(&self.data_hash)?.path(&self.tkd)?.finish();
        if let Some(r) = stages.fresh("emulate", &key) {
            progress.note(&format!("emulate: inputs unchanged, skipped (on {})", e.board));
            return Ok(Some(r));
        }
        let r = pipeline::emulate_model(&self.tkd, &self.data, SplitName::Test, &e.board, e.limit, self.read)?;
        stages.store("emulate", &key, &[], &r)?;
        Ok(Some(r))
    }

    /// A real board: never skipped, its state is not an input tinykd can hash.
    fn device(&self, progress: &Progress) -> Result<Option<EmulationReport>> {
        let Some(dv) = &self.cfg.device else { return Ok(None) };
        let board = crate::device::board(&dv.board)?;
        if dv.flash {
            let f = crate::device::flash(board, &self.tkd, false, crate::device::FirmwareBuild::default())?;
            progress.note(&format!("flashed {} ({} B of firmware)", board.name, f.flash_bytes));
        }
        let (q, n, labels) = pipeline::device_inputs(&self.tkd, &self.data, SplitName::Test, dv.limit, self.read)?;
        let r = crate::device::verify_port(&dv.port, dv.baud, Some(board), &self.tkd, &q, n, labels.as_deref())
            .with_context(|| format!("verifying {} on {}", self.tkd.display(), dv.port))?;
        Ok(Some(r))
    }
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

/// Runs a config file end to end: every stage, `report.json` and the report.
pub fn run(path: &Path, progress: &Progress) -> Result<RunSummary> {
    let run = Run::new(path)?;
    let started = std::time::Instant::now();
    let mut stages = Stages::load(&run.out_dir);
    let distilled = run.distill(&mut stages, progress)?;
    let quantized = run.quantize(&distilled, &mut stages, progress)?;
    let exports = run.export(&mut stages, progress)?;
    let emulation = run.emulate(&mut stages, progress)?;
    let device = run.device(progress)?;
    let summary = RunSummary {
        config: path.to_path_buf(),
        teacher_test_accuracy: distilled.teacher_test_accuracy,
        teacher_backends: distilled.teacher_backends.clone(),
        student: run.opts.student.clone(),
        parameters: distilled.parameters,
        temperature: distilled.sweep.as_ref().map_or(Some(run.opts.temperature), |s| s.temperature),
        alpha: distilled.sweep.as_ref().map_or(run.opts.alpha, |s| s.alpha),
        sweep: distilled.sweep.clone(),
        steps: distilled.steps,
        baseline_steps: distilled.baseline.map(|b| b.1),
        float_test_accuracy: distilled.float_test_accuracy,
        int8_test_accuracy: quantized.int8_test_accuracy,
        ptq_int8_test_accuracy: quantized.ptq_int8_test_accuracy,
        qat: quantized.qat.clone(),
        int8_float_agreement: quantized.int8_float_agreement,
        baseline_float_test_accuracy: distilled.baseline.map(|b| b.0),
        baseline_int8_test_accuracy: quantized.baseline.map(|b| b.0),
        baseline_ptq_int8_test_accuracy: quantized.baseline.and_then(|b| b.1),
        tkd_bytes: quantized.tkd_bytes,
        emulation,
        device,
        exports,
        seconds: started.elapsed().as_secs_f64(),
        out_dir: run.out_dir.clone(),
    };
    crate::util::write_atomic(&run.out_dir.join("report.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    report::write(&run, &distilled, &quantized, &summary)?;
    Ok(summary)
}
