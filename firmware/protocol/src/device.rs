//! The firmware side: answer hello frames with the model's identity, run
//! inference requests, refuse bad frames with an error frame. A board gives
//! [`serve`] its UART as a [`Link`] and its cycle counter as a [`Clock`].

use tinykd_runtime::format::OpSet;
use tinykd_runtime::kernels::ChannelTable;
use tinykd_runtime::{Compiled, Error, Identity, Model};

use crate::frame::{Decoder, FrameError, HEADER_LEN, Kind, SYNC, Step, crc_of};
use crate::message::{Counter, ErrorCode, Info, Outcome};

/// A serial line, byte by byte.
pub trait Link {
    /// The next received byte, if one has arrived (never blocks).
    fn read_byte(&mut self) -> Option<u8>;
    /// Sends `bytes`, blocking until the UART has taken them.
    fn write_all(&mut self, bytes: &[u8]);
}

/// A free-running 64-bit counter (core cycles, or instructions).
pub trait Clock {
    fn now(&mut self) -> u64;
    /// What it counts (told to the host in the info frame).
    fn counter(&self) -> Counter;
}

/// What a board tells the host about itself.
#[derive(Debug, Clone, Copy)]
pub struct Board<'a> {
    pub name: &'a str,
    /// The core clock the firmware set up, in Hz.
    pub core_hz: u32,
    /// Counter ticks of silence after which a partial frame is dropped and
    /// answered with [`ErrorCode::Truncated`].
    pub frame_timeout_ticks: u64,
}

/// What the serve loop runs: a model compiled into the firmware
/// ([`Compiled`], what the board crates use) or a blob loaded at run time
/// ([`Interpreted`]).
pub trait Engine {
    /// What the model says about itself (told to the host).
    fn identity(&self) -> Identity;
    /// The operator set the firmware links (told to the host).
    fn linked_ops(&self) -> OpSet;
    /// One inference; the logits live in `arena`.
    fn infer<'b>(&self, input: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], Error>;
}

/// A [`Model`] loaded at run time, run with the kernels of `OPS` only
/// ([`Model::run_with_ops`]).
#[derive(Debug, Clone, Copy)]
pub struct Interpreted<'m, 'a, const OPS: OpSet>(pub &'m Model<'a>);

impl<const OPS: OpSet> Engine for Interpreted<'_, '_, OPS> {
    fn identity(&self) -> Identity {
        self.0.identity()
    }
    fn linked_ops(&self) -> OpSet {
        OPS
    }
    fn infer<'b>(&self, input: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], Error> {
        self.0.run_with_ops::<OPS>(input, arena)
    }
}

impl<const OPS: OpSet, C: ChannelTable> Engine for Compiled<'_, OPS, C> {
    fn identity(&self) -> Identity {
        self.identity
    }
    fn linked_ops(&self) -> OpSet {
        OPS
    }
    fn infer<'b>(&self, input: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], Error> {
        self.run(input, arena)
    }
}

/// Sends one frame whose payload is the concatenation of `parts`.
#[inline(never)]
fn send<L: Link>(link: &mut L, kind: Kind, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut head = [0u8; HEADER_LEN];
    head[..2].copy_from_slice(&SYNC);
    head[2] = kind as u8;
    head[3..5].copy_from_slice(&(len as u16).to_le_bytes());
    link.write_all(&head);
    parts.iter().for_each(|p| link.write_all(p));
    link.write_all(&crc_of(kind as u8, parts).to_le_bytes());
}

fn send_error<L: Link>(link: &mut L, code: ErrorCode, detail: u32) {
    send(link, Kind::Error, &[&code.payload(detail)]);
}

