//! `tinykd bench --firmware`: instructions per multiply-accumulate of every
//! kernel on the shapes CMSIS-NN was measured on, and of whole
//! students, on emulated Cortex-M3 and M4 boards under QEMU's `-icount`
//! (exact and repeatable), beside CMSIS-NN's figure for the same shape.
//!
//! Each case is a one-layer model with random weights, quantized like any
//! student and run through the board protocol, so a case's count is what a
//! model with that layer costs: the kernel, its requantization and the
//! runtime's per-layer dispatch. The board checks its logits against the
//! host's on every input, so a faster kernel that is not bit-exact fails here.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::quant::{Calibration, quantize_student};
use crate::student::Student;

/// One benchmark case: a layer (or a whole student) on a sample shape.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub spec: &'static str,
    /// Channels-first sample shape.
    pub input: &'static [usize],
    /// CMSIS-NN's instructions per MAC on M3 and M4 (measured with QEMU `-icount`), if measured.
    pub cmsis_nn: Option<(f64, f64)>,
    /// A layer of an MLPerf Tiny reference model instead of `spec`: the
    /// file in `models/mlperf-tiny/` and the layer's index once imported,
    /// alone in a model with its real weights and quantization.
    pub layer: Option<(&'static str, usize)>,
}

impl Case {
    /// A whole example student (its footprint is reported too).
    pub fn is_student(&self) -> bool {
        self.name.contains("CNN")
    }
}

