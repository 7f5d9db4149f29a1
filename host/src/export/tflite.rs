//! The int8 student (`.tkd`) as a TensorFlow Lite flatbuffer, in TFLite's
//! own schema (types generated from `schema.fbs` by planus, crate
//! `tinykd-tflite-schema`), for TensorFlow Lite Micro, a vendor SDK or Netron.
//!
//! The blob's arithmetic *is* the TFLite int8 spec, so the export is a
//! re-labelling, not a conversion: TFLM recomputes every requantization
//! multiplier from the float scales written here (`s_in · s_w / s_out` in
//! double, `QuantizeMultiplier`), exactly as `tinykd quantize` computed them,
//! and derives the same ReLU clamps from the output scale. The exporter
//! re-derives both and refuses a blob whose stored values differ, so a
//! `.tflite` it writes computes what the device computes, bit for bit (the
//! test suite runs TFLM's interpreter to prove it).
//!
//! Layout: activations NHWC, 1-D data as `[1, 1, L, C]` with 1×K
//! `CONV_2D`; conv filters `[O, kh, kw, C]` and depthwise `[1, kh, kw, C]`
//! (the blob's own orders); per-channel int8 weights (quantized dimension
//! 0, 3 for depthwise), int32 biases at `s_in · s_w`. Global average
//! pooling is an `AVERAGE_POOL_2D` over the whole map: TFLM's int8 `MEAN`
//! rescales with a truncated `2^k / n` multiplier and rounds twice, so it
//! is not the rounded average the runtime computes, while `AVERAGE_POOL_2D`
//! is (and has optimized CMSIS-NN kernels). A fully connected layer after a
//! feature map is preceded by a `RESHAPE` to `[1, H·W·C]`.

use anyhow::{Context, Result, bail};
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::Activation;
use tinykd_runtime::kernels::Clamp;
use tinykd_tflite_schema::tflite as tfl;

use super::ops::int8_op;

/// The flatbuffer's file identifier (TFLite schema version 3).
const FILE_IDENTIFIER: [u8; 4] = *b"TFL3";

/// Tensors, buffers, operator codes and operators of the one subgraph.
#[derive(Default)]
pub(super) struct Graph {
    tensors: Vec<tfl::Tensor>,
    buffers: Vec<tfl::Buffer>,
    codes: Vec<(tfl::BuiltinOperator, i32)>,
    ops: Vec<tfl::Operator>,
}

fn quantization(scales: Vec<f32>, zero_points: Vec<i64>, dimension: i32) -> Option<Box<tfl::QuantizationParameters>> {
    Some(Box::new(tfl::QuantizationParameters {
        scale: Some(scales),
        zero_point: Some(zero_points),
        quantized_dimension: dimension,
        ..Default::default()
    }))
}

/// Symmetric (zero point 0) parameters of a weight or bias tensor: one
/// scale when every channel has the same (a per-tensor quantized layer —
/// some readers, e.g. microflow's fully connected, take nothing else),
/// else one per channel along `dimension`.
fn symmetric(scales: &[f32], dimension: i32) -> Option<Box<tfl::QuantizationParameters>> {
    let per_tensor = scales.first().is_some_and(|s0| scales.iter().all(|s| s.to_bits() == s0.to_bits()));
    let scales = if per_tensor { scales[..1].to_vec() } else { scales.to_vec() };
    let n = scales.len();
    quantization(scales, vec![0; n], dimension)
}

fn dims(shape: &[usize]) -> Result<Vec<i32>> {
    shape.iter().map(|d| i32::try_from(*d).map_err(|_| anyhow::anyhow!("dimension {d} is too large"))).collect()
}

impl Graph {
    fn new() -> Graph {
        // Buffer 0 is the schema's empty sentinel, shared by every activation.
        Graph { buffers: vec![tfl::Buffer::default()], ..Default::default() }
    }

    fn tensor(
        &mut self,
        name: String,
        shape: &[usize],
        type_: tfl::TensorType,
        data: Option<Vec<u8>>,
        quantization: Option<Box<tfl::QuantizationParameters>>,
    ) -> Result<i32> {
        let buffer = match data {
            Some(d) => {
                self.buffers.push(tfl::Buffer { data: Some(d), ..Default::default() });
                u32::try_from(self.buffers.len() - 1)?
            }
            None => 0,
        };
        self.tensors.push(tfl::Tensor {
            shape: Some(dims(shape)?),
            type_,
            buffer,
            name: Some(name),
            quantization,
            ..Default::default()
        });
        Ok(i32::try_from(self.tensors.len() - 1)?)
    }

    /// An int8 activation tensor quantized with `q`.
    pub(super) fn activation(&mut self, name: String, shape: &[usize], q: QuantParams) -> Result<i32> {
        self.tensor(name, shape, tfl::TensorType::Int8, None, quantization(vec![q.scale], vec![q.zero_point.into()], 0))
    }

