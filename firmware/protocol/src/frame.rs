//! Frames: `A5 5A | kind u8 | length u16 LE | payload | CRC-32 LE`.
//!
//! The CRC (ISO-HDLC, as zlib) covers kind, length and payload. The sync
//! word lets a receiver find the next frame after garbage; the decoder is a
//! byte-at-a-time state machine, so the device can run it on a UART that
//! delivers one byte per poll and the host on whatever its reads return.
//! Garbage may hold the sync word too: a frame the decoder rejects has its
//! bytes after the sync word scanned again, so a real frame right behind
//! (or inside) a false one is still found.

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
    /// The kind byte after a sync word is none of [`Kind`]'s.
    UnknownKind(u8),
    /// The line went quiet before the frame was complete
    /// ([`Decoder::expire`]).
    Truncated,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Checksum => f.write_str("frame CRC mismatch"),
            FrameError::Oversized { length, max } => write!(f, "frame of {length} bytes exceeds the {max}-byte buffer"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k:#04x}"),
            FrameError::Truncated => f.write_str("truncated frame (the line went quiet)"),
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
}

/// The bytes of a rejected frame after its sync word, kept for a rescan:
/// the header bytes received, the payload received (`buf[..mid]`), the CRC
/// bytes received. Nothing is copied out of the payload buffer: a frame
/// found inside is moved to the buffer's start, below the bytes still to
/// scan (its payload starts at least five bytes into them).
#[derive(Debug, Clone, Copy)]
struct Rescan {
    head: [u8; 3],
    head_len: usize,
    mid: usize,
    tail: [u8; 4],
    tail_len: usize,
    /// Next byte to scan from.
    at: usize,
    /// The line went quiet ([`Decoder::expire`]): a frame that runs past
    /// the end is truncated, not continued by the next byte.
    quiet: bool,
}

impl Rescan {
    fn len(&self) -> usize {
        self.head_len + self.mid + self.tail_len
    }

    /// Bytes `from..from + len` (past the head) as the part in the buffer
    /// and the part in the tail.
    fn slices<'a>(&'a self, buf: &'a [u8], from: usize, len: usize) -> [&'a [u8]; 2] {
        let start = from.saturating_sub(self.head_len);
        let end = start + len;
        let mid = self.mid.min(buf.len());
        let in_buf = buf.get(start.min(mid)..end.min(mid)).unwrap_or(&[]);
        let tail = self.tail_len.min(4);
        let in_tail = self.tail.get(start.saturating_sub(self.mid).min(tail)..end.saturating_sub(self.mid).min(tail));
        [in_buf, in_tail.unwrap_or(&[])]
    }

    /// Byte `i` (below [`Rescan::len`]; 0 past it). Not inlined: rescans
    /// are rare, and inlined into each loop it takes a kilobyte of flash.
    #[inline(never)]
    fn byte(&self, buf: &[u8], i: usize) -> u8 {
        let at = if i < self.head_len {
            self.head.get(i)
        } else if i < self.head_len + self.mid {
            buf.get(i - self.head_len)
        } else {
            self.tail.get(i - self.head_len - self.mid)
        };
        at.copied().unwrap_or(0)
    }
}

/// Byte-at-a-time frame decoder over a caller-owned payload buffer.
///
/// A rejected frame (CRC mismatch, oversized length, unknown kind, or
/// truncated by [`Decoder::expire`]) may have been a false sync word in
/// garbage with a real frame behind it: its bytes after the sync word are
/// scanned again. After a [`Step::Rejected`] or a [`Step::Complete`], call
/// [`Decoder::resume`] until it returns [`Step::Pending`] before pushing
/// the next byte: a rescan may find more frames, or more bad ones. The
/// rescan works inside the payload buffer (no copy of it) and ends after at
/// most as many steps as the rejected frame had bytes.
#[derive(Debug)]
pub struct Decoder<'b> {
    buf: &'b mut [u8],
    state: State,
    kind: u8,
    len: usize,
    filled: usize,
    crc: [u8; 4],
    crc_filled: usize,
    rescan: Option<Rescan>,
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
    /// The bytes so far are not a frame; the decoder rescans them.
    Rejected(FrameError),
}

