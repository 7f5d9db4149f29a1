//! Runs a `.tkd` student on a board — emulated in QEMU or on silicon
//! through a serial port — over a dataset split, with tinykd's board
//! protocol, and compares the device's int8 logits with the host's, bit for
//! bit. `tinykd emulate` and `tinykd verify` are this module.

mod boards;
mod build;
mod fit;
mod flash;
mod footprint;
mod link;
mod qemu;
mod session;
mod sources;

use std::path::PathBuf;

pub use boards::{BOARDS, Board, Runner, board, board_of_image};
pub use build::{Engine, FirmwareBuild, OptLevel, build_crate, build_crate_with, build_firmware};
pub use fit::{FitEstimate, fit_check, fit_estimate};
pub use flash::{FlashReport, flash, verify_port};
pub use footprint::model_bytes_in;
pub use footprint::{Footprint, symbol_bytes};
pub use link::{HostLink, open_port};
pub use qemu::{Qemu, emulate, emulate_with, start_qemu};
pub use session::{DeviceInfo, Reply, Session, describe, printable, run_split};
pub use sources::{firmware_dir, unpack_embedded};

/// Result of running a split on a board.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// Emulated boards: instructions (exact under `-icount`); silicon: core cycles.
    pub instructions_per_inference: f64,
    /// What the per-inference count counts: "instructions" or "cycles".
    pub counted: String,
    pub device: DeviceInfo,
    pub elf: Option<PathBuf>,
    #[serde(skip)]
    pub device_logits: Vec<i8>,
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}
