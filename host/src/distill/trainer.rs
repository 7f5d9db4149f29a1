//! Mini-batch training of a student with the distillation loss, AdamW and a
//! cosine schedule over a budget of optimizer steps, keeping the weights of
//! the best validation check.
//! Batches with enough work run on both cores in fixed halves (see
//! `splits_batches`) and everything is seeded, so a seed gives bit-identical
//! weights.

use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use std::sync::Arc;

use super::augment::Mix;
use super::loss::{HardLabel, LossConfig, sample_loss};
use super::optimizer::{Adam, Optimizer, Schedule};
use super::pair::Pair;
use crate::progress::Progress;
use crate::student::{Grads, Student};

/// Optimisation settings. Training length is counted in optimizer steps,
/// not passes over the run's own rows, so runs that train on different
/// numbers of rows (a distilled student on labelled + unlabeled rows, its
/// α = 0 baseline on the labelled rows only) get the same budget.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps (batches) to train for, at most.
    pub steps: usize,
    /// Steps between validation checks (patience counts these).
    pub eval_every: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    /// Linear warm-up, in steps.
    pub warmup_steps: usize,
    /// Stop after this many validation checks without a better accuracy (0 = never).
    pub patience: usize,
    pub seed: u64,
    pub loss: LossConfig,
}

impl TrainConfig {
    /// Learning rate at `step` of `total`.
    pub(crate) fn lr_at(&self, step: usize, total: usize) -> f32 {
        let warm = self.warmup_steps.min(total);
        if step < warm {
            return self.learning_rate * (step + 1) as f32 / warm as f32;
        }
        let t = (step - warm) as f32 / (total - warm).max(1) as f32;
        match self.schedule {
            Schedule::Cosine => self.learning_rate * 0.5 * (1.0 + (std::f32::consts::PI * t).cos()),
            Schedule::Step => {
                self.learning_rate
                    * if t < 0.5 {
                        1.0
                    } else if t < 0.75 {
                        0.1
                    } else {
                        0.01
                    }
            }
            Schedule::Constant => self.learning_rate,
        }
    }
}

/// Training inputs: `views` versions of each of `n` samples (view-major:
/// sample `i` of view `v` is row `v·n + i`), labels, and teacher logits for
/// every view.
#[derive(Debug, Clone, Copy)]
pub struct TrainSet<'a> {
    pub x: &'a [f32],
    pub n: usize,
    pub views: usize,
    /// `None` for an unlabeled sample.
    pub labels: &'a [Option<usize>],
    /// `views × n × classes` teacher logits.
    pub teacher: Option<&'a [f32]>,
    /// Mixup of every row (`views × n`; empty: nothing mixed).
    pub mix: &'a [Mix],
}

impl TrainSet<'_> {
    /// The hard label of row `r` (sample `i`), mixed when the row is.
    fn label(&self, i: usize, r: usize) -> Option<HardLabel> {
        let y = self.labels[i]?;
        match self.mix.get(r) {
            Some(m) if m.lambda < 1.0 => {
                // Partners share the labelled/unlabeled group, so this is `Some`.
                debug_assert!(self.labels[m.partner].is_some(), "row {r}: unlabeled mixup partner");
                let other = self.labels[m.partner]?;
                Some(HardLabel { class: y, other, weight: m.lambda })
            }
            _ => Some(HardLabel::one(y)),
        }
    }
}

/// Labelled samples for model selection.
#[derive(Debug, Clone, Copy)]
pub struct ValSet<'a> {
    pub x: &'a [f32],
    pub n: usize,
    pub labels: &'a [i64],
}

/// What happened during training.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    /// Optimizer steps taken (the budget, unless early stopping ended the run).
    pub steps: usize,
    /// Optimizer steps the run was given.
    pub step_budget: usize,
    /// Training rows of this run (samples, each drawn as one of its views).
    pub rows: usize,
    /// Passes over this run's rows: `steps × batch / rows`, roughly.
    pub passes: f64,
    /// Step after which the kept weights were taken.
    pub best_step: usize,
    pub best_val_accuracy: Option<f64>,
    /// Mean training loss over the last validation period.
    pub final_train_loss: f64,
    /// The learning curve: one point per validation period.
    pub curve: Vec<CurvePoint>,
}

