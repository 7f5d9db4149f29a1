//! The run's `report.md`, `report.html` and their plots, from the stage
//! records and the int8 student's predictions on the test split.

use anyhow::Result;

use super::{DistillRecord, QuantizeRecord, Run, RunSummary};
use crate::device::EmulationReport;
use crate::report::{Footprint, Report};

fn pct(v: f64) -> String {
    format!("{:.2} %", v * 100.0)
}

/// The report's facts table (label, value) and accuracy bars (label, share).
type Facts = (Vec<(String, String)>, Vec<(String, f64)>);

/// The report's facts table and accuracy bars, board rows aside.
fn facts(run: &Run<'_>, d: &DistillRecord, q: &QuantizeRecord) -> Facts {
    let mut facts = vec![
        ("student".to_owned(), run.opts.student.clone()),
        ("parameters".to_owned(), d.parameters.to_string()),
        ("temperature, α".to_owned(), {
            let (t, a) = d.temperature_alpha(&run.opts);
            format!("{t}, {a}{}", if d.sweep.is_some() { " (selected by the sweep)" } else { "" })
        }),
        ("optimizer steps".to_owned(), d.steps.to_string()),
    ];
    let mut accuracies = Vec::new();
    if let Some(t) = d.teacher_test_accuracy {
        facts.push(("teacher test accuracy".into(), pct(t)));
        accuracies.push(("teacher".to_owned(), t));
    }
    facts.push(("float student test accuracy".into(), pct(d.float_test_accuracy)));
    accuracies.push(("float student".into(), d.float_test_accuracy));
    if let Some(ptq) = q.ptq_int8_test_accuracy {
        facts.push(("int8 student, post-training".into(), pct(ptq)));
    }
    facts.push(("int8 student test accuracy (.tkd)".into(), pct(q.int8_test_accuracy)));
    accuracies.push(("int8 student".into(), q.int8_test_accuracy));
    facts.push(("int8 model".into(), format!("{} bytes", q.tkd_bytes)));
    if let (Some((bf, _)), Some((bi, _))) = (d.baseline, q.baseline) {
        facts.push(("α = 0 baseline, float / int8".into(), format!("{} / {}", pct(bf), pct(bi))));
    }
    (facts, accuracies)
}

/// Facts, accuracy bars and a measured footprint row for each board run.
fn board_rows(
    boards: &[&EmulationReport],
    facts: &mut Vec<(String, String)>,
    accuracies: &mut Vec<(String, f64)>,
) -> Vec<Footprint> {
    let mut footprint = Vec::new();
    for e in boards {
        if let Some(acc) = e.accuracy {
            facts.push((format!("on {} ({} test samples)", e.board, e.n), pct(acc)));
            accuracies.push((format!("device ({})", e.n), acc));
        }
        facts.push(("agreement with the host".into(), pct(e.agreement)));
        facts.push(("instructions per inference".into(), format!("{:.0}", e.instructions_per_inference)));
        // A real board's report has no image size (nothing was built here).
        if let (Ok(b), true) = (crate::device::board(&e.board), e.flash_bytes > 0) {
            footprint.push(Footprint {
                board: e.board.clone(),
                flash_used: e.flash_bytes,
                flash_total: b.flash_bytes,
                ram_used: e.ram_bytes,
                ram_total: b.ram_bytes,
                measured: true,
            });
        }
    }
    footprint
}

/// Writes the report of a finished run.
pub(super) fn write(run: &Run<'_>, d: &DistillRecord, q: &QuantizeRecord, summary: &RunSummary) -> Result<()> {
    let blob = crate::int8::read(&run.tkd)?;
    let data = crate::data::Dataset::load(&run.data, run.read.for_model(crate::int8::data_layout(&blob)))?;
    let labels = data.labels(crate::data::SplitName::Test)?;
    let (pred, _) = crate::int8::run_int8(&blob, &data.test.x, data.test.n)?;
    let model = crate::int8::parse(&blob)?;
    let (mut facts, mut accuracies) = facts(run, d, q);
    let boards: Vec<&EmulationReport> = summary.emulation.iter().chain(&summary.device).collect();
    let mut footprint = board_rows(&boards, &mut facts, &mut accuracies);
    // The other boards: the fit check's estimate (model + firmware, arena +
    // receive buffer + stack).
    for b in crate::device::BOARDS {
        if footprint.iter().any(|f| f.board == b.name) {
            continue;
        }
        let need = crate::device::fit_estimate(b, &model);
        footprint.push(Footprint {
            board: b.name.to_owned(),
            flash_used: need.flash,
            flash_total: b.flash_bytes,
            ram_used: need.ram,
            ram_total: b.ram_bytes,
            measured: false,
        });
    }
    let report = Report {
        title: format!("tinykd run {}", run.path.display()),
        facts,
        kd_curve: d.curve.clone(),
        baseline_curve: d.baseline_curve.clone(),
        confusion: crate::report::confusion_matrix(labels, &pred, model.class_count()),
        accuracies,
        footprint,
        sweep: d.sweep.as_ref().map(|s| (s.rows.clone(), s.best, s.baseline)),
    };
    crate::report::write(&run.out_dir, &report)?;
    Ok(())
}
