//! Batch normalisation over channels (`[C, H, W]` per sample), trained with
//! batch statistics and folded into the preceding convolution or dense layer
//! at export, so the device never runs it.

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

    fn each(&self, n: usize, mut f: impl FnMut(usize, usize)) {
        for s in 0..n {
            for c in 0..self.channels {
                for p in 0..self.spatial {
                    f(c, (s * self.channels + c) * self.spatial + p);
                }
            }
        }
    }

    /// Inference: running statistics.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (a, b) = self.affine();
        let mut y = x.to_vec();
        self.each(n, |c, i| y[i] = a[c] * x[i] + b[c]);
        y
    }

    /// Batch mean and biased variance per channel.
    fn batch_stats(&self, x: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let count = (n * self.spatial) as f32;
        let mut mean = vec![0.0f32; self.channels];
        self.each(n, |c, i| mean[c] += x[i]);
        mean.iter_mut().for_each(|m| *m /= count);
        let mut var = vec![0.0f32; self.channels];
        self.each(n, |c, i| var[c] += (x[i] - mean[c]).powi(2));
        var.iter_mut().for_each(|v| *v /= count);
        (mean, var)
    }

    /// Training: batch statistics; updates the running averages.
    pub fn forward_train(&mut self, x: &[f32], n: usize) -> Vec<f32> {
        self.update_running(x, n);
        self.forward_batch(x, n)
    }

    /// Folds a training batch's statistics into the running averages.
    pub fn update_running(&mut self, x: &[f32], n: usize) {
        let (mean, var) = self.batch_stats(x, n);
        let count = (n * self.spatial) as f32;
        for c in 0..self.channels {
            let unbiased = if count > 1.0 { var[c] * count / (count - 1.0) } else { var[c] };
            self.running_mean[c] = (1.0 - MOMENTUM) * self.running_mean[c] + MOMENTUM * mean[c];
            self.running_var[c] = (1.0 - MOMENTUM) * self.running_var[c] + MOMENTUM * unbiased;
        }
    }

    /// The training transform (batch statistics) without touching the running averages.
    pub fn forward_batch(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (mean, var) = self.batch_stats(x, n);
        let mut y = x.to_vec();
        self.each(n, |c, i| y[i] = self.gamma[c] * (x[i] - mean[c]) / (var[c] + EPS).sqrt() + self.beta[c]);
        y
    }

    /// Backward of the training transform; accumulates dγ, dβ; returns dx.
    pub fn backward(&self, x: &[f32], dy: &[f32], n: usize, g_gamma: &mut [f32], g_beta: &mut [f32]) -> Vec<f32> {
        let (mean, var) = self.batch_stats(x, n);
        let count = (n * self.spatial) as f32;
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        let mut sum_dy = vec![0.0f32; self.channels];
        let mut sum_dy_xhat = vec![0.0f32; self.channels];
        self.each(n, |c, i| {
            let xhat = (x[i] - mean[c]) * inv[c];
            sum_dy[c] += dy[i];
            sum_dy_xhat[c] += dy[i] * xhat;
        });
        for c in 0..self.channels {
            g_gamma[c] += sum_dy_xhat[c];
            g_beta[c] += sum_dy[c];
        }
        let mut dx = vec![0.0; x.len()];
        self.each(n, |c, i| {
            let xhat = (x[i] - mean[c]) * inv[c];
            dx[i] = self.gamma[c] * inv[c] / count * (count * dy[i] - sum_dy[c] - xhat * sum_dy_xhat[c]);
        });
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::testing::check_gradients;

    #[test]
    fn normalises_a_batch() {
        let mut bn = BatchNorm::new(1, 2);
        let y = bn.forward_train(&[1.0, 3.0, 5.0, 7.0], 2);
        let mean: f32 = y.iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
        assert!((bn.running_mean[0] - 0.4).abs() < 1e-6); // 0.1 · 4
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
            |x, p| mk(p).forward_train(x, n),
            |x, p, dy, g| {
                let (gg, gb) = g.split_at_mut(1);
                mk(p).backward(x, dy, n, &mut gg[0], &mut gb[0])
            },
        );
    }
}
