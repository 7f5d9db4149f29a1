//! End-to-end tests of `Model`: a hand-built blob with every operator,
//! checked against the naive reference pipeline, and corruption of that blob.

use super::*;
use crate::format::{HEADER_LEN, LAYER_RECORD_LEN, align_up};
use crate::kernels::ChannelQuant;
use crate::kernels::reference::{self, Params, Quant, conv_record, pool_record};
use crate::plan::{PlanLayer, plan};

/// One layer to serialise (a minimal copy of the host writer).
#[derive(Clone)]
struct L {
    op: Op,
    clamp: Clamp,
    input_len: usize,
    output_len: usize,
    params: Params,
    zin: i32,
    zout: i32,
    weights: Vec<i8>,
    channels: Vec<ChannelQuant>,
    /// Tensors read (0 the model input, `k` layer `k − 1`'s output); `None`:
    /// the previous layer's output.
    input: Option<u16>,
    second: Option<u16>,
}

impl L {
    fn quant(&self) -> Quant {
        Quant { zin: self.zin, zout: self.zout, min: self.clamp.min, max: self.clamp.max }
    }
}

/// Serialises a model: header, layer table, then each layer's weights,
/// channel table and weight scales, 4-byte aligned, and the CRC; the arena
/// planned by [`plan`].
fn build(input_dims: &[u16], classes: u16, zin: i32, layers: &[L]) -> Vec<u8> {
    let inputs: Vec<u16> = layers.iter().enumerate().map(|(i, l)| l.input.unwrap_or(i as u16)).collect();
    let planned = plan(
        &layers
            .iter()
            .zip(&inputs)
            .map(|(l, &t)| PlanLayer { output_len: l.output_len, input: t.into(), second: l.second.map(usize::from) })
            .collect::<Vec<_>>(),
    );
    let mut out = vec![0u8; HEADER_LEN + layers.len() * LAYER_RECORD_LEN];
    let push = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.resize(align_up(out.len()), 0);
        let off = out.len();
        out.extend_from_slice(bytes);
        off as u32
    };
    for (i, l) in layers.iter().enumerate() {
        let w: Vec<u8> = l.weights.iter().map(|v| *v as u8).collect();
        let w_off = push(&mut out, &w);
        let c: Vec<u8> = l.channels.iter().flat_map(|c| c.to_le_bytes()).collect();
        let c_off = push(&mut out, &c);
        let s: Vec<u8> = l.channels.iter().flat_map(|_| 0.01f32.to_le_bytes()).collect();
        let s_off = push(&mut out, &s);
        let r = &mut out[HEADER_LEN + i * LAYER_RECORD_LEN..][..LAYER_RECORD_LEN];
        let put = |r: &mut [u8], off: usize, v: u32| r[off..off + 4].copy_from_slice(&v.to_le_bytes());
        r[layer::OP] = l.op as u8;
        r[layer::ACT_MIN] = l.clamp.min as u8;
        r[layer::ACT_MAX] = l.clamp.max as u8;
        put(r, layer::INPUT_LEN, l.input_len as u32);
        put(r, layer::OUTPUT_LEN, l.output_len as u32);
        for (k, p) in l.params.iter().enumerate() {
            r[layer::PARAMS + 2 * k..][..2].copy_from_slice(&p.to_le_bytes());
        }
        put(r, layer::INPUT_ZERO_POINT, l.zin as u32);
        put(r, layer::OUTPUT_ZERO_POINT, l.zout as u32);
        put(r, layer::OUTPUT_SCALE, 0.05f32.to_bits());
        put(r, layer::WEIGHTS_OFFSET, w_off);
        put(r, layer::WEIGHTS_LEN, w.len() as u32);
        put(r, layer::CHANNELS_OFFSET, c_off);
        put(r, layer::CHANNEL_COUNT, l.channels.len() as u32);
        put(r, layer::WEIGHT_SCALES_OFFSET, s_off);
        r[layer::INPUT_TENSOR..][..2].copy_from_slice(&inputs[i].to_le_bytes());
        r[layer::SECOND_TENSOR..][..2].copy_from_slice(&l.second.unwrap_or(format::NO_TENSOR).to_le_bytes());
        put(r, layer::OUTPUT_OFFSET, planned.offsets[i] as u32);
    }
    out.resize(align_up(out.len()), 0);
    let arena = planned.arena;
    let total = out.len() as u32;
    let h = &mut out[..HEADER_LEN];
    h[..4].copy_from_slice(&format::MAGIC);
    h[header::VERSION..][..2].copy_from_slice(&format::VERSION.to_le_bytes());
    h[header::HEADER_LEN..][..2].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[header::TOTAL_LEN..][..4].copy_from_slice(&total.to_le_bytes());
    h[header::LAYER_COUNT..][..2].copy_from_slice(&(layers.len() as u16).to_le_bytes());
    h[header::LAYER_RECORD_LEN..][..2].copy_from_slice(&(LAYER_RECORD_LEN as u16).to_le_bytes());
    h[header::CLASS_COUNT..][..2].copy_from_slice(&classes.to_le_bytes());
    h[header::INPUT_RANK] = input_dims.len() as u8;
    for (k, d) in input_dims.iter().enumerate() {
        h[header::INPUT_DIMS + 2 * k..][..2].copy_from_slice(&d.to_le_bytes());
    }
    let input_len: u32 = input_dims.iter().map(|d| *d as u32).product();
    h[header::INPUT_LEN..][..4].copy_from_slice(&input_len.to_le_bytes());
    h[header::INPUT_SCALE..][..4].copy_from_slice(&0.1f32.to_bits().to_le_bytes());
    h[header::INPUT_ZERO_POINT..][..4].copy_from_slice(&zin.to_le_bytes());
    h[header::OUTPUT_SCALE..][..4].copy_from_slice(&0.2f32.to_bits().to_le_bytes());
    h[header::OUTPUT_ZERO_POINT..][..4].copy_from_slice(&layers[layers.len() - 1].zout.to_le_bytes());
    h[header::ARENA_BYTES..][..4].copy_from_slice(&(arena as u32).to_le_bytes());
    h[header::LAYER_TABLE..][..4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    fix_crc(&mut out);
    out
}

