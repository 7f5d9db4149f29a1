//! `tinykd import`: an int8 `.tflite` model as a `.tkd` — the TFLite
//! export's mapping read the other way, one operator family at a time (each
//! family's `Int8Op::import`, in `ops/`).
//!
//! Any int8 model made of the operators tinykd runs imports, chains
//! (keyword spotting's DS-CNN, MobileNet, fully connected autoencoders) and
//! graphs (ResNet's residual additions) alike: each layer names the tensors
//! it reads, and the arena plan keeps every tensor until its last reader.
//! `RESHAPE` and `SQUEEZE` are views on the device and leave no layer.
//! Anything else — an unsupported operator, a float or int16 tensor,
//! dilation, broadcasting, a truncated file — is a one-line error naming
//! the operator or tensor. The arithmetic is TFLite's own: every requantization
//! multiplier is derived from the file's float scales as TFLite Micro
//! derives it, so the `.tkd` computes what TFLite Micro computes, bit for
//! bit (tested on MLPerf Tiny's reference models).

use anyhow::{Context, Result, bail};
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::Activation;
use tinykd_runtime::kernels::ChannelQuant;
use tinykd_tflite_schema::tflite as tfl;

use super::ops::importer;
use super::tkd::{TkdLayer, TkdModel};
use crate::quant::quantize_multiplier;

/// A model's tensors and buffers, read by the operators' importers.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    model: &'a tfl::Model,
    graph: &'a tfl::SubGraph,
}

/// The TFLite operator code of an operator code entry: the larger of the
/// two fields, as TFLite reads it (older files set only the deprecated byte).
fn builtin_code(c: &tfl::OperatorCode) -> i32 {
    (c.builtin_code as i32).max(c.deprecated_builtin_code as i32)
}

/// A TFLite operator code's name (`CONV_2D`), or its number.
pub(super) fn code_name(code: i32) -> String {
    tfl::BuiltinOperator::try_from(code).map_or_else(
        |_| format!("operator code {code}"),
        |c| {
            let debug = format!("{c:?}");
            // The schema's names that do not follow the rule below.
            match debug.as_str() {
                "Relu6" => return "RELU6".into(),
                "Rfft2d" => return "RFFT2D".into(),
                "ReluN1To1" => return "RELU_N1_TO_1".into(),
                _ => {}
            }
            // `Conv2d` → `CONV_2D`, `DepthwiseConv2d` → `DEPTHWISE_CONV_2D`,
            // `L2Pool2d` → `L2_POOL_2D` (a one-letter word keeps its digit).
            let mut out = String::new();
            let mut word = 0;
            for (i, ch) in debug.chars().enumerate() {
                let boundary = i > 0 && (ch.is_ascii_uppercase() || (ch.is_ascii_digit() && word > 1));
                if boundary {
                    out.push('_');
                }
                word = if ch.is_ascii_alphabetic() && !boundary {
                    word + 1
                } else if ch.is_ascii_alphabetic() {
                    1
                } else {
                    0
                };
                out.push(ch.to_ascii_uppercase());
            }
            out
        },
    )
}

