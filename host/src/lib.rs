//! tinykd: knowledge distillation for microcontrollers.
//!
//! Pipeline stages, one module each: [`teacher`] (ONNX teachers through
//! onnxruntime or tract), [`data`] (datasets), [`student`] (firmware-shaped
//! layers), [`distill`] (losses and training), [`quant`] (int8 to the TFLite
//! spec), [`export`] (`.tkd` blobs), [`device`] (firmware on emulated and real boards).
//! [`pipeline`] strings them together the way the CLI does.

pub mod bench;
pub mod children;
pub mod cli;
pub mod data;
pub mod device;
pub mod distill;
pub mod export;
pub mod failure;
pub mod inspect;
pub mod int8;
pub mod pipeline;
pub mod progress;
pub mod quant;
pub mod report;
pub mod student;
pub mod teacher;
pub mod util;
