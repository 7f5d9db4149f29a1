#![allow(clippy::unwrap_used)]
//! An installed tinykd (here: the binary copied out of the checkout) builds
//! and runs its boards from the firmware sources embedded in it.

mod common;

use common::*;

#[test]
fn a_binary_outside_the_checkout_emulates_from_its_embedded_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tinykd");
    std::fs::copy(env!("CARGO_BIN_EXE_tinykd"), &exe).unwrap();
    let model = repo().join("firmware/protocol/src/testdata/mlp.tkd");
    let data = models().join("data/mnist1d.npz");
    let o = std::process::Command::new(&exe)
        .args(["emulate", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()])
        .args(["--board", "qemu-mps2-an385", "--limit", "20", "--json"])
        .current_dir(dir.path())
        .env("TINYKD_CACHE_DIR", dir.path().join("cache"))
        .env_remove("TINYKD_FIRMWARE_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["agreement"], 1.0, "{j}");
    let elf = j["elf"].as_str().unwrap();
    assert!(elf.starts_with(dir.path().join("cache").to_str().unwrap()), "built outside the unpacked copy: {elf}");
}