fn fix_crc(b: &mut [u8]) {
    let crc = format::CRC.checksum(&b[format::CRC_START..]);
    b[header::CRC..][..4].copy_from_slice(&crc.to_le_bytes());
}

/// Deterministic int8 values (a 32-bit LCG), so failures reproduce.
fn values(seed: u32, n: usize, lo: i32, hi: i32) -> Vec<i8> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (lo + ((s >> 8) % (hi - lo + 1) as u32) as i32) as i8
        })
        .collect()
}

/// `m · 2^shift` as a Q31 multiplier with `m` in [0.5, 1).
fn multiplier(m: f64, shift: i32, bias: i32) -> ChannelQuant {
    ChannelQuant { bias, multiplier: (m * (1u64 << 31) as f64).round() as i32, shift }
}

const INPUT_ZP: i32 = -3;

/// conv2d → maxpool → depthwise → avgpool → global avgpool → fully connected,
/// on a 6×6×2 input: every new operator, with SAME and VALID padding, strides
/// 1 and 2, partial edge windows, a ReLU clamp and non-zero zero points.
fn pipeline() -> Vec<L> {
    let relu = Clamp { min: 5, max: 127 }; // ReLU at the zero point 5
    let none = Clamp { min: -128, max: 127 };
    let fc_w = values(6, 12, -90, 90);
    let fc_zin = -2;
    vec![
        L {
            op: Op::Conv2d,
            input: None,
            second: None,
            clamp: relu,
            input_len: 72,
            output_len: 144,
            params: conv_record([6, 6, 2, 4, 3, 3, 1, 1, 1]), // 3×3, stride 1, SAME -> 6×6×4
            zin: INPUT_ZP,
            zout: 5,
            weights: values(1, 4 * 3 * 3 * 2, -127, 127),
            channels: (0..4).map(|o| multiplier(0.6 + 0.05 * o as f64, -7, 400 * o - 700)).collect(),
        },
        L {
            op: Op::MaxPool2d,
            input: None,
            second: None,
            clamp: relu,
            input_len: 144,
            output_len: 36,
            params: pool_record([6, 6, 4, 2, 2, 2, 0, 2]), // 2×2, stride 2, VALID -> 3×3×4
            zin: 5,
            zout: 5,
            weights: vec![],
            channels: vec![],
        },
        L {
            op: Op::DepthwiseConv2d,
            input: None,
            second: None,
            clamp: none,
            input_len: 36,
            output_len: 36,
            params: conv_record([3, 3, 4, 4, 3, 3, 1, 1, 1]), // 3×3, stride 1, SAME -> 3×3×4
            zin: 5,
            zout: -2,
            weights: values(2, 3 * 3 * 4, -127, 127),
            channels: (0..4).map(|c| multiplier(0.55 + 0.1 * c as f64, -5, 150 - 100 * c)).collect(),
        },
        L {
            op: Op::AvgPool2d,
            input: None,
            second: None,
            clamp: none,
            input_len: 36,
            output_len: 16,
            params: pool_record([3, 3, 4, 2, 2, 2, 1, 2]), // 2×2, stride 2, SAME -> 2×2×4 with 1- and 2-tap edge windows
            zin: -2,
            zout: -2,
            weights: vec![],
            channels: vec![],
        },
        L {
            op: Op::GlobalAvgPool,
            input: None,
            second: None,
            clamp: none,
            input_len: 16,
            output_len: 4,
            params: [2, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            zin: -2,
            zout: -2,
            weights: vec![],
            channels: vec![],
        },
        L {
            op: Op::FullyConnected,
            input: None,
            second: None,
            clamp: none,
            input_len: 4,
            output_len: 3,
            params: [4, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            zin: fc_zin,
            zout: 1,
            // Fully connected biases hold −z_in·Σw (folded at export).
            channels: fc_w
                .chunks(4)
                .enumerate()
                .map(|(o, row)| {
                    let wsum: i32 = row.iter().map(|w| *w as i32).sum();
                    multiplier(0.8, -6, 50 * o as i32 - fc_zin * wsum)
                })
                .collect(),
            weights: fc_w,
        },
    ]
}

/// The naive reference pipeline; returns every tensor (the input first).
fn reference_run(layers: &[L], input: &[i8]) -> Vec<Vec<i8>> {
    let mut tensors: Vec<Vec<i8>> = vec![input.to_vec()];
    for (i, l) in layers.iter().enumerate() {
        let x = &tensors[l.input.map_or(i, usize::from)];
        let (p, q) = (l.params, l.quant());
        let y = match l.op {
            Op::Conv2d => reference::conv2d(p, x, &l.weights, &l.channels, q),
            Op::DepthwiseConv2d => reference::depthwise_conv2d(p, x, &l.weights, &l.channels, q),
            Op::MaxPool2d => reference::max_pool2d(p, x, q),
            Op::AvgPool2d => reference::avg_pool2d(p, x, q),
            Op::GlobalAvgPool => reference::global_avg_pool(p, x, q),
            Op::FullyConnected => reference::fully_connected(x, &l.weights, &l.channels, q),
            Op::Add => reference::add(x, &tensors[l.second.expect("add has a second input") as usize], &l.channels, q),
            Op::ConvAdd => {
                let (conv, add) = l.channels.split_at(l.channels.len() - 3);
                let mut p = p;
                let clamp = [p[9], p[10]].map(|v| v as u8 as i8);
                (p[9], p[10]) = (0, 0);
                let cq = Quant { zin: l.zin, zout: add[0].bias, min: clamp[0], max: clamp[1] };
                let y = reference::conv2d(p, x, &l.weights, conv, cq);
                reference::add(&y, &tensors[l.second.expect("conv-add has a second input") as usize], add, q)
            }
            Op::Softmax => panic!("the reference pipeline has no softmax (see kernels::softmax's tests)"),
        };
        tensors.push(y);
    }
    tensors
}

pub(super) fn blob() -> Vec<u8> {
    build(&[6, 6, 2], 3, INPUT_ZP, &pipeline())
}

/// [`blob`] with every layer's channels on its first channel's multiplier.
pub(super) fn blob_per_tensor() -> Vec<u8> {
    let mut layers = pipeline();
    for l in &mut layers {
        if let Some(&first) = l.channels.first() {
            for c in &mut l.channels {
                (c.multiplier, c.shift) = (first.multiplier, first.shift);
            }
        }
    }
    build(&[6, 6, 2], 3, INPUT_ZP, &layers)
}

#[test]
fn pipeline_matches_the_naive_reference() {
    let bytes = blob();
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(model.layer_count(), 6);
    // A chain's plan: max(144, 144 + 36, 36 + 36, 36 + 16, 16 + 4, 4 + 3) = 180.
    assert_eq!(model.arena_bytes(), 180);
    let mut arena = [0u8; 180];
    let mut distinct_logits = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let input = values(100 + seed, 72, -128, 127);
        let want = reference_run(&pipeline(), &input);
        // The test is only meaningful if intermediate tensors are not saturated
        // or constant: check the conv output spans a range of values.
        let conv = &want[1];
        assert!(conv.iter().filter(|v| **v > 5 && **v < 127).count() > 20, "conv output degenerate: {conv:?}");
        let got = model.run(&input, &mut arena).unwrap();
        assert_eq!(got, want[6].as_slice(), "seed {seed}, reference tensors {want:?}");
        distinct_logits.insert(got.to_vec());
    }
    assert!(distinct_logits.len() > 10, "logits barely depend on the input: {distinct_logits:?}");
}

#[test]
fn every_corruption_is_an_error_never_a_panic() {
    let bytes = blob();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            assert!(Model::from_bytes(&b).is_err(), "flipping bit {bit} of byte {i} went unnoticed");
        }
    }
    for len in 0..bytes.len() {
        assert!(Model::from_bytes(&bytes[..len]).is_err(), "truncation to {len} accepted");
    }
}

