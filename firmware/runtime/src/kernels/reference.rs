//! Naive reference implementations of every operator, for tests only.
//!
//! Written straight from the definitions (TFLite's reference kernels) with
//! signed i64 window arithmetic and an i64 accumulator, sharing nothing with
//! the optimised kernels except `ChannelQuant::requantize` (the rounding
//! definition itself). Operator parameters are the layer record's `[u16; 8]`,
//! so these also check the shape rules independently of `Window`.

use super::{ChannelQuant, Clamp, ConvParams, Padding, Window};
use proptest::prelude::*;

/// `(out, pad_before)` along one axis, from the TFLite formulas.
pub fn out_and_pad(input: i64, k: i64, stride: i64, same: bool) -> (i64, i64) {
    if same {
        let out = (input + stride - 1) / stride;
        (out, ((out - 1) * stride + k - input).max(0) / 2)
    } else {
        ((input - k) / stride + 1, 0)
    }
}

/// Geometry decoded from params `[in_h, in_w, .., .., kh, kw, stride, padding]`
/// (conv layout) or `[in_h, in_w, c, kh, kw, stride, padding, 0]` (pool layout).
struct Geo {
    in_h: i64,
    in_w: i64,
    kh: i64,
    kw: i64,
    stride: i64,
    out_h: i64,
    out_w: i64,
    pad_t: i64,
    pad_l: i64,
}

fn geo(in_h: u16, in_w: u16, kh: u16, kw: u16, stride: u16, padding: u16) -> Geo {
    let same = padding == 1;
    let (in_h, in_w, kh, kw, stride) = (in_h as i64, in_w as i64, kh as i64, kw as i64, stride as i64);
    let (out_h, pad_t) = out_and_pad(in_h, kh, stride, same);
    let (out_w, pad_l) = out_and_pad(in_w, kw, stride, same);
    Geo { in_h, in_w, kh, kw, stride, out_h, out_w, pad_t, pad_l }
}

impl Geo {
    /// Input `(iy, ix)` of tap `(ky, kx)` for output `(oy, ox)`, if in bounds.
    fn tap(&self, oy: i64, ox: i64, ky: i64, kx: i64) -> Option<(i64, i64)> {
        let iy = oy * self.stride - self.pad_t + ky;
        let ix = ox * self.stride - self.pad_l + kx;
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

/// Regular convolution; params `[in_h, in_w, in_c, out_c, kh, kw, stride, padding]`,
/// weights `[out_c][kh][kw][in_c]`.
pub fn conv2d(p: [u16; 8], input: &[i8], weights: &[i8], ch: &[ChannelQuant], q: Quant) -> Vec<i8> {
    let g = geo(p[0], p[1], p[4], p[5], p[6], p[7]);
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
pub fn depthwise_conv2d(p: [u16; 8], input: &[i8], weights: &[i8], ch: &[ChannelQuant], q: Quant) -> Vec<i8> {
    let g = geo(p[0], p[1], p[4], p[5], p[6], p[7]);
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
/// with params `[in_h, in_w, c, kh, kw, stride, padding, 0]`.
fn pool(p: [u16; 8], input: &[i8], mut reduce: impl FnMut(&[i64]) -> i64, q: Quant) -> Vec<i8> {
    let g = geo(p[0], p[1], p[3], p[4], p[5], p[6]);
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

pub fn max_pool2d(p: [u16; 8], input: &[i8], q: Quant) -> Vec<i8> {
    pool(p, input, |v| *v.iter().max().expect("every window has an in-bounds tap"), q)
}

pub fn avg_pool2d(p: [u16; 8], input: &[i8], q: Quant) -> Vec<i8> {
    pool(p, input, rounded_average, q)
}

/// Global average pool, params `[in_h, in_w, c, 0, ..]`: a VALID pool whose
/// window is the whole input.
pub fn global_avg_pool(p: [u16; 8], input: &[i8], q: Quant) -> Vec<i8> {
    avg_pool2d([p[0], p[1], p[2], p[0], p[1], 1, 0, 0], input, q)
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
pub(crate) fn conv_case(depthwise: bool) -> impl Strategy<Value = ([u16; 8], Vec<i8>, Vec<i8>, Vec<ChannelQuant>)> {
    conv_case_up_to(depthwise, 1..if depthwise { 20 } else { 5 }, (4, 5))
}

/// [`conv_case`] with input channels in `in_c` and kernels below `kernel`
/// (height, width) (inputs up to 8×9, so every kernel fits SAME padding).
pub(crate) fn conv_case_up_to(
    depthwise: bool,
    in_c: core::ops::Range<u16>,
    kernel: (u16, u16),
) -> impl Strategy<Value = ([u16; 8], Vec<i8>, Vec<i8>, Vec<ChannelQuant>)> {
    (1u16..9, 1u16..10, in_c, 1u16..6, 1u16..kernel.0, 1u16..kernel.1, 1u16..4, 0u16..2).prop_flat_map(
        move |(in_h, in_w, in_c, out_c, kh, kw, stride, pad)| {
            // VALID needs the kernel to fit.
            let (kh, kw) = if pad == 0 { (kh.min(in_h), kw.min(in_w)) } else { (kh, kw) };
            let out_c = if depthwise { in_c } else { out_c };
            let n_in = (in_h * in_w * in_c) as usize;
            let n_w = (if depthwise { kh * kw * in_c } else { out_c * kh * kw * in_c }) as usize;
            let ch = (-200_000i32..200_000, (1i32 << 30)..=i32::MAX, -12i32..=1)
                .prop_map(|(bias, multiplier, shift)| ChannelQuant { bias, multiplier, shift });
            (
                Just([in_h, in_w, in_c, out_c, kh, kw, stride, pad]),
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
pub(crate) fn conv_params(p: [u16; 8], q: Quant) -> ConvParams {
    let pad = Padding::from_u16(p[7]).unwrap();
    let win = Window::new(p[0] as usize, p[1] as usize, p[4] as usize, p[5] as usize, p[6] as usize, pad).unwrap();
    ConvParams {
        window: win,
        in_channels: p[2] as usize,
        out_channels: p[3] as usize,
        input_zero_point: q.zin,
        output_zero_point: q.zout,
        clamp: Clamp { min: q.min, max: q.max },
    }
}
