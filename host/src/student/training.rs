//! Training passes: the forward pass that records what backward needs (layer
//! inputs, dropout masks, channels-last depthwise inputs, batch statistics) and the
//! backward pass.
//!
//! A batch can run as several shards in lockstep, layer by layer, one
//! thread per shard. Every layer but BatchNorm works on each shard alone;
//! BatchNorm gathers its statistics (forward) and gradient sums (backward)
//! over all shards first, so a sharded batch computes what the whole batch
//! would. Students without BatchNorm need no lockstep: the trainer runs
//! their halves independently, which costs fewer synchronisations.

use rand::{Rng, RngCore};
use rayon::prelude::*;

use super::activation::{Relu, Relu6};
use super::batchnorm::BatchStats;
use super::layer::Saved;
use super::{Grads, Layer, Student};

/// Intermediate values a backward pass needs.
#[derive(Debug, Default)]
pub struct Tape {
    /// Input of every layer.
    inputs: Vec<Vec<f32>>,
    /// What every layer kept beside its input (dropout masks, channels-last
    /// depthwise inputs, batch statistics).
    pub(super) saved: Vec<Saved>,
}

impl Tape {
    /// The tape a training pass would have recorded had layer `i` received
    /// `inputs[i]`: for backward passes whose forward values come from
    /// elsewhere (quantization-aware training takes them from the int8
    /// runtime). No dropout masks (dropout is the identity) and no batch
    /// statistics, so `student` must have no BatchNorm layer.
    pub(crate) fn replay(student: &Student, inputs: Vec<Vec<f32>>, n: usize) -> Tape {
        let saved = student.layers.iter().zip(&inputs).map(|(l, x)| l.kind().replay(x, n)).collect();
        Tape { inputs, saved }
    }
}

/// Runs `f` on every shard, in parallel when there are several.
fn each_shard<T: Send, R: Send>(items: &mut [T], rngs: &mut [R], f: impl Fn(&mut T, &mut R) + Sync) {
    match (items, rngs) {
        ([t], [r]) => f(t, r),
        ([t0, t1], [r0, r1]) => {
            rayon::join(|| f(t0, r0), || f(t1, r1));
        }
        (items, rngs) => items.par_iter_mut().zip(rngs.par_iter_mut()).for_each(|(t, r)| f(t, r)),
    }
}

impl Student {
    /// Training forward pass (dropout active, batch statistics, running
    /// averages updated); records what backward needs.
    pub fn forward_train(&mut self, x: &[f32], n: usize, rng: &mut (impl Rng + Send)) -> (Vec<f32>, Tape) {
        let (out, tape) = self.forward_train_shared(x, n, rng);
        self.update_running(&tape);
        (out, tape)
    }

    /// Folds the batch statistics a training pass recorded into BatchNorm's
    /// running averages.
    pub fn update_running(&mut self, tape: &Tape) {
        for (l, saved) in self.layers.iter_mut().zip(&tape.saved) {
            if let (Layer::BatchNorm(b), Saved::Stats(st)) = (l, saved) {
                b.update_running(st);
            }
        }
    }

