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

/// The report of a run: its numbers are `tinykd eval`'s and `emulate`'s,
/// and `report.html` renders, images included, in a headless Chromium.
#[test]
fn the_report_shows_the_runs_numbers_and_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!(
        r#"data = "{}"
teachers = ["{}"]
backend = "tract"
student = "conv2d(4,k3) relu gap dense(10)"
out_dir = "out"
[distill]
steps = 300
[emulate]
board = "qemu-mps2-an385"
limit = 50
"#,
        models().join("data/digits.npz").display(),
        models().join("teachers/digits_cnn.onnx").display()
    );
    std::fs::write(d.join("c.toml"), cfg).unwrap();
    let o = tinykd(&["run", "c.toml", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = json(&o);
    let out = d.join("out");
    for f in ["report.md", "report.html", "learning_curves.png", "accuracy.png", "confusion.png", "footprint.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The int8 accuracy in the report is tinykd eval's on the same model.
    let o = tinykd(
        &["eval", "--model", "out/student.tkd", "--data", models().join("data/digits.npz").to_str().unwrap(), "--json"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let eval = json(&o)["accuracy"].as_f64().unwrap();
    assert_eq!(report["int8_test_accuracy"].as_f64().unwrap(), eval);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("| int8 student test accuracy (.tkd) | {:.2} % |", eval * 100.0)), "{md}");
    let device = report["emulation"]["accuracy"].as_f64().unwrap();
    assert!(md.contains(&format!("| on qemu-mps2-an385 (50 test samples) | {:.2} % |", device * 100.0)), "{md}");
    // The confusion matrix counts every test sample once.
    assert!(md.contains("![Confusion matrix of the int8 student (test split)](confusion.png)"));

    if std::env::var_os("TINYKD_SKIP_BROWSER").is_some() {
        return;
    }
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("no Chromium (apt-get install chromium, or TINYKD_SKIP_BROWSER=1)");
    let shot = d.join("shot.png");
    let o = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,2400"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", out.join("report.html").display()))
        .output()
        .unwrap();
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&o.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    // Saturated pixels come only from the plots (the page itself is black
    // text on white): the inlined images were decoded and drawn.
    let colored = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .filter(|p| {
            let (mx, mn) = (p[..3].iter().max().unwrap(), p[..3].iter().min().unwrap());
            mx - mn > 80
        })
        .count();
    let total = (info.width * info.height) as usize;
    assert!(colored * 100 > total, "only {colored} of {total} pixels are colored: the plots did not render");
}
