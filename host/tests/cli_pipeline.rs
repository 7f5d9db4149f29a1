#![allow(clippy::unwrap_used)]
//! End to end through the real binary on MNIST-1D: distill, quantize, eval.

mod common;

use common::*;

#[test]
fn mnist1d_distill_quantize_eval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher = models().join("teachers/mnist1d_cnn.onnx");
    let data = models().join("data/mnist1d.npz");
    let (teacher, data) = (teacher.to_str().unwrap(), data.to_str().unwrap());

    let o = tinykd(
        &[
            "distill",
            "--teacher",
            teacher,
            "--data",
            data,
            "--backend",
            "tract",
            "--student",
            "dense(64) relu dense(32) relu dense(10)",
            "--epochs",
            "25",
            "--out",
            "s.ckpt",
        ],
        d,
    );
    assert!(o.status.success(), "distill failed: {}", stderr(&o));
    assert!(stdout(&o).contains("teacher"), "{}", stdout(&o));
    assert!(stderr(&o).contains("backend tract"), "{}", stderr(&o));

    let o = tinykd(&["quantize", "--student", "s.ckpt", "--data", data, "--out", "s.tkd"], d);
    assert!(o.status.success(), "quantize failed: {}", stderr(&o));

    let eval = |model: &str, extra: &[&str]| {
        let mut args = vec!["eval", "--model", model, "--data", data, "--json"];
        args.extend_from_slice(extra);
        let o = tinykd(&args, d);
        assert!(o.status.success(), "eval {model} failed: {}", stderr(&o));
        json(&o)
    };
    let t = eval(teacher, &["--backend", "tract"]);
    assert_eq!(t["n"], 1000);
    assert_eq!(t["backend"], "tract");
    let teacher_acc = t["accuracy"].as_f64().unwrap();
    assert!(teacher_acc >= 0.975, "teacher accuracy {teacher_acc}");

    let f = eval("s.ckpt", &[]);
    let i = eval("s.tkd", &["--save-outputs", "out.npz"]);
    let (fa, ia) = (f["accuracy"].as_f64().unwrap(), i["accuracy"].as_f64().unwrap());
    // An MLP on MNIST-1D lands well above chance (10 %) but far below the CNN teacher.
    assert!(fa > 0.5, "float accuracy {fa}");
    assert!((fa - ia).abs() < 0.03, "int8 {ia} strays from float {fa}");

    let mut npz = npyz::npz::NpzArchive::open(d.join("out.npz")).unwrap();
    assert_eq!(npz.by_name("pred").unwrap().unwrap().shape(), &[1000]);
    let logits = npz.by_name("logits").unwrap().unwrap();
    assert_eq!(logits.shape(), &[1000, 10]);
    assert_eq!(logits.dtype().descr(), "'|i1'");
}

#[test]
fn same_seed_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher = models().join("teachers/mnist1d_cnn.onnx");
    let data = models().join("data/mnist1d.npz");
    let run = |out: &str| {
        let o = tinykd(
            &[
                "distill",
                "--teacher",
                teacher.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--backend",
                "tract",
                "--student",
                "dense(16) relu dense(10)",
                "--epochs",
                "3",
                "--no-baseline",
                "--seed",
                "9",
                "--out",
                out,
            ],
            d,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let ck: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join(out)).unwrap()).unwrap();
        ck["student"].clone()
    };
    assert_eq!(run("a.ckpt"), run("b.ckpt"));
}

