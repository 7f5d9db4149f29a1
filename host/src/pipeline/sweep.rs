//! `sweep`: a grid over temperature × α (× student specs × seeds) on one
//! prepared dataset, selected on validation accuracy. α = 0 is always in the
//! grid, so the selected student is never worse on validation than training
//! without the teacher.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::json;

use super::distill::{DistillOptions, TrainedStudent, prepare_for, train_student};
use crate::progress::Progress;
use crate::student::Checkpoint;

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

/// One grid point, averaged over seeds. Selection uses the mean validation
/// accuracy over the seeds, which is steadier than any one seed's.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SweepRow {
    pub student: String,
    pub parameters: usize,
    /// `None` for α = 0 (the temperature plays no role).
    pub temperature: Option<f32>,
    pub alpha: f32,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    pub test_accuracy_std: f64,
    pub test_accuracies: Vec<f64>,
    /// Optimizer steps of each seed's run (equal unless early stopping cut one short).
    pub steps: Vec<usize>,
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
        json!({ "sweep": rows[best], "baseline": rows[baseline], "options": options }),
    );
    let (chosen_run, baseline_run) = (models[best].clone(), models[baseline].clone());
    let teacher_test_accuracy = prepared.as_ref().and_then(|p| p.teacher_test_accuracy);
    Ok(SweepOutcome { rows, best, baseline, checkpoint, chosen_run, baseline_run, teacher_test_accuracy })
}

/// "8438", or "7200–8438" when early stopping made the seeds differ.
fn steps_cell(steps: &[usize]) -> String {
    let (lo, hi) = (steps.iter().min().copied().unwrap_or(0), steps.iter().max().copied().unwrap_or(0));
    if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") }
}

/// The sweep table as Markdown.
pub fn markdown(out: &SweepOutcome) -> String {
    markdown_rows(&out.rows, out.best, out.baseline)
}

/// [`markdown`] from the grid's rows and the selected and baseline rows' indices.
pub fn markdown_rows(rows: &[SweepRow], best: usize, baseline: usize) -> String {
    let mut s = String::from(
        "| student | params | T | α | steps | val acc (mean over seeds) | test acc (mean ± std over seeds) |\n|---|---:|---:|---:|---:|---:|---|\n",
    );
    for (i, r) in rows.iter().enumerate() {
        let mark = if i == best {
            " **selected**"
        } else if i == baseline {
            " (baseline)"
        } else {
            ""
        };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {:.2}% | {:.2}% ± {:.2}{} |\n",
            r.student,
            r.parameters,
            r.temperature.map_or("–".into(), |t| t.to_string()),
            r.alpha,
            steps_cell(&r.steps),
            r.val_accuracy * 100.0,
            r.test_accuracy * 100.0,
            r.test_accuracy_std * 100.0,
            mark
        ));
    }
    s
}

/// Registers a system sans-serif font for plot text; `false` when none is
/// installed (the plot is then drawn without text).
pub(crate) fn register_font() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
        ];
        candidates.iter().filter_map(|p| std::fs::read(p).ok()).next().is_some_and(|bytes| {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes).is_ok()
        })
    })
}

/// Test accuracy against temperature, one line per α, for the selected
/// student; the α = 0 baseline is the dashed level line.
pub fn plot(out: &SweepOutcome, path: &std::path::Path) -> Result<()> {
    plot_rows(&out.rows, out.best, path)
}

/// [`plot`] from the grid's rows and the selected row's index.
pub fn plot_rows(all: &[SweepRow], best: usize, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let Some(selected) = all.get(best) else { bail!("no sweep row {best}") };
    let student = &selected.student;
    let rows: Vec<&SweepRow> = all.iter().filter(|r| &r.student == student).collect();
    let temps: Vec<f32> = {
        let mut t: Vec<f32> = rows.iter().filter_map(|r| r.temperature).collect();
        t.sort_by(f32::total_cmp);
        t.dedup();
        t
    };
    let accs: Vec<f64> = rows.iter().map(|r| r.test_accuracy * 100.0).collect();
    let (lo, hi) = accs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    let (lo, hi) = ((lo - 1.0).floor(), (hi + 1.0).ceil());
    let (tmin, tmax) = (temps.first().copied().unwrap_or(1.0) as f64, temps.last().copied().unwrap_or(1.0) as f64);
    let text = register_font();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20);
        if text {
            builder
                .caption(format!("{student}: test accuracy vs temperature"), ("sans-serif", 18))
                .x_label_area_size(40)
                .y_label_area_size(50);
        }
        let mut chart = builder.build_cartesian_2d((tmin - 0.5)..(tmax + 0.5), lo..hi)?;
        if text {
            chart.configure_mesh().x_desc("temperature T").y_desc("test accuracy (%)").draw()?;
        } else {
            chart.configure_mesh().disable_x_mesh().disable_y_mesh().x_labels(0).y_labels(0).draw()?;
        }
        let mut alphas: Vec<f32> = rows.iter().filter(|r| r.alpha > 0.0).map(|r| r.alpha).collect();
        alphas.sort_by(f32::total_cmp);
        alphas.dedup();
        for (i, a) in alphas.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.alpha == *a)
                .filter_map(|r| r.temperature.map(|t| (t as f64, r.test_accuracy * 100.0)))
                .collect();
            let series = chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
            if text {
                series
                    .label(format!("α = {a}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        if let Some(base) = rows.iter().find(|r| r.alpha == 0.0) {
            let y = base.test_accuracy * 100.0;
            let dashes: Vec<(f64, f64)> =
                (0..40).map(|k| tmin - 0.5 + (tmax - tmin + 1.0) * k as f64 / 39.0).map(|x| (x, y)).collect();
            let series =
                chart.draw_series(dashes.chunks(2).map(|seg| PathElement::new(seg.to_vec(), BLACK.stroke_width(1))))?;
            if text {
                series.label("α = 0 (labels only)").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            }
        }
        if text {
            chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("{}: cannot draw the sweep plot: {e}", path.display()))
}
