//! Distillation: losses and the training loop.

pub mod augment;
pub mod loss;
mod pair;
pub mod trainer;

pub use augment::{Augment, Mix, Views};
pub use loss::{HardLabel, LossConfig, LossKind};
pub use trainer::{CurvePoint, Optimizer, Schedule, TrainConfig, TrainReport, TrainSet, ValSet, train};
