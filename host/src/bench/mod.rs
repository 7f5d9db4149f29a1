//! `tinykd bench`: student-training throughput against PyTorch on the same
//! student, data, batch size, epochs and loss, measured in the same run;
//! teacher inference throughput; and ([`firmware`]) the device kernels'
//! instructions per MAC against CMSIS-NN.

pub mod firmware;
pub mod mlperf;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::data::{Dataset, LoadOptions, SplitName};
use crate::distill::{self, LossConfig, LossKind, Optimizer, Schedule, TrainConfig, TrainSet};
use crate::progress::Progress;
use crate::student::Student;

/// One side of the comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub samples_per_second: f64,
    pub seconds: f64,
    pub parameters: usize,
}

/// Floating-point operations of one training sample: the forward pass's
/// multiply-accumulates, twice again in the backward pass (input and
/// weight gradients), two operations each.
pub fn training_flops_per_sample(student: &Student) -> f64 {
    6.0 * student.macs_per_sample() as f64
}

/// The machine's float throughput as a matrix product reaches it: one
/// 1024×1024×1024 SGEMM per core, both cores at once (`matrixmultiply`,
/// blocked for the caches), the best of three rounds, in GFLOP/s. The peak a
/// training run's share is taken of.
pub fn gemm_peak_gflops() -> f64 {
    const N: usize = 1024;
    let a: Vec<f32> = (0..N * N).map(|i| (i % 17) as f32 * 0.01).collect();
    let b = a.clone();
    let run = || {
        let mut c = vec![0.0f32; N * N];
        let start = Instant::now();
        for _ in 0..3 {
            crate::student::sgemm::packed(N, N, N, &a, N as isize, 1, &b, N as isize, 1, 0.0, &mut c);
        }
        3.0 * 2.0 * (N * N * N) as f64 / start.elapsed().as_secs_f64() / 1e9
    };
    run();
    (0..3).map(|_| rayon::join(run, run)).map(|(x, y)| x + y).fold(0.0, f64::max)
}

/// Training steps each side runs untimed before the timed epochs.
pub const WARMUP_STEPS: usize = 5;

/// tinykd's training throughput: KD loss against fixed random teacher
/// logits; and the trained student (its spec is the layers, blocks and
/// named architectures expanded, for the PyTorch side).
pub fn tinykd_training(data: &Path, spec: &str, epochs: usize, batch_size: usize) -> Result<(Throughput, Student)> {
    let d = Dataset::load(data, LoadOptions::default())?;
    let y = d.labels(SplitName::Train)?;
    let classes = d.class_count;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut student = Student::from_spec(spec, &d.sample_shape, classes, &mut rng)?;
    let normal = Normal::new(0.0f32, 3.0).context("normal")?;
    let teacher: Vec<f32> = (0..d.train.n * classes).map(|_| normal.sample(&mut rng)).collect();
    let labels: Vec<Option<usize>> = y.iter().map(|v| Some(*v as usize)).collect();
    let set = TrainSet { x: &d.train.x, n: d.train.n, views: 1, labels: &labels, teacher: Some(&teacher), mix: &[] };
    let per_epoch = d.train.n.div_ceil(batch_size.max(1));
    let cfg = TrainConfig {
        steps: epochs * per_epoch,
        eval_every: per_epoch,
        batch_size,
        learning_rate: 3e-3,
        weight_decay: 0.0,
        optimizer: Optimizer::Adamw,
        schedule: Schedule::Constant,
        warmup_steps: 0,
        patience: 0,
        seed: 0,
        loss: LossConfig { kind: LossKind::Kl, temperature: 4.0, alpha: 0.9 },
    };
    // Untimed warm-up steps on a copy, as the PyTorch side takes: neither
    // side's one-time costs (first page faults, pools filling) are timed.
    let mut warm = student.clone();
    distill::train(&mut warm, set, None, &TrainConfig { steps: WARMUP_STEPS, ..cfg }, &Progress::hidden());
    let start = Instant::now();
    distill::train(&mut student, set, None, &cfg, &Progress::hidden());
    let seconds = start.elapsed().as_secs_f64();
    let throughput = Throughput {
        samples_per_second: (epochs * d.train.n) as f64 / seconds,
        seconds,
        parameters: student.param_count(),
    };
    Ok((throughput, student))
}

/// The PyTorch script shipped with tinykd.
pub fn pytorch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts").join("bench_train_pytorch.py")
}

