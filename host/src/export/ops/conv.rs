//! `CONV_2D` and `DEPTHWISE_CONV_2D` / `Conv` (grouped for depthwise).

use anyhow::{Result, bail};
use tinykd_runtime::Layer;
use tinykd_runtime::format::Op;
use tinykd_tflite_schema::tflite as tfl;

use super::Int8Op;
use crate::export::onnx::{Builder, attr_int, window_attrs};
use crate::export::tflite_import::{Reader, activation, channel_table, io, padding, strides};
use crate::export::tkd::TkdLayer;
use crate::export::{ChannelScales, qdq, tflite};
use crate::student::geometry::window2d;

pub(crate) struct Convolution {
    pub depthwise: bool,
}

impl Int8Op for Convolution {
    fn tflite(
        &self,
        g: &mut tflite::Graph,
        at: &mut tflite::Cursor,
        l: &Layer,
        weights: &[i8],
        s: &ChannelScales,
        name: &dyn Fn(&str) -> String,
    ) -> Result<i32> {
        let p = l.params.map(usize::from);
        let (ih, iw, ic, oc, kh, kw, stride) = (p[0], p[1], p[2], p[3], p[4], p[5], [p[6], p[8]]);
        let pad = tflite::padding(l.params[7]);
        let window = window2d([ic, ih, iw], [kh, kw], stride, tflite::pad_spec(pad)).0;
        let bias: Vec<i32> = s.entries.iter().map(|q| q.bias).collect();
        let (stride_h, stride_w) = (i32::try_from(stride[0])?, i32::try_from(stride[1])?);
        let fused = tflite::fused(l.activation);
        let (wt, code, options, kind) = if !self.depthwise {
            let wt = g.weights(name("conv/filter"), &[oc, kh, kw, ic], weights, &s.weight_scales, 0)?;
            let options = tfl::BuiltinOptions::Conv2DOptions(Box::new(tfl::Conv2DOptions {
                padding: pad,
                stride_w,
                stride_h,
                fused_activation_function: fused,
                dilation_w_factor: 1,
                dilation_h_factor: 1,
                ..Default::default()
            }));
            (wt, tfl::BuiltinOperator::Conv2d, options, "conv")
        } else {
            let wt = g.weights(name("depthwise/filter"), &[1, kh, kw, ic], weights, &s.weight_scales, 3)?;
            let options = tfl::BuiltinOptions::DepthwiseConv2DOptions(Box::new(tfl::DepthwiseConv2DOptions {
                padding: pad,
                stride_w,
                stride_h,
                depth_multiplier: 1,
                fused_activation_function: fused,
                dilation_w_factor: 1,
                dilation_h_factor: 1,
            }));
            (wt, tfl::BuiltinOperator::DepthwiseConv2d, options, "depthwise")
        };
        let bs = g.bias(name(&format!("{kind}/bias")), &bias, &s.bias_scales)?;
        at.shape = vec![1, window[0], window[1], oc];
        let out = g.activation(name(kind), &at.shape, l.output)?;
        g.op(code, 3, vec![at.tensor, wt, bs], out, options);
        Ok(out)
    }

    fn qdq(&self, b: &mut Builder, at: &mut qdq::Cursor, l: &Layer, weights: &[i8], s: &ChannelScales) -> Result<()> {
        let p = l.params.map(usize::from);
        let (ih, iw, ic, oc, kh, kw, stride) = (p[0], p[1], p[2], p[3], p[4], p[5], [p[6], p[8]]);
        let depthwise = self.depthwise;
        // Device layouts: conv [O][kh][kw][C], depthwise [kh][kw][C] → [O][C][kh][kw] / [C][1][kh][kw].
        let mut t = vec![0i8; weights.len()];
        for o in 0..oc {
            for y in 0..kh {
                for x in 0..kw {
                    if depthwise {
                        t[(o * kh + y) * kw + x] = weights[(y * kw + x) * ic + o];
                    } else {
                        for ci in 0..ic {
                            t[((o * ic + ci) * kh + y) * kw + x] = weights[((o * kh + y) * kw + x) * ic + ci];
                        }
                    }
                }
            }
        }
        let dims = [&[oc, if depthwise { 1 } else { ic }][..], &at.kernel_dims(kh, kw)].concat();
        let wt = b.weight(&dims, &t, &s.weight_scales);
        let bias: Vec<i32> = s.entries.iter().map(|q| q.bias).collect();
        let bs = b.bias(&bias, &s.bias_scales);
        let pad = qdq::padding(l.params[7]);
        let mut attrs = window_attrs([ic, ih, iw], [kh, kw], stride, pad, at.one_d);
        if depthwise {
            attrs.push(attr_int("group", ic as i64));
        }
        b.op("Conv", &[wt, bs], attrs);
        let (out, _) = window2d([ic, ih, iw], [kh, kw], stride, pad);
        at.chw = [oc, out[0], out[1]];
        Ok(())
    }

