#![allow(clippy::unwrap_used)]
//! Teachers exported every which way (models/fixtures/): both backends give
//! the same answers where both run, `auto` runs everything onnxruntime can,
//! and what tract cannot run fails with a clear error naming the operator.

mod common;

use common::*;
use tinykd::data::{Dataset, LoadOptions};
use tinykd::progress::Progress;
use tinykd::teacher::{BackendChoice, OutputKind, Teacher};

fn accuracy(teacher: &str, data: &str, backend: BackendChoice) -> Result<(f64, OutputKind), String> {
    let path = models().join("fixtures").join(teacher);
    let d = Dataset::load(&models().join("data").join(data), LoadOptions::default()).unwrap();
    let mut t = Teacher::open(&path, backend, None).map_err(|e| format!("{e:#}"))?;
    t.expected_classes = Some(d.class_count);
    let out = t.logits(&d.test.x, d.test.n, &d.sample_shape, &Progress::hidden()).map_err(|e| format!("{e:#}"))?;
    let pred = tinykd::util::argmax_rows(&out.logits, out.classes);
    Ok((tinykd::util::accuracy(&pred, d.test.y.as_ref().unwrap()), out.kind))
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
        let tract = accuracy(file, data, BackendChoice::Tract);
        if tract_runs {
            let (acc, _) = tract.unwrap_or_else(|e| panic!("{file}: tract: {e}"));
            assert!(acc > 0.9, "{file}: tract accuracy {acc}");
        } else {
            let e = tract.unwrap_err();
            assert!(e.contains(file.split('/').next().unwrap()) && (e.contains("GruSeq") || e.contains("ZipMap")), "{file}: unclear error: {e}");
        }
        if skip_ort() {
            continue;
        }
        let (acc, kind) = accuracy(file, data, BackendChoice::Ort).unwrap_or_else(|e| panic!("{file}: ort: {e}"));
        assert!(acc > 0.9, "{file}: ort accuracy {acc}");
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
        &["distill", "--teacher", teacher.to_str().unwrap(), "--data", data.to_str().unwrap(), "--backend", "tract", "--student", "dense(8) relu dense(10)", "--out", "s.ckpt"],
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
    let o = tinykd(&["eval", "--model", teacher.to_str().unwrap(), "--data", data.to_str().unwrap(), "--backend", "tract"], dir.path());
    assert_clean_failure(&o, "ZipMap");
}
