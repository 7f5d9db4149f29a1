//! `tinykd-runtime`: runs tinykd's int8 students on microcontrollers.
//!
//! `#![no_std]`, no allocation, no floating point in the inference path (a
//! Cortex-M0 has no FPU), no panics on any input: a `.tkd` blob is fully
//! validated by [`Model::from_bytes`], and [`Model::run`] only reads what was
//! validated. The host crate `tinykd` evaluates int8 students with this very
//! code, so host and device agree bit for bit by construction.
//!
//! Firmware built for one model runs it [`Compiled`]: the board's build
//! script turns the validated blob into a constant layer table (see
//! [`compiled`]), so the image carries no parser; both paths run each layer
//! through the same [`compiled::Step::run`].
//!
//! ```no_run
//! # fn demo(blob: &[u8], input: &[i8]) -> Result<usize, tinykd_runtime::Error> {
//! use tinykd_runtime::{argmax, Model};
//! let model = Model::from_bytes(blob)?;
//! let mut arena = [0u8; 256]; // the exporter prints `ARENA_BYTES`
//! let logits = model.run(input, &mut arena)?;
//! Ok(argmax(logits))
//! # }
//! ```
#![cfg_attr(not(test), no_std)]

#[cfg(any(test, feature = "codegen"))]
extern crate alloc;

#[cfg(feature = "codegen")]
pub mod codegen;
pub mod compiled;
pub mod error;
pub mod format;
pub mod kernels;
pub mod model;
pub mod ops;
#[cfg(any(test, feature = "codegen"))]
pub mod plan;
pub mod requant;

pub use compiled::Compiled;
pub use error::Error;
pub use model::{Identity, Layer, Model, QuantParams};

/// Views bytes as int8 values (same size and alignment; no copy).
pub fn as_i8(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}

/// Views bytes as mutable int8 values (no copy).
pub fn as_i8_mut(b: &mut [u8]) -> &mut [i8] {
    bytemuck::cast_slice_mut(b)
}

/// Views int8 values as bytes (no copy).
pub fn as_u8(v: &[i8]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[i8]) -> usize {
    // The best value kept beside its index: no indexing, no panic path.
    let mut best = (0, i8::MIN);
    for (i, &v) in logits.iter().enumerate() {
        if v > best.1 || i == 0 {
            best = (i, v);
        }
    }
    best.0
}

/// Real value of a quantized number: `scale · (q − zero_point)`.
pub fn dequantize(q: i8, params: QuantParams) -> f32 {
    params.scale * (q as i32 - params.zero_point) as f32
}

/// Quantizes a real input value: `round(x / scale) + zero_point`, rounding
/// half away from zero, saturated to int8. Outside the int8 path (sensors
/// give real values); the host quantizes datasets with this same function.
pub fn quantize(x: f32, params: QuantParams) -> i8 {
    let v = x / params.scale;
    // `as` saturates and maps NaN to 0.
    let r = if v >= 0.0 { (v + 0.5) as i32 } else { (v - 0.5) as i32 };
    r.saturating_add(params.zero_point).clamp(-128, 127) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_the_largest() {
        assert_eq!(argmax(&[3, 9, -4, 9]), 1);
        assert_eq!(argmax(&[-128, -128, -128]), 0);
        assert_eq!(argmax(&[-128, -127]), 1);
        assert_eq!(argmax(&[127]), 0);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1, 5, 5, -3]), 1);
        assert_eq!(argmax(&[-128, -128]), 0);
    }

    #[test]
    fn quantize_rounds_half_away_and_saturates() {
        let p = QuantParams { scale: 0.5, zero_point: -10 };
        assert_eq!(quantize(1.25, p), -7); // 2.5 -> 3
        assert_eq!(quantize(-1.25, p), -13); // -2.5 -> -3
        assert_eq!(quantize(1000.0, p), 127);
        assert_eq!(quantize(-1000.0, p), -128);
        assert_eq!(quantize(f32::NAN, p), -10);
        assert_eq!(dequantize(-7, p), 1.5);
    }
}
