//! Register-level drivers for the UARTs of QEMU's emulated boards that no
//! HAL crate covers (mps2's CMSDK APB UART, the Stellaris/PL011 UART of the
//! lm3s6965, the NS16550A of RISC-V `virt`), with `embedded-io` traits so
//! they plug into [`crate::EioLink`] like any HAL's UART. Polled, no
//! interrupts; the emulated UARTs ignore baud rates.

use core::convert::Infallible;

/// A memory-mapped UART: status bits and a data register.
#[derive(Debug)]
pub struct Mmio {
    data: usize,
    status: usize,
    rx_ready: (u32, bool),
    tx_full: (u32, bool),
}

fn read(addr: usize) -> u32 {
    // SAFETY: `addr` is a UART register of the board this driver was made
    // for (see the constructors); reading it has no effect beyond the UART.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write(addr: usize, v: u32) {
    // SAFETY: as in `read`: a register of this board's UART.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

impl Mmio {
    /// ARM CMSDK APB UART (mps2-an385/an386/an500: UART0 at 0x4000_4000).
    ///
    /// # Safety
    /// `base` must be a CMSDK UART that nothing else drives.
    pub unsafe fn cmsdk(base: usize) -> Mmio {
        write(base + 0x10, 16); // BAUDDIV: the minimum the model accepts
        write(base + 0x08, 0b11); // CTRL: TX and RX enabled
        // STATE: bit 0 TX buffer full, bit 1 RX buffer full.
        Mmio { data: base, status: base + 0x04, rx_ready: (1 << 1, true), tx_full: (1 << 0, true) }
    }

    /// ARM PL011 / Stellaris UART (lm3s6965evb: UART0 at 0x4000_C000).
    ///
    /// # Safety
    /// `base` must be a PL011-compatible UART that nothing else drives.
    pub unsafe fn pl011(base: usize) -> Mmio {
        write(base + 0x30, 0); // CTL: disable while configuring
        write(base + 0x24, 8); // IBRD, FBRD: 115200 baud at 16 MHz (ignored by QEMU)
        write(base + 0x28, 44);
        write(base + 0x2C, 0x70); // LCRH: 8 bits, FIFOs on
        write(base + 0x30, (1 << 9) | (1 << 8) | 1); // CTL: RXE, TXE, UARTEN
        // FR: bit 4 RX FIFO empty, bit 5 TX FIFO full.
        Mmio { data: base, status: base + 0x18, rx_ready: (1 << 4, false), tx_full: (1 << 5, true) }
    }

    /// NS16550A (RISC-V `virt`: 0x1000_0000), byte-wide registers.
    ///
    /// # Safety
    /// `base` must be a 16550 UART that nothing else drives.
    pub unsafe fn ns16550(base: usize) -> Mmio {
        // SAFETY (of the writes below): byte registers of this 16550.
        unsafe {
            core::ptr::write_volatile((base + 3) as *mut u8, 0x03); // LCR: 8N1
            core::ptr::write_volatile((base + 2) as *mut u8, 0x01); // FCR: FIFOs on
        }
        // LSR (offset 5): bit 0 data ready, bit 5 transmit holding register empty.
        Mmio { data: base, status: base + 5, rx_ready: (1 << 0, true), tx_full: (1 << 5, false) }
    }

    fn is_16550(&self) -> bool {
        self.status == self.data + 5
    }

    fn status(&self) -> u32 {
        if self.is_16550() {
            // SAFETY: byte register of this 16550.
            unsafe { core::ptr::read_volatile(self.status as *const u8) as u32 }
        } else {
            read(self.status)
        }
    }

    fn bit(&self, (mask, when_set): (u32, bool)) -> bool {
        (self.status() & mask != 0) == when_set
    }

    fn put(&mut self, b: u8) {
        while self.bit(self.tx_full) {}
        if self.is_16550() {
            // SAFETY: byte register of this 16550.
            unsafe { core::ptr::write_volatile(self.data as *mut u8, b) }
        } else {
            write(self.data, b as u32);
        }
    }

    fn get(&mut self) -> u8 {
        if self.is_16550() {
            // SAFETY: byte register of this 16550.
            unsafe { core::ptr::read_volatile(self.data as *const u8) }
        } else {
            read(self.data) as u8
        }
    }
}

impl embedded_io::ErrorType for Mmio {
    type Error = Infallible;
}

impl embedded_io::ReadReady for Mmio {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.bit(self.rx_ready))
    }
}

impl embedded_io::Read for Mmio {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.bit(self.rx_ready) {}
        buf[0] = self.get();
        Ok(1)
    }
}

impl embedded_io::Write for Mmio {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        buf.iter().for_each(|b| self.put(*b));
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
