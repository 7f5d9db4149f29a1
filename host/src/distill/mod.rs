//! Distillation: losses and the training loop.

pub mod augment;
pub mod loss;
pub mod trainer;

pub use augment::Augment;
pub use loss::{LossConfig, LossKind};
pub use trainer::{Optimizer, Schedule, TrainConfig, TrainReport, TrainSet, ValSet, train};
