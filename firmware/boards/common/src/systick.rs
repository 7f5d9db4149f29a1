//! Cortex-M: a 64-bit core-cycle counter.
//!
//! On ARMv7-M silicon (M3/M4/M7) it is the DWT cycle counter, extended to 64
//! bits by the SysTick interrupt. QEMU 7.2 does not model DWT (it reads 0)
//! and the M0 has none; there the counter is SysTick itself on the core
//! clock, extended by counting its wraps. Under QEMU's `-icount shift=0`
//! SysTick ticks once per fixed number of instructions, which the host
//! knows per board, so the same image measures in the emulator and on the
//! chip, and says which counter it used in its info frame.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;

use crate::Counter;

/// SysTick wraps (2^24 ticks each), counted by the exception handler.
static WRAPS: AtomicU32 = AtomicU32::new(0);
/// With DWT: the high word of the cycle count and the last low word seen.
#[cfg(not(armv6m))]
static DWT_HIGH: AtomicU32 = AtomicU32::new(0);
#[cfg(not(armv6m))]
static DWT_LAST: AtomicU32 = AtomicU32::new(0);
static USE_DWT: AtomicBool = AtomicBool::new(false);
const RELOAD: u32 = 0x00FF_FFFF;

/// The board crate's `#[exception] fn SysTick()` calls this.
pub fn on_systick() {
    // Only this handler writes these (no read-modify-write atomics on an M0).
    WRAPS.store(WRAPS.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    #[cfg(not(armv6m))]
    if USE_DWT.load(Ordering::Relaxed) {
        // SysTick fires every 2^24 cycles, far less than the 2^32 of a
        // CYCCNT wrap, so no wrap goes unseen.
        let c = cortex_m::peripheral::DWT::cycle_count();
        if c < DWT_LAST.load(Ordering::Relaxed) {
            DWT_HIGH.store(DWT_HIGH.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        DWT_LAST.store(c, Ordering::Relaxed);
    }
}

/// The core-cycle counter as a [`crate::Clock`].
#[derive(Debug)]
pub struct CycleClock(());

impl CycleClock {
    /// Starts SysTick on the core clock with its wrap interrupt, and the DWT
    /// cycle counter where the core has a working one.
    pub fn start(
        mut syst: SYST,
        dcb: &mut cortex_m::peripheral::DCB,
        dwt: &mut cortex_m::peripheral::DWT,
    ) -> CycleClock {
        #[cfg(not(armv6m))]
        {
            dcb.enable_trace();
            dwt.enable_cycle_counter();
            let a = cortex_m::peripheral::DWT::cycle_count();
            cortex_m::asm::delay(100);
            let b = cortex_m::peripheral::DWT::cycle_count();
            USE_DWT.store(a != b, Ordering::Relaxed);
            DWT_LAST.store(b, Ordering::Relaxed);
        }
        #[cfg(armv6m)]
        let _ = (dcb, dwt);
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        // QEMU reads the counter as 0 until its first tick: let it start.
        cortex_m::asm::delay(400);
        core::mem::forget(syst);
        CycleClock(())
    }
}

impl crate::Clock for CycleClock {
    fn now(&mut self) -> u64 {
        #[cfg(not(armv6m))]
        if USE_DWT.load(Ordering::Relaxed) {
            loop {
                let high = DWT_HIGH.load(Ordering::Relaxed);
                let last = DWT_LAST.load(Ordering::Relaxed);
                let c = cortex_m::peripheral::DWT::cycle_count();
                if DWT_HIGH.load(Ordering::Relaxed) == high {
                    // A wrap since the handler last looked is not counted yet.
                    let high = if c < last { high.wrapping_add(1) } else { high };
                    return ((high as u64) << 32) | c as u64;
                }
            }
        }
        loop {
            let before = WRAPS.load(Ordering::Relaxed);
            let current = SYST::get_current();
            if WRAPS.load(Ordering::Relaxed) == before {
                return ((before as u64) << 24) | (RELOAD - current) as u64;
            }
        }
    }

    fn counter(&self) -> Counter {
        if USE_DWT.load(Ordering::Relaxed) { Counter::Dwt } else { Counter::SysTick }
    }
}

/// Defines `main` for a Cortex-M board: paints the stack, sets up the
/// board's UART (`$link`: an expression giving a [`crate::Link`], which may
/// use `$cp`, the core peripherals other than SysTick, DCB and DWT), starts the cycle
/// counter and serves the embedded model. Also defines the SysTick handler.
#[macro_export]
macro_rules! cortex_m_board {
    (board: $board:expr, setup: |$cp:ident| $link:expr) => {
        $crate::embedded_model!();

        #[cortex_m_rt::entry]
        fn main() -> ! {
            let bottom = $crate::stack::paint();
            #[allow(unused_mut)]
            let Some(mut $cp) = cortex_m::Peripherals::take() else { loop {} };
            let (syst, mut dcb, mut dwt) = ($cp.SYST, $cp.DCB, $cp.DWT);
            let mut link = $link;
            let mut clock = $crate::systick::CycleClock::start(syst, &mut dcb, &mut dwt);
            $crate::serve_embedded!(link, clock, $board, bottom)
        }

        #[cortex_m_rt::exception]
        fn SysTick() {
            $crate::systick::on_systick();
        }
    };
}
