//! nRF52840-DK (Cortex-M4F at 64 MHz), written on `nrf52840-hal`: the
//! student served over UARTE0 on P0.06 (TX) / P0.08 (RX), which the DK
//! routes to its J-Link's USB serial port, with tinykd's board protocol.
//! Inferences are timed with the DWT cycle counter.
#![no_std]
#![no_main]

use nrf52840_hal::gpio::{Level, p0};
use nrf52840_hal::pac;
use nrf52840_hal::uarte::{Baudrate, Parity, Pins, Uarte, UarteRx, UarteTx};
use tinykd_board::{Board, EioSplit};

/// DMA buffers of the split UARTE (EasyDMA reads and writes RAM only).
static mut TX_BUF: [u8; 1] = [0; 1];
static mut RX_BUF: [u8; 1] = [0; 1];

fn uarte() -> EioSplit<UarteRx<pac::UARTE0>, UarteTx<pac::UARTE0>> {
    let Some(p) = pac::Peripherals::take() else { loop {} };
    let _clocks = nrf52840_hal::clocks::Clocks::new(p.CLOCK).enable_ext_hfosc();
    let port0 = p0::Parts::new(p.P0);
    let pins = Pins {
        txd: port0.p0_06.into_push_pull_output(Level::High).degrade(),
        rxd: port0.p0_08.into_floating_input().degrade(),
        cts: None,
        rts: None,
    };
    let uarte = Uarte::new(p.UARTE0, pins, Parity::EXCLUDED, Baudrate::BAUD115200);
    // SAFETY: the buffers are used by this UARTE only, and `main` never returns.
    let (tx_buf, rx_buf) = unsafe { (&mut *core::ptr::addr_of_mut!(TX_BUF), &mut *core::ptr::addr_of_mut!(RX_BUF)) };
    let Ok((tx, rx)) = uarte.split(tx_buf, rx_buf) else { loop {} };
    EioSplit { rx, tx }
}

tinykd_board::cortex_m_board! {
    board: Board {
        name: "nrf52840-dk",
        core_hz: 64_000_000,
        // 0.2 s of silence ends a partial frame.
        frame_timeout_ticks: 12_800_000,
    },
    setup: |_cp| uarte()
}