impl<'b> Decoder<'b> {
    /// A decoder whose frames may carry up to `buf.len()` payload bytes.
    pub fn new(buf: &'b mut [u8]) -> Decoder<'b> {
        Decoder { buf, state: State::Sync0, kind: 0, len: 0, filled: 0, crc: [0; 4], crc_filled: 0, rescan: None }
    }

    /// Whether a frame has started (its sync word received) but not
    /// finished: a receiver times such a frame out with [`Decoder::expire`],
    /// a truncated frame must not wait forever.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Sync0 | State::Sync1)
    }

    /// Drops a partial frame, without a rescan.
    pub fn reset(&mut self) {
        self.state = State::Sync0;
        self.rescan = None;
    }

    /// The line went quiet: a partial frame is rejected as
    /// [`FrameError::Truncated`] and its bytes rescanned, any frame that
    /// starts in them truncated too (call [`Decoder::resume`] after).
    /// [`Step::Pending`] when no frame had started.
    pub fn expire(&mut self) -> Step {
        self.finish_rescan();
        if !self.in_frame() {
            self.state = State::Sync0;
            return Step::Pending;
        }
        self.reject(FrameError::Truncated, true)
    }

    /// Feeds one byte.
    pub fn push(&mut self, b: u8) -> Step {
        self.finish_rescan();
        match self.state {
            State::Sync0 => {
                if b == SYNC[0] {
                    self.state = State::Sync1;
                }
            }
            State::Sync1 => {
                self.state = match b {
                    _ if b == SYNC[1] => State::Kind,
                    _ if b == SYNC[0] => State::Sync1,
                    _ => State::Sync0,
                }
            }
            State::Kind => {
                self.kind = b;
                if Kind::from_u8(b).is_none() {
                    return self.reject(FrameError::UnknownKind(b), false);
                }
                self.state = State::Len0;
            }
            State::Len0 => {
                self.len = b as usize;
                self.state = State::Len1;
            }
            State::Len1 => {
                self.len |= (b as usize) << 8;
                self.filled = 0;
                self.crc_filled = 0;
                if self.len > self.buf.len() {
                    return self.reject(FrameError::Oversized { length: self.len, max: self.buf.len() }, false);
                }
                self.state = if self.len == 0 { State::Crc } else { State::Payload };
            }
            State::Payload => {
                // `filled < len <= buf.len()` in this state.
                if let Some(slot) = self.buf.get_mut(self.filled) {
                    *slot = b;
                }
                self.filled += 1;
                if self.filled >= self.len {
                    self.state = State::Crc;
                }
            }
            State::Crc => {
                self.crc[self.crc_filled & 3] = b;
                self.crc_filled += 1;
                if self.crc_filled >= 4 {
                    let got = u32::from_le_bytes(self.crc);
                    if got != crc_of(self.kind, &[&self.buf[..self.len]]) {
                        return self.reject(FrameError::Checksum, false);
                    }
                    self.state = State::Sync0;
                    return Step::Complete;
                }
            }
        }
        Step::Pending
    }

    /// Keeps the bytes of the frame in progress after its sync word for a
    /// rescan and reports `error`.
    fn reject(&mut self, error: FrameError, quiet: bool) -> Step {
        let (kind, [l0, l1]) = (self.kind, (self.len as u16).to_le_bytes());
        let (head_len, mid, tail_len) = match self.state {
            State::Sync0 | State::Sync1 | State::Kind => (0, 0, 0),
            State::Len0 => (1, 0, 0),
            // A rejected kind byte is scanned again: it may start a sync word.
            State::Len1 if matches!(error, FrameError::Oversized { .. }) => (3, 0, 0),
            State::Len1 => (2, 0, 0),
            State::Payload => (3, self.filled, 0),
            State::Crc => (3, self.len, self.crc_filled.min(4)),
        };
        let head_len = if matches!(error, FrameError::UnknownKind(_)) { 1 } else { head_len };
        self.rescan = Some(Rescan { head: [kind, l0, l1], head_len, mid, tail: self.crc, tail_len, at: 0, quiet });
        self.state = State::Sync0;
        Step::Rejected(error)
    }

