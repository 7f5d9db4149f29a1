//! Augmented views for consistent teaching: every training sample gets K
//! views (view 0 is the sample itself; the others are shifted along the last
//! axis, get Gaussian noise, and/or are mixed with another sample). The
//! teacher labels each view once (through the cache), so the student always
//! learns the teacher's answer for the very input it sees, and distillation
//! never runs the teacher.
//!
//! Mixup (Zhang et al. 2018) here mixes a view of sample `i` with the raw
//! input of a partner `j`: `λ·view(i) + (1 − λ)·x(j)`, `λ ~ Beta(a, a)`
//! folded to `λ ≥ ½` so the view stays mostly its own sample. The hard label
//! of a mixed view is the same mix of the two labels; partners are drawn from
//! the same group (labelled with labelled, unlabeled with unlabeled), so a
//! mixed view is either fully labelled or fully unlabeled.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Normal};

/// Augmentation settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Largest shift, in samples along the last axis (zero-filled); 0 = none.
    pub shift: usize,
    /// Standard deviation of additive Gaussian noise; 0 = none.
    pub noise: f32,
    /// Views per sample, including the original (1 = no augmentation).
    pub views: usize,
    /// Beta(a, a) parameter of mixup's mixing weight; 0 = no mixup.
    #[serde(default)]
    pub mixup: f32,
    /// Share of the augmented views (views 1..) that are mixed.
    #[serde(default = "default_mixup_share")]
    pub mixup_share: f32,
}

fn default_mixup_share() -> f32 {
    0.5
}

impl Default for Augment {
    fn default() -> Self {
        Augment { shift: 0, noise: 0.0, views: 1, mixup: 0.0, mixup_share: default_mixup_share() }
    }
}

/// How a training row was mixed: `lambda` of its own sample and `1 − lambda`
/// of sample `partner` (`lambda == 1`: not mixed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub partner: usize,
    pub lambda: f32,
}

/// The views of a training set, view-major (`x` row `v·n + i` is view `v`
/// of sample `i`), and how each row was mixed.
#[derive(Debug, Clone, Default)]
pub struct Views {
    pub x: Vec<f32>,
    /// One entry per row; empty when nothing was mixed.
    pub mix: Vec<Mix>,
}

impl Augment {
    /// Whether any view differs from its sample.
    pub fn is_active(&self) -> bool {
        self.views > 1 && (self.shift > 0 || self.noise > 0.0 || self.mixes())
    }

    fn mixes(&self) -> bool {
        self.mixup > 0.0 && self.mixup_share > 0.0
    }

