#![allow(clippy::unwrap_used)]
//! Every emulated board runs a MNIST-1D and a digits student through the
//! board protocol over its UART, and gives the host's int8 logits bit for
//! bit over the whole test split. A missing QEMU or Rust target is a test
//! failure: CI installs them (scripts/setup.sh).

use std::sync::OnceLock;

use tinykd::data::{ReadOptions, SplitName};
use tinykd::device::{Engine, FirmwareBuild, OptLevel};
use tinykd_emulator_tests::{Student, host_accuracy, make_student};

struct Students {
    _dir: tempfile::TempDir,
    all: Vec<(Student, f64)>,
}

/// Trained once for every test in this file.
fn students() -> &'static [(Student, f64)] {
    static S: OnceLock<Students> = OnceLock::new();
    &S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mnist = make_student(
            dir.path(),
            "mnist1d-cnn",
            "mnist1d.npz",
            "mnist1d_cnn.onnx",
            "conv1d(12,k5,s2) relu conv1d(16,k3,s2) relu conv1d(24,k3) relu gap dense(10)",
            4_000,
            true,
        )
        .unwrap();
        let digits = make_student(
            dir.path(),
            "digits-cnn",
            "digits.npz",
            "digits_cnn.onnx",
            "conv2d(8,k3) relu maxpool(2) conv2d(16,k3) relu gap dense(10)",
            3_000,
            false,
        )
        .unwrap();
        let all = [mnist, digits].into_iter().map(|s| {
            let host = host_accuracy(&s).unwrap();
            // Real students, not toys: the bar is what these sizes reach.
            assert!(host > 0.8, "{}: host int8 accuracy {host}", s.name);
            (s, host)
        });
        Students { all: all.collect(), _dir: dir }
    })
    .all
}

fn check(board: &str) {
    check_build(board, FirmwareBuild::default())
}

fn check_build(board: &str, build: FirmwareBuild) {
    for (s, host) in students() {
        check_student(board, build, s, *host);
    }
}

fn check_student(board: &str, build: FirmwareBuild, s: &Student, host: f64) {
    let read = ReadOptions::default();
    let r = tinykd::pipeline::emulate_model_with(&s.tkd, &s.data, SplitName::Test, board, None, read, build)
        .unwrap_or_else(|e| panic!("{board} {}: {e:#}", s.name));
    let engine = match (build.engine, build.opt_level) {
        (Some(e), _) => e.as_str(),
        (None, Some(OptLevel::S)) => "opt-level s",
        _ => "",
    };
    eprintln!(
        "{board:<20} {engine:<11} {:<12} n={} accuracy={:.4} agreement={} {}/inference={:.0} ({:.2}/MAC) flash={} ram={} \
         (static {} + stack {})",
        s.name,
        r.n,
        r.accuracy.unwrap_or(0.0),
        r.agreement,
        r.counted,
        r.instructions_per_inference,
        r.instructions_per_inference / s.macs,
        r.flash_bytes,
        r.ram_bytes,
        r.static_ram_bytes,
        r.peak_stack_bytes
    );
    assert!(r.n >= 450, "{board} {}: ran {} samples", s.name, r.n);
    assert_eq!(r.agreement, 1.0, "{board} {}: device logits differ from the host's", s.name);
    assert_eq!(r.accuracy, Some(host), "{board} {}: device accuracy differs from the host's", s.name);
    assert_eq!(r.counted, "instructions");
    assert!(r.instructions_per_inference > s.macs && r.instructions_per_inference < 60.0 * s.macs);
    assert!(r.flash_bytes as usize > r.model_bytes);
    assert!(r.peak_stack_bytes > 0 && r.ram_bytes >= r.peak_stack_bytes);
    assert_eq!(r.device.board, board);
}

#[test]
fn qemu_mps2_an385_cortex_m3() {
    check("qemu-mps2-an385");
}

/// The boards run the specialised firmware by default; the compiled table
/// through the shared kernels (`--engine compiled`, the smallest image) on
/// the M3 and the M0: the same logits as the host.
#[test]
fn compiled_engine_on_the_m3_and_the_m0() {
    check_build("qemu-mps2-an385", FirmwareBuild::engine(Some(Engine::Compiled)));
    check_build("qemu-microbit", FirmwareBuild::engine(Some(Engine::Compiled)));
}