    /// Whether any layer normalises over the batch (so a batch split across
    /// threads must run in lockstep, see [`Student::forward_train_shards`]).
    pub fn has_batch_norm(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_)))
    }

    /// Training forward pass that leaves BatchNorm's running averages alone.
    pub fn forward_train_shared(&self, x: &[f32], n: usize, rng: &mut (impl Rng + Send)) -> (Vec<f32>, Tape) {
        let mut rngs = [rng];
        let mut out = self.forward_train_shards(&[(x, n)], &mut rngs);
        out.pop().unwrap_or_default()
    }

    /// Training forward pass of a batch given as shards `(x, n)`, one thread
    /// per shard, each with its own dropout generator; returns each shard's
    /// logits and tape. Running averages are left alone. Shards synchronise
    /// only at BatchNorm layers: each stretch between two of them is one
    /// parallel task.
    pub fn forward_train_shards<R: Rng + Send>(
        &self,
        shards: &[(&[f32], usize)],
        rngs: &mut [R],
    ) -> Vec<(Vec<f32>, Tape)> {
        let mut state: Vec<(Vec<f32>, Tape, usize)> =
            shards.iter().map(|(x, n)| (x.to_vec(), Tape::default(), *n)).collect();
        let mut start = 0;
        while start < self.layers.len() {
            let stats = match &self.layers[start] {
                Layer::BatchNorm(b) => {
                    Some(b.stats(&state.iter().map(|(a, _, n)| (a.as_slice(), *n)).collect::<Vec<_>>()))
                }
                _ => None,
            };
            let end = (start + 1..self.layers.len()).find(|&j| self.is_bn(j)).unwrap_or(self.layers.len());
            each_shard(&mut state, rngs, |(a, tape, n), rng| {
                for j in start..end {
                    let st = if j == start { stats.as_ref() } else { None };
                    self.forward_layer(j, a, *n, rng, st, tape);
                }
            });
            start = end;
        }
        state.into_iter().map(|(a, tape, _)| (a, tape)).collect()
    }

    fn is_bn(&self, i: usize) -> bool {
        matches!(self.layers[i], Layer::BatchNorm(_))
    }

    /// Layer `i` forward on one shard: replaces `a` by the output and records
    /// the input (and mask, channels-last input, statistics) on the tape.
    fn forward_layer(
        &self,
        i: usize,
        a: &mut Vec<f32>,
        n: usize,
        rng: &mut dyn RngCore,
        stats: Option<&BatchStats>,
        tape: &mut Tape,
    ) {
        let (next, saved) = match (&self.layers[i], stats) {
            // The batch's statistics, gathered over every shard; the
            // activation after it applied in the same pass when it fuses.
            (Layer::BatchNorm(b), Some(st)) => {
                let next = match self.layers.get(i + 1) {
                    Some(Layer::Relu(_)) if self.fuses_into_batch_norm(i + 1) => {
                        b.normalize_then(a, n, st, Relu::apply)
                    }
                    Some(Layer::Relu6(_)) if self.fuses_into_batch_norm(i + 1) => {
                        b.normalize_then(a, n, st, Relu6::apply)
                    }
                    _ => b.normalize(a, n, st),
                };
                (next, Saved::Stats(st.clone()))
            }
            // Applied by the BatchNorm before it: its input is not kept.
            (Layer::Relu(_) | Layer::Relu6(_), _) if self.fuses_into_batch_norm(i) => {
                tape.inputs.push(Vec::new());
                tape.saved.push(Saved::Nothing);
                return;
            }
            // The block's input is an earlier layer's, on the tape already;
            // the sum's own input is not needed backward (nor kept).
            (Layer::Add(add), _) => {
                let sum = add.forward_skip(std::mem::take(a), &tape.inputs[add.from], n);
                tape.inputs.push(Vec::new());
                tape.saved.push(Saved::Nothing);
                *a = sum;
                return;
            }
            (layer, _) => layer.kind().forward_train(a, n, rng),
        };
        tape.inputs.push(std::mem::replace(a, next));
        tape.saved.push(saved);
    }

    /// Whether activation layer `i` (ReLU or ReLU6) runs inside the
    /// BatchNorm before it in training: one pass over the map instead of
    /// two, and one activation fewer kept. Its backward pass then reads its
    /// output (the next layer's input: `y > 0` exactly where `x > 0`), so
    /// it must not be the last layer, nor a residual block's input.
    fn fuses_into_batch_norm(&self, i: usize) -> bool {
        i >= 1
            && i + 1 < self.layers.len()
            && matches!(self.layers[i - 1], Layer::BatchNorm(_))
            && matches!(self.layers[i], Layer::Relu(_) | Layer::Relu6(_))
            && !self.layers.iter().any(|l| matches!(l, Layer::Add(add) if add.from == i))
    }

    /// Backward pass from `dlogits`; accumulates into `grads` (see `zero_grads`).
    pub fn backward(&self, tape: &Tape, dlogits: Vec<f32>, n: usize, grads: &mut Grads) {
        let mut shards = [(tape, dlogits, n, std::mem::take(grads))];
        self.backward_shards(&mut shards);
        *grads = std::mem::take(&mut shards[0].3);
    }

    /// Backward pass of a sharded batch: each shard is `(tape, dlogits, n,
    /// grads)` and accumulates its part of the gradients into its own
    /// `grads` (sum them for the batch's). Like the forward pass, shards
    /// synchronise only at BatchNorm layers, whose `dx` needs the gradient
    /// sums of the whole batch.
    pub fn backward_shards(&self, shards: &mut [(&Tape, Vec<f32>, usize, Grads)]) {
        // Below the first layer with parameters no gradient is needed.
        let first = self.layers.iter().position(|l| !l.params().is_empty()).unwrap_or(0);
        let mut own_sums: Vec<Option<[Vec<f32>; 2]>> = vec![None; shards.len()];
        // Per shard, the gradient residual additions sent back to each
        // activation (a block's input), added in when the pass reaches it.
        let mut skips: Vec<Vec<Option<Vec<f32>>>> = vec![vec![None; self.layers.len() + 1]; shards.len()];
        let mut units = vec![(); shards.len()];
        // `top` is the next layer to run; `total` the batch's sums for it when it is BatchNorm.
        let mut top = self.layers.len();
        let mut total: Option<[Vec<f32>; 2]> = None;
        while top > first {
            let pending = total.is_some();
            // The stretch runs down to (excluding) the next BatchNorm still needing sums.
            let stop = (first..top).rev().find(|&j| self.is_bn(j) && !(pending && j == top - 1));
            let low = stop.map_or(first, |b| b + 1);
            let mut items: Vec<_> = shards.iter_mut().zip(own_sums.iter_mut()).zip(skips.iter_mut()).collect();
            each_shard(&mut items, &mut units, |(((tape, d, n, grads), sums), skips), _| {
                for j in (low..top).rev() {
                    add_into(d, skips[j + 1].take());
                    if let Layer::Add(add) = &self.layers[j] {
                        let g = add.skip_grad(&tape.inputs[add.from], d, *n, &mut grads[j]);
                        let slot = &mut skips[add.from];
                        match slot {
                            Some(s) => s.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
                            None => *slot = Some(g),
                        }
                    }
                    // Only the stretch's top layer can be a BatchNorm with its sums ready.
                    let (own, bn_total) = if j == top - 1 { (sums.take(), total.as_ref()) } else { (None, None) };
                    *d = self.backward_layer(j, tape, d, *n, &mut grads[j], j > first, own, bn_total);
                }
                if let Some(Layer::BatchNorm(bn)) = stop.map(|b| &self.layers[b]) {
                    let b = low - 1;
                    // The BatchNorm's output gradient, whole: its sums need it.
                    add_into(d, skips[low].take());
                    **sums = Some(bn.grad_sums(&tape.inputs[b], d, *n, bn_stats(tape, b)));
                }
            });
            total = stop.map(|_| {
                [0, 1].map(|k| {
                    let mut s = vec![0.0f32; own_sums[0].as_ref().map_or(0, |p| p[k].len())];
                    for p in own_sums.iter().flatten() {
                        s.iter_mut().zip(&p[k]).for_each(|(a, b)| *a += b);
                    }
                    s
                })
            });
            if stop.is_none() {
                break;
            }
            top = low;
        }
    }

    /// Layer `i` backward on one shard; accumulates into the layer's
    /// gradients `g` and returns the input gradient (empty when
    /// `input_grad` is false). A BatchNorm layer takes this shard's gradient
    /// sums and the whole batch's.
    #[allow(clippy::too_many_arguments)]
    fn backward_layer(
        &self,
        i: usize,
        tape: &Tape,
        d: &mut Vec<f32>,
        n: usize,
        g: &mut [Vec<f32>],
        input_grad: bool,
        own_sums: Option<[Vec<f32>; 2]>,
        total: Option<&[Vec<f32>; 2]>,
    ) -> Vec<f32> {
        let x = &tape.inputs[i];
        match &self.layers[i] {
            // Its share of the batch's gradient sums, and the whole batch's.
            Layer::BatchNorm(b) if own_sums.is_some() || total.is_some() => {
                let st = bn_stats(tape, i);
                let own = own_sums.unwrap_or_else(|| b.grad_sums(x, d, n, st));
                // This shard's sums are its share of dβ and dγ.
                g[1].iter_mut().zip(&own[0]).for_each(|(a, b)| *a += b);
                g[0].iter_mut().zip(&own[1]).for_each(|(a, b)| *a += b);
                b.input_grad(x, d, n, st, total.unwrap_or(&own))
            }
            // Fused into the BatchNorm before it: the output marks where it passed.
            layer @ (Layer::Relu(_) | Layer::Relu6(_)) if x.is_empty() => {
                layer.kind().backward(&tape.inputs[i + 1], &tape.saved[i], d, n, g, input_grad)
            }
            layer => layer.kind().backward(x, &tape.saved[i], d, n, g, input_grad),
        }
    }
}