impl<'a> Reader<'a> {
    pub(super) fn tensor(&self, index: i32) -> Result<&'a tfl::Tensor> {
        let tensors = self.graph.tensors.as_deref().unwrap_or_default();
        usize::try_from(index)
            .ok()
            .and_then(|i| tensors.get(i))
            .with_context(|| format!("tensor {index} does not exist"))
    }

    /// A tensor's name, for messages.
    pub(super) fn name(&self, index: i32) -> String {
        self.tensor(index).ok().and_then(|t| t.name.clone()).unwrap_or_else(|| format!("#{index}"))
    }

    pub(super) fn shape(&self, index: i32) -> Result<Vec<usize>> {
        let t = self.tensor(index)?;
        let shape = t.shape.as_deref().unwrap_or_default();
        shape
            .iter()
            .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("tensor '{}' has shape {shape:?}", self.name(index)))
    }

    fn expect_type(&self, index: i32, want: tfl::TensorType, role: &str) -> Result<&'a tfl::Tensor> {
        let t = self.tensor(index)?;
        if t.type_ != want {
            bail!(
                "tensor '{}' ({role}) is {:?}: tinykd imports int8 models (int8 activations and weights, int32 biases)",
                self.name(index),
                t.type_
            );
        }
        Ok(t)
    }

    /// An int8 activation's quantization (one scale and zero point).
    pub(super) fn activation(&self, index: i32) -> Result<QuantParams> {
        let t = self.expect_type(index, tfl::TensorType::Int8, "an activation")?;
        let q = t.quantization.as_deref();
        let (scale, zero) = (q.and_then(|q| q.scale.as_deref()), q.and_then(|q| q.zero_point.as_deref()));
        match (scale, zero) {
            (Some([s]), Some([z])) if s.is_finite() && *s > 0.0 && (-128..=127).contains(z) => {
                Ok(QuantParams { scale: *s, zero_point: *z as i32 })
            }
            _ => bail!("activation '{}' has no single int8 scale and zero point", self.name(index)),
        }
    }

    fn data(&self, t: &tfl::Tensor, index: i32) -> Result<&'a [u8]> {
        let buffers = self.model.buffers.as_deref().unwrap_or_default();
        let b =
            buffers.get(t.buffer as usize).with_context(|| format!("tensor '{}' has no buffer", self.name(index)))?;
        let data = match (&b.data, b.offset) {
            (Some(d), _) => d.as_slice(),
            (None, offset) if offset > 1 => {
                let (start, len) = (usize::try_from(offset)?, usize::try_from(b.size)?);
                self.bytes.get(start..start.saturating_add(len)).context("a buffer lies past the end of the file")?
            }
            _ => &[],
        };
        Ok(data)
    }

    /// A constant int8 tensor's values.
    pub(super) fn int8(&self, index: i32) -> Result<Vec<i8>> {
        let t = self.expect_type(index, tfl::TensorType::Int8, "weights")?;
        let data = self.data(t, index)?;
        let len: usize = self.shape(index)?.iter().product();
        if data.len() != len {
            bail!("weights '{}' hold {} bytes for {len} values", self.name(index), data.len());
        }
        Ok(data.iter().map(|&b| b as i8).collect())
    }

    /// A constant int32 tensor's values (`len` of them), or zeros for an
    /// absent optional input (index −1).
    pub(super) fn int32_or_zeros(&self, index: i32, len: usize) -> Result<Vec<i32>> {
        if index < 0 {
            return Ok(vec![0; len]);
        }
        let t = self.expect_type(index, tfl::TensorType::Int32, "a bias")?;
        let data = self.data(t, index)?;
        if data.len() != 4 * len {
            bail!("bias '{}' holds {} bytes for {len} values", self.name(index), data.len());
        }
        Ok(data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// A weight tensor's symmetric scales, one per output channel (a
    /// per-tensor scale repeated).
    pub(super) fn weight_scales(&self, index: i32, channels: usize) -> Result<Vec<f32>> {
        let t = self.tensor(index)?;
        let q = t.quantization.as_deref();
        let scales = q.and_then(|q| q.scale.as_deref()).unwrap_or_default();
        let zeros = q.and_then(|q| q.zero_point.as_deref()).unwrap_or_default();
        if zeros.iter().any(|&z| z != 0) {
            bail!("weights '{}' are not symmetric (a zero point is not 0)", self.name(index));
        }
        if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            bail!("weights '{}' have a scale that is not positive", self.name(index));
        }
        match scales.len() {
            1 => Ok(vec![scales[0]; channels]),
            n if n == channels => Ok(scales.to_vec()),
            n => bail!("weights '{}' have {n} scales for {channels} output channels", self.name(index)),
        }
    }
}

/// A fused activation tinykd runs as a clamp.
pub(super) fn activation(f: tfl::ActivationFunctionType) -> Result<Activation> {
    Ok(match f {
        tfl::ActivationFunctionType::None => Activation::None,
        tfl::ActivationFunctionType::Relu => Activation::Relu,
        tfl::ActivationFunctionType::Relu6 => Activation::Relu6,
        other => bail!("fused activation {other:?} is not supported (NONE, RELU, RELU6 are)"),
    })
}

/// A window's strides `[sh, sw]`, each positive. The caller checks that
/// the window gives the file's output shape with them.
pub(super) fn strides((sh, sw): (i32, i32)) -> Result<[usize; 2]> {
    let positive = |s: i32| usize::try_from(s).ok().filter(|&s| s > 0);
    match (positive(sh), positive(sw)) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => bail!("strides {sh}×{sw} are not positive"),
    }
}

/// The record's padding code (0 VALID, 1 SAME).
pub(super) fn padding(p: tfl::Padding) -> u16 {
    (p == tfl::Padding::Same) as u16
}

