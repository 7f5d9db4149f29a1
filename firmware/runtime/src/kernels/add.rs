//! Element-wise int8 addition of two tensors of the same shape, TensorFlow
//! Lite's integer algorithm (`reference_integer_ops::Add`, which TFLite
//! Micro runs and CMSIS-NN's `arm_elementwise_add_s8` matches):
//!
//! ```text
//! a' = rescale_a(((a − z_a) · 2^20))      b' = rescale_b(((b − z_b) · 2^20))
//! y  = clamp(rescale_out(a' + b') + z_out)
//! ```
//!
//! Each input is shifted left by 20 bits of headroom and rescaled to twice
//! the larger input scale (multipliers below one), the sum is rescaled to
//! the output scale, all with the same fixed-point multiply as every other
//! kernel ([`QuantizedMultiplier`]).
//!
//! The kernel computes in place: its output holds the second input when it
//! starts (the run loop puts it there, or the arena plan has the output
//! written over that input), and each value is replaced by the sum. So a
//! residual connection needs no third tensor in the arena.
//!
//! The record: no weights, `params` all 0; three channel-table entries,
//! the first input's (bias field: its zero point; multiplier and shift:
//! its rescaling), the second input's, and the output's (bias 0); the
//! record's output zero point and clamp.

use super::{ChannelQuant, ChannelTable, Clamp, Epilogue};
use crate::error::Error;
use crate::model::Layer;
use crate::ops::Operator;
use crate::requant::QuantizedMultiplier;

/// Bits of headroom each input is shifted left by (TFLite's int8 `left_shift`).
pub const LEFT_SHIFT: u32 = 20;

/// An addition layer, decoded: the three channel-table entries (see the
/// module doc), the output zero point and the clamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddStep {
    pub entries: [ChannelQuant; 3],
    pub output_zero_point: i32,
    pub clamp: Clamp,
}

/// [`AddStep`] with its multipliers decoded, once per layer run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared {
    zero_points: [i32; 2],
    multipliers: [QuantizedMultiplier; 3],
    output_zero_point: i32,
    clamp: Clamp,
}

impl Prepared {
    fn new(s: &AddStep) -> Prepared {
        let [a, b, out] = s.entries;
        Prepared {
            zero_points: [a.bias, b.bias],
            multipliers: [a, b, out].map(|q| QuantizedMultiplier::new(q.multiplier, q.shift)),
            output_zero_point: s.output_zero_point,
            clamp: s.clamp,
        }
    }

    /// One output value from the two inputs.
    #[inline(always)]
    fn add<const SINGLE: bool>(&self, a: i8, b: i8) -> i8 {
        let scale = |m: QuantizedMultiplier, x: i32| if SINGLE { m.apply_single(x) } else { m.apply(x) };
        let [ma, mb, mo] = self.multipliers;
        // |x − z| ≤ 255 with int8 zero points, so the shift cannot
        // overflow; wrapping keeps any other values panic-free.
        let a = scale(ma, (a as i32).wrapping_sub(self.zero_points[0]).wrapping_shl(LEFT_SHIFT));
        let b = scale(mb, (b as i32).wrapping_sub(self.zero_points[1]).wrapping_shl(LEFT_SHIFT));
        self.clamp.apply(scale(mo, a.wrapping_add(b)).saturating_add(self.output_zero_point))
    }
}

/// An [`Epilogue`] adding each value into the one already in its slot:
/// `slot = add(value, slot)`, the value the first input and the slot the
/// second (see [`super::conv_add`]).
#[derive(Debug, Clone, Copy)]
pub struct AddInto<const SINGLE: bool>(Prepared);

impl<const SINGLE: bool> AddInto<SINGLE> {
    #[inline(always)]
    pub fn new(s: &AddStep) -> AddInto<SINGLE> {
        AddInto(Prepared::new(s))
    }
}

impl<const SINGLE: bool> Epilogue for AddInto<SINGLE> {
    #[inline(always)]
    fn put(&self, slot: &mut i8, value: i8) {
        *slot = self.0.add::<SINGLE>(value, *slot);
    }
}

/// `output[i] = add(first[i], output[i])`: the output holds the second
/// input on entry. Writes nothing if the lengths differ.
pub fn add_in_place<const SINGLE: bool>(s: &AddStep, first: &[i8], output: &mut [i8]) {
    if first.len() != output.len() {
        return;
    }
    let add = AddInto::<SINGLE>::new(s);
    for (y, &a) in output.iter_mut().zip(first) {
        add.put(y, a);
    }
}

