#![allow(clippy::unwrap_used)]
//! Teachers exported every which way (models/fixtures/): both backends give
//! the same answers where both run, `auto` runs everything onnxruntime can,
//! and what tract cannot run fails with a clear error naming the operator.

mod common;

use common::*;
use tinykd::data::{Dataset, LoadOptions};
use tinykd::progress::Progress;
use tinykd::teacher::{BackendChoice, OutputKind, Teacher};

fn outputs(teacher: &str, data: &str, backend: BackendChoice) -> Result<(f64, OutputKind, Vec<f32>), String> {
    let path = models().join("fixtures").join(teacher);
    let d = Dataset::load(&models().join("data").join(data), LoadOptions::default()).unwrap();
    let mut t = Teacher::open(&path, backend, None).map_err(|e| format!("{e:#}"))?;
    t.expected_classes = Some(d.class_count);
    let out = t.logits(&d.test.x, d.test.n, &d.sample_shape, &Progress::hidden()).map_err(|e| format!("{e:#}"))?;
    let pred = tinykd::util::argmax_rows(&out.logits, out.classes);
    let raw =
        if out.kind == OutputKind::Probabilities { out.logits.iter().map(|v| v.exp()).collect() } else { out.logits };
    Ok((tinykd::util::accuracy(&pred, d.test.y.as_ref().unwrap()), out.kind, raw))
}

fn accuracy(teacher: &str, data: &str, backend: BackendChoice) -> Result<(f64, OutputKind), String> {
    outputs(teacher, data, backend).map(|(a, k, _)| (a, k))
}

fn skip_ort() -> bool {
    std::env::var_os("TINYKD_SKIP_ORT").is_some()
}

#[test]
fn every_fixture_runs_where_its_runtime_can() {
    let cases = [
        ("mnist1d_dynamo/model.onnx", "mnist1d.npz", true),
        ("mnist1d_opset13.onnx", "mnist1d.npz", true),
        ("mnist1d_fixed_batch1.onnx", "mnist1d.npz", true),
        ("mnist1d_ncl.onnx", "mnist1d.npz", true),
        ("mnist1d_multi_output.onnx", "mnist1d.npz", true),
        ("mnist1d_probs.onnx", "mnist1d.npz", true),
        ("mnist1d_attention.onnx", "mnist1d.npz", true),
        ("digits_logreg.onnx", "digits.npz", true),
        ("mnist1d_gru.onnx", "mnist1d.npz", false),
        ("digits_logreg_zipmap.onnx", "digits.npz", false),
    ];
    for (file, data, tract_runs) in cases {
        let tract = outputs(file, data, BackendChoice::Tract);
        let mut tract_raw = None;
        if tract_runs {
            let (acc, _, raw) = tract.unwrap_or_else(|e| panic!("{file}: tract: {e}"));
            assert!(acc > 0.9, "{file}: tract accuracy {acc}");
            tract_raw = Some(raw);
        } else {
            let e = tract.unwrap_err();
            assert!(
                e.contains(file.split('/').next().unwrap()) && (e.contains("GruSeq") || e.contains("ZipMap")),
                "{file}: unclear error: {e}"
            );
        }
        if skip_ort() {
            continue;
        }
        let (acc, kind, ort_raw) =
            outputs(file, data, BackendChoice::Ort).unwrap_or_else(|e| panic!("{file}: ort: {e}"));
        assert!(acc > 0.9, "{file}: ort accuracy {acc}");
        if let Some(t) = tract_raw {
            // Raw outputs (logits, or probabilities) agree to 1e-4.
            let max = t.iter().zip(&ort_raw).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max <= 1e-4, "{file}: ort and tract differ by {max}");
        }
        if file.contains("probs") || file.contains("logreg") {
            assert_eq!(kind, OutputKind::Probabilities, "{file}");
        }
        // auto runs it (through onnxruntime when tract cannot).
        let (auto, _) = accuracy(file, data, BackendChoice::Auto).unwrap_or_else(|e| panic!("{file}: auto: {e}"));
        assert_eq!(auto, acc, "{file}");
    }
}

#[test]
fn multi_output_teacher_uses_its_logits() {
    let (acc, kind) = accuracy("mnist1d_multi_output.onnx", "mnist1d.npz", BackendChoice::Tract).unwrap();
    assert!(acc > 0.9, "picked the wrong output: accuracy {acc}");
    assert_eq!(kind, OutputKind::Logits);
}

#[test]
fn class_count_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = models().join("fixtures/mnist1d_3class.onnx");
    let data = models().join("data/mnist1d.npz");
    let o = tinykd(
        &[
            "distill",
            "--teacher",
            teacher.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "tract",
            "--student",
            "dense(8) relu dense(10)",
            "--out",
            "s.ckpt",
        ],
        dir.path(),
    );
    assert_clean_failure(&o, "class count mismatch");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn tract_errors_name_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let data = models().join("data/digits.npz");
    let teacher = models().join("fixtures/digits_logreg_zipmap.onnx");
    let o = tinykd(
        &["eval", "--model", teacher.to_str().unwrap(), "--data", data.to_str().unwrap(), "--backend", "tract"],
        dir.path(),
    );
    assert_clean_failure(&o, "ZipMap");
}

#[test]
fn ensemble_with_another_class_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = models().join("data/mnist1d.npz");
    let a = models().join("teachers/mnist1d_cnn.onnx");
    let b = models().join("fixtures/mnist1d_3class.onnx");
    let o = tinykd(
        &[
            "distill",
            "--teacher",
            a.to_str().unwrap(),
            "--teacher",
            b.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "tract",
            "--student",
            "dense(8) relu dense(10)",
            "--out",
            "s.ckpt",
        ],
        dir.path(),
    );
    assert_clean_failure(&o, "teacher has 3 classes");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn output_kind_can_be_forced() {
    // Forcing "logits" on a probability teacher keeps the raw probabilities.
    let path = models().join("fixtures/mnist1d_probs.onnx");
    let d = Dataset::load(&models().join("data/mnist1d.npz"), LoadOptions::default()).unwrap();
    let mut t = Teacher::open(&path, BackendChoice::Tract, None).unwrap();
    t.kind_override = Some(OutputKind::Logits);
    let out = t.logits(&d.test.x[..40 * 8], 8, &d.sample_shape, &Progress::hidden()).unwrap();
    assert_eq!(out.kind, OutputKind::Logits);
    assert!(out.logits.iter().all(|v| (0.0..=1.0).contains(v)));
}
