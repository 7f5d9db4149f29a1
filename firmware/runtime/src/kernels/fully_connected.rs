//! Fully connected (dense) layer: `y[o] = requant(bias[o] + Σ_i w[o][i] · x[i])`.

#[cfg(all(any(tinykd_v7m, tinykd_dsp), not(tinykd_small)))]
use super::dot::{ROW4_MAX, dot1x4};
#[cfg(all(tinykd_dsp, not(tinykd_small)))]
use super::dot::{ROW5_MAX, Unpacked, dot1x5, dot1x5_unpacked};
use super::dot::{dot, dot2_unrolled};
use super::{ChannelTable, Clamp, Requantizer};
use crate::error::Error;
use crate::model::Layer;
use crate::ops::Operator;

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
        // `?`, not a `map` closure: that closure's type is shared by every
        // layer of the same table kind, and LLVM may call it out of line.
        let q = channels.channel(o)?;
        Some(
            Requantizer::prepared(q.multiplier, output_zero_point, clamp)
                .apply_rounded::<SINGLE>(q.bias.wrapping_add(d)),
        )
    };
    let row = |o: usize| weights.get(o * in_features..(o + 1) * in_features);
    if cfg!(tinykd_small) && !cfg!(tinykd_dsp) {
        // Built for size, without SMLAD: one row per pass, one
        // requantization in the code instead of two.
        for (o, y) in output.iter_mut().enumerate().take(rows) {
            let Some(a) = row(o) else { return };
            let acc = input.iter().zip(a).fold(0i32, |s, (x, w)| s.wrapping_add(*x as i32 * *w as i32));
            let Some(v) = requant(o, acc) else { return };
            *y = v;
        }
        return;
    }
    // Two rows per pass: each input byte is loaded once for two outputs.
    let mut o = 0;
    while o + 1 < rows {
        let (Some(a), Some(b)) = (row(o), row(o + 1)) else { return };
        let [da, db] = rows2(input, a, b);
        let (Some(ya), Some(yb), Some(y)) = (requant(o, da), requant(o + 1, db), output.get_mut(o..o + 2)) else {
            return;
        };
        // Through `get_mut`: LLVM did not see `o + 1 < rows ≤ output.len()`
        // and kept a bounds check and its panic path.
        y[0] = ya;
        y[1] = yb;
        o += 2;
    }
    if o < rows {
        let (Some(a), Some(y)) = (row(o), output.get_mut(o)) else { return };
        let Some(v) = requant(o, dot(input, a)) else { return };
        *y = v;
    }
}

/// Fewest weights a layer needs for [`fully_connected_layer`]'s four-row
/// pass: its code (~0.3–0.9 KB more than the two-row pass, the
/// requantization inlined per row of the pass) pays off on large layers
/// (FC 40→32 on the M3: 4.15 → 3.29 instructions per MAC), not on a
/// CNN's small head (FC 24→10: a few hundred instructions per inference).
pub const FOUR_ROWS_MIN_WEIGHTS: usize = 512;

/// [`fully_connected_rounded`] for a layer of `IN` inputs known at compile
/// time (a specialised model's layer function; `IN` = 0: not known). On
/// Armv7-M, unless the build optimises for size, a layer of at least
/// [`FOUR_ROWS_MIN_WEIGHTS`] takes four rows per pass through
/// [`super::dot::dot1x4`] (five through [`super::dot::dot1x5`] with SMLAD, for rows of up to
/// [`super::dot::ROW5_MAX`] inputs), whose loops reach the other rows at
/// constant offsets; then the last rows (see `rows_by`).
#[inline(always)]
pub fn fully_connected_layer<const SINGLE: bool, const IN: usize, C: ChannelTable>(
    input: &[i8],
    weights: &[i8],
    channels: C,
    output_zero_point: i32,
    clamp: Clamp,
    output: &mut [i8],
) {
    #[cfg(all(any(tinykd_v7m, tinykd_dsp), not(tinykd_small)))]
    if IN > 0 && IN <= ROW4_MAX && weights.len() >= FOUR_ROWS_MIN_WEIGHTS {
        if let Ok(x) = <&[i8; IN]>::try_from(input) {
            // With SMLAD, five rows per pass where the fifth is in reach.
            // With enough passes, the input is unpacked for SMLAD once, not
            // once per pass (`IN` halfwords on the stack; unpacking costs
            // about as much as four passes save).
            #[cfg(tinykd_dsp)]
            if IN <= ROW5_MAX {
                if unpacked_input_bytes(IN, output.len()) != 0 {
                    let mut xu = Unpacked::zeroed();
                    xu.fill(x);
                    return rows_by::<SINGLE, IN, 5, C, _>(
                        x,
                        weights,
                        channels,
                        output_zero_point,
                        clamp,
                        output,
                        |x, f| rows5_unpacked::<IN>(x, &xu, f),
                    );
                }
                return rows_by::<SINGLE, IN, 5, C, _>(
                    x,
                    weights,
                    channels,
                    output_zero_point,
                    clamp,
                    output,
                    rows5::<IN>,
                );
            }
            return rows_by::<SINGLE, IN, 4, C, _>(x, weights, channels, output_zero_point, clamp, output, rows4::<IN>);
        }
    }
    fully_connected_rounded::<SINGLE, C>(input, weights, channels, output_zero_point, clamp, output)
}

