#![allow(clippy::unwrap_used)]
//! The board protocol under load on an emulated board: frames behind
//! garbage that holds the sync word, thousands of valid and bad frames with
//! seeded garbage between them, and (ignored by default: minutes per board)
//! frames sent one byte at a time, slowly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tinykd::device::{self, FirmwareBuild, Qemu, Reply, Session};
use tinykd_protocol::frame::{self, Kind, SYNC};
use tinykd_protocol::message::ErrorCode;
use tinykd_runtime::Model;

/// A 40 → 8 → 10 MLP (`firmware/protocol/src/testdata`): any valid model
/// would do, this one needs no training.
fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../firmware/protocol/src/testdata/mlp.tkd")
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + frame::OVERHEAD];
    let n = frame::encode(kind, payload, &mut out).unwrap();
    out.truncate(n);
    out
}

/// The board running the MLP, its session, and the model on the host.
struct Board {
    _qemu: Qemu,
    session: Session,
    blob: Vec<u8>,
}

impl Board {
    fn start(name: &str) -> Board {
        let board = device::board(name).unwrap();
        let elf = device::build_firmware(board, &model_path(), FirmwareBuild::default()).unwrap();
        let (qemu, link) = device::start_qemu(board, &elf).unwrap();
        let (session, info) = Session::open(link, Duration::from_secs(20)).unwrap();
        let blob = std::fs::read(model_path()).unwrap();
        assert_eq!(info.model_crc, Model::from_bytes(&blob).unwrap().crc());
        Board { _qemu: qemu, session, blob }
    }

    fn model(&self) -> Model<'_> {
        Model::from_bytes(&self.blob).unwrap()
    }

    /// The host runtime's logits for `x`.
    fn host_logits(&self, x: &[i8]) -> Vec<i8> {
        let model = self.model();
        let mut arena = vec![0u8; model.arena_bytes()];
        model.run(x, &mut arena).unwrap().to_vec()
    }

    fn reply(&mut self, what: &str) -> Reply {
        self.session.next_reply().unwrap_or_else(|e| panic!("{what}: {e:#}"))
    }
}

fn error(code: ErrorCode, detail: u32) -> Reply {
    Reply::Error { code, detail }
}

/// An info reply with the peak stack left out (it grows as the board takes
/// new paths).
fn info_of(r: Reply) -> Reply {
    match r {
        Reply::Info(mut i) => {
            i.peak_stack = 0;
            Reply::Info(i)
        }
        other => other,
    }
}

/// Garbage behind which a real frame used to be lost: sync words whose
/// next byte is no frame kind, and a header whose length bytes are the sync
/// word of the frame after it. Each is one error frame, then the hello
/// right behind is answered.
#[test]
fn frames_right_behind_false_sync_words_are_answered() {
    let mut b = Board::start("qemu-mps2-an385");
    let hello = frame(Kind::Hello as u8, &[]);
    let info = Reply::Info(b.session.hello().unwrap());
    let info = info_of(info);

    let mut bytes = vec![0xA5, 0x5A, 0xA5, 0x5A];
    bytes.extend(&hello);
    b.session.send_raw(&bytes).unwrap();
    for want in [error(ErrorCode::UnknownKind, 0xA5), error(ErrorCode::UnknownKind, 0xA5), info.clone()] {
        assert_eq!(info_of(b.reply("A5 5A A5 5A + hello")), want);
    }

    // Kind 02, length 0x5AA5: oversized, its length bytes a sync word.
    let mut bytes = vec![0x00, 0xA5, 0x5A, 0x02];
    bytes.extend(&hello);
    b.session.send_raw(&bytes).unwrap();
    for want in [error(ErrorCode::Oversized, 40), info.clone()] {
        assert_eq!(info_of(b.reply("oversized header + hello")), want);
    }

    // A header of 30 payload bytes that takes a whole infer's first 34
    // bytes: its CRC fails there, and the infer is found in them.
    let x: Vec<i8> = (0..40).map(|i| (i * 7 - 100) as i8).collect();
    let mut bytes = vec![0xA5, 0x5A, Kind::Infer as u8, 30, 0];
    bytes.extend(frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x)));
    b.session.send_raw(&bytes).unwrap();
    assert_eq!(b.reply("false header + infer"), error(ErrorCode::Checksum, 0));
    let want = b.host_logits(&x);
    match b.reply("false header + infer") {
        Reply::Outcome { logits, .. } => assert_eq!(logits, want),
        other => panic!("expected the infer's outcome, got {other:?}"),
    }
}

/// A byte that is not the first of the sync word.
fn plain(rng: &mut impl Rng) -> u8 {
    loop {
        let b: u8 = rng.random();
        if b != SYNC[0] {
            return b;
        }
    }
}

