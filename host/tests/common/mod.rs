#![allow(clippy::unwrap_used)]
//! Helpers shared by the integration tests: paths to models/, the binary, npz writing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn models() -> PathBuf {
    repo().join("models")
}

/// Runs the binary in `dir`, with the teacher cache inside `dir/cache`.
pub fn tinykd(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinykd"))
        .args(args)
        .current_dir(dir)
        .env("TINYKD_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("run tinykd")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run: non-zero exit, a one-line `error:` cause containing
/// `needle`, and no panic.
pub fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line in: {err}"));
    assert!(line.contains(needle), "error line '{line}' lacks '{needle}'");
    // Every error but clap's usage errors (exit 2, which point to --help) carries a hint.
    if o.status.code() != Some(2) {
        assert!(err.lines().any(|l| l.starts_with("hint: ")), "no hint line in: {err}");
    }
}

/// A float32 array for `write_npz`.
#[derive(Debug)]
pub struct F32Array<'a> {
    pub name: &'a str,
    pub shape: Vec<u64>,
    pub data: Vec<f32>,
}

/// Writes an npz with float32 arrays and int64 arrays.
use npyz::WriterBuilder;

pub fn write_npz(path: &Path, floats: &[F32Array<'_>], ints: &[(&str, Vec<i64>)]) {
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    for a in floats {
        let mut w =
            npz.array::<f32>(a.name, Default::default()).unwrap().default_dtype().shape(&a.shape).begin_nd().unwrap();
        w.extend(a.data.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    for (name, v) in ints {
        let mut w = npz
            .array::<i64>(name, Default::default())
            .unwrap()
            .default_dtype()
            .shape(&[v.len() as u64])
            .begin_nd()
            .unwrap();
        w.extend(v.iter().copied()).unwrap();
        w.finish().unwrap();
    }
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", stdout(o)))
}

/// `tinykd distill` with a teacher and data (absolute paths), the tract
/// backend and a student spec; callers add their own flags.
pub fn distill_args(teacher: &Path, data: &Path, student: &str) -> Vec<String> {
    let s = |v: &str| v.to_owned();
    vec![
        s("distill"),
        s("--teacher"),
        teacher.display().to_string(),
        s("--data"),
        data.display().to_string(),
        s("--backend"),
        s("tract"),
        s("--student"),
        s(student),
    ]
}

/// Runs the binary with owned arguments (see [`distill_args`]).
pub fn tinykd_owned(args: &[String], dir: &Path) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tinykd(&refs, dir)
}

/// The Python interpreter for TFLite Micro (`TINYKD_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("TINYKD_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Writes int8 samples as an `.npy` of shape `[n, len]`.
pub fn write_npy_i8(path: &Path, x: &[i8], n: usize) {
    let mut buf = Vec::new();
    {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[n as u64, (x.len() / n) as u64])
            .writer(&mut buf)
            .begin_nd()
            .unwrap();
        w.extend(x.iter().copied()).unwrap();
        w.finish().unwrap();
    }
    std::fs::write(path, buf).unwrap();
}