/// Serves `engine`'s model over `link` forever. `rx` receives frame
/// payloads (at least the model's input length); `arena` is the model's
/// arena; `peak_stack` measures the deepest stack use so far (0 when
/// unknown).
pub fn serve<L: Link, C: Clock, E: Engine>(
    engine: &E,
    arena: &mut [u8],
    rx: &mut [u8],
    link: &mut L,
    clock: &mut C,
    board: &Board<'_>,
    peak_stack: &mut dyn FnMut() -> u32,
) -> ! {
    let receive_buffer = rx.len().min(u16::MAX as usize) as u16;
    let counter = clock.counter();
    let model = engine.identity();
    let shape = model.input_shape();
    let mut input_dims = [0u16; 4];
    input_dims.iter_mut().zip(shape).for_each(|(d, s)| *d = *s);
    let info = |peak: u32, link: &mut L| {
        let i = Info {
            version: crate::VERSION,
            counter,
            model_crc: model.crc,
            model_bytes: model.blob_len as u32,
            input_len: model.input_len as u32,
            classes: model.class_count as u16,
            arena_bytes: model.arena_bytes as u32,
            ops: engine.linked_ops(),
            receive_buffer,
            peak_stack: peak,
            core_hz: board.core_hz,
            input_rank: shape.len() as u8,
            input_dims,
            board: board.name,
        };
        let mut buf = [0u8; 96];
        if let Some(n) = i.encode(&mut buf) {
            send(link, Kind::Info, &[&buf[..n]]);
        }
    };
    // Announce ourselves: the host waits for this before it sends anything
    // (QEMU drops bytes that arrive before the UART is enabled).
    info(peak_stack(), link);
    let mut decoder = Decoder::new(rx);
    let mut last_byte = clock.now();
    loop {
        let mut step = match link.read_byte() {
            Some(b) => {
                last_byte = clock.now();
                decoder.push(b)
            }
            None if decoder.in_frame() && clock.now().wrapping_sub(last_byte) > board.frame_timeout_ticks => {
                decoder.expire()
            }
            None => continue,
        };
        // One byte may end several frames: those a rescan of a rejected
        // frame's bytes finds.
        loop {
            match step {
                Step::Pending => break,
                Step::Rejected(e) => {
                    let (code, detail) = match e {
                        FrameError::Checksum => (ErrorCode::Checksum, 0),
                        FrameError::Oversized { max, .. } => (ErrorCode::Oversized, max as u32),
                        FrameError::UnknownKind(k) => (ErrorCode::UnknownKind, k as u32),
                        FrameError::Truncated => (ErrorCode::Truncated, 0),
                    };
                    send_error(link, code, detail);
                }
                Step::Complete => {
                    let frame = decoder.frame();
                    match Kind::from_u8(frame.kind) {
                        Some(Kind::Hello) => info(peak_stack(), link),
                        Some(Kind::Infer) if frame.payload.len() != model.input_len => {
                            send_error(link, ErrorCode::InputLength, model.input_len as u32)
                        }
                        Some(Kind::Infer) => {
                            let input = tinykd_runtime::as_i8(frame.payload);
                            let start = clock.now();
                            let result = engine.infer(input, arena);
                            let ticks = clock.now().wrapping_sub(start);
                            match result {
                                Ok(logits) => {
                                    let class = tinykd_runtime::argmax(logits) as u16;
                                    let head = Outcome::head(class, ticks);
                                    send(link, Kind::Outcome, &[&head, tinykd_runtime::as_u8(logits)]);
                                }
                                Err(e) => send_error(link, ErrorCode::Model, e.code() as u32),
                            }
                        }
                        _ => send_error(link, ErrorCode::UnknownKind, frame.kind as u32),
                    }
                }
            }
            step = decoder.resume();
        }
    }
}

/// A UART with `embedded-io` traits (e.g. `nrf51-hal`'s, or the drivers of
/// the emulated boards) as a [`Link`].
#[derive(Debug)]
pub struct EioLink<T>(pub T);

