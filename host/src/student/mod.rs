//! Students: the layers the firmware runs, trained in f32 on the host.
//!
//! Written by hand rather than on a general autograd crate because the set is
//! small and fixed by the firmware, and the training loop must be
//! bit-reproducible for a seed.

pub mod dense;
pub mod spec;

use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::Rng;

pub use dense::Dense;
pub use spec::LayerSpec;

/// A trainable layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Layer {
    Dense(Dense),
    Relu,
    Relu6,
    Flatten,
    Dropout { p: f32 },
}

impl Layer {
    /// Output feature count for a given input feature count.
    fn output_len(&self, input: usize) -> usize {
        match self {
            Layer::Dense(d) => d.outputs,
            _ => input,
        }
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
}

/// Intermediate values a backward pass needs.
#[derive(Debug, Default)]
pub struct Tape {
    /// Input of every layer.
    inputs: Vec<Vec<f32>>,
    /// Dropout keep-masks (scaled), per layer when applicable.
    masks: Vec<Option<Vec<f32>>>,
}

impl Student {
    /// Builds a freshly initialised student from a spec. Layers the firmware
    /// cannot run, or orderings it cannot fuse, are refused here, before any
    /// training starts.
    pub fn from_spec(spec: &str, input_shape: &[usize], classes: usize, rng: &mut impl Rng) -> Result<Student> {
        let specs = spec::parse(spec)?;
        let mut layers = Vec::new();
        let mut features: usize = input_shape.iter().product();
        let mut prev_dense = false;
        for s in &specs {
            let layer = match s {
                LayerSpec::Dense { units } => Layer::Dense(Dense::new(features, *units, rng)),
                LayerSpec::Relu | LayerSpec::Relu6 => {
                    if !prev_dense {
                        bail!(
                            "student spec '{spec}': {} must directly follow a dense layer (it is fused into it on the device)",
                            s.to_spec_string()
                        );
                    }
                    if *s == LayerSpec::Relu { Layer::Relu } else { Layer::Relu6 }
                }
                LayerSpec::Flatten => Layer::Flatten,
                LayerSpec::Dropout { p } => Layer::Dropout { p: *p },
                other => bail!(
                    "student spec '{spec}': layer {} is not supported by this version of the firmware runtime \
                     (supported: dense, relu, relu6, flatten, dropout)",
                    other.to_spec_string()
                ),
            };
            prev_dense = matches!(layer, Layer::Dense(_));
            features = layer.output_len(features);
            layers.push(layer);
        }
        match layers.iter().rev().find(|l| !matches!(l, Layer::Dropout { .. } | Layer::Flatten)) {
            Some(Layer::Dense(d)) if d.outputs == classes => {}
            Some(Layer::Dense(d)) => bail!(
                "student spec '{spec}': the last dense layer has {} outputs but there are {classes} classes (end with dense({classes}))",
                d.outputs
            ),
            _ => bail!("student spec '{spec}': must end with dense({classes}) producing the class logits"),
        }
        Ok(Student { spec: spec.to_owned(), input_shape: input_shape.to_vec(), classes, layers })
    }

    /// Number of input values per sample.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Number of trainable parameters.
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|l| if let Layer::Dense(d) = l { d.param_count() } else { 0 }).sum()
    }

    /// Inference forward pass over `n` samples; returns `n × classes` logits.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut a = x.to_vec();
        for l in &self.layers {
            a = match l {
                Layer::Dense(d) => d.forward(&a, n),
                Layer::Relu => a.into_iter().map(|v| v.max(0.0)).collect(),
                Layer::Relu6 => a.into_iter().map(|v| v.clamp(0.0, 6.0)).collect(),
                Layer::Flatten | Layer::Dropout { .. } => a,
            };
        }
        a
    }

    /// Outputs of every fused block (dense + its activation) for calibration:
    /// one vector per dense layer, post-activation.
    pub fn block_outputs(&self, x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let mut outs: Vec<Vec<f32>> = Vec::new();
        let mut a = x.to_vec();
        for l in &self.layers {
            a = match l {
                Layer::Dense(d) => {
                    let y = d.forward(&a, n);
                    outs.push(y.clone());
                    y
                }
                Layer::Relu => a.into_iter().map(|v| v.max(0.0)).collect(),
                Layer::Relu6 => a.into_iter().map(|v| v.clamp(0.0, 6.0)).collect(),
                Layer::Flatten | Layer::Dropout { .. } => a,
            };
            if matches!(l, Layer::Relu | Layer::Relu6) {
                if let Some(last) = outs.last_mut() {
                    last.clone_from(&a);
                }
            }
        }
        outs
    }

    /// Training forward pass (dropout active); records what backward needs.
    pub fn forward_train(&self, x: &[f32], n: usize, rng: &mut impl Rng) -> (Vec<f32>, Tape) {
        let mut tape = Tape::default();
        let mut a = x.to_vec();
        for l in &self.layers {
            tape.inputs.push(a.clone());
            let mut mask = None;
            a = match l {
                Layer::Dense(d) => d.forward(&a, n),
                Layer::Relu => a.into_iter().map(|v| v.max(0.0)).collect(),
                Layer::Relu6 => a.into_iter().map(|v| v.clamp(0.0, 6.0)).collect(),
                Layer::Flatten => a,
                Layer::Dropout { p } => {
                    let keep = 1.0 - p;
                    let m: Vec<f32> =
                        (0..a.len()).map(|_| if rng.random::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
                    let out = a.iter().zip(&m).map(|(v, k)| v * k).collect();
                    mask = Some(m);
                    out
                }
            };
            tape.masks.push(mask);
        }
        (a, tape)
    }

    /// Backward pass from `dlogits`; accumulates into `grads` (one `Dense`
    /// per dense layer, in order).
    pub fn backward(&self, tape: &Tape, dlogits: Vec<f32>, n: usize, grads: &mut [Dense]) {
        let mut d = dlogits;
        let mut gi = grads.len();
        for (i, l) in self.layers.iter().enumerate().rev() {
            let x = &tape.inputs[i];
            d = match l {
                Layer::Dense(dense) => {
                    gi -= 1;
                    dense.backward(x, &d, n, &mut grads[gi])
                }
                Layer::Relu => d.iter().zip(x).map(|(g, v)| if *v > 0.0 { *g } else { 0.0 }).collect(),
                Layer::Relu6 => d.iter().zip(x).map(|(g, v)| if *v > 0.0 && *v < 6.0 { *g } else { 0.0 }).collect(),
                Layer::Flatten => d,
                Layer::Dropout { .. } => match &tape.masks[i] {
                    Some(m) => d.iter().zip(m).map(|(g, k)| g * k).collect(),
                    None => d,
                },
            };
        }
    }

    /// Zeroed gradient buffers, one per dense layer.
    pub fn zero_grads(&self) -> Vec<Dense> {
        self.dense_layers().map(Dense::zeros_like).collect()
    }

    /// The dense layers, in order.
    pub fn dense_layers(&self) -> impl Iterator<Item = &Dense> {
        self.layers.iter().filter_map(|l| if let Layer::Dense(d) = l { Some(d) } else { None })
    }

    /// The dense layers, mutably.
    pub fn dense_layers_mut(&mut self) -> impl Iterator<Item = &mut Dense> {
        self.layers.iter_mut().filter_map(|l| if let Layer::Dense(d) = l { Some(d) } else { None })
    }
}

