#![allow(clippy::unwrap_used)]
//! MLPerf Tiny's int8 reference models (`models/mlperf-tiny/`), imported
//! with `tinykd import`, on the emulated Cortex-M4 (qemu-mps2-an386): 200
//! random int8 inputs each, the device's outputs equal to the host's byte
//! for byte. The inputs are the ones `host/tests/import_tflite.rs` runs
//! through TFLite Micro's interpreter (same generator, same seed), where
//! the host's outputs equal TFLite Micro's: so the device's do too.

use std::path::Path;

use rand::{Rng, SeedableRng};
use tinykd::data::{ReadOptions, SplitName};
use tinykd::device::FirmwareBuild;
use tinykd_emulator_tests::models;

/// Writes `q` (n samples of `shape`, int8) as the real values they
/// quantize back to, with random labels below `classes`.
fn write_inputs(path: &Path, q: &[i8], n: usize, shape: &[usize], input: tinykd_runtime::QuantParams, classes: usize) {
    use npyz::WriterBuilder;
    let x: Vec<f32> = q.iter().map(|&v| input.scale * (v as i32 - input.zero_point) as f32).collect();
    let y: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
    let mut dims = vec![n as u64];
    dims.extend(shape.iter().map(|&d| d as u64));
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    for split in ["train", "test"] {
        let mut a = npz
            .array::<f32>(&format!("x_{split}"), Default::default())
            .unwrap()
            .default_dtype()
            .shape(&dims)
            .begin_nd()
            .unwrap();
        a.extend(x.iter().copied()).unwrap();
        a.finish().unwrap();
        let mut a = npz
            .array::<i64>(&format!("y_{split}"), Default::default())
            .unwrap()
            .default_dtype()
            .shape(&[n as u64])
            .begin_nd()
            .unwrap();
        a.extend(y.iter().copied()).unwrap();
        a.finish().unwrap();
    }
}

#[test]
fn mlperf_tiny_models_on_the_cortex_m4_equal_the_host() {
    let dir = tempfile::tempdir().unwrap();
    for (file, shape, classes) in [
        ("kws_ref_model.tflite", &[49usize, 10, 1][..], 12),
        ("ad01_int8.tflite", &[640][..], 640),
        ("vww_96_int8.tflite", &[96, 96, 3][..], 2),
        ("pretrainedResnet_quant.tflite", &[32, 32, 3][..], 10),
    ] {
        let blob = tinykd::export::tflite_import::import_file(&models().join("mlperf-tiny").join(file)).unwrap();
        let tkd = dir.path().join(file.replace(".tflite", ".tkd"));
        std::fs::write(&tkd, &blob).unwrap();
        let model = tinykd_runtime::Model::from_bytes(&blob).unwrap();
        let (n, len) = (200, model.input_len());
        // The inputs of host/tests/import_tflite.rs.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(len as u64);
        let q: Vec<i8> = (0..n * len).map(|_| rng.random()).collect();
        let data = dir.path().join(file.replace(".tflite", ".npz"));
        write_inputs(&data, &q, n, shape, model.input_quant(), classes);
        let r = tinykd::pipeline::emulate_model_with(
            &tkd,
            &data,
            SplitName::Test,
            "qemu-mps2-an386",
            None,
            ReadOptions::default(),
            FirmwareBuild::default(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        eprintln!(
            "{file}: n={} agreement={} instructions/inference={:.0} flash={} ram={} (arena {})",
            r.n,
            r.agreement,
            r.instructions_per_inference,
            r.flash_bytes,
            r.ram_bytes,
            model.arena_bytes()
        );
        assert_eq!(r.n, n, "{file}");
        assert_eq!(r.agreement, 1.0, "{file}: the device's outputs differ from the host's");
        assert_eq!(r.counted, "instructions");
    }
}
