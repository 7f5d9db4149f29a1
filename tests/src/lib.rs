//! Emulator harness helpers: make real students from models/ and run them on
//! emulated boards through `tinykd`'s own device stage.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tinykd::data::{ReadOptions, SplitName};
use tinykd::distill::DistillOptions;
use tinykd::pipeline;
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
    let teacher = models().join("teachers").join(teacher);
    make_student_from(dir, name, &models().join("data").join(data), Some(&teacher), spec, steps, augment)
}

/// [`make_student`] from any data (a path), with a teacher or without one
/// (then on the labels alone, α = 0).
pub fn make_student_from(
    dir: &Path,
    name: &'static str,
    data: &Path,
    teacher: Option<&Path>,
    spec: &str,
    steps: usize,
    augment: bool,
) -> Result<Student> {
    let data = data.to_path_buf();
    let mut opts = DistillOptions::new(teacher.into_iter().map(Path::to_path_buf).collect(), data.clone(), spec);
    if teacher.is_none() {
        opts.alpha = 0.0;
    }
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

/// A synthetic image classification set at `path` (`.npz`, NCHW float32,
/// int64 labels): `classes` classes, each a brighter 3×3 patch at its own
/// place in its own channel, over deterministic noise. For shapes the
/// example data does not have (several input channels, non-square).
pub fn synthetic_images(path: &Path, channels: usize, h: usize, w: usize, classes: usize) -> Result<()> {
    use npyz::WriterBuilder;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        // xorshift64*: deterministic, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        (r as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
    };
    let mut npz = npyz::npz::NpzWriter::create(path)?;
    for (split, n) in [("train", 800usize), ("test", 500)] {
        let labels: Vec<i64> = (0..n).map(|i| ((i * 7 + 3) % classes) as i64).collect();
        let mut x = vec![0f32; n * channels * h * w];
        for (i, &y) in labels.iter().enumerate() {
            let y = y as usize;
            let (c, r0, c0) =
                (y % channels, (y * 3) % h.saturating_sub(2).max(1), (y * 5) % w.saturating_sub(2).max(1));
            let img = &mut x[i * channels * h * w..(i + 1) * channels * h * w];
            img.iter_mut().for_each(|v| *v = noise());
            for r in r0..(r0 + 3).min(h) {
                for k in c0..(c0 + 3).min(w) {
                    img[(c * h + r) * w + k] += 2.5;
                }
            }
        }
        let shape = [n as u64, channels as u64, h as u64, w as u64];
        let mut a =
            npz.array::<f32>(&format!("x_{split}"), Default::default())?.default_dtype().shape(&shape).begin_nd()?;
        a.extend(x)?;
        a.finish()?;
        let mut a = npz
            .array::<i64>(&format!("y_{split}"), Default::default())?
            .default_dtype()
            .shape(&[n as u64])
            .begin_nd()?;
        a.extend(labels)?;
        a.finish()?;
    }
    Ok(())
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