/// Per output channel: the bias and TFLite Micro's multiplier for
/// `s_in · s_w / s_out`.
pub(super) fn channel_table(bias: &[i32], weight_scales: &[f32], input: f32, output: f32) -> Vec<ChannelQuant> {
    bias.iter()
        .zip(weight_scales)
        .map(|(&bias, &s_w)| {
            let (multiplier, shift) = quantize_multiplier(input as f64 * s_w as f64 / output as f64);
            ChannelQuant { bias, multiplier, shift }
        })
        .collect()
}

impl Reader<'_> {
    /// A 4-D activation's `[H, W, C]` (batch 1).
    pub(super) fn hwc(&self, index: i32) -> Result<[usize; 3]> {
        match self.shape(index)?[..] {
            [1, h, w, c] => Ok([h, w, c]),
            ref s => bail!("tensor '{}' has shape {s:?}, not [1, H, W, C]", self.name(index)),
        }
    }
}

/// The operator's inputs and outputs, `-1` for an absent optional input.
pub(super) fn io(op: &tfl::Operator) -> (&[i32], &[i32]) {
    (op.inputs.as_deref().unwrap_or_default(), op.outputs.as_deref().unwrap_or_default())
}

/// The flatbuffer's model, owned; a file without TFLite's identifier, or
/// one planus cannot read whole, is an error.
/// A `.tflite` flatbuffer read into TFLite's object form (one-line errors
/// for foreign, truncated or corrupt files).
pub fn read_model(bytes: &[u8]) -> Result<tfl::Model> {
    if bytes.get(4..8) != Some(b"TFL3") {
        bail!("not a TFLite model (no TFL3 file identifier)");
    }
    let corrupt = |e: planus::Error| anyhow::anyhow!("a truncated or corrupt TFLite file: {e}");
    let root = <tfl::ModelRef as planus::ReadAsRoot>::read_as_root(bytes).map_err(corrupt)?;
    tfl::Model::try_from(root).map_err(corrupt)
}

/// `RESHAPE` and `SQUEEZE`: views of the activation, no layer on the device.
fn is_view(code: i32) -> bool {
    code == tfl::BuiltinOperator::Reshape as i32 || code == tfl::BuiltinOperator::Squeeze as i32
}

/// Reads a `.tflite` flatbuffer and converts it to a `.tkd` model.
pub fn import(bytes: &[u8]) -> Result<TkdModel> {
    let model = read_model(bytes)?;
    let graphs = model.subgraphs.as_deref().unwrap_or_default();
    let [graph] = graphs else { bail!("the model has {} subgraphs; tinykd imports one", graphs.len()) };
    let r = Reader { bytes, model: &model, graph };
    let (inputs, outputs) = (graph.inputs.as_deref().unwrap_or_default(), graph.outputs.as_deref().unwrap_or_default());
    let ([input], [output]) = (inputs, outputs) else {
        bail!("the model has {} inputs and {} outputs; tinykd imports one of each", inputs.len(), outputs.len());
    };
    let codes = model.operator_codes.as_deref().unwrap_or_default();
    // The `.tkd` tensor of each TFLite tensor written so far: 0 the input,
    // `k` layer `k − 1`'s output (a view shares its source's).
    let mut written = std::collections::HashMap::from([(*input, 0usize)]);
    let mut layers: Vec<TkdLayer> = Vec::new();
    for (k, op) in graph.operators.as_deref().unwrap_or_default().iter().enumerate() {
        let code = codes.get(op.opcode_index as usize).map(builtin_code).context("an operator has no operator code")?;
        let name = code_name(code);
        let (ins, outs) = io(op);
        let ([x, ..], [y]) = (ins, outs) else { bail!("operator {k} ({name}) has no input or not one output") };
        let context = || format!("operator {k} ({name}, output '{}')", r.name(*y));
        let source = |t: i32| {
            written.get(&t).copied().with_context(|| {
                format!(
                    "{}: reads tensor '{}', which is neither the model input nor an operator's output",
                    context(),
                    r.name(t)
                )
            })
        };
        if is_view(code) {
            // A view: the device's activation is flat already.
            let (qx, qy) = (r.activation(*x).with_context(context)?, r.activation(*y).with_context(context)?);
            if qx != qy {
                bail!("{}: its input and output are quantized differently", context());
            }
            let t = source(*x)?;
            written.insert(*y, t);
            continue;
        }
        let family = importer(code).with_context(|| {
            format!(
                "operator {k} ({name}) is not supported by tinykd (it runs CONV_2D, DEPTHWISE_CONV_2D, \
                 FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D, SOFTMAX, ADD, RESHAPE, SQUEEZE)"
            )
        })?;
        let mut layer = family.import(&r, op, code).with_context(context)?;
        layer.input = Some(source(*x)?);
        if layer.op.inputs() == 2 {
            layer.second = Some(source(ins[1])?);
        }
        layers.push(layer);
        written.insert(*y, layers.len());
    }
    if layers.is_empty() || written.get(output) != Some(&layers.len()) {
        bail!("the model's output '{}' is not written by its last operator", r.name(*output));
    }
    super::fuse::add_over_dying_inputs(&mut layers);
    super::fuse::conv_add(&mut layers);
    let in_shape = r.shape(*input)?;
    let (input_shape, channels_last) = match in_shape.as_slice() {
        [1, n] => (vec![*n], false),
        [1, l, c] => (vec![*c, *l], true),
        [1, h, w, c] => (vec![*c, *h, *w], true),
        s => bail!("input '{}' has shape {s:?}: tinykd takes [1, N], [1, L, C] or [1, H, W, C]", r.name(*input)),
    };
    let input_q = r.activation(*input)?;
    let output_q = layers.last().map_or(input_q, |l| l.output);
    let classes = r.shape(*output)?.iter().product();
    Ok(TkdModel {
        input_shape,
        input: input_q,
        output: output_q,
        classes,
        layers,
        data_channels_last: channels_last,
        single_rounding: false,
    })
}

