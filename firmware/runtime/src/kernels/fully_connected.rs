//! Fully connected (dense) layer: `y[o] = requant(bias[o] + Σ_i w[o][i] · x[i])`.

use super::dot::{dot, dot2_unrolled};
use super::{ChannelTable, Clamp, Requantizer};

/// Int8 fully connected layer.
///
/// * `input`: `in_features` int8 values.
/// * `weights`: `[out_features][in_features]`, row-major.
/// * `channels`: `out_features` channel-table entries (12 bytes each).
/// * `output`: `out_features` int8 values.
///
/// Lengths are the caller's contract (checked once at model load); with
/// inconsistent lengths the kernel writes fewer outputs but never panics.
pub fn fully_connected(
    input: &[i8],
    weights: &[i8],
    channels: &[u8],
    output_zero_point: i32,
    clamp: Clamp,
    output: &mut [i8],
) {
    fully_connected_rounded::<false, _>(input, weights, channels, output_zero_point, clamp, output)
}

/// [`fully_connected`] with TFLite's single rounding when `SINGLE` (see
/// [`super::Requantizer::apply_rounded`]), over either kind of channel table.
pub fn fully_connected_rounded<const SINGLE: bool, C: ChannelTable>(
    input: &[i8],
    weights: &[i8],
    channels: C,
    output_zero_point: i32,
    clamp: Clamp,
    output: &mut [i8],
) {
    let in_features = input.len();
    if in_features == 0 {
        return;
    }
    let rows = output.len().min(weights.len() / in_features).min(channels.count());
    let requant = |o: usize, d: i32| {
        channels.channel(o).map(|q| {
            Requantizer::prepared(q.multiplier, output_zero_point, clamp)
                .apply_rounded::<SINGLE>(q.bias.wrapping_add(d))
        })
    };
    let row = |o: usize| weights.get(o * in_features..(o + 1) * in_features);
    // Two rows per pass: each input byte is loaded once for two outputs.
    let mut o = 0;
    while o + 1 < rows {
        let (Some(a), Some(b)) = (row(o), row(o + 1)) else { return };
        let [da, db] = rows2(input, a, b);
        let (Some(ya), Some(yb)) = (requant(o, da), requant(o + 1, db)) else { return };
        output[o] = ya;
        output[o + 1] = yb;
        o += 2;
    }
    if o < rows {
        let Some(a) = row(o) else { return };
        let Some(y) = requant(o, dot(input, a)) else { return };
        output[o] = y;
    }
}

/// Not inlined: the dot product keeps every register for itself instead of
/// sharing them with the row loop's state (which made it spill). The length
/// goes through `black_box` on cores without SMLAD: in a compiled model it
/// is a constant, and LLVM's portable loop for a known trip count was
/// slower on Cortex-M3 (FC 512→64: 3.50 instructions per MAC, 2.89 with
/// the length hidden); the M4's SMLAD loop gains from it (1.99 vs 2.02).
#[inline(never)]
fn rows2(x: &[i8], a: &[i8], b: &[i8]) -> [i32; 2] {
    #[cfg(not(tinykd_dsp))]
    let x = &x[..core::hint::black_box(x.len()).min(x.len())];
    dot2_unrolled(x, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ChannelQuant;

    fn table(entries: &[ChannelQuant]) -> [u8; 24] {
        let mut t = [0u8; 24];
        for (i, e) in entries.iter().enumerate() {
            t[i * 12..i * 12 + 12].copy_from_slice(&e.to_le_bytes());
        }
        t
    }

    #[test]
    fn hand_computed_two_outputs() {
        // x = [1, -2, 3], W = [[1, 2, 3], [-4, 5, -6]].
        // Row 0: 1 - 4 + 9 = 6, + bias 4 = 10; scale 0.5 -> 5; + zp -3 -> 2.
        // Row 1: -4 - 10 - 18 = -32, + bias 0 = -32; scale 0.5 -> -16; + zp -3 -> -19.
        let half = 1 << 30; // 0.5 in Q31 with shift 0
        let t = table(&[
            ChannelQuant { bias: 4, multiplier: half, shift: 0 },
            ChannelQuant { bias: 0, multiplier: half, shift: 0 },
        ]);
        let mut out = [0i8; 2];
        fully_connected(&[1, -2, 3], &[1, 2, 3, -4, 5, -6], &t, -3, Clamp { min: -128, max: 127 }, &mut out);
        assert_eq!(out, [2, -19]);
    }

    #[test]
    fn relu_clamp_and_saturation() {
        // Same as above with a ReLU clamp at the zero point (-3): -19 -> -3.
        let half = 1 << 30;
        let t = table(&[
            ChannelQuant { bias: 4, multiplier: half, shift: 0 },
            ChannelQuant { bias: 0, multiplier: half, shift: 0 },
        ]);
        let mut out = [0i8; 2];
        fully_connected(&[1, -2, 3], &[1, 2, 3, -4, 5, -6], &t, -3, Clamp { min: -3, max: 127 }, &mut out);
        assert_eq!(out, [2, -3]);
        // Large accumulators saturate at the int8 bounds: 127*127*3 = 48387, scale 0.5.
        let t = table(&[
            ChannelQuant { bias: 0, multiplier: half, shift: 0 },
            ChannelQuant { bias: 0, multiplier: half, shift: 0 },
        ]);
        fully_connected(
            &[127, 127, 127],
            &[127, 127, 127, -127, -127, -127],
            &t,
            0,
            Clamp { min: -128, max: 127 },
            &mut out,
        );
        assert_eq!(out, [127, -128]);
    }

    #[test]
    fn dot_handles_remainders() {
        let a: [i8; 7] = [1, 2, 3, 4, 5, 6, 7];
        let b: [i8; 7] = [-1, 1, -1, 1, -1, 1, -128];
        assert_eq!(dot(&a, &b), -1 + 2 - 3 + 4 - 5 + 6 - 7 * 128);
    }

    proptest::proptest! {
        #[test]
        fn dot_matches_naive(v in proptest::collection::vec((-128i8..=127, -127i8..=127), 0..200)) {
            let (a, b): (Vec<i8>, Vec<i8>) = v.into_iter().unzip();
            let naive: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
            proptest::prop_assert_eq!(dot(&a, &b), naive);
        }
    }
}