/// One point of a learning curve, at the end of a validation period.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    /// Mean training loss over the period (the run's own loss: KD or hard labels).
    pub train_loss: f64,
    /// Cross-entropy on the validation labels, and accuracy.
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
}

/// Forward multiply-accumulates per synchronisation below which a batch
/// stays on one core. Handing work to the second core and taking the result
/// back is not free even with the spinning helper (`pair`), and half
/// batches make less efficient GEMMs. Measured on a 2-core VM, batch 64: a
/// 40-32-10 MLP (105k MACs per batch) trains ~2× faster on one core; the
/// 2k-parameter CNN (1.2M) ~1.4× faster split, a 6× larger CNN ~1.5×; a
/// 40-256-128-10 MLP (2.8M) about the same either way. BatchNorm students
/// synchronise at every BatchNorm layer, so they need a larger batch or
/// model to split.
const PARALLEL_MIN_MACS_PER_SYNC: usize = 1_000_000;

/// Whether batches of `b` samples are split across two cores. Without
/// BatchNorm the halves synchronise once per batch; with it twice per
/// stretch between BatchNorm layers. Depends on the student and batch size
/// only, so a seed still gives bit-identical weights.
fn splits_batches(student: &Student, b: usize, min_macs_per_sync: usize) -> bool {
    let bn = student.layers.iter().filter(|l| matches!(l, crate::student::Layer::BatchNorm(_))).count();
    let syncs = if bn == 0 { 1 } else { 2 * (bn + 1) };
    b >= 16 && b * student.macs_per_sample() / syncs >= min_macs_per_sync
}

/// Minibatches: passes over the samples in a fresh random order each, each
/// sample drawn as one of its views.
#[derive(Debug)]
pub(crate) struct Batches {
    order: Vec<usize>,
    /// Position in the current pass over `order`; a new pass reshuffles.
    pos: usize,
}

/// One minibatch: sample indices, their rows in the set (the drawn views),
/// and those rows' inputs.
#[derive(Debug)]
pub(crate) struct Batch {
    pub samples: Vec<usize>,
    pub rows: Vec<usize>,
    pub x: Vec<f32>,
}

impl Batches {
    pub(crate) fn new(n: usize) -> Batches {
        Batches { order: (0..n).collect(), pos: n }
    }

    /// The next batch of up to `size` samples of `set`.
    pub(crate) fn next(&mut self, set: TrainSet<'_>, size: usize, rng: &mut ChaCha8Rng) -> Batch {
        if self.pos >= set.n {
            self.order.shuffle(rng);
            self.pos = 0;
        }
        let samples = self.order[self.pos..(self.pos + size).min(set.n)].to_vec();
        self.pos += samples.len();
        let rows: Vec<usize> = samples
            .iter()
            .map(|&i| if set.views > 1 { rng.random_range(0..set.views) * set.n + i } else { i })
            .collect();
        let len = set.x.len() / (set.n * set.views).max(1);
        let x = rows.iter().flat_map(|&r| set.x[r * len..(r + 1) * len].iter().copied()).collect();
        Batch { samples, rows, x }
    }
}

/// Loss of a (part of a) batch and its gradient with respect to the logits,
/// divided by the full batch size `b`.
pub(crate) fn batch_loss(
    logits: &[f32],
    samples: &[usize],
    rows: &[usize],
    set: TrainSet<'_>,
    cfg: &TrainConfig,
    b: usize,
) -> (Vec<f32>, f64) {
    let classes = logits.len() / samples.len().max(1);
    let mut dlogits = vec![0.0f32; logits.len()];
    let mut loss = 0.0;
    for (k, (&i, &r)) in samples.iter().zip(rows).enumerate() {
        let s = &logits[k * classes..(k + 1) * classes];
        let t = set.teacher.map(|t| &t[r * classes..(r + 1) * classes]);
        let g = &mut dlogits[k * classes..(k + 1) * classes];
        loss += sample_loss(s, t, set.label(i, r), &cfg.loss, g);
        g.iter_mut().for_each(|v| *v /= b as f32);
    }
    (dlogits, loss)
}

