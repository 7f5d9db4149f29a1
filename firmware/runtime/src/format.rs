//! The `.tkd` container layout, shared by the host writer and the device parser.
//!
//! All integers are little-endian. The blob is:
//!
//! ```text
//! header (64 B) | layer table (layer_count × 80 B) | tensors, each 4-byte aligned
//! ```
//!
//! Header fields (byte offset: field):
//!
//! | off | field |
//! |----:|-------|
//! | 0 | magic `TKDM` |
//! | 4 | format version (u16) |
//! | 6 | header length (u16, 64) |
//! | 8 | total length in bytes (u32) |
//! | 12 | CRC-32 (ISO-HDLC, as zlib) of bytes `16..total` (u32) |
//! | 16 | layer count (u16) |
//! | 18 | layer record length (u16, 64) |
//! | 20 | class count (u16) |
//! | 22 | input rank (u8, 1..=4) |
//! | 23 | flags (u8): bit 0 = the host's data stores samples channels-last ([`FLAG_DATA_CHANNELS_LAST`]; host metadata); bit 1 = requantization rounds once ([`FLAG_SINGLE_ROUNDING`]); other bits 0 |
//! | 24 | input dims (4 × u16, unused dims 0) |
//! | 32 | input element count (u32) |
//! | 36 | input scale (f32 bits) — host-side metadata, never used by the int8 path |
//! | 40 | input zero point (i32) |
//! | 44 | output scale (f32 bits) |
//! | 48 | output zero point (i32) |
//! | 52 | arena bytes (u32): the layer outputs' plan (see the layer record) |
//! | 56 | layer table offset (u32) |
//! | 60 | reserved (0) |
//!
//! Layer record (byte offset: field):
//!
//! | off | field |
//! |----:|-------|
//! | 0 | operator ([`Op`]) |
//! | 1 | fused activation (0 none, 1 ReLU, 2 ReLU6) — informative, the clamps below rule |
//! | 2 | activation min (i8) |
//! | 3 | activation max (i8) |
//! | 4 | input element count (u32) |
//! | 8 | output element count (u32) |
//! | 12 | operator parameters (12 × u16) |
//! | 36 | input zero point (i32) |
//! | 40 | output zero point (i32) |
//! | 44 | output scale (f32 bits, metadata) |
//! | 48 | weights offset (u32), int8 |
//! | 52 | weights length (u32) |
//! | 56 | channel table offset (u32): per output channel `bias i32, multiplier i32, shift i32` |
//! | 60 | channel count (u32) |
//! | 64 | weight scales offset (u32): per output channel f32 (metadata, for exporters) |
//! | 68 | input tensor (u16): 0 the model input, `k` the output of layer `k − 1` |
//! | 70 | second input tensor (u16, same numbering), [`NO_TENSOR`] for one-input operators |
//! | 72 | output offset in the arena (u32) |
//! | 76 | reserved (0) |
//!
//! The layers form a graph in execution order: a layer reads tensors that
//! the model input or earlier layers produced, and the last layer's output
//! is the model's. Every layer output lives in the arena at the offset its
//! record gives, planned by the host over the tensors' lifetimes: while a
//! tensor may still be read, no other output overlaps it, except that an
//! operator that computes in place (see [`Op::Add`]) may write exactly over
//! its second input when that input is read by no later layer.
//! [`crate::Model::from_bytes`] checks all of it.
//!
//! Activations (including the model input) are stored channels-last (HWC):
//! element `(h, w, c)` of an `H × W × C` tensor is at `(h · W + w) · C + c`,
//! and 1-D data has `H = 1`. The host transposes its channels-first data
//! when it quantizes inputs.
//!
//! The meaning of the channel table's bias depends on the operator:
//!
//! * [`Op::FullyConnected`]: the bias already contains `−z_in · Σ w` (folded
//!   at export, as CMSIS-NN does) so the inner loop is a plain int8 dot
//!   product; the arithmetic is integer-exact, hence identical to TFLite's
//!   `Σ w·(x − z_in) + bias`. The record's input zero point is informative.
//! * [`Op::Conv2d`] and [`Op::DepthwiseConv2d`]: the bias is the plain int32
//!   bias, *not* folded. With SAME padding an edge window has only part of
//!   its taps in the input, so the zero-point correction differs per output
//!   position and cannot be one constant per channel; the kernel applies it
//!   using the record's input zero point (offset 36), which must be in
//!   `-128..=127`.
//! * [`Op::Softmax`]: one entry, not per channel: the bias field holds
//!   `diff_min`, the multiplier and shift those of `β · s_in · 2^26` (a left
//!   shift, `0..=30`); its one weight scale is β (metadata). Output scale
//!   1/256, zero point −128, as TFLite's int8 softmax.
//! * [`Op::Add`]: three entries: the first and second inputs' (bias field:
//!   the input's zero point; multiplier and shift: its rescaling), then the
//!   output's (bias 0). Weight scales: the two input scales and the output
//!   scale (metadata).
//!
//! Convolution and pooling shapes follow TFLite, per axis: VALID gives
//! `(in − k) / stride + 1` outputs (needs `in ≥ k`); SAME gives
//! `ceil(in / stride)` outputs with `max((out − 1)·stride + k − in, 0) / 2`
//! padding before (rounded down). Taps outside the input are skipped.
//! Windows have a stride per axis: parameter 6 is the height's, parameter
//! 8 the width's.

