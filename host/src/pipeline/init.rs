//! `tinykd init`: a commented starter config for the user's own teacher and
//! data — a student sized to the data's sample shape and class count, and
//! the smallest emulated board its int8 model fits — ready for `tinykd run`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};

use crate::data::{Dataset, Layout, LoadOptions};
use crate::device::{BOARDS, Board};
use crate::student::Student;

/// What `tinykd init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Dataset the config trains on (sets the student's shape and classes).
    pub data: PathBuf,
    /// ONNX teachers (several: an ensemble); none: the config trains on labels (α = 0).
    pub teachers: Vec<PathBuf>,
    /// How the data stores a sample's axes.
    pub layout: Layout,
    /// Where to write the config.
    pub out: PathBuf,
    /// Overwrite an existing file.
    pub force: bool,
}

/// What `init` proposes: the student, its int8 sizes and the board.
struct Proposal {
    data: Dataset,
    spec: String,
    why: &'static str,
    student: Student,
    blob: Vec<u8>,
    board: &'static Board,
    emulated: Vec<&'static Board>,
}

/// A student for samples of `shape` (channels first) and `classes` classes,
/// with a one-line reason.
fn starter_student(shape: &[usize], classes: usize) -> (String, &'static str) {
    match *shape {
        // Time × features, as MFCCs or spectrograms (49×10 for keyword spotting).
        [_, h, w] if h >= 20 && w >= 4 && h >= 2 * w => (
            format!("ds-cnn-s dense({classes})"),
            "tall 2-D samples such as spectrograms: MLPerf Tiny's keyword-spotting DS-CNN \
             (conv2d(64,k10x4,s2), four depthwise-separable blocks)",
        ),
        [_, h, w] if h >= 64 && w >= 64 => (
            format!("mobilenet-v1(0.25) dense({classes})"),
            "images of 64×64 or more: MobileNetV1 at width 0.25 (MLPerf Tiny's visual wake words), \
             13 depthwise-separable blocks",
        ),
        [_, h, w] if h >= 32 && w >= 32 => (
            format!("resnet8 dense({classes})"),
            "images of 32×32 or more: MLPerf Tiny's image-classification ResNet-8 \
             (three residual stacks of 16, 32 and 64 channels)",
        ),
        [_, h, w] if h >= 8 && w >= 8 => (
            format!("conv2d(8,k3) relu maxpool(2) conv2d(16,k3) relu gap dense({classes})"),
            "2-D samples: two 3×3 convolutions, a 2×2 max pool, global average pooling",
        ),
        [_, h, w] if h >= 3 && w >= 3 => (
            format!("conv2d(8,k3) relu conv2d(16,k3) relu gap dense({classes})"),
            "small 2-D samples: two 3×3 convolutions and global average pooling",
        ),
        [_, l] | [l] if l >= 16 => (
            format!("conv1d(12,k5,s2) relu conv1d(16,k3,s2) relu conv1d(24,k3) relu gap dense({classes})"),
            "sequences (flat samples are read as one channel): three 1-D convolutions, the main job's student; \
             for unordered tabular features an MLP such as dense(64) relu dense(32) relu dense(C) suits better",
        ),
        [_, l] if l >= 3 => (
            format!("conv1d(16,k3) relu conv1d(16,k3) relu gap dense({classes})"),
            "short sequences: two 1-D convolutions",
        ),
        _ => {
            let len: usize = shape.iter().product();
            let hidden = (len / 2).clamp(16, 64);
            (
                format!("dense({hidden}) relu dense(32) relu dense({classes})"),
                "flat feature vectors: a two-hidden-layer MLP (if the features are a sequence, try a conv1d student)",
            )
        }
    }
}

/// The student with random weights and its int8 blob calibrated on `x`
/// (for its sizes only).
fn sized_student(spec: &str, shape: &[usize], classes: usize, x: &[f32], n: usize) -> Result<(Student, Vec<u8>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let s = Student::from_spec(spec, shape, classes, &mut rng)?;
    let calib = if n == 0 {
        (0..s.input_len()).map(|_| rng.random_range(-1.0..1.0)).collect()
    } else {
        x[..s.input_len() * n].to_vec()
    };
    let q = crate::quant::quantize_student(&s, &calib, n.max(1), crate::quant::Calibration::Minmax)?;
    let blob = crate::export::tkd::encode(&q)?;
    Ok((s, blob))
}

