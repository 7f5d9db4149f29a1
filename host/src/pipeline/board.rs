//! A `.tkd` on a board: the split's inputs quantized as the device takes
//! them, run on an emulated board or a real one on a serial port.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::data::{ReadOptions, SplitName};
use crate::device::{EmulationReport, FirmwareBuild};

/// The split's inputs, quantized with the model's parameters (device
/// layout), and their labels.
pub fn device_inputs(
    model: &Path,
    data_path: &Path,
    split: SplitName,
    limit: Option<usize>,
    read: ReadOptions,
) -> Result<(Vec<i8>, usize, Option<Vec<i64>>)> {
    let bytes = crate::int8::read(model)?;
    let m = crate::int8::parse(&bytes)?;
    let data = crate::data::Dataset::load(data_path, read.for_model(crate::int8::data_layout(&bytes)))?;
    crate::int8::check_model_data(&m, &data)?;
    let s = data.split(split)?;
    let n = limit.map_or(s.n, |l| l.min(s.n));
    if n == 0 {
        bail!("nothing to run: --limit 0");
    }
    let q = crate::int8::quantize_inputs(&m, &s.x[..n * data.sample_len()]);
    Ok((q, n, s.y.as_ref().map(|y| y[..n].to_vec())))
}

/// Loads data, quantizes the split's inputs with the model's parameters and
/// runs an emulated board.
pub fn emulate_model(
    model: &Path,
    data_path: &Path,
    split: SplitName,
    board: &str,
    limit: Option<usize>,
    read: ReadOptions,
) -> Result<EmulationReport> {
    emulate_model_with(model, data_path, split, board, limit, read, FirmwareBuild::default())
}

/// [`emulate_model`] with the firmware built as `build` says.
pub fn emulate_model_with(
    model: &Path,
    data_path: &Path,
    split: SplitName,
    board: &str,
    limit: Option<usize>,
    read: ReadOptions,
    build: FirmwareBuild,
) -> Result<EmulationReport> {
    let board = crate::device::board(board)?;
    let (q, n, labels) = device_inputs(model, data_path, split, limit, read)?;
    crate::device::emulate_with(board, model, &q, n, labels.as_deref(), build)
        .with_context(|| format!("emulating {} on {}", model.display(), board.name))
}

/// Runs the split on a board that already runs the model, over `port`
/// (`expected`: the board it must say it is).
#[allow(clippy::too_many_arguments)]
pub fn verify_model_on_port(
    model: &Path,
    data_path: &Path,
    split: SplitName,
    limit: Option<usize>,
    read: ReadOptions,
    port: &str,
    baud: u32,
    expected: Option<&crate::device::Board>,
) -> Result<EmulationReport> {
    let (q, n, labels) = device_inputs(model, data_path, split, limit, read)?;
    crate::device::verify_port(port, baud, expected, model, &q, n, labels.as_deref())
        .with_context(|| format!("verifying {} on {port}", model.display()))
}