/// Accuracy of a float student on labelled samples.
pub fn evaluate(student: &Student, x: &[f32], n: usize, labels: &[i64]) -> f64 {
    evaluate_with_loss(student, x, n, labels).0
}

/// Accuracy and mean cross-entropy of a float student on labelled samples.
pub fn evaluate_with_loss(student: &Student, x: &[f32], n: usize, labels: &[i64]) -> (f64, f64) {
    let logits = student.forward(x, n);
    let c = student.classes;
    let ce: f64 = logits
        .chunks_exact(c)
        .zip(labels)
        .map(|(row, &y)| {
            let p = crate::util::softmax(row, 1.0);
            -p.get(y as usize).copied().unwrap_or(0.0).max(1e-30).ln()
        })
        .sum::<f64>()
        / n.max(1) as f64;
    (crate::util::accuracy(&crate::util::argmax_rows(&logits, c), labels), ce)
}

/// Trains `student` in place.
pub fn train(
    student: &mut Student,
    set: TrainSet<'_>,
    val: Option<ValSet<'_>>,
    cfg: &TrainConfig,
    progress: &Progress,
) -> TrainReport {
    super::memory::keep_freed_memory();
    train_splitting_above(student, set, val, cfg, progress, PARALLEL_MIN_MACS_PER_SYNC)
}

/// Half of a split batch: what the helper thread (or the trainer) needs to
/// compute its gradients.
struct HalfJob {
    model: Arc<Student>,
    x: Vec<f32>,
    samples: Vec<usize>,
    rows: Vec<usize>,
    /// Dropout seed of this half.
    seed: u64,
    /// Size of the whole batch (the loss is a mean over it).
    b: usize,
}

impl HalfJob {
    fn run(self, set: TrainSet<'_>, cfg: &TrainConfig) -> (Grads, f64) {
        let n = self.samples.len();
        let mut r = ChaCha8Rng::seed_from_u64(self.seed);
        let (logits, tape) = self.model.forward_train_shared(&self.x, n, &mut r);
        let (dlogits, loss) = batch_loss(&logits, &self.samples, &self.rows, set, cfg, self.b);
        let mut g = self.model.zero_grads();
        self.model.backward(&tape, dlogits, n, &mut g);
        (g, loss)
    }
}

/// Keeps freed buffers in the process. Every step allocates and frees the
/// same large buffers (activations, im2col matrices, gradients); above
/// glibc's default threshold each is handed back to the kernel when freed,
/// and the next step page-faults it in and zeroes it again (measured: a
/// fifth of a DS-CNN training step). 32 MiB is the largest threshold
/// glibc takes.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only sets allocator tunables; it is called once,
        // and glibc's allocator stays valid under any accepted setting.
        #[allow(unsafe_code)]
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        });
    }
}

/// [`train`] with batches split across two cores above `min_macs_per_sync`.
fn train_splitting_above(
    student: &mut Student,
    set: TrainSet<'_>,
    val: Option<ValSet<'_>>,
    cfg: &TrainConfig,
    progress: &Progress,
    min_macs_per_sync: usize,
) -> TrainReport {
    keep_freed_memory();
    // Students without BatchNorm hand half of each batch to a helper thread
    // kept for the whole run (see `pair`); BatchNorm students split in
    // lockstep on the thread pool.
    let helper = !student.has_batch_norm() && splits_batches(student, cfg.batch_size.max(1), min_macs_per_sync);
    std::thread::scope(|scope| {
        let pair = helper.then(|| Pair::new(scope, move |job: HalfJob| job.run(set, cfg)));
        train_loop(student, set, val, cfg, progress, min_macs_per_sync, pair.as_ref())
    })
}

