//! Students: the layers the firmware runs, trained in f32 on the host.
//!
//! Written by hand rather than on a general autograd crate because the set is
//! small and fixed by the firmware, and the training loop must be
//! bit-reproducible for a seed.

pub mod activation;
pub mod architectures;
pub mod batchnorm;
mod build;
pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod dropout;
pub mod flatten;
pub mod geometry;
pub mod layer;
pub mod onnx;
pub mod pool;
pub mod residual;
pub(crate) mod sgemm;
mod simd;
pub mod spec;
#[cfg(test)]
pub(crate) mod testing;
mod training;
mod transpose;

use anyhow::Result;
use rand::Rng;

pub use batchnorm::BatchNorm;
pub use conv::Conv;
pub use dense::Dense;
pub use depthwise::Depthwise;
pub use geometry::Shape;
pub use layer::{Device, Layer, LayerKind};
pub use pool::{Pool, PoolKind};
pub use spec::LayerSpec;
pub use training::Tape;

impl Layer {
    /// Trainable tensors, in a fixed order.
    pub fn params(&self) -> Vec<&Vec<f32>> {
        self.kind().params()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
        self.kind_mut().params_mut()
    }

    /// Inference forward over `n` samples.
    fn forward(&self, x: Vec<f32>, n: usize) -> Vec<f32> {
        self.kind().forward_owned(x, n)
    }
}

/// A student network with its spec and shapes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Student {
    pub spec: String,
    /// Shape of one input sample (the data's layout).
    pub input_shape: Vec<usize>,
    pub classes: usize,
    pub layers: Vec<Layer>,
    /// `[C, H, W]` input shape of every layer, then the output shape.
    pub shapes: Vec<Shape>,
}

/// `count` He-normal weights (std √(2 / fan_in)), the initialisation of
/// every dense and convolution layer. `None` when `fan_in` is 0.
pub(crate) fn he_normal(count: usize, fan_in: usize, rng: &mut impl Rng) -> Option<Vec<f32>> {
    use rand_distr::{Distribution, Normal};
    let normal = Normal::new(0.0, (2.0 / fan_in as f32).sqrt()).ok()?;
    Some((0..count).map(|_| normal.sample(rng)).collect())
}

/// Gradients: one vector per parameter tensor, layer by layer.
pub type Grads = Vec<Vec<Vec<f32>>>;

impl Student {
    /// Builds a freshly initialised student from a spec. Layers the firmware
    /// cannot run, or orderings it cannot fuse, are refused here, before any
    /// training starts.
    pub fn from_spec(spec: &str, input_shape: &[usize], classes: usize, rng: &mut impl Rng) -> Result<Student> {
        Self::build(spec, input_shape, Some(classes), rng)
    }

    /// A network whose output is whatever its last layer gives (e.g. one
    /// convolution, for the firmware's per-layer benchmark): `classes` is
    /// its output length.
    pub fn from_spec_any_output(spec: &str, input_shape: &[usize], rng: &mut impl Rng) -> Result<Student> {
        Self::build(spec, input_shape, None, rng)
    }

    /// Number of input values per sample.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Number of trainable parameters.
    pub fn param_count(&self) -> usize {
        self.layers.iter().flat_map(|l| l.params()).map(|p| p.len()).sum()
    }

