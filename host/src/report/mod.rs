//! The report of a `tinykd run`: `report.md` and a single-file
//! `report.html` (plots inlined) beside `report.json`, with PNG plots drawn
//! by plotters — learning curves (distilled and α = 0 on one chart), the
//! int8 student's confusion matrix on the test split, teacher / float /
//! int8 / device accuracy, and the firmware's footprint against the board.
//!
//! Every number comes from the run's own records and the int8 model's
//! outputs on the test split (the same computation as `tinykd eval`), so the
//! report cannot disagree with them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use base64::Engine as _;
use plotters::prelude::*;

use crate::distill::CurvePoint;

pub mod sweep;

/// Flash and RAM the firmware takes on a board, and what the board has.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub board: String,
    pub flash_used: u64,
    pub flash_total: u64,
    pub ram_used: u64,
    pub ram_total: u64,
    /// Measured on the board (emulated); otherwise estimated from the model
    /// and the board's firmware size (the `flash` fit check).
    pub measured: bool,
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct Report {
    pub title: String,
    /// Rows of the summary table: what, value.
    pub facts: Vec<(String, String)>,
    pub kd_curve: Vec<CurvePoint>,
    pub baseline_curve: Option<Vec<CurvePoint>>,
    /// `confusion[true class][predicted class]` of the int8 student on the test split.
    pub confusion: Vec<Vec<usize>>,
    /// Accuracy bars: label, accuracy in [0, 1].
    pub accuracies: Vec<(String, f64)>,
    /// One row per board.
    pub footprint: Vec<Footprint>,
    /// The T × α grid when the run swept: rows, selected row, baseline row.
    pub sweep: Option<(Vec<crate::distill::SweepRow>, usize, usize)>,
}

const CURVES: &str = "learning_curves.png";
const CONFUSION: &str = "confusion.png";
const ACCURACY: &str = "accuracy.png";
const FOOTPRINT: &str = "footprint.png";
const SWEEP: &str = "sweep.png";

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn plot_err(what: &str) -> impl FnOnce(Box<dyn std::error::Error>) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot draw {what}: {e}")
}

/// Writes the plots, `report.md` and `report.html` into `dir`; returns the files.
pub fn write(dir: &Path, r: &Report) -> Result<Vec<PathBuf>> {
    sweep::register_font();
    let mut files = Vec::new();
    let mut images = Vec::new();
    let tmp = tempfile::tempdir_in(dir)?;
    let mut plot = |name: &'static str, caption: &str, draw: &dyn Fn(&Path) -> DrawResult| -> Result<()> {
        // Drawn to a temporary file, then moved: no half-written PNG.
        let t = tmp.path().join(name);
        draw(&t).map_err(plot_err(name))?;
        let bytes = std::fs::read(&t)?;
        crate::util::write_atomic(&dir.join(name), &bytes)?;
        images.push((name, caption.to_owned(), bytes));
        files.push(dir.join(name));
        Ok(())
    };
    if !r.kd_curve.is_empty() {
        plot(CURVES, "Learning curves: distilled student and α = 0 baseline", &|p| curves(p, r))?;
    }
    if let Some((rows, best, _)) = &r.sweep {
        plot(SWEEP, "T × α sweep: test accuracy of the selected student", &|p| {
            sweep::plot(rows, *best, p).map_err(|e| -> Box<dyn std::error::Error> { e.into() })
        })?;
    }
    if !r.accuracies.is_empty() {
        plot(ACCURACY, "Test accuracy", &|p| accuracy_bars(p, &r.accuracies))?;
    }
    if !r.confusion.is_empty() {
        plot(CONFUSION, "Confusion matrix of the int8 student (test split)", &|p| confusion(p, &r.confusion))?;
    }
    if !r.footprint.is_empty() {
        plot(FOOTPRINT, "Firmware footprint per board (share of its flash and RAM)", &|p| footprint(p, &r.footprint))?;
    }
    let md = markdown(r, &images.iter().map(|(n, c, _)| (*n, c.as_str())).collect::<Vec<_>>());
    crate::util::write_atomic(&dir.join("report.md"), md.as_bytes())?;
    files.push(dir.join("report.md"));
    let html = html(r, &images);
    crate::util::write_atomic(&dir.join("report.html"), html.as_bytes())?;
    files.push(dir.join("report.html"));
    Ok(files)
}