/// Corruptions with a recomputed CRC reach the semantic checks: each is
/// rejected or, if it still describes a consistent model (e.g. a changed
/// weight or zero point), runs without panicking.
#[test]
fn corruption_behind_a_valid_crc_never_panics() {
    let bytes = blob();
    let mut accepted = 0;
    for i in format::CRC_START..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            fix_crc(&mut b);
            if let Ok(m) = Model::from_bytes(&b) {
                accepted += 1;
                if m.arena_bytes() > 1 << 20 {
                    continue; // a flipped high bit of the declared arena: valid, just too big to allocate here
                }
                let mut arena = vec![0u8; m.arena_bytes()];
                let input = vec![7i8; m.input_len()];
                let out = m.run(&input, &mut arena).unwrap();
                assert_eq!(out.len(), m.class_count());
            }
        }
    }
    // Weight, bias and zero-point bits are legitimately free; structure bits are not.
    assert!(accepted > 0 && accepted < (bytes.len() - format::CRC_START) * 8);
}

/// Each new validation rule, with the blob otherwise intact.
#[test]
fn malformed_layers_name_the_broken_rule() {
    let check = |edit: &dyn Fn(&mut Vec<L>), want: Error| {
        let mut layers = pipeline();
        edit(&mut layers);
        assert_eq!(Model::from_bytes(&build(&[6, 6, 2], 3, INPUT_ZP, &layers)).err(), Some(want));
    };
    let m = Error::Malformed;
    check(&|l| l[0].params[7] = 2, m("convolution padding must be 0 (valid) or 1 (same)"));
    check(&|l| l[0].params[6] = 0, m("window stride is 0"));
    check(&|l| l[0].params[4] = 0, m("window kernel height or width is 0"));
    check(&|l| l[0].params[3] = 0, m("convolution channel count is 0"));
    check(
        &|l| {
            l[0].params[4] = 7;
            l[0].params[7] = 0;
        },
        m("valid padding needs an input at least as large as the window"),
    );
    check(&|l| l[0].params[2] = 1, m("convolution input length is not in_h × in_w × in_c"));
    check(&|l| l[0].params[6] = 2, m("convolution output length does not match its shape and padding"));
    check(&|l| l[0].weights.truncate(71), m("convolution weight count does not match its shape"));
    check(&|l| l[0].zin = 128, m("convolution input zero point is outside -128..=127"));
    check(
        &|l| {
            let extra = l[0].channels[0];
            l[0].channels.push(extra);
        },
        m("channel table size differs from output channels"),
    );
    check(&|l| l[2].params[3] = 3, m("depthwise convolution needs out_c == in_c"));
    check(&|l| l[2].weights.truncate(27), m("convolution weight count does not match its shape"));
    check(&|l| l[1].params[7] = 1, m("pool parameters 7, 9, 10 and 11 must be 0"));
    check(&|l| l[0].params[9] = 1, m("convolution parameters 9, 10 and 11 must be 0"));
    check(&|l| l[0].params[8] = 0, m("window stride is 0"));
    check(&|l| l[0].params[8] = 2, m("convolution output length does not match its shape and padding"));
    check(&|l| l[1].params[5] = 1, m("pool output length does not match its shape and padding"));
    check(&|l| l[1].params[5] = 0, m("window stride is 0"));
    check(&|l| l[3].params[6] = 7, m("pool padding must be 0 (valid) or 1 (same)"));
    check(&|l| l[3].weights = vec![1], m("pooling layer has weights or a channel table"));
    check(&|l| l[4].params[5] = 1, m("global average pool parameters 3..12 must be 0"));
    check(&|l| l[4].params[0] = 0, m("global average pool dimension is 0"));
    check(&|l| l[4].params[1] = 3, m("global average pool input length is not in_h × in_w × c"));
    check(&|l| l[4].channels = vec![l[0].channels[0]], m("pooling layer has weights or a channel table"));
}

