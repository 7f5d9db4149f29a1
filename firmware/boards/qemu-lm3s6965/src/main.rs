//! QEMU lm3s6965evb (Stellaris LM3S6965, Cortex-M3, 256 KiB flash, 64 KiB
//! RAM — a real constraint; QEMU runs its core clock at 12.5 MHz): the
//! student served over UART0 (PL011-compatible, QEMU's serial0) with
//! tinykd's board protocol.
#![no_std]
#![no_main]

use tinykd_board::{Board, EioLink, uart::Mmio};

tinykd_board::cortex_m_board! {
    board: Board {
        name: "qemu-lm3s6965",
        core_hz: 12_500_000,
        // 0.2 s of silence ends a partial frame.
        frame_timeout_ticks: 2_500_000,
    },
    // SAFETY: UART0 of the LM3S6965; nothing else uses it.
    setup: |_cp| EioLink(unsafe { Mmio::pl011(0x4000_C000) })
}
