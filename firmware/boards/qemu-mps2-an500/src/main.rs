//! QEMU mps2-an500 (Cortex-M7, 25 MHz, thumbv7em with the DSP extension and a double-precision FPU): the student served over UART0 (the
//! CMSDK APB UART, QEMU's serial0) with tinykd's board protocol.
#![no_std]
#![no_main]

use tinykd_board::{Board, EioLink, uart::Mmio};

tinykd_board::cortex_m_board! {
    board: Board {
        name: "qemu-mps2-an500",
        core_hz: 25_000_000,
        // 0.2 s of silence ends a partial frame.
        frame_timeout_ticks: 5_000_000,
    },
    // SAFETY: UART0 of the mps2 FPGA image; nothing else uses it.
    setup: |_cp| EioLink(unsafe { Mmio::cmsdk(0x4000_4000) })
}