/// The CMSIS-NN shapes (H×W×Cin→Cout in its notation) and the models/ students.
pub const CASES: &[Case] = &[
    // Almost no arithmetic: what every inference pays (layer decoding, checks, dispatch).
    Case { layer: None, name: "overhead (FC 4→2)", spec: "dense(2)", input: &[4], cmsis_nn: None },
    Case { layer: None, name: "FC 40→32", spec: "dense(32)", input: &[40], cmsis_nn: Some((4.54, 3.25)) },
    Case { layer: None, name: "FC 80→10", spec: "dense(10)", input: &[80], cmsis_nn: Some((4.26, 2.65)) },
    Case { layer: None, name: "FC 512→64", spec: "dense(64)", input: &[512], cmsis_nn: Some((3.45, 1.98)) },
    Case {
        layer: None,
        name: "conv 1×40×1→8 (1×5, s2)",
        spec: "conv1d(8,k5,s2) relu",
        input: &[1, 40],
        cmsis_nn: Some((19.0, 19.5)),
    },
    Case {
        layer: None,
        name: "conv 1×20×8→16 (1×3, s2)",
        spec: "conv1d(16,k3,s2) relu",
        input: &[8, 20],
        cmsis_nn: Some((5.24, 4.43)),
    },
    Case {
        layer: None,
        name: "conv 8×8×1→8 (3×3)",
        spec: "conv2d(8,k3) relu",
        input: &[1, 8, 8],
        cmsis_nn: Some((14.35, 14.02)),
    },
    Case {
        layer: None,
        name: "conv 4×4×8→16 (3×3)",
        spec: "conv2d(16,k3) relu",
        input: &[8, 4, 4],
        cmsis_nn: Some((3.87, 2.90)),
    },
    Case {
        layer: None,
        name: "conv 8×8×16→16 (3×3)",
        spec: "conv2d(16,k3) relu",
        input: &[16, 8, 8],
        cmsis_nn: Some((3.35, 2.34)),
    },
    Case {
        layer: None,
        name: "depthwise 8×8×8 (3×3)",
        spec: "dwconv2d(k3) relu",
        input: &[8, 8, 8],
        cmsis_nn: Some((9.93, 8.52)),
    },
    // Three input channels (an RGB image): a window whose length (27) is not
    // a multiple of four, the M4's gathering path that stores each value's
    // SMLAD slot on its own (the others gather groups of four).
    Case { layer: None, name: "conv 8×8×3→8 (3×3)", spec: "conv2d(8,k3) relu", input: &[3, 8, 8], cmsis_nn: None },
    // The example students layer by layer (each layer alone, on its input
    // shape inside the student): where a whole-model count goes.
    Case {
        layer: None,
        name: "  main job 1: conv 1×40×1→12 (1×5, s2)",
        spec: "conv1d(12,k5,s2) relu",
        input: &[1, 40],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "  main job 2: conv 1×20×12→16 (1×3, s2)",
        spec: "conv1d(16,k3,s2) relu",
        input: &[12, 20],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "  main job 3: conv 1×10×16→24 (1×3)",
        spec: "conv1d(24,k3) relu",
        input: &[16, 10],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "  main job 4: GAP 1×10×24 + FC 24→10",
        spec: "gap dense(10)",
        input: &[24, 10],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "main-job CNN (MNIST-1D)",
        spec: "conv1d(12,k5,s2) relu conv1d(16,k3,s2) relu conv1d(24,k3) relu gap dense(10)",
        input: &[40],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "  digits 1: conv 8×8×1→8 (3×3)",
        spec: "conv2d(8,k3) relu",
        input: &[1, 8, 8],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "  digits 2: max pool 8×8×8 + conv 4×4×8→16 (3×3)",
        spec: "maxpool(2) conv2d(16,k3) relu",
        input: &[8, 8, 8],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "  digits 3: GAP 4×4×16 + FC 16→10",
        spec: "gap dense(10)",
        input: &[16, 4, 4],
        cmsis_nn: None,
    },
    Case {
        layer: None,
        name: "digits 2-D CNN",
        spec: "conv2d(8,k3) relu maxpool(2) conv2d(16,k3) relu gap dense(10)",
        input: &[1, 8, 8],
        cmsis_nn: None,
    },
    // MLPerf Tiny's layers, with their real weights (CMSIS-NN's counts on
    // the same layers: ../shared figures, M3 / M4 instructions per MAC).
    mlperf("KWS conv 49×10×1→64 (10×4, s2)", KWS, 0, (4.30, 3.49)),
    mlperf("KWS depthwise 25×5×64 (3×3)", KWS, 1, (9.23, 7.79)),
    mlperf("KWS conv 25×5×64→64 (1×1)", KWS, 2, (3.11, 2.09)),
    // CMSIS-NN: 50,760 instructions on the M4, 118,960 on the M3, for 8,000 taps.
    mlperf("KWS average pool 25×5×64 (25×5)", KWS, 9, (14.87, 6.35)),
    mlperf("IC conv 32×32×3→16 (3×3)", IC, 0, (5.49, 4.77)),
    mlperf("IC conv 32×32×16→16 (3×3)", IC, 1, (3.34, 2.33)),
    mlperf("IC conv 32×32×16→32 (3×3, s2)", IC, 3, (3.07, 2.14)),
    mlperf("IC conv 16×16×32→32 (3×3)", IC, 4, (2.87, 1.93)),
    mlperf("IC conv 8×8×64→64 (3×3)", IC, 7, (2.67, 1.76)),
    mlperf("VWW conv 96×96×3→8 (3×3, s2)", VWW, 0, (6.94, 6.12)),
    mlperf("VWW depthwise 48×48×8 (3×3)", VWW, 1, (10.50, 8.86)),
    mlperf("VWW conv 48×48×8→16 (1×1)", VWW, 2, (7.07, 6.63)),
    mlperf("VWW depthwise 48×48×16 (3×3, s2)", VWW, 3, (10.11, 8.45)),
    mlperf("VWW conv 24×24×16→32 (1×1)", VWW, 4, (4.79, 3.96)),
    mlperf("VWW depthwise 24×24×32 (3×3)", VWW, 5, (9.77, 8.15)),
    mlperf("VWW conv 24×24×32→32 (1×1)", VWW, 6, (3.65, 2.70)),
    mlperf("VWW depthwise 12×12×64 (3×3)", VWW, 9, (9.40, 7.88)),
    mlperf("VWW conv 12×12×64→64 (1×1)", VWW, 10, (3.10, 2.08)),
    mlperf("VWW depthwise 6×6×128 (3×3)", VWW, 13, (8.85, 7.51)),
    mlperf("VWW conv 6×6×128→128 (1×1)", VWW, 14, (2.88, 1.83)),
    mlperf("VWW conv 3×3×256→256 (1×1)", VWW, 26, (3.10, 1.97)),
    mlperf("AD FC 640→128 (per-tensor)", AD, 0, (3.44, 1.95)),
    mlperf("AD FC 128→128 (per-tensor)", AD, 1, (3.68, 2.27)),
    mlperf("AD FC 8→128 (per-tensor)", AD, 5, (8.20, 8.16)),
];

const KWS: &str = "kws_ref_model.tflite";
const IC: &str = "pretrainedResnet_quant.tflite";
const VWW: &str = "vww_96_int8.tflite";
const AD: &str = "ad01_int8.tflite";

/// A case of layer `layer` of the MLPerf Tiny model `file`.
const fn mlperf(name: &'static str, file: &'static str, layer: usize, cmsis_nn: (f64, f64)) -> Case {
    Case { layer: Some((file, layer)), name, spec: "", input: &[], cmsis_nn: Some(cmsis_nn) }
}

/// Where the MLPerf Tiny models are: `TINYKD_MLPERF_DIR`, else the
/// checkout's `models/mlperf-tiny/`.
fn mlperf_dir() -> std::path::PathBuf {
    std::env::var_os("TINYKD_MLPERF_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mlperf-tiny"))
}

