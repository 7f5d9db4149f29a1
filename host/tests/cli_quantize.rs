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

    // `auto` (the default) names the method it chose; `--rounding single`
    // and `--weight-scales per-tensor` reach the model, and `inspect` says so.
    let args = ["quantize", "--student", "s.ckpt", "--data", data, "--rounding", "single"];
    let o = tinykd(&[&args[..], &["--weight-scales", "per-tensor", "--out", "single.tkd"]].concat(), d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(auto → "), "{}", stdout(&o));
    let o = tinykd(&["inspect", "single.tkd"], d);
    assert!(stdout(&o).contains("rounds once"), "{}", stdout(&o));
    let o = tinykd(&["inspect", "minmax.tkd"], d);
    assert!(stdout(&o).contains("rounds twice"), "{}", stdout(&o));
    let blob = std::fs::read(d.join("single.tkd")).unwrap();
    let m = tinykd_runtime::Model::from_bytes(&blob).unwrap();
    assert!(m.single_rounding());
    let l = m.layers().next().unwrap().unwrap();
    let scales: Vec<f32> = (0..l.channel_count).filter_map(|c| m.weight_scale(&l, c)).collect();
    assert!(scales.len() == 8 && scales.iter().all(|s| *s == scales[0]), "per-tensor: {scales:?}");
    let o = tinykd(&["quantize", "--student", "s.ckpt", "--data", data, "--rounding", "half", "--out", "x.tkd"], d);
    assert!(!o.status.success() && !d.join("x.tkd").exists(), "{}", stderr(&o));
}

/// Quantization-aware training from a distilled checkpoint: uses the
/// checkpoint's own teacher (cached logits), reports float → PTQ → QAT, and
/// the written model's accuracy is what `eval` measures on it. Without its
/// teacher the checkpoint cannot be QAT-trained with its distillation: a
/// one-line error, nothing written.
#[test]
fn qat_fine_tunes_with_the_checkpoints_distillation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher_src = models().join("teachers/mnist1d_cnn.onnx");
    let teacher = d.join("teacher.onnx");
    std::fs::copy(&teacher_src, &teacher).unwrap();
    let data = models().join("data/mnist1d.npz");
    let mut args = distill_args(&teacher, &data, "conv1d(8,k5,s2) bn relu conv1d(16,k3,s2) relu gap dense(10)");
    args.extend(["--steps", "300", "--no-baseline", "--out", "s.ckpt"].map(String::from));
    let o = tinykd_owned(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));

    let data = data.to_str().unwrap();
    let o = tinykd(&["quantize", "--student", "s.ckpt", "--data", data, "--qat-steps", "150", "--out", "qat.tkd"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    let line = |needle: &str| s.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no '{needle}' in {s}"));
    let percent = |l: &str| -> f64 {
        let t = l.split("test accuracy").nth(1).unwrap().trim_start();
        t[..t.find('%').unwrap()].trim().parse().unwrap()
    };
    let _ptq = percent(line("post-training"));
    let qat = percent(line("150 QAT steps"));
    assert!(stderr(&o).contains("quantization-aware training: 150 steps"), "{}", stderr(&o));
    let o = tinykd(&["eval", "--model", "qat.tkd", "--data", data, "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval = json(&o)["accuracy"].as_f64().unwrap() * 100.0;
    assert!((eval - qat).abs() < 0.006, "quantize says {qat} %, eval {eval} %");

    std::fs::remove_file(&teacher).unwrap();
    let o = tinykd(&["quantize", "--student", "s.ckpt", "--data", data, "--qat-steps", "10", "--out", "x.tkd"], d);
    assert_clean_failure(&o, "is not there");
    assert!(!d.join("x.tkd").exists());
}

/// `-q` leaves stderr empty (results only); `-v` adds plain progress lines
/// when stderr is not a terminal.
#[test]
fn quiet_and_verbose() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = models().join("data/mnist1d.npz");
    let args = |flag: &'static str, out: &'static str| {
        vec![flag, "distill", "--alpha", "0", "--data", data.to_str().unwrap(), "--student", "dense(10)"]
            .into_iter()
            .chain(["--steps", "400", "--no-baseline", "--out", out])
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let q = tinykd_owned(&args("-q", "q.ckpt"), d);
    assert!(q.status.success(), "{}", stderr(&q));
    assert_eq!(stderr(&q), "", "-q printed to stderr");
    assert!(stdout(&q).contains("test accuracy"), "{}", stdout(&q));
    let v = tinykd_owned(&args("-v", "v.ckpt"), d);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(stderr(&v).lines().any(|l| l.trim_start().starts_with("train [")), "{}", stderr(&v));
}