/// What `tinykd inspect` says of a `.tflite`: each operator with its
/// output shape and whether tinykd runs it, then whether the whole model
/// imports (or why not).
pub fn describe(bytes: &[u8]) -> Result<String> {
    use std::fmt::Write as _;
    let model = read_model(bytes)?;
    let mut o = String::new();
    let codes = model.operator_codes.as_deref().unwrap_or_default();
    for (g, graph) in model.subgraphs.as_deref().unwrap_or_default().iter().enumerate() {
        let r = Reader { bytes, model: &model, graph };
        let ops = graph.operators.as_deref().unwrap_or_default();
        writeln!(o, "subgraph {g}: {} operators, {} tensors", ops.len(), graph.tensors.as_ref().map_or(0, Vec::len))?;
        for (k, op) in ops.iter().enumerate() {
            let code = codes.get(op.opcode_index as usize).map_or(-1, builtin_code);
            let out = io(op).1.first().map(|&y| (r.name(y), r.shape(y).unwrap_or_default()));
            let runs = if is_view(code) {
                "a view (no layer)"
            } else if importer(code).is_some() {
                "runs"
            } else {
                "NOT SUPPORTED"
            };
            let (name, shape) = out.unwrap_or_default();
            writeln!(o, "  {k:>3} {:<22} -> {name} {shape:?}  {runs}", code_name(code))?;
        }
    }
    match import(bytes).and_then(|m| super::tkd::encode(&m)) {
        Ok(blob) => {
            let m = crate::int8::parse(&blob)?;
            writeln!(
                o,
                "tinykd runs it: {} layers, arena {} B (most alive at once: {} B), {} B as .tkd",
                m.layer_count(),
                m.arena_bytes(),
                crate::int8::liveness_bound(&m)?,
                blob.len()
            )?;
        }
        Err(e) => writeln!(o, "tinykd does not run it: {e:#}")?,
    }
    Ok(o)
}

/// `tinykd import`: the `.tflite` at `path` as `.tkd` bytes.
pub fn import_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let model = import(&bytes).with_context(|| format!("{}: cannot import", path.display()))?;
    super::tkd::encode(&model).with_context(|| format!("{}: cannot import", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_codes_are_named_as_in_the_tflite_schema() {
        for (op, name) in [
            (tfl::BuiltinOperator::Conv2d, "CONV_2D"),
            (tfl::BuiltinOperator::DepthwiseConv2d, "DEPTHWISE_CONV_2D"),
            (tfl::BuiltinOperator::L2Pool2d, "L2_POOL_2D"),
            (tfl::BuiltinOperator::FullyConnected, "FULLY_CONNECTED"),
            (tfl::BuiltinOperator::Relu6, "RELU6"),
            (tfl::BuiltinOperator::Conv3dTranspose, "CONV_3D_TRANSPOSE"),
            (tfl::BuiltinOperator::Add, "ADD"),
        ] {
            assert_eq!(code_name(op as i32), name);
        }
        assert_eq!(code_name(100_000), "operator code 100000");
    }
}