/// Layer `k` of the imported `file`, alone in a model: its input the
/// model's, its output the logits.
fn imported_layer(file: &str, k: usize) -> Result<(Vec<u8>, usize)> {
    use tinykd_runtime::format::Op;
    let path = mlperf_dir().join(file);
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let model = crate::export::tflite_import::import(&bytes)?;
    let Some(l) = model.layers.get(k).cloned() else { bail!("{file} has no layer {k}") };
    let p = l.params.map(usize::from);
    let (input_shape, macs) = match l.op {
        Op::Conv2d => (vec![p[2], p[0], p[1]], l.output_len * p[4] * p[5] * p[2]),
        Op::DepthwiseConv2d => (vec![p[2], p[0], p[1]], l.output_len * p[4] * p[5]),
        Op::FullyConnected => (vec![p[0]], p[0] * p[1]),
        // Pools: "MACs" are the window's taps, one add each.
        Op::AvgPool2d | Op::MaxPool2d => (vec![p[2], p[0], p[1]], l.output_len * p[3] * p[4]),
        op => bail!(
            "{file} layer {k} is {}: the layer cases are convolutions, pools and fully connected layers",
            op.name()
        ),
    };
    let one = crate::export::tkd::TkdModel {
        input_shape,
        input: tinykd_runtime::QuantParams { scale: 1.0, zero_point: l.input_zero_point },
        output: l.output,
        classes: l.output_len,
        layers: vec![crate::export::tkd::TkdLayer { input: None, second: None, ..l }],
        data_channels_last: true,
        single_rounding: false,
    };
    Ok((crate::export::tkd::encode(&one)?, macs))
}

/// A case measured on one board.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub case: String,
    pub board: String,
    pub macs: usize,
    pub instructions: f64,
    pub per_mac: f64,
    /// CMSIS-NN's instructions per MAC for this shape on this core.
    pub cmsis_nn_per_mac: Option<f64>,
    pub flash_bytes: u64,
    pub peak_stack_bytes: u64,
}

/// Flash of the smallest image that runs a model (the `footprint-m3`
/// crate: cortex-m-rt, the runtime, the model; opt-level "s", no I/O),
/// with the model compiled into the image (what boards build) and, for
/// comparison, specialised per layer and with the `.tkd` embedded and
/// interpreted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Footprint {
    pub case: String,
    pub image_bytes: u64,
    /// The compiled model's tables: weights, channel tables, layer table.
    pub model_bytes: u64,
    /// Image minus model: vector table, start-up, kernels.
    pub engine_bytes: u64,
    /// The same with one kernel copy per layer (`TINYKD_ENGINE=specialized`).
    pub specialized_image_bytes: u64,
    /// Its model: weights and prepared channel tables (the few parameter
    /// constants its kernels read by reference count as engine).
    pub specialized_model_bytes: u64,
    /// Its image minus its model.
    pub specialized_engine_bytes: u64,
    /// The same with the `.tkd` interpreted (`TINYKD_ENGINE=interpreted`).
    pub interpreted_image_bytes: u64,
    /// Its `.tkd` (header, layer records, tensors, weight scales).
    pub interpreted_model_bytes: u64,
    /// Image minus `.tkd`: adds the parser, CRC and layer decoding.
    pub interpreted_engine_bytes: u64,
}

/// The footprint of every whole-student case on Cortex-M3.
pub fn footprints(work: &Path) -> Result<Vec<Footprint>> {
    let mut out = Vec::new();
    for (k, case) in CASES.iter().enumerate().filter(|(_, c)| c.is_student()) {
        let (bytes, _) = case_model(case, k as u64)?;
        let path = work.join(format!("footprint{k}.tkd"));
        crate::util::write_atomic(&path, &bytes)?;
        let build = |engine: &str| {
            let env = [("TINYKD_ENGINE", engine)];
            crate::device::build_crate_with("footprint-m3", "thumbv7m-none-eabi", "footprint-m3", &path, &env)
        };
        let elf = build("compiled")?;
        let image = crate::device::Footprint::of_elf(&elf)?.flash_bytes;
        let model = crate::device::symbol_bytes(&elf, "COMPILED")?;
        let specialized_elf = build("specialized")?;
        let specialized_image = crate::device::Footprint::of_elf(&specialized_elf)?.flash_bytes;
        let specialized_model = crate::device::symbol_bytes(&specialized_elf, "COMPILED")?;
        let interpreted_image = crate::device::Footprint::of_elf(&build("interpreted")?)?.flash_bytes;
        let interpreted_model = bytes.len() as u64;
        out.push(Footprint {
            case: case.name.into(),
            image_bytes: image,
            model_bytes: model,
            engine_bytes: image.saturating_sub(model),
            specialized_image_bytes: specialized_image,
            specialized_model_bytes: specialized_model,
            specialized_engine_bytes: specialized_image.saturating_sub(specialized_model),
            interpreted_image_bytes: interpreted_image,
            interpreted_model_bytes: interpreted_model,
            interpreted_engine_bytes: interpreted_image.saturating_sub(interpreted_model),
        });
    }
    Ok(out)
}

