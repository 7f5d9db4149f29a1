//! Distillation: losses and the training loop.

pub mod loss;
pub mod trainer;

pub use loss::{LossConfig, LossKind};
pub use trainer::{TrainConfig, TrainReport, TrainSet, ValSet, train};
