//! Loading (with full validation) and running a `.tkd` model.

use crate::compiled::{CompiledLayer, Source, Step, Wiring, check_ops, run_graph};
use crate::error::Error;
use crate::format::{self, ALL_OPS, Activation, Op, OpSet, header, layer, read_i32, read_u16, read_u32};
use crate::kernels::{Clamp, ConvParams, PoolParams};

/// Quantization of a tensor: `real = scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// One decoded layer record. Offsets index into the model blob.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layer {
    pub op: Op,
    pub activation: Activation,
    pub clamp: Clamp,
    pub input_len: usize,
    pub output_len: usize,
    pub params: [u16; layer::PARAM_COUNT],
    pub input_zero_point: i32,
    pub output: QuantParams,
    pub weights_offset: usize,
    pub weights_len: usize,
    pub channels_offset: usize,
    pub channel_count: usize,
    pub weight_scales_offset: usize,
    /// The tensor the layer reads: 0 the model input, `k` layer `k − 1`'s output.
    pub input_tensor: u16,
    /// A two-input operator's second input (same numbering), else [`format::NO_TENSOR`].
    pub second_tensor: u16,
    /// Where the layer's output starts in the arena.
    pub output_offset: usize,
}

/// A validated model, borrowing its blob (flash on a device).
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    blob: &'a [u8],
    layer_count: usize,
    layer_table: usize,
    class_count: usize,
    input_rank: usize,
    input_dims: [u16; format::MAX_INPUT_RANK],
    input_len: usize,
    input: QuantParams,
    output: QuantParams,
    arena_bytes: usize,
    /// Operators the layers use (computed once at load).
    ops: OpSet,
}

fn malformed(what: &'static str) -> Error {
    Error::Malformed(what)
}

impl Layer {
    /// Shape and quantization of a [`Op::Conv2d`] or [`Op::DepthwiseConv2d`]
    /// layer, from params `[in_h, in_w, in_c, out_c, kernel_h, kernel_w,
    /// stride_h, padding, stride_w, 0, 0, 0]`. Checks the parameters themselves; lengths are
    /// checked by `Model::from_bytes`.
    pub fn conv_params(&self) -> Result<ConvParams, Error> {
        ConvParams::from_record(self.params, self.input_zero_point, self.output.zero_point, self.clamp)
            .map_err(malformed)
    }

    /// Shape of a [`Op::MaxPool2d`] or [`Op::AvgPool2d`] layer, from params
    /// `[in_h, in_w, c, pool_h, pool_w, stride_h, padding, 0, stride_w, 0, 0, 0]`.
    pub fn pool_params(&self) -> Result<PoolParams, Error> {
        PoolParams::from_record(self.params, self.clamp).map_err(malformed)
    }
}

