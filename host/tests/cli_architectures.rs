#![allow(clippy::unwrap_used)]
//! Named architectures end to end: `tinykd init` proposes MLPerf Tiny's
//! keyword-spotting DS-CNN for spectrogram-shaped samples, and `tinykd run`
//! trains it (at a quarter of its width), quantizes it with QAT, exports
//! it to TFLite and runs it on the emulated Cortex-M4, the device equal to
//! the host on every sample streamed.

mod common;

use common::{F32Array, json, stderr, tinykd, write_npz};

/// `n` samples of 1×49×10 "spectrograms": noise with a bright 3×3 patch
/// whose place is the class.
fn spectrograms(n: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut noise = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        ((state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
    };
    let (h, w) = (49, 10);
    let labels: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
    let mut x = vec![0f32; n * h * w];
    for (i, &y) in labels.iter().enumerate() {
        let img = &mut x[i * h * w..(i + 1) * h * w];
        img.iter_mut().for_each(|v| *v = noise());
        let (r0, c0) = (5 + 11 * y as usize, 2 + 2 * (y as usize % 3));
        for r in r0..r0 + 3 {
            for c in c0..c0 + 3 {
                img[r * w + c] += 2.5;
            }
        }
    }
    (x, labels)
}

#[test]
fn a_ds_cnn_is_proposed_trained_with_qat_exported_and_run_on_the_m4() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let classes = 4;
    let (xt, yt) = spectrograms(600, classes, 1);
    let (xs, ys) = spectrograms(200, classes, 2);
    write_npz(
        &d.join("kws.npz"),
        &[
            F32Array { name: "x_train", shape: vec![600, 1, 49, 10], data: xt },
            F32Array { name: "x_test", shape: vec![200, 1, 49, 10], data: xs },
        ],
        &[("y_train", yt), ("y_test", ys)],
    );
    let o = tinykd(&["init", "--data", "kws.npz", "--out", "my.toml"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(d.join("my.toml")).unwrap();
    assert!(text.contains("student = \"ds-cnn-s dense(4)\""), "{text}");

    let cfg = r#"data = "kws.npz"
teachers = []
backend = "tract"
student = "ds-cnn-s(0.25) dense(4)"
out_dir = "out"
[distill]
alpha = 0.0
steps = 300
[quantize]
qat_steps = 30
[export]
formats = ["tflite"]
[emulate]
board = "qemu-mps2-an386"
limit = 40
"#;
    std::fs::write(d.join("c.toml"), cfg).unwrap();
    let o = tinykd(&["run", "c.toml", "--json"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    let int8 = r["int8_test_accuracy"].as_f64().unwrap();
    assert!(int8 > 0.9, "int8 accuracy {int8}: {r}");
    assert_eq!(r["emulation"]["agreement"].as_f64(), Some(1.0), "{r}");
    assert!(d.join("out/student.tflite").is_file());
    // The checkpoint keeps the layers the architecture stands for.
    let ck: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/student.ckpt")).unwrap()).unwrap();
    let spec = ck["student"]["spec"].as_str().unwrap();
    assert!(spec.starts_with("conv2d(16,k10x4,s2) bn relu dwconv2d(k3) bn relu conv2d(16,k1)"), "{spec}");
}
