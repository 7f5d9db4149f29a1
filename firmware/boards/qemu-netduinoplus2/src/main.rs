//! STM32F405 (Cortex-M4F), written on `stm32f4xx-hal`: the student served
//! over USART1 (TX PA9, RX PA10; QEMU's `netduinoplus2` serial0) with
//! tinykd's board protocol. The core runs from the 16 MHz HSI: QEMU 7.2 has
//! no RCC model, so HSE/PLL set-up would hang there. The same image runs in
//! QEMU and on silicon (where SysTick then counts 16 MHz core cycles; in
//! QEMU SysTick runs at a fixed 168 MHz, which the host accounts for).
#![no_std]
#![no_main]

use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;
use stm32f4xx_hal::serial::{Rx, Serial, Tx};
use tinykd_board::{Board, NbLink};

fn usart1() -> NbLink<Rx<pac::USART1>, Tx<pac::USART1>> {
    let Some(dp) = pac::Peripherals::take() else { loop {} };
    let mut rcc = dp.RCC.freeze(Config::hsi());
    let gpioa = dp.GPIOA.split(&mut rcc);
    let serial = Serial::new(dp.USART1, (gpioa.pa9, gpioa.pa10), 115_200.bps(), &mut rcc);
    let Ok(serial) = serial else { loop {} };
    let (tx, rx) = serial.split();
    NbLink { rx, tx }
}

tinykd_board::cortex_m_board! {
    board: Board {
        name: "qemu-netduinoplus2",
        core_hz: 16_000_000,
        // 0.2 s of silence at QEMU's 168 MHz SysTick (1 s on silicon at 16 MHz:
        // a longer wait is harmless) ends a partial frame.
        frame_timeout_ticks: 33_600_000,
    },
    setup: |_cp| usart1()
}
