//! Int8 kernels. Portable Rust, integer only, no allocation, no panics on any
//! arguments: each kernel checks its slice lengths against its shape once,
//! up front (`Model::from_bytes` has validated them already); the window
//! kernels write nothing if they disagree, fully connected writes the
//! outputs it can.
//!
//! Activations are channels-last (HWC): element `(h, w, c)` of an `H × W × C`
//! tensor is at `(h · W + w) · C + c`; 1-D data has `H = 1`.

pub mod add;
pub mod conv;
pub mod conv_add;
pub mod conv_gathered;
// Only cores with SMLAD take it (and the host's tests).
#[cfg(any(tinykd_dsp, test))]
mod conv_packed_rows;
pub mod depthwise;
// Only cores with SXTB16 take it (and the host's tests).
#[cfg(any(tinykd_dsp, test))]
mod depthwise_quads;
pub mod dot;
pub mod fully_connected;
pub mod pool;
#[cfg(test)]
pub(crate) mod reference;
pub mod softmax;
pub mod window;

pub use conv::{conv2d, conv2d_rounded};
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_rounded};
pub use fully_connected::{fully_connected, fully_connected_rounded};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};
pub use window::{Padding, Window};

use crate::format::{CHANNEL_ENTRY_LEN, layer::PARAM_COUNT};
use crate::requant::QuantizedMultiplier;

/// Per-output-channel requantization parameters, read from the channel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelQuant {
    /// Int32 bias. Fully connected layers store it with the input zero point
    /// folded in (`bias − z_in · Σ w`); convolutions store the plain bias
    /// (see [`crate::format`]).
    pub bias: i32,
    /// Q31 multiplier of `s_in · s_w / s_out`.
    pub multiplier: i32,
    /// Power-of-two exponent of the same scale.
    pub shift: i32,
}

