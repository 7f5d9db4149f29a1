//! Distillation: losses and the training loop.

pub mod augment;
pub mod loss;
mod memory;
pub mod optimizer;
mod pair;
pub mod record;
pub mod trainer;

pub use augment::{Augment, Mix, Views};
pub use loss::{HardLabel, LossConfig, LossKind};
pub use optimizer::{Optimizer, Schedule};
pub use record::{Checkpoint, DistillMetrics, DistillOptions, SweepRow, TrainingRecord};
pub use trainer::{CurvePoint, TrainConfig, TrainReport, TrainSet, ValSet, train};
