//! Students: the layers the firmware runs, trained in f32 on the host.
//!
//! Written by hand rather than on a general autograd crate because the set is
//! small and fixed by the firmware, and the training loop must be
//! bit-reproducible for a seed.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod dropout;
pub mod flatten;
pub mod geometry;
pub mod layer;
pub mod onnx;
pub mod pool;
pub mod spec;
#[cfg(test)]
pub(crate) mod testing;
mod training;

use anyhow::{Result, bail};
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

/// Whether an activation can follow `prev` on the device (fused into its clamp).
fn fusable(prev: Option<&Layer>) -> bool {
    prev.is_some_and(|l| matches!(l.device(), Device::Weighted | Device::Folded))
}

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

    fn build(spec: &str, input_shape: &[usize], classes: Option<usize>, rng: &mut impl Rng) -> Result<Student> {
        let parsed = spec::parse_tokens(spec)?;
        let mut specs = parsed.layers;
        // A named architecture ends in its features: the class layer is the task's.
        if let (true, Some(classes)) = (parsed.named_last, classes) {
            specs.push(LayerSpec::Dense { units: classes });
        }
        // Blocks and architectures are kept (and printed) as the layers
        // they expand to.
        let expanded = if parsed.expanded { spec::to_string(&specs) } else { spec.to_owned() };
        let spec = expanded.as_str();
        let Some(mut shape) = geometry::as_chw(input_shape) else {
            bail!("input shape {input_shape:?} is not supported: students take [L], [C, L] or [C, H, W] samples");
        };
        let mut layers: Vec<Layer> = Vec::new();
        let mut shapes = vec![shape];
        for s in &specs {
            let name = s.to_spec_string();
            let current = shape;
            let too_small = || {
                anyhow::anyhow!("student spec '{spec}': {name} does not fit its input of shape [C, H, W] = {current:?}")
            };
            let one_d = |what: &str| -> Result<()> {
                if shape[1] != 1 {
                    bail!(
                        "student spec '{spec}': {what} needs 1-D input [C, L], got [C, H, W] = {shape:?} (use the 2-D layer)"
                    );
                }
                Ok(())
            };
            // 2-D layers need 2-D samples; a 2-D map may shrink to one row
            // (MobileNet's last blocks at 32×32).
            let two_d = |what: &str| -> Result<()> {
                if input_shape.len() < 3 {
                    bail!(
                        "student spec '{spec}': {what} needs 2-D input [C, H, W], got 1-D [C, L] = [{}, {}] (use the 1-D layer)",
                        shape[0],
                        shape[2]
                    );
                }
                Ok(())
            };
            let layer = match s {
                LayerSpec::Dense { units } => Layer::Dense(Dense::new(shape.iter().product(), *units, rng)),
                LayerSpec::Conv1d { channels, kernel, stride, padding } => {
                    one_d("conv1d")?;
                    Layer::Conv(
                        Conv::new(shape, *channels, [1, *kernel], [*stride; 2], *padding, rng).ok_or_else(too_small)?,
                    )
                }
                LayerSpec::Conv2d { channels, kernel, stride, padding } => {
                    two_d("conv2d")?;
                    Layer::Conv(Conv::new(shape, *channels, *kernel, *stride, *padding, rng).ok_or_else(too_small)?)
                }
                LayerSpec::Dwconv1d { kernel, stride, padding } => {
                    one_d("dwconv1d")?;
                    Layer::Depthwise(
                        Depthwise::new(shape, [1, *kernel], [*stride; 2], *padding, rng).ok_or_else(too_small)?,
                    )
                }
                LayerSpec::Dwconv2d { kernel, stride, padding } => {
                    two_d("dwconv2d")?;
                    Layer::Depthwise(Depthwise::new(shape, *kernel, *stride, *padding, rng).ok_or_else(too_small)?)
                }
                LayerSpec::Maxpool { size, stride } | LayerSpec::Avgpool { size, stride } => {
                    let kind = if matches!(s, LayerSpec::Maxpool { .. }) { PoolKind::Max } else { PoolKind::Avg };
                    // Over 1-D input a pool's window is one row: `avgpool(5)`
                    // or `avgpool(1x5)`.
                    let (k, stride) = match (shape[1], size) {
                        (1, [h, w]) if *h == *w || *h == 1 => ([1, *w], *stride),
                        (1, _) => bail!(
                            "student spec '{spec}': {} over 1-D input [C, L] = [{}, {}] takes one size (or 1xL), got {}x{}",
                            s.to_spec_string(),
                            shape[0],
                            shape[2],
                            size[0],
                            size[1]
                        ),
                        _ => (*size, *stride),
                    };
                    Layer::Pool(Pool::new(kind, shape, k, stride, spec::Padding::Valid).ok_or_else(too_small)?)
                }
                LayerSpec::Gap => Layer::Gap(pool::Gap { shape }),
                LayerSpec::Bn => {
                    if !layers.last().is_some_and(Layer::is_weighted) {
                        bail!(
                            "student spec '{spec}': bn must directly follow dense, conv or dwconv (it is folded into it on the device)"
                        );
                    }
                    Layer::BatchNorm(BatchNorm::new(shape[0], shape[1] * shape[2]))
                }
                LayerSpec::Relu | LayerSpec::Relu6 => {
                    if !fusable(layers.last()) {
                        bail!(
                            "student spec '{spec}': {name} must directly follow dense, conv, dwconv or bn (it is fused into it on the device)"
                        );
                    }
                    if *s == LayerSpec::Relu {
                        Layer::Relu(activation::Relu {})
                    } else {
                        Layer::Relu6(activation::Relu6 {})
                    }
                }
                LayerSpec::Flatten => Layer::Flatten(flatten::Flatten {}),
                LayerSpec::Dropout { p } => Layer::Dropout(dropout::Dropout { p: *p }),
            };
            shape = layer.kind().out_shape(shape);
            if shape.contains(&0) {
                return Err(too_small());
            }
            layers.push(layer);
            shapes.push(shape);
        }
        let Some(classes) = classes else {
            let classes = shapes.last().map_or(0, |s| s.iter().product());
            return Ok(Student { spec: spec.to_owned(), input_shape: input_shape.to_vec(), classes, layers, shapes });
        };
        match layers.iter().rev().find(|l| l.device() != Device::Nothing) {
            Some(Layer::Dense(d)) if d.outputs == classes => {}
            Some(Layer::Dense(d)) => bail!(
                "student spec '{spec}': the last dense layer has {} outputs but there are {classes} classes (end with dense({classes}))",
                d.outputs
            ),
            _ => bail!("student spec '{spec}': must end with dense({classes}) producing the class logits"),
        }
        Ok(Student { spec: spec.to_owned(), input_shape: input_shape.to_vec(), classes, layers, shapes })
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
        self.layers.iter().fold(x.to_vec(), |a, l| l.forward(a, n))
    }

    /// The input of every layer and the final output (inference mode).
    pub fn activations(&self, x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let mut acts = vec![x.to_vec()];
        for l in &self.layers {
            let next = l.forward(acts[acts.len() - 1].clone(), n);
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

    #[test]
    fn named_architectures_build_with_the_task_s_class_layer() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // MLPerf Tiny's KWS DS-CNN: 49×10 MFCCs, 12 classes; 22,604
        // parameters once BatchNorm is folded (each BN holds 2 per channel).
        let s = Student::from_spec("ds-cnn-s", &[1, 49, 10], 12, &mut rng).unwrap();
        assert_eq!(s.shapes[1], [64, 25, 5]);
        let bn: usize = s
            .layers
            .iter()
            .filter_map(|l| if let Layer::BatchNorm(b) = l { Some(b.params()[0].len() * 2) } else { None })
            .sum();
        assert_eq!(s.param_count() - bn, 22_604);
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
        let bn: usize = m
            .layers
            .iter()
            .filter_map(|l| if let Layer::BatchNorm(b) = l { Some(b.params()[0].len() * 2) } else { None })
            .sum();
        assert_eq!(m.param_count() - bn, 210_850);
        assert_eq!(m.shapes[m.shapes.len() - 3], [256, 3, 3]);
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
