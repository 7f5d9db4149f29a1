//! Raspberry Pi Pico (RP2040, Cortex-M0+ at 125 MHz), written on
//! `rp2040-hal`: the student served over UART0 on GP0 (TX) / GP1 (RX) with
//! tinykd's board protocol (connect a 3.3 V USB-UART adapter). Inferences
//! are timed with SysTick on the core clock (the M0+ has no DWT counter).
#![no_std]
#![no_main]

use rp2040_hal::Clock;
use rp2040_hal::fugit::RateExtU32;
use rp2040_hal::gpio::{FunctionUart, Pins};
use rp2040_hal::pac;
use rp2040_hal::uart::{DataBits, StopBits, UartConfig, UartPeripheral};
use tinykd_board::{Board, EioSplit, Link};

/// The second-stage bootloader for the Pico's W25Q080 flash.
#[unsafe(link_section = ".boot2")]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

const XOSC_HZ: u32 = 12_000_000;

fn uart0() -> impl Link {
    let Some(mut p) = pac::Peripherals::take() else { loop {} };
    let mut watchdog = rp2040_hal::Watchdog::new(p.WATCHDOG);
    let Ok(clocks) = rp2040_hal::clocks::init_clocks_and_plls(
        XOSC_HZ,
        p.XOSC,
        p.CLOCKS,
        p.PLL_SYS,
        p.PLL_USB,
        &mut p.RESETS,
        &mut watchdog,
    ) else {
        loop {}
    };
    let sio = rp2040_hal::Sio::new(p.SIO);
    let pins = Pins::new(p.IO_BANK0, p.PADS_BANK0, sio.gpio_bank0, &mut p.RESETS);
    let uart_pins = (pins.gpio0.into_function::<FunctionUart>(), pins.gpio1.into_function::<FunctionUart>());
    let config = UartConfig::new(115_200.Hz(), DataBits::Eight, None, StopBits::One);
    let Ok(uart) = UartPeripheral::new(p.UART0, uart_pins, &mut p.RESETS).enable(config, clocks.peripheral_clock.freq())
    else {
        loop {}
    };
    let (rx, tx) = uart.split();
    EioSplit { rx, tx }
}

tinykd_board::cortex_m_board! {
    board: Board {
        name: "rp-pico",
        core_hz: 125_000_000,
        // 0.2 s of silence ends a partial frame.
        frame_timeout_ticks: 25_000_000,
    },
    setup: |_cp| uart0()
}
