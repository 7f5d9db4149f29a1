#![allow(clippy::unwrap_used)]
//! `tinykd import` on MLPerf Tiny's int8 reference models
//! (`models/mlperf-tiny/`, Apache-2.0): keyword spotting, image
//! classification (ResNet-8), visual wake words and the anomaly-detection
//! autoencoder import, and their `.tkd` gives TFLite Micro's own
//! interpreter's outputs byte for byte on 200
//! random int8 inputs each, the ResNet's residual additions included. A
//! model with an operator tinykd does not run is refused with the
//! operator named, and nothing written. Bad files: one-line errors.
//!
//! `TINYKD_SKIP_TFLM=1` skips the comparison on a machine without the
//! `tflite-micro` wheel; `TINYKD_PYTHON` names the interpreter.

mod common;

use std::path::Path;

use common::*;
use rand::{Rng, SeedableRng};

fn mlperf(name: &str) -> std::path::PathBuf {
    models().join("mlperf-tiny").join(name)
}

/// TFLite Micro's int8 outputs for `q` (`n` samples) through `tflite`.
fn tflm(tflite: &Path, q: &[i8], n: usize) -> Vec<i8> {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, outputs) = (dir.path().join("in.npy"), dir.path().join("out.npy"));
    write_npy_i8(&inputs, q, n);
    let run = std::process::Command::new(python())
        .arg(repo().join("scripts/tflm_run.py"))
        .args([tflite, &inputs, &outputs])
        .output()
        .expect("run python3");
    assert!(
        run.status.success(),
        "TFLite Micro failed (install the tflite-micro wheel or set TINYKD_SKIP_TFLM=1): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    npyz::NpyFile::new(std::fs::File::open(&outputs).unwrap()).unwrap().into_vec().unwrap()
}

