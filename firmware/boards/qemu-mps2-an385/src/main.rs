//! QEMU mps2-an385 (Cortex-M3) test-set runner for a tinykd student.
//!
//! Reads `inputs.bin` through semihosting (QEMU's working directory), runs
//! the embedded model on every record, writes `outputs.bin`: the int8 logits
//! and the instructions each inference took (SysTick on the core clock under
//! `-icount shift=0`), then the peak stack use. The host compares the logits
//! with its own run of the same `.tkd`, bit for bit.
//!
//! `inputs.bin`:  `"TKDI" | n: u32 | input_len: u32 | n × input_len int8`
//! `outputs.bin`: `"TKDO" | n: u32 | classes: u32 | n × (classes int8 | ticks: u32) | "STAK" | peak stack bytes: u32`
#![no_std]
#![no_main]

use cortex_m::peripheral::{SYST, syst::SystClkSource};
use cortex_m_rt::entry;
use semihosting::fs::File;
use semihosting::io::{Read, Write};
use tinykd_runtime::Model;

include!(concat!(env!("OUT_DIR"), "/model_info.rs"));

/// The blob, 16-byte aligned like the exporter's `MODEL` static.
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

static MODEL: &Aligned<[u8; MODEL_LEN]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.tkd")));

const STACK_PAINT: u32 = 0xC0DE_C0DE;
/// How far below the current stack pointer the stack is painted.
const PAINT_BYTES: usize = 64 * 1024;

enum Failure {
    Model(tinykd_runtime::Error),
    Io(&'static str),
    Format(&'static str),
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::Model(e) => write!(f, "{e}"),
            Failure::Io(what) | Failure::Format(what) => f.write_str(what),
        }
    }
}

#[entry]
fn main() -> ! {
    let bottom = paint_stack();
    let code = match run(bottom) {
        Ok(()) => 0,
        Err(e) => {
            semihosting::eprintln!("board error: {}", e);
            1
        }
    };
    semihosting::process::exit(code)
}

#[inline(never)]
fn run(paint_bottom: usize) -> Result<(), Failure> {
    let model = Model::from_bytes(&MODEL.0).map_err(Failure::Model)?;
    let mut peripherals = cortex_m::Peripherals::take().ok_or(Failure::Io("peripherals taken"))?;
    let syst = &mut peripherals.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();
    // The counter reads 0 until its first tick; let it start.
    cortex_m::asm::delay(400);

    let mut inputs = File::open(c"inputs.bin").map_err(|_| Failure::Io("cannot open inputs.bin"))?;
    let mut outputs = File::create(c"outputs.bin").map_err(|_| Failure::Io("cannot create outputs.bin"))?;
    let mut head = [0u8; 12];
    inputs.read_exact(&mut head).map_err(|_| Failure::Io("inputs.bin: short header"))?;
    if &head[0..4] != b"TKDI" {
        return Err(Failure::Format("inputs.bin: bad magic"));
    }
    let n = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len != INPUT_LEN {
        return Err(Failure::Format("inputs.bin: input length differs from the model's"));
    }
    let mut out_head = [0u8; 12];
    out_head[0..4].copy_from_slice(b"TKDO");
    out_head[4..8].copy_from_slice(&n.to_le_bytes());
    out_head[8..12].copy_from_slice(&(CLASS_COUNT as u32).to_le_bytes());
    outputs.write_all(&out_head).map_err(|_| Failure::Io("outputs.bin: write failed"))?;

    let mut arena = [0u8; ARENA_BYTES];
    let mut input = [0u8; INPUT_LEN];
    let mut record = [0u8; CLASS_COUNT + 4];
    for _ in 0..n {
        inputs.read_exact(&mut input).map_err(|_| Failure::Io("inputs.bin: short record"))?;
        let x: &[i8] = bytemuck_i8(&input);
        let start = SYST::get_current();
        let logits = model.run_with_ops::<MODEL_OPS>(x, &mut arena).map_err(Failure::Model)?;
        let end = SYST::get_current();
        // SysTick counts down; one wrap (2^24 ticks) is far longer than an inference.
        let ticks = start.wrapping_sub(end) & 0x00FF_FFFF;
        for (r, l) in record.iter_mut().zip(logits) {
            *r = *l as u8;
        }
        record[CLASS_COUNT..].copy_from_slice(&ticks.to_le_bytes());
        outputs.write_all(&record).map_err(|_| Failure::Io("outputs.bin: write failed"))?;
    }
    let mut tail = [0u8; 8];
    tail[0..4].copy_from_slice(b"STAK");
    tail[4..8].copy_from_slice(&(peak_stack(paint_bottom) as u32).to_le_bytes());
    outputs.write_all(&tail).map_err(|_| Failure::Io("outputs.bin: write failed"))?;
    Ok(())
}

/// Reinterprets bytes as int8 without copying.
fn bytemuck_i8(b: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity.
    unsafe { core::slice::from_raw_parts(b.as_ptr().cast::<i8>(), b.len()) }
}

unsafe extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

/// Fills the unused stack below the current frame with a pattern; returns
/// the lowest painted address.
#[inline(never)]
fn paint_stack() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let limit = core::ptr::addr_of!(_stack_end) as usize;
    let bottom = sp.saturating_sub(PAINT_BYTES).max(limit);
    let top = sp - 256; // leave this function's own frame alone
    let mut p = bottom & !3;
    while p < top {
        // SAFETY: [bottom, sp − 256) is unused stack between the end of
        // .bss/.uninit and the live frames; nothing else owns it.
        unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT) };
        p += 4;
    }
    bottom & !3
}

/// Bytes of stack used at the deepest point since `paint_stack`.
fn peak_stack(bottom: usize) -> usize {
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: reads within the painted region, which is plain RAM.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT {
        p += 4;
    }
    top - p
}