/// `R` rows per pass through `pass` ([`rows4`], [`rows5`]), then the
/// last `rows % R` two at a time and one.
#[cfg(all(any(tinykd_v7m, tinykd_dsp), not(tinykd_small)))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_by<
    const SINGLE: bool,
    const IN: usize,
    const R: usize,
    C: ChannelTable,
    P: Fn(&[i8; IN], &[i8]) -> [i32; R],
>(
    x: &[i8; IN],
    weights: &[i8],
    channels: C,
    output_zero_point: i32,
    clamp: Clamp,
    output: &mut [i8],
    pass: P,
) {
    // Opaque, so that LLVM keeps the row loop and its requantization
    // rolled: unrolled for a constant row count, it cost ~100 B of flash
    // per output row for a few instructions each (measured on the M4 with
    // FC 24→10, +1.2 KB, before layers that small kept the two-row pass).
    let rows = core::hint::black_box(output.len().min(weights.len() / IN).min(channels.count()));
    // Requantized through an inline-always function, not a closure: layers
    // of one shape share a closure's type, and with two of them LLVM
    // called it out of line for every row, its multiplier no longer a
    // constant (AD's second 128→128 layer: 27.0 k instructions alone,
    // 36.6 k after the first).
    let mut o = 0;
    while o + (R - 1) < rows {
        let Some(f) = weights.get(o * IN..(o + R) * IN) else { return };
        let d = pass(x, f);
        for (k, d) in d.into_iter().enumerate() {
            let Some(y) = row_requantize::<SINGLE, C>(channels, o + k, d, output_zero_point, clamp) else { return };
            output[o + k] = y;
        }
        o += R;
    }
    // The last `rows % R` rows, requantized out of line: four through
    // `rows4` (after five-row passes; FC 512→64 on the M4: 1.52 → 1.51
    // instructions per MAC), then at most two, then one.
    let requant = |o: usize, d: i32| tail_requantize::<SINGLE, C>(channels, o, d, output_zero_point, clamp);
    if R > 4 && o + 4 <= rows {
        let Some(f) = weights.get(o * IN..(o + 4) * IN) else { return };
        for (k, d) in rows4::<IN>(x, f).into_iter().enumerate() {
            let Some(y) = requant(o + k, d) else { return };
            output[o + k] = y;
        }
        o += 4;
    }
    let row = |o: usize| weights.get(o * IN..(o + 1) * IN);
    if o + 1 < rows {
        let (Some(a), Some(b)) = (row(o), row(o + 1)) else { return };
        let [da, db] = rows2(x, a, b);
        let (Some(ya), Some(yb)) = (requant(o, da), requant(o + 1, db)) else { return };
        output[o] = ya;
        output[o + 1] = yb;
        o += 2;
    }
    if o < rows {
        // Through `rows2` too: `dot` inlined here, over a constant `IN`,
        // would be unrolled whole (~0.6 KB for 64 inputs).
        let (Some(a), Some(_)) = (row(o), output.get(o)) else { return };
        let Some(y) = requant(o, rows2(x, a, a)[0]) else { return };
        output[o] = y;
    }
}

/// Row `o`'s output in the passes of [`rows_by`].
#[cfg(all(any(tinykd_v7m, tinykd_dsp), not(tinykd_small)))]
#[inline(always)]
fn row_requantize<const SINGLE: bool, C: ChannelTable>(
    channels: C,
    o: usize,
    d: i32,
    zp: i32,
    clamp: Clamp,
) -> Option<i8> {
    let q = channels.channel(o)?;
    Some(Requantizer::prepared(q.multiplier, zp, clamp).apply_rounded_saturating::<SINGLE>(q.bias.wrapping_add(d)))
}

/// Row `o`'s output, for the rows after the four-row passes: not inlined,
/// so the requantization is not three more copies in the layer's code.
#[cfg(all(any(tinykd_v7m, tinykd_dsp), not(tinykd_small)))]
#[inline(never)]
fn tail_requantize<const SINGLE: bool, C: ChannelTable>(
    channels: C,
    o: usize,
    d: i32,
    zp: i32,
    clamp: Clamp,
) -> Option<i8> {
    row_requantize::<SINGLE, C>(channels, o, d, zp, clamp)
}

/// Not inlined, as [`rows2`].
#[cfg(all(any(tinykd_v7m, tinykd_dsp), not(tinykd_small)))]
#[inline(never)]
fn rows4<const IN: usize>(x: &[i8; IN], f: &[i8]) -> [i32; 4] {
    dot1x4::<IN>(x, f)
}

/// Not inlined, as [`rows2`].
#[cfg(all(tinykd_dsp, not(tinykd_small)))]
#[inline(never)]
fn rows5<const IN: usize>(x: &[i8; IN], f: &[i8]) -> [i32; 5] {
    dot1x5::<IN>(x, f)
}

