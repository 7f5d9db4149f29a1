//! `SOFTMAX` / `Softmax` over the last axis (the channels). The record's
//! one weight scale is β; TFLite Micro recomputes the multiplier, shift and
//! `diff_min` from β and the input scale, so they are checked against
//! what it derives.

use anyhow::{Result, bail};
use tinykd_runtime::{Layer, Model};
use tinykd_tflite_schema::tflite as tfl;

use super::Int8Op;
use crate::export::onnx::{Builder, attr_int};
use crate::export::tflite_import::{Reader, io};
use crate::export::tkd::TkdLayer;
use crate::export::{ChannelScales, channel_scales, qdq, tflite};

pub(super) struct Softmax;

impl Int8Op for Softmax {
    fn tflite(
        &self,
        g: &mut tflite::Graph,
        at: &mut tflite::Cursor,
        l: &Layer,
        _: &[i8],
        s: &ChannelScales,
        name: &dyn Fn(&str) -> String,
    ) -> Result<i32> {
        let out = g.activation(name("softmax"), &at.shape, l.output)?;
        let beta = s.weight_scales.first().copied().unwrap_or(1.0);
        let options = tfl::BuiltinOptions::SoftmaxOptions(Box::new(tfl::SoftmaxOptions { beta }));
        g.op(tfl::BuiltinOperator::Softmax, 2, vec![at.tensor], out, options);
        Ok(out)
    }

    /// ONNX's `Softmax` on the dequantized input, quantized back at 1/256:
    /// float arithmetic, so an output can land a step from the device's
    /// fixed-point one (see the QDQ writer's module doc).
    fn qdq(&self, b: &mut Builder, _: &mut qdq::Cursor, _: &Layer, _: &[i8], _: &ChannelScales) -> Result<()> {
        b.op("Softmax", &[], vec![attr_int("axis", 1)]);
        Ok(())
    }

    fn imports(&self) -> &'static [tfl::BuiltinOperator] {
        &[tfl::BuiltinOperator::Softmax]
    }

    /// Over the last axis, at the file's β; the output must be TFLite's
    /// (1/256, −128), which TFLite Micro requires too.
    fn import(&self, r: &Reader<'_>, op: &tfl::Operator, _: i32) -> Result<TkdLayer> {
        let (ins, outs) = io(op);
        let ([x, ..], [y]) = (ins, outs) else { bail!("needs an input and one output") };
        let Some(tfl::BuiltinOptions::SoftmaxOptions(o)) = &op.builtin_options else { bail!("has no softmax options") };
        let shape = r.shape(*x)?;
        let (len, depth) = (shape.iter().product::<usize>(), shape.last().copied().unwrap_or(0));
        let (in_q, out_q) = (r.activation(*x)?, r.activation(*y)?);
        if out_q.zero_point != -128 || (out_q.scale - 1.0 / 256.0).abs() > 1e-3 / 256.0 {
            bail!("output quantization (scale {}, zero point {}) is not (1/256, −128)", out_q.scale, out_q.zero_point);
        }
        crate::quant::softmax_layer(in_q, len, depth, o.beta as f64)
    }

    fn tflite_scales(&self, m: &Model<'_>, l: &Layer, in_scale: f32) -> Result<ChannelScales> {
        let scales = channel_scales(m, l, in_scale)?;
        let (Some(stored), Some(&beta)) = (scales.entries.first(), scales.weight_scales.first()) else {
            bail!("the softmax has no parameters");
        };
        let derived = crate::quant::softmax_params(in_scale, beta as f64)?;
        if derived != *stored {
            bail!(
                "softmax parameters (multiplier {} · 2^{}, diff_min {}) are not what TFLite derives from β = {beta} at \
                 input scale {in_scale} ({} · 2^{}, {})",
                stored.multiplier,
                stored.shift,
                stored.bias,
                derived.multiplier,
                derived.shift,
                derived.bias
            );
        }
        if l.output.scale != 1.0 / 256.0 || l.output.zero_point != -128 {
            bail!(
                "softmax output quantization (scale {}, zero point {}) is not TFLite's (1/256, −128)",
                l.output.scale,
                l.output.zero_point
            );
        }
        Ok(scales)
    }
}
