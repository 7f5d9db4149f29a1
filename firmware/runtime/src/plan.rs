//! The arena plan: where each layer's output lives, over the tensors'
//! lifetimes (host-side, `codegen` feature; the device only checks a plan,
//! in [`crate::Model::from_bytes`]).
//!
//! A tensor lives from the layer that writes it to the last layer that
//! reads it (the model's output to the end). Two tensors whose lifetimes
//! meet may not overlap in the arena; others may share bytes. A two-input
//! operator computes over its second input (see
//! [`crate::compiled::Wiring`]): when that input is read by no later layer,
//! the output takes its bytes (in place), so a residual addition needs no
//! third tensor.
//!
//! Placing intervals of given lifetimes in the least memory is NP-hard in
//! general; the plan is first-fit over several orders (largest first, the
//! order of writing, longest-lived first), keeping the smallest. On a chain
//! that is the ping-pong of adjacent pairs, which meets the bound; the
//! bound itself — the most bytes live at once — is reported beside it.

use alloc::vec::Vec;

/// What the planner needs of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLayer {
    /// Output length in bytes.
    pub output_len: usize,
    /// Tensors read: 0 the model input, `k` layer `k − 1`'s output.
    pub input: usize,
    /// A two-input operator's second input, which it computes over.
    pub second: Option<usize>,
}

/// An arena plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Each layer's output offset in the arena.
    pub offsets: Vec<usize>,
    /// Arena bytes the plan needs.
    pub arena: usize,
    /// The most bytes live at once (no plan needs less).
    pub bound: usize,
}

/// A run of bytes shared by one tensor, or by an in-place chain of them.
#[derive(Debug, Clone, Copy)]
struct Buffer {
    len: usize,
    first: usize,
    last: usize,
}

/// A placement order: buffers sorted by this key are placed first-fit.
type Order = fn(&Buffer) -> (isize, usize);

/// Plans the arena of layers in execution order (their inputs checked by
/// the caller: each reads the model input or an earlier layer).
pub fn plan(layers: &[PlanLayer]) -> Plan {
    let n = layers.len();
    // The last layer reading each tensor (index k = tensor k + 1); the model
    // output lives to the end.
    let mut last_read: Vec<usize> = (0..n).collect();
    if let Some(l) = last_read.last_mut() {
        *l = n - 1;
    }
    for (i, l) in layers.iter().enumerate() {
        for t in core::iter::once(l.input).chain(l.second) {
            if let Some(r) = t.checked_sub(1).and_then(|k| last_read.get_mut(k)) {
                *r = (*r).max(i);
            }
        }
    }
    // Each layer's buffer: its own, or its second input's when it computes
    // in place over an input that dies here.
    let mut buffer_of: Vec<usize> = Vec::with_capacity(n);
    let mut buffers: Vec<Buffer> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let in_place = l
            .second
            .and_then(|s| s.checked_sub(1))
            .filter(|&k| last_read[k] == i && l.input != k + 1 && buffers[buffer_of[k]].len == l.output_len);
        match in_place {
            Some(k) => {
                let b = buffer_of[k];
                buffers[b].last = buffers[b].last.max(last_read[i]);
                buffer_of.push(b);
            }
            None => {
                buffer_of.push(buffers.len());
                buffers.push(Buffer { len: l.output_len, first: i, last: last_read[i] });
            }
        }
    }
    let bound =
        (0..n).map(|i| buffers.iter().filter(|b| b.first <= i && i <= b.last).map(|b| b.len).sum()).max().unwrap_or(0);
    let orders: [Order; 3] =
        [|b| (-(b.len as isize), b.first), |b| (b.first as isize, 0), |b| (-((b.last - b.first) as isize), b.first)];
    let (arena, placed) = orders
        .iter()
        .map(|key| {
            let mut order: Vec<usize> = (0..buffers.len()).collect();
            order.sort_by_key(|&b| key(&buffers[b]));
            first_fit(&buffers, &order)
        })
        .min_by_key(|(arena, _)| *arena)
        .unwrap_or((0, Vec::new()));
    let offsets = buffer_of.iter().map(|&b| placed[b]).collect();
    Plan { offsets, arena, bound }
}

