#![allow(clippy::unwrap_used)]
//! The TFLite export runs in TensorFlow Lite Micro's own interpreter (the
//! `tflite-micro` wheel, through scripts/tflm_run.py) with int8 outputs
//! identical to tinykd-runtime's, byte for byte, on every sample: single
//! layers of every kind on random inputs, and whole students (1-D CNN, MLP,
//! 2-D CNNs with depthwise and both pools) on their data's test split.
//!
//! `TINYKD_SKIP_TFLM=1` skips it on a machine without the wheel;
//! `TINYKD_PYTHON` names the interpreter (default `python3`).

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use tinykd::export::{Format, export};
use tinykd::quant::WeightScales;
use tinykd::student::{Layer, Student};

/// Exports `blob` to TFLite, runs the quantized inputs `q` (n samples,
/// device layout) through TFLM and through the runtime, and returns the
/// number of samples whose int8 outputs are identical, and the file size.
fn tflm_agreement(name: &str, blob: &[u8], q: &[i8], n: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let tkd = dir.path().join(format!("{name}.tkd"));
    std::fs::write(&tkd, blob).unwrap();
    let tflite = dir.path().join(format!("{name}.tflite"));
    export(&tkd, Format::Tflite, &tflite).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let inputs = dir.path().join("inputs.npy");
    write_npy_i8(&inputs, q, n);
    let outputs = dir.path().join("outputs.npy");
    let run = std::process::Command::new(python())
        .arg(repo().join("scripts/tflm_run.py"))
        .args([&tflite, &inputs, &outputs])
        .output()
        .expect("run python3");
    assert!(
        run.status.success(),
        "{name}: TFLite Micro failed (install the tflite-micro wheel or set TINYKD_SKIP_TFLM=1): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tflm: Vec<i8> = npyz::NpyFile::new(std::fs::File::open(&outputs).unwrap()).unwrap().into_vec().unwrap();
    let model = tinykd_runtime::Model::from_bytes(blob).unwrap();
    let (_, device) = tinykd::int8::run_quantized(&model, q, n).unwrap();
    assert_eq!(tflm.len(), device.len(), "{name}: output lengths differ");
    let row = device.len() / n;
    let same = device.chunks_exact(row).zip(tflm.chunks_exact(row)).filter(|(a, b)| a == b).count();
    let size = std::fs::metadata(&tflite).unwrap().len() as usize;
    eprintln!("{name}: TFLM identical on {same}/{n} samples ({size} B .tflite, {} B .tkd)", blob.len());
    (same, size)
}

/// A random student with non-trivial BatchNorm statistics, quantized on `x`.
fn random_blob(spec: &str, shape: &[usize], classes: Option<usize>, x: &[f32], n: usize, seed: u64) -> Vec<u8> {
    random_blob_with(spec, shape, classes, x, n, seed, WeightScales::PerChannel)
}

fn random_blob_with(
    spec: &str,
    shape: &[usize],
    classes: Option<usize>,
    x: &[f32],
    n: usize,
    seed: u64,
    g: WeightScales,
) -> Vec<u8> {
    tinykd::export::tkd::encode(&random_model(spec, shape, classes, x, n, seed, g)).unwrap()
}

fn random_model(
    spec: &str,
    shape: &[usize],
    classes: Option<usize>,
    x: &[f32],
    n: usize,
    seed: u64,
    g: WeightScales,
) -> tinykd::export::tkd::TkdModel {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut s = match classes {
        Some(c) => Student::from_spec(spec, shape, c, &mut rng).unwrap(),
        None => Student::from_spec_any_output(spec, shape, &mut rng).unwrap(),
    };
    for layer in &mut s.layers {
        if let Layer::BatchNorm(bn) = layer {
            bn.running_mean.iter_mut().for_each(|m| *m = rng.random_range(-0.5..0.5));
            bn.running_var.iter_mut().for_each(|v| *v = rng.random_range(0.5..2.0));
        }
    }
    let (q, _) = tinykd::quant::quantize_student_ranges(&s, x, n, tinykd::quant::Calibration::Mse, g.into()).unwrap();
    q
}

fn skip() -> bool {
    std::env::var_os("TINYKD_SKIP_TFLM").is_some()
}

#[test]
fn every_layer_kind_is_bit_identical_in_tflite_micro() {
    if skip() {
        return;
    }
    let cases: [(&str, &[usize]); 19] = [
        ("dense(16) relu", &[40]),
        ("dense(12) relu6 dense(7)", &[33]),
        ("conv1d(8,k5,s2) relu", &[1, 40]),
        ("conv1d(6,k3,valid) relu6", &[4, 20]),
        ("conv1d(5,k4,s2) bn relu", &[3, 17]),
        ("conv2d(6,k3,s2) relu", &[3, 9, 9]),
        ("dwconv2d(k3) relu", &[4, 8, 8]),
        ("dwconv1d(k5,s2) relu6", &[6, 21]),
        ("conv1d(4,k3) maxpool(3,s2)", &[2, 20]),
        ("conv1d(4,k3) avgpool(2)", &[2, 20]),
        ("conv2d(4,k3) avgpool(3,s1)", &[2, 8, 8]),
        ("conv2d(5,k3) gap", &[2, 6, 6]),
        // Rectangular windows and strides per axis.
        ("conv2d(6,k4x2,s2x1) relu", &[2, 9, 7]),
        ("dwconv2d(k3x1,s1x2) relu", &[4, 8, 8]),
        ("conv2d(4,k1) avgpool(3x2,s2x1) maxpool(2x3)", &[2, 9, 8]),
        // Named architectures at small widths (their features: no class layer).
        ("ds-cnn-s(0.25)", &[1, 49, 10]),
        ("mobilenet-v1(0.25)", &[3, 32, 32]),
        ("resnet8(0.5)", &[3, 32, 32]),
        // Residual blocks in 1-D, identity and projection shortcuts.
        ("conv1d(6,k3) relu res(conv1d(6,k3) bn relu conv1d(6,k3)) relu6 res(conv1d(8,k5,s2) bn)", &[2, 30]),
    ];
    for (k, (spec, shape)) in cases.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + k as u64);
        let len: usize = shape.iter().product();
        let n = 64;
        let x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-1.0..1.0)).collect();
        // Per-tensor weight scales too (written as one scale) for the
        // weighted kinds.
        let per_tensor = k < 8;
        for g in [WeightScales::PerChannel, WeightScales::PerTensor].into_iter().take(1 + per_tensor as usize) {
            let blob = random_blob_with(spec, shape, None, &x, n, k as u64, g);
            let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
            let q = tinykd::int8::quantize_inputs(&model, &x);
            let (same, _) = tflm_agreement(&format!("layer{k}-{g:?}"), &blob, &q, n);
            assert_eq!(same, n, "{spec} ({g:?}): TFLite Micro differs on {} of {n} samples", n - same);
        }
    }
}