fn markdown(r: &Report, images: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", r.title);
    let _ = writeln!(s, "| | |\n|---|---|");
    for (k, v) in &r.facts {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    for (file, caption) in images {
        let _ = writeln!(s, "\n## {caption}\n\n![{caption}]({file})");
    }
    if let Some((rows, best, baseline)) = &r.sweep {
        let _ = writeln!(s, "\n## The sweep\n\n{}", sweep::markdown(rows, *best, *baseline));
    }
    if !r.footprint.is_empty() {
        let _ = writeln!(s, "\n| board | flash (bytes) | RAM (bytes) | |\n|---|---:|---:|---|");
        for f in &r.footprint {
            let _ = writeln!(
                s,
                "| {} | {} of {} | {} of {} | {} |",
                f.board,
                f.flash_used,
                f.flash_total,
                f.ram_used,
                f.ram_total,
                if f.measured { "measured" } else { "estimated" }
            );
        }
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(r: &Report, images: &[(&str, String, Vec<u8>)]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:4px 10px}}\
         td:first-child{{color:#555}}img{{max-width:100%;border:1px solid #eee}}</style></head>\n<body>\n<h1>{t}</h1>\n<table>\n",
        t = escape(&r.title)
    );
    for (k, v) in &r.facts {
        let _ = writeln!(s, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
    }
    s.push_str("</table>\n");
    for (_, caption, bytes) in images {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = writeln!(s, "<h2>{c}</h2>\n<img alt=\"{c}\" src=\"data:image/png;base64,{b64}\">", c = escape(caption));
    }
    if let Some((rows, best, _)) = &r.sweep {
        s.push_str("<h2>The sweep</h2>\n<table>\n<tr><td>T</td><td>α</td><td>validation</td><td>test</td></tr>\n");
        for (i, row) in rows.iter().enumerate() {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{:.2} %</td><td>{:.2} %{}</td></tr>",
                row.temperature.map_or("–".into(), |t| t.to_string()),
                row.alpha,
                row.val_accuracy * 100.0,
                row.test_accuracy * 100.0,
                if i == *best { " (selected)" } else { "" }
            );
        }
        s.push_str("</table>\n");
    }
    if !r.footprint.is_empty() {
        s.push_str("<h2>Footprint per board</h2>\n<table>\n<tr><td>board</td><td>flash (bytes)</td><td>RAM (bytes)</td><td></td></tr>\n");
        for f in &r.footprint {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{} of {}</td><td>{} of {}</td><td>{}</td></tr>",
                escape(&f.board),
                f.flash_used,
                f.flash_total,
                f.ram_used,
                f.ram_total,
                if f.measured { "measured" } else { "estimated" }
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// Loss (left) and validation accuracy (right) against optimizer steps.
fn curves(path: &Path, r: &Report) -> DrawResult {
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let runs: Vec<(&str, &[CurvePoint], RGBColor)> = std::iter::once(("distilled", &r.kd_curve[..], BLUE))
        .chain(r.baseline_curve.as_deref().map(|c| ("α = 0", c, RED)))
        .collect();
    let max_step = runs.iter().flat_map(|(_, c, _)| c.iter().map(|p| p.step)).max().unwrap_or(1) as f64;
    let losses: Vec<f64> =
        runs.iter().flat_map(|(_, c, _)| c.iter().flat_map(|p| [Some(p.train_loss), p.val_loss]).flatten()).collect();
    let max_loss = losses.iter().cloned().fold(0.0, f64::max).max(1e-3) * 1.05;
    let mut chart = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_step, 0.0..max_loss)?;
    chart.configure_mesh().x_desc("optimizer steps").y_desc("loss").draw()?;
    for (name, c, color) in &runs {
        let train: Vec<(f64, f64)> = c.iter().map(|p| (p.step as f64, p.train_loss)).collect();
        chart
            .draw_series(LineSeries::new(train, color.mix(0.45).stroke_width(2)))?
            .label(format!("{name}, train"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.45)));
        let val: Vec<(f64, f64)> = c.iter().filter_map(|p| p.val_loss.map(|v| (p.step as f64, v))).collect();
        let color = *color;
        chart
            .draw_series(LineSeries::new(val, color.stroke_width(2)))?
            .label(format!("{name}, validation"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;

    let accs: Vec<f64> =
        runs.iter().flat_map(|(_, c, _)| c.iter().filter_map(|p| p.val_accuracy.map(|a| a * 100.0))).collect();
    let lo = accs.iter().cloned().fold(100.0, f64::min).floor().max(0.0);
    let mut chart = ChartBuilder::on(&right)
        .caption("validation accuracy", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_step, lo..100.0)?;
    chart.configure_mesh().x_desc("optimizer steps").y_desc("accuracy (%)").draw()?;
    for (name, c, color) in &runs {
        let pts: Vec<(f64, f64)> =
            c.iter().filter_map(|p| p.val_accuracy.map(|a| (p.step as f64, a * 100.0))).collect();
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn accuracy_bars(path: &Path, bars: &[(String, f64)]) -> DrawResult {
    let root = BitMapBackend::new(path, (800, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = bars.iter().map(|(_, a)| a * 100.0).fold(100.0, f64::min);
    let lo = ((lo - 5.0) / 5.0).floor().max(0.0) * 5.0;
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..n as f64, lo..100.0 + (100.0 - lo) * 0.1)?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc("test accuracy (%)").draw()?;
    for (i, (label, a)) in bars.iter().enumerate() {
        let color = Palette99::pick(i).mix(0.8);
        let x = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new([(x + 0.15, lo), (x + 0.85, a * 100.0)], color.filled())))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{:.2} %", a * 100.0),
            (x + 0.25, a * 100.0 + (100.0 - lo) * 0.07),
            ("sans-serif", 16),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (x + 0.2, lo + (100.0 - lo) * 0.06),
            ("sans-serif", 15),
        )))?;
    }
    root.present()?;
    Ok(())
}

fn confusion(path: &Path, m: &[Vec<usize>]) -> DrawResult {
    let c = m.len();
    let cell = (480 / c.max(1)).clamp(18, 60) as u32;
    let side = cell * c as u32;
    let root = BitMapBackend::new(path, (side + 110, side + 90)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..c as f64 - 0.5, c as f64 - 0.5..-0.5)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(c.min(20))
        .y_labels(c.min(20))
        .x_label_formatter(&|v: &f64| format!("{}", v.round() as i64))
        .y_label_formatter(&|v: &f64| format!("{}", v.round() as i64))
        .x_desc("predicted class")
        .y_desc("true class")
        .draw()?;
    for (t, row) in m.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        for (p, &n) in row.iter().enumerate() {
            let share = n as f64 / total;
            let shade = (255.0 * (1.0 - share)) as u8;
            let color = if t == p { RGBColor(shade, shade, 255) } else { RGBColor(255, shade, shade) };
            let (x, y) = (p as f64 - 0.5, t as f64 - 0.5);
            chart.draw_series(std::iter::once(Rectangle::new([(x, y), (x + 1.0, y + 1.0)], color.filled())))?;
            if n > 0 && cell >= 24 {
                // White on the dark cells, black on the light ones.
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let font = ("sans-serif", (cell / 3).max(10)).into_font().color(&ink);
                chart.draw_series(std::iter::once(Text::new(format!("{n}"), (x + 0.2, y + 0.35), font)))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

fn footprint(path: &Path, boards: &[Footprint]) -> DrawResult {
    let n = boards.len();
    let root = BitMapBackend::new(path, (900, 80 + 56 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..100.0, 0.0..n as f64)?;
    chart.configure_mesh().disable_y_mesh().y_labels(0).x_desc("% of the board's memory used").draw()?;
    for (i, f) in boards.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let flash = 100.0 * f.flash_used as f64 / f.flash_total.max(1) as f64;
        let ram = 100.0 * f.ram_used as f64 / f.ram_total.max(1) as f64;
        let bars = [(flash, y + 0.52, y + 0.8, BLUE.mix(0.7)), (ram, y + 0.2, y + 0.48, RED.mix(0.7))];
        for (share, lo, hi, color) in bars {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, lo), (share.clamp(0.3, 100.0), hi)],
                color.filled(),
            )))?;
        }
        let label = format!(
            "{}{}: flash {flash:.1} % ({} of {} B), RAM {ram:.1} % ({} of {} B)",
            f.board,
            if f.measured { " (measured)" } else { "" },
            f.flash_used,
            f.flash_total,
            f.ram_used,
            f.ram_total
        );
        let x = (flash.max(ram) + 1.0).min(40.0);
        chart.draw_series(std::iter::once(Text::new(label, (x, y + 0.62), ("sans-serif", 14))))?;
    }
    root.present()?;
    Ok(())
}

/// `confusion[true][pred]` from labels and predictions.
pub fn confusion_matrix(labels: &[i64], pred: &[usize], classes: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0usize; classes]; classes];
    for (&y, &p) in labels.iter().zip(pred) {
        if let (Ok(y), true) = (usize::try_from(y), p < classes)
            && let Some(row) = m.get_mut(y)
        {
            row[p] += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn confusion_counts_each_pair() {
        let m = confusion_matrix(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 0, 2], 3);
        assert_eq!(m, vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 2]]);
    }

    #[test]
    fn report_files_are_written_with_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let pt =
            |step, a| CurvePoint { step, train_loss: 1.0 / step as f64, val_loss: Some(0.5), val_accuracy: Some(a) };
        let r = Report {
            title: "test <run>".into(),
            facts: vec![("int8 test accuracy".into(), "91.50 %".into())],
            kd_curve: vec![pt(10, 0.5), pt(20, 0.8)],
            baseline_curve: Some(vec![pt(10, 0.4), pt(20, 0.7)]),
            confusion: confusion_matrix(&[0, 1, 1], &[0, 1, 0], 2),
            accuracies: vec![("float".into(), 0.93), ("int8".into(), 0.915)],
            footprint: vec![Footprint {
                board: "b".into(),
                flash_used: 10,
                flash_total: 100,
                ram_used: 5,
                ram_total: 50,
                measured: true,
            }],
            sweep: None,
        };
        let files = write(dir.path(), &r).unwrap();
        assert_eq!(files.len(), 6);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            if f.extension().is_some_and(|e| e == "png") {
                assert_eq!(&bytes[1..4], b"PNG", "{}", f.display());
            }
        }
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| int8 test accuracy | 91.50 % |") && md.contains("![Test accuracy](accuracy.png)"));
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("test &lt;run&gt;") && html.matches("data:image/png;base64,").count() == 4);
        // Nothing but the report is left behind.
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            ["accuracy.png", "confusion.png", "footprint.png", "learning_curves.png", "report.html", "report.md"]
        );
    }
}
