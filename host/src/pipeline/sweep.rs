//! `sweep`: a grid over temperature × α (× student specs × seeds) on one
//! prepared dataset, selected on validation accuracy. α = 0 is always in the
//! grid, so the selected student is never worse on validation than training
//! without the teacher.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::distill::{TrainedStudent, prepare_for, train_student};
use crate::distill::{Checkpoint, DistillOptions, SweepRow, TrainingRecord};
use crate::progress::Progress;

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub base: DistillOptions,
    pub temperatures: Vec<f32>,
    pub alphas: Vec<f32>,
    pub students: Vec<String>,
    pub seeds: Vec<u64>,
    pub out_dir: PathBuf,
}

/// The grid and the selection.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub rows: Vec<SweepRow>,
    pub best: usize,
    /// Row index of the α = 0 baseline of the selected student.
    pub baseline: usize,
    pub checkpoint: Checkpoint,
    /// The selected row's first-seed run, and its α = 0 baseline's.
    pub chosen_run: TrainedStudent,
    pub baseline_run: TrainedStudent,
    pub teacher_test_accuracy: Option<f64>,
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64;
    (m, var.sqrt())
}

/// Runs the grid and picks the best validation row.
pub fn sweep(o: &SweepOptions, progress: &Progress) -> Result<SweepOutcome> {
    if o.temperatures.is_empty() || o.students.is_empty() || o.seeds.is_empty() {
        bail!("sweep needs at least one temperature, one student and one seed");
    }
    if o.base.val_fraction <= 0.0 {
        bail!("sweep selects on validation accuracy: --val-fraction must be > 0 (or the data must have x_val)");
    }
    let mut alphas: Vec<f32> = o.alphas.clone();
    if !alphas.contains(&0.0) {
        alphas.insert(0, 0.0);
    }
    let mut rows = Vec::new();
    let mut models: Vec<TrainedStudent> = Vec::new();
    // An ensemble is combined at T, so its targets are prepared per temperature.
    let per_temperature = o.base.teachers.len() > 1;
    let mut prepared = None;
    // One cell per (student, T, α ≠ 0) plus one α = 0 cell per student.
    let kd_alphas = alphas.iter().filter(|a| **a != 0.0).count();
    let cells = o.students.len() * (o.temperatures.len() * kd_alphas + 1);
    let grid = progress.bar(cells as u64, "sweep");
    for spec in &o.students {
        for (ti, &t) in o.temperatures.iter().enumerate() {
            if prepared.is_none() || per_temperature {
                let mut opts = o.base.clone();
                opts.temperature = t;
                let specs: Vec<&str> = o.students.iter().map(String::as_str).collect();
                prepared = Some(prepare_for(&opts, &specs, progress)?);
            }
            let Some(p) = prepared.as_ref() else { unreachable!() };
            for &a in &alphas {
                if a == 0.0 && ti > 0 {
                    continue; // α = 0 ignores T: trained once per student
                }
                let mut val = Vec::new();
                let mut test = Vec::new();
                let mut first = None;
                let mut steps = Vec::new();
                for &seed in &o.seeds {
                    let s = train_student(p, &o.base, spec, a, t, seed, progress)?;
                    steps.push(s.report.steps);
                    val.push(s.report.best_val_accuracy.unwrap_or(0.0));
                    test.push(s.test_accuracy);
                    first.get_or_insert(s);
                }
                let Some(first) = first else { unreachable!() };
                let (test_mean, test_std) = mean_std(&test);
                rows.push(SweepRow {
                    student: spec.clone(),
                    parameters: first.student.param_count(),
                    temperature: (a > 0.0).then_some(t),
                    alpha: a,
                    val_accuracy: mean_std(&val).0,
                    test_accuracy: test_mean,
                    test_accuracy_std: test_std,
                    test_accuracies: test,
                    steps,
                });
                models.push(first);
                grid.inc(1);
            }
        }
    }
    grid.finish_and_clear();
    // Highest validation accuracy; ties go to α = 0, then to fewer parameters.
    let best = (0..rows.len())
        .max_by(|&i, &j| {
            let (a, b) = (&rows[i], &rows[j]);
            a.val_accuracy
                .total_cmp(&b.val_accuracy)
                .then((a.alpha == 0.0).cmp(&(b.alpha == 0.0)))
                .then(b.parameters.cmp(&a.parameters))
                .then(j.cmp(&i))
        })
        .unwrap_or(0);
    let baseline = rows.iter().position(|r| r.student == rows[best].student && r.alpha == 0.0).unwrap_or(best);
    let chosen = &models[best];
    // The options record the selected T and α (quantization-aware training
    // distils again with them).
    let mut options = o.base.clone();
    options.student = rows[best].student.clone();
    options.alpha = rows[best].alpha;
    options.temperature = rows[best].temperature.unwrap_or(o.base.temperature);
    let checkpoint = Checkpoint::new(
        chosen.student.clone(),
        TrainingRecord {
            sweep: Some(rows[best].clone()),
            baseline: Some(rows[baseline].clone()),
            ..TrainingRecord::options(options)
        },
    );
    let (chosen_run, baseline_run) = (models[best].clone(), models[baseline].clone());
    let teacher_test_accuracy = prepared.as_ref().and_then(|p| p.teacher_test_accuracy);
    Ok(SweepOutcome { rows, best, baseline, checkpoint, chosen_run, baseline_run, teacher_test_accuracy })
}
