//! `distill`: data preparation (validation split, labelled fraction,
//! unlabeled data, augmented views, teacher logits through the cache) and
//! student training.

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, LoadOptions, SplitName};
use crate::distill::{
    self, Checkpoint, DistillMetrics, DistillOptions, LossConfig, TrainConfig, TrainSet, TrainingRecord, ValSet,
};
use crate::progress::Progress;
use crate::student::Student;
use crate::teacher::TeacherSet;
use crate::util::{accuracy, argmax_rows};

/// The training length every member of a comparison gets: the distilled
/// student, its α = 0 baseline, every sweep cell and seed. It is counted in
/// optimizer steps over a *reference set* — every training row of the
/// distilled run (labelled and unlabeled samples) — so a baseline that
/// trains on the labelled tenth of a label-scarce split takes as many steps
/// as the distilled student, i.e. ten times as many passes over its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StepBudget {
    pub steps: usize,
    /// Steps per epoch of the reference set.
    pub steps_per_epoch: usize,
    /// Steps between validation checks (patience counts these).
    pub eval_every: usize,
    /// Rows of the reference set.
    pub reference_rows: usize,
}

impl StepBudget {
    /// Default budget without `--epochs` or `--steps`: 60 epochs of the
    /// reference set, but at least this many steps, so that a small dataset
    /// (100 samples: 2 steps per epoch) still trains to convergence…
    pub const MIN_DEFAULT_STEPS: usize = 4_000;
    /// …and at most this many, so a large one finishes in reasonable time.
    pub const MAX_DEFAULT_STEPS: usize = 40_000;
    /// Validation checks per run at most (more would cost time on tiny data).
    const MAX_CHECKS: usize = 200;

    pub fn new(opts: &DistillOptions, reference_rows: usize) -> StepBudget {
        let steps_per_epoch = reference_rows.div_ceil(opts.batch_size.max(1)).max(1);
        let steps = match (opts.steps, opts.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => e * steps_per_epoch,
            (None, None) => (60 * steps_per_epoch).clamp(Self::MIN_DEFAULT_STEPS, Self::MAX_DEFAULT_STEPS),
        };
        let eval_every = steps_per_epoch.max(steps.div_ceil(Self::MAX_CHECKS));
        StepBudget { steps, steps_per_epoch, eval_every, reference_rows }
    }

    /// The budget in epochs of the reference set.
    pub fn epochs(&self) -> f64 {
        self.steps as f64 / self.steps_per_epoch as f64
    }
}

pub(crate) fn gather(x: &[f32], len: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&i| x[i * len..(i + 1) * len].iter().copied()).collect()
}

/// A trained student with its test accuracy.
#[derive(Debug, Clone)]
pub struct TrainedStudent {
    pub student: Student,
    pub report: distill::TrainReport,
    pub test_accuracy: f64,
    pub teacher_agreement: Option<f64>,
}

/// Outcome of a distillation.
#[derive(Debug, Clone)]
pub struct DistillOutcome {
    pub kd: TrainedStudent,
    pub baseline: Option<TrainedStudent>,
    pub teacher_test_accuracy: Option<f64>,
    pub teacher_backends: Vec<String>,
    /// Samples the teacher computed in this run (0: everything came from the cache).
    pub teacher_computed_samples: usize,
    pub checkpoint: Checkpoint,
}

/// Keeps the labels of a stratified, seeded `fraction` of `idx`.
fn keep_labels(y: &[i64], idx: &[usize], fraction: f32, seed: u64) -> Vec<bool> {
    if fraction >= 1.0 {
        return vec![true; idx.len()];
    }
    let labels: Vec<i64> = idx.iter().map(|&i| y[i]).collect();
    // Reuse the stratified splitter: its "validation" part is what stays labelled.
    let (_, kept) = crate::data::stratified_split(Some(&labels), labels.len(), fraction, seed ^ 0x1ABE1);
    let mut keep = vec![false; idx.len()];
    kept.into_iter().for_each(|k| keep[k] = true);
    keep
}

