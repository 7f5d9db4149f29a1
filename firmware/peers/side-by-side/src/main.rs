//! The same student through tinykd's runtime (`--features tinykd`) or
//! microflow (`--features microflow`) on QEMU mps2-an385, with one harness,
//! so the two differ only in the engine.
//!
//! Without `measure`: one inference on an input the compiler cannot see
//! through, then sleep — the smallest image, whose flash is the engine and
//! the model. With `measure`: every embedded input through [`infer`], the
//! SysTick count (instructions under QEMU's `-icount shift=0`: 40 per tick
//! on this board) and the peak stack of the inference loop (tinykd's arena
//! lives in [`infer`]'s frame, microflow's tensors in its own, so both
//! count), and the predicted classes, printed over semihosting.
//!
//! `--features platform` builds the harness with neither runtime: its flash
//! (vector table, start-up code, `main`, panic handler) is in both images,
//! so engine + model is an image's flash less this one.
#![no_std]
#![no_main]

#[cfg(any(
    all(feature = "tinykd", feature = "microflow"),
    all(feature = "platform", any(feature = "tinykd", feature = "microflow"))
))]
compile_error!("pick one: --features tinykd, microflow or platform");
#[cfg(not(any(feature = "tinykd", feature = "microflow", feature = "platform")))]
compile_error!("pick a runtime: --features tinykd or --features microflow (or platform, neither)");

#[cfg(not(feature = "measure"))]
use core::hint::black_box;

use cortex_m_rt::entry;

tinykd_board::embedded_model!();

/// One inference through tinykd: int8 input in, class out. Both runtimes
/// compile the model into the image, so nothing is prepared at boot.
#[cfg(feature = "tinykd")]
#[inline(never)]
fn infer(x: &[i8; INPUT_LEN]) -> usize {
    let mut arena = [0u8; ARENA_BYTES];
    match COMPILED.run(x, &mut arena) {
        Ok(logits) => tinykd_runtime::argmax(logits),
        Err(_) => usize::MAX,
    }
}

/// The harness alone: no engine, no model; an input byte stands in for the
/// class so the call is not optimised away.
#[cfg(feature = "platform")]
#[inline(never)]
fn infer(x: &[i8; INPUT_LEN]) -> usize {
    x[0] as u8 as usize
}

#[cfg(feature = "microflow")]
include!(concat!(env!("OUT_DIR"), "/microflow_glue.rs"));

#[cfg(feature = "microflow")]
fn argmax_f32(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(not(feature = "measure"))]
#[entry]
fn main() -> ! {
    black_box(infer(&black_box([0i8; INPUT_LEN])));
    loop {
        cortex_m::asm::wfi();
    }
}

#[cfg(feature = "measure")]
static INPUTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inputs.bin"));

#[cfg(feature = "measure")]
#[entry]
fn main() -> ! {
    use semihosting::{print, println};
    use tinykd_board::Clock;

    let Some(mut cp) = cortex_m::Peripherals::take() else { semihosting::process::exit(1) };
    use tinykd_board::systick::{CycleClock, RELOAD};
    let mut clock = CycleClock::<RELOAD>::start(cp.SYST, &mut cp.DCB, &mut cp.DWT);
    let n = INPUTS.len() / INPUT_LEN;
    let bottom = tinykd_board::stack::paint();
    // The harness's own frames are above this point: what `infer` adds
    // below it is the inference's stack.
    let depth = stack_top() - cortex_m::register::msp::read() as usize;
    let mut classes = [0u8; 4096];
    let start = clock.now();
    for (i, x) in INPUTS.chunks_exact(INPUT_LEN).enumerate().take(classes.len()) {
        let x: &[i8; INPUT_LEN] = match <&[u8; INPUT_LEN]>::try_from(x) {
            // SAFETY: i8 and u8 have the same size and alignment.
            Ok(x) => unsafe { &*(x as *const [u8; INPUT_LEN] as *const [i8; INPUT_LEN]) },
            Err(_) => break,
        };
        classes[i] = infer(x) as u8;
    }
    let ticks = clock.now() - start;
    let stack = tinykd_board::stack::peak(bottom).saturating_sub(depth);
    println!("samples {} ticks {} stack {}", n.min(classes.len()), ticks, stack);
    print!("classes");
    for c in &classes[..n.min(classes.len())] {
        print!(" {}", c);
    }
    println!();
    semihosting::process::exit(0)
}

#[cfg(feature = "measure")]
fn stack_top() -> usize {
    unsafe extern "C" {
        static _stack_start: u32;
    }
    core::ptr::addr_of!(_stack_start) as usize
}

#[cortex_m_rt::exception]
fn SysTick() {
    tinykd_board::systick::on_systick();
}
