//! The optimisers — AdamW and SGD with momentum, both with decoupled weight
//! decay, over every parameter tensor of a student — and the learning-rate
//! schedules.

use crate::student::{Grads, Student};

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam with decoupled weight decay.
    #[default]
    Adamw,
    /// SGD with Nesterov-free momentum 0.9 and decoupled weight decay.
    Sgd,
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay to zero.
    #[default]
    Cosine,
    /// ×0.1 at 50 % and 75 % of the steps.
    Step,
    Constant,
}

/// Adam with decoupled weight decay (AdamW) over every parameter tensor.
pub(crate) struct Adam {
    m: Grads,
    v: Grads,
    decay: Vec<Vec<bool>>,
    t: i32,
}

impl Adam {
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    pub(crate) fn new(student: &Student) -> Adam {
        Adam { m: student.zero_grads(), v: student.zero_grads(), decay: student.decay_mask(), t: 0 }
    }

    pub(crate) fn step(&mut self, student: &mut Student, grads: &Grads, lr: f32, wd: f32, optimizer: Optimizer) {
        if optimizer == Optimizer::Sgd {
            return self.sgd(student, grads, lr, wd);
        }
        self.t += 1;
        let c1 = 1.0 - Self::B1.powi(self.t);
        let c2 = 1.0 - Self::B2.powi(self.t);
        for (li, layer) in student.layers.iter_mut().enumerate() {
            for (pi, w) in layer.params_mut().into_iter().enumerate() {
                let (g, m, v) = (&grads[li][pi], &mut self.m[li][pi], &mut self.v[li][pi]);
                let decay = if self.decay[li][pi] { wd } else { 0.0 };
                for i in 0..w.len() {
                    m[i] = Self::B1 * m[i] + (1.0 - Self::B1) * g[i];
                    v[i] = Self::B2 * v[i] + (1.0 - Self::B2) * g[i] * g[i];
                    let mh = m[i] / c1;
                    let vh = v[i] / c2;
                    w[i] -= lr * (mh / (vh.sqrt() + Self::EPS) + decay * w[i]);
                }
            }
        }
    }
}

impl Adam {
    /// SGD with momentum 0.9 (the first-moment buffer holds the velocity).
    fn sgd(&mut self, student: &mut Student, grads: &Grads, lr: f32, wd: f32) {
        for (li, layer) in student.layers.iter_mut().enumerate() {
            for (pi, w) in layer.params_mut().into_iter().enumerate() {
                let (g, m) = (&grads[li][pi], &mut self.m[li][pi]);
                let decay = if self.decay[li][pi] { wd } else { 0.0 };
                for i in 0..w.len() {
                    m[i] = 0.9 * m[i] + g[i];
                    w[i] -= lr * (m[i] + decay * w[i]);
                }
            }
        }
    }
}
