//! What every tinykd board crate shares: the embedded student, the serve
//! loop of the board protocol (`tinykd-protocol`) over the board's UART,
//! a 64-bit cycle or instruction counter, and the peak stack measurement.
//!
//! A board crate is its HAL's (or its emulated UART's) serial port, its
//! counter and its `memory.x`: its `main` calls [`run`] through the
//! `cortex_m_board!` or `riscv_board!` macro and does nothing else.
#![no_std]

pub mod clock_test;
#[cfg(feature = "riscv")]
pub mod instret;
pub mod stack;
#[cfg(feature = "cortex-m")]
pub mod systick;
pub mod uart;

pub use tinykd_protocol as protocol;
pub use tinykd_protocol::device::{Board, Clock, EioLink, EioSplit, Engine, Interpreted, Link, NbLink};
pub use tinykd_protocol::message::Counter;
pub use tinykd_runtime as runtime;

/// A panic in a board image stops the core; the host sees the line go
/// quiet and says so. (The inference path has no panics: the runtime
/// returns errors.)
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Serves the embedded model forever: `engine` is the model compiled into
/// the firmware (`COMPILED`, from [`embedded_model!`]). `ARENA` is the
/// model's arena, `RX` the receive buffer (its input length, at least 16
/// bytes), both on the stack so that the measured peak stack is the RAM
/// the model takes.
#[inline(never)]
pub fn run<L: Link, C: Clock, E: Engine, const ARENA: usize, const RX: usize>(
    engine: &E,
    link: &mut L,
    clock: &mut C,
    board: &Board<'_>,
    paint_bottom: usize,
) -> ! {
    let mut arena = [0u8; ARENA];
    let mut rx = [0u8; RX];
    let mut peak = || stack::peak(paint_bottom) as u32;
    tinykd_protocol::device::serve(engine, &mut arena, &mut rx, link, clock, board, &mut peak)
}

/// The embedded blob loaded at boot, for a board built with
/// `TINYKD_ENGINE=interpreted`. The build script validated it: only its
/// header and CRC are checked again, and a flash corrupted after
/// programming is reported on `link` forever.
pub fn load<'a, L: Link>(blob: &'a [u8], link: &mut L) -> tinykd_runtime::Model<'a> {
    match tinykd_runtime::Model::from_validated(blob) {
        Ok(model) => model,
        Err(_) => loop {
            link.write_all(b"tinykd: the model in flash is corrupt\r\n");
            for _ in 0..1_000_000 {
                core::hint::spin_loop();
            }
        },
    }
}

/// Serves the model [`embedded_model!`] defined: `COMPILED`, or with
/// `TINYKD_ENGINE=interpreted` the `.tkd` parsed at boot. For the board
/// macros (`cortex_m_board!`, `riscv_board!`).
#[doc(hidden)]
#[macro_export]
macro_rules! serve_embedded {
    ($link:ident, $clock:ident, $board:expr, $bottom:ident) => {{
        #[cfg(not(tinykd_interpreted))]
        let engine = &COMPILED;
        #[cfg(tinykd_interpreted)]
        let model = $crate::load(&MODEL.0, &mut $link);
        #[cfg(tinykd_interpreted)]
        let engine = &$crate::Interpreted::<MODEL_OPS>(&model);
        $crate::run::<_, _, _, ARENA_BYTES, RX_BYTES>(engine, &mut $link, &mut $clock, &$board, $bottom)
    }};
}

/// Defines the embedded model — `COMPILED`, its constant layer table
/// (`tinykd_runtime::Compiled`), and `MODEL`, the `.tkd` blob itself
/// (16-byte aligned; the linker drops whichever the firmware does not use)
/// — and its sizes (`ARENA_BYTES`, `INPUT_LEN`, `CLASS_COUNT`, `MODEL_OPS`,
/// `RX_BYTES`) from the files the board's build script
/// (`tinykd-board-build`) wrote.
#[macro_export]
macro_rules! embedded_model {
    () => {
        include!(concat!(env!("OUT_DIR"), "/model_info.rs"));
        use $crate::runtime as __tinykd;
        include!(concat!(env!("OUT_DIR"), "/model_compiled.rs"));
        #[allow(dead_code)]
        #[repr(C, align(16))]
        struct Aligned<T: ?Sized>(T);
        #[allow(dead_code)]
        static MODEL: &Aligned<[u8; MODEL_LEN]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.tkd")));
        /// Receive buffer: one input frame's payload (and room for small frames).
        #[allow(dead_code)]
        const RX_BYTES: usize = if INPUT_LEN > 16 { INPUT_LEN } else { 16 };
    };
}
