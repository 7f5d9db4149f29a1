//! The int8 exporters' operator table: for each operator of the runtime,
//! how the TFLite and the QDQ ONNX writers express one of its layers. One
//! file per operator family implements [`Int8Op`]; [`int8_op`] is the
//! table. Its `match` is exhaustive, so an operator added to the runtime's
//! table does not build here until it has its entry.
//!
//! The writers own the graph plumbing (tensors, buffers, names, the model's
//! input and output); an operator appends its layer at the cursor and moves
//! the cursor to the layer's output.

mod add;
mod conv;
mod conv_add;
mod fully_connected;
mod pool;
mod softmax;

use anyhow::{Result, bail};
use tinykd_runtime::format::Op;
use tinykd_runtime::{Layer, Model};
use tinykd_tflite_schema::tflite as tfl;

use super::ChannelScales;
use super::onnx::Builder;
use super::tflite_import::{Reader, code_name};
use super::tkd::TkdLayer;
use super::{qdq, tflite};
use crate::quant::quantize_multiplier;

/// How the int8 exporters write one operator's layers.
pub(super) trait Int8Op: Sync {
    /// Appends layer `l` to the TFLite graph at `at` (the tensor it reads),
    /// moves `at` to its output's shape and returns the output tensor.
    /// `name` names a tensor of this layer (`name("conv/filter")`).
    fn tflite(
        &self,
        g: &mut tflite::Graph,
        at: &mut tflite::Cursor,
        l: &Layer,
        weights: &[i8],
        scales: &ChannelScales,
        name: &dyn Fn(&str) -> String,
    ) -> Result<i32>;

    /// Appends layer `l`, up to its fused activation, to the QDQ graph at
    /// `at`, and moves `at` to its output's shape.
    fn qdq(
        &self,
        b: &mut Builder,
        at: &mut qdq::Cursor,
        l: &Layer,
        weights: &[i8],
        scales: &ChannelScales,
    ) -> Result<()>;

    /// Layer `l`'s channel scales, its input at scale `in_scale`, after
    /// checking that TFLite derives every stored multiplier from them (it
    /// recomputes them from the float scales written in the file).
    fn tflite_scales(&self, m: &Model<'_>, l: &Layer, in_scale: f32) -> Result<ChannelScales> {
        let scales = super::channel_scales(m, l, in_scale)?;
        for (o, (q, s_w)) in scales.entries.iter().zip(&scales.weight_scales).enumerate() {
            let real = in_scale as f64 * *s_w as f64 / l.output.scale as f64;
            if quantize_multiplier(real) != (q.multiplier, q.shift) {
                bail!(
                    "channel {o}: multiplier {} · 2^{} is not what TFLite derives from the stored scales ({real:e})",
                    q.multiplier,
                    q.shift
                );
            }
        }
        Ok(scales)
    }

    /// Whether the layer can be written in a 1-D (`[N, C, L]`) graph: no
    /// window of its spans more than one row.
    fn runs_in_1d(&self, _l: &Layer) -> bool {
        true
    }

    /// The TFLite operators this family reads (`tinykd import`).
    fn imports(&self) -> &'static [tfl::BuiltinOperator] {
        &[]
    }

    /// One of [`Int8Op::imports`]' operators as a layer record: its tensors
    /// as the runtime holds them and its requantization as TFLite Micro
    /// derives it.
    fn import(&self, _r: &Reader<'_>, _op: &tfl::Operator, code: i32) -> Result<TkdLayer> {
        bail!("{} has no importer", code_name(code))
    }

    /// Whether a model starting with this operator takes a flat `[1, N]`
    /// TFLite input rather than an NHWC map.
    fn takes_flat_input(&self) -> bool {
        false
    }
}

/// Every family, for the importer's lookup by TFLite operator.
const FAMILIES: [&dyn Int8Op; 8] = [
    &fully_connected::FullyConnected,
    &conv::Convolution { depthwise: false },
    &conv::Convolution { depthwise: true },
    &pool::Pool::Max,
    &pool::Pool::Average,
    &pool::Pool::GlobalAverage,
    &softmax::Softmax,
    &add::Add,
];

/// The family that imports TFLite operator `code`.
pub(super) fn importer(code: i32) -> Option<&'static dyn Int8Op> {
    FAMILIES.into_iter().find(|f| f.imports().iter().any(|c| *c as i32 == code))
}

/// The table: each runtime operator's writers.
pub(super) fn int8_op(op: Op) -> &'static dyn Int8Op {
    match op {
        Op::FullyConnected => &fully_connected::FullyConnected,
        Op::Conv2d => &conv::Convolution { depthwise: false },
        Op::DepthwiseConv2d => &conv::Convolution { depthwise: true },
        Op::MaxPool2d => &pool::Pool::Max,
        Op::AvgPool2d => &pool::Pool::Average,
        Op::GlobalAvgPool => &pool::Pool::GlobalAverage,
        Op::Softmax => &softmax::Softmax,
        Op::Add => &add::Add,
        Op::ConvAdd => &conv_add::ConvAdd,
    }
}
