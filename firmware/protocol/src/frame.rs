//! Frames: `A5 5A | kind u8 | length u16 LE | payload | CRC-32 LE`.
//!
//! The CRC (ISO-HDLC, as zlib) covers kind, length and payload. The sync
//! word lets a receiver find the next frame after garbage; the decoder is a
//! byte-at-a-time state machine, so the device can run it on a UART that
//! delivers one byte per poll and the host on whatever its reads return.

use crc::{CRC_32_ISO_HDLC, Crc, NoTable};

/// First two bytes of every frame.
pub const SYNC: [u8; 2] = [0xA5, 0x5A];
/// Bytes before the payload: sync, kind, length.
pub const HEADER_LEN: usize = 5;
/// Bytes after the payload: the CRC.
pub const TRAILER_LEN: usize = 4;
/// Everything but the payload.
pub const OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;

const CRC: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISO_HDLC);

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Host → device: "who are you?" (empty payload).
    Hello = 0x01,
    /// Host → device: one int8 input, `input_len` bytes.
    Infer = 0x02,
    /// Device → host: the model on the chip ([`crate::Info`]).
    Info = 0x81,
    /// Device → host: an inference's outcome ([`crate::Outcome`]).
    Outcome = 0x82,
    /// Device → host: the last frame was refused ([`crate::ErrorCode`]).
    Error = 0xEE,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0x01 => Kind::Hello,
            0x02 => Kind::Infer,
            0x81 => Kind::Info,
            0x82 => Kind::Outcome,
            0xEE => Kind::Error,
            _ => return None,
        })
    }
}

/// Why bytes did not make a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The CRC does not match: bytes were lost or changed on the line.
    Checksum,
    /// The declared length is larger than the receiver's buffer.
    Oversized { length: usize, max: usize },
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Checksum => f.write_str("frame CRC mismatch"),
            FrameError::Oversized { length, max } => write!(f, "frame of {length} bytes exceeds the {max}-byte buffer"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Writes a frame into `out`; returns its length, or `None` when `out` is
/// too small (`payload.len() + OVERHEAD` bytes are needed) or the payload
/// is longer than a frame can say.
pub fn encode(kind: u8, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = u16::try_from(payload.len()).ok()?;
    let total = payload.len() + OVERHEAD;
    let out = out.get_mut(..total)?;
    out[..2].copy_from_slice(&SYNC);
    out[2] = kind;
    out[3..5].copy_from_slice(&len.to_le_bytes());
    out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    let crc = CRC.checksum(&out[2..HEADER_LEN + payload.len()]);
    out[HEADER_LEN + payload.len()..].copy_from_slice(&crc.to_le_bytes());
    Some(total)
}

/// CRC of a frame's kind, length and payload, computed while sending (the
/// device writes big frames in pieces instead of building them in RAM).
/// Not inlined: the bitwise CRC loop is sizeable, and sending is not hot.
#[inline(never)]
pub fn crc_of(kind: u8, payload_parts: &[&[u8]]) -> u32 {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    let mut d = CRC.digest();
    d.update(&[kind]);
    d.update(&(len as u16).to_le_bytes());
    payload_parts.iter().for_each(|p| d.update(p));
    d.finalize()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Sync0,
    Sync1,
    Kind,
    Len0,
    Len1,
    Payload,
    Crc,
    /// Skipping the rest of an oversized frame's bytes is not possible
    /// without trusting its length, so the decoder goes back to hunting for
    /// a sync word instead.
    Hunt,
}

/// Byte-at-a-time frame decoder over a caller-owned payload buffer.
#[derive(Debug)]
pub struct Decoder<'b> {
    buf: &'b mut [u8],
    state: State,
    kind: u8,
    len: usize,
    filled: usize,
    crc: [u8; 4],
    crc_filled: usize,
}

/// A complete frame: its kind byte and payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

/// What one byte did to the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// More bytes needed.
    Pending,
    /// A frame is complete: read it with [`Decoder::frame`].
    Complete,
    /// The bytes so far are not a frame; the decoder is hunting again.
    Rejected(FrameError),
}

