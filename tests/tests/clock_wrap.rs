#![allow(clippy::unwrap_used)]
//! Every emulated board's cycle counter, read across thousands of wraps of
//! its low part, never goes backwards nor jumps. The boards run their clock
//! self-test image (built with `TINYKD_CLOCK_TEST=1`: SysTick wrapping every
//! 1,024 ticks instead of 2^24 on the Cortex-M boards, reads with interrupts
//! on and in windows with interrupts masked; on RISC-V, reads of `minstret`
//! across carries into `minstreth` amid timer interrupts), which reports one
//! line on its UART.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tinykd::device;

/// SysTick wraps a Cortex-M self-test reads across (`TEST_WRAPS` in
/// `firmware/boards/common/src/systick.rs`).
const SYSTICK_WRAPS: u64 = 5000;
/// `minstret` carries the RISC-V self-test reads across (`TEST_WRAPS` in
/// `firmware/boards/common/src/instret.rs`).
const INSTRET_WRAPS: u64 = 4;

/// Any valid model: the self-test image embeds one but does not run it.
fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../firmware/protocol/src/testdata/mlp.tkd")
}

/// Builds and runs `board`'s clock self-test; its report as `name=value` pairs.
fn self_test(board: &str) -> BTreeMap<String, u64> {
    let b = device::board(board).unwrap();
    let elf = device::build_crate_with(b.crate_dir, b.target, b.name, &model(), &[("TINYKD_CLOCK_TEST", "1")])
        .unwrap_or_else(|e| panic!("{board}: {e:#}"));
    let (_qemu, mut link) = device::start_qemu(b, &elf).unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut line = Vec::new();
    while line.last() != Some(&b'\n') {
        match link.read_byte(deadline).unwrap() {
            Some(c) => line.push(c),
            None => panic!("{board}: no clock report within 180 s (got {:?})", String::from_utf8_lossy(&line)),
        }
    }
    let line = String::from_utf8_lossy(&line).trim().to_owned();
    eprintln!("{board:<20} {line} ({:.1} s)", started.elapsed().as_secs_f64());
    let mut words = line.split(' ');
    assert_eq!(words.next(), Some("tinykd-clock-test"), "{board}: {line}");
    let verdict = words.next().unwrap_or_default();
    let fields: BTreeMap<String, u64> =
        words.filter_map(|w| w.split_once('=')).filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?))).collect();
    assert_eq!(verdict, "pass", "{board}: the clock went backwards or jumped: {line}");
    for field in ["backwards", "jumps"] {
        assert_eq!(fields.get(field), Some(&0), "{board}: {line}");
    }
    fields
}

fn check_systick(board: &str) {
    let f = self_test(board);
    assert!(f["wraps"] >= SYSTICK_WRAPS, "{board}: {f:?}");
    // Dozens of readings a period (a period is 6,000 instructions on the
    // netduinoplus2, whose SysTick QEMU runs at 168 MHz, 40,000 or more on
    // the others), many in masked windows, and the largest step between two
    // well under the bound (a quarter period).
    assert!(f["reads"] >= 40 * SYSTICK_WRAPS && f["masked"] >= 20 * SYSTICK_WRAPS, "{board}: {f:?}");
    assert!(f["reads"] > f["masked"] + 10 * SYSTICK_WRAPS, "{board}: few readings with interrupts on: {f:?}");
    assert_eq!(f["bad_with_interrupts_on"], 0, "{board}: {f:?}");
    assert!(f["max_step"] > 0 && f["max_step"] <= f["bound"], "{board}: {f:?}");
}

#[test]
fn qemu_mps2_an385_systick_clock() {
    check_systick("qemu-mps2-an385");
}

#[test]
fn qemu_mps2_an386_systick_clock() {
    check_systick("qemu-mps2-an386");
}

#[test]
fn qemu_mps2_an500_systick_clock() {
    check_systick("qemu-mps2-an500");
}

#[test]
fn qemu_lm3s6965_systick_clock() {
    check_systick("qemu-lm3s6965");
}

#[test]
fn qemu_microbit_cortex_m0_systick_clock() {
    check_systick("qemu-microbit");
}

#[test]
fn qemu_netduinoplus2_systick_clock() {
    check_systick("qemu-netduinoplus2");
}

#[test]
fn qemu_riscv32_instret_clock() {
    let f = self_test("qemu-riscv32");
    assert!(f["wraps"] >= INSTRET_WRAPS, "{f:?}");
    // Every carry happened between two dense readings, with timer
    // interrupts taken among them.
    assert_eq!(f["carries_between_reads"], f["wraps"], "{f:?}");
    assert!(f["near_carry_reads"] >= 10_000 * INSTRET_WRAPS, "{f:?}");
    assert!(f["timer_interrupts"] >= 100 * INSTRET_WRAPS, "{f:?}");
}
