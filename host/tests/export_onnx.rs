#![allow(clippy::unwrap_used)]
//! The ONNX export of a float student gives the checkpoint's logits (1e-4)
//! in onnxruntime and in tract, for every layer kind, 1-D and 2-D, and for
//! channels-last data; the wrong model kind for a format is refused with no
//! file written.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use tinykd::data::Layout;
use tinykd::distill::{Checkpoint, TrainingRecord};
use tinykd::export::{Format, export};
use tinykd::progress::Progress;
use tinykd::student::{Layer, Student};
use tinykd::teacher::{BackendChoice, OutputKind, Teacher};

fn random_student(spec: &str, shape: &[usize], seed: u64) -> Student {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut s = Student::from_spec(spec, shape, 10, &mut rng).unwrap();
    // Non-trivial BatchNorm statistics and biases.
    for layer in &mut s.layers {
        if let Layer::BatchNorm(bn) = layer {
            bn.running_mean.iter_mut().for_each(|m| *m = rng.random_range(-0.5..0.5));
            bn.running_var.iter_mut().for_each(|v| *v = rng.random_range(0.5..2.0));
            bn.beta.iter_mut().for_each(|b| *b = rng.random_range(-0.2..0.2));
        }
        for p in layer.params_mut() {
            if p.len() <= 64 {
                p.iter_mut().for_each(|b| *b += rng.random_range(-0.1..0.1));
            }
        }
    }
    s
}

fn check(spec: &str, internal: &[usize], layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    let student = random_student(spec, internal, 3);
    let ck = Checkpoint::new(student.clone(), TrainingRecord { layout: Some(layout), ..Default::default() });
    let ckpt = dir.path().join("s.ckpt");
    ck.save(&ckpt).unwrap();
    let onnx = dir.path().join("s.onnx");
    export(&ckpt, Format::Onnx, &onnx).unwrap();

    let n = 24;
    let len: usize = internal.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-1.0..1.0)).collect();
    let want = student.forward(&x, n);
    let stored_shape = layout.to_stored_shape(internal);
    let stored = layout.to_stored(&x, &stored_shape);
    let mut backends = vec![BackendChoice::Tract];
    if std::env::var_os("TINYKD_SKIP_ORT").is_none() {
        backends.push(BackendChoice::Ort);
    }
    for backend in backends {
        let mut t = Teacher::open(&onnx, backend, None).unwrap_or_else(|e| panic!("{spec} {backend:?}: {e:#}"));
        t.kind_override = Some(OutputKind::Logits);
        let got = t.logits(&stored, n, &stored_shape, &Progress::hidden()).unwrap();
        assert_eq!(got.classes, 10);
        let max = want.iter().zip(&got.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max <= 1e-4, "{spec} ({layout:?}) in {backend:?}: logits differ by {max}");
    }
}

#[test]
fn onnx_export_matches_the_checkpoint_in_both_runtimes() {
    check("dense(16) relu dense(10)", &[40], Layout::ChannelsFirst);
    check(
        "conv1d(6,k3) bn relu maxpool(2) dwconv1d(k3,s2) relu6 avgpool(2,s1) conv1d(8,k5,s2,valid) relu gap dense(10)",
        &[2, 40],
        Layout::ChannelsFirst,
    );
    check("conv1d(6,k5,s2) relu flatten dropout(0.2) dense(10)", &[3, 29], Layout::ChannelsLast);
    check(
        "conv2d(4,k3) bn relu maxpool(2) dwconv2d(k3,s2) relu avgpool(3,s1) conv2d(6,k3,valid) relu6 gap dense(10)",
        &[1, 20, 20],
        Layout::ChannelsFirst,
    );
    check("conv2d(4,k3,s2) relu flatten dense(10)", &[3, 8, 8], Layout::ChannelsLast);
    // Rectangular windows and strides per axis.
    check(
        "conv2d(6,k5x3,s2x1) relu dwconv2d(k1x3,s1x2) relu avgpool(3x2,s1x2) maxpool(2x1) gap dense(10)",
        &[2, 15, 9],
        Layout::ChannelsFirst,
    );
    // Residual blocks (Add nodes reading an earlier tensor, through a
    // projection Conv when the shapes differ), 1-D and 2-D.
    check(
        "conv1d(6,k3) bn relu res(conv1d(6,k3) bn relu conv1d(6,k3) bn) relu res(conv1d(8,k3,s2) bn) relu6 gap dense(10)",
        &[2, 30],
        Layout::ChannelsFirst,
    );
    check("resnet8(0.25)", &[3, 16, 16], Layout::ChannelsLast);
}