impl<'b> Decoder<'b> {
    /// A decoder whose frames may carry up to `buf.len()` payload bytes.
    pub fn new(buf: &'b mut [u8]) -> Decoder<'b> {
        Decoder { buf, state: State::Sync0, kind: 0, len: 0, filled: 0, crc: [0; 4], crc_filled: 0 }
    }

    /// Whether a frame has started but not finished (a receiver times out
    /// such a frame: a truncated frame must not wait forever).
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Sync0 | State::Hunt)
    }

    /// Drops a partial frame.
    pub fn reset(&mut self) {
        self.state = State::Sync0;
    }

    /// Feeds one byte.
    pub fn push(&mut self, b: u8) -> Step {
        match self.state {
            State::Sync0 | State::Hunt => {
                if b == SYNC[0] {
                    self.state = State::Sync1;
                }
            }
            State::Sync1 => {
                self.state = match b {
                    _ if b == SYNC[1] => State::Kind,
                    _ if b == SYNC[0] => State::Sync1,
                    _ => State::Hunt,
                }
            }
            State::Kind => {
                self.kind = b;
                self.state = State::Len0;
            }
            State::Len0 => {
                self.len = b as usize;
                self.state = State::Len1;
            }
            State::Len1 => {
                self.len |= (b as usize) << 8;
                if self.len > self.buf.len() {
                    self.state = State::Hunt;
                    return Step::Rejected(FrameError::Oversized { length: self.len, max: self.buf.len() });
                }
                self.filled = 0;
                self.crc_filled = 0;
                self.state = if self.len == 0 { State::Crc } else { State::Payload };
            }
            State::Payload => {
                self.buf[self.filled] = b;
                self.filled += 1;
                if self.filled == self.len {
                    self.state = State::Crc;
                }
            }
            State::Crc => {
                self.crc[self.crc_filled] = b;
                self.crc_filled += 1;
                if self.crc_filled == 4 {
                    self.state = State::Sync0;
                    let got = u32::from_le_bytes(self.crc);
                    if got != crc_of(self.kind, &[&self.buf[..self.len]]) {
                        return Step::Rejected(FrameError::Checksum);
                    }
                    return Step::Complete;
                }
            }
        }
        Step::Pending
    }

    /// The frame completed by the last [`Step::Complete`].
    pub fn frame(&self) -> Frame<'_> {
        Frame { kind: self.kind, payload: &self.buf[..self.len] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8], cap: usize) -> Vec<Result<(u8, Vec<u8>), FrameError>> {
        let mut buf = vec![0u8; cap];
        let mut d = Decoder::new(&mut buf);
        let mut out = Vec::new();
        for &b in bytes {
            match d.push(b) {
                Step::Pending => {}
                Step::Complete => out.push(Ok((d.frame().kind, d.frame().payload.to_vec()))),
                Step::Rejected(e) => out.push(Err(e)),
            }
        }
        out
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + OVERHEAD];
        let n = encode(kind, payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn hand_checked_frame() {
        // CRC-32/ISO-HDLC of [01 00 00] is 0xFE83_B325 (zlib.crc32(b"\x01\x00\x00")).
        assert_eq!(frame(1, &[]), vec![0xA5, 0x5A, 0x01, 0x00, 0x00, 0x25, 0xB3, 0x83, 0xFE]);
        assert_eq!(crc_of(2, &[&[1, 2], &[3]]), crc_of(2, &[&[1, 2, 3]]));
    }

    #[test]
    fn frames_survive_garbage_and_reject_corruption() {
        let good = frame(Kind::Infer as u8, &[1, 2, 3]);
        let mut bytes = vec![0x00, 0xA5, 0x13, 0xFF];
        bytes.extend_from_slice(&good);
        let mut bad = good.clone();
        bad[6] ^= 0x40;
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&good);
        let got = decode_all(&bytes, 16);
        assert_eq!(got, vec![Ok((2, vec![1, 2, 3])), Err(FrameError::Checksum), Ok((2, vec![1, 2, 3]))]);
    }

    #[test]
    fn oversized_frames_are_refused_before_their_payload() {
        let big = frame(2, &[7; 40]);
        let mut bytes = big.clone();
        bytes.extend_from_slice(&frame(1, &[]));
        let got = decode_all(&bytes, 32);
        assert_eq!(got[0], Err(FrameError::Oversized { length: 40, max: 32 }));
        assert_eq!(got.last(), Some(&Ok((1, vec![]))), "the next frame is still found");
    }

    #[test]
    fn encode_refuses_a_small_buffer() {
        assert_eq!(encode(1, &[0; 8], &mut [0u8; 16]), None);
        assert_eq!(encode(1, &[0; 8], &mut [0u8; 17]), Some(17));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_and_a_frame_after_a_timeout_decodes(
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut buf = vec![0u8; 64];
            let mut d = Decoder::new(&mut buf);
            for &b in &noise {
                let _ = d.push(b);
            }
            // A receiver drops a partial frame when the line goes quiet.
            d.reset();
            let f = frame(0x82, &payload);
            let steps: Vec<Step> = f.iter().map(|&b| d.push(b)).collect();
            prop_assert_eq!(steps.last(), Some(&Step::Complete));
            prop_assert_eq!(d.frame(), Frame { kind: 0x82, payload: &payload });
        }
    }
}