/// Gradients of one batch (`x`, its samples and view rows), split across
/// two cores when it pays; adds the batch's loss to `loss_sum`.
#[allow(clippy::too_many_arguments)]
fn batch_grads(
    model: &mut Arc<Student>,
    x: &[f32],
    batch: &[usize],
    rows: &[usize],
    set: TrainSet<'_>,
    cfg: &TrainConfig,
    rng: &mut ChaCha8Rng,
    split: Option<Option<&Pair<'_, HalfJob, (Grads, f64)>>>,
    loss_sum: &mut f64,
) -> Grads {
    let b = batch.len();
    let len = model.input_len();
    let Some(pair) = split else {
        let student = Arc::make_mut(model);
        let (logits, tape) = student.forward_train(x, b, rng);
        let (dlogits, loss) = batch_loss(&logits, batch, rows, set, cfg, b);
        *loss_sum += loss;
        let mut grads = student.zero_grads();
        student.backward(&tape, dlogits, b, &mut grads);
        return grads;
    };
    // Two fixed halves with their own dropout seeds, gradients summed in a
    // fixed order: results stay bit-identical for a seed.
    let half = b / 2;
    let seeds: [u64; 2] = [rng.random(), rng.random()];
    let halves = [(0, half), (half, b)];
    let (mut g0, g1) = match pair {
        Some(pair) => {
            let job = |k: usize| {
                let (lo, hi) = halves[k];
                HalfJob {
                    model: Arc::clone(model),
                    x: x[lo * len..hi * len].to_vec(),
                    samples: batch[lo..hi].to_vec(),
                    rows: rows[lo..hi].to_vec(),
                    seed: seeds[k],
                    b,
                }
            };
            pair.submit(job(1));
            let (g0, l0) = job(0).run(set, cfg);
            let (g1, l1) = pair.wait();
            *loss_sum += l0 + l1;
            (g0, g1)
        }
        None => {
            // BatchNorm: the halves run in lockstep so it sees the whole batch.
            let mut rngs = seeds.map(ChaCha8Rng::seed_from_u64);
            let shards = halves.map(|(lo, hi)| (&x[lo * len..hi * len], hi - lo));
            let out = model.forward_train_shards(&shards, &mut rngs);
            let mut parts = Vec::with_capacity(2);
            for ((logits, tape), (lo, hi)) in out.iter().zip(halves) {
                let (dlogits, loss) = batch_loss(logits, &batch[lo..hi], &rows[lo..hi], set, cfg, b);
                *loss_sum += loss;
                parts.push((tape, dlogits, hi - lo, model.zero_grads()));
            }
            model.backward_shards(&mut parts);
            let g1 = parts.pop().map(|p| p.3).unwrap_or_default();
            let g0 = parts.pop().map(|p| p.3).unwrap_or_default();
            Arc::make_mut(model).update_running(&out[0].1);
            (g0, g1)
        }
    };
    for (a, c) in g0.iter_mut().flatten().zip(g1.iter().flatten()) {
        a.iter_mut().zip(c).for_each(|(x, y)| *x += y);
    }
    g0
}

