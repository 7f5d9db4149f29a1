//! Runs a `.tkd` student on an emulated board (QEMU) over a dataset split and
//! compares the device's int8 logits with the host's, bit for bit.

mod footprint;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tinykd_runtime::Model;

pub use footprint::Footprint;

/// An emulated board: its crate, Rust target and QEMU command line.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    pub name: &'static str,
    /// Directory under `firmware/boards/`.
    pub crate_dir: &'static str,
    pub target: &'static str,
    pub qemu: &'static str,
    pub qemu_args: &'static [&'static str],
    /// Instructions per SysTick tick under `-icount shift=0`.
    pub instructions_per_tick: u64,
    /// Memory the board offers the firmware.
    pub flash_bytes: u64,
    pub ram_bytes: u64,
    /// Debian package that provides `qemu`.
    pub qemu_package: &'static str,
}

/// Boards `tinykd emulate` knows.
pub const BOARDS: &[Board] = &[Board {
    name: "qemu-mps2-an385",
    crate_dir: "qemu-mps2-an385",
    target: "thumbv7m-none-eabi",
    qemu: "qemu-system-arm",
    qemu_args: &["-machine", "mps2-an385", "-cpu", "cortex-m3"],
    instructions_per_tick: 40,
    flash_bytes: 4 << 20,
    ram_bytes: 4 << 20,
    qemu_package: "qemu-system-arm",
}];

/// Looks a board up by name.
pub fn board(name: &str) -> Result<&'static Board> {
    BOARDS.iter().find(|b| b.name == name).with_context(|| {
        let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        format!("unknown board '{name}' (boards: {})", names.join(", "))
    })
}

/// Where the board crates live: `TINYKD_FIRMWARE_DIR`, else this source tree.
pub fn firmware_dir() -> PathBuf {
    std::env::var_os("TINYKD_FIRMWARE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("firmware"))
}

/// Result of an emulator run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmulationReport {
    pub board: String,
    pub n: usize,
    pub accuracy: Option<f64>,
    /// Share of samples whose int8 logits equal the host's, bit for bit.
    pub agreement: f64,
    pub host_accuracy: Option<f64>,
    pub flash_bytes: u64,
    pub ram_bytes: u64,
    pub static_ram_bytes: u64,
    pub peak_stack_bytes: u64,
    pub model_bytes: usize,
    pub instructions_per_inference: f64,
    pub elf: PathBuf,
    #[serde(skip)]
    pub device_logits: Vec<i8>,
}

/// Builds the board firmware with `model_path` embedded; returns the ELF path.
pub fn build_firmware(board: &Board, model_path: &Path) -> Result<PathBuf> {
    let dir = firmware_dir().join("boards").join(board.crate_dir);
    if !dir.join("Cargo.toml").is_file() {
        bail!("board crate not found at {} (set TINYKD_FIRMWARE_DIR to tinykd's firmware/ directory)", dir.display());
    }
    let model_path =
        std::fs::canonicalize(model_path).with_context(|| format!("{}: cannot resolve", model_path.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .env("TINYKD_MODEL", &model_path)
        // A parent cargo's target dir would mix host and board builds.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .with_context(|| format!("cannot run cargo to build {}", dir.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = if err.contains("target may not be installed") || err.contains("can't find crate for `core`") {
            format!("\nhint: rustup target add {}", board.target)
        } else {
            String::new()
        };
        let tail: Vec<&str> = err.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("building firmware for {} failed:\n{}{hint}", board.name, tail.join("\n"));
    }
    let elf = dir.join("target").join(board.target).join("release").join(format!("tinykd-board-{}", board.crate_dir));
    if !elf.is_file() {
        bail!("firmware build produced no ELF at {}", elf.display());
    }
    Ok(elf)
}