#[test]
fn export_refuses_the_wrong_model_kind_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tkd = repo().join("firmware/protocol/src/testdata/mlp.tkd");
    let o = tinykd(&["export", "--model", tkd.to_str().unwrap(), "--format", "onnx", "--out", "x.onnx"], d);
    assert_clean_failure(&o, "exports the float student");
    assert!(!d.join("x.onnx").exists());
    let ck = Checkpoint::new(random_student("dense(10)", &[40], 1), TrainingRecord::default());
    ck.save(&d.join("s.ckpt")).unwrap();
    let o = tinykd(&["export", "--model", "s.ckpt", "--format", "c", "--out", "x.h"], d);
    assert_clean_failure(&o, "quantize the checkpoint first");
    assert!(!d.join("x.h").exists());
    for format in ["tflite", "onnx-qdq"] {
        let o = tinykd(&["export", "--model", "s.ckpt", "--format", format, "--out", "x.out"], d);
        assert_clean_failure(&o, "quantize the checkpoint first");
        assert!(!d.join("x.out").exists());
    }
    let o = tinykd(&["export", "--model", tkd.to_str().unwrap(), "--format", "keras", "--out", "x.out"], d);
    assert!(!o.status.success() && stderr(&o).contains("invalid value 'keras'"), "{}", stderr(&o));
    assert!(!d.join("x.out").exists());
}

#[test]
fn c_and_rust_exports_carry_the_blob_and_its_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tkd = repo().join("firmware/protocol/src/testdata/mlp.tkd");
    let blob = std::fs::read(&tkd).unwrap();
    let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
    for (format, file) in [("c", "student.h"), ("rust", "student.rs")] {
        let o = tinykd(&["export", "--model", tkd.to_str().unwrap(), "--format", format, "--out", file], d);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(d.join(file)).unwrap();
        // Every byte of the blob, in order (Rust: the compiled table follows it).
        let blob_text = text.split("COMPILED_W").next().unwrap();
        let bytes: Vec<u8> = blob_text
            .split(|c: char| !c.is_ascii_hexdigit() && c != 'x')
            .filter_map(|t| t.strip_prefix("0x"))
            .filter(|t| t.len() == 2)
            .map(|t| u8::from_str_radix(t, 16).unwrap())
            .collect();
        assert_eq!(bytes, blob, "{format}");
        assert!(text.contains(&model.arena_bytes().to_string()), "{format}: arena size missing");
    }
}

/// The Rust export compiles in a crate of its own (as a user's board crate
/// would `include!` it) and both of its forms — `COMPILED` and `MODEL`
/// parsed — give the host runtime's logits.
#[test]
fn the_rust_export_compiles_and_its_two_forms_run_like_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tkd = repo().join("firmware/protocol/src/testdata/mlp.tkd");
    let blob = std::fs::read(&tkd).unwrap();
    let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
    std::fs::create_dir_all(d.join("src")).unwrap();
    let o = tinykd(&["export", "--model", tkd.to_str().unwrap(), "--format", "rust", "--out", "src/student.rs"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let runtime = repo().join("firmware/runtime");
    std::fs::write(
        d.join("Cargo.toml"),
        format!(
            "[package]\nname = \"user-board\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[workspace]\n\
             [dependencies]\ntinykd-runtime = {{ path = {:?} }}\n",
            runtime.to_str().unwrap()
        ),
    )
    .unwrap();
    let x: Vec<i8> = (0..model.input_len()).map(|i| (i as i32 * 53 % 251 - 125) as i8).collect();
    std::fs::write(
        d.join("src/main.rs"),
        format!(
            "include!(\"student.rs\");\n\
             fn main() {{\n\
                 let x: [i8; INPUT_LEN] = {x:?};\n\
                 let mut a = [0u8; ARENA_BYTES];\n\
                 let c = COMPILED.run(&x, &mut a).unwrap().to_vec();\n\
                 let m = tinykd_runtime::Model::from_bytes(&MODEL.0).unwrap();\n\
                 let i = m.run_with_ops::<MODEL_OPS>(&x, &mut a).unwrap().to_vec();\n\
                 println!(\"{{c:?}} {{i:?}}\");\n\
             }}\n"
        ),
    )
    .unwrap();
    // A target directory kept between runs: the runtime builds once.
    let target = repo().join("target").join("export-rust-check");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["run", "--quiet", "--offline"])
        .current_dir(d)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut arena = vec![0u8; model.arena_bytes()];
    let want = model.run(&x, &mut arena).unwrap().to_vec();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{want:?} {want:?}"));
}