/// PyTorch's throughput, or `None` when `python` has no torch.
pub fn pytorch_training(
    python: &str,
    data: &Path,
    spec: &str,
    epochs: usize,
    batch_size: usize,
) -> Result<Option<Throughput>> {
    let has_torch =
        crate::children::output(Command::new(python).args(["-c", "import torch"])).is_ok_and(|o| o.status.success());
    if !has_torch {
        return Ok(None);
    }
    let out = crate::children::output(Command::new(python).arg(pytorch_script()).args(["--data"]).arg(data).args([
        "--student",
        spec,
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        &batch_size.to_string(),
        "--warmup-steps",
        &WARMUP_STEPS.to_string(),
    ]))
    .with_context(|| format!("cannot run {python}"))?;
    if !out.status.success() {
        bail!("the PyTorch benchmark failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("the PyTorch benchmark printed no JSON")?;
    Ok(Some(Throughput {
        samples_per_second: v["samples_per_second"].as_f64().unwrap_or(0.0),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        parameters: v["parameters"].as_u64().unwrap_or(0) as usize,
    }))
}

/// Teacher inference throughput of one backend at one batch size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TeacherThroughput {
    pub backend: String,
    pub batch: usize,
    pub samples: usize,
    pub samples_per_second: f64,
}

/// Times `teacher` on the first test samples of `data` with `backend`, at
/// each batch size (batch 1 on at most 256 samples).
pub fn teacher_throughput(
    teacher: &Path,
    data: &Path,
    backend: crate::teacher::BackendChoice,
    batches: &[usize],
) -> Result<Vec<TeacherThroughput>> {
    let d = Dataset::load(data, LoadOptions::default())?;
    let mut t = crate::teacher::Teacher::open(teacher, backend, None)?;
    t.expected_classes = Some(d.class_count);
    let len = d.sample_len();
    let mut out = Vec::new();
    for &b in batches {
        t.batch_size = b;
        let n = d.test.n.min(if b == 1 { 256 } else { 2048 });
        // One warm-up batch: onnxruntime and tract both plan on first use.
        t.logits(&d.test.x[..len * b.min(n)], b.min(n), &d.sample_shape, &Progress::hidden())?;
        let start = Instant::now();
        t.logits(&d.test.x[..n * len], n, &d.sample_shape, &Progress::hidden())?;
        let s = start.elapsed().as_secs_f64();
        out.push(TeacherThroughput {
            backend: t.backend_name().into(),
            batch: b,
            samples: n,
            samples_per_second: n as f64 / s,
        });
    }
    Ok(out)
}

/// One teacher's inference throughput, per backend that could run it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TeacherBench {
    pub teacher: PathBuf,
    pub throughput: Vec<Vec<TeacherThroughput>>,
    /// Backends that could not run it, with why.
    #[serde(skip)]
    pub failures: Vec<String>,
}

/// Each teacher on onnxruntime and on tract, at batch 1, 32 and 256.
pub fn teachers(teachers: &[PathBuf], data: &Path) -> Vec<TeacherBench> {
    use crate::teacher::BackendChoice;
    teachers
        .iter()
        .map(|t| {
            let mut bench = TeacherBench { teacher: t.clone(), throughput: Vec::new(), failures: Vec::new() };
            for backend in [BackendChoice::Ort, BackendChoice::Tract] {
                match teacher_throughput(t, data, backend, &[1, 32, 256]) {
                    Ok(r) => bench.throughput.push(r),
                    Err(e) => bench.failures.push(format!("{}: {backend:?} not measured: {e:#}", t.display())),
                }
            }
            bench
        })
        .collect()
}

/// One student's training throughput, tinykd's beside PyTorch's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StudentBench {
    pub student: String,
    /// Training operations per sample ([`training_flops_per_sample`]).
    pub flops_per_sample: f64,
    /// The median round's (by samples per second).
    pub tinykd: Throughput,
    /// The median round's; `None` when the Python has no torch.
    pub pytorch: Option<Throughput>,
    /// tinykd's samples per second over PyTorch's: the median of the rounds' ratios.
    pub ratio: Option<f64>,
    /// Each round's ratio, in order (tinykd ran first in each).
    pub round_ratios: Vec<f64>,
}

/// Training throughput of each student (`;`-separated specs), tinykd and
/// PyTorch on the same data, batch size and epochs, `rounds` times each,
/// alternating: a slow spell of a shared machine then falls on both sides
/// of a round, and the median round is reported.
pub fn students(
    data: &Path,
    specs: &str,
    epochs: usize,
    batch_size: usize,
    rounds: usize,
    python: &str,
) -> Result<Vec<StudentBench>> {
    let mut out = Vec::new();
    for spec in specs.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut student = None;
        for _ in 0..rounds.max(1) {
            let (t, s) = tinykd_training(data, spec, epochs, batch_size)?;
            ours.push(t);
            let p = pytorch_training(python, data, &s.spec, epochs, batch_size)?;
            student = Some(s);
            match p {
                Some(p) => theirs.push(p),
                // No torch: one round says all there is.
                None => break,
            }
        }
        let Some(student) = student else { continue };
        let round_ratios: Vec<f64> =
            ours.iter().zip(&theirs).map(|(a, b)| a.samples_per_second / b.samples_per_second).collect();
        let ratio = median(&round_ratios);
        let flops_per_sample = training_flops_per_sample(&student);
        out.push(StudentBench {
            student: spec.to_owned(),
            flops_per_sample,
            tinykd: median_throughput(ours).expect("at least one round"),
            pytorch: median_throughput(theirs),
            ratio,
            round_ratios,
        });
    }
    Ok(out)
}

/// The median of `v` (the mean of the middle two for an even count), `None` when empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    match s.len() {
        0 => None,
        n if n % 2 == 1 => Some(s[m]),
        _ => Some((s[m - 1] + s[m]) / 2.0),
    }
}

/// The round with the median throughput (the lower middle one for an even count).
fn median_throughput(mut v: Vec<Throughput>) -> Option<Throughput> {
    v.sort_by(|a, b| a.samples_per_second.total_cmp(&b.samples_per_second));
    let m = v.len().saturating_sub(1) / 2;
    (!v.is_empty()).then(|| v.swap_remove(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_rounds() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.2]), Some(1.2));
        assert_eq!(median(&[1.5, 0.5, 1.0]), Some(1.0));
        assert_eq!(median(&[1.0, 3.0, 2.0, 0.0]), Some(1.5));
        let t = |s: f64| Throughput { samples_per_second: s, seconds: 1.0, parameters: 0 };
        assert_eq!(median_throughput(vec![t(3.0), t(1.0), t(2.0)]).map(|t| t.samples_per_second), Some(2.0));
        assert_eq!(median_throughput(vec![t(4.0), t(1.0)]).map(|t| t.samples_per_second), Some(1.0));
        assert!(median_throughput(Vec::new()).is_none());
    }
}
