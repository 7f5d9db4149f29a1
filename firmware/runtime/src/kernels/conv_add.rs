//! A convolution whose output is added to another tensor, computed in one
//! pass over that tensor: ResNet's residual block ends `conv → add(conv,
//! skip)`, and run as two layers the convolution's output is a third
//! tensor alive beside its input and the skip (ResNet-8's first block: 3 ×
//! 16 KB). Here each convolution output is requantized as the convolution
//! would write it, then added into the skip's value in its slot
//! ([`AddInto`]): bit for bit the two layers' result, without the
//! convolution's tensor.
//!
//! The record: the convolution's parameters (`params[0..9]`, see
//! [`crate::ops::Op::Conv2d`]) with its clamp in `params[9]` (min) and
//! `params[10]` (max) as int8 bytes and its fused activation in
//! `params[11]` (informative, as the record's own activation byte is the
//! addition's); its input zero point; its weights;
//! its `out_c` channel entries followed by the addition's three (see
//! [`super::add`]: the first input is the convolution's output, whose zero
//! point the first entry's bias holds; the second is the skip, the layer's
//! second input); the addition's output quantization and clamp.

use super::add::{AddInto, AddStep, decode_entries};
use super::conv::{ConvStep, conv2d_layer_with, validate_conv};
use super::{ChannelTable, Clamp, ConvParams};
use crate::error::Error;
use crate::format::{Activation, CHANNEL_ENTRY_LEN};
use crate::model::Layer;
use crate::ops::Operator;

/// A convolution added into a tensor, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvAddStep<'a, C> {
    /// The convolution, with its own output zero point and clamp.
    pub conv: ConvStep<'a, C>,
    pub add: AddStep,
}

/// The layer's convolution alone: the record with the convolution's clamp
/// and activation, its parameters 9 to 11 cleared and its own channel
/// entries (its output quantization is the addition's first input's, which
/// the record's first addition entry and weight scale hold).
pub fn conv_layer(l: &Layer) -> Result<Layer, Error> {
    let mut conv = *l;
    // An int8 as its byte: 0..=255.
    let byte = |p: u16| u8::try_from(p).ok().map(|b| b as i8);
    let (Some(min), Some(max)) = (byte(l.params[9]), byte(l.params[10])) else {
        return Err(Error::Malformed("convolution-add clamp parameters are not int8"));
    };
    conv.clamp = Clamp { min, max };
    conv.activation = u8::try_from(l.params[11])
        .ok()
        .and_then(Activation::from_u8)
        .ok_or(Error::Malformed("convolution-add activation parameter is unknown"))?;
    conv.params[9] = 0;
    conv.params[10] = 0;
    conv.params[11] = 0;
    let short = Error::Malformed("channel table size differs from output channels");
    conv.channel_count = l.channel_count.checked_sub(3).ok_or(short)?;
    Ok(conv)
}

impl ConvAddStep<'_, &[u8]> {
    /// The convolution's parameters from a record.
    fn conv_params(l: &Layer, add: &AddStep) -> Result<ConvParams, Error> {
        let conv = conv_layer(l)?;
        ConvParams::from_record(conv.params, conv.input_zero_point, add.entries[0].bias, conv.clamp)
            .map_err(Error::Malformed)
    }
}

/// The convolution-add operator ([`crate::format::Op::ConvAdd`]).
#[derive(Debug, Clone, Copy)]
pub struct ConvAdd;

impl Operator for ConvAdd {
    type Step<'a, C: ChannelTable> = ConvAddStep<'a, C>;
    const INPUTS: usize = 2;

    fn validate(l: &Layer) -> Result<(), Error> {
        let conv = conv_layer(l)?;
        if conv.clamp.min > conv.clamp.max {
            return Err(Error::Malformed("activation min exceeds max"));
        }
        validate_conv(&conv, false)
    }

