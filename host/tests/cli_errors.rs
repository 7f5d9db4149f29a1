#![allow(clippy::unwrap_used)]
//! Bad input on the distill / quantize / eval path: non-zero exit, a one-line
//! cause, no panic, and no output file left behind.

mod common;

use std::path::Path;

use common::*;

fn distill(d: &Path, teacher: &str, data: &str) -> std::process::Output {
    tinykd(
        &[
            "distill",
            "--teacher",
            teacher,
            "--data",
            data,
            "--backend",
            "tract",
            "--student",
            "dense(8) relu dense(10)",
            "--epochs",
            "1",
            "--out",
            "s.ckpt",
        ],
        d,
    )
}

fn mnist1d_like(path: &Path, len: usize, train_labels: Vec<i64>, poison: Option<f32>) {
    let n = train_labels.len();
    let mut x: Vec<f32> = (0..n * len).map(|i| (i % 7) as f32 / 7.0).collect();
    if let Some(v) = poison {
        x[3] = v;
    }
    write_npz(
        path,
        &[
            F32Array { name: "x_train", shape: vec![n as u64, len as u64], data: x.clone() },
            F32Array { name: "x_test", shape: vec![n as u64, len as u64], data: x },
        ],
        &[("y_train", train_labels.clone()), ("y_test", train_labels)],
    );
}

fn teacher() -> String {
    models().join("teachers/mnist1d_cnn.onnx").to_str().unwrap().to_owned()
}

#[test]
fn missing_teacher_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = models().join("data/mnist1d.npz");
    let o = distill(dir.path(), "nope.onnx", data.to_str().unwrap());
    assert_clean_failure(&o, "nope.onnx");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn non_onnx_teacher() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.onnx"), "this is not a model").unwrap();
    let data = models().join("data/mnist1d.npz");
    let o = distill(dir.path(), "t.onnx", data.to_str().unwrap());
    assert_clean_failure(&o, "not an ONNX model");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn truncated_onnx_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(teacher()).unwrap();
    std::fs::write(dir.path().join("t.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let data = models().join("data/mnist1d.npz");
    let o = distill(dir.path(), "t.onnx", data.to_str().unwrap());
    assert_clean_failure(&o, "t.onnx");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn data_shape_differs_from_teacher_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = models().join("data/digits.npz");
    let o = distill(dir.path(), &teacher(), data.to_str().unwrap());
    assert_clean_failure(&o, "does not match the data's sample shape");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn labels_out_of_teacher_range() {
    let dir = tempfile::tempdir().unwrap();
    mnist1d_like(&dir.path().join("d.npz"), 40, vec![0, 1, 12, 3], None);
    let o = distill(dir.path(), &teacher(), "d.npz");
    assert_clean_failure(&o, "class count mismatch");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn negative_labels() {
    let dir = tempfile::tempdir().unwrap();
    mnist1d_like(&dir.path().join("d.npz"), 40, vec![0, -1, 2, 3], None);
    let o = distill(dir.path(), &teacher(), "d.npz");
    assert_clean_failure(&o, "y_train[1] = -1");
}

#[test]
fn nan_in_inputs() {
    let dir = tempfile::tempdir().unwrap();
    mnist1d_like(&dir.path().join("d.npz"), 40, vec![0, 1, 2, 3], Some(f32::NAN));
    let o = distill(dir.path(), &teacher(), "d.npz");
    assert_clean_failure(&o, "non-finite");
    assert!(!dir.path().join("s.ckpt").exists());
}

#[test]
fn missing_dataset_key() {
    let dir = tempfile::tempdir().unwrap();
    write_npz(
        &dir.path().join("d.npz"),
        &[F32Array { name: "x_train", shape: vec![2, 40], data: vec![0.0; 80] }],
        &[("y_train", vec![0, 1])],
    );
    let o = distill(dir.path(), &teacher(), "d.npz");
    assert_clean_failure(&o, "missing array 'x_test'");
}

#[test]
fn unsupported_student_layer_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = models().join("data/mnist1d.npz");
    let o = tinykd(
        &[
            "distill",
            "--teacher",
            &teacher(),
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "tract",
            "--student",
            "dense(8) relu lstm(4) dense(10)",
            "--out",
            "s.ckpt",
        ],
        dir.path(),
    );
    assert_clean_failure(&o, "unknown layer 'lstm(4)'");
}

#[test]
fn corrupt_tkd_is_rejected_by_eval() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.tkd"), b"TKDM\x01\x00\x40\x00garbage-garbage-garbage").unwrap();
    let data = models().join("data/mnist1d.npz");
    let o = tinykd(&["eval", "--model", "m.tkd", "--data", data.to_str().unwrap()], dir.path());
    assert_clean_failure(&o, "m.tkd");
}

#[test]
fn ort_backend_without_library_says_how_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let data = models().join("data/mnist1d.npz");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tinykd"))
        .args(["eval", "--model", &teacher(), "--data", data.to_str().unwrap(), "--backend", "ort"])
        .env("ORT_DYLIB_PATH", dir.path().join("missing.so"))
        .output()
        .unwrap();
    assert_clean_failure(&o, "pip install onnxruntime");
}