impl ChannelQuant {
    /// Decodes one 12-byte channel-table entry.
    #[inline(always)]
    pub const fn from_le_bytes(b: &[u8; 12]) -> ChannelQuant {
        ChannelQuant {
            bias: i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            multiplier: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            shift: i32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    /// Encodes the entry as stored in a `.tkd` channel table.
    pub const fn to_le_bytes(self) -> [u8; 12] {
        let (b, m, s) = (self.bias.to_le_bytes(), self.multiplier.to_le_bytes(), self.shift.to_le_bytes());
        [b[0], b[1], b[2], b[3], m[0], m[1], m[2], m[3], s[0], s[1], s[2], s[3]]
    }

    /// Requantizes an int32 accumulator to int8: scale, add the output zero
    /// point, clamp to the fused activation range. (`acc` already holds the bias.)
    #[inline(always)]
    pub fn requantize(self, acc: i32, output_zero_point: i32, act_min: i8, act_max: i8) -> i8 {
        Requantizer::new(self, output_zero_point, Clamp { min: act_min, max: act_max }).apply(acc)
    }

    /// Entry `i` of a raw channel table, `None` past its end.
    #[inline(always)]
    pub fn read(table: &[u8], i: usize) -> Option<ChannelQuant> {
        let start = i.checked_mul(CHANNEL_ENTRY_LEN)?;
        let entry = table.get(start..start.checked_add(CHANNEL_ENTRY_LEN)?)?;
        Some(ChannelQuant::from_le_bytes(entry.try_into().ok()?))
    }
}

/// One output channel's bias and multiplier, decoded (a
/// [`QuantizedMultiplier`]: the shift split and the rounding mask). A
/// specialised model's layer functions read tables of these, decoded at
/// compile time ([`prepare_channels`]), instead of decoding a `.tkd` entry
/// per output: in kernels that visit every channel once per pixel (the
/// gathering convolution), decoding cost more than a 5-tap dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedChannel {
    /// The entry's bias, as stored (see [`ChannelQuant::bias`]).
    pub bias: i32,
    pub multiplier: QuantizedMultiplier,
}

impl PreparedChannel {
    #[inline(always)]
    pub const fn new(q: ChannelQuant) -> PreparedChannel {
        PreparedChannel { bias: q.bias, multiplier: QuantizedMultiplier::new(q.multiplier, q.shift) }
    }
}

/// A raw channel table (`N` entries of [`CHANNEL_ENTRY_LEN`] bytes),
/// decoded: `const`, so a compiled model's tables are prepared by the
/// compiler and only the decoded form is in flash.
pub const fn prepare_channels<const N: usize>(table: &[u8]) -> [PreparedChannel; N] {
    assert!(table.len() == N * CHANNEL_ENTRY_LEN, "channel table length");
    let mut out = [PreparedChannel::new(ChannelQuant { bias: 0, multiplier: 0, shift: 0 }); N];
    let mut i = 0;
    while i < N {
        // `ChannelQuant::read` in a form a `const fn` can call.
        let mut entry = [0u8; CHANNEL_ENTRY_LEN];
        let mut k = 0;
        while k < CHANNEL_ENTRY_LEN {
            entry[k] = table[i * CHANNEL_ENTRY_LEN + k];
            k += 1;
        }
        out[i] = PreparedChannel::new(ChannelQuant::from_le_bytes(&entry));
        i += 1;
    }
    out
}

/// Where a kernel reads its output channels' bias and multiplier: a
/// `.tkd` channel table (`&[u8]`, decoded at each use) or a prepared one
/// (`&[PreparedChannel]`). The kernels are generic over it, so each is compiled for the
/// table its caller has.
pub trait ChannelTable: Copy + core::fmt::Debug + PartialEq {
    /// Whether [`ChannelTable::channel`] is a plain read (no decoding):
    /// kernels then read the table where they use a channel instead of
    /// keeping a decoded copy, so that a compiled model's constant table
    /// folds into the code.
    const PREPARED: bool;
    /// The number of whole channels the table holds.
    fn count(self) -> usize;
    /// Whether the table holds exactly `n` channels (no partial entry).
    fn holds(self, n: usize) -> bool;
    /// Channel `o`, `None` past the table's end.
    fn channel(self, o: usize) -> Option<PreparedChannel>;
}

impl ChannelTable for &[u8] {
    const PREPARED: bool = false;
    #[inline(always)]
    fn count(self) -> usize {
        self.len() / CHANNEL_ENTRY_LEN
    }
    #[inline(always)]
    fn holds(self, n: usize) -> bool {
        n.checked_mul(CHANNEL_ENTRY_LEN) == Some(self.len())
    }
    #[inline(always)]
    fn channel(self, o: usize) -> Option<PreparedChannel> {
        ChannelQuant::read(self, o).map(PreparedChannel::new)
    }
}

impl ChannelTable for &[PreparedChannel] {
    const PREPARED: bool = true;
    #[inline(always)]
    fn count(self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn holds(self, n: usize) -> bool {
        self.len() == n
    }
    #[inline(always)]
    fn channel(self, o: usize) -> Option<PreparedChannel> {
        self.get(o).copied()
    }
}

/// A layer whose output channels all share one multiplier (per-tensor
/// weight scales, as TFLite's per-tensor models and microflow take): the
/// biases alone per channel, 4 bytes instead of a [`PreparedChannel`]'s 16.
/// A compiled model takes it when every layer qualifies
/// (`codegen::compiled_source`, with the `codegen` feature). Kernels take it as
/// `&SharedMultiplier` (`B = [i32]`): two words, like a slice, so LLVM
/// still propagates a layer function's constant table into the kernel and
/// the multiplier folds into the code.
#[derive(Debug, PartialEq, Eq)]
pub struct SharedMultiplier<B: ?Sized = [i32]> {
    pub multiplier: QuantizedMultiplier,
    pub biases: B,
}

impl SharedMultiplier {
    /// The multiplier and shift every entry of a raw channel table holds,
    /// `None` if two entries differ (or the table is empty or holds a
    /// partial entry): for a build script choosing the table's form.
    pub fn shared_by(table: &[u8]) -> Option<(i32, i32)> {
        let first = ChannelQuant::read(table, 0)?;
        let n = table.count();
        let same = |o| {
            ChannelQuant::read(table, o).is_some_and(|q| (q.multiplier, q.shift) == (first.multiplier, first.shift))
        };
        (table.holds(n) && (1..n).all(same)).then_some((first.multiplier, first.shift))
    }
}

impl ChannelTable for &SharedMultiplier {
    const PREPARED: bool = true;
    #[inline(always)]
    fn count(self) -> usize {
        self.biases.len()
    }
    #[inline(always)]
    fn holds(self, n: usize) -> bool {
        self.biases.len() == n
    }
    #[inline(always)]
    fn channel(self, o: usize) -> Option<PreparedChannel> {
        self.biases.get(o).map(|&bias| PreparedChannel { bias, multiplier: self.multiplier })
    }
}

/// [`ChannelQuant::requantize`] for one output channel, decoded once per
/// channel rather than per output (the multiplier's shift split and rounding
/// mask; see [`QuantizedMultiplier`]). Bit-identical by construction: it *is*
/// the definition `ChannelQuant::requantize` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requantizer {
    multiplier: QuantizedMultiplier,
    output_zero_point: i32,
    /// The clamp moved before the zero point: `[min − z_out, max − z_out]`.
    lo: i32,
    hi: i32,
}

impl Requantizer {
    #[inline(always)]
    pub fn new(q: ChannelQuant, output_zero_point: i32, clamp: Clamp) -> Requantizer {
        Requantizer::prepared(QuantizedMultiplier::new(q.multiplier, q.shift), output_zero_point, clamp)
    }

