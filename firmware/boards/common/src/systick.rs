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

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};

use crate::Counter;

/// SysTick wraps (`RELOAD + 1` ticks each), counted by the exception handler.
static WRAPS: AtomicU32 = AtomicU32::new(0);
/// With DWT: the high word of the cycle count and the last low word seen.
#[cfg(not(armv6m))]
static DWT_HIGH: AtomicU32 = AtomicU32::new(0);
#[cfg(not(armv6m))]
static DWT_LAST: AtomicU32 = AtomicU32::new(0);
static USE_DWT: AtomicBool = AtomicBool::new(false);
/// SysTick reload of the board images: a wrap every 2^24 ticks.
pub const RELOAD: u32 = 0x00FF_FFFF;
/// SysTick reload of the clock self-test image: a wrap every 1,024 ticks,
/// so that thousands of wraps pass in seconds.
pub const TEST_RELOAD: u32 = 1023;
/// Wraps the clock self-test reads across.
pub const TEST_WRAPS: u32 = 5000;

/// The board crate's `#[exception] fn SysTick()` calls this. SysTick keeps
/// its reset priority, the highest, so no handler that reads the clock
/// preempts this one halfway through.
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

/// The core-cycle counter as a [`crate::Clock`], SysTick wrapping every
/// `RELOAD + 1` ticks ([`RELOAD`] in board images).
#[derive(Debug)]
pub struct CycleClock<const RELOAD: u32>(());

impl<const RELOAD: u32> CycleClock<RELOAD> {
    /// Starts SysTick on the core clock with its wrap interrupt, and the DWT
    /// cycle counter where the core has a working one.
    pub fn start(
        mut syst: SYST,
        dcb: &mut cortex_m::peripheral::DCB,
        dwt: &mut cortex_m::peripheral::DWT,
    ) -> CycleClock<RELOAD> {
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
        CycleClock(())
    }
}

/// SysTick's current value, past the tick at 0: the wrap (its pending bit,
/// and the handler if interrupts are on) comes as the counter reaches 0,
/// the reload one tick later (QEMU models both), so a reading of 0 may
/// belong to either period. Waits one tick at most; SysTick runs from
/// [`CycleClock::start`] on.
#[inline(always)]
fn counting() -> u32 {
    loop {
        let c = SYST::get_current();
        if c != 0 {
            return c;
        }
    }
}

impl<const RELOAD: u32> crate::Clock for CycleClock<RELOAD> {
    /// Monotonic across SysTick wraps however the read falls against one:
    /// with interrupts masked the wrap count and the counter cannot change
    /// under each other, and a wrap the handler has not counted yet is seen
    /// as SysTick's pending bit.
    fn now(&mut self) -> u64 {
        cortex_m::interrupt::free(|_| {
            #[cfg(not(armv6m))]
            if USE_DWT.load(Ordering::Relaxed) {
                let high = DWT_HIGH.load(Ordering::Relaxed);
                let c = cortex_m::peripheral::DWT::cycle_count();
                // A CYCCNT wrap since the handler last looked is not counted
                // yet (the handler runs every 2^24 cycles, so at most one).
                let high = if c < DWT_LAST.load(Ordering::Relaxed) { high.wrapping_add(1) } else { high };
                return ((high as u64) << 32) | c as u64;
            }
            let mut wraps = WRAPS.load(Ordering::Relaxed);
            let mut current = counting();
            if SCB::is_pendst_pending() {
                // The counter wrapped and the handler has not run: the first
                // reading may be from either side of the wrap, a second one
                // is after it.
                wraps = wraps.wrapping_add(1);
                current = counting();
            }
            wraps as u64 * (RELOAD as u64 + 1) + (RELOAD - current) as u64
        })
    }

    fn counter(&self) -> Counter {
        if USE_DWT.load(Ordering::Relaxed) { Counter::Dwt } else { Counter::SysTick }
    }
}

/// The clock self-test (see [`crate::clock_test`]): reads `clock` across
/// [`TEST_WRAPS`] SysTick wraps, with interrupts on (the SysTick handler
/// runs between and amid the readings) and in windows of up to half a
/// period with interrupts masked (a wrap in the window stays pending), and
/// reports on `link`, with the wrong readings taken with interrupts on
/// counted apart.
pub fn self_test<L: crate::Link, const RELOAD: u32>(link: &mut L, clock: &mut CycleClock<RELOAD>) -> ! {
    use crate::Clock;
    use crate::clock_test::{Watch, next_random};
    let period = RELOAD as u64 + 1;
    let mut watch = Watch::new(clock.now(), period / 4);
    let start = WRAPS.load(Ordering::Relaxed);
    let mut rng = 0x9E37_79B9u32;
    let mut masked = 0u64;
    let mut bad_unmasked = 0u64;
    let mut wraps = 0;
    while wraps < TEST_WRAPS {
        let r = next_random(&mut rng);
        for _ in 0..r & 31 {
            bad_unmasked += watch.see(clock.now()) as u64;
            cortex_m::asm::delay((r >> 8) & 63);
        }
        let window = (r >> 16) as u64 % (period / 2);
        cortex_m::interrupt::free(|_| {
            let from = watch.last();
            // Bounded, so that a clock that stops cannot hang the test.
            for _ in 0..100_000 {
                let t = clock.now();
                watch.see(t);
                masked += 1;
                if t.wrapping_sub(from) >= window {
                    break;
                }
            }
        });
        wraps = WRAPS.load(Ordering::Relaxed).wrapping_sub(start);
    }
    watch.report(link, wraps as u64, masked, &[(b" bad_with_interrupts_on=", bad_unmasked)])
}

/// Defines `main` for a Cortex-M board: paints the stack, sets up the
/// board's UART (`$link`: an expression giving a [`crate::Link`], which may
/// use `$cp`, the core peripherals other than SysTick, DCB and DWT), starts the cycle
/// counter and serves the embedded model. Also defines the SysTick handler.
/// Built with `TINYKD_CLOCK_TEST=1`, `main` runs the clock self-test
/// ([`self_test`]) instead of serving.
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
            #[cfg(not(tinykd_clock_test))]
            {
                use $crate::systick::{CycleClock, RELOAD};
                let mut clock = CycleClock::<RELOAD>::start(syst, &mut dcb, &mut dwt);
                $crate::serve_embedded!(link, clock, $board, bottom)
            }
            #[cfg(tinykd_clock_test)]
            {
                use $crate::systick::{CycleClock, TEST_RELOAD};
                let _ = (bottom, $board);
                let mut clock = CycleClock::<TEST_RELOAD>::start(syst, &mut dcb, &mut dwt);
                $crate::systick::self_test(&mut link, &mut clock)
            }
        }

        #[cortex_m_rt::exception]
        fn SysTick() {
            $crate::systick::on_systick();
        }
    };
}
