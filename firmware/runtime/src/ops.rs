//! The operator table: every operator the runtime runs, one entry each.
//!
//! An operator is a kernel file implementing [`Operator`] — how its layer
//! record is checked and decoded into a step, how the step runs, and (for
//! the host's code generator) how the step is written as Rust source — and
//! one line in [`operators!`]'s table below, which gives it its code in a
//! layer record, its [`Op`] name and its [`Step`] variant. Everything that
//! dispatches on the operator (the record's decoding, the model's
//! validation, the run loop, the firmware's operator sets, the code
//! generator) is generated from that table, so adding an operator touches
//! nothing else.
//!
//! The dispatch is a `match` over an enum, as a hand-written one would be:
//! no trait objects, and each arm guarded by a constant (the build's
//! [`OpSet`]) so that a firmware image links only the kernels of the
//! operators its model uses.

use crate::error::Error;
use crate::format::OpSet;
use crate::kernels::{self, ChannelTable};
use crate::model::Layer;

/// One operator: its decoded form and its kernel.
pub trait Operator {
    /// A layer of this operator, decoded: shape, quantization and tensors,
    /// `C` its channel table (raw, or prepared at compile time).
    type Step<'a, C: ChannelTable>: Copy + core::fmt::Debug + PartialEq;

    /// How many tensors the operator reads: 1, or 2 for an operator that
    /// combines its first input into its output, which holds the second
    /// input when the kernel starts (see [`crate::compiled::Wiring`]).
    const INPUTS: usize = 1;

    /// Checks a layer record's operator parameters against its lengths and
    /// tensor sizes. The model checks what every record shares (the clamp,
    /// the tensors' bounds, the channel table's multipliers).
    fn validate(layer: &Layer) -> Result<(), Error>;

    /// Decodes a validated layer over its tensors.
    fn decode<'a>(layer: &Layer, weights: &'a [i8], channels: &'a [u8]) -> Result<Self::Step<'a, &'a [u8]>, Error>;

