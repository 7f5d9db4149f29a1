//! QEMU RISC-V `virt` (rv32imac, machine mode, no firmware): the student
//! served over the NS16550A UART at 0x1000_0000 (QEMU's serial0) with
//! tinykd's board protocol; inferences are counted in retired instructions
//! (`minstret`), exact under `-icount`.
#![no_std]
#![no_main]

use tinykd_board::{Board, EioLink, uart::Mmio};

tinykd_board::riscv_board! {
    board: Board {
        name: "qemu-riscv32",
        core_hz: 1_000_000_000,
        // 0.2 s of silence (at ~1e9 instructions/s under -icount) ends a partial frame.
        frame_timeout_ticks: 200_000_000,
    },
    // SAFETY: the virt machine's UART0; nothing else uses it.
    setup: EioLink(unsafe { Mmio::ns16550(0x1000_0000) })
}