/// Places buffers in `order`, each at the lowest offset clear of the
/// placed buffers whose lifetimes meet its own; returns the arena size and
/// each buffer's offset.
fn first_fit(buffers: &[Buffer], order: &[usize]) -> (usize, Vec<usize>) {
    let mut offset: Vec<Option<usize>> = alloc::vec![None; buffers.len()];
    let mut arena = 0;
    for &b in order {
        let me = buffers[b];
        let mut taken: Vec<(usize, usize)> = buffers
            .iter()
            .zip(&offset)
            .filter_map(|(o, at)| {
                let at = (*at)?;
                (o.first <= me.last && me.first <= o.last).then_some((at, at + o.len))
            })
            .collect();
        taken.sort_unstable();
        let mut at = 0;
        for (start, end) in taken {
            if start >= at + me.len {
                break;
            }
            at = at.max(end);
        }
        offset[b] = Some(at);
        arena = arena.max(at + me.len);
    }
    (arena, offset.into_iter().map(|o| o.unwrap_or(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(lens: &[usize]) -> Vec<PlanLayer> {
        lens.iter().enumerate().map(|(i, &output_len)| PlanLayer { output_len, input: i, second: None }).collect()
    }

    /// No two tensors whose lifetimes meet share a byte, except an in-place
    /// output over its dying second input.
    fn assert_valid(layers: &[PlanLayer], p: &Plan) {
        let n = layers.len();
        let readers = |t: usize| (0..n).filter(move |&i| layers[i].input == t || layers[i].second == Some(t));
        for j in 0..n {
            let last = readers(j + 1).max().unwrap_or(j).max(if j == n - 1 { n - 1 } else { j });
            let (s, e) = (p.offsets[j], p.offsets[j] + layers[j].output_len);
            assert!(e <= p.arena);
            for (i, (l, &at)) in layers.iter().zip(&p.offsets).enumerate().take(last + 1).skip(j + 1) {
                let (a, b) = (at, at + l.output_len);
                let in_place = l.second == Some(j + 1) && i == last && (a, b) == (s, e);
                assert!(a >= e || s >= b || in_place, "layer {i} writes over tensor {} ({p:?})", j + 1);
            }
        }
    }

    #[test]
    fn a_chain_is_planned_in_adjacent_pairs() {
        let layers = chain(&[144, 36, 36, 16, 4, 3]);
        let p = plan(&layers);
        assert_eq!((p.arena, p.bound), (180, 180));
        assert_valid(&layers, &p);
        assert_eq!(plan(&chain(&[32])).arena, 32);
        assert_eq!(plan(&[]).arena, 0);
    }

    /// ResNet's block: conv a → conv b → add(b, a) in place over `a`, with
    /// the skip `a` alive across both convolutions.
    #[test]
    fn a_residual_add_writes_over_its_dying_skip() {
        let layers = [
            PlanLayer { output_len: 100, input: 0, second: None }, // t1 = stem
            PlanLayer { output_len: 100, input: 1, second: None }, // t2 = conv(t1)
            PlanLayer { output_len: 100, input: 2, second: None }, // t3 = conv(t2)
            PlanLayer { output_len: 100, input: 3, second: Some(1) }, // t4 = t3 + t1, over t1
            PlanLayer { output_len: 10, input: 4, second: None },  // t5 = head(t4)
        ];
        let p = plan(&layers);
        assert_eq!(p.offsets[3], p.offsets[0], "{p:?}");
        assert_eq!((p.arena, p.bound), (300, 300));
        assert_valid(&layers, &p);
        // Its second input still read later: a buffer of its own.
        let mut later = layers.to_vec();
        later[4] = PlanLayer { output_len: 100, input: 4, second: Some(1) };
        let p = plan(&later);
        assert_ne!(p.offsets[3], p.offsets[0]);
        assert_valid(&later, &p);
    }

    #[test]
    fn random_graphs_get_valid_plans_within_the_bound_and_the_sum() {
        let mut s = 0x1234_5678u32;
        let mut next = |m: usize| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as usize % m
        };
        for _ in 0..300 {
            let n = 1 + next(12);
            let layers: Vec<PlanLayer> = (0..n)
                .map(|i| PlanLayer {
                    output_len: 1 + next(50),
                    input: next(i + 1),
                    second: (next(3) == 0).then(|| next(i + 1)),
                })
                .collect();
            let p = plan(&layers);
            assert_valid(&layers, &p);
            assert!(p.bound <= p.arena && p.arena <= layers.iter().map(|l| l.output_len).sum());
        }
    }
}
