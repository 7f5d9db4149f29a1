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

/// Fixtures exported with skl2onnx's usual call (`FloatTensorType([None, 64])`, ZipMap off).
const PLAIN_SKLEARN: &[&str] = &["digits_logreg_plain.onnx", "digits_forest_plain.onnx"];

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
    // scikit-learn exported the usual way: input `X` [None, 64] (no batch
    // name, no fact for tract), ZipMap off, no Reshape in front.
    teachers.extend(PLAIN_SKLEARN.iter().map(|f| models().join("fixtures").join(f)));
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
    assert!(compared >= 5, "expected the three teachers and two plain fixtures both backends run, compared {compared}");
}

#[test]
fn zipmap_in_tract_is_a_clear_error_and_ort_runs_it() {
    let t = models().join("fixtures/digits_logreg_plain_zipmap.onnx");
    let e = format!("{:#}", Teacher::open(&t, BackendChoice::Tract, None).unwrap_err());
    assert!(e.contains("tract cannot run ZipMap") && e.contains("--backend ort") && e.contains("zipmap"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    if std::env::var_os("TINYKD_SKIP_ORT").is_some() {
        return;
    }
    let data = Dataset::load(&models().join("data/digits.npz"), LoadOptions::default()).unwrap();
    let (s, shape) = (&data.test, &data.sample_shape);
    let mut zipmap = Teacher::open(&t, BackendChoice::Ort, None).unwrap();
    let a = zipmap.logits(&s.x, s.n, shape, &Progress::hidden()).unwrap();
    let plain = models().join("fixtures/digits_logreg_plain.onnx");
    let b = Teacher::open(&plain, BackendChoice::Tract, None)
        .unwrap()
        .logits(&s.x, s.n, shape, &Progress::hidden())
        .unwrap();
    let max = a.logits.iter().zip(&b.logits).map(|(x, y)| (x.exp() - y.exp()).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-4, "ZipMap probabilities (ort) and plain probabilities (tract) differ by {max}");
}