#[test]
fn second_distill_reads_the_teacher_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher = models().join("teachers/mnist1d_cnn.onnx");
    let data = models().join("data/mnist1d.npz");
    let run = || {
        let o = tinykd(
            &[
                "distill",
                "--teacher",
                teacher.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--backend",
                "tract",
                "--student",
                "dense(8) relu dense(10)",
                "--epochs",
                "1",
                "--no-baseline",
                "--shift",
                "2",
                "--views",
                "2",
                "--out",
                "s.ckpt",
            ],
            d,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let first = run();
    assert!(first.contains("backend tract"), "first run must run the teacher: {first}");
    let second = run();
    assert!(!second.contains("backend"), "second run opened a teacher: {second}");
    assert!(second.contains("from the cache"), "{second}");
    // The cache holds f16 logits: 2 files (training views, test split).
    let entries = std::fs::read_dir(d.join("cache")).unwrap().count();
    assert_eq!(entries, 2);
}

#[test]
fn csv_data_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut text = String::from("x1,x2,label\n");
    for i in 0..200 {
        let c = i % 2;
        text.push_str(&format!("{},{},{c}\n", c as f32 * 2.0 - 1.0 + (i % 7) as f32 * 0.05, (i % 5) as f32 * 0.1));
    }
    std::fs::write(d.join("d.csv"), text).unwrap();
    let o = tinykd(
        &[
            "distill",
            "--data",
            "d.csv",
            "--student",
            "dense(8) relu dense(2)",
            "--alpha",
            "0",
            "--epochs",
            "150",
            "--out",
            "s.ckpt",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("test accuracy 100.00%"), "{}", stdout(&o));
    let o = tinykd(&["inspect", "d.csv"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("train        160 samples"), "{}", stdout(&o));
    let o = tinykd(&["inspect", models().join("data/mnist1d.npz").to_str().unwrap()], d);
    assert!(stdout(&o).contains("x_train      <f4    [4000, 40]"), "{}", stdout(&o));
}

#[test]
fn bench_reports_training_and_teacher_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let data = models().join("data/mnist1d.npz");
    let teacher = models().join("teachers/mnist1d_cnn.onnx");
    let o = tinykd(
        &[
            "bench",
            "--data",
            data.to_str().unwrap(),
            "--student",
            "dense(8) relu dense(10)",
            "--epochs",
            "1",
            "--python",
            "/nonexistent/python",
            "--teacher",
            teacher.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let tract = rows[0]["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap())
        .find(|r| r["backend"] == "tract");
    assert!(tract.is_some_and(|r| r["samples_per_second"].as_f64().unwrap() > 0.0));
    assert!(rows[1]["tinykd"]["samples_per_second"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["pytorch"].is_null());
    // Training operations per sample (6 × (40·8 + 8·10) MACs) and the SGEMM peak.
    assert_eq!(rows[1]["flops_per_sample"].as_f64(), Some(6.0 * 400.0));
    assert!(rows[1]["gemm_peak_gflops"].as_f64().unwrap() > 0.0);
}

#[test]
fn run_config_with_toml_student() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!(
        r#"data = "{}"
teachers = ["{}"]
backend = "tract"
student = [{{ kind = "conv1d", channels = 4, kernel = 5, stride = 2 }}, {{ kind = "relu" }}, {{ kind = "gap" }}, {{ kind = "dense", units = 10 }}]
out_dir = "out"
[distill]
epochs = 2
"#,
        models().join("data/mnist1d.npz").display(),
        models().join("teachers/mnist1d_cnn.onnx").display()
    );
    std::fs::write(d.join("c.toml"), cfg).unwrap();
    let o = tinykd(&["run", "c.toml"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["student"], "conv1d(4,k5,s2) relu gap dense(10)");
    assert!(report["int8_test_accuracy"].as_f64().unwrap() > 0.1);
    for f in ["student.ckpt", "student.tkd", "baseline.ckpt", "baseline.tkd"] {
        assert!(d.join("out").join(f).is_file(), "{f}");
    }
}

#[test]
fn directory_of_npy_files_with_uint8_inputs() {
    use npyz::WriterBuilder;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    std::fs::create_dir(&data).unwrap();
    let write_u8 = |name: &str, n: u64| {
        let f = std::fs::File::create(data.join(name)).unwrap();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[n, 4]).writer(f).begin_nd().unwrap();
        w.extend((0..n * 4).map(|i| if (i / 4) % 2 == 0 { 0u8 } else { 255u8 })).unwrap();
        w.finish().unwrap();
    };
    let write_i32 = |name: &str, n: i32| {
        let f = std::fs::File::create(data.join(name)).unwrap();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[n as u64]).writer(f).begin_nd().unwrap();
        w.extend((0..n).map(|i| i % 2)).unwrap();
        w.finish().unwrap();
    };
    write_u8("x_train.npy", 40);
    write_i32("y_train.npy", 40);
    write_u8("x_test.npy", 10);
    write_i32("y_test.npy", 10);
    let o = tinykd(&["inspect", "data"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("train         40 samples, x in [0.000, 1.000], per class [20, 20]"), "{}", stdout(&o));
}

#[test]
fn label_scarce_distill_with_mixup_trains_both_students() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher = models().join("teachers/mnist1d_cnn.onnx");
    let data = models().join("data/mnist1d.npz");
    #[rustfmt::skip]
    let o = tinykd(
        &[
            "distill", "--teacher", teacher.to_str().unwrap(), "--data", data.to_str().unwrap(),
            "--backend", "tract", "--student", "dense(16) relu dense(10)", "--epochs", "2",
            "--labelled-fraction", "0.3", "--shift", "2", "--views", "3", "--mixup", "0.4",
            "--mixup-share", "0.5", "--alpha", "0.5", "--out", "s.ckpt",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("baseline (α = 0)"), "the baseline (labelled rows, remapped mixup partners) trained: {out}");
    assert!(stderr(&o).contains("1081 labelled, 2520 unlabeled"), "{}", stderr(&o));
    let ckpt: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("s.ckpt")).unwrap()).unwrap();
    let augment = &ckpt["training"]["options"]["augment"];
    assert_eq!(augment["mixup"], 0.4f32 as f64, "{augment}");

    let o = tinykd(
        &[
            "distill",
            "--data",
            data.to_str().unwrap(),
            "--alpha",
            "0",
            "--student",
            "dense(10)",
            "--mixup=-1",
            "--views",
            "2",
            "--out",
            "x.ckpt",
        ],
        d,
    );
    assert_clean_failure(&o, "--mixup must be a non-negative number");
}

/// `tinykd run` is resumable: unchanged inputs skip every stage (and say
/// so) with the same report; a changed `[quantize]` reruns quantize, not
/// distill; an edited artefact reruns the stage that wrote it.
#[test]
fn run_skips_stages_whose_inputs_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = |calibration: &str| {
        format!(
            r#"data = "{}"
teachers = ["{}"]
backend = "tract"
student = "conv1d(4,k5,s2) relu gap dense(10)"
out_dir = "out"
[distill]
steps = 200
[quantize]
calibration = "{calibration}"
[export]
formats = ["tflite", "onnx"]
"#,
            models().join("data/mnist1d.npz").display(),
            models().join("teachers/mnist1d_cnn.onnx").display()
        )
    };
    std::fs::write(d.join("c.toml"), config("minmax")).unwrap();
    let first = tinykd(&["run", "c.toml"], d);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!stderr(&first).contains("skipped"), "{}", stderr(&first));
    let report =
        || -> serde_json::Value { serde_json::from_slice(&std::fs::read(d.join("out/report.json")).unwrap()).unwrap() };
    let r1 = report();

    let started = std::time::Instant::now();
    let second = tinykd(&["run", "c.toml"], d);
    let seconds = started.elapsed().as_secs_f64();
    assert!(second.status.success(), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains("distill: inputs unchanged, skipped") && err.contains("quantize: inputs unchanged, skipped"));
    assert!(err.contains("export: inputs unchanged, skipped"), "{err}");
    for f in ["student.tflite", "student.onnx"] {
        assert!(d.join("out").join(f).is_file(), "{f}");
    }
    assert_eq!(r1["exports"].as_array().map(Vec::len), Some(2), "{r1}");
    assert!(seconds < 5.0, "an unchanged run took {seconds} s");
    let r2 = report();
    for k in ["float_test_accuracy", "int8_test_accuracy", "baseline_int8_test_accuracy", "tkd_bytes", "steps"] {
        assert_eq!(r1[k], r2[k], "{k}");
    }

    std::fs::write(d.join("c.toml"), config("mse")).unwrap();
    let third = tinykd(&["run", "c.toml"], d);
    assert!(third.status.success(), "{}", stderr(&third));
    let err = stderr(&third);
    assert!(err.contains("distill: inputs unchanged, skipped"), "{err}");
    assert!(!err.contains("quantize: inputs unchanged"), "{err}");
    assert!(stdout(&third).contains("int8"), "{}", stdout(&third));

    // A real board on a port that is not there: the run fails as a board error.
    let device = "[device]\nboard = \"nrf52840-dk\"\nport = \"/dev/tinykd-no-such-port\"\nflash = false\n";
    std::fs::write(d.join("c.toml"), config("mse") + device).unwrap();
    let o = tinykd(&["run", "c.toml"], d);
    assert_clean_failure(&o, "tinykd-no-such-port");
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    std::fs::write(d.join("c.toml"), config("mse")).unwrap();

    // An artefact edited by hand is rewritten by its stage.
    std::fs::write(d.join("out/student.tkd"), b"not a model").unwrap();
    let fourth = tinykd(&["run", "c.toml"], d);
    assert!(fourth.status.success(), "{}", stderr(&fourth));
    assert!(!stderr(&fourth).contains("quantize: inputs unchanged"), "{}", stderr(&fourth));
    assert!(tinykd_runtime::Model::from_bytes(&std::fs::read(d.join("out/student.tkd")).unwrap()).is_ok());
}

