//! The int8 student (`.tkd`) as ONNX with QuantizeLinear / DequantizeLinear
//! around float operators (the "QDQ" form onnxruntime and Netron read as a
//! quantized model): per-channel weights with their scales, int32 biases
//! at `s_in · s_w`, every activation quantized with the blob's own scale
//! and zero point.
//!
//! Weights and activations are stored as uint8 (`v + 128`, zero point
//! `z + 128`): the same real values and the same quantization steps as the
//! int8 ones. onnxruntime's x86 kernels for int8 operands on CPUs without
//! VNNI (AVX2) sum byte pairs in 16 bits with saturation (`vpmaddubsw`);
//! with int8 tensors a convolution came out 122 steps from the device on
//! such a machine. Its uint8 × uint8 kernels do not saturate. The blob's layouts are the device's (channels
//! last); the graph is channels first, so weights are transposed here and a
//! fully connected layer over a flattened feature map reads it in the
//! device's `H, W, C` order (a Transpose before the Flatten).
//!
//! onnxruntime computes in float between the Q/DQ pairs and requantizes
//! with float scales, the device with Q31 multipliers: a layer's output can
//! differ by one step where the exact value sits within float error of a
//! rounding boundary. Average pools are written on the int8 values with the
//! device's rounding (see [`Builder::integer_average`]), since their ties
//! are frequent, not rare.

use anyhow::{Result, bail};
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::Activation;
use tract_onnx::pb::tensor_proto::DataType;

use super::onnx::{Builder, attr_int};
use super::ops::int8_op;
use crate::data::Layout;
use crate::student::spec::Padding;

pub(super) fn padding(p: u16) -> Padding {
    if p == 1 { Padding::Same } else { Padding::Valid }
}

/// Where the QDQ graph stands before a layer: the activation's `[C, H, W]`,
/// whether it is flat already, whether the graph is 1-D (`[N, C, L]`), the
/// activation's quantization, and a two-input layer's second input (its
/// name in the graph).
#[derive(Clone)]
pub(super) struct Cursor {
    pub chw: [usize; 3],
    pub flat: bool,
    pub one_d: bool,
    pub q: QuantParams,
    pub second: Option<String>,
}

impl Cursor {
    /// A window's kernel dimensions as the graph's convolutions and pools take them.
    pub fn kernel_dims(&self, kh: usize, kw: usize) -> Vec<usize> {
        if self.one_d { vec![kw] } else { vec![kh, kw] }
    }
}

/// An int8 value (or zero point) as the uint8 the graph stores: `v + 128`.
/// With the zero point moved by the same 128 it is the same real value,
/// and QuantizeLinear's rounding and saturation are the same steps.
fn as_uint8(v: i32) -> u8 {
    (v.clamp(-128, 127) + 128) as u8
}

impl Builder {
    /// Quantizes and dequantizes the current activation with `q`.
    fn qdq(&mut self, q: QuantParams) {
        let s = self.init_f32("scale", &[], &[q.scale]);
        let z = self.init_raw("zero_point", &[], DataType::Uint8, vec![as_uint8(q.zero_point)]);
        self.op("QuantizeLinear", &[s.clone(), z.clone()], vec![]);
        self.op("DequantizeLinear", &[s, z], vec![]);
    }

    /// A per-channel dequantized int8 weight tensor of shape `dims`.
    pub(super) fn weight(&mut self, dims: &[usize], values: &[i8], scales: &[f32]) -> String {
        let w = self.init_raw("weight_q", dims, DataType::Uint8, values.iter().map(|v| as_uint8(*v as i32)).collect());
        let s = self.init_f32("weight_scale", &[scales.len()], scales);
        let z = self.init_raw("weight_zero_point", &[scales.len()], DataType::Uint8, vec![as_uint8(0); scales.len()]);
        self.dequantize(&[w, s, z])
    }

    /// A per-channel dequantized int32 bias.
    pub(super) fn bias(&mut self, values: &[i32], scales: &[f32]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b = self.init_raw("bias_q", &[values.len()], DataType::Int32, raw);
        let s = self.init_f32("bias_scale", &[scales.len()], scales);
        let z = self.init_raw("bias_zero_point", &[scales.len()], DataType::Int32, vec![0; 4 * scales.len()]);
        self.dequantize(&[b, s, z])
    }

    fn dequantize(&mut self, inputs: &[String]) -> String {
        let out = self.name("dequantized");
        self.nodes.push(tract_onnx::pb::NodeProto {
            name: out.clone(),
            op_type: "DequantizeLinear".into(),
            input: inputs.to_vec(),
            output: vec![out.clone()],
            attribute: vec![attr_int("axis", 0)],
            ..Default::default()
        });
        out
    }