/// The emulated boards from the smallest RAM up; the first one `blob` fits.
fn smallest_fitting_board(blob: &[u8]) -> Result<(&'static Board, Vec<&'static Board>)> {
    let model = crate::int8::parse(blob)?;
    let mut emulated: Vec<&Board> = BOARDS.iter().filter(|b| b.is_emulated()).collect();
    emulated.sort_by_key(|b| (b.ram_bytes, b.flash_bytes));
    let fits: Vec<&Board> =
        emulated.iter().copied().filter(|b| crate::device::fit_check(b, &model, Path::new("")).is_ok()).collect();
    match fits.first() {
        Some(b) => Ok((b, emulated)),
        None => bail!("the starter student ({} bytes int8) fits no emulated board", blob.len()),
    }
}

/// `path` as the config file (in `dir`) should name it: relative when it is
/// inside `dir`, absolute otherwise.
fn config_path(path: &Path, dir: &Path) -> Result<String> {
    let abs = path.canonicalize().with_context(|| format!("{}: cannot resolve", path.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("{}: cannot resolve", dir.display()))?;
    let shown = abs.strip_prefix(&dir).map(Path::to_path_buf).unwrap_or(abs);
    Ok(shown.display().to_string().replace('\\', "/"))
}

/// Writes the starter config.
pub fn init(a: &InitOptions) -> Result<String> {
    if a.out.exists() && !a.force {
        bail!("{}: already exists (choose another --out, or --force to overwrite)", a.out.display());
    }
    let p = propose(a)?;
    let text = config_text(a, &p)?;
    crate::util::write_atomic(&a.out, text.as_bytes())?;
    Ok(format!("wrote {} (student {}, board {})", a.out.display(), p.spec, p.board.name))
}

/// Loads the data, checks the teachers, sizes the student, picks the board.
fn propose(a: &InitOptions) -> Result<Proposal> {
    let data = Dataset::load(&a.data, LoadOptions { layout: a.layout, ..Default::default() })?;
    if data.class_count < 2 {
        bail!("{}: needs labels of at least 2 classes (y_train, y_test) to size the student", a.data.display());
    }
    for t in &a.teachers {
        crate::teacher::check_onnx_file(t)?;
    }
    let classes = data.class_count;
    let (spec, why) = starter_student(&data.sample_shape, classes);
    let n = data.train.n.min(256);
    let (student, blob) = sized_student(&spec, &data.sample_shape, classes, &data.train.x, n)?;
    let (board, emulated) = smallest_fitting_board(&blob)?;
    Ok(Proposal { data, spec, why, student, blob, board, emulated })
}

/// The commented config.
fn config_text(a: &InitOptions, p: &Proposal) -> Result<String> {
    let Proposal { data, spec, why, student, blob, board, emulated } = p;
    let (board, classes) = (*board, data.class_count);
    let model = crate::int8::parse(blob)?;
    let dir = match a.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let data_path = config_path(&a.data, &dir)?;
    let teachers =
        a.teachers.iter().map(|t| config_path(t, &dir).map(|p| format!("\"{p}\""))).collect::<Result<Vec<_>>>()?;
    let name = a.out.file_stem().and_then(|s| s.to_str()).unwrap_or("tinykd");
    let mut c = String::new();
    let w = &mut c;
    writeln!(w, "# tinykd starter config, written by `tinykd init`.")?;
    writeln!(
        w,
        "# Data: {} train / {} test samples of shape {:?}, {classes} classes.",
        data.train.n, data.test.n, data.stored_shape
    )?;
    writeln!(w, "# Run it: tinykd run {}   (artefacts and report.json in out/{name}/)", a.out.display())?;
    writeln!(w, "# Paths are relative to this file.")?;
    writeln!(w, "data = \"{data_path}\"")?;
    if teachers.is_empty() {
        writeln!(w, "# No teacher yet: the student trains on the labels. Name an ONNX teacher here (or")?;
        writeln!(w, "# `teacher_logits = \"scores.npz\"`, scores computed elsewhere) and set alpha below.")?;
        writeln!(w, "teachers = []")?;
    } else {
        writeln!(w, "# ONNX teacher(s); several are an ensemble. Or: teacher_logits = \"scores.npz\".")?;
        writeln!(w, "teachers = [{}]", teachers.join(", "))?;
    }
    writeln!(w, "backend = \"auto\"             # auto | tract (pure Rust) | ort (onnxruntime)")?;
    if a.layout == Layout::ChannelsLast {
        writeln!(w, "layout = \"channels-last\"")?;
    } else {
        writeln!(w, "# layout = \"channels-last\"   # if samples are stored [L, C] or [H, W, C]")?;
    }
    writeln!(w, "# Student for {why}:")?;
    writeln!(
        w,
        "# {} parameters, {} multiply-accumulates per sample, about {} bytes as int8 (.tkd).",
        student.param_count(),
        student.macs_per_sample(),
        blob.len()
    )?;
    writeln!(w, "student = \"{spec}\"")?;
    writeln!(w)?;
    writeln!(w, "[distill]")?;
    writeln!(w, "temperature = 4.0             # softens the teacher's outputs (2–8 typical)")?;
    if teachers.is_empty() {
        writeln!(w, "alpha = 0.0                   # weight of the teacher term: 0.9 once teachers is set")?;
    } else {
        writeln!(w, "alpha = 0.9                   # weight of the teacher term (1 − alpha on the labels)")?;
    }
    writeln!(w, "# epochs = 60                 # default: 60 epochs, 4,000–40,000 optimizer steps")?;
    writeln!(w, "# shift = 2                   # augmented views the teacher labels: shift by up to 2 steps,")?;
    writeln!(w, "# noise = 0.05                # add Gaussian noise,")?;
    writeln!(w, "# views = 4                   # 4 views per sample")?;
    writeln!(w)?;
    writeln!(w, "[quantize]")?;
    writeln!(w, "calibration = \"auto\"          # auto (closest int8 logits) | minmax | percentile | mse")?;
    writeln!(w, "# weight_scales = \"per-tensor\" # for runtimes without per-channel weights")?;
    writeln!(
        w,
        "# rounding = \"single\"        # round once, as desktop TFLite / onnxruntime (default: as TFLite Micro)"
    )?;
    writeln!(w, "qat_steps = 1000              # quantization-aware fine-tuning steps (0: post-training only)")?;
    writeln!(w)?;
    writeln!(w, "[emulate]")?;
    let rx = crate::device::fit_estimate(board, &model).receive_buffer;
    writeln!(
        w,
        "# The smallest emulated board the int8 student fits: model {} B + firmware ~{} B of {} B flash,",
        blob.len(),
        board.engine_flash_bytes,
        board.flash_bytes
    )?;
    writeln!(
        w,
        "# arena {} B + receive buffer {rx} B + stack ~{} B of {} B RAM.",
        model.arena_bytes(),
        board.engine_stack_bytes,
        board.ram_bytes
    )?;
    writeln!(
        w,
        "# Others: {}.",
        emulated.iter().filter(|b| b.name != board.name).map(|b| b.name).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(w, "board = \"{}\"", board.name)?;
    writeln!(w, "limit = 200                   # test samples streamed to the board")?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn students_follow_the_sample_shape() {
        assert!(starter_student(&[1, 8, 8], 10).0.starts_with("conv2d(8,k3) relu maxpool(2)"));
        assert!(starter_student(&[3, 5, 5], 4).0.ends_with("gap dense(4)"));
        assert!(starter_student(&[1, 40], 10).0.starts_with("conv1d(12,k5,s2)"));
        assert!(starter_student(&[2, 8], 3).0.starts_with("conv1d(16,k3)"));
        assert!(starter_student(&[64], 10).0.starts_with("conv1d(12,k5,s2)"));
        assert_eq!(starter_student(&[12], 10).0, "dense(16) relu dense(32) relu dense(10)");
        // Larger inputs take the architectures the field ships.
        assert_eq!(starter_student(&[1, 49, 10], 12).0, "ds-cnn-s dense(12)");
        assert_eq!(starter_student(&[3, 96, 96], 2).0, "mobilenet-v1(0.25) dense(2)");
        assert_eq!(starter_student(&[3, 32, 32], 10).0, "resnet8 dense(10)");
        assert!(starter_student(&[1, 28, 28], 10).0.starts_with("conv2d(8,k3) relu maxpool(2)"));
        // Every starter builds on its shape.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for shape in [
            &[1, 8, 8][..],
            &[3, 5, 5],
            &[3, 3, 3],
            &[1, 40],
            &[2, 8],
            &[2, 3],
            &[64],
            &[12],
            &[4],
            &[1, 49, 10],
            &[3, 32, 40],
            &[1, 64, 80],
        ] {
            let (spec, _) = starter_student(shape, 5);
            Student::from_spec(&spec, shape, 5, &mut rng).unwrap_or_else(|e| panic!("{spec} on {shape:?}: {e}"));
        }
    }
}