    /// Inference forward pass over `n` samples; returns `n × classes` logits.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        // Only the activations a residual addition reads again are kept.
        let mut kept: Vec<Option<Vec<f32>>> = vec![None; self.layers.len() + 1];
        for l in &self.layers {
            if let Layer::Add(add) = l {
                kept[add.from] = Some(Vec::new());
            }
        }
        let mut a = x.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(k) = kept[i].as_mut() {
                k.clone_from(&a);
            }
            a = match l {
                Layer::Add(add) => add.forward_skip(a, kept[add.from].as_deref().unwrap_or_default(), n),
                l => l.forward(a, n),
            };
        }
        a
    }

    /// The input of every layer and the final output (inference mode).
    pub fn activations(&self, x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let mut acts = vec![x.to_vec()];
        for l in &self.layers {
            let last = acts[acts.len() - 1].clone();
            let next = match l {
                Layer::Add(add) => add.forward_skip(last, &acts[add.from], n),
                l => l.forward(last, n),
            };
            acts.push(next);
        }
        acts
    }

    /// Multiply-accumulates of one inference (dense, conv and depthwise layers).
    pub fn macs_per_sample(&self) -> usize {
        self.layers.iter().map(|l| l.kind().macs()).sum()
    }

    /// Zeroed gradient buffers shaped like the parameters.
    pub fn zero_grads(&self) -> Grads {
        self.layers.iter().map(|l| l.params().iter().map(|p| vec![0.0; p.len()]).collect()).collect()
    }

    /// Whether each parameter tensor takes weight decay (same nesting as `Grads`).
    pub fn decay_mask(&self) -> Vec<Vec<bool>> {
        self.layers.iter().map(|l| (0..l.params().len()).map(|i| l.kind().decays(i)).collect()).collect()
    }

    /// The dense layers, mutably (tests).
    pub fn dense_layers_mut(&mut self) -> impl Iterator<Item = &mut Dense> {
        self.layers.iter_mut().filter_map(|l| if let Layer::Dense(d) = l { Some(d) } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters once BatchNorm is folded (each BN holds 2 per channel).
    fn folded_params(s: &Student) -> usize {
        let bn: usize = s
            .layers
            .iter()
            .filter_map(|l| if let Layer::BatchNorm(b) = l { Some(b.params()[0].len() * 2) } else { None })
            .sum();
        s.param_count() - bn
    }

    #[test]
    fn named_architectures_build_with_the_task_s_class_layer() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // MLPerf Tiny's KWS DS-CNN: 49×10 MFCCs, 12 classes; 22,604
        // parameters once BatchNorm is folded (each BN holds 2 per channel).
        let s = Student::from_spec("ds-cnn-s", &[1, 49, 10], 12, &mut rng).unwrap();
        assert_eq!(s.shapes[1], [64, 25, 5]);
        assert_eq!(folded_params(&s), 22_604);
        assert!(
            s.spec.starts_with("conv2d(64,k10x4,s2) bn relu dwconv2d(k3)") && s.spec.ends_with("gap dense(12)"),
            "{}",
            s.spec
        );
        // The spec it keeps builds the same student.
        let again = Student::from_spec(&s.spec, &[1, 49, 10], 12, &mut rng).unwrap();
        assert_eq!(again.shapes, s.shapes);
        // MobileNetV1 0.25 at 96×96×3 (MLPerf Tiny's VWW: 210,850 parameters folded).
        let m = Student::from_spec("mobilenet-v1(0.25)", &[3, 96, 96], 2, &mut rng).unwrap();
        assert_eq!(folded_params(&m), 210_850);
        assert_eq!(m.shapes[m.shapes.len() - 3], [256, 3, 3]);
        // MLPerf Tiny's ResNet-8 at 32×32×3: 77,706 parameters folded
        // (Keras counts 78,666 with BatchNorm's four per channel).
        let r = Student::from_spec("resnet8", &[3, 32, 32], 10, &mut rng).unwrap();
        assert_eq!(folded_params(&r), 77_706);
        assert_eq!(r.shapes[r.shapes.len() - 3], [64, 8, 8]);
        let projections = r.layers.iter().filter(|l| matches!(l, Layer::Add(a) if a.projection.is_some())).count();
        assert_eq!(projections, 2);
        // Any input size; 1-D input is refused naming the layer.
        Student::from_spec("mobilenet-v1(0.5)", &[1, 32, 32], 4, &mut rng).unwrap();
        let err = format!("{:#}", Student::from_spec("ds-cnn-s", &[1, 40], 10, &mut rng).unwrap_err());
        assert!(err.contains("conv2d needs 2-D input"), "{err}");
    }
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn counts_multiply_accumulates() {
        // conv: 4 out × 5 positions × (2 in × 3 taps) = 120; dwconv: 4 × 5 × 3 = 60; dense: 20 × 3 = 60.
        let s = Student::from_spec("conv1d(4,k3,s2) relu dwconv1d(k3) relu flatten dense(3)", &[2, 10], 3, &mut rng())
            .unwrap();
        assert_eq!(s.macs_per_sample(), 120 + 60 + 60);
    }

    #[test]
    fn refuses_what_the_firmware_cannot_run() {
        let e = format!("{:#}", Student::from_spec("conv2d(8,k3) relu dense(10)", &[40], 10, &mut rng()).unwrap_err());
        assert!(e.contains("needs 2-D input"), "{e}");
        let e =
            format!("{:#}", Student::from_spec("conv1d(8,k9,valid) dense(10)", &[1, 5], 10, &mut rng()).unwrap_err());
        assert!(e.contains("does not fit"), "{e}");
        let e = format!(
            "{:#}",
            Student::from_spec("conv1d(8,k3) maxpool(2) relu dense(10)", &[40], 10, &mut rng()).unwrap_err()
        );
        assert!(e.contains("must directly follow"), "{e}");
        let e = format!("{:#}", Student::from_spec("gap bn dense(10)", &[40], 10, &mut rng()).unwrap_err());
        assert!(e.contains("bn must directly follow"), "{e}");
        let e = format!("{:#}", Student::from_spec("relu dense(10)", &[40], 10, &mut rng()).unwrap_err());
        assert!(e.contains("must directly follow"), "{e}");
        let e = format!("{:#}", Student::from_spec("dense(32) relu dense(5)", &[40], 10, &mut rng()).unwrap_err());
        assert!(e.contains("10 classes"), "{e}");
    }

    #[test]
    fn whole_network_gradient_matches_finite_differences() {
        let specs = [
            ("dense(6) relu dense(5) relu6 dense(3)", vec![4]),
            ("conv1d(4,k3,s2) relu maxpool(2) dwconv1d(k3) relu6 gap dense(3)", vec![1, 20]),
            ("conv2d(3,k3) relu avgpool(2) flatten dense(3)", vec![2, 6, 6]),
            // Residual blocks: an identity shortcut, and a strided projection.
            ("conv1d(4,k3) relu res(conv1d(4,k3) relu conv1d(4,k3)) relu gap dense(3)", vec![1, 12]),
            ("conv2d(3,k3) relu res(conv2d(5,k3,s2) relu6 conv2d(5,k3)) flatten dense(3)", vec![2, 6, 6]),
        ];
        for (spec, shape) in specs {
            let mut s = Student::from_spec(spec, &shape, 3, &mut rng()).unwrap();
            // Non-zero biases keep pre-activations off the ReLU kinks.
            for l in &mut s.layers {
                if let Some(b) = l.params_mut().into_iter().nth(1) {
                    b.iter_mut().enumerate().for_each(|(i, v)| *v += 0.05 + 0.01 * i as f32);
                }
            }
            let n = 3;
            let len: usize = shape.iter().product();
            let x: Vec<f32> = (0..n * len).map(|i| ((i * 13 % 9) as f32 - 4.0) / 2.0 + i as f32 * 1e-3).collect();
            let w: Vec<f32> = (0..n * 3).map(|i| ((i * 3 % 5) as f32 - 2.0) / 2.0).collect();
            let loss = |s: &Student| -> f64 { s.forward(&x, n).iter().zip(&w).map(|(a, b)| (*a * *b) as f64).sum() };
            let (_, tape) = s.clone().forward_train(&x, n, &mut rng());
            let mut g = s.zero_grads();
            s.backward(&tape, w.clone(), n, &mut g);
            let h = 1e-3f32;
            for (li, gl) in g.iter().enumerate() {
                for (pi, gp) in gl.iter().enumerate() {
                    for (i, analytic) in gp.iter().enumerate() {
                        let bump = |delta: f32| {
                            let mut c = s.clone();
                            c.layers[li].params_mut()[pi][i] += delta;
                            loss(&c)
                        };
                        let num = (bump(h) - bump(-h)) / (2.0 * h as f64);
                        assert!(
                            (num - *analytic as f64).abs() < 2e-2 * (1.0 + num.abs()),
                            "{spec}: layer {li} param {pi}[{i}]: {num} vs {analytic}"
                        );
                    }
                }
            }
        }
    }

    /// Through residual blocks with BatchNorm in their bodies (training mode:
    /// batch statistics), the gradient of every parameter matches finite
    /// differences of the training forward pass.
    #[test]
    fn residual_gradient_with_batch_norm_matches_finite_differences() {
        // Each `bn relu` (and `bn relu6`) trains fused: the activation's
        // backward pass reads its output.
        let spec = "conv2d(3,k3) bn relu6 res(conv2d(4,k3,s2) bn relu conv2d(4,k3) bn) relu \
                    res(conv2d(4,k3) bn relu conv2d(4,k3) bn) relu gap dense(3)";
        let mut s = Student::from_spec(spec, &[2, 5, 5], 3, &mut rng()).unwrap();
        assert_eq!(s.layers.iter().filter(|l| matches!(l, Layer::Add(a) if a.projection.is_some())).count(), 1);
        for l in &mut s.layers {
            if let Some(b) = l.params_mut().into_iter().nth(1) {
                b.iter_mut().enumerate().for_each(|(i, v)| *v += 0.05 + 0.01 * i as f32);
            }
        }
        let n = 4;
        let x: Vec<f32> = (0..n * 50).map(|i| ((i * 13 % 9) as f32 - 4.0) / 2.0 + i as f32 * 1e-3).collect();
        let w: Vec<f32> = (0..n * 3).map(|i| ((i * 3 % 5) as f32 - 2.0) / 2.0).collect();
        let loss = |s: &Student| -> f64 {
            let (y, _) = s.forward_train_shared(&x, n, &mut rng());
            y.iter().zip(&w).map(|(a, b)| (*a * *b) as f64).sum()
        };
        let (_, tape) = s.forward_train_shared(&x, n, &mut rng());
        let mut g = s.zero_grads();
        s.backward(&tape, w.clone(), n, &mut g);
        let h = 1e-3f32;
        let mut checked = 0;
        for (li, gl) in g.iter().enumerate() {
            for (pi, gp) in gl.iter().enumerate() {
                for (i, analytic) in gp.iter().enumerate().step_by(3) {
                    let bump = |delta: f32| {
                        let mut c = s.clone();
                        c.layers[li].params_mut()[pi][i] += delta;
                        loss(&c)
                    };
                    let num = (bump(h) - bump(-h)) / (2.0 * h as f64);
                    assert!(
                        (num - *analytic as f64).abs() < 3e-2 * (1.0 + num.abs()),
                        "layer {li} ({:?}) param {pi}[{i}]: {num} vs {analytic}",
                        s.layers[li].kind().device()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn residual_blocks_whose_branches_cannot_be_added_are_one_line_errors() {
        let err =
            |spec: &str, shape: &[usize]| format!("{:#}", Student::from_spec(spec, shape, 3, &mut rng()).unwrap_err());
        // A VALID window shrinks the body's map by 2; the projection cannot.
        let e = err("conv2d(4,k3) res(conv2d(8,k3,valid) bn) relu gap dense(3)", &[1, 8, 8]);
        assert!(e.contains("cannot add its input [C, H, W] = [4, 8, 8] to its output [8, 6, 6]"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = err("res(bn relu) dense(3)", &[1, 4, 4]);
        assert!(e.contains("bn must directly follow"), "{e}");
        let e = err("conv2d(4,k3) res(maxpool(2)) gap dense(3)", &[1, 4, 4]);
        assert!(e.contains("nothing to add its input to"), "{e}");
        let e = err("conv2d(4,k3) res(conv2d(4,k3)) bn dense(3)", &[1, 4, 4]);
        assert!(e.contains("bn must directly follow"), "{e}");
        // An activation after the block fuses into its addition.
        Student::from_spec("conv2d(4,k3) res(conv2d(4,k3) bn) relu6 gap dense(3)", &[1, 4, 4], 3, &mut rng()).unwrap();
    }

    #[test]
    fn dropout_is_identity_at_inference_and_masks_in_training() {
        let mut s = Student::from_spec("dense(50) dropout(0.5) dense(2)", &[3], 2, &mut rng()).unwrap();
        let x = [1.0, 2.0, 3.0];
        assert_eq!(s.forward(&x, 1), s.forward(&x, 1));
        let (_, tape) = s.forward_train(&x, 1, &mut rng());
        let layer::Saved::Mask(m) = &tape.saved[1] else { panic!("dropout records its mask") };
        assert!(m.iter().all(|v| *v == 0.0 || *v == 2.0));
        assert!(m.contains(&0.0) && m.contains(&2.0));
    }
}