/// Runs the QDQ export of `tkd` in onnxruntime on `x` and compares with the
/// runtime: share of equal argmaxes and the largest difference in output
/// quantization steps.
fn qdq_against_runtime(tkd: &std::path::Path, x: &[f32], n: usize, shape: &[usize]) -> (f64, f32) {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("q.onnx");
    export(tkd, Format::OnnxQdq, &onnx).unwrap();
    let blob = std::fs::read(tkd).unwrap();
    let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
    let (pred, logits) = tinykd::int8::run_int8(&blob, x, n).unwrap();
    let mut t = Teacher::open(&onnx, BackendChoice::Ort, None).unwrap();
    t.kind_override = Some(OutputKind::Logits);
    let classes = model.class_count();
    let got = t.logits(x, n, shape, &Progress::hidden()).unwrap();
    assert_eq!(got.classes, classes);
    // The runtime's outputs are channels last, the graph's channels first.
    let out_shape = tinykd::student::geometry::as_chw(&model_output_shape(&model, classes)).unwrap_or([classes, 1, 1]);
    let device: Vec<f32> = logits.iter().map(|v| *v as f32).collect();
    let device =
        if out_shape[0] > 1 && out_shape[1] * out_shape[2] > 1 { hwc_to_chw(&device, out_shape) } else { device };
    let q = model.output_quant();
    let steps = device
        .iter()
        .zip(&got.logits)
        .map(|(i, f)| ((*i - q.zero_point as f32) * q.scale - f).abs() / q.scale)
        .fold(0f32, f32::max);
    let ort_pred: Vec<usize> = got
        .logits
        .chunks_exact(classes)
        .map(|r| (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
        .collect();
    let agree = pred.iter().zip(&ort_pred).filter(|(a, b)| a == b).count() as f64 / pred.len() as f64;
    (agree, steps)
}

/// The last layer's output as `[C, H, W]` (convolution and pool outputs).
fn model_output_shape(model: &tinykd_runtime::Model<'_>, classes: usize) -> Vec<usize> {
    use tinykd_runtime::format::Op;
    let Some(Ok(l)) = model.layers().last() else { return vec![classes] };
    match l.op {
        Op::Conv2d | Op::DepthwiseConv2d => {
            let p = l.conv_params().unwrap();
            vec![p.out_channels, p.window.out_h(), p.window.out_w()]
        }
        Op::MaxPool2d | Op::AvgPool2d => {
            let p = l.pool_params().unwrap();
            vec![p.channels, p.window.out_h(), p.window.out_w()]
        }
        _ => vec![classes],
    }
}

fn hwc_to_chw(x: &[f32], [c, h, w]: [usize; 3]) -> Vec<f32> {
    let len = c * h * w;
    let mut out = vec![0.0; x.len()];
    for (src, dst) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        for ci in 0..c {
            for p in 0..h * w {
                dst[ci * h * w + p] = src[p * c + ci];
            }
        }
    }
    out
}

#[test]
fn qdq_export_runs_in_onnxruntime_with_the_runtimes_answers() {
    if std::env::var_os("TINYKD_SKIP_ORT").is_some() {
        return;
    }
    // Layer by layer: one rounding apart at most (onnxruntime requantizes in
    // float, the device with Q31 multipliers).
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[usize]); 11] = [
        ("dense(16) relu", &[40]),
        ("conv1d(8,k5,s2) relu", &[1, 40]),
        ("conv1d(6,k3,valid) relu6", &[4, 20]),
        ("conv2d(6,k3,s2) relu", &[3, 9, 9]),
        ("dwconv2d(k3) relu", &[4, 8, 8]),
        ("conv1d(4,k3) maxpool(3,s2)", &[2, 20]),
        ("conv1d(4,k3) avgpool(2)", &[2, 20]),
        ("conv2d(4,k3) avgpool(3,s1)", &[2, 8, 8]),
        ("conv2d(5,k3) gap", &[2, 6, 6]),
        ("conv2d(6,k4x2,s2x1) relu", &[2, 9, 7]),
        ("dwconv2d(k3x1,s1x2) relu avgpool(2x3)", &[4, 8, 9]),
    ];
    for (k, (spec, shape)) in cases.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(k as u64);
        let student = Student::from_spec_any_output(spec, shape, &mut rng).unwrap();
        let len = student.input_len();
        let n = 64;
        let x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let q = tinykd::quant::quantize_student(&student, &x, n, tinykd::quant::Calibration::Minmax).unwrap();
        let blob = tinykd::export::tkd::encode(&q).unwrap();
        let tkd = dir.path().join(format!("case{k}.tkd"));
        std::fs::write(&tkd, &blob).unwrap();
        let (_, steps) = qdq_against_runtime(&tkd, &x, n, shape);
        eprintln!("{spec}: largest output difference {steps} steps");
        assert!(steps <= 1.0 + 1e-3, "{spec}: onnxruntime is {steps} steps from the runtime");
    }
    // Whole students: roundings compound through the layers.
    let corpus = repo().join("firmware/runtime/fuzz/corpus");
    for (tkd, data, min_agree) in
        [("cnn1d.tkd", "mnist1d.npz", 0.997), ("mlp.tkd", "mnist1d.npz", 1.0), ("cnn2d_maxpool.tkd", "digits.npz", 1.0)]
    {
        let d = tinykd::data::Dataset::load(&models().join("data").join(data), tinykd::data::LoadOptions::default())
            .unwrap();
        let (agree, steps) = qdq_against_runtime(&corpus.join(tkd), &d.test.x, d.test.n, &d.sample_shape);
        eprintln!("{tkd}: argmax agreement {agree}, largest logit difference {steps} steps");
        assert!(agree >= min_agree, "{tkd}: onnxruntime agrees on {agree} of the classes");
    }
    // With single rounding the device computes what onnxruntime's QDQ
    // arithmetic does: the whole test split to within one step (ties round
    // up on the device, to even in onnxruntime) and the same class.
    use tinykd::quant::{Calibration, Rounding, Scheme, quantize_student_ranges};
    for (spec, data) in [
        ("conv1d(12,k5,s2) relu conv1d(16,k3,s2) relu conv1d(24,k3) relu gap dense(10)", "mnist1d.npz"),
        ("conv2d(8,k3) relu maxpool(2) conv2d(16,k3) relu gap dense(10)", "digits.npz"),
    ] {
        let d = tinykd::data::Dataset::load(&models().join("data").join(data), tinykd::data::LoadOptions::default())
            .unwrap();
        let s = random_student(spec, &d.sample_shape, 5);
        let n = 500.min(d.train.n);
        let scheme = Scheme { rounding: Rounding::Single, ..Default::default() };
        let (q, _) =
            quantize_student_ranges(&s, &d.train.x[..n * d.sample_len()], n, Calibration::Minmax, scheme).unwrap();
        let tkd = dir.path().join(format!("single-{data}.tkd"));
        std::fs::write(&tkd, tinykd::export::tkd::encode(&q).unwrap()).unwrap();
        let (agree, steps) = qdq_against_runtime(&tkd, &d.test.x, d.test.n, &d.sample_shape);
        eprintln!("single rounding, {spec}: argmax agreement {agree}, largest logit difference {steps} steps");
        assert!(agree == 1.0 && steps <= 1.0 + 1e-3, "{spec}: {agree} of the classes, {steps} steps");
    }
    // Residual students with single rounding: additions reading an earlier
    // tensor, fused into the convolution before them (identity shortcut)
    // or into the projection, TFLite's integer addition against
    // onnxruntime's float one; the whole test split to within one step.
    for (spec, data) in [
        (
            "conv1d(8,k5,s2) bn relu res(conv1d(8,k3) bn relu conv1d(8,k3) bn) relu \
             res(conv1d(16,k3,s2) bn relu conv1d(16,k3) bn) relu gap dense(10)",
            "mnist1d.npz",
        ),
        ("conv2d(8,k3) relu res(conv2d(16,k3,s2) relu conv2d(16,k3)) relu6 gap dense(10)", "digits.npz"),
    ] {
        let d = tinykd::data::Dataset::load(&models().join("data").join(data), tinykd::data::LoadOptions::default())
            .unwrap();
        let s = random_student(spec, &d.sample_shape, 6);
        let n = 500.min(d.train.n);
        let (q, _) = quantize_student_ranges(
            &s,
            &d.train.x[..n * d.sample_len()],
            n,
            Calibration::Minmax,
            Scheme { rounding: Rounding::Single, ..Default::default() },
        )
        .unwrap();
        assert!(q.layers.iter().any(|l| l.op == tinykd_runtime::format::Op::ConvAdd), "{spec}");
        let tkd = dir.path().join(format!("residual-{data}.tkd"));
        std::fs::write(&tkd, tinykd::export::tkd::encode(&q).unwrap()).unwrap();
        let (agree, steps) = qdq_against_runtime(&tkd, &d.test.x, d.test.n, &d.sample_shape);
        eprintln!("residual, {spec}: argmax agreement {agree}, largest logit difference {steps} steps");
        assert!(agree == 1.0 && steps <= 1.0 + 1e-3, "{spec}: {agree} of the classes, {steps} steps");
    }
}
