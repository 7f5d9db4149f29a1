//! The int8 model on the host, below every stage that needs one: a `.tkd`
//! read and parsed, inputs quantized to its input parameters in the
//! device's channels-last order, and runs through `tinykd-runtime` — the
//! firmware's own code, so host results are the device's bit for bit.
//!
//! `quant`, `pipeline`, `device`, `export` and `report` use it; it uses only
//! the runtime, [`crate::data`] and the student's shape helpers, so no
//! stage has to reach up into another for it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tinykd_runtime::Model;
use tinykd_runtime::format::{self, header};

use crate::data::{Dataset, Layout};

/// Loads and validates a `.tkd` file, with the file named in errors.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read model", path.display()))?;
    Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(bytes)
}

/// The most bytes of layer outputs alive at once in `model`'s graph (with
/// in-place layers writing over their second input, as planned): no arena
/// plan needs less, so `arena_bytes` at this bound is optimal.
pub fn liveness_bound(model: &Model<'_>) -> Result<usize> {
    let mut layers = Vec::with_capacity(model.layer_count());
    for l in model.layers() {
        let l = l.map_err(|e| anyhow::anyhow!("{e}"))?;
        let second = (l.second_tensor != format::NO_TENSOR).then_some(l.second_tensor as usize);
        layers.push(tinykd_runtime::plan::PlanLayer {
            output_len: l.output_len,
            input: l.input_tensor as usize,
            second,
        });
    }
    Ok(tinykd_runtime::plan::plan(&layers).bound)
}

/// The runtime's parsed view of a blob (validated again: cheap, and a blob
/// from anywhere gets a clear error instead of a panic).
pub fn parse(bytes: &[u8]) -> Result<Model<'_>> {
    Model::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The layout of the data a validated blob was trained on.
pub fn data_layout(bytes: &[u8]) -> Option<Layout> {
    let flags = *bytes.get(header::FLAGS)?;
    Some(if flags & format::FLAG_DATA_CHANNELS_LAST != 0 { Layout::ChannelsLast } else { Layout::ChannelsFirst })
}

/// Channels-first `[C, H, W]` sample to the device's channels-last `[H, W, C]`.
pub fn chw_to_hwc(x: &[f32], shape: crate::student::Shape) -> Vec<f32> {
    let [c, h, w] = shape;
    let p = h * w;
    if c == 1 || p == 1 {
        return x.to_vec();
    }
    let len = c * p;
    let mut out = vec![0.0; x.len()];
    for (src, dst) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        for ci in 0..c {
            for i in 0..p {
                dst[i * c + ci] = src[ci * p + i];
            }
        }
    }
    out
}

/// Checks that a `.tkd` model takes the data's samples.
pub fn check_model_data(m: &Model<'_>, data: &Dataset) -> Result<()> {
    if m.input_len() != data.sample_len() {
        bail!(
            "{}: samples have shape {:?} but the model expects {:?}",
            data.path.display(),
            data.sample_shape,
            m.input_shape()
        );
    }
    Ok(())
}

/// Quantizes inputs with the model's input parameters (the runtime's
/// rounding), reordered to the device's channels-last layout.
pub fn quantize_inputs(model: &Model<'_>, x: &[f32]) -> Vec<i8> {
    let p = model.input_quant();
    let dims: Vec<usize> = model.input_shape().iter().map(|d| *d as usize).collect();
    let x = match crate::student::geometry::as_chw(&dims) {
        Some(shape) => chw_to_hwc(x, shape),
        None => x.to_vec(),
    };
    x.iter().map(|v| tinykd_runtime::quantize(*v, p)).collect()
}

/// Runs a `.tkd` blob through the firmware runtime: predictions and int8 logits.
pub fn run_int8(bytes: &[u8], x: &[f32], n: usize) -> Result<(Vec<usize>, Vec<i8>)> {
    let model = parse(bytes)?;
    let len = model.input_len();
    if x.len() != n * len {
        bail!("inputs have {} values per sample, the model expects {len}", x.len() / n.max(1));
    }
    run_quantized(&model, &quantize_inputs(&model, x), n)
}

/// Runs `n` already-quantized (channels-last) inputs through the runtime:
/// predictions and int8 logits.
pub fn run_quantized(model: &Model<'_>, q: &[i8], n: usize) -> Result<(Vec<usize>, Vec<i8>)> {
    let len = model.input_len();
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut pred = Vec::with_capacity(n);
    let mut logits = Vec::with_capacity(n * model.class_count());
    for i in 0..n {
        let out = model.run(&q[i * len..(i + 1) * len], &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
        pred.push(tinykd_runtime::argmax(out));
        logits.extend_from_slice(out);
    }
    Ok((pred, logits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chw_to_hwc_interleaves_channels() {
        assert_eq!(chw_to_hwc(&[1.0, 2.0, 3.0, 10.0, 20.0, 30.0], [2, 1, 3]), vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
        assert_eq!(chw_to_hwc(&[1.0, 2.0], [1, 1, 2]), vec![1.0, 2.0]);
    }
}