#[test]
fn unknown_operators_are_unsupported() {
    let mut b = blob();
    b[HEADER_LEN + 2 * LAYER_RECORD_LEN + layer::OP] = 99;
    fix_crc(&mut b);
    assert_eq!(Model::from_bytes(&b).err(), Some(Error::UnsupportedOp(99)));
}

#[test]
fn large_average_windows_are_refused() {
    // A single global average pool over 4096 × 4096 positions (> 2^23) of one channel.
    let gap = |h: u16| L {
        op: Op::GlobalAvgPool,
        input: None,
        second: None,
        clamp: Clamp { min: -128, max: 127 },
        input_len: h as usize * 4096,
        output_len: 1,
        params: [h, 4096, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        zin: 0,
        zout: 0,
        weights: vec![],
        channels: vec![],
    };
    let b = build(&[4096, 4096], 1, 0, &[gap(4096)]);
    assert_eq!(Model::from_bytes(&b).err(), Some(Error::Malformed("global average pool has more than 2^23 positions")));
    // 2048 × 4096 = 2^23 is the largest accepted.
    let b = build(&[2048, 4096], 1, 0, &[gap(2048)]);
    assert!(Model::from_bytes(&b).is_ok());
    // An average pool whose 4096 × 4096 SAME window hangs over a 1×1 input.
    let avg = L { op: Op::AvgPool2d, params: pool_record([1, 1, 1, 4096, 4096, 1, 1, 1]), input_len: 1, ..gap(1) };
    let b = build(&[1], 1, 0, &[avg]);
    assert_eq!(Model::from_bytes(&b).err(), Some(Error::Malformed("average pool window has more than 2^23 taps")));
}

#[test]
fn a_build_with_the_models_operators_runs_it_and_a_smaller_one_refuses() {
    let bytes = blob();
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(
        model.ops(),
        ALL_OPS
            & !format::SINGLE_ROUNDING
            & !format::DOUBLE_ROUNDING
            & !Op::Softmax.bit()
            & !Op::Add.bit()
            & !Op::ConvAdd.bit(),
        "the test pipeline uses every operator but softmax (see kernels::softmax and the TFLite export's tests), \
         add and conv-add (see the residual graphs' tests)"
    );
    const WITHOUT_DEPTHWISE: OpSet = ALL_OPS & !Op::DepthwiseConv2d.bit();
    let mut arena = [0u8; 180];
    let mut arena2 = [0u8; 180];
    for seed in 0..8 {
        let input = values(300 + seed, 72, -128, 127);
        let all = model.run(&input, &mut arena).unwrap();
        let own = model.run_with_ops::<ALL_OPS>(&input, &mut arena2).unwrap();
        assert_eq!(all, own);
    }
    let input = values(1, 72, -128, 127);
    let err = model.run_with_ops::<WITHOUT_DEPTHWISE>(&input, &mut arena).unwrap_err();
    assert_eq!(err, Error::OpNotBuiltIn(Op::DepthwiseConv2d as u8));
    assert!(err.to_string().contains("not built into this firmware"), "{err}");

    // A model of one fully connected layer needs only that kernel.
    let fc = pipeline().into_iter().filter(|l| l.op == Op::FullyConnected).collect::<Vec<_>>();
    let fc_bytes = build(&[4], 3, -2, &fc);
    let fc_model = Model::from_bytes(&fc_bytes).unwrap();
    assert_eq!(fc_model.ops(), Op::FullyConnected.bit());
    const FC_ONLY: OpSet = Op::FullyConnected.bit();
    let x = values(2, 4, -128, 127);
    let mut a = [0u8; 64];
    let want = fc_model.run(&x, &mut a).unwrap().to_vec();
    assert_eq!(fc_model.run_with_ops::<FC_ONLY>(&x, &mut a).unwrap(), want.as_slice());
}

#[test]
fn a_validated_blob_loads_without_the_layer_checks_and_runs_the_same() {
    let b = blob();
    let full = Model::from_bytes(&b).unwrap();
    let fast = Model::from_validated(&b).unwrap();
    assert_eq!((fast.ops(), fast.input_len(), fast.class_count()), (full.ops(), full.input_len(), full.class_count()));
    let x: Vec<i8> = values(7, full.input_len(), -128, 127);
    let mut a1 = vec![0u8; full.arena_bytes()];
    let mut a2 = vec![0u8; full.arena_bytes()];
    assert_eq!(full.run(&x, &mut a1).unwrap(), fast.run(&x, &mut a2).unwrap());
    // The header and the CRC are still checked.
    let mut bad = b.clone();
    bad[100] ^= 1;
    assert!(matches!(Model::from_validated(&bad), Err(Error::ChecksumMismatch { .. })));
    assert!(Model::from_validated(&b[..10]).is_err());
}

/// A one-layer model (FC 1 → 1, weight 1) whose multiplier makes TFLite's
/// two roundings and its single rounding disagree: 932 · 0.78918 / 64 =
/// 11.49 is 12 after two roundings, 11 after one.
fn rounding_model(single: bool) -> Vec<u8> {
    let fc = L {
        op: Op::FullyConnected,
        input: None,
        second: None,
        clamp: Clamp { min: -128, max: 127 },
        input_len: 1,
        output_len: 1,
        params: [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        zin: 0,
        zout: 0,
        weights: vec![1],
        channels: vec![ChannelQuant { bias: 932 - 100, multiplier: 1_694_734_064, shift: -6 }],
    };
    let mut b = build(&[1], 1, 0, &[fc]);
    if single {
        b[header::FLAGS] |= format::FLAG_SINGLE_ROUNDING;
        fix_crc(&mut b);
    }
    b
}

#[test]
fn the_header_flag_selects_single_rounding() {
    let mut arena = [0u8; 64];
    let double = rounding_model(false);
    let m = Model::from_bytes(&double).unwrap();
    assert!(!m.single_rounding());
    assert_eq!(m.run(&[100], &mut arena).unwrap(), &[12]);
    let single = rounding_model(true);
    let m = Model::from_bytes(&single).unwrap();
    assert!(m.single_rounding());
    assert_eq!(m.ops() & format::SINGLE_ROUNDING, format::SINGLE_ROUNDING);
    assert_eq!(m.run(&[100], &mut arena).unwrap(), &[11]);
    // Firmware built without the single-rounding kernels refuses the model
    // instead of rounding twice.
    const FC_ONLY: format::OpSet = Op::FullyConnected.bit();
    assert_eq!(m.run_with_ops::<FC_ONLY>(&[100], &mut arena), Err(Error::OpNotBuiltIn(31)));
    assert!(Error::OpNotBuiltIn(31).to_string().contains("single-rounding"));
    // A build with the single-rounding kernels only (what firmware for this
    // model links) runs it, and refuses a double-rounding model.
    const FC_SINGLE: format::OpSet = Op::FullyConnected.bit() | format::SINGLE_ROUNDING;
    assert_eq!(m.ops(), FC_SINGLE);
    assert_eq!(m.run_with_ops::<FC_SINGLE>(&[100], &mut arena).unwrap(), &[11]);
    let d = Model::from_bytes(&double).unwrap();
    assert_eq!(d.run_with_ops::<FC_SINGLE>(&[100], &mut arena), Err(Error::OpNotBuiltIn(30)));
    assert!(Error::OpNotBuiltIn(30).to_string().contains("default"));
    assert_eq!(d.run_with_ops::<{ FC_SINGLE | format::DOUBLE_ROUNDING }>(&[100], &mut arena).unwrap(), &[12]);
    assert_eq!(d.run_with_ops::<FC_ONLY>(&[100], &mut arena).unwrap(), &[12]);
}

/// The layer table a board's build script writes, built here from the
/// same decoding.
fn compiled<'a, const OPS: OpSet>(
    model: &Model<'a>,
    layers: &'a mut Vec<crate::compiled::CompiledLayer<'a>>,
) -> crate::Compiled<'a, OPS> {
    *layers = (0..model.layer_count()).map(|i| model.compiled_layer(i).unwrap()).collect();
    crate::Compiled { layers, identity: model.identity(), ops: model.ops(), specialized: None }
}