#[test]
fn empty_split() {
    let dir = tempfile::tempdir().unwrap();
    write_npz(
        &dir.path().join("d.npz"),
        &[
            F32Array { name: "x_train", shape: vec![4, 40], data: vec![0.5; 160] },
            F32Array { name: "x_test", shape: vec![0, 40], data: vec![] },
        ],
        &[("y_train", vec![0, 1, 2, 3]), ("y_test", vec![])],
    );
    let o = distill(dir.path(), &teacher(), "d.npz");
    assert_clean_failure(&o, "split 'test' is empty");
    assert!(!dir.path().join("s.ckpt").exists());
}

/// Exit codes by failure kind (see `tinykd::failure`): data 3, teacher 4,
/// board 6; each error line comes with a hint line.
#[test]
fn exit_codes_name_the_failing_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = models().join("data/mnist1d.npz");
    let o = distill(d, &teacher(), "missing.npz");
    assert_clean_failure(&o, "missing.npz");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = distill(d, "nope.onnx", data.to_str().unwrap());
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("hint: `tinykd inspect TEACHER.onnx`"), "{}", stderr(&o));
    let tkd = repo().join("firmware/protocol/src/testdata/mlp.tkd");
    let o = tinykd(
        &[
            "verify",
            "--model",
            tkd.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--port",
            "/dev/tinykd-no-such-port",
        ],
        d,
    );
    assert_clean_failure(&o, "tinykd-no-such-port");
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    // Usage errors stay clap's.
    let o = tinykd(&["distill", "--no-such-flag"], d);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bench_firmware_with_no_matching_case() {
    // Filtered before any firmware is built: a clear error, nothing kept.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = tinykd(&["bench", "--firmware", "--case", "no such layer", "--keep", "kept"], d);
    assert_clean_failure(&o, "no benchmark case's name contains \"no such layer\"");
    assert!(d.join("kept").read_dir().unwrap().next().is_none(), "a model was written");
}

#[test]
fn bench_mlperf_with_no_matching_model_or_no_models() {
    // Filtered before anything is imported or built.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = tinykd(&["bench", "--firmware", "--mlperf", "--case", "LeNet"], d);
    assert_clean_failure(&o, "no MLPerf Tiny model's name contains \"LeNet\"");
    // A directory without the models: the file is named.
    let o = tinykd(&["bench", "--firmware", "--mlperf", "--case", "KWS", "--mlperf-dir", "nowhere"], d);
    assert_clean_failure(&o, "kws_ref_model.tflite: cannot read");
    // --mlperf belongs to --firmware.
    let o = tinykd(&["bench", "--mlperf"], d);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
