//! Will a model fit a board? Estimated from the blob and the board's
//! measured engine, before anything is built.

use std::path::Path;

use anyhow::{Result, bail};
use tinykd_runtime::Model;

use super::boards::Board;

/// What a model needs on a board, estimated before building: flash for the
/// blob and the board's firmware (its largest measured image), RAM for the
/// arena, the receive buffer and the firmware's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitEstimate {
    pub flash: u64,
    pub receive_buffer: u64,
    pub ram: u64,
}

/// The [`FitEstimate`] of `model` on `board`.
pub fn fit_estimate(board: &Board, model: &Model<'_>) -> FitEstimate {
    let receive_buffer = model.input_len().max(16) as u64;
    FitEstimate {
        flash: model.as_bytes().len() as u64 + board.engine_flash_bytes,
        receive_buffer,
        ram: model.arena_bytes() as u64 + receive_buffer + board.engine_stack_bytes + packed_ring_bytes(board, model),
    }
}

/// The stack a Cortex-M3/M4/M7 build for speed takes beyond the engine's
/// estimate for its largest layer buffer: the windows convolutions gather
/// (on the M4/M7 a ring of twice the largest window,
/// `kernels::conv_packed_rows`, four bytes a value: 3×3 over 64 channels
/// is 4,608 B; on the M3 two pixels' windows, two bytes a value), and on
/// the M4/M7 a depthwise layer's ring of unpacked rows (eight bytes a
/// pair) and a fully connected layer's input unpacked ahead. 0 on other
/// cores.
fn packed_ring_bytes(board: &Board, model: &Model<'_>) -> u64 {
    use tinykd_runtime::compiled::Step;
    use tinykd_runtime::kernels::{ChannelTable, conv_gathered::gathered_window, depthwise, fully_connected};
    let (bytes_per_value, dsp) = match board.target {
        t if t.starts_with("thumbv7em") => (8, true),
        t if t.starts_with("thumbv7m") => (4, false),
        _ => return 0,
    };
    (0..model.layer_count())
        .filter_map(|i| match model.compiled_layer(i).ok()?.step {
            Step::Conv(conv) => gathered_window(&conv.params).map(|n| bytes_per_value * n),
            Step::ConvAdd(fused) => gathered_window(&fused.conv.params).map(|n| bytes_per_value * n),
            Step::Depthwise(dw) if dsp => Some(8 * depthwise::ring_window(&dw.params)),
            Step::FullyConnected(fc) if dsp => {
                let rows = fc.channels.count();
                Some(fully_connected::unpacked_input_bytes(fc.weights.len().checked_div(rows)?, rows))
            }
            _ => None,
        })
        .max()
        .map_or(0, |n| n as u64)
}

/// Refuses a model that cannot fit the board, before anything is built:
/// the blob against flash, the arena + receive buffer + the engine's stack
/// against RAM, with the numbers.
pub fn fit_check(board: &Board, model: &Model<'_>, what: &Path) -> Result<()> {
    let need = fit_estimate(board, model);
    let flash_need = need.flash;
    if flash_need > board.flash_bytes {
        bail!(
            "{}: does not fit {}: the model ({} bytes) and the firmware (~{} bytes) need {} bytes of flash, the \
             board has {}",
            what.display(),
            board.name,
            model.as_bytes().len(),
            board.engine_flash_bytes,
            flash_need,
            board.flash_bytes
        );
    }
    let (rx, ram_need) = (need.receive_buffer, need.ram);
    if ram_need > board.ram_bytes {
        bail!(
            "{}: does not fit {}: arena {} (planned; most alive at once: {}) + receive buffer {} + stack ~{} = {} \
             bytes of RAM, the board has {}",
            what.display(),
            board.name,
            model.arena_bytes(),
            crate::int8::liveness_bound(model)?,
            rx,
            board.engine_stack_bytes,
            ram_need,
            board.ram_bytes
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::boards;
    use rand::SeedableRng;

    #[test]
    fn the_estimate_counts_depthwise_rings_and_unpacked_inputs_on_the_m4() {
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let ring = |spec: &str, shape: &[usize], board: &str| {
            let s = crate::student::Student::from_spec_any_output(spec, shape, &mut rng.clone()).unwrap();
            let calib = vec![0.5f32; 4 * s.input_len()];
            let q = crate::quant::quantize_student(&s, &calib, 4, crate::quant::Calibration::Minmax).unwrap();
            let bytes = crate::export::tkd::encode(&q).unwrap();
            packed_ring_bytes(boards::board(board).unwrap(), &Model::from_bytes(&bytes).unwrap())
        };
        // Depthwise 3×3 over 8×8×8: rows of 8 + 2 padding pairs, 5 slots,
        // and the 9 taps: 59 pairs of 8 bytes, on the M4 only.
        assert_eq!(ring("dwconv2d(k3) relu flatten dense(4)", &[8, 8, 8], "qemu-mps2-an386"), 472);
        assert_eq!(ring("dwconv2d(k3) relu flatten dense(4)", &[8, 8, 8], "qemu-mps2-an385"), 0);
        // FC 40→32 unpacks its 40 inputs (80 B); 40→10 has too few rows.
        assert_eq!(ring("dense(32)", &[40], "qemu-mps2-an386"), 80);
        assert_eq!(ring("dense(10)", &[40], "qemu-mps2-an386"), 0);
    }

    #[test]
    fn the_estimate_counts_the_gathered_windows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let spec = "conv2d(16,k3) relu conv2d(16,k3) relu gap dense(5)";
        let s = crate::student::Student::from_spec_any_output(spec, &[3, 7, 9], &mut rng).unwrap();
        let calib = vec![0.5f32; 4 * s.input_len()];
        let q = crate::quant::quantize_student(&s, &calib, 4, crate::quant::Calibration::Minmax).unwrap();
        let bytes = crate::export::tkd::encode(&q).unwrap();
        let model = Model::from_bytes(&bytes).unwrap();
        let m3 = fit_estimate(boards::board("qemu-mps2-an385").unwrap(), &model);
        let m4 = fit_estimate(boards::board("qemu-mps2-an386").unwrap(), &model);
        // The largest window: 3×3 over 16 channels, a ring of 2 × 144 words
        // on the M4, two windows of 144 halfwords on the M3, none on the M0.
        let ring = |b: &str| packed_ring_bytes(boards::board(b).unwrap(), &model);
        assert_eq!((ring("qemu-mps2-an386"), ring("qemu-mps2-an385"), ring("qemu-microbit")), (1152, 576, 0));
        assert_eq!(m4.ram - m3.ram, 1152 - 576);
        assert_eq!(
            m4.flash,
            m3.flash + boards::board("qemu-mps2-an386").unwrap().engine_flash_bytes
                - boards::board("qemu-mps2-an385").unwrap().engine_flash_bytes
        );
    }
}