/// `--teacher-logits`: scores computed elsewhere train the same student as
/// the teacher model that produced them; bad files and augmentation are
/// refused with one-line errors.
#[test]
fn teacher_logits_file_trains_like_the_teacher_model() {
    use tinykd::progress::Progress;
    use tinykd::teacher::{BackendChoice, Teacher};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data_path = models().join("data/mnist1d.npz");
    let teacher_path = models().join("teachers/mnist1d_cnn.onnx");
    let data = tinykd::data::Dataset::load(&data_path, Default::default()).unwrap();
    let mut t = Teacher::open(&teacher_path, BackendChoice::Tract, None).unwrap();
    let mut scores = |x: &[f32], n: usize| t.logits(x, n, &data.stored_shape, &Progress::hidden()).unwrap();
    let train = scores(&data.train.x, data.train.n);
    let test = scores(&data.test.x, data.test.n);
    let c = train.classes as u64;
    write_npz(
        &d.join("scores.npz"),
        &[
            F32Array { name: "train", shape: vec![data.train.n as u64, c], data: train.logits.clone() },
            F32Array { name: "test", shape: vec![data.test.n as u64, c], data: test.logits.clone() },
        ],
        &[],
    );
    let student = "conv1d(4,k5,s2) relu gap dense(10)";
    let common = ["--data", data_path.to_str().unwrap(), "--student", student, "--steps", "150", "--no-baseline"];
    let run = |extra: &[&str], out: &str| {
        tinykd(&[&["distill"][..], &common, extra, &["--backend", "tract", "--json", "--out", out]].concat(), d)
    };
    let a = run(&["--teacher", teacher_path.to_str().unwrap()], "a.ckpt");
    assert!(a.status.success(), "{}", stderr(&a));
    let b = run(&["--teacher-logits", "scores.npz"], "b.ckpt");
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(stderr(&b).contains("teacher scores from scores.npz"), "{}", stderr(&b));
    let (ja, jb) = (json(&a), json(&b));
    assert_eq!(ja["test_accuracy"], jb["test_accuracy"]);
    assert_eq!(ja["teacher_test_accuracy"], jb["teacher_test_accuracy"]);
    let weights =
        |f: &str| serde_json::to_string(&tinykd::distill::Checkpoint::load(&d.join(f)).unwrap().student).unwrap();
    assert_eq!(weights("a.ckpt"), weights("b.ckpt"), "same scores, same student");

    // Wrong row count, augmentation, both sources: one-line errors, nothing written.
    write_npz(
        &d.join("short.npz"),
        &[
            F32Array { name: "train", shape: vec![10, c], data: train.logits[..10 * c as usize].to_vec() },
            F32Array { name: "test", shape: vec![data.test.n as u64, c], data: test.logits.clone() },
        ],
        &[],
    );
    assert_clean_failure(&run(&["--teacher-logits", "short.npz"], "x.ckpt"), "one row per sample");
    assert_clean_failure(
        &run(&["--teacher-logits", "scores.npz", "--views", "2", "--shift", "2"], "x.ckpt"),
        "augmentation",
    );
    let both = run(&["--teacher-logits", "scores.npz", "--teacher", teacher_path.to_str().unwrap()], "x.ckpt");
    assert_clean_failure(&both, "not both");
    assert!(!d.join("x.ckpt").exists());
}