/// Everything training needs, computed once: sweeps train many students on it.
#[derive(Debug)]
pub struct Prepared {
    pub data: Dataset,
    /// `views × n × len` training inputs (view-major).
    pub views: Vec<f32>,
    /// Mixup of every view row (empty: no mixup).
    pub mix: Vec<distill::Mix>,
    pub n: usize,
    pub view_count: usize,
    pub labels: Vec<Option<usize>>,
    pub labelled: usize,
    /// Teacher logits for every view, and for the test split.
    pub teacher_train: Option<Vec<f32>>,
    pub teacher_test: Option<Vec<f32>>,
    pub classes: usize,
    /// Validation samples `(x, y, n)`.
    pub val: Option<(Vec<f32>, Vec<i64>, usize)>,
    pub teacher_test_accuracy: Option<f64>,
    pub teacher_backends: Vec<String>,
    pub teacher_computed_samples: usize,
    pub teacher_kinds: Vec<crate::teacher::OutputKind>,
}

/// Checks every student spec against the data's sample shape. The class
/// count is the teacher's to say (checked after it runs).
fn check_specs(specs: &[&str], data: &Dataset) -> Result<()> {
    for spec in specs {
        let classes = match crate::student::spec::parse(spec)?.last() {
            Some(crate::student::LayerSpec::Dense { units }) => *units,
            _ => data.class_count.max(2),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        Student::from_spec(spec, &data.sample_shape, classes, &mut rng)
            .with_context(|| format!("student '{spec}' does not fit the data ({})", data.describe_layout()))?;
    }
    Ok(())
}

/// Validation samples `(x, y, n)`: x_val when present, else a stratified
/// part of train; and the train rows left for training.
#[allow(clippy::type_complexity)]
fn validation_split(
    opts: &DistillOptions,
    data: &Dataset,
    y_train: Option<&[i64]>,
) -> (Vec<usize>, Option<(Vec<f32>, Vec<i64>, usize)>) {
    let len = data.sample_len();
    match (&data.val, data.labels(SplitName::Val)) {
        (Some(v), Ok(y)) => ((0..data.train.n).collect::<Vec<_>>(), Some((v.x.clone(), y.to_vec(), v.n))),
        _ => {
            let (t, v) = crate::data::stratified_split(y_train, data.train.n, opts.val_fraction, opts.seed);
            let vd = match (v.is_empty(), y_train) {
                (false, Some(y)) => {
                    Some((gather(&data.train.x, len, &v), v.iter().map(|&i| y[i]).collect::<Vec<_>>(), v.len()))
                }
                _ => None,
            };
            (t, vd)
        }
    }
}

/// Teacher scores computed elsewhere (`--teacher-logits`): the training
/// rows (the kept train samples, then x_unlabeled when `with_unlabeled`),
/// the test rows, the class count and the scores' kind.
fn scores_from_file(
    f: &std::path::Path,
    data: &Dataset,
    train_idx: &[usize],
    with_unlabeled: bool,
    progress: &Progress,
) -> Result<(Vec<f32>, Vec<f32>, usize, crate::teacher::OutputKind)> {
    use crate::teacher::logits_file;
    let train = logits_file::require(f, "train", data.train.n)?;
    let test = logits_file::require(f, "test", data.test.n)?;
    let c = train.classes;
    let mut rows = gather(&train.logits, c, train_idx);
    if let (Some(u), true) = (&data.unlabeled, with_unlabeled) {
        let ul = logits_file::require(f, "unlabeled", u.n)?;
        if ul.classes != c {
            bail!("{}: 'unlabeled' has {} classes, 'train' {c}", f.display(), ul.classes);
        }
        rows.extend_from_slice(&ul.logits);
    }
    if test.classes != c {
        bail!("{}: 'test' has {} classes, 'train' {c}", f.display(), test.classes);
    }
    progress.note(&format!(
        "teacher scores from {}: {} train and {} test rows, {c} classes ({:?})",
        f.display(),
        data.train.n,
        data.test.n,
        train.kind
    ));
    Ok((rows, test.logits, c, train.kind))
}

/// Loads and validates the data, builds the training set and its views, and
/// gets the teacher's logits (from the cache when possible).
pub fn prepare(opts: &DistillOptions, progress: &Progress) -> Result<Prepared> {
    prepare_for(opts, &[&opts.student], progress)
}

/// [`prepare`], checking every student spec in `specs` against the data
/// first, so a spec that cannot work fails before the teacher runs.
pub fn prepare_for(opts: &DistillOptions, specs: &[&str], progress: &Progress) -> Result<Prepared> {
    opts.validate()?;
    let data = Dataset::load(&opts.data, LoadOptions { input_scale: opts.input_scale, layout: opts.layout })?;
    progress.note(&data.describe_layout());
    check_specs(specs, &data)?;
    let y_train = data.labels(SplitName::Train).ok().map(<[i64]>::to_vec);
    if y_train.is_none() && opts.alpha < 1.0 {
        bail!("{}: y_train is missing; without labels use --alpha 1", opts.data.display());
    }
    let y_test = data.labels(SplitName::Test)?.to_vec();
    let mut teachers = if opts.teachers.is_empty() {
        None
    } else {
        let mut set =
            TeacherSet::new(&opts.teachers, opts.backend, opts.teacher_output.as_deref(), opts.cache_dir.clone())?;
        set.expected_classes = (data.class_count > 0).then_some(data.class_count);
        set.kind_override = opts.teacher_output_kind;
        Some(set)
    };
    let len = data.sample_len();
    let shape = data.sample_shape.clone();

    let (train_idx, val) = validation_split(opts, &data, y_train.as_deref());
    // Training samples: labelled train (some labels dropped when asked), then x_unlabeled.
    let mut x = gather(&data.train.x, len, &train_idx);
    let mut labels: Vec<Option<usize>> = match &y_train {
        Some(y) => {
            let keep = keep_labels(y, &train_idx, opts.labelled_fraction, opts.seed);
            train_idx.iter().zip(keep).map(|(&i, k)| k.then_some(y[i] as usize)).collect()
        }
        None => vec![None; train_idx.len()],
    };
    let has_teacher = teachers.is_some() || opts.teacher_logits.is_some();
    if let (Some(u), true) = (&data.unlabeled, opts.use_unlabeled && opts.alpha > 0.0 && has_teacher) {
        x.extend_from_slice(&u.x);
        labels.extend(std::iter::repeat_n(None, u.n));
    }
    let n = labels.len();
    let labelled = labels.iter().filter(|l| l.is_some()).count();
    if labelled == 0 && opts.alpha < 1.0 {
        bail!("no labelled training samples left; use --alpha 1");
    }
    let groups: Vec<bool> = labels.iter().map(Option::is_some).collect();
    let distill::Views { x: views, mix } = opts.augment.views_of(&x, n, &shape, &groups, opts.seed);
    let view_count = views.len() / (n * len);
    progress.note(&format!(
        "training set: {n} samples ({labelled} labelled, {} unlabeled), {view_count} view(s) each",
        n - labelled
    ));

    let mut file_kinds = Vec::new();
    let (teacher_train, teacher_test, classes) = match (teachers.as_mut(), &opts.teacher_logits) {
        (None, Some(f)) => {
            let (rows, test, c, kind) = scores_from_file(f, &data, &train_idx, n > train_idx.len(), progress)?;
            file_kinds.push(kind);
            (Some(rows), Some(test), c)
        }
        (Some(t), _) => {
            // The teacher sees the file's layout, the student channels first.
            let stored = &data.stored_shape;
            let (train, c) =
                t.logits(&data.stored_order(&views), n * view_count, stored, opts.temperature, progress)?;
            let (test, _) =
                t.logits(&data.stored_order(&data.test.x), data.test.n, stored, opts.temperature, progress)?;
            (Some(train), Some(test), c)
        }
        (None, None) => (None, None, data.class_count),
    };
    if data.class_count > classes {
        bail!(
            "{}: teacher has {classes} classes but the labels in {} go up to {} (class count mismatch)",
            opts.teachers.first().map_or_else(String::new, |p| p.display().to_string()),
            data.path.display(),
            data.class_count - 1
        );
    }
    if classes < 2 {
        bail!("{}: needs at least 2 classes", opts.data.display());
    }
    let teacher_test_accuracy = teacher_test.as_ref().map(|t| accuracy(&argmax_rows(t, classes), &y_test));
    if let Some(acc) = teacher_test_accuracy {
        progress.note(&format!("teacher test accuracy: {:.2}%", acc * 100.0));
    }
    Ok(Prepared {
        data,
        views,
        mix,
        n,
        view_count,
        labels,
        labelled,
        teacher_train,
        teacher_test,
        classes,
        val,
        teacher_test_accuracy,
        teacher_backends: teachers.as_ref().map(|t| t.backends.clone()).unwrap_or_default(),
        teacher_computed_samples: teachers.as_ref().map_or(0, |t| t.computed_samples),
        teacher_kinds: teachers.as_ref().map(|t| t.kinds.clone()).unwrap_or(file_kinds),
    })
}

/// The rows a student trains on: every training row with the teacher's
/// logits when it has a teacher term (α > 0), else — without a teacher term
/// the unlabeled samples carry no signal — the labelled rows only (same
/// views, mixup partners renumbered).
pub(crate) struct TrainRows {
    /// `None`: all of `Prepared`'s rows, borrowed.
    labelled: Option<LabelledRows>,
}

/// The labelled rows' views, labels and mixup, copied out of `Prepared`.
struct LabelledRows {
    x: Vec<f32>,
    labels: Vec<Option<usize>>,
    mix: Vec<distill::Mix>,
    n: usize,
}

impl TrainRows {
    pub(crate) fn new(p: &Prepared, alpha: f32) -> TrainRows {
        if alpha > 0.0 && p.teacher_train.is_some() {
            return TrainRows { labelled: None };
        }
        let len = p.data.sample_len();
        let base_rows: Vec<usize> = (0..p.n).filter(|&i| p.labels[i].is_some()).collect();
        let n = base_rows.len();
        let mut x = Vec::with_capacity(p.view_count * n * len);
        for v in 0..p.view_count {
            for &i in &base_rows {
                let r = v * p.n + i;
                x.extend_from_slice(&p.views[r * len..(r + 1) * len]);
            }
        }
        let labels = base_rows.iter().map(|&i| p.labels[i]).collect::<Vec<_>>();
        // Mixup partners are labelled like their rows, so they are all in `base_rows`.
        let mut position = vec![usize::MAX; p.n];
        base_rows.iter().enumerate().for_each(|(k, &i)| position[i] = k);
        let mix = if p.mix.is_empty() {
            Vec::new()
        } else {
            (0..p.view_count)
                .flat_map(|v| base_rows.iter().map(move |&i| v * p.n + i))
                .map(|r| distill::Mix { partner: position[p.mix[r].partner], lambda: p.mix[r].lambda })
                .collect()
        };
        TrainRows { labelled: Some(LabelledRows { x, labels, mix, n }) }
    }

    pub(crate) fn set<'a>(&'a self, p: &'a Prepared) -> TrainSet<'a> {
        match &self.labelled {
            None => TrainSet {
                x: &p.views,
                n: p.n,
                views: p.view_count,
                labels: &p.labels,
                teacher: p.teacher_train.as_deref(),
                mix: &p.mix,
            },
            Some(LabelledRows { x, labels, mix, n }) => {
                TrainSet { x, n: *n, views: p.view_count, labels, teacher: None, mix }
            }
        }
    }
}

/// Trains one student on prepared data with the given spec, α, T and seed.
pub fn train_student(
    p: &Prepared,
    opts: &DistillOptions,
    spec: &str,
    alpha: f32,
    temperature: f32,
    seed: u64,
    progress: &Progress,
) -> Result<TrainedStudent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut student = Student::from_spec(spec, &p.data.sample_shape, p.classes, &mut rng)?;
    let budget = StepBudget::new(opts, p.n);
    let cfg = TrainConfig {
        steps: budget.steps,
        eval_every: budget.eval_every,
        batch_size: opts.batch_size,
        learning_rate: opts.learning_rate,
        weight_decay: opts.weight_decay,
        optimizer: opts.optimizer,
        schedule: opts.schedule,
        warmup_steps: opts.warmup_epochs * budget.steps_per_epoch,
        patience: opts.patience,
        seed,
        loss: LossConfig { kind: opts.loss, temperature, alpha },
    };
    let rows = TrainRows::new(p, alpha);
    let set = rows.set(p);
    let val = p.val.as_ref().map(|(x, y, n)| ValSet { x, n: *n, labels: y });
    progress.note(&format!(
        "training '{spec}' ({} parameters, T = {temperature}, α = {alpha}, seed {seed})",
        student.param_count()
    ));
    let report = distill::train(&mut student, set, val, &cfg, progress);
    progress.note(&format!(
        "  {} optimizer steps of {} (budget: {:.1} epochs of {} reference rows); {:.1} passes over this run's {} rows{}",
        report.steps,
        report.step_budget,
        budget.epochs(),
        budget.reference_rows,
        report.passes,
        report.rows,
        match report.best_val_accuracy {
            Some(a) => format!("; best validation {:.2}% at step {}", a * 100.0, report.best_step),
            None => String::new(),
        }
    ));
    let y_test = p.data.labels(SplitName::Test)?;
    let logits = student.forward(&p.data.test.x, p.data.test.n);
    let pred = argmax_rows(&logits, p.classes);
    let test_accuracy = accuracy(&pred, y_test);
    let teacher_agreement = p.teacher_test.as_ref().map(|t| {
        let tp = argmax_rows(t, p.classes);
        pred.iter().zip(&tp).filter(|(a, b)| a == b).count() as f64 / pred.len() as f64
    });
    Ok(TrainedStudent { student, report, test_accuracy, teacher_agreement })
}

