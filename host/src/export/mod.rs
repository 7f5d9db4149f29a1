//! Artefact writers: the `.tkd` blob (and, later, Rust source, ONNX, TFLite).

pub mod tkd;