#[test]
fn mlperf_tiny_models_import_and_match_tflite_micro_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    // (file, input values, outputs, arena = the model's liveness bound)
    for (file, input_len, classes, arena) in [
        ("kws_ref_model.tflite", 49 * 10, 12, 16_000),
        ("vww_96_int8.tflite", 96 * 96 * 3, 2, 55_296),
        ("ad01_int8.tflite", 640, 640, 768),
        ("pretrainedResnet_quant.tflite", 32 * 32 * 3, 10, 32_768),
    ] {
        let out = dir.path().join(file.replace(".tflite", ".tkd"));
        let o = tinykd(&["import", mlperf(file).to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        let blob = std::fs::read(&out).unwrap();
        let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
        assert_eq!((model.input_len(), model.class_count()), (input_len, classes), "{file}");
        assert_eq!(model.arena_bytes(), arena, "{file}: arena");
        if std::env::var_os("TINYKD_SKIP_TFLM").is_some() {
            continue;
        }
        let n = 200;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(input_len as u64);
        let q: Vec<i8> = (0..n * input_len).map(|_| rng.random()).collect();
        let (_, ours) = tinykd::int8::run_quantized(&model, &q, n).unwrap();
        let theirs = tflm(&mlperf(file), &q, n);
        assert_eq!(ours.len(), theirs.len(), "{file}: output lengths");
        let same = ours.chunks_exact(classes).zip(theirs.chunks_exact(classes)).filter(|(a, b)| a == b).count();
        eprintln!("{file}: TFLite Micro identical on {same}/{n} random inputs");
        assert_eq!(same, n, "{file}: TFLite Micro differs on {} of {n} random inputs", n - same);
    }
}

/// The keyword spotter with its average pool turned into an `L2_POOL_2D`
/// (same options, an operator tinykd does not run).
fn with_an_unsupported_operator() -> Vec<u8> {
    use tinykd_tflite_schema::tflite as tfl;
    let bytes = std::fs::read(mlperf("kws_ref_model.tflite")).unwrap();
    let mut model = tinykd::export::tflite_import::read_model(&bytes).unwrap();
    for c in model.operator_codes.as_mut().unwrap() {
        // Older files name the operator in the deprecated byte alone.
        let pool = tfl::BuiltinOperator::AveragePool2d;
        if c.builtin_code == pool || c.deprecated_builtin_code == pool as i8 {
            c.builtin_code = tfl::BuiltinOperator::L2Pool2d;
            c.deprecated_builtin_code = tfl::BuiltinOperator::L2Pool2d as i8;
        }
    }
    tinykd::export::tflite::write_model(&model).unwrap()
}

#[test]
fn a_model_tinykd_cannot_run_is_refused_naming_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l2.tkd");
    let model = dir.path().join("l2.tflite");
    std::fs::write(&model, with_an_unsupported_operator()).unwrap();
    let o = tinykd(&["import", model.to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
    assert_clean_failure(&o, "operator 9 (L2_POOL_2D) is not supported by tinykd");
    assert!(!out.exists(), "nothing is written");
    // `inspect` lists every operator and says which one stops it.
    let o = tinykd(&["inspect", model.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("L2_POOL_2D") && text.contains("NOT SUPPORTED"), "{text}");
    assert!(text.contains("tinykd does not run it"), "{text}");
    let o = tinykd(&["inspect", mlperf("kws_ref_model.tflite").to_str().unwrap()], dir.path());
    assert!(
        stdout(&o).contains("tinykd runs it: 12 layers, arena 16000 B (most alive at once: 16000 B)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn truncated_and_foreign_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(mlperf("kws_ref_model.tflite")).unwrap();
    let out = dir.path().join("m.tkd");
    for (name, content, needle) in [
        ("half.tflite", bytes[..bytes.len() / 2].to_vec(), "truncated or corrupt"),
        ("short.tflite", bytes[..6].to_vec(), "not a TFLite model"),
        ("text.tflite", b"hello, this is not a model".to_vec(), "not a TFLite model"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let o = tinykd(&["import", path.to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
        assert_clean_failure(&o, needle);
        assert!(!out.exists(), "{name}: nothing is written");
    }
}

#[test]
fn a_tinykd_export_imports_back_to_the_same_arithmetic() {
    // The TFLite export of a committed student, imported: the same outputs
    // on every input (the records may differ only in host metadata).
    let dir = tempfile::tempdir().unwrap();
    for student in ["cnn1d.tkd", "mlp.tkd", "cnn2d_maxpool.tkd"] {
        let tkd = repo().join("firmware/runtime/fuzz/corpus").join(student);
        let tflite = dir.path().join("s.tflite");
        tinykd::export::export(&tkd, tinykd::export::Format::Tflite, &tflite).unwrap();
        let back = tinykd::export::tflite_import::import_file(&tflite).unwrap();
        let (a, b) = (std::fs::read(&tkd).unwrap(), back);
        let (ma, mb) = (tinykd_runtime::Model::from_bytes(&a).unwrap(), tinykd_runtime::Model::from_bytes(&b).unwrap());
        assert_eq!(ma.layer_count(), mb.layer_count(), "{student}");
        let n = 64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let q: Vec<i8> = (0..n * ma.input_len()).map(|_| rng.random()).collect();
        let (_, ya) = tinykd::int8::run_quantized(&ma, &q, n).unwrap();
        let (_, yb) = tinykd::int8::run_quantized(&mb, &q, n).unwrap();
        assert_eq!(ya, yb, "{student}: the imported export computes something else");
    }
}

#[test]
fn a_residual_model_exports_to_tflite_and_back_unchanged() {
    // ResNet-8 imported (its convolutions fused with their additions),
    // written as TFLite (each fused layer as CONV_2D then ADD): TFLite
    // Micro runs the export to the `.tkd`'s outputs, and importing it again
    // gives the same arithmetic.
    let dir = tempfile::tempdir().unwrap();
    let tkd = dir.path().join("resnet.tkd");
    std::fs::write(&tkd, tinykd::export::tflite_import::import_file(&mlperf("pretrainedResnet_quant.tflite")).unwrap())
        .unwrap();
    let tflite = dir.path().join("resnet.tflite");
    tinykd::export::export(&tkd, tinykd::export::Format::Tflite, &tflite).unwrap();
    let (a, b) = (std::fs::read(&tkd).unwrap(), tinykd::export::tflite_import::import_file(&tflite).unwrap());
    let (ma, mb) = (tinykd_runtime::Model::from_bytes(&a).unwrap(), tinykd_runtime::Model::from_bytes(&b).unwrap());
    assert_eq!((ma.layer_count(), ma.arena_bytes()), (mb.layer_count(), mb.arena_bytes()));
    let n = 64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let q: Vec<i8> = (0..n * ma.input_len()).map(|_| rng.random()).collect();
    let (_, ya) = tinykd::int8::run_quantized(&ma, &q, n).unwrap();
    let (_, yb) = tinykd::int8::run_quantized(&mb, &q, n).unwrap();
    assert_eq!(ya, yb, "the imported export computes something else");
    if std::env::var_os("TINYKD_SKIP_TFLM").is_none() {
        assert_eq!(tflm(&tflite, &q, n), ya, "TFLite Micro on the export");
    }
    // QDQ ONNX writes the graph: each conv-add as a Conv, then an Add
    // reading the tensor the .tkd wires to it (op_type is NodeProto's field
    // 4, a 3-byte string: tag 0x22, length 3).
    let onnx = dir.path().join("resnet.onnx");
    tinykd::export::export(&tkd, tinykd::export::Format::OnnxQdq, &onnx).unwrap();
    let bytes = std::fs::read(&onnx).unwrap();
    let adds = bytes.windows(5).filter(|w| w == b"\x22\x03Add").count();
    assert!(adds >= 3, "{adds} Add nodes in the QDQ export of ResNet-8");
}