/// Built for size (`--opt-level s`), the kernels take their compact
/// variants (`cfg(tinykd_small)`): the same logits, on the M3 and the M4.
#[test]
fn built_for_size_on_the_m3_and_the_m4() {
    let size = FirmwareBuild { engine: None, opt_level: Some(OptLevel::S) };
    check_build("qemu-mps2-an385", size);
    check_build("qemu-mps2-an386", size);
}

/// Students the other tests do not cover, on the M3 and the M4 at
/// opt-level 3 and "s": one weight scale per layer (their compiled tables
/// hold the biases and one multiplier per layer, `SharedMultiplier`), the
/// MNIST-1D student and a digits one with a 5×5 first layer on one input
/// channel (a window of 25 values not in groups of four channels, which the
/// M4's one-pixel pass at "s" reorders for SMLAD) and a depthwise layer.
/// The same logits as the host.
#[test]
fn per_tensor_weight_scales_on_the_m3_and_the_m4() {
    let dir = tempfile::tempdir().unwrap();
    let depthwise = make_student(
        dir.path(),
        "digits-dw",
        "digits.npz",
        "digits_cnn.onnx",
        "conv2d(8,k5) relu dwconv2d(k3) relu maxpool(2) conv2d(16,k3) relu gap dense(10)",
        2_000,
        false,
    )
    .unwrap();
    for s in [&students()[0].0, &depthwise] {
        let s = tinykd_emulator_tests::per_tensor(dir.path(), s).unwrap();
        check_at_both_levels(&s, &[]);
    }
}

/// `s` on the M3 and the M4 at opt-level 3 and "s", and on `more` boards
/// at opt-level 3, after checking its host accuracy is a real student's.
fn check_at_both_levels(s: &Student, more: &[&str]) {
    let host = host_accuracy(s).unwrap();
    assert!(host > 0.8, "{}: host int8 accuracy {host}", s.name);
    let size = FirmwareBuild { engine: None, opt_level: Some(OptLevel::S) };
    for board in ["qemu-mps2-an385", "qemu-mps2-an386"] {
        check_student(board, FirmwareBuild::default(), s, host);
        check_student(board, size, s, host);
    }
    for board in more {
        check_student(board, FirmwareBuild::default(), s, host);
    }
}

/// Shapes the example students do not have, on every core at opt-level 3
/// and on the M3 and the M4 at "s". A CNN: three input channels, a 5×5
/// stride-2 first layer (a 75-value window, not in groups of four
/// channels), ReLU6, depthwise, average pooling, a VALID layer, flatten. An
/// MLP whose first layer takes 429 inputs: an odd number of words (the
/// M4's two-word loop enters at its second half) and a byte after them.
/// The same logits as the host.
#[test]
fn unfamiliar_shapes_on_every_core() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rgb.npz");
    tinykd_emulator_tests::synthetic_images(&data, 3, 11, 13, 5).unwrap();
    for (name, spec) in [
        ("rgb-cnn", "conv2d(6,k5,s2) relu6 dwconv2d(k3) relu avgpool(2) conv2d(10,k3,valid) relu flatten dense(5)"),
        ("rgb-mlp", "flatten dense(24) relu dense(5)"),
    ] {
        let s = tinykd_emulator_tests::make_student_from(dir.path(), name, &data, None, spec, 600, false).unwrap();
        check_at_both_levels(&s, &["qemu-microbit", "qemu-riscv32"]);
    }
}

/// `student` quantized on 64 random calibration rows and written to
/// `path`; returns `n` random int8 inputs for it.
fn random_model(
    student: &tinykd::student::Student,
    rng: &mut impl rand::Rng,
    path: &std::path::Path,
    n: usize,
) -> Vec<i8> {
    let len = student.input_len();
    let calib: Vec<f32> = (0..64 * len).map(|_| rng.random_range(-1.0..1.0)).collect();
    let q = tinykd::quant::quantize_student(student, &calib, 64, tinykd::quant::Calibration::Minmax).unwrap();
    std::fs::write(path, tinykd::export::tkd::encode(&q).unwrap()).unwrap();
    (0..n * len).map(|_| rng.random()).collect()
}