/// An input whose frame holds the sync word's first byte only where it
/// starts (no sync word inside: a bad frame's rescan then finds nothing).
fn plain_input(rng: &mut impl Rng, len: usize) -> Vec<i8> {
    (0..len).map(|_| plain(rng) as i8).collect()
}

fn is_plain(bytes: &[u8]) -> bool {
    !bytes[1..].contains(&SYNC[0])
}

/// What one unit sent leads the board to answer.
#[derive(Debug)]
enum Want {
    Reply(Reply),
    /// An outcome with the host's logits for this input.
    Outcome(Vec<i8>),
}

#[derive(Debug, Default)]
struct Counts {
    infers: usize,
    hellos: usize,
    corrupt: usize,
    wrong_length: usize,
    oversized: usize,
    unknown_kind: usize,
    truncated: usize,
    false_syncs: usize,
    garbage_bytes: usize,
    bytes: usize,
}

impl Counts {
    fn bad(&self) -> usize {
        self.corrupt + self.wrong_length + self.oversized + self.unknown_kind + self.truncated
    }
}

/// 2,000 frames on the M3 (seeded): valid infers and hellos, and bad frames
/// (a changed byte, a wrong input length, an oversized header, an unknown
/// kind, and four frames cut short), with garbage between them that now and then
/// holds a false sync word (followed by no frame kind, by an oversized
/// length, or by a length that takes the start of the infer behind it).
/// Every valid infer is answered with the host's logits, every bad frame
/// and every false sync word with its error frame, in order, nothing else.
#[test]
fn soak_of_two_thousand_frames_with_garbage_between() {
    const UNITS: usize = 2000;
    let mut b = Board::start("qemu-mps2-an385");
    let info = b.session.hello().unwrap();
    let len = info.input_len;
    assert_eq!(len, 40);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x50a6);
    let mut c = Counts::default();
    let started = Instant::now();
    for unit in 0..UNITS {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for _ in 0..rng.random_range(0..=12) {
            bytes.push(plain(&mut rng));
        }
        // What follows the garbage. A frame cut short is answered only once
        // the board's receive timeout passed, seconds under QEMU when the
        // board polls an idle line: a few of them.
        let choice = if unit % 500 == 250 { 99 } else { rng.random_range(0..99) };
        let infer_next = choice < 55;
        // A false sync word at the garbage's end (a false header taking the
        // next frame's start only before an infer, whose 49 bytes it never
        // runs past).
        match rng.random_range(0..10) {
            0 => {
                let kind = loop {
                    let k = plain(&mut rng);
                    if Kind::from_u8(k).is_none() {
                        break k;
                    }
                };
                bytes.extend([SYNC[0], SYNC[1], kind]);
                want.push(Want::Reply(error(ErrorCode::UnknownKind, kind as u32)));
            }
            1 => {
                let length = rng.random_range(len as u16 + 1..=u16::MAX);
                if !length.to_le_bytes().contains(&SYNC[0]) {
                    bytes.extend([SYNC[0], SYNC[1], Kind::Infer as u8]);
                    bytes.extend(length.to_le_bytes());
                    want.push(Want::Reply(error(ErrorCode::Oversized, len as u32)));
                }
            }
            2 if infer_next => {
                bytes.extend([SYNC[0], SYNC[1], Kind::Infer as u8, rng.random_range(0..=len as u8), 0]);
                want.push(Want::Reply(error(ErrorCode::Checksum, 0)));
            }
            3 => {
                bytes.extend([SYNC[0], SYNC[1], SYNC[0], SYNC[1]]);
                want.push(Want::Reply(error(ErrorCode::UnknownKind, SYNC[0] as u32)));
                want.push(Want::Reply(error(ErrorCode::UnknownKind, SYNC[0] as u32)));
            }
            _ => {}
        }
        c.false_syncs += want.len();
        c.garbage_bytes += bytes.len();
        if infer_next {
            // Valid: any input, sync words inside it or not.
            let x: Vec<i8> = (0..len).map(|_| rng.random()).collect();
            bytes.extend(frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x)));
            want.push(Want::Outcome(b.host_logits(&x)));
            c.infers += 1;
        } else if choice < 60 {
            bytes.extend(frame(Kind::Hello as u8, &[]));
            want.push(Want::Reply(info_of(Reply::Info(info.clone()))));
            c.hellos += 1;
        } else {
            let (bad, reply) = loop {
                let x = plain_input(&mut rng, len);
                let (bad, reply) = match choice {
                    60..=71 => {
                        let mut f = frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x));
                        let at = rng.random_range(frame::HEADER_LEN..f.len());
                        f[at] ^= 1 << rng.random_range(0..8);
                        (f, error(ErrorCode::Checksum, 0))
                    }
                    72..=81 => {
                        let n = rng.random_range(0..len);
                        (frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x[..n])), error(ErrorCode::InputLength, 40))
                    }
                    82..=89 => {
                        let length = rng.random_range(len as u16 + 1..=u16::MAX);
                        let mut f = vec![SYNC[0], SYNC[1], Kind::Infer as u8];
                        f.extend(length.to_le_bytes());
                        (f, error(ErrorCode::Oversized, 40))
                    }
                    90..=98 => {
                        let kind = rng.random_range(0x03..0x80u8);
                        (
                            frame(kind, tinykd_runtime::as_u8(&x[..rng.random_range(0..8)])),
                            error(ErrorCode::UnknownKind, kind as u32),
                        )
                    }
                    _ => {
                        let f = frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x));
                        (f[..rng.random_range(3..f.len())].to_vec(), error(ErrorCode::Truncated, 0))
                    }
                };
                if is_plain(&bad) {
                    break (bad, reply);
                }
            };
            match reply {
                Reply::Error { code: ErrorCode::Checksum, .. } => c.corrupt += 1,
                Reply::Error { code: ErrorCode::InputLength, .. } => c.wrong_length += 1,
                Reply::Error { code: ErrorCode::Oversized, .. } => c.oversized += 1,
                Reply::Error { code: ErrorCode::UnknownKind, .. } => c.unknown_kind += 1,
                _ => c.truncated += 1,
            }
            bytes.extend(bad);
            want.push(Want::Reply(reply));
        }
        c.bytes += bytes.len();
        b.session.send_raw(&bytes).unwrap();
        for w in want {
            let got = b.reply(&format!("unit {unit}"));
            match (w, got) {
                (Want::Outcome(logits), Reply::Outcome { logits: got, class, .. }) => {
                    assert_eq!(got, logits, "unit {unit}: {bytes:02x?}");
                    assert_eq!(class as usize, tinykd_runtime::argmax(&got));
                }
                (Want::Reply(w), got) => assert_eq!(info_of(got), w, "unit {unit}: {bytes:02x?}"),
                (w, got) => panic!("unit {unit}: expected {w:?}, got {got:?} after {bytes:02x?}"),
            }
        }
    }
    // Nothing left over: the board answers the next hello at once.
    assert_eq!(info_of(Reply::Info(b.session.hello().unwrap())), info_of(Reply::Info(info)));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "protocol soak on qemu-mps2-an385: {UNITS} frames ({} valid infers, {} hellos, {} bad: {} corrupt, {} wrong \
         length, {} oversized, {} unknown kind, {} truncated), {} false sync words, {} garbage bytes, {} bytes sent, \
         {secs:.1} s",
        c.infers,
        c.hellos,
        c.bad(),
        c.corrupt,
        c.wrong_length,
        c.oversized,
        c.unknown_kind,
        c.truncated,
        c.false_syncs,
        c.garbage_bytes,
        c.bytes
    );
    assert_eq!(c.infers + c.hellos + c.bad(), UNITS);
    assert!(c.infers > 1000 && c.bad() > 700 && c.truncated == 4 && c.false_syncs > 500, "{c:?}");
}

