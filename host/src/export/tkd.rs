//! `.tkd` writer. The layout is defined in `tinykd_runtime::format`; every
//! blob written here is read back through the runtime before it is returned.

use anyhow::{Context, Result, bail};
use tinykd_runtime::format::{self, Activation, Op, header, layer};
use tinykd_runtime::kernels::{ChannelQuant, Clamp};
use tinykd_runtime::plan::{Plan, PlanLayer};
use tinykd_runtime::{Model, QuantParams};

/// One quantized layer to serialise.
#[derive(Debug, Clone)]
pub struct TkdLayer {
    pub op: Op,
    pub activation: Activation,
    pub clamp: Clamp,
    pub input_len: usize,
    pub output_len: usize,
    pub params: [u16; layer::PARAM_COUNT],
    pub input_zero_point: i32,
    pub output: QuantParams,
    pub weights: Vec<i8>,
    pub channels: Vec<ChannelQuant>,
    pub weight_scales: Vec<f32>,
    /// The tensor the layer reads: 0 the model input, `k` layer `k − 1`'s
    /// output; `None` the layer before it (a chain).
    pub input: Option<usize>,
    /// A two-input operator's second input, same numbering.
    pub second: Option<usize>,
}

impl TkdLayer {
    /// The tensor layer `i` reads.
    pub fn input_tensor(&self, i: usize) -> usize {
        self.input.unwrap_or(i)
    }
}

/// A whole quantized model to serialise.
#[derive(Debug, Clone)]
pub struct TkdModel {
    pub input_shape: Vec<usize>,
    pub input: QuantParams,
    pub output: QuantParams,
    pub classes: usize,
    pub layers: Vec<TkdLayer>,
    /// The training data stored samples channels-last (header flag; host metadata).
    pub data_channels_last: bool,
    /// Requantize with TFLite's single rounding (header flag).
    pub single_rounding: bool,
}

fn u16_of(v: usize, what: &str) -> Result<u16> {
    u16::try_from(v).with_context(|| format!("{what} = {v} does not fit the .tkd format (max 65535)"))
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{what} = {v} does not fit the .tkd format"))
}

/// The arena plan of `m`'s layers (see `tinykd_runtime::plan`), after
/// checking that each reads tensors written before it.
pub fn plan_arena(m: &TkdModel) -> Result<Plan> {
    let mut layers = Vec::with_capacity(m.layers.len());
    for (i, l) in m.layers.iter().enumerate() {
        let input = l.input_tensor(i);
        for t in std::iter::once(input).chain(l.second) {
            if t > i {
                bail!("layer {i} ({}) reads tensor {t}, which no layer before it writes", l.op.name());
            }
        }
        layers.push(PlanLayer { output_len: l.output_len, input, second: l.second });
    }
    Ok(tinykd_runtime::plan::plan(&layers))
}

