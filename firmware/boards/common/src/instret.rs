//! RISC-V: the retired-instruction counter (`minstret`), exact under QEMU's
//! `-icount` and on silicon alike.

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

/// Defines `main` for a RISC-V board: paints the stack, sets up the UART
/// (`$link`, a [`crate::Link`]) and serves the embedded model.
#[macro_export]
macro_rules! riscv_board {
    (board: $board:expr, setup: $link:expr) => {
        $crate::embedded_model!();

        #[riscv_rt::entry]
        fn main() -> ! {
            let bottom = $crate::stack::paint();
            let mut link = $link;
            let mut clock = $crate::instret::InstretClock;
            $crate::serve_embedded!(link, clock, $board, bottom)
        }
    };
}
