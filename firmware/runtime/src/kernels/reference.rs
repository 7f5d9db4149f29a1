//! Naive reference implementations of every operator, for tests only.
//!
//! Written straight from the definitions (TFLite's reference kernels) with
//! signed i64 window arithmetic and an i64 accumulator, sharing nothing with
//! the optimised kernels except `ChannelQuant::requantize` (the rounding
//! definition itself). Operator parameters are the layer record's 12 (see
//! [`Params`]), so these also check the shape rules independently of `Window`.

use super::{ChannelQuant, Clamp, ConvParams, Padding, Window};
use crate::format::layer::PARAM_COUNT;
use proptest::prelude::*;

/// A layer record's operator parameters.
pub type Params = [u16; PARAM_COUNT];

/// Conv parameters `[in_h, in_w, in_c, out_c, kh, kw, sh, padding, sw, 0, 0, 0]`.
pub const fn conv_record(p: [u16; 9]) -> Params {
    [p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], 0, 0, 0]
}

/// Pool parameters `[in_h, in_w, c, kh, kw, sh, padding, 0, sw, 0, 0, 0]`.
pub const fn pool_record([in_h, in_w, c, kh, kw, sh, pad, sw]: [u16; 8]) -> Params {
    [in_h, in_w, c, kh, kw, sh, pad, 0, sw, 0, 0, 0]
}

/// `(out, pad_before)` along one axis, from the TFLite formulas.
pub fn out_and_pad(input: i64, k: i64, stride: i64, same: bool) -> (i64, i64) {
    if same {
        let out = (input + stride - 1) / stride;
        (out, ((out - 1) * stride + k - input).max(0) / 2)
    } else {
        ((input - k) / stride + 1, 0)
    }
}

/// Geometry of a window: input, kernel, strides, padding.
struct Geo {
    in_h: i64,
    in_w: i64,
    kh: i64,
    kw: i64,
    sh: i64,
    sw: i64,
    out_h: i64,
    out_w: i64,
    pad_t: i64,
    pad_l: i64,
}

fn geo([in_h, in_w, kh, kw, sh, sw]: [u16; 6], padding: u16) -> Geo {
    let same = padding == 1;
    let [in_h, in_w, kh, kw, sh, sw] = [in_h, in_w, kh, kw, sh, sw].map(i64::from);
    let (out_h, pad_t) = out_and_pad(in_h, kh, sh, same);
    let (out_w, pad_l) = out_and_pad(in_w, kw, sw, same);
    Geo { in_h, in_w, kh, kw, sh, sw, out_h, out_w, pad_t, pad_l }
}

impl Geo {
    /// Input `(iy, ix)` of tap `(ky, kx)` for output `(oy, ox)`, if in bounds.
    fn tap(&self, oy: i64, ox: i64, ky: i64, kx: i64) -> Option<(i64, i64)> {
        let iy = oy * self.sh - self.pad_t + ky;
        let ix = ox * self.sw - self.pad_l + kx;
        (iy >= 0 && iy < self.in_h && ix >= 0 && ix < self.in_w).then_some((iy, ix))
    }
}

/// Shared quantization arguments of the references.
#[derive(Debug, Clone, Copy)]
pub struct Quant {
    pub zin: i32,
    pub zout: i32,
    pub min: i8,
    pub max: i8,
}

/// Regular convolution; params `[in_h, in_w, in_c, out_c, kh, kw, sh, padding, sw, ..]`,
/// weights `[out_c][kh][kw][in_c]`.
pub fn conv2d(p: Params, input: &[i8], weights: &[i8], ch: &[ChannelQuant], q: Quant) -> Vec<i8> {
    let g = geo([p[0], p[1], p[4], p[5], p[6], p[8]], p[7]);
    let (in_c, out_c) = (p[2] as i64, p[3] as i64);
    let mut out = Vec::new();
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for o in 0..out_c {
                let mut acc = ch[o as usize].bias as i64;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let Some((iy, ix)) = g.tap(oy, ox, ky, kx) else { continue };
                        for c in 0..in_c {
                            let x = input[((iy * g.in_w + ix) * in_c + c) as usize] as i64;
                            let w = weights[(((o * g.kh + ky) * g.kw + kx) * in_c + c) as usize] as i64;
                            acc += w * (x - q.zin as i64);
                        }
                    }
                }
                // TFLite accumulates in int32; wrapping is its two's-complement result.
                out.push(ch[o as usize].requantize(acc as i32, q.zout, q.min, q.max));
            }
        }
    }
    out
}

