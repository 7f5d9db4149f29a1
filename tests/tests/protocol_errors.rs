#![allow(clippy::unwrap_used)]
//! Bad input over the serial line: every broken frame gets an error frame
//! from the board (never a hang or a reset) and a clear message on the host;
//! a board running another model is refused.

use std::time::Duration;

use tinykd::device::{self, Reply, Session};
use tinykd_emulator_tests::make_student;
use tinykd_protocol::frame::{self, Kind};
use tinykd_protocol::message::ErrorCode;

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + frame::OVERHEAD];
    let n = frame::encode(kind, payload, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn broken_frames_get_error_frames_and_the_board_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = make_student(dir.path(), "mlp", "mnist1d.npz", "mnist1d_cnn.onnx", "dense(16) relu dense(10)", 100, false)
        .unwrap();
    let other =
        make_student(dir.path(), "other", "mnist1d.npz", "mnist1d_cnn.onnx", "dense(12) relu dense(10)", 100, false)
            .unwrap();
    let board = device::board("qemu-mps2-an385").unwrap();
    let elf = device::build_firmware(board, &s.tkd, device::FirmwareBuild::default()).unwrap();
    let (_qemu, link) = device::start_qemu(board, &elf).unwrap();
    let (mut session, info) = Session::open(link, Duration::from_secs(20)).unwrap();
    assert_eq!(info.input_len, 40);
    let good = vec![3i8; 40];
    let (_, _, want) = session.infer(&good).unwrap();

    let expect = |session: &mut Session, bytes: &[u8], code: ErrorCode, detail: u32| {
        session.send_raw(bytes).unwrap();
        match session.next_reply().unwrap() {
            Reply::Error { code: c, detail: d } => assert_eq!((c, d), (code, detail), "after {bytes:02x?}"),
            other => panic!("after {bytes:02x?}: expected {code:?}, got {other:?}"),
        }
    };
    // Truncated: half a frame, then silence (the board times the frame out).
    let full = frame(Kind::Infer as u8, &[0; 40]);
    expect(&mut session, &full[..20], ErrorCode::Truncated, 0);
    // Wrong length.
    expect(&mut session, &frame(Kind::Infer as u8, &[0; 39]), ErrorCode::InputLength, 40);
    // Garbage, then a frame whose bytes changed on the line.
    let mut corrupt = frame(Kind::Infer as u8, &[0; 40]);
    corrupt[10] ^= 0x55;
    let mut bytes = b"\x00\xff garbage \x13".to_vec();
    bytes.extend_from_slice(&corrupt);
    expect(&mut session, &bytes, ErrorCode::Checksum, 0);
    // Oversized: a header declaring more than the receive buffer.
    expect(&mut session, &[0xA5, 0x5A, 0x02, 0x00, 0x10], ErrorCode::Oversized, 40);
    // A kind the board does not serve.
    expect(&mut session, &frame(0x42, &[]), ErrorCode::UnknownKind, 0x42);

    // Still the same board, not reset: it answers the next input as before.
    let (_, _, again) = session.infer(&good).unwrap();
    assert_eq!(again, want);
    // The host's message for a wrong-length input is a sentence, not a code.
    let e = format!("{:#}", session.infer(&[0i8; 12]).unwrap_err());
    assert!(e.contains("input length does not match the model on the device") && e.contains("40"), "{e}");

    // A board that runs another model is refused before anything is compared.
    let other_bytes = std::fs::read(&other.tkd).unwrap();
    let other_model = tinykd_runtime::Model::from_bytes(&other_bytes).unwrap();
    let e = device::run_split(&mut session, &info, board, &other_model, &[0; 40], 1, None).unwrap_err();
    assert!(format!("{e:#}").contains("the board runs another model"), "{e:#}");
}

#[test]
fn a_model_too_large_for_the_board_is_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    // Two 200-channel × 40-step activations: an arena of 16,000 bytes, more
    // than the micro:bit's 16 KiB of RAM holds with a stack (its 42 KB of
    // weights would fit the flash).
    let spec = "conv1d(200,k1) relu conv1d(200,k1) relu gap dense(10)";
    let s = make_student(dir.path(), "wide", "mnist1d.npz", "mnist1d_cnn.onnx", spec, 5, false).unwrap();
    let e = tinykd::pipeline::emulate_model(
        &s.tkd,
        &s.data,
        tinykd::data::SplitName::Test,
        "qemu-microbit",
        Some(1),
        tinykd::data::ReadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(tinykd::failure::describe(&e).2, 5, "a model that does not fit is a build failure");
    let e = format!("{e:#}");
    assert!(e.contains("does not fit qemu-microbit") && e.contains("bytes of RAM, the board has 16384"), "{e}");
}