    /// Per-channel int8 weights (zero points 0) quantized along `dimension`.
    pub(super) fn weights(
        &mut self,
        name: String,
        shape: &[usize],
        values: &[i8],
        scales: &[f32],
        dimension: i32,
    ) -> Result<i32> {
        let data = values.iter().map(|v| *v as u8).collect();
        self.tensor(name, shape, tfl::TensorType::Int8, Some(data), symmetric(scales, dimension))
    }

    /// Per-channel int32 biases at scale `s_in · s_w`.
    pub(super) fn bias(&mut self, name: String, values: &[i32], scales: &[f32]) -> Result<i32> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, &[values.len()], tfl::TensorType::Int32, Some(data), symmetric(scales, 0))
    }

    pub(super) fn op(
        &mut self,
        code: tfl::BuiltinOperator,
        version: i32,
        inputs: Vec<i32>,
        output: i32,
        options: tfl::BuiltinOptions,
    ) {
        let index = match self.codes.iter().position(|(c, _)| *c == code) {
            Some(i) => i,
            None => {
                self.codes.push((code, version));
                self.codes.len() - 1
            }
        };
        self.ops.push(tfl::Operator {
            opcode_index: index as u32,
            inputs: Some(inputs),
            outputs: Some(vec![output]),
            builtin_options: Some(options),
            ..Default::default()
        });
    }

    /// `RESHAPE` of tensor `from` (quantized with `q`) to `shape`.
    pub(super) fn reshape(&mut self, from: i32, shape: &[usize], q: QuantParams, name: String) -> Result<i32> {
        let new_shape = dims(shape)?;
        let data = new_shape.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape_tensor =
            self.tensor(format!("{name}/shape"), &[shape.len()], tfl::TensorType::Int32, Some(data), None)?;
        let out = self.activation(name, shape, q)?;
        let options = tfl::BuiltinOptions::ReshapeOptions(Box::new(tfl::ReshapeOptions { new_shape: Some(new_shape) }));
        self.op(tfl::BuiltinOperator::Reshape, 1, vec![from, shape_tensor], out, options);
        Ok(out)
    }
}

/// TFLite's clamp for a fused activation (`CalculateActivationRangeQuantized`):
/// the quantized 0 (and 6), with the same float rounding.
pub(super) fn tflite_clamp(a: Activation, out: QuantParams) -> Clamp {
    let q = |f: f32| (out.zero_point + (f / out.scale).round() as i32).clamp(-128, 127) as i8;
    match a {
        Activation::None => Clamp { min: -128, max: 127 },
        Activation::Relu => Clamp { min: q(0.0), max: 127 },
        Activation::Relu6 => Clamp { min: q(0.0), max: q(6.0) },
    }
}

pub(super) fn fused(a: Activation) -> tfl::ActivationFunctionType {
    match a {
        Activation::None => tfl::ActivationFunctionType::None,
        Activation::Relu => tfl::ActivationFunctionType::Relu,
        Activation::Relu6 => tfl::ActivationFunctionType::Relu6,
    }
}

pub(super) fn padding(p: u16) -> tfl::Padding {
    if p == 1 { tfl::Padding::Same } else { tfl::Padding::Valid }
}

/// The tensor the next operator reads, with its shape and quantization.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    pub tensor: i32,
    /// A two-input operator's second input.
    pub second: Option<i32>,
    pub shape: Vec<usize>,
    pub q: QuantParams,
}

/// Encodes the `.tkd` `blob` as a `.tflite` flatbuffer.
pub fn int8_model(blob: &[u8]) -> Result<Vec<u8>> {
    let m = crate::int8::parse(blob)?;
    let layers = m.layers().collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("{e}"))?;
    let internal: Vec<usize> = m.input_shape().iter().map(|d| *d as usize).collect();
    let Some([c, h, w]) = crate::student::geometry::as_chw(&internal) else {
        bail!("input shape {internal:?} is not a [L], [C, L] or [C, H, W] sample");
    };
    let mut g = Graph::new();
    // A model starting with a fully connected layer takes a flat `[1, N]`
    // input, any other an NHWC map.
    let flat_input = layers.first().is_some_and(|l| int8_op(l.op).takes_flat_input());
    let shape: Vec<usize> = if flat_input { vec![1, c * h * w] } else { vec![1, h, w, c] };
    let input = g.activation("input".into(), &shape, m.input_quant())?;
    // Every tensor of the graph so far: the input, then each layer's output.
    let mut tensors = vec![Cursor { tensor: input, second: None, shape, q: m.input_quant() }];
    for (i, l) in layers.iter().enumerate() {
        let tensor = |t: u16| tensors.get(t as usize).cloned().context("a layer reads a tensor not written before it");
        let mut at = tensor(l.input_tensor)?;
        if l.second_tensor != tinykd_runtime::format::NO_TENSOR {
            at.second = Some(tensor(l.second_tensor)?.tensor);
        }
        let scales = checked_scales(&m, i, l, at.q.scale)?;
        let name = |kind: &str| format!("{i:02}_{kind}");
        let out = int8_op(l.op).tflite(&mut g, &mut at, l, m.weights(l), &scales, &name)?;
        tensors.push(Cursor { tensor: out, second: None, shape: at.shape, q: l.output });
    }
    let Some(mut at) = tensors.pop() else { bail!("the model has no layers") };
    if at.shape.len() != 2 {
        at.shape = vec![1, m.class_count()];
        at.tensor = g.reshape(at.tensor, &at.shape, at.q, "logits".into())?;
    }
    if let Some(t) = g.tensors.get_mut(at.tensor as usize) {
        t.name = Some("logits".into());
    }
    finish(g, input, at.tensor, m.crc())
}

