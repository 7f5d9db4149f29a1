//! BBC micro:bit v1 (nRF51822, Cortex-M0 at 16 MHz, 16 KiB RAM), written on
//! `nrf51-hal`: the student served over UART0 (TX P0.24, RX P0.25 — the
//! interface chip's USB serial on the real board, serial0 in QEMU's
//! `microbit` machine) with tinykd's board protocol. The same image runs in
//! QEMU and on the board.
#![no_std]
#![no_main]

use nrf51_hal::gpio::Level;
use nrf51_hal::pac;
use nrf51_hal::uart::{Baudrate, Parity, Pins, Uart};
use tinykd_board::{Board, EioLink};

/// QEMU 7.2 never raises EVENTS_TXDRDY for the dummy byte `Uart::new`
/// writes, so the HAL's first write would wait forever: wait for the event
/// a while (on silicon it comes after one byte time, ~90 µs at 115200) and
/// raise it by hand if it never does.
fn settle_txdrdy() {
    // SAFETY: reads and sets UART0's TXDRDY event, which the HAL polls;
    // setting it only says "the previous byte went out".
    let uart = unsafe { &*pac::UART0::ptr() };
    for _ in 0..20_000 {
        if uart.events_txdrdy.read().bits() != 0 {
            return;
        }
    }
    uart.events_txdrdy.write(|w| unsafe { w.bits(1) });
}

fn uart() -> EioLink<Uart<pac::UART0>> {
    let Some(p) = pac::Peripherals::take() else { loop {} };
    let _clocks = nrf51_hal::clocks::Clocks::new(p.CLOCK).enable_ext_hfosc();
    let port0 = nrf51_hal::gpio::p0::Parts::new(p.GPIO);
    let pins = Pins {
        txd: port0.p0_24.into_push_pull_output(Level::High).degrade(),
        rxd: port0.p0_25.into_floating_input().degrade(),
        cts: None,
        rts: None,
    };
    let uart = Uart::new(p.UART0, pins, Parity::EXCLUDED, Baudrate::BAUD115200);
    settle_txdrdy();
    EioLink(uart)
}

tinykd_board::cortex_m_board! {
    board: Board {
        name: "qemu-microbit",
        core_hz: 16_000_000,
        // 0.2 s of silence ends a partial frame.
        frame_timeout_ticks: 3_200_000,
    },
    setup: |_cp| uart()
}
