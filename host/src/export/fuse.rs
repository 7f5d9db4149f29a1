//! Graph rewrites before a model is written: a convolution whose output
//! only an addition reads becomes one conv-add layer
//! (`tinykd_runtime::kernels::conv_add`), which adds each output into the
//! addition's other input in place instead of writing a tensor of its own.
//! The arithmetic is unchanged bit for bit; the arena loses that tensor
//! (ResNet-8: 49,152 → 32,768 bytes).

use tinykd_runtime::format::Op;

use super::tkd::TkdLayer;

/// Fuses each convolution into the addition right after it when the
/// addition is the only reader of its output (and does not read it twice);
/// later layers' tensor numbers follow.
pub fn conv_add(layers: &mut Vec<TkdLayer>) {
    let mut j = 1;
    while j < layers.len() {
        if let Some(fused) = fusion(layers, j) {
            layers.splice(j - 1..=j, [fused]);
            // Tensor j (the convolution's output) is gone; the addition's,
            // j + 1, is the fused layer's, now j.
            for (i, l) in layers.iter_mut().enumerate().skip(j) {
                let renumber = |t: usize| if t > j { t - 1 } else { t };
                l.input = Some(renumber(l.input_tensor(i + 1)));
                l.second = l.second.map(renumber);
            }
        }
        j += 1;
    }
}

/// Layers `j − 1` (a convolution) and `j` (an addition reading its output,
/// tensor `j`) as one conv-add layer, if they fuse.
fn fusion(layers: &[TkdLayer], j: usize) -> Option<TkdLayer> {
    let (conv, add) = (&layers[j - 1], &layers[j]);
    let (first, second) = (add.input_tensor(j), add.second?);
    if conv.op != Op::Conv2d || add.op != Op::Add || first == second || (first != j && second != j) {
        return None;
    }
    let read_later =
        layers[j + 1..].iter().enumerate().any(|(k, l)| l.input_tensor(j + 1 + k) == j || l.second == Some(j));
    if read_later || add.channels.len() != 3 || add.weight_scales.len() != 3 {
        return None;
    }
    // The convolution is the addition's first input; the other one its second.
    let (mut entries, mut scales) = (add.channels.clone(), add.weight_scales.clone());
    let skip = if first == j {
        second
    } else {
        entries.swap(0, 1);
        scales.swap(0, 1);
        first
    };
    let mut params = conv.params;
    params[9] = conv.clamp.min as u8 as u16;
    params[10] = conv.clamp.max as u8 as u16;
    params[11] = conv.activation as u16;
    Some(TkdLayer {
        op: Op::ConvAdd,
        activation: add.activation,
        clamp: add.clamp,
        input_len: conv.input_len,
        output_len: add.output_len,
        params,
        input_zero_point: conv.input_zero_point,
        output: add.output,
        weights: conv.weights.clone(),
        channels: [conv.channels.clone(), entries].concat(),
        weight_scales: [conv.weight_scales.clone(), scales].concat(),
        input: Some(conv.input_tensor(j - 1)),
        second: Some(skip),
    })
}