/// One received byte from an `embedded-io` reader, if one is ready.
fn eio_read_byte<R: embedded_io::Read + embedded_io::ReadReady>(rx: &mut R) -> Option<u8> {
    if !rx.read_ready().unwrap_or(false) {
        return None;
    }
    let mut b = [0u8; 1];
    match rx.read(&mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// Sends through an `embedded-io` writer. A UART write error (e.g. a
/// framing fault) loses this frame; the host notices the missing or corrupt
/// reply and says so.
fn eio_write_all<W: embedded_io::Write>(tx: &mut W, bytes: &[u8]) {
    let _ = tx.write_all(bytes);
    let _ = tx.flush();
}

impl<T: embedded_io::Read + embedded_io::ReadReady + embedded_io::Write> Link for EioLink<T> {
    fn read_byte(&mut self) -> Option<u8> {
        eio_read_byte(&mut self.0)
    }

    fn write_all(&mut self, bytes: &[u8]) {
        eio_write_all(&mut self.0, bytes)
    }
}

/// A UART split into an `embedded-io` receiver and transmitter (e.g.
/// `nrf52840-hal`'s `UarteRx` / `UarteTx`) as a [`Link`].
#[derive(Debug)]
pub struct EioSplit<R, W> {
    pub rx: R,
    pub tx: W,
}

impl<R: embedded_io::Read + embedded_io::ReadReady, W: embedded_io::Write> Link for EioSplit<R, W> {
    fn read_byte(&mut self) -> Option<u8> {
        eio_read_byte(&mut self.rx)
    }

    fn write_all(&mut self, bytes: &[u8]) {
        eio_write_all(&mut self.tx, bytes)
    }
}

/// A UART with `embedded-hal-nb` serial traits (e.g. `stm32f4xx-hal`'s),
/// receiver and transmitter split, as a [`Link`].
#[derive(Debug)]
pub struct NbLink<R, W> {
    pub rx: R,
    pub tx: W,
}

impl<R: embedded_hal_nb::serial::Read<u8>, W: embedded_hal_nb::serial::Write<u8>> Link for NbLink<R, W> {
    fn read_byte(&mut self) -> Option<u8> {
        // Overrun or framing errors drop the byte; the frame's CRC catches it.
        self.rx.read().ok()
    }

    fn write_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while let Err(embedded_hal_nb::nb::Error::WouldBlock) = self.tx.write(b) {}
        }
        while let Err(embedded_hal_nb::nb::Error::WouldBlock) = self.tx.flush() {}
    }
}

#[cfg(test)]
mod tests {
    //! The serve loop runs on the host here, over an in-memory line, to
    //! check every answer (the emulator tests check it on the boards).
    use super::*;
    use crate::frame::{OVERHEAD, encode};
    use std::collections::VecDeque;

    struct Line {
        input: VecDeque<u8>,
        output: Vec<u8>,
        /// Stops the (endless) serve loop once the input is used up and
        /// `idle` polls have found nothing.
        idle: usize,
    }

    impl Link for Line {
        fn read_byte(&mut self) -> Option<u8> {
            let b = self.input.pop_front();
            if b.is_none() {
                self.idle += 1;
                if self.idle > 50 {
                    std::panic::panic_any(Done);
                }
            }
            b
        }
        fn write_all(&mut self, bytes: &[u8]) {
            self.output.extend_from_slice(bytes);
        }
    }

    struct Done;

    struct Ticks(u64);
    impl Clock for Ticks {
        fn now(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
        fn counter(&self) -> Counter {
            Counter::Instret
        }
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + OVERHEAD];
        let n = encode(kind, payload, &mut out).expect("fits");
        out.truncate(n);
        out
    }

    /// Frames the device sends for `input` bytes: (kind, payload).
    fn exchange(blob: &[u8], input: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
        let model = Model::from_bytes(blob).expect("valid model");
        let frames = exchange_with(&Interpreted::<{ tinykd_runtime::format::ALL_OPS }>(&model), input.clone());
        // The same model as a board compiles it: the same frames, byte for byte.
        let layers: Vec<_> = (0..model.layer_count()).map(|i| model.compiled_layer(i).unwrap()).collect();
        let compiled = Compiled::<{ tinykd_runtime::format::ALL_OPS }> {
            layers: &layers,
            identity: model.identity(),
            ops: model.ops(),
            specialized: None,
        };
        assert_eq!(exchange_with(&compiled, input), frames);
        frames
    }