    fn decode<'a>(l: &Layer, weights: &'a [i8], channels: &'a [u8]) -> Result<ConvAddStep<'a, &'a [u8]>, Error> {
        let out_c = l.channel_count.checked_sub(3).ok_or(Error::Malformed("channel table out of bounds"))?;
        let add = decode_entries(l, channels, out_c)?;
        let params = ConvAddStep::conv_params(l, &add)?;
        let short = Error::Malformed("channel table out of bounds");
        let conv_channels = channels.get(..out_c * CHANNEL_ENTRY_LEN).ok_or(short)?;
        Ok(ConvAddStep { conv: ConvStep { params, weights, channels: conv_channels }, add })
    }

    #[inline(always)]
    fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
        s: &ConvAddStep<'_, C>,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error> {
        let c = &s.conv;
        let add = AddInto::<SINGLE>::new(&s.add);
        conv2d_layer_with::<SINGLE, LAYER, WINDOW, C, _>(&c.params, input, c.weights, c.channels, output, &add);
        Ok(())
    }

    fn window<C: ChannelTable>(s: &ConvAddStep<'_, C>) -> usize {
        super::conv_gathered::gathered_window(&s.conv.params).unwrap_or(0)
    }

    fn channels<C: ChannelTable>(s: &ConvAddStep<'_, C>) -> Option<C> {
        Some(s.conv.channels)
    }

    fn with_channels<'a, C: ChannelTable, D: ChannelTable>(s: Self::Step<'a, C>, channels: D) -> Self::Step<'a, D> {
        let c = s.conv;
        ConvAddStep { conv: ConvStep { params: c.params, weights: c.weights, channels }, add: s.add }
    }

    #[cfg(feature = "codegen")]
    fn source(
        s: &ConvAddStep<'_, &[u8]>,
        l: &Layer,
        krate: &str,
        tensors: &mut dyn FnMut(&[i8]) -> alloc::string::String,
    ) -> alloc::string::String {
        let conv = match conv_layer(l) {
            Ok(c) => Layer { output: crate::QuantParams { zero_point: s.add.entries[0].bias, ..c.output }, ..c },
            Err(_) => *l,
        };
        alloc::format!(
            "{krate}::kernels::conv_add::ConvAddStep {{ conv: {}, add: {} }}",
            super::conv::conv_source(&conv, krate, s.conv.weights, tensors),
            super::add::add_source(&s.add, krate)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv_gathered::MAX_WINDOW;
    use super::super::reference::{self, Quant, add_case, conv_case_up_to, conv_params, edgy_i8, quant, table};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The convolution's output added into the skip equals the
        /// reference convolution followed by the reference addition, through
        /// the shared kernel and a compiled layer's own (gathering) one.
        #[test]
        fn equals_the_convolution_then_the_addition(
            (p, x, w, ch) in conv_case_up_to(false, 1..9, (4, 4)),
            q in quant(),
            entries in add_case(),
            zout in any::<i8>(),
            skip_seed in proptest::collection::vec(edgy_i8(), 1..2),
        ) {
            let conv_q = Quant { zout: entries[0].bias, ..q };
            let y = reference::conv2d(p, &x, &w, &ch, conv_q);
            let skip: Vec<i8> = (0..y.len()).map(|i| (i as i8).wrapping_mul(37).wrapping_add(skip_seed[0])).collect();
            let add_q = Quant { zin: 0, zout: zout as i32, min: -128, max: 127 };
            let want = reference::add(&y, &skip, &entries, add_q);
            let step = AddStep { entries, output_zero_point: zout as i32, clamp: Clamp { min: -128, max: 127 } };
            let params = conv_params(p, conv_q);
            let t = table(&ch);
            let mut got = skip.clone();
            conv2d_layer_with::<false, { usize::MAX }, 0, _, _>(&params, &x, &w, t.as_slice(), &mut got, &AddInto::<false>::new(&step));
            prop_assert_eq!(&got, &want);
            let mut own = skip.clone();
            conv2d_layer_with::<false, 0, MAX_WINDOW, _, _>(&params, &x, &w, t.as_slice(), &mut own, &AddInto::<false>::new(&step));
            prop_assert_eq!(&own, &want);
        }
    }
}
