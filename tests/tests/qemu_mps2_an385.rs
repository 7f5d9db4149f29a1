#![allow(clippy::unwrap_used)]
//! The firmware on QEMU's mps2-an385 (Cortex-M3) gives the host's int8
//! logits bit for bit over the whole MNIST-1D test split.

use tinykd::data::SplitName;
use tinykd_emulator_tests::{host_accuracy, mnist1d_student, models};

#[test]
fn mnist1d_student_is_bit_exact_on_cortex_m3() {
    let dir = tempfile::tempdir().unwrap();
    let tkd = mnist1d_student(dir.path(), "dense(32) relu dense(24) relu dense(10)", 15).unwrap();
    let host = host_accuracy(&tkd).unwrap();
    let data = models().join("data/mnist1d.npz");
    let r = tinykd::cli::emulate_model(&tkd, &data, SplitName::Test, "qemu-mps2-an385", None, 1.0 / 255.0)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "mps2-an385: n={} accuracy={:?} agreement={} instructions/inference={:.0} flash={} ram={} (stack {})",
        r.n, r.accuracy, r.agreement, r.instructions_per_inference, r.flash_bytes, r.ram_bytes, r.peak_stack_bytes
    );
    assert_eq!(r.n, 1000);
    assert_eq!(r.agreement, 1.0, "device logits differ from the host's");
    assert_eq!(r.accuracy, Some(host), "device accuracy differs from `tinykd eval` of the same .tkd");
    // 40·32 + 32·24 + 24·10 = 2,288 MACs: the count must be in a sane band.
    assert!(r.instructions_per_inference > 2_288.0 && r.instructions_per_inference < 50.0 * 2_288.0);
    assert!(r.flash_bytes as usize > r.model_bytes);
    assert!(r.peak_stack_bytes > 0 && r.ram_bytes >= r.peak_stack_bytes);
}