    /// Continues a rescan after a [`Step::Rejected`] or [`Step::Complete`]:
    /// the next frame or bad frame found in the rescanned bytes, or
    /// [`Step::Pending`] once they are all scanned (the decoder then
    /// carries any frame that started in them on with the next byte).
    pub fn resume(&mut self) -> Step {
        let Some(mut r) = self.rescan.take() else { return Step::Pending };
        let step = self.scan(&mut r);
        if step != Step::Pending {
            self.rescan = Some(r);
        }
        step
    }

    /// Runs a rescan the caller did not finish to its end, dropping what it
    /// finds (a caller that pushes on without [`Decoder::resume`]).
    fn finish_rescan(&mut self) {
        let mut left = self.buf.len() + 8;
        while self.rescan.is_some() && left > 0 {
            let _ = self.resume();
            left -= 1;
        }
        self.rescan = None;
    }

    fn scan(&mut self, r: &mut Rescan) -> Step {
        let n = r.len();
        // The next sync word.
        let mut p = r.at;
        while p + 1 < n && !(r.byte(self.buf, p) == SYNC[0] && r.byte(self.buf, p + 1) == SYNC[1]) {
            p += 1;
        }
        if p + 1 >= n {
            // None; a last byte that may start one waits for the next.
            let trailing = p < n && r.byte(self.buf, p) == SYNC[0];
            self.state = if trailing && !r.quiet { State::Sync1 } else { State::Sync0 };
            return Step::Pending;
        }
        // A frame after this sync word is rejected or ends the scan; a
        // rejected one is scanned from the byte after the sync word.
        r.at = p + 2;
        let avail = n - (p + 2);
        let at = |i: usize| r.byte(self.buf, p + 2 + i);
        if avail == 0 {
            return self.partial(r, State::Kind);
        }
        self.kind = at(0);
        if Kind::from_u8(self.kind).is_none() {
            return Step::Rejected(FrameError::UnknownKind(self.kind));
        }
        if avail < 3 {
            if avail == 2 {
                self.len = at(1) as usize;
            }
            return self.partial(r, if avail == 1 { State::Len0 } else { State::Len1 });
        }
        let len = u16::from_le_bytes([at(1), at(2)]) as usize;
        self.len = len;
        if len > self.buf.len() {
            return Step::Rejected(FrameError::Oversized { length: len, max: self.buf.len() });
        }
        if avail >= 3 + len + 4 {
            let crc = u32::from_le_bytes([at(3 + len), at(4 + len), at(5 + len), at(6 + len)]);
            let [a, b] = r.slices(self.buf, p + 5, len);
            if crc_of(self.kind, &[a, b]) != crc {
                return Step::Rejected(FrameError::Checksum);
            }
            self.take_payload(r, p + 5, len);
            r.at = p + 9 + len;
            self.state = State::Sync0;
            return Step::Complete;
        }
        // The frame runs past the rescanned bytes.
        if r.quiet {
            return Step::Rejected(FrameError::Truncated);
        }
        let got = avail - 3;
        self.filled = got.min(len);
        self.crc_filled = got - self.filled;
        for i in 0..self.crc_filled.min(4) {
            self.crc[i] = at(3 + len + i);
        }
        self.take_payload(r, p + 5, self.filled);
        self.state = if self.filled < len { State::Payload } else { State::Crc };
        r.at = n;
        Step::Pending
    }

    /// A frame whose header runs past the rescanned bytes: carried on by
    /// the next byte, or truncated when the line went quiet.
    fn partial(&mut self, r: &mut Rescan, state: State) -> Step {
        if r.quiet {
            return Step::Rejected(FrameError::Truncated);
        }
        r.at = r.len();
        self.state = state;
        Step::Pending
    }

