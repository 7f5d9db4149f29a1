//! The serial protocol between the host (`tinykd verify`, `tinykd emulate`)
//! and a board running a tinykd student, the same on QEMU's emulated UARTs
//! and on silicon.
//!
//! Everything travels in frames ([`frame`]): a sync word, a kind, a length,
//! the payload and a CRC-32, so a corrupt, truncated or oversized frame is
//! recognised and answered with an error frame, never a hang or a reset.
//! The messages ([`message`]) are a hello/info exchange that tells the host
//! which model is on the chip, and an inference request whose answer carries
//! the int8 logits, the predicted class and the cycles the inference took.
//! [`device::serve`] is the whole firmware side: a board crate gives it a
//! UART ([`device::Link`], with adapters for `embedded-io` and
//! `embedded-hal-nb` serial ports) and a cycle counter, and nothing else.
//!
//! `no_std`, no alloc, no panics on any input: the host side of the tests
//! feeds it garbage on purpose.
#![cfg_attr(not(test), no_std)]

pub mod device;
pub mod frame;
pub mod message;

pub use frame::{Decoder, FrameError, Kind};
pub use message::{ErrorCode, Info, Outcome};

/// Protocol version carried in the info message; the host refuses others.
pub const VERSION: u8 = 1;