#[test]
fn a_compiled_model_runs_bit_identically_and_refuses_what_the_interpreter_refuses() {
    let b = blob();
    let model = Model::from_bytes(&b).unwrap();
    let mut table = Vec::new();
    let c = compiled::<ALL_OPS>(&model, &mut table);
    assert_eq!(c.identity.input_shape(), model.input_shape());
    assert_eq!((c.identity.crc, c.identity.blob_len), (model.crc(), b.len()));
    let (mut a1, mut a2) = (vec![0u8; model.arena_bytes()], vec![0u8; model.arena_bytes()]);
    for seed in 0..32 {
        let x = values(500 + seed, model.input_len(), -128, 127);
        assert_eq!(c.run(&x, &mut a1).unwrap(), model.run(&x, &mut a2).unwrap(), "seed {seed}");
    }
    let x = values(1, model.input_len(), -128, 127);
    assert_eq!(
        c.run(&x[1..], &mut a1),
        Err(Error::InputLength { expected: model.input_len(), found: model.input_len() - 1 })
    );
    assert_eq!(c.run(&x, &mut a1[..10]), Err(Error::ArenaTooSmall { needed: model.arena_bytes(), found: 10 }));
    const WITHOUT_DEPTHWISE: OpSet = ALL_OPS & !Op::DepthwiseConv2d.bit();
    let mut table = Vec::new();
    let c = compiled::<WITHOUT_DEPTHWISE>(&model, &mut table);
    assert_eq!(c.run(&x, &mut a1), Err(Error::OpNotBuiltIn(Op::DepthwiseConv2d as u8)));

    // Both roundings, through the compiled path too.
    for (single, want) in [(false, 12), (true, 11)] {
        let b = rounding_model(single);
        let m = Model::from_bytes(&b).unwrap();
        let mut table = Vec::new();
        let c = compiled::<ALL_OPS>(&m, &mut table);
        assert_eq!(c.run(&[100], &mut [0u8; 64]).unwrap(), &[want]);
    }
}