    /// Moves `len` payload bytes, from rescan position `from` on, to the
    /// start of the buffer. `from` is at least 5, the head at most 3 bytes:
    /// every byte is written below where it is read, and below the bytes
    /// still to scan.
    fn take_payload(&mut self, r: &Rescan, from: usize, len: usize) {
        // Byte by byte: no memmove linked for it.
        for i in 0..len {
            let b = r.byte(self.buf, from + i);
            if let Some(slot) = self.buf.get_mut(i) {
                *slot = b;
            }
        }
    }

    /// The frame completed by the last [`Step::Complete`].
    pub fn frame(&self) -> Frame<'_> {
        Frame { kind: self.kind, payload: &self.buf[..self.len.min(self.buf.len())] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Decoded = Vec<Result<(u8, Vec<u8>), FrameError>>;

    /// Everything the decoder finds in `bytes`, rescans included; then
    /// what the line going quiet finds.
    fn decode_all(bytes: &[u8], cap: usize) -> Decoded {
        let (mut out, quiet) = decode_then_quiet(bytes, cap);
        out.extend(quiet);
        out
    }

    /// What the bytes give, and what the line going quiet after them gives.
    fn decode_then_quiet(bytes: &[u8], cap: usize) -> (Decoded, Decoded) {
        let mut buf = vec![0u8; cap];
        let mut d = Decoder::new(&mut buf);
        let mut out = Vec::new();
        let drain = |d: &mut Decoder<'_>, mut step: Step, out: &mut Decoded| loop {
            match step {
                Step::Pending => return,
                Step::Complete => out.push(Ok((d.frame().kind, d.frame().payload.to_vec()))),
                Step::Rejected(e) => out.push(Err(e)),
            }
            step = d.resume();
        };
        for &b in bytes {
            let step = d.push(b);
            drain(&mut d, step, &mut out);
        }
        let mut quiet = Vec::new();
        let step = d.expire();
        drain(&mut d, step, &mut quiet);
        assert!(!d.in_frame(), "a frame still open after the line went quiet");
        (out, quiet)
    }

