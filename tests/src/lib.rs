//! Emulator harness helpers: make a real student from models/ and run it on
//! an emulated board through `tinykd`'s own emulate stage.

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

/// Distills and quantizes a small MNIST-1D student into `dir/student.tkd`.
pub fn mnist1d_student(dir: &Path, spec: &str, epochs: usize) -> Result<PathBuf> {
    let data = models().join("data/mnist1d.npz");
    let mut opts = DistillOptions::new(vec![models().join("teachers/mnist1d_cnn.onnx")], data.clone(), spec);
    opts.epochs = Some(epochs);
    opts.seed = 1;
    opts.backend = BackendChoice::Tract;
    opts.baseline = false;
    let out = pipeline::distill(&opts, &Progress::hidden())?;
    let ckpt = dir.join("student.ckpt");
    out.checkpoint.save(&ckpt)?;
    let q = pipeline::quantize(&ckpt, &data, Calibration::Minmax, ReadOptions::default())?;
    let tkd = dir.join("student.tkd");
    tinykd::util::write_atomic(&tkd, &q.bytes)?;
    Ok(tkd)
}

/// Host accuracy of a `.tkd` on the MNIST-1D test split (the runtime on the host).
pub fn host_accuracy(tkd: &Path) -> Result<f64> {
    let r = pipeline::evaluate(
        tkd,
        &models().join("data/mnist1d.npz"),
        SplitName::Test,
        BackendChoice::Tract,
        None,
        ReadOptions::default(),
        &Progress::hidden(),
    )?;
    r.accuracy.ok_or_else(|| anyhow::anyhow!("no labels"))
}
