//! A student as the device's operators: a weighted layer with the
//! BatchNorm folded into it and the activation fused into its clamp, a pool,
//! a residual block's projection and its addition — which tensors each
//! reads, and which take quantization parameters of their own.
//! Calibration, quantization and quantization-aware training all walk this
//! one list, so they agree on what each calibrated range is for.

use anyhow::{Result, bail};
use tinykd_runtime::QuantParams;
use tinykd_runtime::format::Activation;
use tinykd_runtime::kernels::ChannelQuant;

use super::{Rounding, Scheme, add_layer, clamp_for, layer_weight_scales, quantize_bias, quantize_weight};
use crate::export::tkd::{TkdLayer, TkdModel};
use crate::student::layer::{DeviceWeights, LayerKind};
use crate::student::{Device, Layer, Shape, Student};

/// What a device operator computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// A dense, convolution or depthwise layer, with what fuses into it.
    Weighted,
    /// A layer that keeps its input's quantization (pools).
    Unweighted,
    /// A residual block's 1×1 projection of its input.
    Projection,
    /// A residual block's addition, with the activation fused into it.
    Add,
}

/// One operator of the device's graph.
#[derive(Debug, Clone)]
pub(crate) struct DeviceOp {
    pub kind: OpKind,
    /// The student layer it comes from (a projection: its addition).
    pub layer: usize,
    /// The tensor it reads: 0 the input, `k` operator `k − 1`'s output.
    pub input: usize,
    /// The student activation it reads (`Student::activations` numbering).
    pub input_act: usize,
    /// An addition's second input (the block's input, or its projection).
    pub second: Option<usize>,
    /// The student activation it computes (a projection computes none).
    pub output_act: Option<usize>,
    /// The activation fused into it.
    pub activation: Activation,
    /// Shape of what it reads.
    pub in_shape: Shape,
    /// Its output's quantization parameters (index into the calibrated
    /// list: 0 is the input's). A pool's are its input's.
    pub param: usize,
}

/// A weighted layer with what is fused into it on the device.
pub(super) struct Fused {
    /// Weights in the device layout and bias, BatchNorm folded in.
    pub weights: DeviceWeights,
    pub activation: Activation,
}

/// Folds a following BatchNorm and picks up a following activation;
/// returns them and the first layer after them.
pub(super) fn fuse(student: &Student, i: usize) -> Result<(Fused, usize)> {
    let layer = &student.layers[i];
    let Some(mut f) = layer.kind().device_weights(device_in_shape(student, i)) else {
        bail!("layer {i} ({layer:?}) has no weights to quantize")
    };
    let mut j = i + 1;
    if let Some((a, b)) = student.layers.get(j).and_then(|l| l.kind().folded_affine()) {
        let per_channel = f.per_channel;
        for (o, (scale, shift)) in a.iter().zip(&b).enumerate() {
            f.weights[o * per_channel..(o + 1) * per_channel].iter_mut().for_each(|w| *w *= scale);
            f.bias[o] = f.bias[o] * scale + shift;
        }
        j += 1;
    }
    let (activation, j) = fused_activation(student, j);
    Ok((Fused { weights: f, activation }, j))
}

/// The shape of what the device feeds layer `i`: a layer that is nothing
/// on the device (flatten, dropout) in between changes nothing (a dense
/// layer after a flatten reads the map in its channels-last order), so look
/// through them.
fn device_in_shape(student: &Student, i: usize) -> Shape {
    let mut k = i;
    while k > 0 && student.layers[k - 1].device() == Device::Nothing {
        k -= 1;
    }
    student.shapes[k]
}

/// The activation at layer `j`, if there is one to fuse, and the layer after.
fn fused_activation(student: &Student, j: usize) -> (Activation, usize) {
    match student.layers.get(j).map(Layer::device) {
        Some(Device::Activation(a)) => (a, j + 1),
        _ => (Activation::None, j),
    }
}