    fn hello() -> Vec<u8> {
        frame(Kind::Hello as u8, &[])
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

    #[test]
    fn a_hello_right_behind_a_false_sync_is_found() {
        // Each false sync's next byte is no frame kind: refused at once and
        // scanned again, so the second A5 starts the sync word it is.
        let mut bytes = vec![0xA5, 0x5A, 0xA5, 0x5A];
        bytes.extend(hello());
        let got = decode_all(&bytes, 40);
        assert_eq!(got, vec![Err(FrameError::UnknownKind(0xA5)), Err(FrameError::UnknownKind(0xA5)), Ok((1, vec![]))]);
    }

    #[test]
    fn a_sync_word_inside_an_oversized_header_is_found() {
        // Kind 02 with length 0x5AA5: refused, and its length bytes are the
        // sync word of the hello that follows.
        let mut bytes = vec![0x00, 0xA5, 0x5A, 0x02];
        bytes.extend(hello());
        let got = decode_all(&bytes, 40);
        assert_eq!(got, vec![Err(FrameError::Oversized { length: 0x5AA5, max: 40 }), Ok((1, vec![]))]);
    }

    #[test]
    fn frames_swallowed_by_a_false_header_are_found_after_its_checksum_fails() {
        // A false header declaring 24 payload bytes takes a hello, an infer
        // and the first bytes of another hello as its payload and CRC.
        let infer = frame(Kind::Infer as u8, &[1, 2, 3, 0xA5, 0x5A]);
        let mut bytes = vec![0xA5, 0x5A, 0x02, 24, 0];
        bytes.extend(hello());
        bytes.extend(&infer);
        bytes.extend(hello());
        let got = decode_all(&bytes, 40);
        assert_eq!(
            got,
            vec![Err(FrameError::Checksum), Ok((1, vec![])), Ok((2, vec![1, 2, 3, 0xA5, 0x5A])), Ok((1, vec![]))]
        );
    }

    #[test]
    fn a_frame_behind_a_false_header_is_found_when_the_line_goes_quiet() {
        // The false header's length runs past the hello: nothing more comes,
        // so it is truncated and its bytes scanned again.
        let mut bytes = vec![0xA5, 0x5A, 0x01, 30, 0];
        bytes.extend(hello());
        let (live, quiet) = decode_then_quiet(&bytes, 40);
        assert_eq!(live, vec![]);
        assert_eq!(quiet, vec![Err(FrameError::Truncated), Ok((1, vec![]))]);
        // A frame cut short by silence is one error, whatever it holds.
        let cut = &frame(Kind::Infer as u8, &[0xA5, 0x5A, 0x02, 0x09, 0x00, 9, 9])[..10];
        assert_eq!(decode_then_quiet(cut, 40), (vec![], vec![Err(FrameError::Truncated), Err(FrameError::Truncated)]));
        // A lone first sync byte is no frame: nothing to time out.
        assert_eq!(decode_then_quiet(&[0x13, 0xA5], 40), (vec![], vec![]));
    }

    #[test]
    fn sync_words_inside_a_valid_payload_are_payload() {
        // The payload is itself a whole encoded frame: one frame, the outer.
        let inner = frame(Kind::Infer as u8, &[0xA5, 0x5A, 7]);
        let outer = frame(Kind::Infer as u8, &inner);
        assert_eq!(decode_all(&outer, 40), vec![Ok((2, inner.clone()))]);
        // The same frame corrupted: its payload's frame is still delivered.
        let mut bad = outer.clone();
        *bad.last_mut().unwrap() ^= 1;
        bad.extend(hello());
        assert_eq!(
            decode_all(&bad, 40),
            vec![Err(FrameError::Checksum), Ok((2, vec![0xA5, 0x5A, 7])), Ok((1, vec![]))]
        );
    }

    #[test]
    fn an_unknown_kind_is_refused_at_its_byte() {
        let mut bytes = frame(0x33, &[]);
        bytes.extend(hello());
        assert_eq!(decode_all(&bytes, 40), vec![Err(FrameError::UnknownKind(0x33)), Ok((1, vec![]))]);
    }

    #[test]
    fn a_caller_that_skips_the_rescan_loses_its_frames_but_not_the_next() {
        let mut buf = [0u8; 40];
        let mut d = Decoder::new(&mut buf);
        let mut bytes = vec![0xA5, 0x5A, 0x02, 24, 0];
        bytes.extend(hello());
        bytes.extend(frame(Kind::Infer as u8, &[5; 20]));
        let mut completes = Vec::new();
        for b in bytes {
            if d.push(b) == Step::Complete {
                completes.push(d.frame().payload.to_vec());
            }
        }
        assert_eq!(completes, vec![vec![5; 20]]);
    }

    /// Garbage bytes, often the sync word's.
    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![any::<u8>(), Just(0xA5), Just(0x5A), Just(0x02), Just(0x00)], 0..300)
    }

    /// A frame of any kind the protocol has.
    fn any_frame() -> impl Strategy<Value = (u8, Vec<u8>)> {
        (
            prop_oneof![Just(0x01u8), Just(0x02), Just(0x81), Just(0x82), Just(0xEE)],
            proptest::collection::vec(prop_oneof![any::<u8>(), Just(0xA5), Just(0x5A)], 0..64),
        )
    }

    proptest! {
        #[test]
        fn frames_behind_any_garbage_are_found(
            noise in garbage(),
            (k1, p1) in any_frame(),
            (k2, p2) in any_frame(),
        ) {
            let mut bytes = noise.clone();
            bytes.extend(frame(k1, &p1));
            bytes.extend(frame(k2, &p2));
            let got = decode_all(&bytes, 64);
            let frames: Vec<(u8, Vec<u8>)> = got.iter().filter_map(|r| r.clone().ok()).collect();
            // Garbage holds no frame (a CRC-32 matching by chance aside).
            prop_assert_eq!(frames, vec![(k1, p1), (k2, p2)], "{:02x?}: {:?}", noise, got);
        }

        #[test]
        fn garbage_alone_never_panics_and_ends_quiet(noise in garbage(), cap in 0usize..80) {
            let got = decode_all(&noise, cap);
            // Every step a rejection reports moves the scan on: at most one
            // per byte and one per sync word.
            prop_assert!(got.len() <= noise.len() + 1);
        }

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
