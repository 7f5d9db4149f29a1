//! Artefact writers: the `.tkd` blob, the float student as ONNX, the int8
//! student as QDQ ONNX or TFLite, the blob as Rust or C source.

pub mod fuse;
pub mod onnx;
mod ops;
pub mod qdq;
pub mod source;
pub mod tflite;
pub mod tflite_import;
pub mod tkd;

use std::path::Path;

use anyhow::{Context, Result, bail};

/// What `tinykd export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The float student (.ckpt) as ONNX (opset 13), input in the data's layout.
    Onnx,
    /// The int8 student (.tkd) as ONNX with QuantizeLinear/DequantizeLinear (QDQ).
    OnnxQdq,
    /// The int8 student (.tkd) as a TensorFlow Lite flatbuffer (TFLite Micro, Netron).
    Tflite,
    /// The int8 student (.tkd) as Rust source: `MODEL`, `ARENA_BYTES`, `MODEL_OPS`.
    Rust,
    /// The int8 student (.tkd) as a C header: `tinykd_model[]`, `TINYKD_ARENA_BYTES`, …
    C,
}

/// A layer's per-channel quantization as the int8 exporters write it.
pub(crate) struct ChannelScales {
    /// The channel table: bias (as stored), multiplier, shift.
    pub entries: Vec<tinykd_runtime::kernels::ChannelQuant>,
    pub weight_scales: Vec<f32>,
    /// `s_in · s_w`: the int32 biases' scales.
    pub bias_scales: Vec<f32>,
}

/// Layer `l`'s [`ChannelScales`], its input quantized at scale `input_scale`.
pub(crate) fn channel_scales(
    m: &tinykd_runtime::Model<'_>,
    l: &tinykd_runtime::Layer,
    input_scale: f32,
) -> Result<ChannelScales> {
    let table = m.channel_table(l);
    let entries: Vec<_> =
        (0..l.channel_count).filter_map(|o| tinykd_runtime::kernels::ChannelQuant::read(table, o)).collect();
    let weight_scales: Vec<f32> = (0..l.channel_count).filter_map(|o| m.weight_scale(l, o)).collect();
    if entries.len() != l.channel_count || weight_scales.len() != l.channel_count {
        bail!("a layer's channel table or weight scales are truncated");
    }
    let bias_scales = weight_scales.iter().map(|s| s * input_scale).collect();
    Ok(ChannelScales { entries, weight_scales, bias_scales })
}

/// A fully connected layer's plain int32 biases, as TFLite and ONNX hold
/// them: the blob stores `bias − z_in · Σ w` per output row (see
/// `tinykd_runtime::format`), so `z_in · Σ w` is added back.
pub(crate) fn plain_fc_bias(
    entries: &[tinykd_runtime::kernels::ChannelQuant],
    weights: &[i8],
    inputs: usize,
    input_zero_point: i32,
) -> Vec<i32> {
    entries
        .iter()
        .zip(weights.chunks(inputs.max(1)))
        .map(|(q, row)| {
            let sum: i32 = row.iter().map(|v| *v as i32).sum();
            q.bias.wrapping_add(input_zero_point.wrapping_mul(sum))
        })
        .collect()
}

/// Writes `model` (a `.ckpt` or `.tkd`) as `format` to `out`, atomically.
pub fn export(model: &Path, format: Format, out: &Path) -> Result<()> {
    let ext = model.extension().and_then(|e| e.to_str()).unwrap_or("");
    let name = model.file_stem().and_then(|s| s.to_str()).unwrap_or("student");
    let bytes = match (format, ext) {
        (Format::Onnx, "ckpt" | "json") => {
            let ck = crate::distill::Checkpoint::load(model)?;
            onnx::float_model(&ck.student, ck.layout().unwrap_or_default())
                .with_context(|| format!("{}: cannot export to ONNX", model.display()))?
        }
        (Format::Onnx, "tkd") => bail!(
            "{}: --format onnx exports the float student: give its .ckpt (an int8 .tkd goes to onnx-qdq, tflite, rust or c)",
            model.display()
        ),
        (Format::OnnxQdq, "tkd") => {
            let blob = crate::int8::read(model)?;
            qdq::int8_model(&blob, crate::int8::data_layout(&blob).unwrap_or_default())
                .with_context(|| format!("{}: cannot export to ONNX QDQ", model.display()))?
        }
        (Format::Tflite, "tkd") => {
            let blob = crate::int8::read(model)?;
            if tinykd_runtime::Model::from_bytes(&blob).is_ok_and(|m| m.single_rounding()) {
                crate::progress::Progress::from_env().note(&format!(
                    "{}: this model rounds once (--rounding single): desktop TFLite's optimised kernels compute \
                     it exactly; TFLite Micro's default build rounds twice and lands a step away on some outputs",
                    model.display()
                ));
            }
            tflite::int8_model(&blob).with_context(|| format!("{}: cannot export to TFLite", model.display()))?
        }
        (Format::Rust | Format::C, "tkd") => {
            let blob = crate::int8::read(model)?;
            let m = crate::int8::parse(&blob)?;
            match format {
                Format::Rust => source::rust(&m, name)?,
                _ => source::c(&m, name),
            }
            .into_bytes()
        }
        (Format::OnnxQdq | Format::Tflite, "ckpt" | "json") => bail!(
            "{}: --format {} exports the int8 student: quantize the checkpoint first (tinykd quantize … --out student.tkd)",
            model.display(),
            if format == Format::Tflite { "tflite" } else { "onnx-qdq" }
        ),
        (Format::Rust | Format::C, "ckpt" | "json") => bail!(
            "{}: --format {} embeds the int8 model: quantize the checkpoint first (tinykd quantize … --out student.tkd)",
            model.display(),
            if format == Format::Rust { "rust" } else { "c" }
        ),
        _ => bail!("{}: not a tinykd model (expected a .ckpt float student or a .tkd int8 student)", model.display()),
    };
    crate::util::write_atomic(out, &bytes)
}