/// Depthwise convolution (multiplier 1); same params, weights `[kh][kw][c]`.
pub fn depthwise_conv2d(p: Params, input: &[i8], weights: &[i8], ch: &[ChannelQuant], q: Quant) -> Vec<i8> {
    let g = geo([p[0], p[1], p[4], p[5], p[6], p[8]], p[7]);
    let c_n = p[2] as i64;
    let mut out = Vec::new();
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for c in 0..c_n {
                let mut acc = ch[c as usize].bias as i64;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let Some((iy, ix)) = g.tap(oy, ox, ky, kx) else { continue };
                        let x = input[((iy * g.in_w + ix) * c_n + c) as usize] as i64;
                        let w = weights[((ky * g.kw + kx) * c_n + c) as usize] as i64;
                        acc += w * (x - q.zin as i64);
                    }
                }
                out.push(ch[c as usize].requantize(acc as i32, q.zout, q.min, q.max));
            }
        }
    }
    out
}

/// Values of the in-bounds window of every output, channel by channel, for pools
/// with params `[in_h, in_w, c, kh, kw, sh, padding, 0, sw, ..]`.
fn pool(p: Params, input: &[i8], mut reduce: impl FnMut(&[i64]) -> i64, q: Quant) -> Vec<i8> {
    let g = geo([p[0], p[1], p[3], p[4], p[5], p[8]], p[6]);
    let c_n = p[2] as i64;
    let mut out = Vec::new();
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for c in 0..c_n {
                let mut vals = Vec::new();
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        if let Some((iy, ix)) = g.tap(oy, ox, ky, kx) {
                            vals.push(input[((iy * g.in_w + ix) * c_n + c) as usize] as i64);
                        }
                    }
                }
                out.push(reduce(&vals).clamp(q.min as i64, q.max as i64) as i8);
            }
        }
    }
    out
}

/// TFLite's rounded average: half away from zero, division truncating.
pub fn rounded_average(vals: &[i64]) -> i64 {
    let (sum, n) = (vals.iter().sum::<i64>(), vals.len() as i64);
    if sum > 0 { (sum + n / 2) / n } else { (sum - n / 2) / n }
}

pub fn max_pool2d(p: Params, input: &[i8], q: Quant) -> Vec<i8> {
    pool(p, input, |v| *v.iter().max().expect("every window has an in-bounds tap"), q)
}

pub fn avg_pool2d(p: Params, input: &[i8], q: Quant) -> Vec<i8> {
    pool(p, input, rounded_average, q)
}

/// Global average pool, params `[in_h, in_w, c, 0, ..]`: a VALID pool whose
/// window is the whole input.
pub fn global_avg_pool(p: Params, input: &[i8], q: Quant) -> Vec<i8> {
    avg_pool2d(pool_record([p[0], p[1], p[2], p[0], p[1], 1, 0, 1]), input, q)
}

/// TFLite's int8 addition (`reference_integer_ops::AddFunc`), literally:
/// entries `[first, second, output]` with the inputs' zero points in the
/// bias fields (see `kernels::add`).
pub fn add(a: &[i8], b: &[i8], entries: &[ChannelQuant], q: Quant) -> Vec<i8> {
    use crate::requant::multiply_by_quantized_multiplier as scale;
    let [ea, eb, eo] = [entries[0], entries[1], entries[2]];
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let xa = scale((x as i32 - ea.bias) * (1 << 20), ea.multiplier, ea.shift);
            let yb = scale((y as i32 - eb.bias) * (1 << 20), eb.multiplier, eb.shift);
            let raw = scale(xa + yb, eo.multiplier, eo.shift) + q.zout;
            raw.clamp(q.min as i32, q.max as i32) as i8
        })
        .collect()
}

/// `real` as a Q31 multiplier and a shift, TFLite's `QuantizeMultiplier`.
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    let mut shift = real.log2().floor() as i32 + 1;
    let mut q = (real / 2f64.powi(shift) * (1u64 << 31) as f64).round() as i64;
    if q == 1 << 31 {
        q /= 2;
        shift += 1;
    }
    (q as i32, shift)
}

/// A random addition's entries, as TFLite derives them from random scales
/// and zero points: `[first, second, output]` with the inputs' zero points
/// in the bias fields.
pub(crate) fn add_case() -> impl Strategy<Value = [ChannelQuant; 3]> {
    (0.001f64..1.0, 0.001f64..1.0, 0.001f64..2.0, any::<i8>(), any::<i8>()).prop_map(|(sa, sb, so, za, zb)| {
        let twice_max = 2.0 * sa.max(sb);
        let entry = |bias: i32, real: f64| {
            let (multiplier, shift) = quantize_multiplier(real);
            ChannelQuant { bias, multiplier, shift }
        };
        [
            entry(za as i32, sa / twice_max),
            entry(zb as i32, sb / twice_max),
            entry(0, twice_max / (so * (1 << 20) as f64)),
        ]
    })
}

