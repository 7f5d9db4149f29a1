#![allow(clippy::unwrap_used)]
//! `scripts/microflow_side_by_side.py` end to end: a student distilled,
//! quantized per-tensor and exported to `.tflite`, compiled by microflow
//! 0.1.3 (a reader tinykd did not write) and by tinykd for the same QEMU
//! board, both run on test samples. With VALID padding (where microflow
//! follows TFLite's window placement) the two must predict the same class
//! almost always — microflow requantizes in f32, so not always. The
//! harness alone is built too: engine + model is each image less it, and
//! tinykd's must be at most half of microflow's. Needs
//! qemu-system-arm, the thumbv7m target and crates.io (microflow);
//! `TINYKD_SKIP_MICROFLOW` skips it. `TINYKD_PYTHON` names the interpreter.

mod common;

use std::process::Command;

use common::*;

#[test]
fn microflow_runs_the_tflite_export_beside_tinykd() {
    if std::env::var_os("TINYKD_SKIP_MICROFLOW").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let python = std::env::var("TINYKD_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(repo().join("scripts/microflow_side_by_side.py"))
        .args(["--student", "conv1d(8,k5,s2,valid) relu conv1d(16,k3,s2,valid) relu flatten dense(10)"])
        .args(["--steps", "1500", "--samples", "100", "--tinykd", env!("CARGO_BIN_EXE_tinykd")])
        .arg("--keep")
        .arg(dir.path())
        .env("TINYKD_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the script failed");
    for runtime in ["tinykd", "microflow"] {
        let row = text.lines().find(|l| l.starts_with(runtime)).unwrap_or_else(|| panic!("no {runtime} row"));
        let numbers: Vec<f64> = row.split_whitespace().filter_map(|w| w.trim_end_matches('%').parse().ok()).collect();
        // Image flash, engine + model, stack, instructions, accuracy: all
        // measured, none zero; engine + model is the image less the harness.
        assert_eq!(numbers.len(), 5, "{row}");
        assert!(numbers.iter().all(|v| *v > 0.0), "{row}");
        assert!(numbers[1] < numbers[0], "{row}");
    }
    let harness: f64 = text
        .lines()
        .find_map(|l| l.split("the harness alone: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("a line with the harness's flash");
    // Vector table (1,024 B on this board) and start-up code, no engine.
    assert!((1024.0..2048.0).contains(&harness), "the harness alone takes {harness} B");
    let agree: f64 = text
        .lines()
        .find_map(|l| l.split("same class on ").nth(1))
        .and_then(|r| r.split('%').next())
        .and_then(|v| v.parse().ok())
        .expect("an agreement line");
    assert!(agree >= 95.0, "tinykd and microflow agree on {agree}% of the samples");
    // The firmware issue's target: tinykd's engine + model at most half
    // of microflow's (0.44 when this was written), and its stack and
    // instructions below microflow's.
    let ratios: Vec<f64> = text
        .lines()
        .find(|l| l.starts_with("ratio"))
        .expect("a ratio row")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(ratios.len(), 4, "{ratios:?}");
    assert!(ratios[1] <= 0.5, "engine + model at {} of microflow's", ratios[1]);
    assert!(ratios[2] < 1.0 && ratios[3] < 1.0, "stack and instructions: {ratios:?}");
}