/// A saved float student plus how it was trained.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub version: u32,
    pub student: Student,
    /// Free-form training record (settings and metrics).
    pub training: serde_json::Value,
}

const CHECKPOINT_FORMAT: &str = "tinykd-student";
const CHECKPOINT_VERSION: u32 = 1;

impl Checkpoint {
    pub fn new(student: Student, training: serde_json::Value) -> Checkpoint {
        Checkpoint { format: CHECKPOINT_FORMAT.into(), version: CHECKPOINT_VERSION, student, training }
    }

    /// Reads a checkpoint written by `save`.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
        let ck: Checkpoint = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a tinykd student checkpoint", path.display()))?;
        if ck.format != CHECKPOINT_FORMAT {
            bail!("{}: not a tinykd student checkpoint (format '{}')", path.display(), ck.format);
        }
        if ck.version > CHECKPOINT_VERSION {
            bail!(
                "{}: checkpoint version {} is newer than this tinykd reads ({CHECKPOINT_VERSION})",
                path.display(),
                ck.version
            );
        }
        Ok(ck)
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)?;
        crate::util::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn refuses_what_the_firmware_cannot_run() {
        let e = format!("{:#}", Student::from_spec("conv1d(8,k3) relu dense(10)", &[40], 10, &mut rng()).unwrap_err());
        assert!(e.contains("not supported"), "{e}");
        let e = format!("{:#}", Student::from_spec("relu dense(10)", &[40], 10, &mut rng()).unwrap_err());
        assert!(e.contains("must directly follow"), "{e}");
        let e = format!("{:#}", Student::from_spec("dense(32) relu dense(5)", &[40], 10, &mut rng()).unwrap_err());
        assert!(e.contains("10 classes"), "{e}");
    }

    #[test]
    fn whole_network_gradient_matches_finite_differences() {
        let s = Student::from_spec("dense(6) relu dense(5) relu6 dense(3)", &[4], 3, &mut rng()).unwrap();
        let n = 3;
        let x: Vec<f32> = (0..n * 4).map(|i| ((i * 13 % 9) as f32 - 4.0) / 2.0).collect();
        let w: Vec<f32> = (0..n * 3).map(|i| ((i * 3 % 5) as f32 - 2.0) / 2.0).collect();
        let loss = |s: &Student| -> f64 { s.forward(&x, n).iter().zip(&w).map(|(a, b)| (*a * *b) as f64).sum() };
        let (_, tape) = s.forward_train(&x, n, &mut rng());
        let mut g = s.zero_grads();
        s.backward(&tape, w.clone(), n, &mut g);
        let h = 1e-3f32;
        for (li, gl) in g.iter().enumerate() {
            for i in 0..gl.weight.len() {
                let bump = |delta: f32| {
                    let mut c = s.clone();
                    c.dense_layers_mut().nth(li).unwrap().weight[i] += delta;
                    loss(&c)
                };
                let num = (bump(h) - bump(-h)) / (2.0 * h as f64);
                assert!((num - gl.weight[i] as f64).abs() < 2e-2, "layer {li} w{i}: {num} vs {}", gl.weight[i]);
            }
        }
    }

    #[test]
    fn dropout_is_identity_at_inference_and_masks_in_training() {
        let s = Student::from_spec("dense(50) dropout(0.5) dense(2)", &[3], 2, &mut rng()).unwrap();
        let x = [1.0, 2.0, 3.0];
        assert_eq!(s.forward(&x, 1), s.forward(&x, 1));
        let (_, tape) = s.forward_train(&x, 1, &mut rng());
        let m = tape.masks[1].as_ref().unwrap();
        assert!(m.iter().all(|v| *v == 0.0 || *v == 2.0));
        assert!(m.contains(&0.0) && m.contains(&2.0));
    }
}