impl<'a> Model<'a> {
    /// Validates a `.tkd` blob: magic, version, length, CRC, every layer
    /// record, tensor bounds, shape chaining and the arena plan. Any corrupt or
    /// truncated blob is an `Err`, never a panic.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        Self::parse::<true>(bytes)
    }

    /// A blob that already passed [`Model::from_bytes`] — a board's build
    /// script validates the model it embeds — checked again for its header
    /// and CRC-32 (flash can rot) but not layer by layer, so the firmware
    /// does not carry the validation code. Memory-safe on any input (every
    /// access is bounds-checked), but on a blob that never passed
    /// `from_bytes`, `run` may panic instead of returning an error.
    pub fn from_validated(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        Self::parse::<false>(bytes)
    }

    fn parse<const FULL: bool>(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        if bytes.len() < format::HEADER_LEN {
            return Err(Error::Truncated { needed: format::HEADER_LEN, found: bytes.len() });
        }
        if bytes[header::MAGIC..header::MAGIC + 4] != format::MAGIC {
            return Err(Error::BadMagic);
        }
        let short = malformed("header field out of bounds");
        let version = read_u16(bytes, header::VERSION).ok_or(short)?;
        if version != format::VERSION {
            return Err(Error::UnsupportedVersion { found: version, supported: format::VERSION });
        }
        if read_u16(bytes, header::HEADER_LEN).ok_or(short)? as usize != format::HEADER_LEN {
            return Err(malformed("unexpected header length"));
        }
        let total = read_u32(bytes, header::TOTAL_LEN).ok_or(short)? as usize;
        if total < format::HEADER_LEN {
            return Err(malformed("declared length is shorter than the header"));
        }
        if bytes.len() < total {
            return Err(Error::Truncated { needed: total, found: bytes.len() });
        }
        // Trailing bytes (e.g. flash padding) are ignored; the CRC covers the declared length.
        let blob = &bytes[..total];
        let stored = read_u32(blob, header::CRC).ok_or(short)?;
        let computed = format::CRC.checksum(&blob[format::CRC_START..]);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }

        let layer_count = read_u16(blob, header::LAYER_COUNT).ok_or(short)? as usize;
        if read_u16(blob, header::LAYER_RECORD_LEN).ok_or(short)? as usize != format::LAYER_RECORD_LEN {
            return Err(malformed("unexpected layer record length"));
        }
        let class_count = read_u16(blob, header::CLASS_COUNT).ok_or(short)? as usize;
        let input_rank = blob[header::INPUT_RANK] as usize;
        if blob[header::FLAGS] & !format::KNOWN_FLAGS != 0 {
            return Err(malformed("unknown header flags"));
        }
        let rounding =
            if blob[header::FLAGS] & format::FLAG_SINGLE_ROUNDING != 0 { format::SINGLE_ROUNDING } else { 0 };
        if input_rank == 0 || input_rank > format::MAX_INPUT_RANK {
            return Err(malformed("input rank must be 1..=4"));
        }
        let mut input_dims = [0u16; format::MAX_INPUT_RANK];
        let mut dims_product: usize = 1;
        for (i, d) in input_dims.iter_mut().enumerate() {
            *d = read_u16(blob, header::INPUT_DIMS + 2 * i).ok_or(short)?;
            if i < input_rank {
                dims_product = dims_product.saturating_mul(*d as usize);
            } else if *d != 0 {
                return Err(malformed("unused input dims must be 0"));
            }
        }
        let input_len = read_u32(blob, header::INPUT_LEN).ok_or(short)? as usize;
        if input_len == 0 || dims_product != input_len {
            return Err(malformed("input dims do not multiply to the input length"));
        }
        let input = QuantParams {
            scale: f32::from_bits(read_u32(blob, header::INPUT_SCALE).ok_or(short)?),
            zero_point: read_i32(blob, header::INPUT_ZERO_POINT).ok_or(short)?,
        };
        let output = QuantParams {
            scale: f32::from_bits(read_u32(blob, header::OUTPUT_SCALE).ok_or(short)?),
            zero_point: read_i32(blob, header::OUTPUT_ZERO_POINT).ok_or(short)?,
        };
        let arena_bytes = read_u32(blob, header::ARENA_BYTES).ok_or(short)? as usize;
        let layer_table = read_u32(blob, header::LAYER_TABLE).ok_or(short)? as usize;
        if layer_count == 0 {
            return Err(malformed("model has no layers"));
        }
        if class_count == 0 {
            return Err(malformed("class count is 0"));
        }
        let table_end = layer_count
            .checked_mul(format::LAYER_RECORD_LEN)
            .and_then(|n| n.checked_add(layer_table))
            .ok_or(malformed("layer table out of bounds"))?;
        if layer_table < format::HEADER_LEN || table_end > total {
            return Err(malformed("layer table out of bounds"));
        }

        let mut model = Model {
            blob,
            layer_count,
            layer_table,
            class_count,
            input_rank,
            input_dims,
            input_len,
            input,
            output,
            arena_bytes,
            ops: 0,
        };

        if !FULL {
            let mut ops = 0;
            for i in 0..layer_count {
                ops |= model.layer(i)?.op.bit();
            }
            model.ops = ops | rounding;
            return Ok(model);
        }
        let mut ops = 0;
        for i in 0..layer_count {
            let l = model.layer(i)?;
            if l.output_len == 0 {
                return Err(malformed("layer output is empty"));
            }
            if model.tensor_len(l.input_tensor, i)? != l.input_len {
                return Err(malformed("layer input length differs from its input tensor's"));
            }
            match (l.op.inputs(), l.second_tensor) {
                (1, format::NO_TENSOR) => {}
                (2, t) if t != format::NO_TENSOR => {
                    if model.tensor_len(t, i)? != l.output_len {
                        return Err(malformed("second input length differs from the output length"));
                    }
                }
                _ => return Err(malformed("second input tensor does not match the operator")),
            }
            if l.output_offset.checked_add(l.output_len).is_none_or(|end| end > arena_bytes) {
                return Err(malformed("layer output does not fit the declared arena"));
            }
            model.validate_layer(&l)?;
            ops |= l.op.bit();
        }
        if model.layer(layer_count - 1)?.output_len != class_count {
            return Err(malformed("last layer output length differs from the class count"));
        }
        model.check_plan()?;
        model.ops = ops | rounding;
        Ok(model)
    }

    /// Length of tensor `t` as read by layer `reader` (which only reads the
    /// model input and earlier layers' outputs).
    fn tensor_len(&self, t: u16, reader: usize) -> Result<usize, Error> {
        match t as usize {
            0 => Ok(self.input_len),
            k if k <= reader => Ok(self.layer(k - 1)?.output_len),
            _ => Err(malformed("layer reads a tensor that is not produced before it")),
        }
    }

    /// Checks the arena plan: no layer writes over a tensor that the layer
    /// itself or a later one still reads, except a two-input operator
    /// writing exactly over its second input, read by no later layer (in
    /// place). Quadratic in the layer count, without allocation.
    fn check_plan(&self) -> Result<(), Error> {
        let overlap = malformed("the arena plan writes over a tensor that is still read");
        for j in 0..self.layer_count {
            let produced = self.layer(j)?;
            let (start, end) = (produced.output_offset, produced.output_offset + produced.output_len);
            let tensor = (j + 1) as u16;
            // The last layer that reads tensor `j + 1`.
            let mut last_read = j;
            for k in j + 1..self.layer_count {
                let l = self.layer(k)?;
                if l.input_tensor == tensor || l.second_tensor == tensor {
                    last_read = k;
                }
            }
            for i in j + 1..=last_read {
                let l = self.layer(i)?;
                let (s, e) = (l.output_offset, l.output_offset + l.output_len);
                if s >= end || start >= e {
                    continue;
                }
                let in_place =
                    l.second_tensor == tensor && l.input_tensor != tensor && i == last_read && (s, e) == (start, end);
                if !in_place {
                    return Err(overlap);
                }
            }
        }
        Ok(())
    }

    fn tensor_in_bounds(&self, offset: usize, len: usize) -> bool {
        offset >= format::HEADER_LEN && offset.checked_add(len).is_some_and(|end| end <= self.blob.len())
    }

    fn validate_layer(&self, l: &Layer) -> Result<(), Error> {
        if l.clamp.min > l.clamp.max {
            return Err(malformed("activation min exceeds max"));
        }
        crate::ops::validate(l)?;
        let too_many = malformed("channel table out of bounds");
        let channels_len = l.channel_count.checked_mul(format::CHANNEL_ENTRY_LEN).ok_or(too_many)?;
        let scales_len = l.channel_count.checked_mul(4).ok_or(too_many)?;
        if !self.tensor_in_bounds(l.weights_offset, l.weights_len)
            || !self.tensor_in_bounds(l.channels_offset, channels_len)
            || !self.tensor_in_bounds(l.weight_scales_offset, scales_len)
        {
            return Err(malformed("tensor out of bounds"));
        }
        for c in 0..l.channel_count {
            let e = l.channels_offset + c * format::CHANNEL_ENTRY_LEN;
            let mult = read_i32(self.blob, e + 4).ok_or(malformed("channel table out of bounds"))?;
            let shift = read_i32(self.blob, e + 8).ok_or(malformed("channel table out of bounds"))?;
            if mult < 0 || !(-31..=30).contains(&shift) {
                return Err(malformed("requantization multiplier or shift out of range"));
            }
        }
        Ok(())
    }

    /// Decodes layer record `i` (bounds-checked, not semantically validated).
    pub fn layer(&self, i: usize) -> Result<Layer, Error> {
        let short = malformed("layer record out of bounds");
        if i >= self.layer_count {
            return Err(short);
        }
        let r = self.layer_table + i * format::LAYER_RECORD_LEN;
        let b = self.blob.get(r..r + format::LAYER_RECORD_LEN).ok_or(short)?;
        let op = Op::from_u8(b[layer::OP]).ok_or(Error::UnsupportedOp(b[layer::OP]))?;
        let activation = Activation::from_u8(b[layer::ACTIVATION]).ok_or(malformed("unknown activation"))?;
        let mut params = [0u16; layer::PARAM_COUNT];
        for (k, p) in params.iter_mut().enumerate() {
            *p = read_u16(b, layer::PARAMS + 2 * k).ok_or(short)?;
        }
        let u = |off| read_u32(b, off).map(|v| v as usize).ok_or(short);
        Ok(Layer {
            op,
            activation,
            clamp: Clamp { min: b[layer::ACT_MIN] as i8, max: b[layer::ACT_MAX] as i8 },
            input_len: u(layer::INPUT_LEN)?,
            output_len: u(layer::OUTPUT_LEN)?,
            params,
            input_zero_point: read_i32(b, layer::INPUT_ZERO_POINT).ok_or(short)?,
            output: QuantParams {
                scale: f32::from_bits(read_u32(b, layer::OUTPUT_SCALE).ok_or(short)?),
                zero_point: read_i32(b, layer::OUTPUT_ZERO_POINT).ok_or(short)?,
            },
            weights_offset: u(layer::WEIGHTS_OFFSET)?,
            weights_len: u(layer::WEIGHTS_LEN)?,
            channels_offset: u(layer::CHANNELS_OFFSET)?,
            channel_count: u(layer::CHANNEL_COUNT)?,
            weight_scales_offset: u(layer::WEIGHT_SCALES_OFFSET)?,
            input_tensor: read_u16(b, layer::INPUT_TENSOR).ok_or(short)?,
            second_tensor: read_u16(b, layer::SECOND_TENSOR).ok_or(short)?,
            output_offset: u(layer::OUTPUT_OFFSET)?,
        })
    }

    /// All layers, in order.
    pub fn layers(&self) -> impl Iterator<Item = Result<Layer, Error>> + '_ {
        (0..self.layer_count).map(|i| self.layer(i))
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layer_count
    }

    /// Number of int8 input elements `run` expects.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Input shape (without batch), e.g. `[1, 40]`.
    pub fn input_shape(&self) -> &[u16] {
        &self.input_dims[..self.input_rank]
    }

    /// Number of output classes (length of the slice `run` returns).
    pub fn class_count(&self) -> usize {
        self.class_count
    }

    /// Quantization of the input tensor.
    pub fn input_quant(&self) -> QuantParams {
        self.input
    }

    /// Quantization of the output logits.
    pub fn output_quant(&self) -> QuantParams {
        self.output
    }

    /// Arena size `run` needs, in bytes.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// The blob this model was loaded from (validated length).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.blob
    }

    /// The blob's CRC-32 (header field, checked at load): names the model.
    pub fn crc(&self) -> u32 {
        read_u32(self.blob, header::CRC).unwrap_or(0)
    }

    /// Int8 weights of a layer.
    pub fn weights(&self, l: &Layer) -> &'a [i8] {
        let b = &self.blob[l.weights_offset..l.weights_offset + l.weights_len];
        i8_slice(b)
    }

    /// Raw channel table of a layer (`bias, multiplier, shift` per channel).
    pub fn channel_table(&self, l: &Layer) -> &'a [u8] {
        &self.blob[l.channels_offset..l.channels_offset + l.channel_count * format::CHANNEL_ENTRY_LEN]
    }

    /// Per-output-channel weight scales (host metadata for exporters).
    pub fn weight_scale(&self, l: &Layer, channel: usize) -> Option<f32> {
        if channel >= l.channel_count {
            return None;
        }
        read_u32(self.blob, l.weight_scales_offset + 4 * channel).map(f32::from_bits)
    }

    /// Whether the model requantizes with TFLite's single rounding (header
    /// flag [`format::FLAG_SINGLE_ROUNDING`]); otherwise with the two
    /// roundings of TFLite Micro.
    pub fn single_rounding(&self) -> bool {
        self.ops & format::SINGLE_ROUNDING != 0
    }

    /// The operators this model uses (with [`format::SINGLE_ROUNDING`] when
    /// it rounds once).
    pub fn ops(&self) -> OpSet {
        self.ops
    }

    /// What the model says about itself: CRC, sizes, input shape and
    /// quantization (what firmware tells the host).
    pub fn identity(&self) -> Identity {
        Identity {
            crc: self.crc(),
            blob_len: self.blob.len(),
            input_len: self.input_len,
            input_rank: self.input_rank,
            input_dims: self.input_dims,
            class_count: self.class_count,
            arena_bytes: self.arena_bytes,
            input: self.input,
            output: self.output,
        }
    }

    /// Layer `i` decoded into the [`Step`] both [`Model::run`] and a
    /// compiled model run (a board's build script writes these out).
    pub fn compiled_layer(&self, i: usize) -> Result<CompiledLayer<'a>, Error> {
        self.compiled_layer_in::<ALL_OPS>(i)
    }

    /// [`Model::compiled_layer`] decoding only the operators in `OPS` (the
    /// others are [`Error::OpNotBuiltIn`]), so firmware does not link the
    /// other operators' parameter decoding either.
    fn compiled_layer_in<const OPS: OpSet>(&self, i: usize) -> Result<CompiledLayer<'a>, Error> {
        let l = self.layer(i)?;
        let step = Step::decode::<OPS>(&l, self.weights(&l), self.channel_table(&l))?;
        Ok(CompiledLayer { step, wiring: self.wiring(&l)? })
    }

    /// Where a layer reads and writes (its record's tensors, resolved).
    pub fn wiring(&self, l: &Layer) -> Result<Wiring, Error> {
        let source = |t: u16| -> Result<Source, Error> {
            match t as usize {
                0 => Ok(Source::Input),
                k if k <= self.layer_count => {
                    let p = self.layer(k - 1)?;
                    Ok(Source::Arena(p.output_offset, p.output_offset.saturating_add(p.output_len)))
                }
                _ => Err(malformed("layer reads a tensor that is not produced before it")),
            }
        };
        let second = if l.second_tensor == format::NO_TENSOR { None } else { Some(source(l.second_tensor)?) };
        Ok(Wiring {
            input: source(l.input_tensor)?,
            second,
            output: (l.output_offset, l.output_offset.saturating_add(l.output_len)),
        })
    }

    /// Runs the model on one int8 input and returns the int8 logits, which
    /// live in `arena`. Links every kernel; firmware for one model should
    /// call [`Model::run_with_ops`] with that model's operator set.
    pub fn run<'b>(&self, input: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], Error> {
        self.run_with_ops::<ALL_OPS>(input, arena)
    }

    /// [`Model::run`] with only the kernels of the operators in `OPS` (an
    /// [`OpSet`], e.g. the `MODEL_OPS` a board's build script computes from
    /// the embedded model): the others are never called, so the linker drops
    /// them. A layer outside `OPS` is [`Error::OpNotBuiltIn`], before any
    /// layer runs.
    pub fn run_with_ops<'b, const OPS: OpSet>(&self, input: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], Error> {
        let single = check_ops::<OPS>(self.ops)?;
        let (n, len, bytes) = (self.layer_count, self.input_len, self.arena_bytes);
        run_graph(
            n,
            input,
            len,
            arena,
            bytes,
            |i| self.compiled_layer_in::<OPS>(i),
            |l, x, y| l.step.run::<OPS>(single, x, y),
        )
    }

    /// Runs layer `i` alone on its int8 input (channels-last), writing its
    /// output: what [`Model::run`] does for that layer. A two-input
    /// operator finds its second input in `output` (see
    /// [`crate::compiled::Wiring::second`]). For host tools that need every
    /// layer's output (quantization-aware training); firmware calls
    /// [`Model::run_with_ops`].
    pub fn run_layer_at(&self, i: usize, input: &[i8], output: &mut [i8]) -> Result<(), Error> {
        let l = self.compiled_layer(i)?;
        let record = self.layer(i)?;
        if input.len() != record.input_len {
            return Err(Error::InputLength { expected: record.input_len, found: input.len() });
        }
        if output.len() != record.output_len {
            return Err(Error::InputLength { expected: record.output_len, found: output.len() });
        }
        l.step.run::<ALL_OPS>(self.single_rounding(), input, output)
    }
}

