//! The layer table: every kind of student layer, one entry each.
//!
//! A layer kind is one file under `student/` implementing [`LayerKind`] —
//! its parameters, shape, forward and backward passes (training), what it
//! becomes on the device (quantization) and its ONNX form (export) — and
//! one line in [`layers!`]'s table below, which makes it a variant of
//! [`Layer`] (the checkpoint's `"kind"` tag). The trainer, the quantizer,
//! calibration, QAT and the ONNX writer ask the layer through the trait,
//! so adding a kind touches nothing else but the spec grammar.

use anyhow::Result;
use rand::RngCore;
use tinykd_runtime::format::{Activation, Op, layer::PARAM_COUNT};

use super::Shape;
use super::batchnorm::BatchStats;
use super::onnx::{Builder, Cursor};

/// What a layer becomes on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// A weighted operator (dense, convolution): a following BatchNorm
    /// folds into its weights, a following activation into its clamp.
    Weighted,
    /// An operator without weights whose output keeps its input's
    /// quantization (pools).
    Unweighted,
    /// A per-channel affine map folded into the weighted layer before it.
    Folded,
    /// A clamp fused into the operator before it.
    Activation(Activation),
    /// The addition closing a residual block (two inputs; an activation
    /// after it fuses into its clamp).
    Add,
    /// Nothing: the device's activation already is its output (flatten,
    /// dropout at inference).
    Nothing,
}

/// A weighted layer's float weights as the device holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceWeights {
    /// `[out][per_channel]`, each row in the order the device reads it.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// Values per output channel.
    pub per_channel: usize,
    /// Whether the device folds `−z_in · Σ w` into the bias (a fully
    /// connected layer's plain dot product) instead of subtracting the input
    /// zero point per tap (convolutions, whose padded taps are skipped).
    pub folds_input_zero_point: bool,
}

/// What a training forward pass keeps of a layer, beside its input, for
/// the backward pass.
#[derive(Debug, Clone, Default)]
pub enum Saved {
    #[default]
    Nothing,
    /// A dropout keep-mask (scaled).
    Mask(Vec<f32>),
    /// A depthwise convolution's input, channels-last.
    ChannelsLast(Vec<f32>),
    /// A BatchNorm's batch statistics (of the whole batch when sharded).
    Stats(BatchStats),
}

/// One kind of student layer. Defaults fit a layer without parameters that
/// leaves its input as it is.
pub trait LayerKind {
    /// Trainable tensors, in a fixed order.
    fn params(&self) -> Vec<&Vec<f32>> {
        Vec::new()
    }

    fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
        Vec::new()
    }

    /// Whether weight decay applies to parameter `i` (weights yes; biases
    /// and normalisation no).
    fn decays(&self, _i: usize) -> bool {
        false
    }

    /// The output shape for an input of shape `input` (`[C, H, W]`).
    fn out_shape(&self, input: Shape) -> Shape {
        input
    }

    /// Multiply-accumulates of one inference.
    fn macs(&self) -> usize {
        0
    }

    /// Inference forward over `n` samples.
    fn forward(&self, x: &[f32], n: usize) -> Vec<f32>;

    /// [`LayerKind::forward`] that may reuse its input's buffer.
    fn forward_owned(&self, x: Vec<f32>, n: usize) -> Vec<f32> {
        self.forward(&x, n)
    }

    /// Training forward over `n` samples: the output and what backward
    /// needs beside the input. (BatchNorm's batch statistics are taken
    /// over all shards by the trainer, see `training.rs`.)
    fn forward_train(&self, x: &[f32], n: usize, _rng: &mut dyn RngCore) -> (Vec<f32>, Saved) {
        (self.forward(x, n), Saved::Nothing)
    }

    /// What [`LayerKind::forward_train`] would have saved for input `x`,
    /// when the forward values come from elsewhere (quantization-aware
    /// training runs them on the int8 runtime): no dropout, no statistics.
    fn replay(&self, _x: &[f32], _n: usize) -> Saved {
        Saved::Nothing
    }

    /// Backward over `n` samples from the output gradient `d`: accumulates
    /// into the layer's gradients `grads` (one per parameter) and returns
    /// the input gradient (empty when `input_grad` is false; `d` may be
    /// taken).
    fn backward(
        &self,
        x: &[f32],
        saved: &Saved,
        d: &mut Vec<f32>,
        n: usize,
        grads: &mut [Vec<f32>],
        input_grad: bool,
    ) -> Vec<f32>;

    /// What the layer becomes on the device.
    fn device(&self) -> Device;

    /// A weighted layer's weights in the device's order, for an input of
    /// shape `in_shape`.
    fn device_weights(&self, _in_shape: Shape) -> Option<DeviceWeights> {
        None
    }

    /// Quantized weights (`[out][per_channel]`, as
    /// [`LayerKind::device_weights`] gave them) in the runtime's layout.
    fn device_layout(&self, quantized: Vec<i8>, _in_shape: Shape) -> Vec<i8> {
        quantized
    }

    /// The runtime operator and its record parameters, for an input of
    /// shape `in_shape` (weighted and unweighted layers).
    fn device_op(&self, _in_shape: Shape) -> Result<Option<(Op, [u16; PARAM_COUNT])>> {
        Ok(None)
    }

    /// A folded layer's per-channel `(scale, shift)`.
    fn folded_affine(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        None
    }

    /// Appends the layer to the float ONNX graph at `at`.
    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()>;
}

