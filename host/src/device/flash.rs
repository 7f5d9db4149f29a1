//! Real boards: flashing through probe-rs, and running a split over a
//! serial port on a board that already runs the model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{
    Board, EmulationReport, FirmwareBuild, Footprint, Runner, Session, board_of_image, boards, build_firmware,
    fit_check, model_bytes_in, open_port, run_split, which,
};

/// What `tinykd flash` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashReport {
    pub board: String,
    pub elf: PathBuf,
    pub flash_bytes: u64,
    pub static_ram_bytes: u64,
    pub model_bytes: usize,
    /// Whether probe-rs wrote the image to the chip (false with `build_only`).
    pub flashed: bool,
}

/// Builds the firmware of a real board with the model, after checking that
/// it fits, and flashes it with probe-rs (unless `build_only`).
pub fn flash(board: &Board, model_path: &Path, build_only: bool, build: FirmwareBuild) -> Result<FlashReport> {
    let Runner::Probe { chip } = board.runner else {
        bail!(
            "{} is an emulated board: run it with `tinykd emulate --board {0}` (or `tinykd verify --board {0}`)",
            board.name
        );
    };
    let bytes = crate::int8::read(model_path)?;
    let model = crate::int8::parse(&bytes)?;
    fit_check(board, &model, model_path)?;
    let elf = build_firmware(board, model_path, build)?;
    let footprint = Footprint::of_elf(&elf)?;
    if footprint.flash_bytes > board.flash_bytes || footprint.static_ram_bytes > board.ram_bytes {
        bail!(
            "{}: the firmware takes {} bytes of flash and {} of static RAM; {} has {} and {}",
            model_path.display(),
            footprint.flash_bytes,
            footprint.static_ram_bytes,
            board.name,
            board.flash_bytes,
            board.ram_bytes
        );
    }
    let mut report = FlashReport {
        board: board.name.into(),
        elf: elf.clone(),
        flash_bytes: footprint.flash_bytes,
        static_ram_bytes: footprint.static_ram_bytes,
        model_bytes: model_bytes_in(&elf, bytes.len())?,
        flashed: false,
    };
    if build_only {
        return Ok(report);
    }
    let probe_rs = which("probe-rs").with_context(|| {
        format!(
            "built {} ({} bytes of flash), but probe-rs is not installed: install it (cargo install probe-rs-tools \
             --locked) and run again, or flash that ELF with your own tool",
            elf.display(),
            footprint.flash_bytes
        )
    })?;
    for args in [&["download", "--chip", chip][..], &["reset", "--chip", chip][..]] {
        let out = crate::children::output(Command::new(&probe_rs).args(args).args(if args[0] == "download" {
            vec![elf.as_os_str()]
        } else {
            vec![]
        }))
        .with_context(|| format!("cannot run {}", probe_rs.display()))?;
        if !out.status.success() {
            bail!(
                "probe-rs {} failed for {chip}: {} (is the board connected through a debug probe?)",
                args[0],
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    report.flashed = true;
    Ok(report)
}

/// Runs `inputs` on a board already running the model, over a serial port.
pub fn verify_port(
    port: &str,
    baud: u32,
    expected_board: Option<&Board>,
    model_path: &Path,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
) -> Result<EmulationReport> {
    let bytes = crate::int8::read(model_path)?;
    let model = crate::int8::parse(&bytes)?;
    let link = open_port(port, baud).context(crate::failure::Failure::Board)?;
    let (mut session, info) = Session::open(link, Duration::from_secs(10)).context(crate::failure::Failure::Board)?;
    let board = match (board_of_image(&info.board, true), board_of_image(&info.board, false)) {
        (Some(board), _) => board,
        (None, Some(emulated)) => {
            return Err(anyhow::anyhow!(
                "{port}: the board says it is {}, an emulated board: run it with `tinykd emulate --board {}`, which \
                 starts QEMU with instruction counting",
                emulated.name,
                emulated.name
            ))
            .context(crate::failure::Failure::Board);
        }
        (None, None) => {
            return Err(anyhow::anyhow!(
                "{port}: the board says it is '{}', which this tinykd does not know (boards: {})",
                info.board,
                boards::BOARDS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
            ))
            .context(crate::failure::Failure::Board);
        }
    };
    if let Some(b) = expected_board
        && b.crate_dir != board.crate_dir
    {
        bail!("{port}: expected a {} but the board says it is '{}'", b.name, info.board);
    }
    let mut report =
        run_split(&mut session, &info, board, &model, inputs, n, labels).context(crate::failure::Failure::Board)?;
    report.ram_bytes = report.peak_stack_bytes;
    Ok(report)
}
