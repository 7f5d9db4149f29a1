//! The host side of the board protocol (`tinykd-protocol`): wait for the
//! board's info frame, check it runs the expected model, send inputs, read
//! outcomes; every error frame becomes a clear message.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tinykd_protocol::frame::{self, Decoder, Kind, Step};
use tinykd_protocol::message::{Counter, ErrorCode, Info, Outcome};
use tinykd_runtime::Model;

use super::link::HostLink;
use super::{Board, EmulationReport, Runner};

/// What a board said about itself (an owned [`Info`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    pub board: String,
    pub counter: String,
    #[serde(skip)]
    pub counter_kind: u8,
    pub model_crc: u32,
    pub model_bytes: u32,
    pub input_len: usize,
    /// The model's input shape, as its `.tkd` header stores it.
    pub input_shape: Vec<u16>,
    pub classes: usize,
    pub arena_bytes: u32,
    pub ops: u32,
    pub receive_buffer: usize,
    pub peak_stack: u32,
    pub core_hz: u32,
}

impl DeviceInfo {
    fn of(i: &Info<'_>) -> DeviceInfo {
        DeviceInfo {
            board: printable(i.board),
            counter: match i.counter {
                Counter::SysTick => "systick",
                Counter::Dwt => "dwt",
                Counter::Instret => "minstret",
            }
            .to_owned(),
            counter_kind: i.counter as u8,
            model_crc: i.model_crc,
            model_bytes: i.model_bytes,
            input_len: i.input_len as usize,
            input_shape: i.input_dims[..(i.input_rank as usize).min(4)].to_vec(),
            classes: i.classes as usize,
            arena_bytes: i.arena_bytes,
            ops: i.ops,
            receive_buffer: i.receive_buffer as usize,
            peak_stack: i.peak_stack,
            core_hz: i.core_hz,
        }
    }
}

/// Longest device-supplied text shown or stored.
const MAX_DEVICE_TEXT: usize = 64;