    /// Runs the layer: `SINGLE` selects TFLite's single rounding; `LAYER`
    /// is `usize::MAX` for the shared kernel, else the index of a compiled
    /// model's layer function that gets its own copy; `WINDOW` is what
    /// [`Operator::window`] gave for it (0 for the shared kernel).
    fn run<const SINGLE: bool, const LAYER: usize, const WINDOW: usize, C: ChannelTable>(
        step: &Self::Step<'_, C>,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), Error>;

    /// The compile-time window a compiled model's layer function runs this
    /// step with (its `WINDOW`), or 0.
    fn window<C: ChannelTable>(_step: &Self::Step<'_, C>) -> usize {
        0
    }

    /// The step's channel table, if it has one.
    fn channels<C: ChannelTable>(step: &Self::Step<'_, C>) -> Option<C>;

    /// The step over another channel table (a table decoded ahead).
    fn with_channels<'a, C: ChannelTable, D: ChannelTable>(step: Self::Step<'a, C>, channels: D) -> Self::Step<'a, D>;

    /// The step as a Rust expression of type `Self::Step`, for a compiled
    /// model's source. `krate` names this crate; `tensors` writes out the
    /// step's weights and channel table and gives the fields that name them
    /// (`weights: …, channels: …`).
    #[cfg(feature = "codegen")]
    fn source(
        step: &Self::Step<'_, &[u8]>,
        layer: &Layer,
        krate: &str,
        tensors: &mut dyn FnMut(&[i8]) -> alloc::string::String,
    ) -> alloc::string::String;
}

/// A clamp as Rust source.
#[cfg(feature = "codegen")]
pub(crate) fn clamp_source(krate: &str, clamp: kernels::Clamp) -> alloc::string::String {
    alloc::format!("{krate}::kernels::Clamp {{ min: {}, max: {} }}", clamp.min, clamp.max)
}

/// The table: `$(#[doc])* Name = code, StepVariant => kernel type`.
macro_rules! operators {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $variant:ident => $ty:ty; )*) => {
        /// Layer operators, by their code in a layer record. `params` are the
        /// record's 8 u16 operator parameters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Op {
            $( $(#[$doc])* $name = $code, )*
        }

        impl Op {
            /// This operator's bit in an [`OpSet`].
            pub const fn bit(self) -> OpSet {
                1 << self as u8
            }

            /// Decodes an operator byte.
            pub fn from_u8(v: u8) -> Option<Op> {
                match v {
                    $( $code => Some(Op::$name), )*
                    _ => None,
                }
            }

            /// How many tensors the operator reads (see [`Operator::INPUTS`]).
            pub const fn inputs(self) -> usize {
                match self {
                    $( Op::$name => <$ty as Operator>::INPUTS, )*
                }
            }

            /// The operator's name, as in [`Op`].
            pub const fn name(self) -> &'static str {
                match self {
                    $( Op::$name => stringify!($name), )*
                }
            }
        }

        /// Every operator in the table, as an [`OpSet`].
        pub const EVERY_OPERATOR: OpSet = 0 $( | Op::$name.bit() )*;

        // Operator codes leave the rounding bits of an `OpSet` free (a code
        // of 32 or more fails here too: its bit overflows).
        const _: () = assert!(EVERY_OPERATOR & (crate::format::SINGLE_ROUNDING | crate::format::DOUBLE_ROUNDING) == 0);

        /// What one layer computes, decoded: the operator with its shape and
        /// quantization, and its tensors.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Step<'a, C: ChannelTable = &'a [u8]> {
            $( $variant(<$ty as Operator>::Step<'a, C>), )*
        }

        impl<'a, C: ChannelTable> Step<'a, C> {
            /// The operator.
            pub fn op(&self) -> Op {
                match self {
                    $( Step::$variant(_) => Op::$name, )*
                }
            }

            /// [`Step::run`]'s body with a constant `LAYER` and `WINDOW` (see
            /// [`Operator::run`]): operators outside `OPS` are
            /// [`Error::OpNotBuiltIn`] and their kernels never linked.
            #[inline(always)]
            pub(crate) fn dispatch<const OPS: OpSet, const LAYER: usize, const WINDOW: usize>(
                &self,
                single: bool,
                input: &[i8],
                output: &mut [i8],
            ) -> Result<(), Error> {
                match *self {
                    $(
                        Step::$variant(ref s) if OPS & Op::$name.bit() != 0 => {
                            if single {
                                <$ty as Operator>::run::<true, LAYER, WINDOW, C>(s, input, output)
                            } else {
                                <$ty as Operator>::run::<false, LAYER, WINDOW, C>(s, input, output)
                            }
                        }
                    )*
                    _ => Err(Error::OpNotBuiltIn(self.op() as u8)),
                }
            }

            /// The compile-time window of a compiled model's layer function
            /// for this step (see [`Operator::window`]).
            pub fn window(&self) -> usize {
                match self {
                    $( Step::$variant(s) => <$ty as Operator>::window::<C>(s), )*
                }
            }

            /// The step's channel table, if it has one.
            pub fn channels(&self) -> Option<C> {
                match self {
                    $( Step::$variant(s) => <$ty as Operator>::channels::<C>(s), )*
                }
            }

            /// The step over another channel table (one decoded ahead).
            pub fn with_channels<D: ChannelTable>(self, channels: D) -> Step<'a, D> {
                match self {
                    $( Step::$variant(s) => Step::$variant(<$ty as Operator>::with_channels::<C, D>(s, channels)), )*
                }
            }
        }

        impl<'a> Step<'a> {
            /// Decodes a layer, for the operators in `OPS` only (the others
            /// are [`Error::OpNotBuiltIn`]), so firmware does not link the
            /// other operators' decoding either.
            #[inline(always)]
            pub(crate) fn decode<const OPS: OpSet>(
                layer: &Layer,
                weights: &'a [i8],
                channels: &'a [u8],
            ) -> Result<Step<'a>, Error> {
                match layer.op {
                    $(
                        Op::$name if OPS & Op::$name.bit() != 0 => {
                            Ok(Step::$variant(<$ty as Operator>::decode(layer, weights, channels)?))
                        }
                    )*
                    op => Err(Error::OpNotBuiltIn(op as u8)),
                }
            }

            /// The step as a Rust expression (see [`Operator::source`]),
            /// `krate::compiled::Step::Variant(…)`.
            #[cfg(feature = "codegen")]
            pub(crate) fn source(
                &self,
                layer: &Layer,
                krate: &str,
                tensors: &mut dyn FnMut(&[i8]) -> alloc::string::String,
            ) -> alloc::string::String {
                match self {
                    $(
                        Step::$variant(s) => alloc::format!(
                            "{krate}::compiled::Step::{}({})",
                            stringify!($variant),
                            <$ty as Operator>::source(s, layer, krate, tensors)
                        ),
                    )*
                }
            }
        }

        /// Checks a layer record's operator parameters (see [`Operator::validate`]).
        pub(crate) fn validate(layer: &Layer) -> Result<(), Error> {
            match layer.op {
                $( Op::$name => <$ty as Operator>::validate(layer), )*
            }
        }
    };
}