/// Adds a pending gradient (a residual block's, for its input) into `d`.
fn add_into(d: &mut [f32], g: Option<Vec<f32>>) {
    if let Some(g) = g {
        d.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
    }
}

/// The batch statistics a forward pass recorded for BatchNorm layer `i`.
fn bn_stats(tape: &Tape, i: usize) -> &BatchStats {
    match &tape.saved[i] {
        Saved::Stats(st) => st,
        _ => unreachable!("the forward pass records stats for BatchNorm layer {i}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + u.abs()), "{what}: {u} vs {v}");
        }
    }

    #[test]
    fn sharded_batch_norm_student_matches_the_whole_batch() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for spec in [
            "conv1d(4,k3,s2) bn relu conv1d(6,k3) bn relu6 gap dense(3)",
            "dense(8) bn relu dense(3)",
            // Block inputs cross the BatchNorm stretches.
            "conv1d(4,k3,s2) bn relu res(conv1d(6,k3,s2) bn relu conv1d(6,k3) bn) relu res(conv1d(6,k3) bn) gap dense(3)",
        ] {
            let s = Student::from_spec(spec, &[2, 9], 3, &mut rng).unwrap();
            let n = 10;
            let x: Vec<f32> = (0..n * 18).map(|i| ((i * 37) % 23) as f32 * 0.1 - 1.1).collect();
            let dlogits: Vec<f32> = (0..n * 3).map(|i| ((i * 11) % 7) as f32 * 0.1 - 0.3).collect();

            let (whole, tape) = s.forward_train_shared(&x, n, &mut rng);
            let mut g = s.zero_grads();
            s.backward(&tape, dlogits.clone(), n, &mut g);

            let split = 4;
            let shards = [(&x[..split * 18], split), (&x[split * 18..], n - split)];
            let mut rngs = [ChaCha8Rng::seed_from_u64(0), ChaCha8Rng::seed_from_u64(1)];
            let out = s.forward_train_shards(&shards, &mut rngs);
            close(&whole[..split * 3], &out[0].0, spec);
            close(&whole[split * 3..], &out[1].0, spec);
            let mut parts: Vec<_> = out
                .iter()
                .zip([&dlogits[..split * 3], &dlogits[split * 3..]])
                .zip([split, n - split])
                .map(|(((_, tape), d), m)| (tape, d.to_vec(), m, s.zero_grads()))
                .collect();
            s.backward_shards(&mut parts);
            let summed: Vec<f32> = parts[0]
                .3
                .iter()
                .flatten()
                .flatten()
                .zip(parts[1].3.iter().flatten().flatten())
                .map(|(a, b)| a + b)
                .collect();
            let want: Vec<f32> = g.iter().flatten().flatten().copied().collect();
            close(&want, &summed, spec);
        }
    }
}
