//! The smallest firmware that runs the embedded student: one inference on
//! an input the compiler cannot see through, keep the result, sleep. No
//! UART, no formatting, no protocol — so the image's flash minus the
//! model's bytes is what the engine itself costs (`tinykd bench --firmware`
//! reports both). By default the model is compiled into the image
//! (`COMPILED`); `TINYKD_ENGINE=interpreted` embeds the `.tkd` and parses
//! it at boot, for comparison.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;

tinykd_board::embedded_model!();

#[entry]
fn main() -> ! {
    let input = black_box([0i8; INPUT_LEN]);
    let mut arena = [0u8; ARENA_BYTES];
    #[cfg(not(tinykd_interpreted))]
    if let Ok(logits) = COMPILED.run(&input, &mut arena) {
        black_box(tinykd_runtime::argmax(logits));
    }
    // Validated by the build script; header and CRC checked again.
    #[cfg(tinykd_interpreted)]
    if let Ok(model) = tinykd_runtime::Model::from_validated(black_box(&MODEL.0)) {
        if let Ok(logits) = model.run_with_ops::<MODEL_OPS>(&input, &mut arena) {
            black_box(tinykd_runtime::argmax(logits));
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}