/// Magic bytes at the start of every `.tkd` blob.
pub const MAGIC: [u8; 4] = *b"TKDM";
/// Header flag: the dataset the model was trained on stores its samples
/// channels-last (`[T, C]`, `[H, W, C]`). Host-side metadata, so that
/// `tinykd eval` reads data the way the model was trained; the device input
/// is channels-last either way.
pub const FLAG_DATA_CHANNELS_LAST: u8 = 1;
/// Header flag: requantize with TFLite's single rounding
/// (`TFLITE_SINGLE_ROUNDING`: `(x·M + 2^(t−1)) >> t`, as desktop TFLite's
/// optimised kernels and onnxruntime's QDQ arithmetic) instead of the two
/// roundings of TFLite Micro and CMSIS-NN (the default). Runtimes older than
/// this flag refuse the blob (unknown flag) rather than round differently.
pub const FLAG_SINGLE_ROUNDING: u8 = 2;
/// Every header flag this runtime knows.
pub const KNOWN_FLAGS: u8 = FLAG_DATA_CHANNELS_LAST | FLAG_SINGLE_ROUNDING;

/// The format version this runtime reads and the host writes.
pub const VERSION: u16 = 2;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Length of one layer record.
pub const LAYER_RECORD_LEN: usize = 80;
/// A layer record's second input when the operator has one input.
pub const NO_TENSOR: u16 = u16::MAX;
/// Length of one channel-table entry (bias, multiplier, shift).
pub const CHANNEL_ENTRY_LEN: usize = 12;
/// Alignment of every tensor inside the blob.
pub const TENSOR_ALIGN: usize = 4;
/// Largest input rank the header can describe.
pub const MAX_INPUT_RANK: usize = 4;
/// Byte range covered by the CRC starts here (after magic, version, lengths and the CRC itself).
pub const CRC_START: usize = 16;

/// The CRC used for `.tkd` blobs (the zlib / PNG CRC-32).
pub const CRC: crc::Crc<u32, crc::NoTable> = crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// Header field offsets.
pub mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const HEADER_LEN: usize = 6;
    pub const TOTAL_LEN: usize = 8;
    pub const CRC: usize = 12;
    pub const LAYER_COUNT: usize = 16;
    pub const LAYER_RECORD_LEN: usize = 18;
    pub const CLASS_COUNT: usize = 20;
    pub const INPUT_RANK: usize = 22;
    pub const FLAGS: usize = 23;
    pub const INPUT_DIMS: usize = 24;
    pub const INPUT_LEN: usize = 32;
    pub const INPUT_SCALE: usize = 36;
    pub const INPUT_ZERO_POINT: usize = 40;
    pub const OUTPUT_SCALE: usize = 44;
    pub const OUTPUT_ZERO_POINT: usize = 48;
    pub const ARENA_BYTES: usize = 52;
    pub const LAYER_TABLE: usize = 56;
}