/// `[sweep]` in a run: the grid is trained, the best validation row is the
/// student (its T and α recorded in the checkpoint for QAT), the α = 0 row
/// the baseline, and the report carries the grid and its plot.
#[test]
fn run_with_a_sweep_selects_and_reports_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!(
        r#"data = "{}"
teachers = ["{}"]
backend = "tract"
student = "conv2d(4,k3) relu gap dense(10)"
out_dir = "out"
[distill]
steps = 150
[sweep]
temperatures = [2.0, 4.0]
alphas = [0.5, 0.9]
[quantize]
qat_steps = 20
"#,
        models().join("data/digits.npz").display(),
        models().join("teachers/digits_cnn.onnx").display()
    );
    std::fs::write(d.join("c.toml"), cfg).unwrap();
    let o = tinykd(&["run", "c.toml", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    let rows = r["sweep"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "α = 0 plus 2 × 2: {r}");
    let best = &rows[r["sweep"]["best"].as_u64().unwrap() as usize];
    assert_eq!(r["alpha"], best["alpha"]);
    let ck: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/student.ckpt")).unwrap()).unwrap();
    assert_eq!(ck["training"]["options"]["alpha"], best["alpha"], "QAT distils with the selected α");
    assert!(d.join("out/sweep.png").is_file() && d.join("out/baseline.tkd").is_file());
    let md = std::fs::read_to_string(d.join("out/report.md")).unwrap();
    assert!(md.contains("**selected**") && md.contains("](sweep.png)"), "{md}");
}