/// Layer `i`'s channel scales, after checking that TFLite derives the
/// stored clamp and every stored multiplier from them.
fn checked_scales(
    m: &tinykd_runtime::Model<'_>,
    i: usize,
    l: &tinykd_runtime::Layer,
    in_scale: f32,
) -> Result<super::ChannelScales> {
    let expected = tflite_clamp(l.activation, l.output);
    if l.clamp != expected {
        bail!(
            "layer {i}: its output clamp [{}, {}] is not the one TFLite derives for {:?} at scale {} (zero point {}): [{}, {}]",
            l.clamp.min,
            l.clamp.max,
            l.activation,
            l.output.scale,
            l.output.zero_point,
            expected.min,
            expected.max
        );
    }
    int8_op(l.op).tflite_scales(m, l, in_scale).map_err(|e| anyhow::anyhow!("layer {i}: {e:#}"))
}

/// The flatbuffer of the finished graph.
fn finish(g: Graph, input: i32, output: i32, crc: u32) -> Result<Vec<u8>> {
    let operator_codes = g
        .codes
        .iter()
        .map(|(code, version)| tfl::OperatorCode {
            // Codes below 127 are also written to the deprecated byte field,
            // which older readers use.
            deprecated_builtin_code: (*code as i32).min(127) as i8,
            builtin_code: *code,
            version: *version,
            custom_code: None,
        })
        .collect();
    let model = tfl::Model {
        version: 3,
        operator_codes: Some(operator_codes),
        subgraphs: Some(vec![tfl::SubGraph {
            tensors: Some(g.tensors),
            inputs: Some(vec![input]),
            outputs: Some(vec![output]),
            operators: Some(g.ops),
            name: Some("main".into()),
            ..Default::default()
        }]),
        description: Some(format!("tinykd int8 student, CRC-32 {crc:#010x}")),
        buffers: Some(g.buffers),
        ..Default::default()
    };
    write_model(&model)
}

/// A TFLite model as flatbuffer bytes, with its file identifier.
pub fn write_model(model: &tfl::Model) -> Result<Vec<u8>> {
    let mut builder = planus::Builder::new();
    let mut bytes = builder.finish(model, Some(FILE_IDENTIFIER)).to_vec();
    put_file_identifier_after_root_offset(&mut bytes)?;
    Ok(bytes)
}

/// FlatBuffers readers expect the root offset at bytes 0..4 and the file
/// identifier at 4..8. planus 1.3.0's `finish` with an identifier writes
/// them the other way round (identifier first, then an offset relative to
/// its own position 4), which TFLite cannot read. Swapping the two words —
/// the offset grows by 4, now counted from position 0 — fixes that without
/// moving anything else, so every table and vector keeps the alignment
/// planus gave it (the int64 zero-point vectors need 8; inserting 4 bytes
/// instead would break it, and FlatBuffers verifiers reject such files).
fn put_file_identifier_after_root_offset(bytes: &mut [u8]) -> Result<()> {
    let (Some(head), Some(word)) = (bytes.get(0..4), bytes.get(4..8)) else {
        bail!("the flatbuffer builder returned {} bytes", bytes.len());
    };
    if head == FILE_IDENTIFIER {
        let root = u32::from_le_bytes(word.try_into()?) + 4;
        bytes[0..4].copy_from_slice(&root.to_le_bytes());
        bytes[4..8].copy_from_slice(&FILE_IDENTIFIER);
    } else if word != FILE_IDENTIFIER {
        bail!("the flatbuffer builder wrote no file identifier");
    }
    Ok(())
}