/// [`LayerKind`]'s parameter methods for a layer whose parameters are its
/// `weight` (decayed) and `bias`.
macro_rules! weight_and_bias {
    () => {
        fn params(&self) -> Vec<&Vec<f32>> {
            vec![&self.weight, &self.bias]
        }

        fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
            vec![&mut self.weight, &mut self.bias]
        }

        fn decays(&self, i: usize) -> bool {
            i == 0
        }
    };
}
pub(crate) use weight_and_bias;

/// A record parameter, refused when the format's u16 cannot hold it.
pub(crate) fn u16p(v: usize, what: &str) -> Result<u16> {
    u16::try_from(v).map_err(|_| anyhow::anyhow!("{what} = {v} is too large for the firmware format"))
}

/// A window operator's record parameters `[in_h, in_w, in_c, out_c,
/// kernel_h, kernel_w, stride_h, padding, stride_w, 0, 0, 0]` for an input
/// of `[c, h, w]`.
pub(crate) fn window_params(
    [c, h, w]: Shape,
    out: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: super::spec::Padding,
) -> Result<[u16; PARAM_COUNT]> {
    Ok([
        u16p(h, "height")?,
        u16p(w, "width")?,
        u16p(c, "channels")?,
        u16p(out, "channels")?,
        u16p(kernel[0], "kernel")?,
        u16p(kernel[1], "kernel")?,
        u16p(stride[0], "stride")?,
        (padding == super::spec::Padding::Same) as u16,
        u16p(stride[1], "stride")?,
        0,
        0,
        0,
    ])
}

/// The table: `Variant(type)`; the variant's lowercase name is the
/// checkpoint's `"kind"`.
macro_rules! layers {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty), )*) => {
        /// A trainable layer.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum Layer {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl Layer {
            /// The layer through its kind's trait.
            pub fn kind(&self) -> &dyn LayerKind {
                match self {
                    $( Layer::$variant(l) => l, )*
                }
            }

            /// The layer through its kind's trait, mutably.
            pub fn kind_mut(&mut self) -> &mut dyn LayerKind {
                match self {
                    $( Layer::$variant(l) => l, )*
                }
            }
        }
    };
}

layers! {
    Dense(super::Dense),
    Conv(super::Conv),
    Depthwise(super::Depthwise),
    Pool(super::Pool),
    /// Global average pooling over a `[C, H, W]` input.
    Gap(super::pool::Gap),
    BatchNorm(super::BatchNorm),
    Relu(super::activation::Relu),
    Relu6(super::activation::Relu6),
    Flatten(super::flatten::Flatten),
    Dropout(super::dropout::Dropout),
    /// The addition closing a residual block.
    Add(super::residual::Add),
}

impl Layer {
    /// What the layer becomes on the device.
    pub fn device(&self) -> Device {
        self.kind().device()
    }

    /// Whether it is a weighted operator on the device.
    pub fn is_weighted(&self) -> bool {
        self.device() == Device::Weighted
    }
}
