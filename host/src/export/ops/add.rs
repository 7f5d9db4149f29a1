//! `ADD` / `Add`: element-wise int8 addition of two tensors of one shape
//! (residual connections). The record's weight scales are the two input
//! scales and the output scale, from which TFLite derives the multipliers
//! again; they are checked against the stored ones.

use anyhow::{Result, bail};
use tinykd_runtime::{Layer, Model, QuantParams};
use tinykd_tflite_schema::tflite as tfl;

use super::Int8Op;
use crate::export::onnx::Builder;
use crate::export::tflite_import::{Reader, activation, io};
use crate::export::tkd::TkdLayer;
use crate::export::{ChannelScales, channel_scales, qdq, tflite};

pub(super) struct Add;

impl Int8Op for Add {
    fn tflite(
        &self,
        g: &mut tflite::Graph,
        at: &mut tflite::Cursor,
        l: &Layer,
        _: &[i8],
        _: &ChannelScales,
        name: &dyn Fn(&str) -> String,
    ) -> Result<i32> {
        let Some(second) = at.second else { bail!("the addition has no second input") };
        let out = g.activation(name("add"), &at.shape, l.output)?;
        let options = tfl::BuiltinOptions::AddOptions(Box::new(tfl::AddOptions {
            fused_activation_function: tflite::fused(l.activation),
            ..Default::default()
        }));
        g.op(tfl::BuiltinOperator::Add, 1, vec![at.tensor, second], out, options);
        Ok(out)
    }

    /// Both inputs leave their Q/DQ pairs as real values; their float sum
    /// is quantized after the fused activation.
    fn qdq(&self, b: &mut Builder, at: &mut qdq::Cursor, _: &Layer, _: &[i8], _: &ChannelScales) -> Result<()> {
        let Some(second) = at.second.take() else { bail!("the addition has no second input") };
        b.op("Add", &[second], vec![]);
        Ok(())
    }

    fn tflite_scales(&self, m: &Model<'_>, l: &Layer, in_scale: f32) -> Result<ChannelScales> {
        let scales = channel_scales(m, l, in_scale)?;
        let ([a, b, _], [sa, sb, so]) = (scales.entries.as_slice(), scales.weight_scales.as_slice()) else {
            bail!("the addition does not have three channel entries");
        };
        let q = |scale: f32, zero_point: i32| QuantParams { scale, zero_point };
        let derived = crate::quant::add_entries(q(*sa, a.bias), q(*sb, b.bias), q(*so, l.output.zero_point))?;
        if derived.as_slice() != scales.entries.as_slice() || *so != l.output.scale {
            bail!("the addition's multipliers are not what TFLite derives from its scales ({sa}, {sb} → {so})");
        }
        Ok(scales)
    }

    fn imports(&self) -> &'static [tfl::BuiltinOperator] {
        &[tfl::BuiltinOperator::Add]
    }

    /// Two inputs of one shape (no broadcasting), int8 output.
    fn import(&self, r: &Reader<'_>, op: &tfl::Operator, _: i32) -> Result<TkdLayer> {
        let (ins, outs) = io(op);
        let ([x, z], [y]) = (ins, outs) else { bail!("needs two inputs and one output") };
        let (sx, sz, sy) = (r.shape(*x)?, r.shape(*z)?, r.shape(*y)?);
        if sx != sz || sx != sy {
            bail!("adds tensors of shapes {sx:?} and {sz:?} into {sy:?}: tinykd adds tensors of one shape");
        }
        let fused = match &op.builtin_options {
            Some(tfl::BuiltinOptions::AddOptions(o)) => o.fused_activation_function,
            None => tfl::ActivationFunctionType::None,
            _ => bail!("has options that are not ADD's"),
        };
        let (qx, qz, qy) = (r.activation(*x)?, r.activation(*z)?, r.activation(*y)?);
        let activation = activation(fused)?;
        let len = sy.iter().product();
        crate::quant::add_layer(qx, qz, qy, len, activation, tflite::tflite_clamp(activation, qy))
    }
}