/// Device-supplied text made safe for a terminal, a log line or a report:
/// printable ASCII kept, anything else (newlines, escape sequences, other
/// control or non-ASCII characters) written as a Rust escape, the whole
/// capped at [`MAX_DEVICE_TEXT`] characters.
pub fn printable(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_DEVICE_TEXT {
            out.push('…');
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// One frame from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Info(DeviceInfo),
    Outcome { class: u16, ticks: u64, logits: Vec<i8> },
    Error { code: ErrorCode, detail: u32 },
}

/// An open conversation with a board.
#[derive(Debug)]
pub struct Session {
    link: HostLink,
    buf: Vec<u8>,
    /// How long a reply may take.
    pub timeout: Duration,
    /// `open` asked with a hello after the boot info frame was late: the
    /// board may still send its answer to that hello, a second info frame,
    /// ahead of the next reply.
    stray_info: bool,
}

impl Session {
    /// Waits for the board's info frame (sent at boot; a board that booted
    /// earlier is asked with a hello frame) and returns it.
    pub fn open(link: HostLink, timeout: Duration) -> Result<(Session, DeviceInfo)> {
        let mut s = Session { link, buf: vec![0u8; u16::MAX as usize], timeout, stray_info: false };
        let first = match s.next_reply_within(timeout.min(Duration::from_secs(3)))? {
            Some(r) => r,
            None => {
                // A board slow to boot (a loaded machine running QEMU) may
                // send its boot info frame after this hello went out: then
                // the hello's own answer follows it.
                s.send(Kind::Hello, &[])?;
                s.stray_info = true;
                s.next_reply()?
            }
        };
        match first {
            Reply::Info(info) => {
                if info.counter_kind > 2 {
                    bail!("{}: unknown counter kind {}", s.link.name, info.counter_kind);
                }
                Ok((s, info))
            }
            other => bail!("{}: expected the board's info frame, got {other:?}", s.link.name),
        }
    }

    pub fn name(&self) -> &str {
        &self.link.name
    }

    /// Sends a frame.
    pub fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<()> {
        let mut out = vec![0u8; payload.len() + frame::OVERHEAD];
        let n = frame::encode(kind as u8, payload, &mut out)
            .ok_or_else(|| anyhow::anyhow!("frame payload of {} bytes is too large", payload.len()))?;
        self.link.write_all(&out[..n])
    }

    /// Sends raw bytes (tests use it to send broken frames on purpose).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.link.write_all(bytes)
    }

    /// Asks the board for its info again (e.g. for the peak stack at the end).
    pub fn hello(&mut self) -> Result<DeviceInfo> {
        self.send(Kind::Hello, &[])?;
        match self.next_reply()? {
            Reply::Info(i) if std::mem::take(&mut self.stray_info) => {
                // Maybe the earlier hello's answer: this one's, if it comes, is newer.
                match self.next_reply_within(Duration::from_secs(1))? {
                    Some(Reply::Info(newer)) => Ok(newer),
                    Some(other) => bail!("{}: expected an info frame, got {other:?}", self.link.name),
                    None => Ok(i),
                }
            }
            Reply::Info(i) => Ok(i),
            other => bail!("{}: expected an info frame, got {other:?}", self.link.name),
        }
    }

    /// Runs one input: the predicted class, counter ticks and int8 logits.
    pub fn infer(&mut self, input: &[i8]) -> Result<(u16, u64, Vec<i8>)> {
        self.send(Kind::Infer, tinykd_runtime::as_u8(input))?;
        let mut reply = self.next_reply()?;
        if let (Reply::Info(_), true) = (&reply, std::mem::take(&mut self.stray_info)) {
            // The answer to `open`'s hello, not a reset.
            reply = self.next_reply()?;
        }
        // Replies come in order: no stray info frame can follow another reply.
        self.stray_info = false;
        match reply {
            Reply::Outcome { class, ticks, logits } => Ok((class, ticks, logits)),
            Reply::Error { code, detail } => bail!("{}: {}", self.link.name, describe(code, detail)),
            Reply::Info(_) => bail!(
                "{}: the board answered with its info frame: it was reset during the run (power, watchdog or a \
                 crash)",
                self.link.name
            ),
        }
    }

    /// The next complete frame from the board, within the session timeout.
    pub fn next_reply(&mut self) -> Result<Reply> {
        match self.next_reply_within(self.timeout)? {
            Some(r) => Ok(r),
            None => bail!(
                "{}: no answer from the board within {:.1} s (is it running tinykd firmware, on this port?)",
                self.link.name,
                self.timeout.as_secs_f64()
            ),
        }
    }

    /// Noise on the line (a false sync word, a frame hit by a bad byte) does
    /// not lose the frame behind it: the decoder scans a rejected frame's
    /// bytes again. A rejection followed by silence is reported as such.
    fn next_reply_within(&mut self, timeout: Duration) -> Result<Option<Reply>> {
        let deadline = Instant::now() + timeout;
        let mut decoder = Decoder::new(&mut self.buf);
        let mut rejected = None;
        loop {
            let Some(b) = self.link.read_byte(deadline)? else {
                match rejected {
                    Some(e) => {
                        bail!("{}: corrupt frame from the board ({e}), and no valid frame after it", self.link.name)
                    }
                    None => return Ok(None),
                }
            };
            let mut step = decoder.push(b);
            while let Step::Rejected(e) = step {
                rejected = Some(e);
                step = decoder.resume();
            }
            match step {
                Step::Pending | Step::Rejected(_) => {}
                Step::Complete => {
                    let f = decoder.frame();
                    return Ok(Some(parse(f.kind, f.payload).map_err(|e| anyhow::anyhow!("{}: {e}", self.link.name))?));
                }
            }
        }
    }
}

fn parse(kind: u8, p: &[u8]) -> std::result::Result<Reply, String> {
    match Kind::from_u8(kind) {
        Some(Kind::Info) => {
            let i = Info::decode(p).ok_or("malformed info frame")?;
            if i.version != tinykd_protocol::VERSION {
                return Err(format!(
                    "the board speaks protocol version {}, this tinykd version {}: rebuild the firmware with this \
                     tinykd",
                    i.version,
                    tinykd_protocol::VERSION
                ));
            }
            Ok(Reply::Info(DeviceInfo::of(&i)))
        }
        Some(Kind::Outcome) => {
            let o = Outcome::decode(p).ok_or("malformed outcome frame")?;
            Ok(Reply::Outcome { class: o.class, ticks: o.ticks, logits: o.logits.to_vec() })
        }
        Some(Kind::Error) => {
            let (code, detail) = ErrorCode::decode(p).ok_or("malformed error frame")?;
            Ok(Reply::Error { code, detail })
        }
        _ => Err(format!("unexpected frame kind {kind:#04x} from the board")),
    }
}

