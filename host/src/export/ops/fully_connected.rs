//! `FULLY_CONNECTED` / `Gemm`.

use anyhow::{Result, bail};
use tinykd_runtime::Layer;
use tinykd_runtime::format::Op;
use tinykd_tflite_schema::tflite as tfl;

use super::Int8Op;
use crate::export::onnx::{Builder, attr_int, attr_ints};
use crate::export::tflite_import::{Reader, activation, channel_table, io};
use crate::export::tkd::TkdLayer;
use crate::export::{ChannelScales, plain_fc_bias, qdq, tflite};

pub(super) struct FullyConnected;

impl Int8Op for FullyConnected {
    /// After a `RESHAPE` of a feature map to `[1, H·W·C]`.
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
        let (inf, outf) = (p[0], p[1]);
        if at.shape.len() != 2 {
            at.shape = vec![1, inf];
            at.tensor = g.reshape(at.tensor, &at.shape, at.q, name("flatten"))?;
        }
        let bias = plain_fc_bias(&s.entries, weights, inf, at.q.zero_point);
        let wt = g.weights(name("dense/weights"), &[outf, inf], weights, &s.weight_scales, 0)?;
        let bs = g.bias(name("dense/bias"), &bias, &s.bias_scales)?;
        at.shape = vec![1, outf];
        let out = g.activation(name("dense"), &at.shape, l.output)?;
        let options = tfl::BuiltinOptions::FullyConnectedOptions(Box::new(tfl::FullyConnectedOptions {
            fused_activation_function: tflite::fused(l.activation),
            ..Default::default()
        }));
        g.op(tfl::BuiltinOperator::FullyConnected, 4, vec![at.tensor, wt, bs], out, options);
        Ok(out)
    }

    fn qdq(&self, b: &mut Builder, at: &mut qdq::Cursor, l: &Layer, weights: &[i8], s: &ChannelScales) -> Result<()> {
        let p = l.params.map(usize::from);
        let (inf, outf) = (p[0], p[1]);
        if !at.flat {
            let [c, h, w] = at.chw;
            if h * w > 1 && c > 1 {
                // The device flattens H, W, C.
                let perm: Vec<usize> = if at.one_d { vec![0, 2, 1] } else { vec![0, 2, 3, 1] };
                b.op("Transpose", &[], vec![attr_ints("perm", &perm)]);
            }
            b.op("Flatten", &[], vec![attr_int("axis", 1)]);
            at.flat = true;
        }
        let bias = plain_fc_bias(&s.entries, weights, inf, at.q.zero_point);
        let wt = b.weight(&[outf, inf], weights, &s.weight_scales);
        let bs = b.bias(&bias, &s.bias_scales);
        b.op("Gemm", &[wt, bs], vec![attr_int("transB", 1)]);
        at.chw = [outf, 1, 1];
        Ok(())
    }

    fn takes_flat_input(&self) -> bool {
        true
    }

    fn imports(&self) -> &'static [tfl::BuiltinOperator] {
        &[tfl::BuiltinOperator::FullyConnected]
    }

    /// Per-tensor or per-channel weights; the bias stored with
    /// `−z_in · Σ w` folded in, as the runtime reads it.
    fn import(&self, r: &Reader<'_>, op: &tfl::Operator, _: i32) -> Result<TkdLayer> {
        let (ins, outs) = io(op);
        let ([x, f, rest @ ..], [y]) = (ins, outs) else { bail!("needs an input, weights and one output") };
        let b = rest.first().copied().unwrap_or(-1);
        let Some(tfl::BuiltinOptions::FullyConnectedOptions(o)) = &op.builtin_options else {
            bail!("has no fully connected options")
        };
        if o.weights_format != tfl::FullyConnectedOptionsWeightsFormat::Default {
            bail!("weights format {:?} is not supported", o.weights_format);
        }
        let [outf, inf] = r.shape(*f)?[..] else { bail!("weights '{}' are not [out, in]", r.name(*f)) };
        let (ins_len, outs_len) = (r.shape(*x)?.iter().product::<usize>(), r.shape(*y)?.iter().product::<usize>());
        if ins_len != inf || outs_len != outf {
            bail!("{ins_len} inputs and {outs_len} outputs for [{outf}, {inf}] weights (batch 1 only)");
        }
        let (in_q, out_q) = (r.activation(*x)?, r.activation(*y)?);
        let scales = r.weight_scales(*f, outf)?;
        let weights = r.int8(*f)?;
        let bias = r.int32_or_zeros(b, outf)?;
        let folded: Vec<i32> = bias
            .iter()
            .zip(weights.chunks(inf))
            .map(|(b, row)| {
                let sum: i32 = row.iter().map(|w| *w as i32).sum();
                b.wrapping_sub(in_q.zero_point.wrapping_mul(sum))
            })
            .collect();
        let activation = activation(o.fused_activation_function)?;
        let mut params = [0u16; tinykd_runtime::format::layer::PARAM_COUNT];
        params[0] = crate::student::layer::u16p(inf, "fully connected inputs")?;
        params[1] = crate::student::layer::u16p(outf, "fully connected outputs")?;
        Ok(TkdLayer {
            op: Op::FullyConnected,
            activation,
            clamp: tflite::tflite_clamp(activation, out_q),
            input_len: inf,
            output_len: outf,
            params,
            input_zero_point: in_q.zero_point,
            output: out_q,
            weights,
            channels: channel_table(&folded, &scales, in_q.scale, out_q.scale),
            weight_scales: scales,
            input: None,
            second: None,
        })
    }
}
