//! The smallest firmware that runs the embedded student: parse the blob,
//! run one inference on an input the compiler cannot see through, keep the
//! result, sleep. No UART, no formatting, no protocol — so the image's
//! flash minus the model blob is what the engine itself costs
//! (`tinykd bench --firmware` reports it).
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use tinykd_runtime::Model;

tinykd_board::embedded_model!();

#[entry]
fn main() -> ! {
    let input = black_box([0i8; INPUT_LEN]);
    let mut arena = [0u8; ARENA_BYTES];
    // Validated by the build script; header and CRC checked again.
    if let Ok(model) = Model::from_validated(black_box(&MODEL.0)) {
        if let Ok(logits) = model.run_with_ops::<MODEL_OPS>(&input, &mut arena) {
            black_box(tinykd_runtime::argmax(logits));
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}