/// The addition of a record whose three entries start at entry `first` of
/// its channel table.
pub(crate) fn decode_entries(l: &Layer, channels: &[u8], first: usize) -> Result<AddStep, Error> {
    let entry = |i| ChannelQuant::read(channels, first + i).ok_or(Error::Malformed("channel table out of bounds"));
    let entries = [entry(0)?, entry(1)?, entry(2)?];
    if entries[..2].iter().any(|q| !(-128..=127).contains(&q.bias)) || entries[2].bias != 0 {
        return Err(Error::Malformed("add input zero point is not int8, or the output entry's bias is not 0"));
    }
    Ok(AddStep { entries, output_zero_point: l.output.zero_point, clamp: l.clamp })
}

/// The addition operator ([`crate::format::Op::Add`]).
#[derive(Debug, Clone, Copy)]
pub struct Add;

impl Operator for Add {
    type Step<'a, C: ChannelTable> = AddStep;
    const INPUTS: usize = 2;

    fn validate(l: &Layer) -> Result<(), Error> {
        if l.params.iter().any(|&p| p != 0) {
            return Err(Error::Malformed("add parameters must be 0"));
        }
        if l.input_len != l.output_len {
            return Err(Error::Malformed("add input and output lengths differ"));
        }
        if l.weights_len != 0 || l.channel_count != 3 {
            return Err(Error::Malformed("add has weights or not three channel entries"));
        }
        Ok(())
    }

    fn decode<'a>(l: &Layer, _: &'a [i8], channels: &'a [u8]) -> Result<AddStep, Error> {
        decode_entries(l, channels, 0)
    }

    #[inline(always)]
    fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
        s: &AddStep,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error> {
        add_in_place::<SINGLE>(s, input, output);
        Ok(())
    }

    fn channels<C: ChannelTable>(_: &AddStep) -> Option<C> {
        None
    }

    fn with_channels<'a, C: ChannelTable, D: ChannelTable>(s: Self::Step<'a, C>, _: D) -> Self::Step<'a, D> {
        s
    }

    #[cfg(feature = "codegen")]
    fn source(
        s: &AddStep,
        _: &Layer,
        krate: &str,
        _: &mut dyn FnMut(&[i8]) -> alloc::string::String,
    ) -> alloc::string::String {
        add_source(s, krate)
    }
}

/// An addition step as Rust source.
#[cfg(feature = "codegen")]
pub(crate) fn add_source(s: &AddStep, krate: &str) -> alloc::string::String {
    let entry = |q: ChannelQuant| {
        alloc::format!(
            "{krate}::kernels::ChannelQuant {{ bias: {}, multiplier: {}, shift: {} }}",
            q.bias,
            q.multiplier,
            q.shift
        )
    };
    let [a, b, out] = s.entries.map(entry);
    alloc::format!(
        "{krate}::kernels::add::AddStep {{ entries: [{a}, {b}, {out}], output_zero_point: {}, clamp: {} }}",
        s.output_zero_point,
        crate::ops::clamp_source(krate, s.clamp)
    )
}

#[cfg(test)]
mod tests {
    use super::super::reference::{self, add_case, edgy_i8, quant};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_case() {
        // Scales 0.5 and 0.25 into 0.5: a' = 0.5·(a − 1), b' = 0.25·(b + 2),
        // y = (a' + b') / 0.5 + 3. With a = 9, b = 6: 4 + 2 = 6 → 12 + 3 = 15.
        let q = |real: f64, bias: i32| {
            let (multiplier, shift) = reference::quantize_multiplier(real);
            ChannelQuant { bias, multiplier, shift }
        };
        let s = AddStep {
            entries: [q(0.5, 1), q(0.25, -2), q(1.0 / (1 << 20) as f64 * 2.0, 0)],
            output_zero_point: 3,
            clamp: Clamp { min: -128, max: 127 },
        };
        let mut y = [6i8, -128];
        add_in_place::<false>(&s, &[9, -128], &mut y);
        // (−129·0.5 − 126·0.25) / 0.5 + 3 = −64.5 − 31.5 = −96 → −192 + 3 → −128 (saturated).
        assert_eq!(y, [15, -128]);
        // Lengths that differ write nothing.
        let mut y = [1i8, 2];
        add_in_place::<false>(&s, &[1], &mut y);
        assert_eq!(y, [1, 2]);
    }

    proptest! {
        /// Against TFLite's formula written out (`reference::add`), with
        /// random scales, zero points and clamps.
        #[test]
        fn matches_the_reference(
            entries in add_case(),
            ab in proptest::collection::vec((edgy_i8(), edgy_i8()), 1..64),
            q in quant(),
        ) {
            let (a, b): (Vec<i8>, Vec<i8>) = ab.into_iter().unzip();
            let want = reference::add(&a, &b, &entries, q);
            let s = AddStep { entries, output_zero_point: q.zout, clamp: Clamp { min: q.min, max: q.max } };
            let mut got = b.clone();
            add_in_place::<false>(&s, &a, &mut got);
            prop_assert_eq!(got, want);
        }
    }
}
