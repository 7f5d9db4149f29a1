//! A conv-add layer (a convolution added into another tensor in place, see
//! `tinykd_runtime::kernels::conv_add`) written as the two operators it
//! fuses: `CONV_2D` into a tensor of its own, then `ADD`.

use anyhow::{Result, bail};
use tinykd_runtime::kernels::conv_add::conv_layer;
use tinykd_runtime::{Layer, Model, QuantParams};

use super::Int8Op;
use super::add::Add;
use super::conv::Convolution;
use crate::export::onnx::Builder;
use crate::export::{ChannelScales, channel_scales, qdq, tflite};
use crate::quant::quantize_multiplier;

pub(super) struct ConvAdd;

/// The layer's convolution alone, its output quantized as the addition's
/// first input, and the channel scales of each half.
fn split(l: &Layer, s: &ChannelScales) -> Result<(Layer, ChannelScales, ChannelScales)> {
    let mut conv = conv_layer(l).map_err(|e| anyhow::anyhow!("{e}"))?;
    let out_c = conv.channel_count;
    if s.entries.len() != out_c + 3 || s.weight_scales.len() != out_c + 3 {
        bail!("the conv-add does not have its convolution's channels and three addition entries");
    }
    conv.output = QuantParams { scale: s.weight_scales[out_c], zero_point: s.entries[out_c].bias };
    let part = |r: std::ops::Range<usize>| ChannelScales {
        entries: s.entries[r.clone()].to_vec(),
        weight_scales: s.weight_scales[r.clone()].to_vec(),
        bias_scales: s.bias_scales[r].to_vec(),
    };
    Ok((conv, part(0..out_c), part(out_c..out_c + 3)))
}

impl Int8Op for ConvAdd {
    fn tflite(
        &self,
        g: &mut tflite::Graph,
        at: &mut tflite::Cursor,
        l: &Layer,
        weights: &[i8],
        s: &ChannelScales,
        name: &dyn Fn(&str) -> String,
    ) -> Result<i32> {
        let (conv, conv_scales, add_scales) = split(l, s)?;
        let second = at.second.take();
        let y = Convolution { depthwise: false }.tflite(g, at, &conv, weights, &conv_scales, name)?;
        let mut sum = tflite::Cursor { tensor: y, second, shape: at.shape.clone(), q: conv.output };
        let out = Add.tflite(g, &mut sum, l, &[], &add_scales, name)?;
        at.shape = sum.shape;
        Ok(out)
    }

    /// The convolution with its own clamp and output Q/DQ pair (the
    /// addition's first input), then the addition.
    fn qdq(&self, b: &mut Builder, at: &mut qdq::Cursor, l: &Layer, weights: &[i8], s: &ChannelScales) -> Result<()> {
        let (conv, conv_scales, add_scales) = split(l, s)?;
        Convolution { depthwise: false }.qdq(b, at, &conv, weights, &conv_scales)?;
        b.activation(conv.activation, conv.output);
        Add.qdq(b, at, l, &[], &add_scales)
    }

    /// The convolution's multipliers and clamp as TFLite derives them at
    /// its output's scale, the addition's from the three scales.
    fn tflite_scales(&self, m: &Model<'_>, l: &Layer, in_scale: f32) -> Result<ChannelScales> {
        let scales = channel_scales(m, l, in_scale)?;
        let (conv, conv_scales, add_scales) = split(l, &scales)?;
        if conv.clamp != tflite::tflite_clamp(conv.activation, conv.output) {
            bail!("the convolution's clamp is not what TFLite derives from its activation and output quantization");
        }
        for (o, (q, s_w)) in conv_scales.entries.iter().zip(&conv_scales.weight_scales).enumerate() {
            let real = in_scale as f64 * *s_w as f64 / conv.output.scale as f64;
            if quantize_multiplier(real) != (q.multiplier, q.shift) {
                bail!("channel {o}: multiplier {} · 2^{} is not what TFLite derives ({real:e})", q.multiplier, q.shift);
            }
        }
        let [sa, sb, so] = [0, 1, 2].map(|k| add_scales.weight_scales[k]);
        let [ea, eb, _] = [0, 1, 2].map(|k| add_scales.entries[k]);
        let q = |scale: f32, zero_point: i32| QuantParams { scale, zero_point };
        let derived = crate::quant::add_entries(q(sa, ea.bias), q(sb, eb.bias), q(so, l.output.zero_point))?;
        if derived.as_slice() != add_scales.entries.as_slice() || so != l.output.scale {
            bail!("the addition's multipliers are not what TFLite derives from its scales ({sa}, {sb} → {so})");
        }
        Ok(scales)
    }

    fn runs_in_1d(&self, l: &Layer) -> bool {
        l.params[0] == 1
    }
}