/// An error frame as a sentence with its detail.
pub fn describe(code: ErrorCode, detail: u32) -> String {
    match code {
        ErrorCode::InputLength => format!("{code} (the model takes {detail} values)"),
        ErrorCode::Oversized => format!("{code} ({detail} bytes)"),
        ErrorCode::UnknownKind => format!("{code} (kind {detail:#04x})"),
        ErrorCode::Model => format!("{code} (runtime error code {detail})"),
        _ => code.to_string(),
    }
}

/// Streams `n` inputs over an open session and compares every answer with
/// the host runtime's. Refuses a board that runs another model.
pub fn run_split(
    session: &mut Session,
    info: &DeviceInfo,
    board: &Board,
    model: &Model<'_>,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
) -> Result<EmulationReport> {
    if info.model_crc != model.crc() || info.input_shape != model.input_shape() || info.classes != model.class_count() {
        bail!(
            "{}: the board runs another model (CRC {:#010x}, input {:?}, {} classes; expected {:#010x}, {:?}, {}): \
             flash this model first (tinykd flash --model …)",
            session.name(),
            info.model_crc,
            info.input_shape,
            info.classes,
            model.crc(),
            model.input_shape(),
            model.class_count()
        );
    }
    let len = model.input_len();
    let classes = model.class_count();
    let (host_pred, host_logits) = crate::int8::run_quantized(model, inputs, n)?;
    let mut device_logits = Vec::with_capacity(n * classes);
    let mut device_pred = Vec::with_capacity(n);
    let mut ticks = 0u128;
    let bar = crate::progress::Progress::from_env().bar(n as u64, board.name);
    for i in 0..n {
        bar.inc(1);
        let (class, t, logits) = session.infer(&inputs[i * len..(i + 1) * len])?;
        if logits.len() != classes {
            bail!("{}: the board sent {} logits, the model has {classes} classes", session.name(), logits.len());
        }
        // The class is the board's own argmax: one that does not match its
        // logits means a board that is broken or runs other code.
        let argmax = tinykd_runtime::argmax(&logits);
        if class as usize != argmax {
            bail!(
                "{}: for input {i} the board answered class {class}, but the argmax of the logits it sent is {argmax}",
                session.name()
            );
        }
        device_pred.push(class as usize);
        device_logits.extend_from_slice(&logits);
        ticks += t as u128;
    }
    let end = session.hello()?;
    let agree =
        host_logits.chunks_exact(classes).zip(device_logits.chunks_exact(classes)).filter(|(h, d)| h == d).count();
    bar.finish_and_clear();
    let per_inference = ticks as f64 / n.max(1) as f64;
    let (count, counted) = match (board.runner, info.counter_kind) {
        (Runner::Qemu { instructions_per_tick, .. }, 0) => (per_inference * instructions_per_tick, "instructions"),
        (_, 2) => (per_inference, "instructions"),
        _ => (per_inference, "cycles"),
    };
    Ok(EmulationReport {
        board: board.name.into(),
        n,
        accuracy: labels.map(|y| crate::util::accuracy(&device_pred, y)),
        host_accuracy: labels.map(|y| crate::util::accuracy(&host_pred, y)),
        agreement: agree as f64 / n.max(1) as f64,
        flash_bytes: 0,
        ram_bytes: 0,
        static_ram_bytes: 0,
        peak_stack_bytes: end.peak_stack as u64,
        model_bytes: model.as_bytes().len(),
        instructions_per_inference: count,
        counted: counted.to_owned(),
        device: end,
        elf: None,
        device_logits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + frame::OVERHEAD];
        let n = frame::encode(kind as u8, payload, &mut out).unwrap_or(0);
        out.truncate(n);
        out
    }

    /// A line that sends `bytes`, then stays quiet for two seconds.
    struct ThenQuiet(std::io::Cursor<Vec<u8>>);

    impl std::io::Read for ThenQuiet {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            if n == 0 {
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok(n)
        }
    }

    fn session(bytes: Vec<u8>) -> Session {
        let rx = ThenQuiet(std::io::Cursor::new(bytes));
        let link = HostLink::new("fake board".into(), Box::new(rx), Box::new(std::io::sink()));
        Session { link, buf: vec![0u8; u16::MAX as usize], timeout: Duration::from_millis(300), stray_info: false }
    }

    #[test]
    fn a_reply_behind_noise_and_a_broken_frame_is_found() {
        let reply = frame(Kind::Error, &ErrorCode::InputLength.payload(40));
        let mut broken = frame(Kind::Error, &ErrorCode::Model.payload(1));
        broken[6] ^= 0x40;
        let mut bytes = b"\xA5\x5A\xA5\x5Aboot noise".to_vec();
        bytes.extend_from_slice(&broken);
        bytes.extend_from_slice(&reply);
        let got = session(bytes).next_reply().unwrap();
        assert_eq!(got, Reply::Error { code: ErrorCode::InputLength, detail: 40 });
    }

    #[test]
    fn a_broken_frame_then_silence_is_reported_as_corrupt() {
        let mut broken = frame(Kind::Error, &ErrorCode::Model.payload(1));
        broken[6] ^= 0x40;
        let e = format!("{:#}", session(broken).next_reply().unwrap_err());
        assert!(e.contains("corrupt frame from the board") && e.contains("fake board"), "{e}");
    }

    /// A line that stays quiet for `delay`, then sends `bytes`, then stays quiet.
    struct Late(Duration, std::io::Cursor<Vec<u8>>);

    impl std::io::Read for Late {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::mem::take(&mut self.0));
            ThenQuiet(std::mem::take(&mut self.1)).read(buf).inspect(|&n| {
                if n == 0 {
                    self.0 = Duration::from_secs(2);
                }
            })
        }
    }

    fn info_frame(peak_stack: u32) -> Vec<u8> {
        let info = Info {
            version: tinykd_protocol::VERSION,
            counter: Counter::SysTick,
            model_crc: 7,
            model_bytes: 100,
            input_len: 2,
            classes: 2,
            arena_bytes: 16,
            ops: 1,
            receive_buffer: 16,
            peak_stack,
            core_hz: 25_000_000,
            input_rank: 1,
            input_dims: [2, 0, 0, 0],
            board: "fake",
        };
        let mut p = [0u8; 128];
        let n = info.encode(&mut p).unwrap_or(0);
        frame(Kind::Info, &p[..n])
    }

    #[test]
    fn a_boot_info_frame_later_than_the_hello_is_not_taken_for_a_reset() {
        // The board boots slowly: its boot info frame comes after `open` has
        // asked with a hello, and the hello's answer follows it.
        let mut bytes = info_frame(100);
        bytes.extend(info_frame(200));
        let mut outcome = tinykd_protocol::message::Outcome::head(1, 42).to_vec();
        outcome.extend([5u8, 9]);
        bytes.extend(frame(Kind::Outcome, &outcome));
        let rx = Late(Duration::from_millis(3300), std::io::Cursor::new(bytes));
        let link = HostLink::new("slow board".into(), Box::new(rx), Box::new(std::io::sink()));
        let (mut session, info) = Session::open(link, Duration::from_secs(10)).unwrap();
        assert_eq!(info.peak_stack, 100);
        let (class, ticks, logits) = session.infer(&[0, 0]).unwrap();
        assert_eq!((class, ticks, logits), (1, 42, vec![5, 9]));
    }

    #[test]
    fn device_text_is_printable_and_capped() {
        assert_eq!(printable("qemu-mps2-an385"), "qemu-mps2-an385");
        assert_eq!(printable("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), MAX_DEVICE_TEXT + 1);
        assert!(printable("é").is_ascii());
    }
}