/// The three MLPerf Tiny architectures at full width (1), with their class
/// layers, on inputs smaller than MLPerf's where the model is large
/// (TFLite Micro's reference kernels run in Python).
#[test]
fn named_architectures_at_width_one_are_bit_identical_in_tflite_micro() {
    if skip() {
        return;
    }
    let cases: [(&str, &[usize], usize, usize); 3] = [
        ("ds-cnn-s", &[1, 49, 10], 12, 32),
        ("resnet8", &[3, 32, 32], 10, 32),
        ("mobilenet-v1(1)", &[3, 32, 32], 2, 8),
    ];
    for (k, (spec, shape, classes, n)) in cases.into_iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(300 + k as u64);
        let len: usize = shape.iter().product();
        let x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let blob = random_blob_with(spec, shape, Some(classes), &x, n, k as u64, WeightScales::PerChannel);
        let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
        let q = tinykd::int8::quantize_inputs(&model, &x);
        let (same, _) = tflm_agreement(&format!("width1-{k}"), &blob, &q, n);
        assert_eq!(same, n, "{spec}: TFLite Micro differs on {} of {n} samples", n - same);
    }
}

#[test]
fn whole_students_are_bit_identical_in_tflite_micro_on_the_test_split() {
    if skip() {
        return;
    }
    let load = |name: &str| {
        tinykd::data::Dataset::load(&models().join("data").join(name), tinykd::data::LoadOptions::default()).unwrap()
    };
    let (mnist1d, digits) = (load("mnist1d.npz"), load("digits.npz"));
    let corpus = repo().join("firmware/runtime/fuzz/corpus");
    let mut students: Vec<(String, Vec<u8>, &tinykd::data::Dataset)> = Vec::new();
    for (file, data) in [("cnn1d.tkd", &mnist1d), ("mlp.tkd", &mnist1d), ("cnn2d_maxpool.tkd", &digits)] {
        students.push((file.into(), std::fs::read(corpus.join(file)).unwrap(), data));
    }
    // A 2-D CNN with a depthwise layer and both pools, calibrated on digits.
    let spec = "conv2d(8,k3) bn relu dwconv2d(k3) relu6 maxpool(2) conv2d(16,k3) relu avgpool(2,s1) gap dense(10)";
    let calib = 256.min(digits.train.n);
    let blob =
        random_blob(spec, &digits.sample_shape, Some(10), &digits.train.x[..calib * digits.sample_len()], calib, 7);
    students.push(("cnn2d_depthwise_pools".into(), blob, &digits));

    for (name, blob, data) in &students {
        let model = tinykd_runtime::Model::from_bytes(blob).unwrap();
        let q = tinykd::int8::quantize_inputs(&model, &data.test.x);
        let n = data.test.n;
        let (same, _) = tflm_agreement(name, blob, &q, n);
        assert_eq!(same, n, "{name}: TFLite Micro differs on {} of {n} test samples", n - same);
    }
}