fn train_loop(
    student: &mut Student,
    set: TrainSet<'_>,
    val: Option<ValSet<'_>>,
    cfg: &TrainConfig,
    progress: &Progress,
    min_macs_per_sync: usize,
    pair: Option<&Pair<'_, HalfJob, (Grads, f64)>>,
) -> TrainReport {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let batch_size = cfg.batch_size.max(1);
    let period = cfg.eval_every.max(1);
    let mut adam = Adam::new(student);
    let mut model = Arc::new(student.clone());
    let mut batches = Batches::new(set.n);
    let mut best: Option<(f64, usize, Student)> = None;
    let mut improved_at = 0;
    let (mut period_loss, mut period_samples, mut last_loss) = (0.0, 0usize, 0.0);
    let mut steps_run = 0;
    let mut seen = 0usize;
    let mut curve = Vec::new();
    let bar = progress.bar(cfg.steps.div_ceil(period) as u64, "train");
    for step in 0..cfg.steps {
        let Batch { samples, rows, x } = batches.next(set, batch_size, &mut rng);
        let (batch, b) = (&samples[..], samples.len());
        let split = splits_batches(&model, b, min_macs_per_sync).then_some(pair);
        let grads = batch_grads(&mut model, &x, batch, &rows, set, cfg, &mut rng, split, &mut period_loss);
        let lr = cfg.lr_at(step, cfg.steps);
        adam.step(Arc::make_mut(&mut model), &grads, lr, cfg.weight_decay, cfg.optimizer);
        period_samples += b;
        seen += b;
        steps_run = step + 1;
        if steps_run % period != 0 && steps_run != cfg.steps {
            continue;
        }
        last_loss = period_loss / period_samples.max(1) as f64;
        (period_loss, period_samples) = (0.0, 0);
        if let Some(v) = val {
            let (acc, val_loss) = evaluate_with_loss(&model, v.x, v.n, v.labels);
            curve.push(CurvePoint {
                step: steps_run,
                train_loss: last_loss,
                val_loss: Some(val_loss),
                val_accuracy: Some(acc),
            });
            if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                improved_at = steps_run;
            }
            // Ties keep the later weights: they saw more training.
            if best.as_ref().is_none_or(|(b, _, _)| acc >= *b) {
                best = Some((acc, steps_run, (*model).clone()));
            }
            bar.set_message(format!("loss {last_loss:.4} val {:.2}%", acc * 100.0));
            bar.inc(1);
            // Patience counts checks without a strictly better accuracy.
            if cfg.patience > 0 && (steps_run - improved_at) / period >= cfg.patience {
                break;
            }
        } else {
            curve.push(CurvePoint { step: steps_run, train_loss: last_loss, val_loss: None, val_accuracy: None });
            bar.set_message(format!("loss {last_loss:.4}"));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let rows = set.n;
    let passes = seen as f64 / rows.max(1) as f64;
    let report = |best_step, best_val_accuracy| TrainReport {
        steps: steps_run,
        step_budget: cfg.steps,
        rows,
        passes,
        best_step,
        best_val_accuracy,
        final_train_loss: last_loss,
        curve: curve.clone(),
    };
    match best {
        Some((acc, best_step, weights)) => {
            *student = weights;
            report(best_step, Some(acc))
        }
        None => {
            *student = Arc::unwrap_or_clone(model);
            report(steps_run, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distill::loss::LossKind;

    fn toy() -> (Vec<f32>, Vec<Option<usize>>, Vec<i64>) {
        // Two Gaussian-ish blobs on a line, separable.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let c = i % 2;
            let jitter = ((i * 37 % 17) as f32 - 8.0) / 20.0;
            x.extend_from_slice(&[if c == 0 { -1.0 } else { 1.0 } + jitter, jitter]);
            y.push(c);
        }
        let labels = y.iter().map(|c| Some(*c)).collect();
        (x, labels, y.iter().map(|c| *c as i64).collect())
    }

    fn cfg(seed: u64) -> TrainConfig {
        TrainConfig {
            steps: 20 * 13,
            eval_every: 13,
            batch_size: 16,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            optimizer: Optimizer::Adamw,
            schedule: Schedule::Cosine,
            warmup_steps: 0,
            patience: 0,
            seed,
            loss: LossConfig { kind: LossKind::Kl, temperature: 1.0, alpha: 0.0 },
        }
    }

    #[test]
    fn learns_a_separable_problem() {
        let (x, labels, y) = toy();
        let mut rng = <ChaCha8Rng as SeedableRng>::seed_from_u64(0);
        let mut s = Student::from_spec("dense(8) relu dense(2)", &[2], 2, &mut rng).unwrap();
        let set = TrainSet { x: &x, n: 200, views: 1, labels: &labels, teacher: None, mix: &[] };
        train(&mut s, set, None, &cfg(1), &Progress::hidden());
        assert!(evaluate(&s, &x, 200, &y) > 0.95);
    }

    #[test]
    fn same_seed_gives_bit_identical_weights() {
        let (x, labels, _) = toy();
        let run = |seed| {
            let mut rng = <ChaCha8Rng as SeedableRng>::seed_from_u64(seed);
            let mut s = Student::from_spec("dense(8) relu dropout(0.2) dense(2)", &[2], 2, &mut rng).unwrap();
            let set = TrainSet { x: &x, n: 200, views: 1, labels: &labels, teacher: None, mix: &[] };
            train(&mut s, set, None, &cfg(seed), &Progress::hidden());
            s
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn the_budget_is_steps_whatever_the_row_count() {
        let (x, labels, _) = toy();
        let train_on = |n: usize| {
            let mut rng = <ChaCha8Rng as SeedableRng>::seed_from_u64(0);
            let mut s = Student::from_spec("dense(4) relu dense(2)", &[2], 2, &mut rng).unwrap();
            let set = TrainSet { x: &x[..2 * n], n, views: 1, labels: &labels[..n], teacher: None, mix: &[] };
            train(&mut s, set, None, &cfg(0), &Progress::hidden())
        };
        let (full, tenth) = (train_on(200), train_on(20));
        assert_eq!((full.steps, tenth.steps), (260, 260));
        assert_eq!(full.step_budget, 260);
        // A pass over 200 rows is 13 batches (12 × 16 + 8), over 20 rows 2 (16 + 4).
        assert!((full.passes - 20.0).abs() < 1e-9, "{}", full.passes);
        assert!((tenth.passes - 130.0).abs() < 1e-9, "{}", tenth.passes);
    }

    #[test]
    fn patience_counts_validation_checks() {
        let (x, labels, y) = toy();
        let mut rng = <ChaCha8Rng as SeedableRng>::seed_from_u64(0);
        let mut s = Student::from_spec("dense(8) relu dense(2)", &[2], 2, &mut rng).unwrap();
        let set = TrainSet { x: &x, n: 200, views: 1, labels: &labels, teacher: None, mix: &[] };
        let val = ValSet { x: &x, n: 200, labels: &y };
        let c = TrainConfig { patience: 2, learning_rate: 5e-2, ..cfg(0) };
        let r = train(&mut s, set, Some(val), &c, &Progress::hidden());
        // This toy problem is solved early: accuracy stops improving (ties are not
        // improvements), so the run stops two checks later, on a check boundary.
        assert!(r.steps < r.step_budget, "{r:?}");
        assert_eq!(r.steps % 13, 0);
        assert_eq!(r.best_val_accuracy, Some(1.0));
    }

    #[test]
    fn mixed_rows_carry_both_labels() {
        let labels = [Some(1), Some(4), None, None];
        // Two views: view 1 of sample 0 mixes in sample 1; view 1 of sample 2 mixes in sample 3.
        let mut mix: Vec<Mix> = (0..8).map(|r| Mix { partner: r % 4, lambda: 1.0 }).collect();
        mix[4] = Mix { partner: 1, lambda: 0.7 };
        mix[6] = Mix { partner: 3, lambda: 0.6 };
        let set = TrainSet { x: &[], n: 4, views: 2, labels: &labels, teacher: None, mix: &mix };
        assert_eq!(set.label(0, 0), Some(HardLabel::one(1)));
        assert_eq!(set.label(0, 4), Some(HardLabel { class: 1, other: 4, weight: 0.7 }));
        assert_eq!(set.label(2, 6), None, "unlabeled rows stay unlabeled, mixed or not");
        let plain = TrainSet { mix: &[], ..set };
        assert_eq!(plain.label(0, 4), Some(HardLabel::one(1)));
    }

    #[test]
    fn split_batches_train_deterministically_with_and_without_batch_norm() {
        let (x, labels, y) = toy();
        for spec in ["dense(8) bn relu dropout(0.1) dense(2)", "dense(8) relu dropout(0.1) dense(2)"] {
            let run = |seed, min_macs| {
                let mut rng = <ChaCha8Rng as SeedableRng>::seed_from_u64(seed);
                let mut s = Student::from_spec(spec, &[2], 2, &mut rng).unwrap();
                let set = TrainSet { x: &x, n: 200, views: 1, labels: &labels, teacher: None, mix: &[] };
                train_splitting_above(&mut s, set, None, &cfg(seed), &Progress::hidden(), min_macs);
                s
            };
            let split = run(5, 0);
            assert_eq!(split, run(5, 0), "{spec}");
            assert!(evaluate(&split, &x, 200, &y) > 0.95, "{spec}");
            // This student is far below the threshold, so `train` keeps it on one core.
            assert_ne!(split, run(5, usize::MAX), "{spec}: the split path did not run");
        }
    }
}