/// What a model says about itself (header fields), for firmware to tell
/// the host; a compiled model carries the `.tkd`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Identity {
    /// The `.tkd` blob's CRC-32: names the model.
    pub crc: u32,
    /// Length of the `.tkd` blob.
    pub blob_len: usize,
    pub input_len: usize,
    pub input_rank: usize,
    /// Input shape; entries past `input_rank` are 0.
    pub input_dims: [u16; format::MAX_INPUT_RANK],
    pub class_count: usize,
    pub arena_bytes: usize,
    pub input: QuantParams,
    pub output: QuantParams,
}

impl Identity {
    /// Input shape (without batch), e.g. `[1, 40]`.
    pub fn input_shape(&self) -> &[u16] {
        &self.input_dims[..self.input_rank.min(format::MAX_INPUT_RANK)]
    }
}

/// Views bytes as int8 (same size and alignment; safe through `bytemuck`).
fn i8_slice(b: &[u8]) -> &[i8] {
    bytemuck::cast_slice(b)
}

#[cfg(test)]
mod tests;

/// A valid model of every operator (for other modules' tests).
#[cfg(all(test, feature = "codegen"))]
pub(crate) fn test_blob() -> Vec<u8> {
    tests::blob()
}

/// [`test_blob`] with one multiplier per layer (per-tensor weight scales).
#[cfg(test)]
pub(crate) fn test_blob_per_tensor() -> Vec<u8> {
    tests::blob_per_tensor()
}