    /// An average pool as the device computes it: on the int8 values
    /// (zero point included), rounded half away from zero. The plain float
    /// pool followed by QuantizeLinear would round ties to even, and ties
    /// are common (a mean of two integers), so onnxruntime would disagree
    /// with the device by one step at every tie. Integers and their
    /// means are exact in float (a tie is exactly `k + 0.5`, a non-tie at
    /// least `1 / (2·count)` from one), so the rounding below is exact.
    ///
    /// The pool's input is the real value a Q → DQ pair with `q` left
    /// (`s · (v − z)`), so its int8 value `v` comes back as `round(x / s) + z`
    /// (float error is far below one half). No Q/DQ inside: onnxruntime
    /// keeps the layer before as DQ → Conv → Q → DQ and runs it as an
    /// integer QLinearConv, whose exact int32 sums agree with the device
    /// more often than a float Conv's; the result leaves as `s · (r − z)`
    /// through another Q → DQ pair for the same reason.
    pub(super) fn integer_average(&mut self, pool: &str, attrs: Vec<tract_onnx::pb::AttributeProto>, q: QuantParams) {
        let s = self.init_f32("scale", &[], &[q.scale]);
        let z = self.init_f32("zero_point_value", &[], &[q.zero_point as f32]);
        self.op("Div", std::slice::from_ref(&s), vec![]);
        self.op("Round", &[], vec![]);
        self.op("Add", std::slice::from_ref(&z), vec![]);
        self.op(pool, &[], attrs);
        // round(t) = sign(t) · floor(|t| + 0.5)
        let sign = self.name("sign");
        self.nodes.push(tract_onnx::pb::NodeProto {
            name: sign.clone(),
            op_type: "Sign".into(),
            input: vec![self.x.clone()],
            output: vec![sign.clone()],
            ..Default::default()
        });
        self.op("Abs", &[], vec![]);
        let half = self.init_f32("half", &[], &[0.5]);
        self.op("Add", &[half], vec![]);
        self.op("Floor", &[], vec![]);
        self.op("Mul", &[sign], vec![]);
        self.op("Sub", &[z], vec![]);
        self.op("Mul", &[s], vec![]);
        self.qdq(q);
    }

    /// A fused activation, then the output's Q/DQ pair.
    pub(super) fn activation(&mut self, a: Activation, out: QuantParams) {
        match a {
            Activation::None => {}
            Activation::Relu => self.op("Relu", &[], vec![]),
            Activation::Relu6 => {
                let lo = self.init_f32("zero", &[], &[0.0]);
                let hi = self.init_f32("six", &[], &[6.0]);
                self.op("Clip", &[lo, hi], vec![]);
            }
        }
        self.qdq(out);
    }
}

/// Encodes the `.tkd` `blob` as a QDQ ONNX model taking data in `layout`.
pub fn int8_model(blob: &[u8], layout: Layout) -> Result<Vec<u8>> {
    let m = crate::int8::parse(blob)?;
    let internal: Vec<usize> = m.input_shape().iter().map(|d| *d as usize).collect();
    let Some([c, h, w]) = crate::student::geometry::as_chw(&internal) else {
        bail!("input shape {internal:?} is not a [L], [C, L] or [C, H, W] sample");
    };
    let layers = m.layers().collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("{e}"))?;
    // 1-D when no window has height: the graph stays [N, C, L] (see onnx.rs).
    let one_d = h == 1 && internal.len() <= 2 && layers.iter().all(|l| int8_op(l.op).runs_in_1d(l));
    let mut b = Builder::new(layout, &internal, [c, h, w], one_d);
    b.qdq(m.input_quant());
    // Every tensor so far, as the graph names it: the input, then each layer's output.
    let mut tensors =
        vec![(b.x.clone(), Cursor { chw: [c, h, w], flat: false, one_d, q: m.input_quant(), second: None })];
    for (i, l) in layers.iter().enumerate() {
        let tensor = |t: u16| {
            tensors
                .get(t as usize)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("layer {i} reads a tensor not written before it"))
        };
        let (name, mut at) = tensor(l.input_tensor)?;
        if l.second_tensor != tinykd_runtime::format::NO_TENSOR {
            at.second = Some(tensor(l.second_tensor)?.0);
        }
        b.x = name;
        let scales = super::channel_scales(&m, l, at.q.scale)?;
        int8_op(l.op).qdq(&mut b, &mut at, l, m.weights(l), &scales)?;
        b.activation(l.activation, l.output);
        at.q = l.output;
        at.second = None;
        tensors.push((b.x.clone(), at));
    }
    let Some((_, at)) = tensors.pop() else { bail!("the model has no layers") };
    let flat = at.flat;
    if !flat {
        b.op("Flatten", &[], vec![attr_int("axis", 1)]);
    }
    let doc = format!("tinykd int8 student, CRC-32 {:#010x}, as QDQ", m.crc());
    Ok(b.finish("tinykd_student_int8", doc, m.class_count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dequantized, a value and its zero point shifted by 128 are the
    /// same real number: `(v + 128) − (z + 128) = v − z`.
    #[test]
    fn uint8_storage_is_the_int8_value_moved_by_128() {
        assert_eq!([as_uint8(-128), as_uint8(0), as_uint8(127)], [0, 128, 255]);
        for v in -128..=127 {
            for z in [-128, -5, 0, 77, 127] {
                assert_eq!(as_uint8(v) as i32 - as_uint8(z) as i32, v - z);
            }
        }
    }
}
