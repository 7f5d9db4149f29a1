//! Augmented views for consistent teaching: every training sample gets K
//! views (view 0 is the sample itself; the others are shifted along the last
//! axis and/or get Gaussian noise). The teacher labels each view once
//! (through the cache), so the student always learns the teacher's answer
//! for the very input it sees, and distillation never runs the teacher.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Augmentation settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Largest shift, in samples along the last axis (zero-filled); 0 = none.
    pub shift: usize,
    /// Standard deviation of additive Gaussian noise; 0 = none.
    pub noise: f32,
    /// Views per sample, including the original (1 = no augmentation).
    pub views: usize,
}

impl Default for Augment {
    fn default() -> Self {
        Augment { shift: 0, noise: 0.0, views: 1 }
    }
}

impl Augment {
    /// Whether any view differs from its sample.
    pub fn is_active(&self) -> bool {
        self.views > 1 && (self.shift > 0 || self.noise > 0.0)
    }

    /// `views × n × len` values: view 0 is `x`, views 1.. are augmented.
    pub fn views_of(&self, x: &[f32], n: usize, sample_shape: &[usize], seed: u64) -> Vec<f32> {
        let len: usize = sample_shape.iter().product();
        let views = if self.is_active() { self.views } else { 1 };
        let last = *sample_shape.last().unwrap_or(&len);
        let mut out = Vec::with_capacity(views * n * len);
        out.extend_from_slice(&x[..n * len]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA06_0E27);
        let normal = Normal::new(0.0f32, self.noise.max(0.0)).ok();
        for _ in 1..views {
            for i in 0..n {
                let s = &x[i * len..(i + 1) * len];
                let shift = if self.shift > 0 {
                    rng.random_range(-(self.shift as i64)..=self.shift as i64) as isize
                } else {
                    0
                };
                // Shift every row of the last axis by the same amount.
                for row in s.chunks_exact(last) {
                    for j in 0..last {
                        let src = j as isize - shift;
                        let v = if src >= 0 && (src as usize) < last { row[src as usize] } else { 0.0 };
                        let noise = match (&normal, self.noise > 0.0) {
                            (Some(d), true) => d.sample(&mut rng),
                            _ => 0.0,
                        };
                        out.push(v + noise);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_with_zero_fill_and_keeps_view_zero() {
        let a = Augment { shift: 1, noise: 0.0, views: 3 };
        let x = [1.0, 2.0, 3.0, 4.0];
        let v = a.views_of(&x, 1, &[4], 5);
        assert_eq!(v.len(), 12);
        assert_eq!(&v[..4], &x);
        for view in v[4..].chunks(4) {
            let ok = [vec![0.0, 1.0, 2.0, 3.0], vec![2.0, 3.0, 4.0, 0.0], x.to_vec()];
            assert!(ok.iter().any(|o| o.as_slice() == view), "{view:?}");
        }
        assert_eq!(Augment::default().views_of(&x, 1, &[4], 5), x.to_vec());
    }
}
