//! Batch normalisation over channels (`[C, H, W]` per sample), trained with
//! batch statistics and folded into the preceding convolution or dense layer
//! at export, so the device never runs it.

use anyhow::{Result, bail};
use rand::RngCore;

use super::layer::{Device, LayerKind, Saved};
use super::onnx::{Builder, Cursor, attr_float};
use super::simd::vectorised;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchNorm {
    pub channels: usize,
    /// Positions per channel (H·W; 1 after a dense layer).
    pub spatial: usize,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

pub const EPS: f32 = 1e-5;
const MOMENTUM: f32 = 0.1;

impl BatchNorm {
    pub fn new(channels: usize, spatial: usize) -> BatchNorm {
        BatchNorm {
            channels,
            spatial,
            gamma: vec![1.0; channels],
            beta: vec![0.0; channels],
            running_mean: vec![0.0; channels],
            running_var: vec![1.0; channels],
        }
    }

    /// Per-channel scale and shift of the inference transform `y = a·x + b`.
    pub fn affine(&self) -> (Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = self.gamma.iter().zip(&self.running_var).map(|(g, v)| g / (v + EPS).sqrt()).collect();
        let b = self.beta.iter().zip(&self.running_mean).zip(&a).map(|((be, m), a)| be - m * a).collect();
        (a, b)
    }

    /// Calls `f(channel, values)` on each sample's plane of each channel.
    #[inline(always)]
    fn planes<'x>(&self, x: &'x [f32], n: usize, mut f: impl FnMut(usize, &'x [f32])) {
        for (k, plane) in x.chunks_exact(self.spatial.max(1)).take(n * self.channels).enumerate() {
            f(k % self.channels, plane);
        }
    }

    /// `y = a[c]·x + b[c]` plane by plane.
    #[inline(always)]
    fn affine_map(&self, x: &[f32], n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        self.affine_map_then(x, n, a, b, |v| v)
    }

    /// `y = f(a[c]·x + b[c])` plane by plane.
    #[inline(always)]
    fn affine_map_then(&self, x: &[f32], n: usize, a: &[f32], b: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
        let p = self.spatial.max(1);
        let mut y = Vec::with_capacity(x.len());
        for (k, plane) in x.chunks_exact(p).take(n * self.channels).enumerate() {
            let c = k % self.channels;
            y.extend(plane.iter().map(|v| f(a[c] * v + b[c])));
        }
        y
    }

    /// Inference: running statistics.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (a, b) = self.affine();
        vectorised(
            #[inline(always)]
            || self.affine_map(x, n, &a, &b),
        )
    }

    /// Per-channel sums of `f(channel, plane)` over one shard.
    fn channel_sums(&self, x: &[f32], n: usize, f: impl Fn(usize, &[f32]) -> f32) -> Vec<f32> {
        let mut sums = vec![0.0f32; self.channels];
        vectorised(
            #[inline(always)]
            || self.planes(x, n, |c, plane| sums[c] += f(c, plane)),
        );
        sums
    }

    /// Mean and biased variance per channel over a batch given as shards
    /// `(x, n)`, each shard's sums taken on its own thread: sums are added
    /// in shard order, so a batch split across threads normalises exactly
    /// as one batch would (up to float summation order), and a single
    /// shard is the plain batch.
    pub fn stats(&self, shards: &[(&[f32], usize)]) -> BatchStats {
        use rayon::prelude::*;
        let count = shards.iter().map(|(_, n)| n * self.spatial).sum::<usize>() as f32;
        let total = |parts: Vec<Vec<f32>>| {
            parts
                .into_iter()
                .fold(vec![0.0f32; self.channels], |a, b| a.into_iter().zip(b).map(|(x, y)| x + y).collect())
        };
        let mut mean = total(shards.par_iter().map(|(x, n)| self.channel_sums(x, *n, |_, v| sum(v))).collect());
        mean.iter_mut().for_each(|m| *m /= count);
        let mut var = total(
            shards.par_iter().map(|(x, n)| self.channel_sums(x, *n, |c, v| squared_deviation(v, mean[c]))).collect(),
        );
        var.iter_mut().for_each(|v| *v /= count);
        let inv_std = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        BatchStats { mean, var, inv_std, count }
    }

    /// Training: batch statistics; updates the running averages.
    pub fn forward_train_updating(&mut self, x: &[f32], n: usize) -> Vec<f32> {
        let st = self.stats(&[(x, n)]);
        self.update_running(&st);
        self.normalize(x, n, &st)
    }

    /// Folds a training batch's statistics into the running averages.
    pub fn update_running(&mut self, st: &BatchStats) {
        let count = st.count;
        for c in 0..self.channels {
            let unbiased = if count > 1.0 { st.var[c] * count / (count - 1.0) } else { st.var[c] };
            self.running_mean[c] = (1.0 - MOMENTUM) * self.running_mean[c] + MOMENTUM * st.mean[c];
            self.running_var[c] = (1.0 - MOMENTUM) * self.running_var[c] + MOMENTUM * unbiased;
        }
    }

    /// The training transform with the batch's statistics.
    pub fn normalize(&self, x: &[f32], n: usize, st: &BatchStats) -> Vec<f32> {
        self.normalize_then(x, n, st, |v| v)
    }

    /// [`BatchNorm::normalize`] with `f` (the activation after it, in
    /// training) applied to each value in the same pass.
    pub fn normalize_then(&self, x: &[f32], n: usize, st: &BatchStats, f: impl Fn(f32) -> f32) -> Vec<f32> {
        let a: Vec<f32> = self.gamma.iter().zip(&st.inv_std).map(|(g, s)| g * s).collect();
        let b: Vec<f32> = self.beta.iter().zip(&st.mean).zip(&a).map(|((be, m), a)| be - m * a).collect();
        vectorised(
            #[inline(always)]
            || self.affine_map_then(x, n, &a, &b, f),
        )
    }

    /// One shard's `[Σ dy, Σ dy·x̂]` per channel: they are dβ and dγ, and,
    /// summed over the shards, what every shard's `dx` needs.
    pub fn grad_sums(&self, x: &[f32], dy: &[f32], n: usize, st: &BatchStats) -> [Vec<f32>; 2] {
        let p = self.spatial.max(1);
        let mut sum_dy = vec![0.0f32; self.channels];
        let mut sum_dy_xhat = vec![0.0f32; self.channels];
        vectorised(
            #[inline(always)]
            || {
                for (k, (d, v)) in dy.chunks_exact(p).zip(x.chunks_exact(p)).take(n * self.channels).enumerate() {
                    let c = k % self.channels;
                    sum_dy[c] += sum(d);
                    sum_dy_xhat[c] += deviation_dot(d, v, st.mean[c]) * st.inv_std[c];
                }
            },
        );
        [sum_dy, sum_dy_xhat]
    }

    /// `dx` of one shard from the whole batch's gradient sums.
    pub fn input_grad(&self, x: &[f32], dy: &[f32], n: usize, st: &BatchStats, sums: &[Vec<f32>; 2]) -> Vec<f32> {
        let [sum_dy, sum_dy_xhat] = sums;
        let count = st.count;
        // dx = γ·σ⁻¹ · (dy − Σdy/N − x̂ · Σ(dy·x̂)/N), per channel constants.
        let p = self.spatial.max(1);
        vectorised(
            #[inline(always)]
            || {
                let mut dx = Vec::with_capacity(x.len());
                for (k, (d, v)) in dy.chunks_exact(p).zip(x.chunks_exact(p)).take(n * self.channels).enumerate() {
                    let c = k % self.channels;
                    let (scale, mean_dy) = (self.gamma[c] * st.inv_std[c], sum_dy[c] / count);
                    let slope = sum_dy_xhat[c] / count * st.inv_std[c];
                    let m = st.mean[c];
                    dx.extend(d.iter().zip(v).map(|(d, v)| scale * (d - mean_dy - (v - m) * slope)));
                }
                dx
            },
        )
    }

    /// Backward of the training transform over one batch; accumulates dγ,
    /// dβ; returns dx.
    pub fn backward(&self, x: &[f32], dy: &[f32], n: usize, g_gamma: &mut [f32], g_beta: &mut [f32]) -> Vec<f32> {
        let st = self.stats(&[(x, n)]);
        let sums = self.grad_sums(x, dy, n, &st);
        g_beta.iter_mut().zip(&sums[0]).for_each(|(g, s)| *g += s);
        g_gamma.iter_mut().zip(&sums[1]).for_each(|(g, s)| *g += s);
        self.input_grad(x, dy, n, &st, &sums)
    }
}