/// Two equal-length tensors' addition entries: scales 0.05 and 0.08 into
/// 0.1 as TFLite derives them (inputs over twice the larger scale, the sum
/// over 2^20 times the output scale), zero points `za`, `zb`.
fn add_entries(za: i32, zb: i32) -> Vec<ChannelQuant> {
    // 0.05 / 0.16 = 0.625 · 2^−1, 0.08 / 0.16 = 0.5 · 2^0, 0.16 / (2^20 · 0.1) = 0.8 · 2^−19.
    vec![multiplier(0.625, -1, za), multiplier(0.5, 0, zb), multiplier(0.8, -19, 0)]
}

/// A residual graph: conv → depthwise → add(depthwise, conv) written over
/// the conv's output → max pool → add(pool, pool) → global pool → fully
/// connected, against the naive reference; and its plan.
fn residual() -> Vec<L> {
    let p = pipeline();
    let (conv, dw, gap, fc) = (&p[0], &p[2], &p[4], &p[5]);
    let dw = L {
        params: conv_record([6, 6, 4, 4, 3, 3, 1, 1, 1]),
        input_len: 144,
        output_len: 144,
        zin: 5,
        weights: values(9, 3 * 3 * 4, -127, 127),
        ..dw.clone()
    };
    let add = |input: u16, second: u16, len: usize, za: i32, zb: i32, zout: i8| L {
        op: Op::Add,
        clamp: Clamp { min: zout, max: 127 },
        input_len: len,
        output_len: len,
        params: [0; 12],
        zin: za,
        zout: zout as i32,
        weights: vec![],
        channels: add_entries(za, zb),
        input: Some(input),
        second: Some(second),
    };
    let pool = L {
        op: Op::MaxPool2d,
        params: pool_record([6, 6, 4, 2, 2, 2, 0, 2]),
        input_len: 144,
        output_len: 36,
        zin: 3,
        zout: 3,
        ..p[1].clone()
    };
    vec![
        conv.clone(),
        dw,
        add(2, 1, 144, -2, 5, 3),
        pool,
        add(4, 4, 36, 3, 3, -1),
        L { zin: -1, zout: -2, input_len: 36, params: [3, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..gap.clone() },
        fc.clone(),
    ]
}

#[test]
fn a_residual_graph_matches_the_naive_reference() {
    let layers = residual();
    let bytes = build(&[6, 6, 2], 3, INPUT_ZP, &layers);
    let model = Model::from_bytes(&bytes).unwrap();
    // conv 144, depthwise 144, the add over the conv's output, pool 36,
    // add 36, pool 4, fc 3: conv and depthwise outputs live at once.
    assert_eq!(model.arena_bytes(), 288);
    let (add, conv) = (model.layer(2).unwrap(), model.layer(0).unwrap());
    assert_eq!(add.output_offset, conv.output_offset, "the add writes over its dying second input");
    assert_eq!(model.ops() & Op::Add.bit(), Op::Add.bit());
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut table = Vec::new();
    let compiled = compiled::<ALL_OPS>(&model, &mut table);
    let mut arena2 = vec![0u8; model.arena_bytes()];
    let mut distinct = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let input = values(700 + seed, 72, -128, 127);
        let want = reference_run(&layers, &input);
        let sum = &want[3];
        assert!(sum.iter().filter(|v| **v > 3 && **v < 127).count() > 20, "add output degenerate: {sum:?}");
        assert_eq!(model.run(&input, &mut arena).unwrap(), want[7].as_slice(), "seed {seed}");
        assert_eq!(compiled.run(&input, &mut arena2).unwrap(), want[7].as_slice(), "seed {seed}");
        distinct.insert(want[7].clone());
    }
    assert!(distinct.len() > 10, "{distinct:?}");
}

