//! Emulator harness helpers: make real students from models/ and run them on
//! emulated boards through `tinykd`'s own device stage.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tinykd::data::{ReadOptions, SplitName};
use tinykd::pipeline::{self, DistillOptions};
use tinykd::progress::Progress;
use tinykd::quant::Calibration;
use tinykd::teacher::BackendChoice;

/// The repository's `models/` directory.
pub fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("models")
}

/// A student of the harness: its `.tkd` and the data it was made for.
#[derive(Debug, Clone)]
pub struct Student {
    pub name: &'static str,
    pub tkd: PathBuf,
    pub data: PathBuf,
    /// Multiply-accumulates per inference (for instructions per MAC).
    pub macs: f64,
}

/// Distills (for `steps` optimizer steps) and quantizes a student into `dir/<name>.tkd`.
/// `augment`: the main job's consistent teaching (shifts ±3, noise 0.05, 8 views).
pub fn make_student(
    dir: &Path,
    name: &'static str,
    data: &str,
    teacher: &str,
    spec: &str,
    steps: usize,
    augment: bool,
) -> Result<Student> {
    let data = models().join("data").join(data);
    let mut opts = DistillOptions::new(vec![models().join("teachers").join(teacher)], data.clone(), spec);
    opts.steps = Some(steps);
    if augment {
        opts.augment = tinykd::distill::Augment { shift: 3, noise: 0.05, views: 8, ..Default::default() };
        opts.temperature = 2.0;
    }
    opts.seed = 1;
    opts.backend = BackendChoice::Tract;
    opts.baseline = false;
    let out = pipeline::distill(&opts, &Progress::hidden())?;
    let ckpt = dir.join(format!("{name}.ckpt"));
    out.checkpoint.save(&ckpt)?;
    let macs = out.kd.student.macs_per_sample() as f64;
    let q = pipeline::quantize(
        &ckpt,
        &data,
        Calibration::Minmax,
        ReadOptions::default(),
        &tinykd::progress::Progress::hidden(),
    )?;
    let tkd = dir.join(format!("{name}.tkd"));
    tinykd::util::write_atomic(&tkd, &q.bytes)?;
    Ok(Student { name, tkd, data, macs })
}

/// The same student quantized again with one weight scale per layer
/// (`--weight-scales per-tensor`), into `dir/<name>-per-tensor.tkd`: every
/// layer's channels then share a multiplier, which a compiled model stores
/// once per layer (`kernels::SharedMultiplier`).
pub fn per_tensor(dir: &Path, s: &Student) -> Result<Student> {
    let ckpt = s.tkd.with_extension("ckpt");
    let opts = tinykd::pipeline::QuantizeOptions {
        calibration: Calibration::Minmax,
        weight_scales: tinykd::quant::WeightScales::PerTensor,
        ..Default::default()
    };
    let q = pipeline::quantize(&ckpt, &s.data, opts, ReadOptions::default(), &Progress::hidden())?;
    let tkd = dir.join(format!("{}-per-tensor.tkd", s.name));
    tinykd::util::write_atomic(&tkd, &q.bytes)?;
    Ok(Student { tkd, data: s.data.clone(), ..*s })
}

/// Host accuracy of a `.tkd` on its test split (the runtime on the host).
pub fn host_accuracy(s: &Student) -> Result<f64> {
    let r = pipeline::evaluate(
        &s.tkd,
        &s.data,
        SplitName::Test,
        BackendChoice::Tract,
        None,
        ReadOptions::default(),
        &Progress::hidden(),
    )?;
    r.accuracy.ok_or_else(|| anyhow::anyhow!("no labels"))
}
