//! Message payloads, little-endian.
//!
//! | kind | payload |
//! |---|---|
//! | Hello (host) | empty |
//! | Infer (host) | `input_len` int8 values, the model's channels-last input |
//! | Info (device) | version u8, counter u8, model CRC u32, model bytes u32, input len u32, classes u16, arena u32, ops u32, receive buffer u16, peak stack u32, core clock Hz u32, input rank u8, input dims 4 × u16 (channels first, unused 0), board name (the rest, UTF-8) |
//! | Outcome (device) | class u16, counter ticks u64, `classes` int8 logits |
//! | Error (device) | code u8, detail u32 |

/// What the device's counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Counter {
    /// Core clock cycles from SysTick (Cortex-M; in QEMU under `-icount` it
    /// ticks once per fixed number of instructions, which the host knows).
    SysTick = 0,
    /// Core clock cycles from the DWT cycle counter (Cortex-M3/M4/M7 silicon).
    Dwt = 1,
    /// Retired instructions (RISC-V `minstret`).
    Instret = 2,
}

impl Counter {
    pub fn from_u8(v: u8) -> Option<Counter> {
        Some(match v {
            0 => Counter::SysTick,
            1 => Counter::Dwt,
            2 => Counter::Instret,
            _ => return None,
        })
    }
}

/// Which model a board runs, and how it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info<'a> {
    pub version: u8,
    pub counter: Counter,
    /// The `.tkd` blob's own CRC-32 (header field), naming the model.
    pub model_crc: u32,
    pub model_bytes: u32,
    pub input_len: u32,
    pub classes: u16,
    pub arena_bytes: u32,
    /// Operators the firmware was built with (`Model::ops` bit set).
    pub ops: u32,
    /// Largest frame payload the device accepts.
    pub receive_buffer: u16,
    /// Deepest stack use measured since reset (0: not measured).
    pub peak_stack: u32,
    /// The core clock the firmware configured, in Hz (informative).
    pub core_hz: u32,
    /// The model's input shape (as the `.tkd` header stores it), `rank` dims used.
    pub input_rank: u8,
    pub input_dims: [u16; 4],
    pub board: &'a str,
}

const INFO_FIXED: usize = 43;

impl<'a> Info<'a> {
    /// Writes the payload into `out`; returns its length (`None`: too small).
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let name = self.board.as_bytes();
        let out = out.get_mut(..INFO_FIXED + name.len())?;
        out[0] = self.version;
        out[1] = self.counter as u8;
        out[2..6].copy_from_slice(&self.model_crc.to_le_bytes());
        out[6..10].copy_from_slice(&self.model_bytes.to_le_bytes());
        out[10..14].copy_from_slice(&self.input_len.to_le_bytes());
        out[14..16].copy_from_slice(&self.classes.to_le_bytes());
        out[16..20].copy_from_slice(&self.arena_bytes.to_le_bytes());
        out[20..24].copy_from_slice(&self.ops.to_le_bytes());
        out[24..26].copy_from_slice(&self.receive_buffer.to_le_bytes());
        out[26..30].copy_from_slice(&self.peak_stack.to_le_bytes());
        out[30..34].copy_from_slice(&self.core_hz.to_le_bytes());
        out[34] = self.input_rank;
        for (k, d) in self.input_dims.iter().enumerate() {
            out[35 + 2 * k..37 + 2 * k].copy_from_slice(&d.to_le_bytes());
        }
        out[INFO_FIXED..].copy_from_slice(name);
        Some(out.len())
    }

    pub fn decode(p: &'a [u8]) -> Option<Info<'a>> {
        if p.len() < INFO_FIXED {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([p[o], p[o + 1]]);
        Some(Info {
            version: p[0],
            counter: Counter::from_u8(p[1])?,
            model_crc: u32_at(2),
            model_bytes: u32_at(6),
            input_len: u32_at(10),
            classes: u16_at(14),
            arena_bytes: u32_at(16),
            ops: u32_at(20),
            receive_buffer: u16_at(24),
            peak_stack: u32_at(26),
            core_hz: u32_at(30),
            input_rank: p[34],
            input_dims: [u16_at(35), u16_at(37), u16_at(39), u16_at(41)],
            board: core::str::from_utf8(&p[INFO_FIXED..]).ok()?,
        })
    }
}

/// One inference's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    pub class: u16,
    /// Counter ticks the inference took (see [`Counter`]).
    pub ticks: u64,
    pub logits: &'a [i8],
}

/// Bytes of an outcome before its logits.
pub const OUTCOME_FIXED: usize = 10;

