//! `MAX_POOL_2D` and `AVERAGE_POOL_2D` / `MaxPool`, `AveragePool` and
//! `GlobalAveragePool` (the averages on the int8 values, see
//! `Builder::integer_average`). Global average pooling is an
//! `AVERAGE_POOL_2D` over the whole map in TFLite (see the TFLite writer's
//! module doc).

use anyhow::{Result, bail};
use tinykd_runtime::Layer;
use tinykd_runtime::format::Op;
use tinykd_tflite_schema::tflite as tfl;

use super::Int8Op;
use crate::export::onnx::{Builder, attr_int, window_attrs};
use crate::export::tflite_import::{Reader, activation, io, padding, strides};
use crate::export::tkd::TkdLayer;
use crate::export::{ChannelScales, qdq, tflite};
use crate::student::geometry::window2d;

pub(super) enum Pool {
    Max,
    Average,
    GlobalAverage,
}

impl Int8Op for Pool {
    fn tflite(
        &self,
        g: &mut tflite::Graph,
        at: &mut tflite::Cursor,
        l: &Layer,
        _: &[i8],
        _: &ChannelScales,
        name: &dyn Fn(&str) -> String,
    ) -> Result<i32> {
        let p = l.params.map(usize::from);
        let (ih, iw, ch) = (p[0], p[1], p[2]);
        let (ph, pw, stride, pad) = match self {
            Pool::GlobalAverage => (ih, iw, [1, 1], tfl::Padding::Valid),
            _ => (p[3], p[4], [p[5], p[8]], tflite::padding(l.params[6])),
        };
        let window = window2d([ch, ih, iw], [ph, pw], stride, tflite::pad_spec(pad)).0;
        let (code, kind) = match self {
            Pool::Max => (tfl::BuiltinOperator::MaxPool2d, "max_pool"),
            Pool::Average => (tfl::BuiltinOperator::AveragePool2d, "average_pool"),
            Pool::GlobalAverage => (tfl::BuiltinOperator::AveragePool2d, "global_average_pool"),
        };
        let options = tfl::BuiltinOptions::Pool2DOptions(Box::new(tfl::Pool2DOptions {
            padding: pad,
            stride_w: i32::try_from(stride[1])?,
            stride_h: i32::try_from(stride[0])?,
            filter_width: i32::try_from(pw)?,
            filter_height: i32::try_from(ph)?,
            fused_activation_function: tflite::fused(l.activation),
        }));
        at.shape = vec![1, window[0], window[1], ch];
        let out = g.activation(name(kind), &at.shape, l.output)?;
        g.op(code, 2, vec![at.tensor], out, options);
        Ok(out)
    }

    fn qdq(&self, b: &mut Builder, at: &mut qdq::Cursor, l: &Layer, _: &[i8], _: &ChannelScales) -> Result<()> {
        if let Pool::GlobalAverage = self {
            b.integer_average("GlobalAveragePool", vec![], at.q);
            at.chw = [at.chw[0], 1, 1];
            return Ok(());
        }
        let p = l.params.map(usize::from);
        let (ih, iw, ch, ph, pw, stride) = (p[0], p[1], p[2], p[3], p[4], [p[5], p[8]]);
        let pad = qdq::padding(l.params[6]);
        let mut attrs = window_attrs([ch, ih, iw], [ph, pw], stride, pad, at.one_d);
        if let Pool::Max = self {
            b.op("MaxPool", &[], attrs);
        } else {
            attrs.push(attr_int("count_include_pad", 0));
            b.integer_average("AveragePool", attrs, at.q);
        }
        let (out, _) = window2d([ch, ih, iw], [ph, pw], stride, pad);
        at.chw = [ch, out[0], out[1]];
        Ok(())
    }

    fn imports(&self) -> &'static [tfl::BuiltinOperator] {
        match self {
            Pool::Max => &[tfl::BuiltinOperator::MaxPool2d],
            Pool::Average => &[tfl::BuiltinOperator::AveragePool2d],
            Pool::GlobalAverage => &[],
        }
    }

    /// Input and output must share their quantization, as TFLite Micro's
    /// int8 pools assume (they do not requantize).
    fn import(&self, r: &Reader<'_>, op: &tfl::Operator, _: i32) -> Result<TkdLayer> {
        let (ins, outs) = io(op);
        let ([x, ..], [y]) = (ins, outs) else { bail!("needs an input and one output") };
        let Some(tfl::BuiltinOptions::Pool2DOptions(o)) = &op.builtin_options else { bail!("has no pool options") };
        let ([h, w, c], [oh, ow, oc]) = (r.hwc(*x)?, r.hwc(*y)?);
        let (ph, pw) = (usize::try_from(o.filter_height)?, usize::try_from(o.filter_width)?);
        let [sh, sw] = strides((o.stride_h, o.stride_w))?;
        let pad = padding(o.padding);
        let out = window2d([c, h, w], [ph, pw], [sh, sw], qdq::padding(pad)).0;
        if out != [oh, ow] || oc != c {
            bail!("output {oh}×{ow}×{oc} is not what a {ph}×{pw} window with strides {sh}×{sw} gives on {h}×{w}×{c}");
        }
        let (in_q, out_q) = (r.activation(*x)?, r.activation(*y)?);
        if in_q != out_q {
            bail!("its input and output are quantized differently (tinykd's int8 pools keep the quantization)");
        }
        let activation = activation(o.fused_activation_function)?;
        let u = |v: usize| crate::student::layer::u16p(v, "a dimension");
        Ok(TkdLayer {
            op: if let Pool::Max = self { Op::MaxPool2d } else { Op::AvgPool2d },
            activation,
            clamp: tflite::tflite_clamp(activation, out_q),
            input_len: h * w * c,
            output_len: oh * ow * c,
            params: [u(h)?, u(w)?, u(c)?, u(ph)?, u(pw)?, u(sh)?, pad, 0, u(sw)?, 0, 0, 0],
            input_zero_point: in_q.zero_point,
            output: out_q,
            weights: Vec::new(),
            channels: Vec::new(),
            weight_scales: Vec::new(),
            input: None,
            second: None,
        })
    }

    fn runs_in_1d(&self, l: &Layer) -> bool {
        matches!(self, Pool::GlobalAverage) || l.params[0] == 1
    }
}