/// Layer record field offsets.
pub mod layer {
    pub const OP: usize = 0;
    pub const ACTIVATION: usize = 1;
    pub const ACT_MIN: usize = 2;
    pub const ACT_MAX: usize = 3;
    pub const INPUT_LEN: usize = 4;
    pub const OUTPUT_LEN: usize = 8;
    pub const PARAMS: usize = 12;
    pub const INPUT_ZERO_POINT: usize = 36;
    pub const OUTPUT_ZERO_POINT: usize = 40;
    pub const OUTPUT_SCALE: usize = 44;
    pub const WEIGHTS_OFFSET: usize = 48;
    pub const WEIGHTS_LEN: usize = 52;
    pub const CHANNELS_OFFSET: usize = 56;
    pub const CHANNEL_COUNT: usize = 60;
    pub const WEIGHT_SCALES_OFFSET: usize = 64;
    pub const INPUT_TENSOR: usize = 68;
    pub const SECOND_TENSOR: usize = 70;
    pub const OUTPUT_OFFSET: usize = 72;
    /// Number of u16 operator parameters.
    pub const PARAM_COUNT: usize = 12;
}

pub use crate::ops::Op;

/// A set of operators as a bit mask (bit `op as u8`): what a firmware build
/// links. [`crate::Model::run_with_ops`] takes it as a const parameter so the
/// kernels of operators outside the set are never linked.
pub type OpSet = u32;

/// Bit 31 of an [`OpSet`]: the kernels' single-rounding variant. A model's
/// operator set has it when its header has [`FLAG_SINGLE_ROUNDING`]; a build
/// whose set has it links the single-rounding kernels and, unless the set
/// also has [`DOUBLE_ROUNDING`], not the default ones — so firmware links
/// the one variant its model needs.
pub const SINGLE_ROUNDING: OpSet = 1 << 31;
/// Bit 30 of an [`OpSet`]: with [`SINGLE_ROUNDING`], link the default
/// (double-rounding) kernels too. A set without [`SINGLE_ROUNDING`] links
/// only those, with or without this bit.
pub const DOUBLE_ROUNDING: OpSet = 1 << 30;

/// Every operator this runtime implements, in both rounding variants.
pub const ALL_OPS: OpSet = crate::ops::EVERY_OPERATOR | SINGLE_ROUNDING | DOUBLE_ROUNDING;

/// Fused activation (informative: the clamps in the record are what the kernel applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Activation {
    None = 0,
    Relu = 1,
    Relu6 = 2,
}

impl Activation {
    /// Decodes an activation byte.
    pub fn from_u8(v: u8) -> Option<Activation> {
        match v {
            0 => Some(Activation::None),
            1 => Some(Activation::Relu),
            2 => Some(Activation::Relu6),
            _ => None,
        }
    }
}

/// Reads a little-endian u16 at `off`; `None` when out of bounds.
#[inline]
pub fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Reads a little-endian u32 at `off`; `None` when out of bounds.
#[inline]
pub fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a little-endian i32 at `off`; `None` when out of bounds.
#[inline]
pub fn read_i32(b: &[u8], off: usize) -> Option<i32> {
    read_u32(b, off).map(|v| v as i32)
}

/// Rounds `n` up to the tensor alignment.
pub const fn align_up(n: usize) -> usize {
    n.div_ceil(TENSOR_ALIGN) * TENSOR_ALIGN
}