    /// [`Requantizer::new`] from a decoded multiplier.
    #[inline(always)]
    pub fn prepared(multiplier: QuantizedMultiplier, output_zero_point: i32, clamp: Clamp) -> Requantizer {
        let shifted = |v: i8| (v as i64 - output_zero_point as i64).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        Requantizer { multiplier, output_zero_point, lo: shifted(clamp.min), hi: shifted(clamp.max) }
    }

    /// Scales an accumulator (bias included), adds the output zero point, clamps.
    ///
    /// TFLite adds the zero point, then clamps; clamping to the range moved
    /// by `−z_out` first gives the same int8 for every value (no int32
    /// overflow to saturate) whenever `z_out` is an int8 zero point, and
    /// saves the saturating add. `max` is applied last, as in [`Clamp::apply`],
    /// so an inverted range gives `max` and cannot panic.
    #[inline(always)]
    pub fn apply(self, acc: i32) -> i8 {
        self.apply_rounded::<false>(acc)
    }

    /// [`Requantizer::apply`] with TFLite's double rounding (`SINGLE = false`,
    /// TFLite Micro's and CMSIS-NN's) or its single rounding (`SINGLE = true`,
    /// `TFLITE_SINGLE_ROUNDING`, desktop TFLite's optimised kernels). A
    /// constant, so each kernel is compiled for the one it needs.
    #[inline(always)]
    pub fn apply_rounded<const SINGLE: bool>(self, acc: i32) -> i8 {
        let v = if SINGLE { self.multiplier.apply_single(acc) } else { self.multiplier.apply(acc) };
        v.max(self.lo).min(self.hi).wrapping_add(self.output_zero_point) as i8
    }

