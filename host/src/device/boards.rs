//! The boards tinykd builds firmware for: their crate, Rust target, memory,
//! and how they run (QEMU machine, or a probe-rs chip for silicon).

use anyhow::{Context, Result};

/// How a board runs.
#[derive(Debug, Clone, Copy)]
pub enum Runner {
    /// Emulated: QEMU with this machine, the board's UART on stdio.
    Qemu {
        binary: &'static str,
        machine: &'static [&'static str],
        /// Debian package providing `binary`.
        package: &'static str,
        /// Instructions per SysTick tick under `-icount shift=0` (1 ns per
        /// instruction against the core clock QEMU gives SysTick).
        instructions_per_tick: f64,
    },
    /// Silicon, flashed with probe-rs.
    Probe { chip: &'static str },
}

/// A board.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    pub name: &'static str,
    /// Directory under `firmware/boards/`.
    pub crate_dir: &'static str,
    pub target: &'static str,
    pub runner: Runner,
    /// Memory the board offers the firmware.
    pub flash_bytes: u64,
    pub ram_bytes: u64,
    /// Flash the firmware takes besides the model (engine, protocol, HAL),
    /// rounded up from the largest measured image; used to refuse a model
    /// before building.
    pub engine_flash_bytes: u64,
    /// Stack the firmware takes besides the arena and receive buffer
    /// (measured peak, with a margin).
    pub engine_stack_bytes: u64,
}

const MPS2: &[&str] = &["-machine", "mps2-an385", "-cpu", "cortex-m3"];

