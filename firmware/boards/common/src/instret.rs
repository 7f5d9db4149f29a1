//! RISC-V: the retired-instruction counter (`minstret`), exact under QEMU's
//! `-icount` and on silicon alike.

use core::sync::atomic::{AtomicU32, Ordering};

/// `minstret` as a [`crate::Clock`].
#[derive(Debug, Default)]
pub struct InstretClock;

impl crate::Clock for InstretClock {
    fn now(&mut self) -> u64 {
        riscv::register::minstret::read64()
    }

    fn counter(&self) -> crate::Counter {
        crate::Counter::Instret
    }
}

/// Wraps of `minstret`'s low word the clock self-test reads across: 2^32
/// instructions each, seconds under QEMU. (Writing `minstret` cannot bring
/// a wrap closer there: QEMU 7.2 keeps `minstreth` on the real instruction
/// count, so the halves would no longer carry into each other.)
pub const TEST_WRAPS: u64 = 4;

/// Machine timer interrupts during the self-test: one every this many
/// `mtime` ticks (10 MHz on QEMU's `virt`).
pub const TEST_TIMER_TICKS: u64 = 37;

/// QEMU `virt`'s CLINT: `mtimecmp` of hart 0 and `mtime`.
const MTIMECMP: usize = 0x0200_4000;
const MTIME: usize = 0x0200_BFF8;

fn mtime() -> u64 {
    // SAFETY: the CLINT's `mtime`, a read-only timer register on `virt`.
    let word = |a: usize| unsafe { core::ptr::read_volatile(a as *const u32) };
    loop {
        let (high, low) = (word(MTIME + 4), word(MTIME));
        if word(MTIME + 4) == high {
            return ((high as u64) << 32) | low as u64;
        }
    }
}

/// Sets the next machine timer interrupt [`TEST_TIMER_TICKS`] from now;
/// the self-test image's timer handler calls it.
#[doc(hidden)]
pub fn next_timer_interrupt() {
    set_timer(mtime() + TEST_TIMER_TICKS);
    TIMER_INTERRUPTS.store(TIMER_INTERRUPTS.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

fn set_timer(at: u64) {
    // SAFETY: hart 0's `mtimecmp` on `virt`; the high word first set to
    // the maximum so that no half-written value fires early.
    unsafe {
        core::ptr::write_volatile((MTIMECMP + 4) as *mut u32, u32::MAX);
        core::ptr::write_volatile(MTIMECMP as *mut u32, at as u32);
        core::ptr::write_volatile((MTIMECMP + 4) as *mut u32, (at >> 32) as u32);
    }
}

static TIMER_INTERRUPTS: AtomicU32 = AtomicU32::new(0);

/// Instructions either side of a carry that the self-test reads densely.
const NEAR: u32 = 1 << 22;

/// The clock self-test (see [`crate::clock_test`]): reads `clock` across
/// [`TEST_WRAPS`] carries of `minstret` into `minstreth`, with machine
/// timer interrupts taken amid the readings, and reports on `link`.
pub fn self_test<L: crate::Link>(link: &mut L, clock: &mut InstretClock) -> ! {
    use crate::Clock;
    use crate::clock_test::{Watch, next_random};
    // A reading and its check take tens of instructions, an interrupt a
    // few hundred: a step over 4,096 is a wrong reading.
    let mut watch = Watch::new(clock.now(), 4096);
    let start = watch.last() >> 32;
    set_timer(u64::MAX);
    // SAFETY: the timer interrupt only fires once a deadline is set.
    unsafe { riscv::register::mie::set_mtimer() };
    let mut rng = 0x9E37_79B9u32;
    let mut near = 0u64;
    let mut carries = 0u64;
    let mut dense = false;
    while (watch.last() >> 32) - start < TEST_WRAPS {
        let low = watch.last() as u32;
        if low < u32::MAX - NEAR && low > NEAR {
            if dense {
                // A pending timer interrupt, even masked, makes QEMU leave
                // every translation block: none pending while far.
                riscv::interrupt::disable();
                set_timer(u64::MAX);
                dense = false;
            }
            // Far from a carry: run half the distance to it fast (reading `minstret`
            // ends QEMU's translation block, running a loop does not),
            // checking now and then.
            for _ in 0..NEAR / 512 {
                // SAFETY: no-ops.
                unsafe { core::arch::asm!(".rept 256", "nop", ".endr", options(nomem, nostack, preserves_flags)) };
            }
            watch.see_after_gap(clock.now());
            continue;
        }
        if !dense {
            next_timer_interrupt();
            // SAFETY: the timer handler only sets the next deadline and counts.
            unsafe { riscv::interrupt::enable() };
            dense = true;
        }
        let r = next_random(&mut rng);
        for _ in 0..r & 31 {
            let before = watch.last() >> 32;
            watch.see(clock.now());
            carries += (watch.last() >> 32 != before) as u64;
            near += 1;
        }
        for _ in 0..(r >> 8) & 15 {
            core::hint::spin_loop();
        }
    }
    riscv::interrupt::disable();
    let interrupts = TIMER_INTERRUPTS.load(Ordering::Relaxed) as u64;
    watch.report(
        link,
        (watch.last() >> 32) - start,
        0,
        &[(b" near_carry_reads=", near), (b" carries_between_reads=", carries), (b" timer_interrupts=", interrupts)],
    )
}

/// Defines `main` for a RISC-V board: paints the stack, sets up the UART
/// (`$link`, a [`crate::Link`]) and serves the embedded model. Built with
/// `TINYKD_CLOCK_TEST=1`, `main` runs the clock self-test ([`self_test`])
/// instead.
#[macro_export]
macro_rules! riscv_board {
    (board: $board:expr, setup: $link:expr) => {
        $crate::embedded_model!();

        #[riscv_rt::entry]
        fn main() -> ! {
            let bottom = $crate::stack::paint();
            let mut link = $link;
            let mut clock = $crate::instret::InstretClock;
            #[cfg(not(tinykd_clock_test))]
            {
                $crate::serve_embedded!(link, clock, $board, bottom)
            }
            #[cfg(tinykd_clock_test)]
            {
                let _ = (bottom, $board);
                $crate::instret::self_test(&mut link, &mut clock)
            }
        }

        #[cfg(tinykd_clock_test)]
        #[riscv_rt::core_interrupt(riscv::interrupt::Interrupt::MachineTimer)]
        fn machine_timer() {
            $crate::instret::next_timer_interrupt();
        }
    };
}
