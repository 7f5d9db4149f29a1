//! Graph rewrites before a model is written, each leaving the arithmetic
//! unchanged bit for bit: an addition takes the input that dies there as
//! its second, which it computes over in place; and a convolution whose
//! output only an addition reads becomes one conv-add layer
//! (`tinykd_runtime::kernels::conv_add`), which adds each output into the
//! addition's other input instead of writing a tensor of its own, so the
//! arena loses that tensor (ResNet-8: 49,152 → 32,768 bytes).

use tinykd_runtime::format::Op;

use super::tkd::TkdLayer;

/// Layer `i`, an addition, with its two inputs exchanged, with their
/// requantization entries and scales: TFLite's integer sum does not
/// depend on their order.
fn swapped(add: &TkdLayer, i: usize) -> TkdLayer {
    let mut l = add.clone();
    if let Some(second) = add.second {
        l.input = Some(second);
        l.second = Some(add.input_tensor(i));
        l.channels.swap(0, 1);
        l.weight_scales.swap(0, 1);
        l.input_zero_point = l.channels[0].bias;
    }
    l
}

/// Puts each addition's dying input second, so that the sum is written
/// over it (in place, see `tinykd_runtime::plan`).
pub fn add_over_dying_inputs(layers: &mut [TkdLayer]) {
    let n = layers.len();
    let mut last_read = vec![0; n + 1];
    for (i, l) in layers.iter().enumerate() {
        for t in std::iter::once(l.input_tensor(i)).chain(l.second) {
            last_read[t] = i;
        }
    }
    last_read[n] = n;
    for (i, l) in layers.iter_mut().enumerate() {
        let (Some(second), first) = (l.second, l.input_tensor(i)) else { continue };
        let (first_dies, second_dies) = (first > 0 && last_read[first] == i, second > 0 && last_read[second] == i);
        if l.op == Op::Add && first_dies && !second_dies && first != second && l.channels.len() == 3 {
            *l = swapped(l, i);
        }
    }
}

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
    let add = if first == j { add.clone() } else { swapped(add, j) };
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
        channels: [conv.channels.clone(), add.channels].concat(),
        weight_scales: [conv.weight_scales.clone(), add.weight_scales].concat(),
        input: Some(conv.input_tensor(j - 1)),
        second: add.second,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tinykd_runtime::QuantParams;
    use tinykd_runtime::format::Activation;
    use tinykd_runtime::kernels::Clamp;

    /// t1 = fc(input), t2 = fc(t1), t3 = t2 + t1, t4 = t3 + t1: the first
    /// addition's first input dies there and its second does not, so they
    /// swap; the last one's dying input is second already.
    #[test]
    fn an_addition_takes_its_dying_input_second() {
        let fc = crate::export::tkd::tests::tiny_model().layers[0].clone();
        let fc2 =
            TkdLayer { input_len: 4, params: [4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], weights: vec![1; 16], ..fc.clone() };
        let q = |scale: f32, zero_point: i32| QuantParams { scale, zero_point };
        let full = Clamp { min: -128, max: 127 };
        let add = |input: usize, second: usize| TkdLayer {
            input: Some(input),
            second: Some(second),
            ..crate::quant::add_layer(q(0.1, -3), q(0.2, 5), q(0.3, 0), 4, Activation::None, full).unwrap()
        };
        let mut layers = vec![fc, fc2, add(2, 1), add(3, 1)];
        let before = layers[2].clone();
        add_over_dying_inputs(&mut layers);
        let swapped = &layers[2];
        assert_eq!((swapped.input, swapped.second), (Some(1), Some(2)));
        assert_eq!((swapped.channels[0], swapped.channels[1]), (before.channels[1], before.channels[0]));
        assert_eq!(swapped.weight_scales[..2], [before.weight_scales[1], before.weight_scales[0]]);
        assert_eq!(swapped.input_zero_point, 5);
        assert_eq!((layers[3].input, layers[3].second), (Some(3), Some(1)), "its second input dies there already");
    }
}