/// Boards tinykd knows.
pub const BOARDS: &[Board] = &[
    Board {
        name: "qemu-mps2-an385",
        crate_dir: "qemu-mps2-an385",
        target: "thumbv7m-none-eabi",
        runner: Runner::Qemu {
            binary: "qemu-system-arm",
            machine: MPS2,
            package: "qemu-system-arm",
            instructions_per_tick: 40.0,
        },
        flash_bytes: 4 << 20,
        ram_bytes: 4 << 20,
        engine_flash_bytes: 28 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "qemu-mps2-an386",
        crate_dir: "qemu-mps2-an386",
        target: "thumbv7em-none-eabihf",
        runner: Runner::Qemu {
            binary: "qemu-system-arm",
            machine: &["-machine", "mps2-an386", "-cpu", "cortex-m4"],
            package: "qemu-system-arm",
            instructions_per_tick: 40.0,
        },
        flash_bytes: 4 << 20,
        ram_bytes: 4 << 20,
        engine_flash_bytes: 28 << 10,
        engine_stack_bytes: 2 << 10,
    },
    // The MPS2 FPGA image for the Cortex-M7: the an386's memory map and
    // UART, the same 25 MHz system clock.
    Board {
        name: "qemu-mps2-an500",
        crate_dir: "qemu-mps2-an500",
        target: "thumbv7em-none-eabihf",
        runner: Runner::Qemu {
            binary: "qemu-system-arm",
            machine: &["-machine", "mps2-an500", "-cpu", "cortex-m7"],
            package: "qemu-system-arm",
            instructions_per_tick: 40.0,
        },
        flash_bytes: 4 << 20,
        ram_bytes: 4 << 20,
        engine_flash_bytes: 28 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "qemu-lm3s6965",
        crate_dir: "qemu-lm3s6965",
        target: "thumbv7m-none-eabi",
        runner: Runner::Qemu {
            binary: "qemu-system-arm",
            machine: &["-machine", "lm3s6965evb"],
            package: "qemu-system-arm",
            instructions_per_tick: 80.0,
        },
        flash_bytes: 256 << 10,
        ram_bytes: 64 << 10,
        engine_flash_bytes: 28 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "qemu-microbit",
        crate_dir: "qemu-microbit",
        target: "thumbv6m-none-eabi",
        runner: Runner::Qemu {
            binary: "qemu-system-arm",
            machine: &["-machine", "microbit"],
            package: "qemu-system-arm",
            // QEMU's nRF51 core clock: 16 MHz.
            instructions_per_tick: 62.5,
        },
        flash_bytes: 256 << 10,
        ram_bytes: 16 << 10,
        engine_flash_bytes: 28 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "qemu-netduinoplus2",
        crate_dir: "qemu-netduinoplus2",
        target: "thumbv7em-none-eabihf",
        runner: Runner::Qemu {
            binary: "qemu-system-arm",
            machine: &["-machine", "netduinoplus2"],
            package: "qemu-system-arm",
            // QEMU runs the STM32F405's SysTick at a fixed 168 MHz.
            instructions_per_tick: 1000.0 / 168.0,
        },
        flash_bytes: 1 << 20,
        ram_bytes: 128 << 10,
        engine_flash_bytes: 40 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "qemu-riscv32",
        crate_dir: "qemu-riscv32",
        target: "riscv32imac-unknown-none-elf",
        runner: Runner::Qemu {
            binary: "qemu-system-riscv32",
            machine: &["-machine", "virt", "-bios", "none", "-m", "128M"],
            package: "qemu-system-misc",
            // Counted with minstret, exact; SysTick is not used.
            instructions_per_tick: 1.0,
        },
        // Code and data share the 16 MiB RAM region the image is loaded into.
        flash_bytes: 16 << 20,
        ram_bytes: 16 << 20,
        engine_flash_bytes: 28 << 10,
        engine_stack_bytes: 2 << 10,
    },
    // Silicon. The micro:bit and STM32F405 images are the emulated boards'
    // own, byte for byte; the DK and the Pico are built for their chips only.
    Board {
        name: "microbit",
        crate_dir: "qemu-microbit",
        target: "thumbv6m-none-eabi",
        runner: Runner::Probe { chip: "nRF51822_xxAA" },
        flash_bytes: 256 << 10,
        ram_bytes: 16 << 10,
        engine_flash_bytes: 28 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "stm32f405",
        crate_dir: "qemu-netduinoplus2",
        target: "thumbv7em-none-eabihf",
        runner: Runner::Probe { chip: "STM32F405RGTx" },
        flash_bytes: 1 << 20,
        ram_bytes: 128 << 10,
        engine_flash_bytes: 40 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "nrf52840-dk",
        crate_dir: "nrf52840-dk",
        target: "thumbv7em-none-eabihf",
        runner: Runner::Probe { chip: "nRF52840_xxAA" },
        flash_bytes: 1 << 20,
        ram_bytes: 256 << 10,
        engine_flash_bytes: 40 << 10,
        engine_stack_bytes: 2 << 10,
    },
    Board {
        name: "rp-pico",
        crate_dir: "rp-pico",
        target: "thumbv6m-none-eabi",
        runner: Runner::Probe { chip: "RP2040" },
        flash_bytes: 2 << 20,
        ram_bytes: 256 << 10,
        engine_flash_bytes: 40 << 10,
        engine_stack_bytes: 2 << 10,
    },
];

impl Board {
    pub fn is_emulated(&self) -> bool {
        matches!(self.runner, Runner::Qemu { .. })
    }
}

/// The board a running image belongs to, from the name in its info frame
/// (the board crate's; an image shared by an emulated and a real board
/// names the emulated one). `on_silicon` prefers the real board.
pub fn board_of_image(name: &str, on_silicon: bool) -> Option<&'static Board> {
    let crate_dir = BOARDS.iter().find(|b| b.name == name).map_or(name, |b| b.crate_dir);
    let mut same = BOARDS.iter().filter(|b| b.crate_dir == crate_dir);
    if on_silicon { same.find(|b| !b.is_emulated()) } else { same.find(|b| b.is_emulated()) }
}

/// Looks a board up by name.
pub fn board(name: &str) -> Result<&'static Board> {
    BOARDS.iter().find(|b| b.name == name).with_context(|| {
        let names: Vec<&str> = BOARDS.iter().map(|b| b.name).collect();
        format!("unknown board '{name}' (boards: {})", names.join(", "))
    })
}
