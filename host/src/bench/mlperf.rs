//! `tinykd bench --firmware --mlperf`: MLPerf Tiny's four int8 reference
//! models, imported, on emulated boards: instructions per inference,
//! planned arena beside the liveness bound, RAM (static + measured peak
//! stack, the arena included), flash, and agreement with the host and with
//! TFLite Micro's interpreter on the same random inputs, printed beside
//! CMSIS-NN's kernels on the same layers, the best published stacks and
//! TFLite Micro's minimum arena (`../shared`-measured figures, below).
//!
//! QEMU counts instructions; the published figures are cycles on boards
//! with flash wait states, so that comparison is indicative.

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};

/// What is known of one model beforehand.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    pub name: &'static str,
    pub file: &'static str,
    /// CMSIS-NN's kernels on the model's layers, instructions per
    /// inference on the M4 and the M7 (QEMU `-icount`, gcc 12.2 -O2).
    pub cmsis_nn: (f64, f64),
    /// Best published Cortex-M4 figures, megacycles: X-CUBE-AI 9, Plumerai
    /// (MLPerf Tiny v1.x, NUCLEO-L4R5ZI at 120 MHz).
    pub published_m4: (f64, f64),
    /// X-CUBE-AI 9 on the Cortex-M7 (NUCLEO-H7A3ZI), megacycles.
    pub published_m7: f64,
    /// TFLite Micro's minimum arena (planned tensors + persistent), bytes.
    pub tflm_arena: usize,
}

pub const MODELS: [Reference; 4] = [
    Reference {
        name: "KWS DS-CNN",
        file: "kws_ref_model.tflite",
        cmsis_nn: (7_692_760.0, 7_638_440.0),
        published_m4: (5.18, 5.73),
        published_m7: 3.17,
        tflm_arena: 24_272,
    },
    Reference {
        name: "IC ResNet-8",
        file: "pretrainedResnet_quant.tflite",
        cmsis_nn: (29_858_360.0, 30_021_040.0),
        published_m4: (19.8, 20.1),
        published_m7: 11.4,
        tflm_arena: 55_984,
    },
    Reference {
        name: "VWW MobileNetV1 0.25",
        file: "vww_96_int8.tflite",
        cmsis_nn: (24_092_440.0, 24_015_880.0),
        published_m4: (10.7, 11.9),
        published_m7: 6.67,
        tflm_arena: 103_672,
    },
    Reference {
        name: "AD autoencoder",
        file: "ad01_int8.tflite",
        cmsis_nn: (580_240.0, 580_480.0),
        published_m4: (0.63, 0.49),
        published_m7: 0.34,
        tflm_arena: 4_632,
    },
];

/// One model on one board.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelRun {
    pub model: String,
    pub board: String,
    pub n: usize,
    pub instructions: f64,
    /// CMSIS-NN's count on this core (the M4's on the M4, the M7's on the M7).
    pub cmsis_nn: f64,
    pub arena_bytes: usize,
    pub liveness_bound: usize,
    /// Static RAM + measured peak stack (the arena is on the stack).
    pub ram_bytes: u64,
    pub flash_bytes: u64,
    /// Share of inputs whose outputs equal the host's, byte for byte.
    pub host_agreement: f64,
    /// The same against TFLite Micro's interpreter, when it could run.
    pub tflm_agreement: Option<f64>,
    pub tflm_arena: usize,
    pub published_m4: (f64, f64),
    pub published_m7: f64,
}

/// Samples per model and board (each compared with the host and TFLite Micro).
const SAMPLES: usize = 20;