/// The device operators of `student`, in order.
pub(crate) fn lower(student: &Student) -> Result<Vec<DeviceOp>> {
    let n = student.layers.len();
    // The device tensor holding each student activation, where one does.
    let mut tensor_of: Vec<Option<usize>> = vec![None; n + 1];
    tensor_of[0] = Some(0);
    // The calibrated parameters of each tensor.
    let mut param_of = vec![0];
    let mut ops: Vec<DeviceOp> = Vec::new();
    let mut slots = 1;
    let reads = |tensor_of: &[Option<usize>], act: usize, i: usize| {
        tensor_of[act].ok_or_else(|| {
            anyhow::anyhow!("layer {i} reads activation {act}, which is inside another operator on the device")
        })
    };
    let mut i = 0;
    while i < n {
        let layer = &student.layers[i];
        // Appends an operator; its output is the next tensor.
        let push = |ops: &mut Vec<DeviceOp>, param_of: &mut Vec<usize>, op: DeviceOp| {
            param_of.push(op.param);
            ops.push(op);
            ops.len()
        };
        let input = reads(&tensor_of, i, i)?;
        let base = DeviceOp {
            kind: OpKind::Weighted,
            layer: i,
            input,
            input_act: i,
            second: None,
            output_act: Some(i + 1),
            activation: Activation::None,
            in_shape: device_in_shape(student, i),
            param: slots,
        };
        match layer.device() {
            Device::Weighted => {
                let (f, next) = fuse(student, i)?;
                slots += 1;
                let t = push(
                    &mut ops,
                    &mut param_of,
                    DeviceOp { output_act: Some(next), activation: f.activation, ..base },
                );
                tensor_of[next] = Some(t);
                i = next;
            }
            Device::Unweighted => {
                let op = DeviceOp { kind: OpKind::Unweighted, param: param_of[input], ..base };
                tensor_of[i + 1] = Some(push(&mut ops, &mut param_of, op));
                i += 1;
            }
            Device::Add => {
                let Layer::Add(add) = layer else { bail!("layer {i} ({layer:?}) is not an addition") };
                let skip = reads(&tensor_of, add.from, i)?;
                let second = match &add.projection {
                    Some(p) => {
                        let op = DeviceOp {
                            kind: OpKind::Projection,
                            input: skip,
                            input_act: add.from,
                            output_act: None,
                            in_shape: p.in_shape,
                            ..base.clone()
                        };
                        slots += 1;
                        push(&mut ops, &mut param_of, op)
                    }
                    None => skip,
                };
                let (activation, next) = fused_activation(student, i + 1);
                let op = DeviceOp {
                    kind: OpKind::Add,
                    second: Some(second),
                    output_act: Some(next),
                    activation,
                    param: slots,
                    ..base
                };
                slots += 1;
                tensor_of[next] = Some(push(&mut ops, &mut param_of, op));
                i = next;
            }
            Device::Nothing => {
                tensor_of[i + 1] = tensor_of[i];
                i += 1;
            }
            Device::Folded | Device::Activation(_) => {
                bail!("layer {i} ({layer:?}) cannot be quantized on its own: it must follow a dense or conv layer")
            }
        }
    }
    Ok(ops)
}

/// The number of quantization parameters [`quantize_ops`] takes: the
/// input's, then one per operator that computes new values.
pub(crate) fn param_count(ops: &[DeviceOp]) -> usize {
    1 + ops.iter().filter(|o| o.kind != OpKind::Unweighted).count()
}