/// A student of `spec` on samples of `shape` with random weights (from
/// `seed`), quantized and written to `path` by [`random_model`]; returns
/// `n` random int8 inputs for it.
fn random_spec_model(spec: &str, shape: &[usize], seed: u64, path: &std::path::Path, n: usize) -> Vec<i8> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let student = tinykd::student::Student::from_spec_any_output(spec, shape, &mut rng).unwrap();
    random_model(&student, &mut rng, path, n)
}

/// Rectangular windows and strides per axis (a keyword spotter's shapes
/// in small: a tall stride-2×1 convolution, a 3×1 depthwise, a 3×2
/// pool) and residual students, random weights and inputs, on the
/// Cortex-M3 and M4: the same logits as the host.
#[test]
fn rectangular_windows_on_the_m3_and_the_m4() {
    let dir = tempfile::tempdir().unwrap();
    for (k, (spec, shape)) in [
        (
            "conv2d(8,k5x2,s2x1) relu dwconv2d(k3x1) relu conv2d(8,k1) relu avgpool(3x2,s2x1) flatten dense(5)",
            &[1, 13, 6],
        ),
        // MLPerf Tiny's keyword spotter at a quarter of its width.
        ("ds-cnn-s(0.25) dense(12)", &[1, 49, 10]),
        // Its image classifier, ResNet-8, at half width: residual
        // additions, two fused into their projections.
        ("resnet8(0.5) dense(10)", &[3, 32, 32]),
    ]
    .into_iter()
    .enumerate()
    {
        let (path, n) = (dir.path().join(format!("rect{k}.tkd")), 24);
        let inputs = random_spec_model(spec, shape, 11, &path, n);
        for board in ["qemu-mps2-an385", "qemu-mps2-an386"] {
            let r = tinykd::device::emulate(tinykd::device::board(board).unwrap(), &path, &inputs, n, None).unwrap();
            assert_eq!(r.agreement, 1.0, "{spec} on {board}");
        }
    }
}

/// The three MLPerf Tiny architectures at full width, random weights
/// and inputs, on the Cortex-M4: the same logits as the host. MobileNet
/// runs at width 1 on 32×32 (3.2M weights, most of the board's 4 MiB)
/// and at MLPerf's own 0.25 on 96×96 (maps of 48×48×8 and up).
#[test]
fn mlperf_architectures_at_full_width_on_the_m4() {
    let dir = tempfile::tempdir().unwrap();
    let board = tinykd::device::board("qemu-mps2-an386").unwrap();
    for (k, (spec, shape)) in [
        ("ds-cnn-s dense(12)", &[1, 49, 10]),
        ("resnet8 dense(10)", &[3, 32, 32]),
        ("mobilenet-v1(1) dense(2)", &[3, 32, 32]),
        ("mobilenet-v1(0.25) dense(2)", &[3, 96, 96]),
    ]
    .into_iter()
    .enumerate()
    {
        let (path, n) = (dir.path().join(format!("mlperf{k}.tkd")), 8);
        let inputs = random_spec_model(spec, shape, 5, &path, n);
        let r = tinykd::device::emulate(board, &path, &inputs, n, None).unwrap();
        println!("qemu-mps2-an386 {spec} {shape:?} instructions/inference={}", r.instructions_per_inference);
        assert_eq!(r.agreement, 1.0, "{spec} {shape:?}");
    }
}