/// [`rows5`] with the input unpacked ahead.
#[cfg(all(tinykd_dsp, not(tinykd_small)))]
#[inline(never)]
fn rows5_unpacked<const IN: usize>(x: &[i8; IN], xu: &Unpacked<IN>, f: &[i8]) -> [i32; 5] {
    dot1x5_unpacked::<IN>(x, xu, f)
}

/// Fewest output rows for which a five-row layer unpacks its input ahead
/// (five passes; on the M4 FC 80→10, two passes, took 1,402 instructions
/// plain and 1,572 unpacked; FC 640→128 123,580 and 117,368).
pub const UNPACKED_MIN_ROWS: usize = 25;

/// The stack a layer's function takes on the Cortex-M4/M7 (built for
/// speed) for its input unpacked ahead: `in_features` halfwords when the
/// layer has the rows for it, else 0 (for fit estimates on the host).
pub fn unpacked_input_bytes(in_features: usize, out_features: usize) -> usize {
    let five_rows = in_features <= super::dot::ROW5_MAX
        && in_features.saturating_mul(out_features) >= FOUR_ROWS_MIN_WEIGHTS
        && out_features >= UNPACKED_MIN_ROWS;
    if five_rows { 2 * in_features } else { 0 }
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

/// The fully connected operator ([`crate::format::Op::FullyConnected`]).
#[derive(Debug, Clone, Copy)]
pub struct FullyConnected;

/// A fully connected layer, decoded. `channels` hold the bias with
/// `−z_in · Σ w` folded in (see [`crate::format`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FullyConnectedStep<'a, C> {
    pub output_zero_point: i32,
    pub clamp: Clamp,
    pub weights: &'a [i8],
    pub channels: C,
}

impl Operator for FullyConnected {
    type Step<'a, C: ChannelTable> = FullyConnectedStep<'a, C>;

    fn validate(l: &Layer) -> Result<(), Error> {
        let (inf, outf) = (l.params[0] as usize, l.params[1] as usize);
        if inf != l.input_len || outf != l.output_len {
            return Err(Error::Malformed("fully connected shape does not match its lengths"));
        }
        if l.weights_len != inf * outf {
            return Err(Error::Malformed("fully connected weight count is not in × out"));
        }
        if l.channel_count != outf {
            return Err(Error::Malformed("channel table size differs from output features"));
        }
        Ok(())
    }

    fn decode<'a>(l: &Layer, weights: &'a [i8], channels: &'a [u8]) -> Result<FullyConnectedStep<'a, &'a [u8]>, Error> {
        Ok(FullyConnectedStep { output_zero_point: l.output.zero_point, clamp: l.clamp, weights, channels })
    }

    #[inline(always)]
    fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
        s: &FullyConnectedStep<'_, C>,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error> {
        // In a layer's own function the tensors are constants: cut the
        // activations to the lengths they imply, so the kernel sees
        // constant lengths too (FC 40→32 on the M4: 3.92 → 3.22
        // instructions per MAC). They are those lengths already.
        let (input, output) = if LAYER == usize::MAX {
            (input, output)
        } else {
            let outs = s.channels.count();
            let ins = s.weights.len().checked_div(outs).unwrap_or(0);
            let found = input.len();
            match (input.get(..ins), output.get_mut(..outs)) {
                (Some(x), Some(y)) => (x, y),
                _ => return Err(Error::InputLength { expected: ins, found }),
            }
        };
        fully_connected_layer::<SINGLE, WINDOW, _>(input, s.weights, s.channels, s.output_zero_point, s.clamp, output);
        Ok(())
    }

    /// The input length, for [`fully_connected_layer`]'s rows at constant
    /// offsets, when a row is within reach.
    fn window<C: ChannelTable>(s: &FullyConnectedStep<'_, C>) -> usize {
        s.weights.len().checked_div(s.channels.count()).filter(|&n| n <= super::dot::ROW4_MAX).unwrap_or(0)
    }

    fn channels<C: ChannelTable>(s: &FullyConnectedStep<'_, C>) -> Option<C> {
        Some(s.channels)
    }

    fn with_channels<'a, C: ChannelTable, D: ChannelTable>(s: Self::Step<'a, C>, channels: D) -> Self::Step<'a, D> {
        let FullyConnectedStep { output_zero_point, clamp, weights, .. } = s;
        FullyConnectedStep { output_zero_point, clamp, weights, channels }
    }

    #[cfg(feature = "codegen")]
    fn source(
        s: &FullyConnectedStep<'_, &[u8]>,
        _: &Layer,
        krate: &str,
        tensors: &mut dyn FnMut(&[i8]) -> alloc::string::String,
    ) -> alloc::string::String {
        alloc::format!(
            "{krate}::kernels::fully_connected::FullyConnectedStep {{ output_zero_point: {}, clamp: {}, {} }}",
            s.output_zero_point,
            crate::ops::clamp_source(krate, s.clamp),
            tensors(s.weights)
        )
    }
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