/// A quantized student with an int8 softmax after its last layer, over
/// rows of `depth` values, at inverse temperature `beta`.
fn with_softmax(mut q: tinykd::export::tkd::TkdModel, depth: usize, beta: f64) -> Vec<u8> {
    let len = q.layers.last().unwrap().output_len;
    let softmax = tinykd::quant::softmax_layer(q.output, len, depth, beta).unwrap();
    q.output = softmax.output;
    q.layers.push(softmax);
    tinykd::export::tkd::encode(&q).unwrap()
}

#[test]
fn softmax_is_bit_identical_in_tflite_micro() {
    if skip() {
        return;
    }
    // Logits, and a feature map taken channel by channel, at several
    // scales (the calibration range) and temperatures.
    let cases: [(&str, &[usize], usize, f32, f64); 5] = [
        ("dense(16) relu dense(10)", &[40], 10, 1.0, 1.0),
        ("dense(12)", &[20], 12, 8.0, 1.0),
        ("dense(7)", &[33], 7, 0.05, 1.0),
        ("dense(10)", &[16], 10, 2.0, 0.5),
        ("conv2d(8,k3) relu", &[2, 6, 6], 8, 1.0, 1.0),
    ];
    for (k, (spec, shape, depth, range, beta)) in cases.into_iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(500 + k as u64);
        let len: usize = shape.iter().product();
        let n = 256;
        let x: Vec<f32> = (0..n * len).map(|_| rng.random_range(-range..range)).collect();
        let q = random_model(spec, shape, None, &x, n, k as u64, WeightScales::PerChannel);
        let blob = with_softmax(q, depth, beta);
        let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
        let q = tinykd::int8::quantize_inputs(&model, &x);
        let (same, _) = tflm_agreement(&format!("softmax{k}"), &blob, &q, n);
        assert_eq!(same, n, "{spec} + softmax: TFLite Micro differs on {} of {n} samples", n - same);
    }
}