/// Wirings the runtime must refuse, each with its rule.
#[test]
fn broken_wirings_name_the_broken_rule() {
    let bytes = build(&[6, 6, 2], 3, INPUT_ZP, &residual());
    let edit = |layer: usize, field: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[HEADER_LEN + layer * LAYER_RECORD_LEN + field..][..value.len()].copy_from_slice(value);
        fix_crc(&mut b);
        Model::from_bytes(&b).err()
    };
    let m = |s| Some(Error::Malformed(s));
    assert_eq!(
        edit(1, layer::INPUT_TENSOR, &3u16.to_le_bytes()),
        m("layer reads a tensor that is not produced before it")
    );
    assert_eq!(
        edit(1, layer::INPUT_TENSOR, &0u16.to_le_bytes()),
        m("layer input length differs from its input tensor's")
    );
    assert_eq!(
        edit(1, layer::SECOND_TENSOR, &1u16.to_le_bytes()),
        m("second input tensor does not match the operator")
    );
    assert_eq!(
        edit(2, layer::SECOND_TENSOR, &format::NO_TENSOR.to_le_bytes()),
        m("second input tensor does not match the operator")
    );
    assert_eq!(
        edit(4, layer::SECOND_TENSOR, &1u16.to_le_bytes()),
        m("second input length differs from the output length")
    );
    // The depthwise output written over the conv output it reads.
    let conv_at = Model::from_bytes(&bytes).unwrap().layer(0).unwrap().output_offset as u32;
    assert_eq!(
        edit(1, layer::OUTPUT_OFFSET, &conv_at.to_le_bytes()),
        m("the arena plan writes over a tensor that is still read")
    );
    assert_eq!(
        edit(1, layer::OUTPUT_OFFSET, &1000u32.to_le_bytes()),
        m("layer output does not fit the declared arena")
    );
}

