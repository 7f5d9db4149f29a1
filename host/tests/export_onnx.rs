#![allow(clippy::unwrap_used)]
//! The ONNX export of a float student gives the checkpoint's logits (1e-4)
//! in onnxruntime and in tract, for every layer kind, 1-D and 2-D, and for
//! channels-last data; the wrong model kind for a format is refused with no
//! file written.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use tinykd::data::Layout;
use tinykd::export::{Format, export};
use tinykd::progress::Progress;
use tinykd::student::{Checkpoint, Layer, Student};
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
    let ck = Checkpoint::new(student.clone(), serde_json::json!({ "layout": layout }));
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
}

#[test]
fn export_refuses_the_wrong_model_kind_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tkd = repo().join("firmware/protocol/src/testdata/mlp.tkd");
    let o = tinykd(&["export", "--model", tkd.to_str().unwrap(), "--format", "onnx", "--out", "x.onnx"], d);
    assert_clean_failure(&o, "exports the float student");
    assert!(!d.join("x.onnx").exists());
    let ck = Checkpoint::new(random_student("dense(10)", &[40], 1), serde_json::json!({}));
    ck.save(&d.join("s.ckpt")).unwrap();
    let o = tinykd(&["export", "--model", "s.ckpt", "--format", "c", "--out", "x.h"], d);
    assert_clean_failure(&o, "quantize the checkpoint first");
    assert!(!d.join("x.h").exists());
    let o = tinykd(&["export", "--model", "s.ckpt", "--format", "tflite", "--out", "x.tflite"], d);
    assert!(!o.status.success() && stderr(&o).contains("invalid value 'tflite'"), "{}", stderr(&o));
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
        // Every byte of the blob, in order.
        let bytes: Vec<u8> = text
            .split(|c: char| !c.is_ascii_hexdigit() && c != 'x')
            .filter_map(|t| t.strip_prefix("0x"))
            .filter(|t| t.len() == 2)
            .map(|t| u8::from_str_radix(t, 16).unwrap())
            .collect();
        assert_eq!(bytes, blob, "{format}");
        assert!(text.contains(&model.arena_bytes().to_string()), "{format}: arena size missing");
    }
}