operators! {
    /// Fully connected: `params[0]` = input features, `params[1]` = output features;
    /// weights `[out][in]`; channel table bias folded (see [`crate::format`]).
    FullyConnected = 1, FullyConnected => kernels::fully_connected::FullyConnected;
    /// Convolution: params `[in_h, in_w, in_c, out_c, kernel_h, kernel_w, stride,
    /// padding]` (padding 0 VALID, 1 SAME; one stride for H and W); weights
    /// `[out_c][kernel_h][kernel_w][in_c]`; `out_c` channel entries, plain bias.
    /// A 1-D convolution has `in_h = kernel_h = 1`.
    Conv2d = 2, Conv => kernels::conv::Conv2d;
    /// Depthwise convolution with depth multiplier 1: params as [`Op::Conv2d`]
    /// with `out_c = in_c`; weights `[kernel_h][kernel_w][c]` (TFLite's layout);
    /// `c` channel entries, plain bias.
    DepthwiseConv2d = 3, Depthwise => kernels::depthwise::DepthwiseConv2d;
    /// Max pool: params `[in_h, in_w, c, pool_h, pool_w, stride, padding, 0]`; no
    /// weights, no channel table; output quantization = input quantization.
    MaxPool2d = 4, MaxPool => kernels::pool::MaxPool2d;
    /// Average pool, params as [`Op::MaxPool2d`]: the average of the in-bounds
    /// taps rounded half away from zero (TFLite), at most 2^23 taps per window.
    AvgPool2d = 5, AvgPool => kernels::pool::AvgPool2d;
    /// Global average pool: params `[in_h, in_w, c, 0, 0, 0, 0, 0]`; output `c`
    /// values, each the rounded average over all `in_h · in_w ≤ 2^23` positions.
    GlobalAvgPool = 6, GlobalAvgPool => kernels::pool::GlobalAvgPool;
    /// Softmax over the last axis, TFLite's integer algorithm: params
    /// `[depth, 0, …]`; one channel entry `diff_min, multiplier, left shift`
    /// (see [`kernels::softmax`]); output scale 1/256, zero point −128.
    Softmax = 7, Softmax => kernels::softmax::Softmax;
    /// Element-wise addition of two tensors of one shape, TFLite's int8
    /// algorithm, computed in place over the second input: params all 0;
    /// three channel entries (see [`kernels::add`]).
    Add = 8, Add => kernels::add::Add;
    /// A convolution added into its second input (ResNet's block end), in
    /// one pass: [`Op::Conv2d`]'s record with the convolution's clamp in
    /// `params[9..11]` and [`Op::Add`]'s three entries after its own (see
    /// [`kernels::conv_add`]).
    ConvAdd = 9, ConvAdd => kernels::conv_add::ConvAdd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_decodes_to_its_own_operator_once() {
        let ops: Vec<Op> = (0..=u8::MAX).filter_map(Op::from_u8).collect();
        assert_eq!(ops.len() as u32, EVERY_OPERATOR.count_ones(), "a code decodes to no operator or to two");
        for op in ops {
            assert_eq!(Op::from_u8(op as u8), Some(op));
            assert_ne!(EVERY_OPERATOR & op.bit(), 0, "{}", op.name());
        }
        assert_eq!(Op::from_u8(0), None, "0 is no operator (a zeroed record)");
    }

    #[test]
    fn a_steps_operator_is_the_records() {
        let blob = crate::model::test_blob();
        let model = crate::Model::from_bytes(&blob).unwrap();
        for i in 0..model.layer_count() {
            assert_eq!(model.compiled_layer(i).unwrap().step.op(), model.layer(i).unwrap().op, "layer {i}");
        }
    }
}
