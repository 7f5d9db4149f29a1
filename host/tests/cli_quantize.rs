#![allow(clippy::unwrap_used)]
//! `tinykd quantize` with each calibration method: ranges reported, models valid.

mod common;

use common::*;

#[test]
fn every_calibration_method_reports_its_ranges_and_writes_a_valid_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = models().join("data/mnist1d.npz");
    let data = data.to_str().unwrap();
    let o = tinykd(
        &["distill", "--alpha", "0", "--data", data, "--student", "conv1d(8,k5,s2) relu gap dense(10)"]
            .iter()
            .chain(&["--steps", "200", "--no-baseline", "--out", "s.ckpt"])
            .copied()
            .collect::<Vec<_>>(),
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut accuracies = Vec::new();
    for method in ["minmax", "percentile", "mse"] {
        let out = format!("{method}.tkd");
        let args = ["quantize", "--student", "s.ckpt", "--data", data, "--calibration", method];
        let o = tinykd(&[&args[..], &["--calibration-samples", "500", "--out", &out]].concat(), d);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        let s = stdout(&o);
        assert!(s.contains("input") && s.contains("layer 1 output") && s.contains("quantized over"), "{s}");
        if method == "minmax" {
            assert!(!s.contains("(clipped)"), "minmax never clips: {s}");
        }
        let o = tinykd(&["eval", "--model", &out, "--data", data, "--json"], d);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        accuracies.push(json(&o)["accuracy"].as_f64().unwrap());
    }
    // All three land near each other on a well-behaved student.
    let (lo, hi) = accuracies.iter().fold((1f64, 0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    assert!(hi - lo < 0.05, "{accuracies:?}");
}
