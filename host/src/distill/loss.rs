//! Distillation losses and their gradients with respect to the student logits.
//!
//! Hinton et al. (2015): `L = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE(y, softmax(s))`.
//! The T² keeps the soft term's gradient magnitude independent of T.

use crate::util::softmax;

/// How the soft (teacher) term compares student and teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// KL divergence of temperature-softened distributions, scaled by T².
    #[default]
    Kl,
    /// Mean squared error between raw logits (T is ignored).
    Mse,
}

/// Loss settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossConfig {
    pub kind: LossKind,
    pub temperature: f32,
    /// Weight of the soft term; `1 − alpha` weighs the hard-label term.
    pub alpha: f32,
}

/// A sample's hard label: `weight` of `class` and `1 − weight` of `other`
/// (a mixup view mixes two labels; a plain sample has weight 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HardLabel {
    pub class: usize,
    pub other: usize,
    pub weight: f32,
}

impl HardLabel {
    pub fn one(class: usize) -> HardLabel {
        HardLabel { class, other: class, weight: 1.0 }
    }
}

/// Loss of one sample and its gradient with respect to `student` logits.
///
/// `teacher` is the teacher's logits (None: no soft term); `label` the class
/// (None: unlabeled, only the soft term counts).
pub fn sample_loss(
    student: &[f32],
    teacher: Option<&[f32]>,
    label: Option<HardLabel>,
    cfg: &LossConfig,
    grad: &mut [f32],
) -> f64 {
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    let alpha = cfg.alpha as f64;
    if let (Some(t), true) = (teacher, alpha > 0.0) {
        match cfg.kind {
            LossKind::Kl => {
                let temp = cfg.temperature as f64;
                let ps = softmax(student, cfg.temperature);
                let pt = softmax(t, cfg.temperature);
                let kl: f64 =
                    pt.iter().zip(&ps).filter(|(p, _)| **p > 0.0).map(|(p, q)| p * (p.ln() - q.max(1e-300).ln())).sum();
                loss += alpha * temp * temp * kl;
                // d/ds [T²·KL] = T·(p_s − p_t)
                for ((g, q), p) in grad.iter_mut().zip(&ps).zip(&pt) {
                    *g += (alpha * temp * (q - p)) as f32;
                }
            }
            LossKind::Mse => {
                let c = student.len() as f64;
                for ((g, s), t) in grad.iter_mut().zip(student).zip(t) {
                    let d = (*s - *t) as f64;
                    loss += alpha * d * d / c;
                    *g += (alpha * 2.0 * d / c) as f32;
                }
            }
        }
    }
    if let (Some(y), true) = (label, alpha < 1.0 || teacher.is_none()) {
        // Without a teacher the hard term carries the whole loss.
        let w = if teacher.is_some() { 1.0 - alpha } else { 1.0 };
        let p = softmax(student, 1.0);
        let (a, b, la) = (y.class, y.other, y.weight as f64);
        loss += -w * (la * p[a].max(1e-300).ln() + (1.0 - la) * p[b].max(1e-300).ln());
        for (i, (g, q)) in grad.iter_mut().zip(&p).enumerate() {
            let target = if i == a { la } else { 0.0 } + if i == b { 1.0 - la } else { 0.0 };
            *g += (w * (q - target)) as f32;
        }
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_grad(s: &[f32], t: Option<&[f32]>, y: Option<HardLabel>, cfg: &LossConfig) -> Vec<f64> {
        let h = 1e-3f32;
        let mut g = vec![0.0; s.len()];
        (0..s.len())
            .map(|i| {
                let (mut p, mut m) = (s.to_vec(), s.to_vec());
                p[i] += h;
                m[i] -= h;
                (sample_loss(&p, t, y, cfg, &mut g) - sample_loss(&m, t, y, cfg, &mut g)) / (2.0 * h as f64)
            })
            .collect()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let s = [0.3f32, -1.2, 2.0, 0.1];
        let t = [1.0f32, 0.5, -0.5, 3.0];
        for kind in [LossKind::Kl, LossKind::Mse] {
            for (alpha, temp) in [(0.0, 1.0), (0.5, 2.0), (0.9, 4.0), (1.0, 8.0)] {
                let cfg = LossConfig { kind, temperature: temp, alpha };
                let mixed = HardLabel { class: 2, other: 0, weight: 0.7 };
                for y in [Some(HardLabel::one(2)), Some(mixed), None] {
                    let mut g = vec![0.0; 4];
                    sample_loss(&s, Some(&t), y, &cfg, &mut g);
                    let num = numeric_grad(&s, Some(&t), y, &cfg);
                    for (a, b) in g.iter().zip(&num) {
                        assert!((*a as f64 - b).abs() < 1e-3, "{kind:?} α={alpha} T={temp} y={y:?}: {g:?} vs {num:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn hand_computed_values() {
        // Equal logits: KL = 0; CE = ln(C).
        let cfg = LossConfig { kind: LossKind::Kl, temperature: 4.0, alpha: 0.5 };
        let mut g = vec![0.0; 2];
        let l = sample_loss(&[1.0, 1.0], Some(&[1.0, 1.0]), Some(HardLabel::one(0)), &cfg, &mut g);
        assert!((l - 0.5 * 2f64.ln()).abs() < 1e-9);
        // α = 1 ignores labels entirely; α = 0 ignores the teacher.
        let cfg1 = LossConfig { alpha: 1.0, ..cfg };
        assert_eq!(sample_loss(&[0.0, 1.0], Some(&[0.0, 1.0]), Some(HardLabel::one(0)), &cfg1, &mut g), 0.0);
        let cfg0 = LossConfig { alpha: 0.0, ..cfg };
        let l0 = sample_loss(&[0.0, 0.0], Some(&[5.0, -5.0]), Some(HardLabel::one(1)), &cfg0, &mut g);
        assert!((l0 - 2f64.ln()).abs() < 1e-9);
        // A mixed label: CE = −(0.75·ln p₀ + 0.25·ln p₁), gradient p − [0.75, 0.25].
        let mixed = HardLabel { class: 0, other: 1, weight: 0.75 };
        let l = sample_loss(&[2f32.ln(), 0.0], None, Some(mixed), &cfg0, &mut g);
        let want = -(0.75 * (2.0f64 / 3.0).ln() + 0.25 * (1.0f64 / 3.0).ln());
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
        assert!((g[0] - (2.0 / 3.0 - 0.75)).abs() < 1e-6 && (g[1] - (1.0 / 3.0 - 0.25)).abs() < 1e-6, "{g:?}");
        // KL with T: p_t = softmax([2,0]/2), p_s = uniform → T²·KL.
        let cfgt = LossConfig { kind: LossKind::Kl, temperature: 2.0, alpha: 1.0 };
        let l = sample_loss(&[0.0, 0.0], Some(&[2.0, 0.0]), None, &cfgt, &mut g);
        let p = 1.0 / (1.0 + (-1f64).exp());
        let kl = p * (p / 0.5).ln() + (1.0 - p) * ((1.0 - p) / 0.5).ln();
        assert!((l - 4.0 * kl).abs() < 1e-9, "{l} vs {}", 4.0 * kl);
    }
}