/// The device operators of `student` quantized with `params` (see
/// [`lower`]), one `.tkd` layer each, wired as the graph is.
pub(crate) fn quantize_ops(student: &Student, params: &[QuantParams], g: Scheme) -> Result<TkdModel> {
    let ops = lower(student)?;
    if params.len() != param_count(&ops) {
        bail!("{} quantization parameters for a student that takes {}", params.len(), param_count(&ops));
    }
    // The parameters of each tensor: the input's, then each operator's output's.
    let mut tensor_params = vec![params[0]];
    let mut layers = Vec::with_capacity(ops.len());
    for (k, op) in ops.iter().enumerate() {
        let in_params = tensor_params[op.input];
        let out = params[op.param];
        let output_len = match op.output_act {
            Some(a) => student.shapes[a].iter().product(),
            None => student.shapes[op.layer + 1].iter().product(),
        };
        let layer = student.layers[op.layer].kind();
        let mut l = match op.kind {
            OpKind::Weighted => {
                let (f, _) = fuse(student, op.layer)?;
                weighted(layer, &f.weights, op, in_params, out, output_len, g)?
            }
            OpKind::Projection => {
                let Layer::Add(add) = &student.layers[op.layer] else { bail!("layer {} is not an addition", op.layer) };
                let Some(p) = &add.projection else { bail!("layer {} has no projection", op.layer) };
                let Some(w) = p.device_weights(op.in_shape) else { bail!("the projection has no weights") };
                weighted(p, &w, op, in_params, out, output_len, g)?
            }
            OpKind::Add => {
                let second = tensor_params[op.second.unwrap_or(0)];
                add_layer(in_params, second, out, output_len, op.activation, clamp_for(op.activation, out))?
            }
            OpKind::Unweighted => {
                let Some((kind, p)) = layer.device_op(op.in_shape)? else {
                    bail!("layer {} has no operator on the device", op.layer)
                };
                super::pass_through(kind, p, op.in_shape.iter().product(), output_len, in_params)
            }
        };
        l.input = (op.input != k).then_some(op.input);
        l.second = op.second;
        tensor_params.push(out);
        layers.push(l);
    }
    let output = layers.last().map(|l| l.output).unwrap_or(params[0]);
    Ok(TkdModel {
        input_shape: student.input_shape.clone(),
        input: params[0],
        output,
        classes: student.classes,
        layers,
        data_channels_last: false,
        single_rounding: g.rounding == Rounding::Single,
    })
}

/// A weighted operator quantized: int8 weights, and per channel the int32
/// bias and requantization multiplier.
fn weighted(
    layer: &dyn LayerKind,
    f: &DeviceWeights,
    op: &DeviceOp,
    in_params: QuantParams,
    out: QuantParams,
    output_len: usize,
    g: Scheme,
) -> Result<TkdLayer> {
    let DeviceWeights { weights, bias, per_channel, folds_input_zero_point } = f;
    let channels = bias.len();
    let mut q_weights = Vec::with_capacity(weights.len());
    let mut table = Vec::with_capacity(channels);
    let mut weight_scales = Vec::with_capacity(channels);
    let scales = layer_weight_scales(weights, *per_channel, g.weight_scales);
    for (o, &s_w) in scales.iter().enumerate() {
        let row = &weights[o * per_channel..(o + 1) * per_channel];
        let q_row: Vec<i8> = row.iter().map(|w| quantize_weight(*w, s_w)).collect();
        let acc_scale = in_params.scale as f64 * s_w as f64;
        let bias = quantize_bias(bias[o], acc_scale);
        // Fully connected folds −z_in·Σw into the bias (plain dot
        // product on the device); convolutions skip padded taps,
        // so they keep TFLite's plain bias and subtract z_in per tap.
        let stored = if *folds_input_zero_point {
            bias - in_params.zero_point as i64 * q_row.iter().map(|w| *w as i64).sum::<i64>()
        } else {
            bias
        };
        let stored = i32::try_from(stored)
            .map_err(|_| anyhow::anyhow!("bias of layer {} channel {o} overflows int32", op.layer))?;
        let (multiplier, shift) = super::quantize_multiplier(acc_scale / out.scale as f64);
        table.push(ChannelQuant { bias: stored, multiplier, shift });
        weight_scales.push(s_w);
        q_weights.extend(q_row);
    }
    let Some((kind, params)) = layer.device_op(op.in_shape)? else {
        bail!("layer {} has no operator on the device", op.layer)
    };
    Ok(TkdLayer {
        op: kind,
        activation: op.activation,
        clamp: clamp_for(op.activation, out),
        input_len: op.in_shape.iter().product(),
        output_len,
        params,
        input_zero_point: in_params.zero_point,
        output: out,
        weights: layer.device_layout(q_weights, op.in_shape),
        channels: table,
        weight_scales,
        input: None,
        second: None,
    })
}
