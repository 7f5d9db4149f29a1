#![allow(clippy::unwrap_used)]
//! The firmware on QEMU's mps2-an385 (Cortex-M3) gives the host's int8
//! logits bit for bit over the whole MNIST-1D test split, for an MLP and a
//! 1-D CNN student. One test: the board crate is rebuilt per model, so the
//! runs must not overlap.

use tinykd::data::{ReadOptions, SplitName};
use tinykd_emulator_tests::{host_accuracy, mnist1d_student, models};

fn check(spec: &str, epochs: usize, macs: f64) {
    let dir = tempfile::tempdir().unwrap();
    let tkd = mnist1d_student(dir.path(), spec, epochs).unwrap();
    let host = host_accuracy(&tkd).unwrap();
    let data = models().join("data/mnist1d.npz");
    let r = tinykd::cli::emulate_model(&tkd, &data, SplitName::Test, "qemu-mps2-an385", None, ReadOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "{spec}: n={} accuracy={:?} agreement={} instructions/inference={:.0} ({:.2}/MAC) flash={} ram={} (stack {})",
        r.n,
        r.accuracy,
        r.agreement,
        r.instructions_per_inference,
        r.instructions_per_inference / macs,
        r.flash_bytes,
        r.ram_bytes,
        r.peak_stack_bytes
    );
    assert_eq!(r.n, 1000);
    assert_eq!(r.agreement, 1.0, "{spec}: device logits differ from the host's");
    assert_eq!(r.accuracy, Some(host), "{spec}: device accuracy differs from `tinykd eval` of the same .tkd");
    assert!(r.instructions_per_inference > macs && r.instructions_per_inference < 50.0 * macs);
    assert!(r.flash_bytes as usize > r.model_bytes);
    assert!(r.peak_stack_bytes > 0 && r.ram_bytes >= r.peak_stack_bytes);
}

#[test]
fn students_are_bit_exact_on_cortex_m3() {
    // 40·32 + 32·24 + 24·10 MACs.
    check("dense(32) relu dense(24) relu dense(10)", 15, 2_288.0);
    // conv 20 outputs × 8 ch × 5 taps, conv 10 × 16 × 8·3, dense 16·10.
    check("conv1d(8,k5,s2) relu conv1d(16,k3,s2) relu gap dense(10)", 8, 800.0 + 3_840.0 + 160.0);
}