/// Fully connected with the tkd convention: the bias already holds `−z_in·Σw`,
/// so the reference computes `bias + Σ w·x`.
pub fn fully_connected(input: &[i8], weights: &[i8], ch: &[ChannelQuant], q: Quant) -> Vec<i8> {
    ch.iter()
        .zip(weights.chunks(input.len()))
        .map(|(c, row)| {
            let acc = c.bias as i64 + row.iter().zip(input).map(|(w, x)| *w as i64 * *x as i64).sum::<i64>();
            c.requantize(acc as i32, q.zout, q.min, q.max)
        })
        .collect()
}

// Proptest strategies shared by the kernel tests.

/// A raw channel table.
pub(crate) fn table(entries: &[ChannelQuant]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// A random convolution case: params record, input, weights, channel table.
/// Depthwise cases go up to 19 channels, so that whole channel blocks, a
/// block plus a remainder, and remainders alone all occur.
pub(crate) fn conv_case(depthwise: bool) -> impl Strategy<Value = (Params, Vec<i8>, Vec<i8>, Vec<ChannelQuant>)> {
    conv_case_up_to(depthwise, 1..if depthwise { 20 } else { 5 }, (4, 5))
}

/// [`conv_case`] with input channels in `in_c` and kernels below `kernel`
/// (height, width) (inputs up to 8×9, so every kernel fits SAME padding),
/// strides 1 to 3 per axis.
pub(crate) fn conv_case_up_to(
    depthwise: bool,
    in_c: core::ops::Range<u16>,
    kernel: (u16, u16),
) -> impl Strategy<Value = (Params, Vec<i8>, Vec<i8>, Vec<ChannelQuant>)> {
    (1u16..9, 1u16..10, in_c, 1u16..6, 1u16..kernel.0, 1u16..kernel.1, (1u16..4, 1u16..4), 0u16..2).prop_flat_map(
        move |(in_h, in_w, in_c, out_c, kh, kw, (sh, sw), pad)| {
            // VALID needs the kernel to fit.
            let (kh, kw) = if pad == 0 { (kh.min(in_h), kw.min(in_w)) } else { (kh, kw) };
            let out_c = if depthwise { in_c } else { out_c };
            let n_in = (in_h * in_w * in_c) as usize;
            let n_w = (if depthwise { kh * kw * in_c } else { out_c * kh * kw * in_c }) as usize;
            let ch = (-200_000i32..200_000, (1i32 << 30)..=i32::MAX, -12i32..=1)
                .prop_map(|(bias, multiplier, shift)| ChannelQuant { bias, multiplier, shift });
            (
                Just(conv_record([in_h, in_w, in_c, out_c, kh, kw, sh, pad, sw])),
                proptest::collection::vec(any::<i8>(), n_in),
                proptest::collection::vec(any::<i8>(), n_w),
                proptest::collection::vec(ch, out_c as usize),
            )
        },
    )
}

/// An int8 value, often at or next to the ends of the range (clamp bounds
/// there are where off-by-one skips and saturations hide).
pub(crate) fn edgy_i8() -> impl Strategy<Value = i8> {
    prop_oneof![any::<i8>(), Just(-128i8), Just(-127i8), Just(126i8), Just(127i8)]
}

pub(crate) fn quant() -> impl Strategy<Value = Quant> {
    (any::<i8>(), any::<i8>(), edgy_i8(), edgy_i8()).prop_map(|(zin, zout, a, b)| Quant {
        zin: zin as i32,
        zout: zout as i32,
        min: a.min(b),
        max: a.max(b),
    })
}

/// The kernel parameters of a conv params record.
pub(crate) fn conv_params(p: Params, q: Quant) -> ConvParams {
    let pad = Padding::from_u16(p[7]).unwrap();
    let [in_h, in_w, kh, kw, sh, sw] = [p[0], p[1], p[4], p[5], p[6], p[8]].map(usize::from);
    let win = Window::with_strides(in_h, in_w, kh, kw, sh, sw, pad).unwrap();
    ConvParams {
        window: win,
        in_channels: p[2] as usize,
        out_channels: p[3] as usize,
        input_zero_point: q.zin,
        output_zero_point: q.zout,
        clamp: Clamp { min: q.min, max: q.max },
    }
}
