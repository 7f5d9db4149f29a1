#![allow(clippy::unwrap_used)]
//! Two `tinykd emulate` processes on one board at once, each with its own
//! model: every build of a board crate writes the same ELF path, so each
//! process must run the image it built (kept under a lock as a copy of its
//! own), not the other's.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn two_processes_emulate_two_models_on_one_board_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = models().join("data/mnist1d.npz");
    let data = data.to_str().unwrap();
    let student = "conv1d(8,k5,s2) relu gap dense(10)";
    let args = ["distill", "--alpha", "0", "--data", data, "--student", student, "--steps", "200"];
    let o = tinykd(&[&args[..], &["--no-baseline", "--out", "s.ckpt"]].concat(), d);
    assert!(o.status.success(), "{}", stderr(&o));
    for (scales, out) in [("per-channel", "a.tkd"), ("per-tensor", "b.tkd")] {
        let args = ["quantize", "--student", "s.ckpt", "--data", data, "--weight-scales", scales, "--out", out];
        let o = tinykd(&args, d);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_ne!(std::fs::read(d.join("a.tkd")).unwrap(), std::fs::read(d.join("b.tkd")).unwrap());

    let children: Vec<_> = ["a.tkd", "b.tkd"]
        .iter()
        .map(|model| {
            Command::new(env!("CARGO_BIN_EXE_tinykd"))
                .args(["emulate", "--model", model, "--data", data, "--board", "qemu-mps2-an385"])
                .args(["--limit", "30", "--json"])
                .current_dir(d)
                .env("TINYKD_CACHE_DIR", d.join("cache"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            json(&o)
        })
        .collect();
    for r in &reports {
        assert_eq!(r["agreement"], 1.0, "{r}");
        assert_eq!(r["n"], 30, "{r}");
    }
    let elfs: Vec<&str> = reports.iter().map(|r| r["elf"].as_str().unwrap()).collect();
    assert_ne!(elfs[0], elfs[1], "one image path for two models");
    assert!(elfs.iter().all(|e| std::path::Path::new(e).is_file()), "{elfs:?}");
}