/// Runs every model (or those whose name contains `only`) on every board.
pub fn run(
    dir: &Path,
    boards: &[&str],
    only: Option<&str>,
    python: &str,
    progress: &crate::progress::Progress,
) -> Result<Vec<ModelRun>> {
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut out = Vec::new();
    for r in MODELS.iter().filter(|r| only.is_none_or(|o| r.name.contains(o))) {
        let tflite = dir.join(r.file);
        let blob = crate::export::tflite_import::import_file(&tflite)?;
        let tkd = work.path().join(r.file.replace(".tflite", ".tkd"));
        crate::util::write_atomic(&tkd, &blob)?;
        let model = crate::int8::parse(&blob)?;
        let len = model.input_len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(len as u64);
        let q: Vec<i8> = (0..SAMPLES * len).map(|_| rng.random()).collect();
        let (_, host) = crate::int8::run_quantized(&model, &q, SAMPLES)?;
        let tflm = tflm_outputs(python, &tflite, &q, SAMPLES, work.path());
        let tflm_agreement = tflm.map(|t| agreement(&t, &host, model.class_count()));
        for &name in boards {
            progress.note(&format!("{} on {name}", r.name));
            let board = crate::device::board(name)?;
            let e = crate::device::emulate(board, &tkd, &q, SAMPLES, None)
                .with_context(|| format!("{} on {name}", r.name))?;
            let m7 = board.target.starts_with("thumbv7em") && board.name.contains("an500");
            out.push(ModelRun {
                model: r.name.into(),
                board: name.into(),
                n: e.n,
                instructions: e.instructions_per_inference,
                cmsis_nn: if m7 { r.cmsis_nn.1 } else { r.cmsis_nn.0 },
                arena_bytes: model.arena_bytes(),
                liveness_bound: crate::int8::liveness_bound(&model)?,
                ram_bytes: e.ram_bytes,
                flash_bytes: e.flash_bytes,
                host_agreement: e.agreement,
                tflm_agreement,
                tflm_arena: r.tflm_arena,
                published_m4: r.published_m4,
                published_m7: r.published_m7,
            });
        }
    }
    Ok(out)
}

/// Share of samples (rows of `classes`) equal in `a` and `b`.
fn agreement(a: &[i8], b: &[i8], classes: usize) -> f64 {
    let rows = a.len() / classes.max(1);
    let same = a.chunks_exact(classes).zip(b.chunks_exact(classes)).filter(|(x, y)| x == y).count();
    if rows == 0 || a.len() != b.len() { 0.0 } else { same as f64 / rows as f64 }
}

/// TFLite Micro's outputs for `q` through `scripts/tflm_run.py`, or `None`
/// when it cannot run (no interpreter with the `tflite-micro` wheel).
fn tflm_outputs(python: &str, tflite: &Path, q: &[i8], n: usize, work: &Path) -> Option<Vec<i8>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tflm_run.py");
    let (inputs, outputs) = (work.join("in.npy"), work.join("out.npy"));
    let shape = [n as u64, (q.len() / n.max(1)) as u64];
    let mut buf = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut buf).begin_nd().ok()?;
        w.extend(q.iter().copied()).ok()?;
        w.finish().ok()?;
    }
    std::fs::write(&inputs, buf).ok()?;
    let ok = std::process::Command::new(python)
        .arg(script)
        .args([tflite, &inputs, &outputs])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return None;
    }
    npyz::NpyFile::new(std::fs::File::open(&outputs).ok()?).ok()?.into_vec().ok()
}

/// The runs as a Markdown table.
pub fn table(runs: &[ModelRun]) -> String {
    let mut s = String::from(
        "| model | board | instructions / inference | CMSIS-NN | ratio | published M4 (X-CUBE-AI / Plumerai), M7 \
         (X-CUBE-AI), Mcycles | arena (most alive at once) | RAM: arena + stack (TFLM min arena) | flash | device = host \
         | TFLM = host |\n|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let tflm = r.tflm_agreement.map_or("–".into(), |a| format!("{:.0} %", 100.0 * a));
        s.push_str(&format!(
            "| {} | {} | {:.3} M | {:.3} M | {:.3} | {} / {}, {} | {} ({}) | {} ({}) | {} | {:.0} % of {} | {tflm} |\n",
            r.model,
            r.board,
            r.instructions / 1e6,
            r.cmsis_nn / 1e6,
            r.instructions / r.cmsis_nn,
            r.published_m4.0,
            r.published_m4.1,
            r.published_m7,
            r.arena_bytes,
            r.liveness_bound,
            r.ram_bytes,
            r.tflm_arena,
            r.flash_bytes,
            100.0 * r.host_agreement,
            r.n,
        ));
    }
    s
}