/// Valid infer frames sent one byte every 60 ms, far below the board's
/// 0.2 s receive timeout, are all answered: no timeout fires early (as one
/// did when a clock reading fell on a SysTick wrap). About five minutes per
/// board, so not run by default:
/// `cargo test -p tinykd-emulator-tests --test protocol_soak -- --ignored --nocapture slow_bytes`.
fn slow_bytes(name: &str) {
    const FRAMES: usize = 100;
    let mut b = Board::start(name);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(60);
    let mut answered = 0;
    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..FRAMES {
        // No sync word inside: a frame cut short leaves only garbage.
        let (x, f) = loop {
            let x = plain_input(&mut rng, 40);
            let f = frame(Kind::Infer as u8, tinykd_runtime::as_u8(&x));
            if is_plain(&f) {
                break (x, f);
            }
        };
        for byte in &f {
            b.session.send_raw(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
        match b.session.next_reply() {
            Ok(Reply::Outcome { logits, .. }) if logits == b.host_logits(&x) => answered += 1,
            other => {
                failures.push(format!("frame {i}: {other:?}"));
                b.session.timeout = Duration::from_secs(2);
                while b.session.next_reply().is_ok() {}
                b.session.timeout = Duration::from_secs(20);
            }
        }
    }
    println!(
        "{name}: infer frames one byte every 60 ms: {answered}/{FRAMES} answered ({:.0} s){}",
        started.elapsed().as_secs_f64(),
        failures.iter().map(|f| format!("\n  {f}")).collect::<String>()
    );
    assert_eq!(answered, FRAMES, "{name}: {failures:?}");
}

#[test]
#[ignore = "about five minutes: frames sent one byte every 60 ms"]
fn slow_bytes_on_the_m3() {
    slow_bytes("qemu-mps2-an385");
}

#[test]
#[ignore = "about five minutes: frames sent one byte every 60 ms"]
fn slow_bytes_on_the_m0() {
    slow_bytes("qemu-microbit");
}