/// Windows longer than one packed run on the M4 (`kernels::conv_packed_rows`:
/// 3×3 over 16 channels, 144 values), odd width and height (the last
/// column in vertical pairs, the last row alone), random inputs, the same
/// logits as the host. Random weights take the window as one run
/// (`dot::packed::whole_runs`); with every weight of the second layer at
/// one magnitude, quantized to ±127, `Σ|w| · 255` passes 2^22 and the
/// window is summed in runs of 128 + 16.
#[test]
fn long_windows_on_the_m4() {
    use rand::SeedableRng;
    use tinykd::student::Student;
    let dir = tempfile::tempdir().unwrap();
    let spec = "conv2d(16,k3) relu conv2d(16,k3) relu gap dense(5)";
    let board = tinykd::device::board("qemu-mps2-an386").unwrap();
    for flat in [false, true] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut student = Student::from_spec_any_output(spec, &[3, 7, 9], &mut rng).unwrap();
        if flat {
            let second = student.layers.iter_mut().flat_map(|l| l.params_mut()).find(|p| p.len() == 16 * 16 * 9);
            for (i, w) in second.unwrap().iter_mut().enumerate() {
                *w = if (i * 7919) % 5 < 2 { -0.05 } else { 0.05 };
            }
        }
        let (path, n) = (dir.path().join(format!("long-{flat}.tkd")), 24);
        let inputs = random_model(&student, &mut rng, &path, n);
        let r = tinykd::device::emulate(board, &path, &inputs, n, None).unwrap();
        println!(
            "qemu-mps2-an386 long windows ({}) instructions/inference={}",
            if flat { "runs of 128 + 16" } else { "one run" },
            r.instructions_per_inference
        );
        assert_eq!(r.agreement, 1.0, "flat weights: {flat}");
    }
}

#[test]
fn qemu_mps2_an386_cortex_m4() {
    check("qemu-mps2-an386");
}

#[test]
fn qemu_mps2_an500_cortex_m7() {
    check("qemu-mps2-an500");
}

#[test]
fn qemu_lm3s6965_cortex_m3_64k_ram() {
    check("qemu-lm3s6965");
}

#[test]
fn qemu_microbit_cortex_m0_nrf51_hal() {
    check("qemu-microbit");
}

#[test]
fn qemu_netduinoplus2_stm32f405_hal() {
    check("qemu-netduinoplus2");
}

#[test]
fn qemu_riscv32_virt() {
    check("qemu-riscv32");
}

#[test]
fn real_boards_build_and_share_images_with_their_emulated_twins() {
    let s = &students()[0].0;
    for name in ["microbit", "stm32f405", "nrf52840-dk", "rp-pico"] {
        let board = tinykd::device::board(name).unwrap();
        let r = tinykd::device::flash(board, &s.tkd, true, FirmwareBuild::default())
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        eprintln!(
            "{name:<12} {} B flash ({} B model), {} B static RAM",
            r.flash_bytes, r.model_bytes, r.static_ram_bytes
        );
        assert!(!r.flashed);
        assert!(r.flash_bytes > r.model_bytes as u64 && r.flash_bytes < board.flash_bytes);
        // The micro:bit and STM32F405 images are the emulated boards' own, byte for byte.
        let twin = match name {
            "microbit" => Some("qemu-microbit"),
            "stm32f405" => Some("qemu-netduinoplus2"),
            _ => None,
        };
        if let Some(twin) = twin {
            let real = std::fs::read(&r.elf).unwrap();
            let emulated =
                tinykd::device::build_firmware(tinykd::device::board(twin).unwrap(), &s.tkd, FirmwareBuild::default())
                    .unwrap();
            assert_eq!(real, std::fs::read(emulated).unwrap(), "{name} and {twin} differ");
        }
    }
}

/// The device path has no floating point: a Cortex-M0 has no FPU, and a
/// soft-float routine in the image would mean the int8 path computes in float.
#[test]
fn the_cortex_m0_image_links_no_floating_point_routine() {
    use object::{Object, ObjectSymbol};
    for (s, _) in students() {
        let board = tinykd::device::board("qemu-microbit").unwrap();
        let elf = tinykd::device::build_firmware(board, &s.tkd, FirmwareBuild::default()).unwrap();
        let bytes = std::fs::read(&elf).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let names: Vec<String> = file.symbols().filter_map(|sym| sym.name().ok().map(str::to_owned)).collect();
        assert!(names.iter().any(|n| n.starts_with("__aeabi_")), "no runtime symbols at all: wrong file?");
        let float: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.starts_with("__aeabi_f")
                    || n.starts_with("__aeabi_d")
                    || n.contains("roundf")
                    || n.contains("__addsf3")
                    || n.contains("__mulsf3")
            })
            .collect();
        assert!(float.is_empty(), "{}: floating-point routines linked: {float:?}", s.name);
    }
}
