//! Cortex-M: a 64-bit core-cycle counter from SysTick.
//!
//! SysTick is on every Cortex-M (M0 included) and QEMU models it; DWT's
//! cycle counter is not on the M0 and reads 0 in QEMU 7.2. SysTick on the
//! core clock counts cycles on silicon; under QEMU's `-icount shift=0` it
//! ticks once per fixed number of instructions (the host knows the ratio
//! per board), so the same image measures on both.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;

/// SysTick wraps (2^24 ticks each), counted by the exception handler.
static WRAPS: AtomicU32 = AtomicU32::new(0);
const RELOAD: u32 = 0x00FF_FFFF;

/// Counts SysTick wraps; the board crate's `#[exception] fn SysTick()` calls it.
pub fn on_systick() {
    // Only this handler writes WRAPS (no read-modify-write atomics on an M0).
    WRAPS.store(WRAPS.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// The SysTick counter as a [`crate::Clock`].
#[derive(Debug)]
pub struct SysTickClock(());

impl SysTickClock {
    /// Starts SysTick on the core clock with its wrap interrupt.
    pub fn start(mut syst: SYST) -> SysTickClock {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        // QEMU reads the counter as 0 until its first tick: let it start.
        cortex_m::asm::delay(400);
        core::mem::forget(syst);
        SysTickClock(())
    }
}

impl crate::Clock for SysTickClock {
    fn now(&mut self) -> u64 {
        loop {
            let before = WRAPS.load(Ordering::Relaxed);
            let current = SYST::get_current();
            if WRAPS.load(Ordering::Relaxed) == before {
                return ((before as u64) << 24) | (RELOAD - current) as u64;
            }
        }
    }
}

/// Defines `main` for a Cortex-M board: paints the stack, sets up the
/// board's UART (`$link`: an expression giving a [`crate::Link`], which may
/// use `$cp`, the core peripherals other than SysTick), and serves the
/// embedded model. Also defines the SysTick handler.
#[macro_export]
macro_rules! cortex_m_board {
    (board: $board:expr, setup: |$cp:ident| $link:expr) => {
        $crate::embedded_model!();

        #[cortex_m_rt::entry]
        fn main() -> ! {
            let bottom = $crate::stack::paint();
            #[allow(unused_mut)]
            let Some(mut $cp) = cortex_m::Peripherals::take() else { loop {} };
            let syst = $cp.SYST;
            let mut link = $link;
            let mut clock = $crate::systick::SysTickClock::start(syst);
            $crate::run::<_, _, ARENA_BYTES, RX_BYTES, MODEL_OPS>(&MODEL.0, &mut link, &mut clock, &$board, bottom)
        }

        #[cortex_m_rt::exception]
        fn SysTick() {
            $crate::systick::on_systick();
        }
    };
}