/// Samples run per case (every one compared with the host bit for bit).
const SAMPLES: usize = 16;

/// Builds the case's model with random weights; returns the `.tkd` bytes.
fn case_model(case: &Case, seed: u64) -> Result<(Vec<u8>, usize)> {
    if let Some((file, k)) = case.layer {
        return imported_layer(file, k);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let student = Student::from_spec_any_output(case.spec, case.input, &mut rng)?;
    let len = student.input_len();
    let calib: Vec<f32> = (0..64 * len).map(|_| rng.random_range(-1.0..1.0)).collect();
    let q = quantize_student(&student, &calib, 64, Calibration::Minmax)?;
    Ok((crate::export::tkd::encode(&q)?, student.macs_per_sample()))
}

/// Measures every case (or those whose name contains `only`) on every
/// board; each case's model is written to `work` as `caseN.tkd`.
pub fn run(
    boards: &[&str],
    work: &Path,
    only: Option<&str>,
    progress: &crate::progress::Progress,
) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for (k, case) in CASES.iter().enumerate().filter(|(_, c)| only.is_none_or(|o| c.name.contains(o))) {
        let (bytes, macs) = case_model(case, k as u64).with_context(|| format!("case {}", case.name))?;
        let path = work.join(format!("case{k}.tkd"));
        crate::util::write_atomic(&path, &bytes)?;
        let model = crate::int8::parse(&bytes)?;
        let mut rng = ChaCha8Rng::seed_from_u64(1000 + k as u64);
        let inputs: Vec<i8> = (0..SAMPLES * model.input_len()).map(|_| rng.random()).collect();
        for &name in boards {
            let board = crate::device::board(name)?;
            progress.note(&format!("{}: {} on {name}", case.name, case.spec));
            let r = crate::device::emulate(board, &path, &inputs, SAMPLES, None)
                .with_context(|| format!("{} on {name}", case.name))?;
            if r.agreement != 1.0 {
                bail!("{} on {name}: the device's logits differ from the host's", case.name);
            }
            let core = match board.target {
                t if t.starts_with("thumbv7em") => Some(1),
                t if t.starts_with("thumbv7m") => Some(0),
                _ => None,
            };
            out.push(Measurement {
                case: case.name.into(),
                board: name.into(),
                macs,
                instructions: r.instructions_per_inference,
                per_mac: r.instructions_per_inference / macs as f64,
                cmsis_nn_per_mac: case.cmsis_nn.zip(core).map(|((m3, m4), c)| if c == 0 { m3 } else { m4 }),
                flash_bytes: r.flash_bytes,
                peak_stack_bytes: r.peak_stack_bytes,
            });
        }
    }
    Ok(out)
}

/// [`run`] and, when every case ran, [`footprints`]: the models go to
/// `keep` (kept) or to a temporary directory.
pub fn measure(
    boards: &[&str],
    keep: Option<&Path>,
    only: Option<&str>,
    progress: &crate::progress::Progress,
) -> Result<(Vec<Measurement>, Vec<Footprint>)> {
    // A temporary directory only when the models are not kept.
    let temp;
    let work = match keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            dir
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path()
        }
    };
    let ms = run(boards, work, only, progress)?;
    if ms.is_empty() {
        bail!("no benchmark case's name contains {:?}", only.unwrap_or_default());
    }
    let fp = if only.is_some() { Vec::new() } else { footprints(work)? };
    Ok((ms, fp))
}

/// The measurements as a Markdown table, one row per case, a column pair per board.
pub fn table(ms: &[Measurement], boards: &[&str]) -> String {
    let mut s = String::from("| case | MACs |");
    for b in boards {
        s.push_str(&format!(" {b} instr. | per MAC | CMSIS-NN | ratio |"));
    }
    s.push('\n');
    s.push_str(&"|---".repeat(2 + 4 * boards.len()));
    s.push_str("|\n");
    for case in CASES {
        let rows: Vec<&Measurement> = ms.iter().filter(|m| m.case == case.name).collect();
        let Some(first) = rows.first() else { continue };
        s.push_str(&format!("| {} | {} |", case.name, first.macs));
        for b in boards {
            match rows.iter().find(|m| m.board == *b) {
                Some(m) => {
                    let (c, ratio) = match m.cmsis_nn_per_mac {
                        Some(c) => (format!("{c:.2}"), format!("{:.2}", m.per_mac / c)),
                        None => ("–".into(), "–".into()),
                    };
                    s.push_str(&format!(" {:.0} | {:.2} | {c} | {ratio} |", m.instructions, m.per_mac));
                }
                None => s.push_str(" | | | |"),
            }
        }
        s.push('\n');
    }
    s
}
