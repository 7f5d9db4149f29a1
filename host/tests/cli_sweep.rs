#![allow(clippy::unwrap_used)]
//! `tinykd sweep` through the binary: the grid always holds α = 0, and with a
//! teacher that knows nothing the selection falls on α = 0.

mod common;

use common::*;

#[test]
fn sweep_selects_alpha_zero_when_the_teacher_is_useless() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher = models().join("fixtures/mnist1d_random_teacher.onnx");
    let data = models().join("data/mnist1d.npz");
    let o = tinykd(
        &[
            "sweep",
            "--teacher",
            teacher.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--backend",
            "tract",
            "--student",
            "dense(32) relu dense(10)",
            "--epochs",
            "8",
            "--temperatures",
            "1,4",
            "--alphas",
            "0.9,1",
            "--out",
            "sweep",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("sweep/sweep.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    // α = 0 once (T plays no role) + 2 temperatures × 2 alphas.
    assert_eq!(rows.len(), 5);
    let selected = &rows[json["selected"].as_u64().unwrap() as usize];
    assert_eq!(selected["alpha"], 0.0, "selected {selected}");
    assert!(stdout(&o).contains("selected"), "{}", stdout(&o));
    for f in ["sweep.md", "sweep.png", "student.ckpt"] {
        assert!(d.join("sweep").join(f).is_file(), "{f} missing");
    }
    let png = std::fs::read(d.join("sweep/sweep.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}