pub(super) fn pad_spec(p: tfl::Padding) -> crate::student::spec::Padding {
    if p == tfl::Padding::Same { crate::student::spec::Padding::Same } else { crate::student::spec::Padding::Valid }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use planus::ReadAsRoot;

    fn read(bytes: &[u8]) -> tfl::Model {
        assert_eq!(&bytes[4..8], b"TFL3", "file identifier after the root offset");
        tfl::ModelRef::read_as_root(bytes).unwrap().try_into().unwrap()
    }

    #[test]
    fn cnn_reads_back_with_tflites_operators_and_shapes() {
        let blob = include_bytes!("../../../firmware/runtime/fuzz/corpus/cnn1d.tkd");
        let m = read(&int8_model(blob).unwrap());
        let codes: Vec<_> = m.operator_codes.unwrap().iter().map(|c| c.builtin_code).collect();
        assert!(codes.contains(&tfl::BuiltinOperator::Conv2d) && codes.contains(&tfl::BuiltinOperator::FullyConnected));
        let g = &m.subgraphs.unwrap()[0];
        let tensors = g.tensors.as_ref().unwrap();
        let input = &tensors[g.inputs.as_ref().unwrap()[0] as usize];
        // MNIST-1D: 40 steps, one channel, as a 1 × 40 image.
        assert_eq!(input.shape.as_deref(), Some(&[1, 1, 40, 1][..]));
        assert_eq!(input.type_, tfl::TensorType::Int8);
        let output = &tensors[g.outputs.as_ref().unwrap()[0] as usize];
        assert_eq!(output.shape.as_deref(), Some(&[1, 10][..]));
        assert_eq!(output.name.as_deref(), Some("logits"));
        // Every constant has its own non-empty buffer; activations share buffer 0.
        let buffers = m.buffers.unwrap();
        assert!(buffers[0].data.is_none());
        for t in tensors {
            let name = t.name.as_deref().unwrap_or("");
            if name.ends_with("/filter") || name.ends_with("/weights") || name.ends_with("/bias") {
                assert!(buffers[t.buffer as usize].data.as_ref().is_some_and(|d| !d.is_empty()), "{name}");
                let q = t.quantization.as_ref().unwrap();
                // Per channel: one scale per index of the quantized dimension.
                let shape = t.shape.as_ref().unwrap();
                assert_eq!(q.scale.as_ref().unwrap().len(), shape[q.quantized_dimension as usize] as usize, "{name}");
            }
        }
    }

    /// The identifier fix swaps two words and inserts nothing: every table
    /// and vector stays where planus aligned it (an inserted word broke the
    /// 8-byte alignment FlatBuffers verifiers check, and microflow's parser
    /// refused the file).
    #[test]
    fn the_identifier_fix_moves_nothing() {
        let mut b = vec![0u8; 16];
        b[0..4].copy_from_slice(b"TFL3");
        b[4..8].copy_from_slice(&4u32.to_le_bytes());
        put_file_identifier_after_root_offset(&mut b).unwrap();
        assert_eq!(b.len(), 16);
        assert_eq!(&b[0..8], &[8, 0, 0, 0, b'T', b'F', b'L', b'3']);
        // Already in the standard order: left alone.
        let before = b.clone();
        put_file_identifier_after_root_offset(&mut b).unwrap();
        assert_eq!(b, before);
        assert!(put_file_identifier_after_root_offset(&mut [0u8; 8]).is_err());
    }

    #[test]
    fn clamps_follow_tflites_activation_range() {
        let q = QuantParams { scale: 0.05, zero_point: -10 };
        assert_eq!(tflite_clamp(Activation::None, q), Clamp { min: -128, max: 127 });
        assert_eq!(tflite_clamp(Activation::Relu, q), Clamp { min: -10, max: 127 });
        // 6 / 0.05 = 120 → −10 + 120 = 110.
        assert_eq!(tflite_clamp(Activation::Relu6, q), Clamp { min: -10, max: 110 });
        // Saturates at the int8 range.
        assert_eq!(tflite_clamp(Activation::Relu6, QuantParams { scale: 0.01, zero_point: -128 }).max, 127);
    }

    #[test]
    fn a_blob_whose_multiplier_tflite_would_not_derive_is_refused() {
        let mut blob = include_bytes!("../../../firmware/runtime/fuzz/corpus/mlp.tkd").to_vec();
        let m = tinykd_runtime::Model::from_bytes(&blob).unwrap();
        let l = m.layers().next().unwrap().unwrap();
        // Channel 0's multiplier is the second i32 of its table entry.
        let at = l.channels_offset + 4;
        let v = i32::from_le_bytes(blob[at..at + 4].try_into().unwrap()) + 1;
        blob[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let crc = tinykd_runtime::format::CRC.checksum(&blob[tinykd_runtime::format::CRC_START..]);
        blob[12..16].copy_from_slice(&crc.to_le_bytes());
        let err = int8_model(&blob).unwrap_err().to_string();
        assert!(err.contains("not what TFLite derives"), "{err}");
    }
}
