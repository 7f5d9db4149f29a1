//! Emulated boards: QEMU started with instruction counting and its UART on
//! a pipe, the model run over the board protocol.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{
    Board, EmulationReport, FirmwareBuild, Footprint, HostLink, Runner, Session, build_firmware, fit_check,
    model_bytes_in, run_split, which,
};

/// A QEMU process, killed when dropped, on a signal to tinykd, or when
/// tinykd dies (see [`crate::children`]).
#[derive(Debug)]
pub struct Qemu(#[allow(dead_code)] crate::children::Tied);

/// The QEMU binary (found on PATH) and machine arguments of an emulated board.
fn qemu_for(board: &Board) -> Result<(PathBuf, &'static [&'static str])> {
    let Runner::Qemu { binary, machine, package, .. } = board.runner else {
        bail!("{} is a real board: use `tinykd verify --port …` after `tinykd flash`", board.name);
    };
    let qemu = which(binary).with_context(|| {
        format!("{binary} not found on PATH; install it (Debian/Ubuntu: apt-get install {package})")
    })?;
    Ok((qemu, machine))
}

/// Starts `elf` on an emulated board with its UART on QEMU's stdio and
/// instruction counting on; returns the process and the line to the board.
pub fn start_qemu(board: &Board, elf: &Path) -> Result<(Qemu, HostLink)> {
    let (qemu, machine) = qemu_for(board)?;
    let binary = qemu.file_name().and_then(|n| n.to_str()).unwrap_or("qemu");
    let mut child = crate::children::Tied::spawn(
        Command::new(&qemu)
            .args(machine)
            .args(["-display", "none", "-monitor", "none"])
            .args(["-chardev", "stdio,id=uart,mux=off,signal=off", "-serial", "chardev:uart"])
            .args(["-icount", "shift=0,sleep=off", "-kernel"])
            .arg(elf)
            // Profiling: e.g. TINYKD_QEMU_ARGS="-d exec,nochain -D trace.log"
            // logs every translation block run, to attribute instructions to code.
            .args(std::env::var("TINYKD_QEMU_ARGS").unwrap_or_default().split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .with_context(|| format!("cannot start {}", qemu.display()))?;
    let (Some(stdin), Some(stdout)) = child.take_pipes() else {
        bail!("cannot talk to {}", qemu.display());
    };
    let link = HostLink::new(format!("{} ({binary})", board.name), Box::new(stdout), Box::new(stdin));
    Ok((Qemu(child), link))
}

/// Builds the firmware for an emulated board, starts it in QEMU and runs
/// `inputs` (already quantized, `n × input_len`), comparing with the host.
pub fn emulate(
    board: &Board,
    model_path: &Path,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
) -> Result<EmulationReport> {
    emulate_with(board, model_path, inputs, n, labels, FirmwareBuild::default())
}

/// [`emulate`] with the firmware built as `build` says (its engine, its
/// opt-level).
pub fn emulate_with(
    board: &Board,
    model_path: &Path,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
    build: FirmwareBuild,
) -> Result<EmulationReport> {
    let bytes = crate::int8::read(model_path)?;
    let model = crate::int8::parse(&bytes)?;
    use crate::failure::Failure;
    fit_check(board, &model, model_path).context(Failure::Build)?;
    // Before building: a missing QEMU or a real board fails fast.
    qemu_for(board).context(Failure::Board)?;
    // An image of its own (see `keep_image`): other builds, here or in
    // another process, do not touch it.
    let elf = build_firmware(board, model_path, build)?;
    let footprint = Footprint::of_elf(&elf)?;
    let model_bytes = model_bytes_in(&elf, bytes.len())?;
    let (_qemu, link) = start_qemu(board, &elf).context(Failure::Board)?;
    let (mut session, info) = Session::open(link, Duration::from_secs(30)).context(Failure::Board)?;
    let mut report = run_split(&mut session, &info, board, &model, inputs, n, labels).context(Failure::Board)?;
    report.flash_bytes = footprint.flash_bytes;
    report.model_bytes = model_bytes;
    report.static_ram_bytes = footprint.static_ram_bytes;
    report.ram_bytes = footprint.static_ram_bytes + report.peak_stack_bytes;
    report.elf = Some(elf);
    Ok(report)
}
