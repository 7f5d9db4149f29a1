//! The sweep's table (Markdown) and plot (validation and test accuracy per
//! grid point), for `tinykd sweep` and the run report.

use anyhow::{Result, bail};

use crate::distill::SweepRow;

/// "8438", or "7200–8438" when early stopping made the seeds differ.
fn steps_cell(steps: &[usize]) -> String {
    let (lo, hi) = (steps.iter().min().copied().unwrap_or(0), steps.iter().max().copied().unwrap_or(0));
    if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") }
}

/// The sweep table as Markdown, from the grid's rows and the selected and
/// baseline rows' indices.
pub fn markdown(rows: &[SweepRow], best: usize, baseline: usize) -> String {
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
pub(super) fn register_font() -> bool {
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
/// student (`best`, a row index); the α = 0 baseline is the dashed level line.
pub fn plot(all: &[SweepRow], best: usize, path: &std::path::Path) -> Result<()> {
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