/// A convolution added into a tensor in one pass (ResNet's block end), as
/// the two layers it replaces: conv → depthwise → conv-add(depthwise, over
/// the first conv's output) → global pool → fully connected.
fn fused() -> Vec<L> {
    let r = residual();
    let conv = L {
        params: conv_record([6, 6, 4, 4, 3, 3, 1, 1, 1]),
        input_len: 144,
        output_len: 144,
        zin: -2,
        weights: values(11, 4 * 3 * 3 * 4, -127, 127),
        channels: (0..4).map(|o| multiplier(0.7 + 0.05 * o as f64, -8, 300 * o - 500)).collect(),
        ..r[0].clone()
    };
    let mut params = conv.params;
    // The convolution's own clamp (a ReLU at its zero point −2), as bytes.
    (params[9], params[10]) = ((-2i8) as u8 as u16, 127);
    let fused = L {
        op: Op::ConvAdd,
        params,
        clamp: Clamp { min: 3, max: 127 },
        zout: 3,
        channels: [conv.channels.clone(), add_entries(-2, 5)].concat(),
        input: Some(2),
        second: Some(1),
        ..conv
    };
    let gap = L {
        zin: 3,
        zout: -2,
        input_len: 144,
        params: [6, 6, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        input: None,
        second: None,
        ..r[5].clone()
    };
    vec![r[0].clone(), r[1].clone(), fused, gap, r[6].clone()]
}

#[test]
fn a_convolution_added_in_place_matches_the_two_layers() {
    let layers = fused();
    let bytes = build(&[6, 6, 2], 3, INPUT_ZP, &layers);
    let model = Model::from_bytes(&bytes).unwrap();
    // conv and depthwise outputs live at once; the fused layer writes over
    // the conv's output instead of needing a third 144.
    assert_eq!(model.arena_bytes(), 288);
    assert_eq!(model.layer(2).unwrap().output_offset, model.layer(0).unwrap().output_offset);
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut table = Vec::new();
    let compiled = compiled::<ALL_OPS>(&model, &mut table);
    let mut arena2 = vec![0u8; model.arena_bytes()];
    let mut distinct = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let input = values(900 + seed, 72, -128, 127);
        let want = reference_run(&layers, &input);
        let sum = &want[3];
        assert!(sum.iter().filter(|v| **v > 3 && **v < 127).count() > 20, "sum degenerate: {sum:?}");
        assert_eq!(model.run(&input, &mut arena).unwrap(), want[5].as_slice(), "seed {seed}");
        assert_eq!(compiled.run(&input, &mut arena2).unwrap(), want[5].as_slice(), "seed {seed}");
        // Through a compiled model's own kernel (the gathering one) too.
        let step = model.compiled_layer(2).unwrap().step;
        let window = step.window();
        assert_eq!(window, 36);
        let mut own = want[1].clone();
        step.run_layer::<ALL_OPS, 2, 36>(false, &want[2], &mut own).unwrap();
        assert_eq!(own, want[3], "seed {seed}: the gathering kernel");
        distinct.insert(want[5].clone());
    }
    assert!(distinct.len() > 10, "{distinct:?}");
    // Its clamp bytes must be int8.
    let mut bad = layers.clone();
    bad[2].params[9] = 256;
    assert_eq!(
        Model::from_bytes(&build(&[6, 6, 2], 3, INPUT_ZP, &bad)).err(),
        Some(Error::Malformed("convolution-add clamp parameters are not int8"))
    );
}
