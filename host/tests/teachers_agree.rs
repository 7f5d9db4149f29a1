#![allow(clippy::unwrap_used)]
//! ort and tract give the same logits (1e-4) on every teacher in models/.

mod common;

use common::*;
use tinykd::data::{Dataset, LoadOptions};
use tinykd::progress::Progress;
use tinykd::teacher::{BackendChoice, Teacher};

/// The dataset a teacher in models/teachers was trained on: its name's prefix.
fn data_for(teacher: &std::path::Path) -> std::path::PathBuf {
    let name = teacher.file_stem().unwrap().to_str().unwrap();
    let prefix = name.split('_').next().unwrap();
    models().join("data").join(format!("{prefix}.npz"))
}

/// Teachers in models/ that tract 0.23 cannot run, with the op it names.
const TRACT_UNSUPPORTED: &[(&str, &str)] = &[("digits_svc.onnx", "SVMClassifier")];

#[test]
fn ort_and_tract_agree_on_every_teacher() {
    if std::env::var_os("TINYKD_SKIP_ORT").is_some() {
        eprintln!("TINYKD_SKIP_ORT set: skipping the ort comparison");
        return;
    }
    let mut teachers: Vec<_> = std::fs::read_dir(models().join("teachers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    teachers.sort();
    let mut compared = 0;
    for t in teachers {
        let name = t.file_name().unwrap().to_str().unwrap();
        let data = Dataset::load(&data_for(&t), LoadOptions::default()).unwrap();
        // The first 300 test samples: tract runs the forest teacher slowly.
        let s = &data.test;
        let n = s.n.min(300);
        let len: usize = data.sample_shape.iter().product();
        let x = &s.x[..n * len];
        let mut ort = Teacher::open(&t, BackendChoice::Ort, None).unwrap_or_else(|e| panic!("{}: {e:#}", t.display()));
        let a = ort.logits(x, n, &data.sample_shape, &Progress::hidden()).unwrap();
        let mut tract = match Teacher::open(&t, BackendChoice::Tract, None) {
            Ok(tract) => tract,
            Err(e) => {
                let msg = format!("{e:#}");
                let op = TRACT_UNSUPPORTED.iter().find(|(f, _)| *f == name).map(|(_, op)| *op);
                let op = op.unwrap_or_else(|| panic!("{name}: tract failed unexpectedly: {msg}"));
                assert!(msg.contains(op) && msg.contains(name), "{name}: unclear tract error: {msg}");
                // `auto` must still run it, through onnxruntime.
                let auto = Teacher::open(&t, BackendChoice::Auto, None).unwrap();
                assert_eq!(auto.backend_name(), "ort");
                eprintln!("{name}: tract cannot run it ({op}); auto uses ort");
                continue;
            }
        };
        let b = tract.logits(x, n, &data.sample_shape, &Progress::hidden()).unwrap();
        assert_eq!(a.classes, b.classes);
        assert_eq!(a.kind, b.kind);
        // Probability teachers are compared as probabilities: their logs
        // magnify differences between tiny probabilities.
        let raw = |v: f32| if a.kind == tinykd::teacher::OutputKind::Probabilities { v.exp() } else { v };
        let max = a.logits.iter().zip(&b.logits).map(|(x, y)| (raw(*x) - raw(*y)).abs()).fold(0f32, f32::max);
        eprintln!("{name}: {n} samples, {:?}, max |ort − tract| = {max:e}", a.kind);
        assert!(max <= 1e-4, "{name}: ort and tract differ by {max}");
        compared += 1;
    }
    assert!(compared >= 3, "expected at least the three teachers both backends run, compared {compared}");
}