/// `Σ v`, in eight lanes (a vector register) instead of one serial chain.
#[inline(always)]
pub(super) fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x);
    }
    lanes.iter().sum::<f32>() + rest
}

/// `Σ (v − m)²`, in eight lanes.
#[inline(always)]
fn squared_deviation(v: &[f32], m: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|x| (x - m) * (x - m)).sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += (x - m) * (x - m));
    }
    lanes.iter().sum::<f32>() + rest
}

/// `Σ a·b`, in eight lanes (`v − 0` is `v` exactly).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    deviation_dot(a, b, 0.0)
}

/// `Σ d·(v − m)`, in eight lanes.
#[inline(always)]
fn deviation_dot(d: &[f32], v: &[f32], m: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (dc, vc) = (d.chunks_exact(8), v.chunks_exact(8));
    let rest: f32 = dc.remainder().iter().zip(vc.remainder()).map(|(d, x)| d * (x - m)).sum();
    for (a, b) in dc.zip(vc) {
        for ((l, d), x) in lanes.iter_mut().zip(a).zip(b) {
            *l += d * (x - m);
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// Statistics of one training batch, per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased variance.
    pub var: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// Values per channel in the batch.
    pub count: f32,
}

impl LayerKind for BatchNorm {
    fn params(&self) -> Vec<&Vec<f32>> {
        vec![&self.gamma, &self.beta]
    }

    fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
        vec![&mut self.gamma, &mut self.beta]
    }

    fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        BatchNorm::forward(self, x, n)
    }

    /// Normalised with the statistics of `x` (the running averages are
    /// updated by the trainer, see `Student::update_running`).
    fn forward_train(&self, x: &[f32], n: usize, _: &mut dyn RngCore) -> (Vec<f32>, Saved) {
        let st = self.stats(&[(x, n)]);
        (self.normalize(x, n, &st), Saved::Stats(st))
    }

    /// The whole batch on one shard: its own gradient sums are the batch's.
    /// (The trainer gathers the sums over shards itself, see `training.rs`.)
    fn backward(
        &self,
        x: &[f32],
        saved: &Saved,
        d: &mut Vec<f32>,
        n: usize,
        grads: &mut [Vec<f32>],
        _: bool,
    ) -> Vec<f32> {
        let Saved::Stats(st) = saved else { unreachable!("the forward pass records batch statistics for BatchNorm") };
        let sums = self.grad_sums(x, d, n, st);
        grads[1].iter_mut().zip(&sums[0]).for_each(|(a, b)| *a += b);
        grads[0].iter_mut().zip(&sums[1]).for_each(|(a, b)| *a += b);
        self.input_grad(x, d, n, st, &sums)
    }

    fn device(&self) -> Device {
        Device::Folded
    }

    fn folded_affine(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        Some(self.affine())
    }

    fn onnx(&self, b: &mut Builder, at: &mut Cursor) -> Result<()> {
        if at.flat {
            bail!("BatchNorm after a dense layer has no ONNX form here (it folds into the dense layer)");
        }
        let g = b.init_f32("gamma", &[self.channels], &self.gamma);
        let be = b.init_f32("beta", &[self.channels], &self.beta);
        let m = b.init_f32("mean", &[self.channels], &self.running_mean);
        let v = b.init_f32("var", &[self.channels], &self.running_var);
        b.op("BatchNormalization", &[g, be, m, v], vec![attr_float("epsilon", EPS)]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::testing::check_gradients;

    #[test]
    fn normalises_a_batch() {
        let mut bn = BatchNorm::new(1, 2);
        let y = bn.forward_train_updating(&[1.0, 3.0, 5.0, 7.0], 2);
        let mean: f32 = y.iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
        assert!((bn.running_mean[0] - 0.4).abs() < 1e-6); // 0.1 · 4
    }

    #[test]
    fn shards_normalise_like_one_batch() {
        let bn = BatchNorm { gamma: vec![1.5, 0.5], beta: vec![0.1, -0.2], ..BatchNorm::new(2, 3) };
        let x: Vec<f32> = (0..30).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0).collect();
        let dy: Vec<f32> = (0..30).map(|i| ((i * 5) % 13) as f32 * 0.1 - 0.6).collect();
        let whole = bn.stats(&[(&x, 5)]);
        let (a, b) = x.split_at(12);
        let split = bn.stats(&[(a, 2), (b, 3)]);
        for (u, v) in whole.mean.iter().chain(&whole.var).zip(split.mean.iter().chain(&split.var)) {
            assert!((u - v).abs() < 1e-6, "{whole:?} vs {split:?}");
        }
        let (mut gg, mut gb) = (vec![0.0; 2], vec![0.0; 2]);
        let dx = bn.backward(&x, &dy, 5, &mut gg, &mut gb);
        let (da, db) = dy.split_at(12);
        let parts = [bn.grad_sums(a, da, 2, &split), bn.grad_sums(b, db, 3, &split)];
        let sums = [0, 1].map(|k| parts[0][k].iter().zip(&parts[1][k]).map(|(p, q)| p + q).collect::<Vec<f32>>());
        let mut dx_split = bn.input_grad(a, da, 2, &split, &sums);
        dx_split.extend(bn.input_grad(b, db, 3, &split, &sums));
        for (u, v) in dx.iter().zip(&dx_split).chain(gb.iter().zip(&sums[0])).chain(gg.iter().zip(&sums[1])) {
            assert!((u - v).abs() < 1e-5, "{u} vs {v}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let bn = BatchNorm { gamma: vec![1.5, 0.5], beta: vec![0.1, -0.2], ..BatchNorm::new(2, 3) };
        let n = 3;
        let mk = |p: &[Vec<f32>]| BatchNorm { gamma: p[0].clone(), beta: p[1].clone(), ..bn.clone() };
        check_gradients(
            n * 6,
            n * 6,
            vec![bn.gamma.clone(), bn.beta.clone()],
            |x, p| mk(p).forward_train_updating(x, n),
            |x, p, dy, g| {
                let (gg, gb) = g.split_at_mut(1);
                mk(p).backward(x, dy, n, &mut gg[0], &mut gb[0])
            },
        );
    }
}