    /// [`Requantizer::apply_rounded`] with a clamp to the whole int8 range
    /// as one `ssat`, for the four-row pass of fully connected layers on
    /// Armv7-M (in the shared kernels of the `compiled` engine, where the
    /// clamp is not a constant, the range test is a branch per output:
    /// +147 instructions on the main job's M3 run). Given the clamp in Rust, LLVM moves the zero point's addition after it and compares
    /// twice against the shifted bounds: five more instructions per output
    /// of a layer without activation (FC 40→32 on the M3: 3.08 → 2.88 per
    /// MAC). Not for the convolutions: the `asm!` stops LLVM from folding
    /// the requantization into the unrolled channel loops of short
    /// windows, which lost more (conv 1×40×1→8: 5.34 → 6.92).
    #[inline(always)]
    pub fn apply_rounded_saturating<const SINGLE: bool>(self, acc: i32) -> i8 {
        let z = self.output_zero_point;
        if self.lo.wrapping_add(z) != i8::MIN as i32 || self.hi.wrapping_add(z) != i8::MAX as i32 {
            return self.apply_rounded::<SINGLE>(acc);
        }
        // Held within ±2^30, the value takes an int8 zero point without
        // overflow, and saturating the sum is TFLite's add-then-clamp.
        saturate_i8(self.multiplier.apply_bounded::<SINGLE>(acc).wrapping_add(z))
    }
}

/// `v` clamped to the int8 range: one `ssat` on Armv7-M.
#[inline(always)]
fn saturate_i8(v: i32) -> i8 {
    #[cfg(any(tinykd_v7m, tinykd_dsp))]
    {
        let r: i32;
        // SAFETY: a register-only instruction; it may set the sticky Q
        // flag, which nothing reads.
        #[allow(unsafe_code)]
        unsafe {
            core::arch::asm!("ssat {r}, #8, {v}", r = lateout(reg) r, v = in(reg) v, options(pure, nomem, nostack));
        }
        r as i8
    }
    #[cfg(not(any(tinykd_v7m, tinykd_dsp)))]
    {
        v.clamp(i8::MIN as i32, i8::MAX as i32) as i8
    }
}

/// What a kernel does with each requantized output value: store it
/// ([`Store`]), or combine it with the value already there (a convolution
/// followed by an addition, see [`add::AddInto`]). A type parameter of the
/// convolution kernels, so the plain store costs nothing.
pub trait Epilogue: Copy {
    fn put(&self, slot: &mut i8, value: i8);
}

/// Stores each output value: every kernel's default.
#[derive(Debug, Clone, Copy)]
pub struct Store;

impl Epilogue for Store {
    #[inline(always)]
    fn put(&self, slot: &mut i8, value: i8) {
        *slot = value;
    }
}

/// Output clamp of a fused activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clamp {
    pub min: i8,
    pub max: i8,
}

impl Clamp {
    /// Clamps `v`; `max` then `min`, so an inverted range cannot panic.
    #[inline(always)]
    pub fn apply(self, v: i32) -> i8 {
        v.max(self.min as i32).min(self.max as i32) as i8
    }
}

/// Shape and quantization of a convolution (regular or depthwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    pub window: Window,
    pub in_channels: usize,
    /// Must equal `in_channels` for a depthwise convolution (depth multiplier 1).
    pub out_channels: usize,
    /// Subtracted from every input value (`x − z_in`), TFLite's `input_offset`.
    pub input_zero_point: i32,
    pub output_zero_point: i32,
    pub clamp: Clamp,
}

/// Shape of a pooling layer; input and output share their quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    pub window: Window,
    pub channels: usize,
    pub clamp: Clamp,
}

impl ConvParams {
    /// From a layer record's parameters `[in_h, in_w, in_c, out_c, kernel_h,
    /// kernel_w, stride_h, padding, stride_w, 0, 0, 0]` (see
    /// [`crate::format`]). `const`, so a model compiled into the firmware
    /// has its shapes at compile time.
    pub const fn from_record(
        p: [u16; PARAM_COUNT],
        input_zero_point: i32,
        output_zero_point: i32,
        clamp: Clamp,
    ) -> Result<ConvParams, &'static str> {
        let [in_h, in_w, in_c, out_c, kh, kw, stride_h, padding, stride_w, r0, r1, r2] = p;
        if r0 != 0 || r1 != 0 || r2 != 0 {
            return Err("convolution parameters 9, 10 and 11 must be 0");
        }
        if in_c == 0 || out_c == 0 {
            return Err("convolution channel count is 0");
        }
        let Some(padding) = Padding::from_u16(padding) else {
            return Err("convolution padding must be 0 (valid) or 1 (same)");
        };
        let (kh, kw, sh, sw) = (kh as usize, kw as usize, stride_h as usize, stride_w as usize);
        match Window::with_strides(in_h as usize, in_w as usize, kh, kw, sh, sw, padding) {
            Ok(window) => Ok(ConvParams {
                window,
                in_channels: in_c as usize,
                out_channels: out_c as usize,
                input_zero_point,
                output_zero_point,
                clamp,
            }),
            Err(e) => Err(e),
        }
    }
}