    fn exchange_with<E: Engine>(engine: &E, input: Vec<u8>) -> Vec<(u8, Vec<u8>)> {
        let model = engine.identity();
        let mut line = Line { input: input.into(), output: Vec::new(), idle: 0 };
        let board = Board { name: "test", core_hz: 1, frame_timeout_ticks: 20 };
        let mut arena = vec![0u8; model.arena_bytes];
        let mut rx = vec![0u8; model.input_len];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve(engine, &mut arena, &mut rx, &mut line, &mut Ticks(0), &board, &mut || 0)
        }));
        assert!(r.is_err_and(|e| e.is::<Done>()));
        let mut buf = vec![0u8; 4096];
        let mut d = Decoder::new(&mut buf);
        let mut frames = Vec::new();
        for b in line.output {
            if d.push(b) == Step::Complete {
                frames.push((d.frame().kind, d.frame().payload.to_vec()));
            }
        }
        frames
    }

    #[test]
    fn answers_hello_infer_and_every_bad_frame() {
        // A 40 → 8 → 10 MLP from `tinykd quantize` (any valid model would do).
        let blob = include_bytes!("testdata/mlp.tkd").to_vec();
        let model = Model::from_bytes(&blob).unwrap();
        let n = model.input_len();
        let x: Vec<i8> = (0..n as i32).map(|v| (v * 37 % 255 - 127) as i8).collect();
        let mut arena = vec![0u8; model.arena_bytes()];
        let want = model.run(&x, &mut arena).unwrap().to_vec();

        let mut input = frame(Kind::Hello as u8, &[]);
        input.extend(frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x)));
        input.extend(frame(Kind::Infer as u8, &[0; 1])); // wrong length
        let mut corrupt = frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x));
        corrupt[6] ^= 1;
        input.extend(corrupt);
        input.extend(frame(0x33, &[])); // unknown kind
        input.extend(frame(Kind::Infer as u8, &vec![0; n + 1])[..6].to_vec()); // oversized header
        input.extend(b"garbage");
        input.extend(frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x))[..7].to_vec()); // truncated: line goes quiet

        let frames = exchange(&blob, input);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, vec![0x81, 0x81, 0x82, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE], "{frames:?}");
        let info = Info::decode(&frames[0].1).unwrap();
        assert_eq!((info.input_len as usize, info.classes as usize, info.board), (n, want.len(), "test"));
        assert_eq!(info.model_crc, model.crc());
        assert_eq!(&info.input_dims[..info.input_rank as usize], model.input_shape());
        let o = Outcome::decode(&frames[2].1).unwrap();
        assert_eq!(o.logits, &want[..]);
        assert_eq!(o.class as usize, tinykd_runtime::argmax(&want));
        assert!(o.ticks > 0);
        let errors: Vec<(ErrorCode, u32)> = frames[3..].iter().map(|f| ErrorCode::decode(&f.1).unwrap()).collect();
        assert_eq!(
            errors,
            vec![
                (ErrorCode::InputLength, n as u32),
                (ErrorCode::Checksum, 0),
                (ErrorCode::UnknownKind, 0x33),
                (ErrorCode::Oversized, n as u32),
                (ErrorCode::Truncated, 0),
            ]
        );
    }

    #[test]
    fn answers_frames_behind_false_sync_words() {
        let blob = include_bytes!("testdata/mlp.tkd").to_vec();
        let model = Model::from_bytes(&blob).unwrap();
        let x: Vec<i8> = (0..model.input_len() as i32).map(|v| (v * 11 % 255 - 127) as i8).collect();
        let mut arena = vec![0u8; model.arena_bytes()];
        let want = model.run(&x, &mut arena).unwrap().to_vec();
        let infer = frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x));

        // Two false sync words, then a hello. A false header whose payload
        // and CRC take the first 24 bytes of an infer: its CRC fails there
        // and the infer is found in them; a hello. A false header whose
        // length runs past the hello behind it, then silence.
        let mut input = vec![0xA5, 0x5A, 0xA5, 0x5A];
        input.extend(frame(Kind::Hello as u8, &[]));
        input.extend([0xA5, 0x5A, Kind::Infer as u8, 20, 0]);
        input.extend(&infer);
        input.extend(frame(Kind::Hello as u8, &[]));
        input.extend([0xA5, 0x5A, Kind::Infer as u8, 40, 0]);
        input.extend(frame(Kind::Hello as u8, &[]));

        let frames = exchange(&blob, input);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, vec![0x81, 0xEE, 0xEE, 0x81, 0xEE, 0x82, 0x81, 0xEE, 0x81], "{frames:?}");
        let errors: Vec<(ErrorCode, u32)> =
            frames.iter().filter(|f| f.0 == 0xEE).map(|f| ErrorCode::decode(&f.1).unwrap()).collect();
        assert_eq!(
            errors,
            vec![
                (ErrorCode::UnknownKind, 0xA5),
                (ErrorCode::UnknownKind, 0xA5),
                (ErrorCode::Checksum, 0),
                (ErrorCode::Truncated, 0),
            ]
        );
        for f in frames.iter().filter(|f| f.0 == 0x82) {
            assert_eq!(Outcome::decode(&f.1).unwrap().logits, &want[..]);
        }
    }
}