/// Runs `model_bytes` (a validated `.tkd`) on the board over `inputs`
/// (already quantized, `n × input_len`), comparing with the host runtime.
pub fn emulate(
    board: &Board,
    model_path: &Path,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
) -> Result<EmulationReport> {
    let bytes = crate::export::tkd::read(model_path)?;
    let model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    if bytes.len() as u64 > board.flash_bytes {
        bail!(
            "{}: model of {} bytes does not fit {}'s {} bytes of flash",
            model_path.display(),
            bytes.len(),
            board.name,
            board.flash_bytes
        );
    }
    let qemu = which(board.qemu).with_context(|| {
        format!("{} not found on PATH; install it (Debian/Ubuntu: apt-get install {})", board.qemu, board.qemu_package)
    })?;
    let elf = build_firmware(board, model_path)?;
    let footprint = Footprint::of_elf(&elf)?;

    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut file = Vec::with_capacity(12 + inputs.len());
    file.extend_from_slice(b"TKDI");
    file.extend_from_slice(&(n as u32).to_le_bytes());
    file.extend_from_slice(&(model.input_len() as u32).to_le_bytes());
    file.extend(inputs.iter().map(|v| *v as u8));
    std::fs::write(work.path().join("inputs.bin"), &file)?;

    let out = Command::new(&qemu)
        .args(board.qemu_args)
        .args(["-nographic", "-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native", "-icount", "shift=0,sleep=off"])
        .arg("-kernel")
        .arg(&elf)
        .current_dir(work.path())
        .output()
        .with_context(|| format!("cannot start {}", qemu.display()))?;
    if !out.status.success() {
        bail!(
            "{} exited with {} while running the firmware: {}{}",
            board.qemu,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let raw = std::fs::read(work.path().join("outputs.bin")).context("the firmware wrote no outputs.bin")?;
    let classes = model.class_count();
    let parsed = parse_outputs(&raw, n, classes)?;

    let (host_pred, host_logits) = crate::pipeline::run_quantized(&model, inputs, n)?;
    let agree =
        host_logits.chunks_exact(classes).zip(parsed.logits.chunks_exact(classes)).filter(|(h, d)| h == d).count();
    let device_pred: Vec<usize> = parsed.logits.chunks_exact(classes).map(tinykd_runtime::argmax).collect();
    let ticks: u64 = parsed.ticks.iter().map(|t| *t as u64).sum();
    Ok(EmulationReport {
        board: board.name.into(),
        n,
        accuracy: labels.map(|y| crate::util::accuracy(&device_pred, y)),
        host_accuracy: labels.map(|y| crate::util::accuracy(&host_pred, y)),
        agreement: agree as f64 / n.max(1) as f64,
        flash_bytes: footprint.flash_bytes,
        ram_bytes: footprint.static_ram_bytes + parsed.peak_stack as u64,
        static_ram_bytes: footprint.static_ram_bytes,
        peak_stack_bytes: parsed.peak_stack as u64,
        model_bytes: bytes.len(),
        instructions_per_inference: (ticks * board.instructions_per_tick) as f64 / n.max(1) as f64,
        elf,
        device_logits: parsed.logits,
    })
}

struct DeviceOutputs {
    logits: Vec<i8>,
    ticks: Vec<u32>,
    peak_stack: u32,
}

fn parse_outputs(raw: &[u8], n: usize, classes: usize) -> Result<DeviceOutputs> {
    let record = classes + 4;
    let expected = 12 + n * record + 8;
    if raw.len() != expected || &raw[0..4] != b"TKDO" {
        bail!("firmware output is malformed ({} bytes, expected {expected})", raw.len());
    }
    let u32_at = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
    if u32_at(4) as usize != n || u32_at(8) as usize != classes {
        bail!("firmware output header does not match the run (n or classes differ)");
    }
    let mut logits = Vec::with_capacity(n * classes);
    let mut ticks = Vec::with_capacity(n);
    for i in 0..n {
        let r = 12 + i * record;
        logits.extend(raw[r..r + classes].iter().map(|b| *b as i8));
        ticks.push(u32_at(r + classes));
    }
    let t = 12 + n * record;
    if &raw[t..t + 4] != b"STAK" {
        bail!("firmware output has no stack record");
    }
    Ok(DeviceOutputs { logits, ticks, peak_stack: u32_at(t + 4) })
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}