impl PoolParams {
    /// From a layer record's parameters `[in_h, in_w, c, pool_h, pool_w,
    /// stride_h, padding, 0, stride_w, 0, 0, 0]`; `const` like
    /// [`ConvParams::from_record`].
    pub const fn from_record(p: [u16; PARAM_COUNT], clamp: Clamp) -> Result<PoolParams, &'static str> {
        let [in_h, in_w, c, ph, pw, stride_h, padding, r0, stride_w, r1, r2, r3] = p;
        if r0 != 0 || r1 != 0 || r2 != 0 || r3 != 0 {
            return Err("pool parameters 7, 9, 10 and 11 must be 0");
        }
        if c == 0 {
            return Err("pool channel count is 0");
        }
        let Some(padding) = Padding::from_u16(padding) else {
            return Err("pool padding must be 0 (valid) or 1 (same)");
        };
        let (ph, pw, sh, sw) = (ph as usize, pw as usize, stride_h as usize, stride_w as usize);
        match Window::with_strides(in_h as usize, in_w as usize, ph, pw, sh, sw, padding) {
            Ok(window) => Ok(PoolParams { window, channels: c as usize, clamp }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requant::multiply_by_quantized_multiplier;

    /// TFLite's order of operations, literally: scale, add the zero point
    /// (here without overflow: saturating), clamp min then max.
    fn tflite(acc: i32, m: i32, shift: i32, zp: i32, clamp: Clamp) -> i8 {
        let v = multiply_by_quantized_multiplier(acc, m, shift).saturating_add(zp);
        v.max(clamp.min as i32).min(clamp.max as i32) as i8
    }

    #[test]
    fn requantizer_hand_cases() {
        let full = Clamp { min: -128, max: 127 };
        let half = ChannelQuant { bias: 0, multiplier: 1 << 30, shift: 0 };
        // 9 · 0.5 = 4.5 → 5, + z_out 3 = 8.
        assert_eq!(Requantizer::new(half, 3, full).apply(9), 8);
        // Saturates at the top and bottom of int8 whatever the zero point.
        assert_eq!(Requantizer::new(half, 100, full).apply(1_000_000), 127);
        assert_eq!(Requantizer::new(half, -100, full).apply(-1_000_000), -128);
        // A fused ReLU clamp [z_out, 127]: negative reals land on z_out.
        let relu = Clamp { min: -20, max: 127 };
        assert_eq!(Requantizer::new(half, -20, relu).apply(-50), -20);
        // An inverted range gives its max, as `Clamp::apply`.
        assert_eq!(Requantizer::new(half, 0, Clamp { min: 10, max: -10 }).apply(0), -10);
    }

    #[test]
    fn a_table_prepared_at_compile_time_decodes_as_the_raw_one() {
        const RAW: [u8; 36] = {
            let mut t = [0u8; 36];
            let entries = [(7, 1 << 30, 0), (-300, i32::MAX, -31), (5, 1_500_000_000, 3)];
            let mut i = 0;
            while i < 3 {
                let (b, m, s) = entries[i];
                let e = ChannelQuant { bias: b, multiplier: m, shift: s }.to_le_bytes();
                let mut k = 0;
                while k < 12 {
                    t[i * 12 + k] = e[k];
                    k += 1;
                }
                i += 1;
            }
            t
        };
        static PREPARED: [PreparedChannel; 3] = prepare_channels::<3>(&RAW);
        let (raw, prepared) = (&RAW[..], &PREPARED[..]);
        assert!(raw.count() == 3 && prepared.count() == 3);
        assert!(raw.holds(3) && !raw.holds(2) && prepared.holds(3) && !prepared.holds(2));
        assert!(raw.channel(3).is_none() && prepared.channel(3).is_none());
        assert!(!RAW[..35].holds(3) && RAW[..35].count() == 2);
        for o in 0..3 {
            let q = ChannelQuant::read(&RAW, o).unwrap();
            assert_eq!(prepared.channel(o), raw.channel(o));
            assert_eq!(prepared.channel(o).unwrap().bias, q.bias);
            for acc in [-1_000_000, -77, 0, 12_345, i32::MAX] {
                let r =
                    Requantizer::prepared(prepared.channel(o).unwrap().multiplier, -3, Clamp { min: -128, max: 127 });
                assert_eq!(r.apply(acc), q.requantize(acc, -3, -128, 127));
            }
        }
    }

    #[test]
    fn a_shared_multiplier_table_decodes_as_the_raw_one() {
        let (m, s) = (1_500_000_000, -9);
        let biases = [7, -300, 0];
        let raw: Vec<u8> =
            biases.iter().flat_map(|&bias| ChannelQuant { bias, multiplier: m, shift: s }.to_le_bytes()).collect();
        assert_eq!(SharedMultiplier::shared_by(&raw), Some((m, s)));
        let shared: &SharedMultiplier = &SharedMultiplier { multiplier: QuantizedMultiplier::new(m, s), biases };
        assert!(shared.count() == 3 && shared.holds(3) && !shared.holds(2));
        for o in 0..4 {
            assert_eq!(shared.channel(o), raw[..].channel(o), "channel {o}");
        }
        // Not shared: one entry's multiplier or shift differs, no entry, a partial one.
        let mut other = raw.clone();
        other[2 * 12 + 4] ^= 1;
        assert_eq!(SharedMultiplier::shared_by(&other), None);
        let mut other = raw.clone();
        other[12 + 8] ^= 1;
        assert_eq!(SharedMultiplier::shared_by(&other), None);
        assert_eq!(SharedMultiplier::shared_by(&[]), None);
        assert_eq!(SharedMultiplier::shared_by(&raw[..35]), None);
        assert_eq!(SharedMultiplier::shared_by(&raw[..12]), Some((m, s)));
    }

    proptest::proptest! {
        #[test]
        fn requantizer_is_tflites_order_of_operations(
            acc: i32,
            m in 0..=i32::MAX,
            shift in -31i32..=30,
            zp in -128i32..=127,
            a: i8,
            b: i8,
        ) {
            let clamp = Clamp { min: a, max: b };
            let q = ChannelQuant { bias: 0, multiplier: m, shift };
            let r = Requantizer::new(q, zp, clamp);
            proptest::prop_assert_eq!(r.apply(acc), tflite(acc, m, shift, zp, clamp));
            proptest::prop_assert_eq!(r.apply_rounded_saturating::<false>(acc), tflite(acc, m, shift, zp, clamp));
        }

        /// The `ssat` path: a clamp to the whole int8 range, any accumulator.
        #[test]
        fn saturating_requantizer_is_tflites_order_of_operations(
            acc: i32,
            m in 0..=i32::MAX,
            shift in -31i32..=30,
            zp in -128i32..=127,
        ) {
            let clamp = Clamp { min: -128, max: 127 };
            let q = ChannelQuant { bias: 0, multiplier: m, shift };
            let r = Requantizer::new(q, zp, clamp);
            proptest::prop_assert_eq!(r.apply_rounded_saturating::<false>(acc), tflite(acc, m, shift, zp, clamp));
            proptest::prop_assert_eq!(r.apply_rounded_saturating::<true>(acc), r.apply_rounded::<true>(acc));
        }

        #[test]
        fn requantizer_on_realistic_accumulators(
            acc in -200_000i32..200_000,
            m in (1i32 << 30)..=i32::MAX,
            shift in -12i32..=1,
            zp in -128i32..=127,
        ) {
            let clamp = Clamp { min: -128, max: 127 };
            let q = ChannelQuant { bias: 0, multiplier: m, shift };
            proptest::prop_assert_eq!(Requantizer::new(q, zp, clamp).apply(acc), tflite(acc, m, shift, zp, clamp));
        }
    }
}