impl<'a> Outcome<'a> {
    /// The fixed part (class, ticks); the logits follow it on the wire.
    pub fn head(class: u16, ticks: u64) -> [u8; OUTCOME_FIXED] {
        let mut h = [0u8; OUTCOME_FIXED];
        h[..2].copy_from_slice(&class.to_le_bytes());
        h[2..].copy_from_slice(&ticks.to_le_bytes());
        h
    }

    pub fn decode(p: &'a [u8]) -> Option<Outcome<'a>> {
        let (head, logits) = p.split_at_checked(OUTCOME_FIXED)?;
        let mut t = [0u8; 8];
        t.copy_from_slice(&head[2..]);
        Some(Outcome {
            class: u16::from_le_bytes([head[0], head[1]]),
            ticks: u64::from_le_bytes(t),
            logits: as_i8(logits),
        })
    }
}

/// Reinterprets bytes as int8 values.
pub fn as_i8(b: &[u8]) -> &[i8] {
    // No `unsafe` here: the protocol crate stays safe code; an i8 view of a
    // byte slice is `bytemuck`'s job in the runtime, whose cast this reuses.
    tinykd_runtime::as_i8(b)
}

/// Why the device refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame's CRC did not match (bytes lost or changed on the line).
    Checksum,
    /// The frame declared more payload than the device's buffer (`detail`: the buffer).
    Oversized,
    /// The frame stopped in the middle and the line went quiet.
    Truncated,
    /// An inference request whose length is not the model's input length (`detail`: expected).
    InputLength,
    /// A frame kind the device does not serve (`detail`: the kind).
    UnknownKind,
    /// The runtime refused to run (`detail`: its error's code).
    Model,
}

impl ErrorCode {
    pub fn to_u8(self) -> u8 {
        match self {
            ErrorCode::Checksum => 1,
            ErrorCode::Oversized => 2,
            ErrorCode::Truncated => 3,
            ErrorCode::InputLength => 4,
            ErrorCode::UnknownKind => 5,
            ErrorCode::Model => 6,
        }
    }

    pub fn from_u8(v: u8) -> Option<ErrorCode> {
        Some(match v {
            1 => ErrorCode::Checksum,
            2 => ErrorCode::Oversized,
            3 => ErrorCode::Truncated,
            4 => ErrorCode::InputLength,
            5 => ErrorCode::UnknownKind,
            6 => ErrorCode::Model,
            _ => return None,
        })
    }

    pub fn payload(self, detail: u32) -> [u8; 5] {
        let mut p = [0u8; 5];
        p[0] = self.to_u8();
        p[1..].copy_from_slice(&detail.to_le_bytes());
        p
    }

    pub fn decode(p: &[u8]) -> Option<(ErrorCode, u32)> {
        if p.len() != 5 {
            return None;
        }
        Some((ErrorCode::from_u8(p[0])?, u32::from_le_bytes([p[1], p[2], p[3], p[4]])))
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ErrorCode::Checksum => "the device received a frame with a bad CRC",
            ErrorCode::Oversized => "the device refused a frame larger than its receive buffer",
            ErrorCode::Truncated => "the device received a truncated frame (the line went quiet mid-frame)",
            ErrorCode::InputLength => "the input length does not match the model on the device",
            ErrorCode::UnknownKind => "the device does not serve this frame kind",
            ErrorCode::Model => "the runtime on the device refused to run the model",
        })
    }
}

impl core::error::Error for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips() {
        let info = Info {
            version: 1,
            counter: Counter::SysTick,
            model_crc: 0xDEAD_BEEF,
            model_bytes: 3404,
            input_len: 40,
            classes: 10,
            arena_bytes: 512,
            ops: 0b1011,
            receive_buffer: 64,
            peak_stack: 1500,
            core_hz: 25_000_000,
            input_rank: 2,
            input_dims: [1, 40, 0, 0],
            board: "qemu-mps2-an385",
        };
        let mut buf = [0u8; 64];
        let n = info.encode(&mut buf).unwrap();
        assert_eq!(n, INFO_FIXED + 15);
        assert_eq!(Info::decode(&buf[..n]), Some(info));
        assert_eq!(info.encode(&mut [0u8; 40]), None);
        assert_eq!(Info::decode(&buf[..10]), None);
    }

    #[test]
    fn outcome_and_error_round_trip() {
        let mut p = Outcome::head(7, 123_456_789_012).to_vec();
        p.extend_from_slice(&[0x80, 0x7F, 0x00]);
        let o = Outcome::decode(&p).unwrap();
        assert_eq!((o.class, o.ticks, o.logits), (7, 123_456_789_012, &[-128i8, 127, 0][..]));
        assert_eq!(ErrorCode::decode(&ErrorCode::InputLength.payload(40)), Some((ErrorCode::InputLength, 40)));
        assert_eq!(ErrorCode::decode(&[9, 0, 0, 0, 0]), None);
    }
}