    /// Checks ranges (the CLI and run configs call it before any work).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.views == 0 {
            anyhow::bail!("--views must be at least 1");
        }
        if !(self.noise >= 0.0 && self.noise.is_finite()) {
            anyhow::bail!("--noise must be a non-negative number, got {}", self.noise);
        }
        if !(self.mixup >= 0.0 && self.mixup.is_finite()) {
            anyhow::bail!("--mixup must be a non-negative number (the Beta parameter; 0 = off), got {}", self.mixup);
        }
        if !(0.0..=1.0).contains(&self.mixup_share) {
            anyhow::bail!("--mixup-share must be in [0, 1], got {}", self.mixup_share);
        }
        if self.views == 1 && (self.shift > 0 || self.noise > 0.0 || self.mixup > 0.0) {
            anyhow::bail!(
                "--shift, --noise and --mixup make augmented views of each sample: set --views K (K ≥ 2, e.g. 8)"
            );
        }
        Ok(())
    }

    /// The views of `n` samples: view 0 is `x`, views 1.. are augmented.
    /// `groups[i]` is the mixup group of sample `i` (partners share a group).
    pub fn views_of(&self, x: &[f32], n: usize, sample_shape: &[usize], groups: &[bool], seed: u64) -> Views {
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
        let mix =
            if self.mixes() && views > 1 { self.mix_views(&mut out, x, n, len, groups, seed) } else { Vec::new() };
        Views { x: out, mix }
    }

    /// Mixes a `mixup_share` of the rows of views 1.. with partners from the
    /// same group, in place; returns the mix of every row.
    fn mix_views(&self, out: &mut [f32], x: &[f32], n: usize, len: usize, groups: &[bool], seed: u64) -> Vec<Mix> {
        let rows = out.len() / len;
        let mut mix: Vec<Mix> = (0..rows).map(|r| Mix { partner: r % n, lambda: 1.0 }).collect();
        let members: [Vec<usize>; 2] =
            [false, true].map(|g| (0..n).filter(|&i| groups.get(i).copied().unwrap_or(true) == g).collect());
        let Ok(beta) = Beta::new(self.mixup, self.mixup) else { return mix };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0031_3C0F);
        for (r, m) in mix.iter_mut().enumerate().skip(n) {
            let i = r % n;
            if rng.random::<f32>() >= self.mixup_share {
                continue;
            }
            let group = &members[usize::from(groups.get(i).copied().unwrap_or(true))];
            let partner = group[rng.random_range(0..group.len())];
            let lambda: f32 = beta.sample(&mut rng);
            let lambda = lambda.max(1.0 - lambda);
            let p = &x[partner * len..(partner + 1) * len];
            for (v, q) in out[r * len..(r + 1) * len].iter_mut().zip(p) {
                *v = lambda * *v + (1.0 - lambda) * q;
            }
            *m = Mix { partner, lambda };
        }
        mix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_with_zero_fill_and_keeps_view_zero() {
        let a = Augment { shift: 1, views: 3, ..Augment::default() };
        let x = [1.0, 2.0, 3.0, 4.0];
        let v = a.views_of(&x, 1, &[4], &[true], 5);
        assert_eq!(v.x.len(), 12);
        assert!(v.mix.is_empty());
        assert_eq!(&v.x[..4], &x);
        for view in v.x[4..].chunks(4) {
            let ok = [vec![0.0, 1.0, 2.0, 3.0], vec![2.0, 3.0, 4.0, 0.0], x.to_vec()];
            assert!(ok.iter().any(|o| o.as_slice() == view), "{view:?}");
        }
        assert_eq!(Augment::default().views_of(&x, 1, &[4], &[true], 5).x, x.to_vec());
    }

    #[test]
    fn mixup_mixes_within_groups_and_records_the_mix() {
        // Samples 0, 1 labelled; 2, 3 unlabeled. Each sample is a constant vector.
        let x: Vec<f32> = [0.0f32, 10.0, 100.0, 1000.0].iter().flat_map(|v| [*v; 3]).collect();
        let groups = [true, true, false, false];
        let a = Augment { views: 20, mixup: 0.4, mixup_share: 0.5, ..Augment::default() };
        let v = a.views_of(&x, 4, &[3], &groups, 1);
        assert_eq!(v.mix.len(), 80);
        let mut mixed = 0;
        for (r, m) in v.mix.iter().enumerate() {
            let i = r % 4;
            assert_eq!(groups[m.partner], groups[i], "row {r}: partner from another group");
            assert!((0.5..=1.0).contains(&m.lambda), "{m:?}");
            let want = m.lambda * x[i * 3] + (1.0 - m.lambda) * x[m.partner * 3];
            assert!(v.x[r * 3..r * 3 + 3].iter().all(|got| (got - want).abs() < 1e-3), "row {r}");
            if r < 4 {
                assert_eq!(*m, Mix { partner: i, lambda: 1.0 }, "view 0 is never mixed");
            }
            mixed += usize::from(m.lambda < 1.0 && m.partner != i);
        }
        // About half of the 76 augmented rows, and never all or none.
        assert!((15..60).contains(&mixed), "{mixed} mixed rows");
        assert_eq!(v.x, a.views_of(&x, 4, &[3], &groups, 1).x, "seeded");
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            Augment { views: 0, ..Augment::default() },
            Augment { mixup: -1.0, ..Augment::default() },
            Augment { mixup_share: 1.5, ..Augment::default() },
            Augment { noise: f32::NAN, ..Augment::default() },
            Augment { shift: 2, ..Augment::default() },
            Augment { mixup: 0.4, views: 1, ..Augment::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
