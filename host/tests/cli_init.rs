#![allow(clippy::unwrap_used)]
//! `tinykd init` writes a starter config that `tinykd run` runs as is: a
//! student sized to the data, the smallest emulated board it fits.

mod common;

use common::*;

#[test]
fn init_writes_a_config_that_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Paths inside the config's directory are written relative to it.
    std::fs::copy(models().join("data/digits.npz"), d.join("digits.npz")).unwrap();
    std::fs::copy(models().join("teachers/digits_cnn.onnx"), d.join("teacher.onnx")).unwrap();
    let o = tinykd(&["init", "--data", "digits.npz", "--teacher", "teacher.onnx", "--out", "my.toml"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(d.join("my.toml")).unwrap();
    for want in [
        "data = \"digits.npz\"",
        "teachers = [\"teacher.onnx\"]",
        "student = \"conv2d(8,k3) relu maxpool(2) conv2d(16,k3) relu gap dense(10)\"",
        "alpha = 0.9",
        "board = \"qemu-microbit\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let o = tinykd(&["run", "my.toml", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = json(&o);
    assert!(report["int8_test_accuracy"].as_f64().unwrap() > 0.8, "{report}");
    assert_eq!(report["emulation"]["agreement"], 1.0, "{report}");

    // An existing file is kept unless --force.
    let o = tinykd(&["init", "--data", "digits.npz", "--out", "my.toml"], d);
    assert_clean_failure(&o, "already exists");
    assert_eq!(std::fs::read_to_string(d.join("my.toml")).unwrap(), text);
    // Without a teacher: labels only, and it says how to add one.
    let o = tinykd(&["init", "--data", "digits.npz", "--out", "my.toml", "--force"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(d.join("my.toml")).unwrap();
    assert!(text.contains("teachers = []") && text.contains("alpha = 0.0"), "{text}");
}