    fn runs_in_1d(&self, l: &Layer) -> bool {
        l.params[0] == 1
    }

    fn imports(&self) -> &'static [tfl::BuiltinOperator] {
        if self.depthwise { &[tfl::BuiltinOperator::DepthwiseConv2d] } else { &[tfl::BuiltinOperator::Conv2d] }
    }

    fn import(&self, r: &Reader<'_>, op: &tfl::Operator, _: i32) -> Result<TkdLayer> {
        let (ins, outs) = io(op);
        let ([x, f, rest @ ..], [y]) = (ins, outs) else { bail!("needs an input, a filter and one output") };
        let b = rest.first().copied().unwrap_or(-1);
        let (pad, stride, dilation, fused, multiplier) = match &op.builtin_options {
            Some(tfl::BuiltinOptions::Conv2DOptions(o)) if !self.depthwise => (
                o.padding,
                (o.stride_h, o.stride_w),
                (o.dilation_h_factor, o.dilation_w_factor),
                o.fused_activation_function,
                1,
            ),
            Some(tfl::BuiltinOptions::DepthwiseConv2DOptions(o)) if self.depthwise => (
                o.padding,
                (o.stride_h, o.stride_w),
                (o.dilation_h_factor, o.dilation_w_factor),
                o.fused_activation_function,
                o.depth_multiplier,
            ),
            _ => bail!("has no convolution options"),
        };
        if dilation != (1, 1) {
            bail!("dilation {}×{} is not supported", dilation.0, dilation.1);
        }
        let ([h, w, c], [oh, ow, oc]) = (r.hwc(*x)?, r.hwc(*y)?);
        let filter = r.shape(*f)?;
        let (kh, kw) = match (filter.as_slice(), self.depthwise) {
            (&[o, kh, kw, ci], false) if o == oc && ci == c => (kh, kw),
            (&[1, kh, kw, o], true) if o == oc && o == c && multiplier <= 1 => (kh, kw),
            (s, _) => bail!(
                "filter '{}' has shape {s:?} for {c} input and {oc} output channels{}",
                r.name(*f),
                if self.depthwise { " (tinykd takes depth multiplier 1)" } else { "" }
            ),
        };
        let [sh, sw] = strides(stride)?;
        let pad = padding(pad);
        let out = window2d([c, h, w], [kh, kw], [sh, sw], qdq::padding(pad)).0;
        if out != [oh, ow] {
            bail!("output {oh}×{ow} is not what a {kh}×{kw} window with strides {sh}×{sw} gives on {h}×{w}: {out:?}");
        }
        let (in_q, out_q) = (r.activation(*x)?, r.activation(*y)?);
        let scales = r.weight_scales(*f, oc)?;
        let bias = r.int32_or_zeros(b, oc)?;
        let activation = activation(fused)?;
        let u = |v: usize| crate::student::layer::u16p(v, "a dimension");
        Ok(TkdLayer {
            op: if self.depthwise { Op::DepthwiseConv2d } else { Op::Conv2d },
            activation,
            clamp: tflite::tflite_clamp(activation, out_q),
            input_len: h * w * c,
            output_len: oh * ow * oc,
            params: [u(h)?, u(w)?, u(c)?, u(oc)?, u(kh)?, u(kw)?, u(sh)?, pad, u(sw)?, 0, 0, 0],
            input_zero_point: in_q.zero_point,
            output: out_q,
            weights: r.int8(*f)?,
            channels: channel_table(&bias, &scales, in_q.scale, out_q.scale),
            weight_scales: scales,
            input: None,
            second: None,
        })
    }
}
