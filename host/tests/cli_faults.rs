#![allow(clippy::unwrap_used)]
//! tinykd under faults from outside: stopped by a signal while QEMU runs,
//! run under an ordinary umask, pointed at an emulated board's serial line.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A small int8 student of MNIST-1D, `s.tkd` in `d`.
fn student(d: &Path) -> String {
    let data = models().join("data/mnist1d.npz");
    let data = data.to_str().unwrap().to_owned();
    let args = ["distill", "--alpha", "0", "--data", &data, "--student", "dense(16) relu dense(10)", "--steps", "50"];
    let o = tinykd(&[&args[..], &["--no-baseline", "--out", "s.ckpt"]].concat(), d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tinykd(&["quantize", "--student", "s.ckpt", "--data", &data, "--out", "s.tkd"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    data
}

/// The children of `pid` whose command name starts with `prefix`.
fn children_named(pid: u32, prefix: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && comm.starts_with(prefix) {
            found.extend(stat[..open].trim().parse::<u32>().ok());
        }
    }
    found
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

#[test]
fn sigterm_to_emulate_leaves_no_qemu_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = student(d);
    let emulate = || {
        Command::new(env!("CARGO_BIN_EXE_tinykd"))
            .args(["emulate", "--model", "s.tkd", "--data", &data, "--board", "qemu-mps2-an385", "--split", "train"])
            .current_dir(d)
            .env("TINYKD_CACHE_DIR", d.join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The first run builds the image; the tries after start QEMU at once.
    let o = emulate().wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for attempt in 0..10 {
        let mut tinykd = emulate();
        let start = Instant::now();
        let qemu = loop {
            let q = children_named(tinykd.id(), "qemu-system");
            if let Some(&q) = q.first() {
                break q;
            }
            assert!(tinykd.try_wait().unwrap().is_none(), "try {attempt}: tinykd ended before QEMU was seen");
            assert!(start.elapsed() < Duration::from_secs(60), "try {attempt}: no QEMU after 60 s");
            std::thread::sleep(Duration::from_millis(5));
        };
        let status = Command::new("kill").args(["-TERM", &tinykd.id().to_string()]).status().unwrap();
        assert!(status.success());
        let status = tinykd.wait().unwrap();
        assert_eq!(status.signal(), Some(15), "try {attempt}: tinykd should die of SIGTERM, got {status:?}");
        let gone = Instant::now();
        while alive(qemu) && gone.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(qemu), "try {attempt}: QEMU {qemu} outlived tinykd");
    }
}

#[test]
fn artefacts_honour_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = models().join("data/mnist1d.npz");
    let bin = env!("CARGO_BIN_EXE_tinykd");
    let script = format!(
        "umask 022 && {bin} distill --alpha 0 --data {data} --student 'dense(8) relu dense(10)' --steps 20 \
         --no-baseline --out s.ckpt && {bin} quantize --student s.ckpt --data {data} --out s.tkd && \
         {bin} export --model s.tkd --format tflite --out s.tflite && {bin} export --model s.tkd --format c --out s.h",
        data = data.display()
    );
    let o = Command::new("sh").args(["-c", &script]).current_dir(d).env("TINYKD_CACHE_DIR", d.join("cache")).output();
    let o = o.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut seen = 0;
    for f in ["s.ckpt", "s.tkd", "s.tflite", "s.h"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f}: mode {mode:03o}");
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn verify_on_an_emulated_boards_serial_line_is_refused_as_a_board_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = student(d);
    // `emulate --json` builds the image and names it.
    let o = tinykd(
        &["emulate", "--model", "s.tkd", "--data", &data, "--board", "qemu-mps2-an385", "--limit", "2", "--json"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let elf = report["elf"].as_str().unwrap().to_owned();
    // The same image with its UART on a pseudo-terminal, as a user would serve it.
    let mut qemu = Command::new("qemu-system-arm")
        .args(["-M", "mps2-an385", "-display", "none", "-monitor", "none", "-serial", "pty", "-kernel", &elf])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // QEMU names the pseudo-terminal on stdout ("char device redirected to /dev/pts/N").
    let out = BufReader::new(qemu.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Some(p) = line.split_whitespace().find(|w| w.starts_with("/dev/pts/")) {
                let _ = tx.send(p.to_owned());
                return;
            }
        }
    });
    let pty = rx.recv_timeout(Duration::from_secs(20));
    let Ok(pty) = pty else {
        let _ = qemu.kill();
        panic!("QEMU named no pseudo-terminal within 20 s");
    };
    let o = tinykd(&["verify", "--model", "s.tkd", "--data", &data, "--port", &pty, "--limit", "2"], d);
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert_clean_failure(&o, "an emulated board");
    assert!(stderr(&o).contains("tinykd emulate --board qemu-mps2-an385"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
}