/// Prepares, trains the student (and its α = 0 baseline), and returns the
/// checkpoint to save.
pub fn distill(opts: &DistillOptions, progress: &Progress) -> Result<DistillOutcome> {
    let p = prepare(opts, progress)?;
    let kd = train_student(&p, opts, &opts.student, opts.alpha, opts.temperature, opts.seed, progress)?;
    let baseline = if opts.baseline && opts.alpha > 0.0 && p.labelled > 0 {
        Some(train_student(&p, opts, &opts.student, 0.0, opts.temperature, opts.seed, progress)?)
    } else {
        None
    };
    let training = TrainingRecord {
        outcome: Some(DistillMetrics {
            teacher_backends: p.teacher_backends.clone(),
            teacher_output_kinds: p.teacher_kinds.clone(),
            teacher_test_accuracy: p.teacher_test_accuracy,
            report: kd.report.clone(),
            test_accuracy: kd.test_accuracy,
            teacher_agreement: kd.teacher_agreement,
            baseline_test_accuracy: baseline.as_ref().map(|b| b.test_accuracy),
            parameters: kd.student.param_count(),
        }),
        ..TrainingRecord::options(opts.clone())
    };
    let checkpoint = Checkpoint::new(kd.student.clone(), training);
    Ok(DistillOutcome {
        kd,
        baseline,
        teacher_test_accuracy: p.teacher_test_accuracy,
        teacher_backends: p.teacher_backends.clone(),
        teacher_computed_samples: p.teacher_computed_samples,
        checkpoint,
    })
}
