//! `FULLY_CONNECTED` / `Gemm`.

use anyhow::Result;
use tinykd_runtime::Layer;
use tinykd_tflite_schema::tflite as tfl;

use super::Int8Op;
use crate::export::onnx::{Builder, attr_int, attr_ints};
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
}