/// Serialises `m` and validates the result with the device parser.
pub fn encode(m: &TkdModel) -> Result<Vec<u8>> {
    if m.input_shape.is_empty() || m.input_shape.len() > format::MAX_INPUT_RANK {
        bail!("input rank {} is not supported (1..=4)", m.input_shape.len());
    }
    let table = format::HEADER_LEN;
    let mut out = vec![0u8; table + m.layers.len() * format::LAYER_RECORD_LEN];
    let push = |out: &mut Vec<u8>, bytes: &[u8]| -> Result<usize> {
        out.resize(format::align_up(out.len()), 0);
        let off = out.len();
        out.extend_from_slice(bytes);
        Ok(off)
    };
    let plan = plan_arena(m)?;
    let mut records = Vec::new();
    for (i, l) in m.layers.iter().enumerate() {
        let weights: Vec<u8> = l.weights.iter().map(|w| *w as u8).collect();
        let w_off = push(&mut out, &weights)?;
        let ch: Vec<u8> = l.channels.iter().flat_map(|c| c.to_le_bytes()).collect();
        let c_off = push(&mut out, &ch)?;
        let sc: Vec<u8> = l.weight_scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let s_off = push(&mut out, &sc)?;
        let mut r = [0u8; format::LAYER_RECORD_LEN];
        r[layer::OP] = l.op as u8;
        r[layer::ACTIVATION] = l.activation as u8;
        r[layer::ACT_MIN] = l.clamp.min as u8;
        r[layer::ACT_MAX] = l.clamp.max as u8;
        let put32 = |r: &mut [u8], off: usize, v: u32| r[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut r, layer::INPUT_LEN, u32_of(l.input_len, "layer input length")?);
        put32(&mut r, layer::OUTPUT_LEN, u32_of(l.output_len, "layer output length")?);
        for (k, p) in l.params.iter().enumerate() {
            r[layer::PARAMS + 2 * k..layer::PARAMS + 2 * k + 2].copy_from_slice(&p.to_le_bytes());
        }
        put32(&mut r, layer::INPUT_ZERO_POINT, l.input_zero_point as u32);
        put32(&mut r, layer::OUTPUT_ZERO_POINT, l.output.zero_point as u32);
        put32(&mut r, layer::OUTPUT_SCALE, l.output.scale.to_bits());
        put32(&mut r, layer::WEIGHTS_OFFSET, u32_of(w_off, "offset")?);
        put32(&mut r, layer::WEIGHTS_LEN, u32_of(weights.len(), "weights")?);
        put32(&mut r, layer::CHANNELS_OFFSET, u32_of(c_off, "offset")?);
        put32(&mut r, layer::CHANNEL_COUNT, u32_of(l.channels.len(), "channels")?);
        put32(&mut r, layer::WEIGHT_SCALES_OFFSET, u32_of(s_off, "offset")?);
        let tensor = |t: usize| u16_of(t, "tensor index");
        r[layer::INPUT_TENSOR..layer::INPUT_TENSOR + 2].copy_from_slice(&tensor(l.input_tensor(i))?.to_le_bytes());
        let second = l.second.map(tensor).transpose()?.unwrap_or(format::NO_TENSOR);
        r[layer::SECOND_TENSOR..layer::SECOND_TENSOR + 2].copy_from_slice(&second.to_le_bytes());
        put32(&mut r, layer::OUTPUT_OFFSET, u32_of(plan.offsets[i], "arena offset")?);
        records.push((i, r));
    }
    for (i, r) in records {
        let at = table + i * format::LAYER_RECORD_LEN;
        out[at..at + format::LAYER_RECORD_LEN].copy_from_slice(&r);
    }
    out.resize(format::align_up(out.len()), 0);
    let arena = plan.arena;

    let total = out.len();
    let h = &mut out[..format::HEADER_LEN];
    h[header::MAGIC..header::MAGIC + 4].copy_from_slice(&format::MAGIC);
    h[header::VERSION..header::VERSION + 2].copy_from_slice(&format::VERSION.to_le_bytes());
    h[header::HEADER_LEN..header::HEADER_LEN + 2].copy_from_slice(&(format::HEADER_LEN as u16).to_le_bytes());
    h[header::TOTAL_LEN..header::TOTAL_LEN + 4].copy_from_slice(&u32_of(total, "model size")?.to_le_bytes());
    h[header::LAYER_COUNT..header::LAYER_COUNT + 2]
        .copy_from_slice(&u16_of(m.layers.len(), "layer count")?.to_le_bytes());
    h[header::LAYER_RECORD_LEN..header::LAYER_RECORD_LEN + 2]
        .copy_from_slice(&(format::LAYER_RECORD_LEN as u16).to_le_bytes());
    h[header::CLASS_COUNT..header::CLASS_COUNT + 2].copy_from_slice(&u16_of(m.classes, "class count")?.to_le_bytes());
    h[header::INPUT_RANK] = m.input_shape.len() as u8;
    h[header::FLAGS] = if m.data_channels_last { format::FLAG_DATA_CHANNELS_LAST } else { 0 }
        | if m.single_rounding { format::FLAG_SINGLE_ROUNDING } else { 0 };
    for (k, d) in m.input_shape.iter().enumerate() {
        h[header::INPUT_DIMS + 2 * k..header::INPUT_DIMS + 2 * k + 2]
            .copy_from_slice(&u16_of(*d, "input dim")?.to_le_bytes());
    }
    let input_len: usize = m.input_shape.iter().product();
    h[header::INPUT_LEN..header::INPUT_LEN + 4].copy_from_slice(&u32_of(input_len, "input length")?.to_le_bytes());
    h[header::INPUT_SCALE..header::INPUT_SCALE + 4].copy_from_slice(&m.input.scale.to_bits().to_le_bytes());
    h[header::INPUT_ZERO_POINT..header::INPUT_ZERO_POINT + 4].copy_from_slice(&m.input.zero_point.to_le_bytes());
    h[header::OUTPUT_SCALE..header::OUTPUT_SCALE + 4].copy_from_slice(&m.output.scale.to_bits().to_le_bytes());
    h[header::OUTPUT_ZERO_POINT..header::OUTPUT_ZERO_POINT + 4].copy_from_slice(&m.output.zero_point.to_le_bytes());
    h[header::ARENA_BYTES..header::ARENA_BYTES + 4].copy_from_slice(&u32_of(arena, "arena")?.to_le_bytes());
    h[header::LAYER_TABLE..header::LAYER_TABLE + 4].copy_from_slice(&(table as u32).to_le_bytes());
    let crc = format::CRC.checksum(&out[format::CRC_START..]);
    out[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Model::from_bytes(&out).map_err(|e| anyhow::anyhow!("internal error: the written model does not validate: {e}"))?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-layer model with hand-picked parameters.
    pub(crate) fn tiny_model() -> TkdModel {
        let half = 1 << 30;
        TkdModel {
            input_shape: vec![1, 3],
            input: QuantParams { scale: 0.1, zero_point: 0 },
            output: QuantParams { scale: 0.2, zero_point: 1 },
            classes: 2,
            layers: vec![
                TkdLayer {
                    op: Op::FullyConnected,
                    activation: Activation::Relu,
                    clamp: Clamp { min: -128, max: 127 },
                    input_len: 3,
                    output_len: 4,
                    params: [3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    input_zero_point: 0,
                    output: QuantParams { scale: 0.1, zero_point: -128 },
                    weights: vec![1, 2, 3, -1, -2, -3, 4, 0, -4, 1, 1, 1],
                    channels: (0..4).map(|i| ChannelQuant { bias: i, multiplier: half, shift: 0 }).collect(),
                    weight_scales: vec![0.01; 4],
                    input: None,
                    second: None,
                },
                TkdLayer {
                    op: Op::FullyConnected,
                    activation: Activation::None,
                    clamp: Clamp { min: -128, max: 127 },
                    input_len: 4,
                    output_len: 2,
                    params: [4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    input_zero_point: -128,
                    output: QuantParams { scale: 0.2, zero_point: 1 },
                    weights: vec![1, -1, 1, -1, 2, 2, 2, 2],
                    channels: (0..2).map(|_| ChannelQuant { bias: 0, multiplier: half, shift: -1 }).collect(),
                    weight_scales: vec![0.02; 2],
                    input: None,
                    second: None,
                },
            ],
            data_channels_last: false,
            single_rounding: false,
        }
    }

    #[test]
    fn round_trips_and_runs() {
        let bytes = encode(&tiny_model()).unwrap();
        let m = Model::from_bytes(&bytes).unwrap();
        assert_eq!(m.input_shape(), &[1, 3]);
        assert_eq!(m.class_count(), 2);
        assert_eq!(m.arena_bytes(), 6);
        let mut arena = [0u8; 6];
        // Layer 1 (bias = channel index, ×0.5, zp -128):
        //   [6+0, -6+1, -8+2, 2+3] = [6, -5, -6, 5] -> [3, -3, -3, 3] (half away from zero)
        //   -> [-125, -131, -131, -125] -> clamp -> [-125, -128, -128, -125].
        // Layer 2 (×0.25, zp 1): [-125+128-128+125, 2·(-506)] = [0, -1012] -> [0, -253] -> [1, -252] -> [1, -128].
        let out = m.run(&[1, -2, 3], &mut arena).unwrap();
        assert_eq!(out, &[1, -128]);
    }

    #[test]
    fn every_corruption_is_an_error_never_a_panic() {
        let bytes = encode(&tiny_model()).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                assert!(Model::from_bytes(&b).is_err(), "flipping byte {i} went unnoticed");
            }
        }
        for len in 0..bytes.len() {
            assert!(Model::from_bytes(&bytes[..len]).is_err(), "truncation to {len} accepted");
        }
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let mut bytes = encode(&tiny_model()).unwrap();
        bytes[header::VERSION] = 9;
        assert_eq!(
            Model::from_bytes(&bytes).unwrap_err(),
            tinykd_runtime::Error::UnsupportedVersion { found: 9, supported: format::VERSION }
        );
    }

    #[test]
    fn run_checks_caller_buffers() {
        let bytes = encode(&tiny_model()).unwrap();
        let m = Model::from_bytes(&bytes).unwrap();
        let mut small = [0u8; 5];
        assert!(matches!(m.run(&[0, 0, 0], &mut small), Err(tinykd_runtime::Error::ArenaTooSmall { .. })));
        let mut arena = [0u8; 6];
        assert!(matches!(m.run(&[0, 0], &mut arena), Err(tinykd_runtime::Error::InputLength { .. })));
    }
}
