//! `tinykd run CONFIG.toml`: runs the config (`pipeline::run`) and prints
//! its summary.

use std::path::Path;

use anyhow::Result;

use crate::pipeline::run::RunSummary;
use crate::progress::Progress;

fn pct(v: f64) -> String {
    format!("{:6.2}%", v * 100.0)
}

/// Runs a config file end to end and prints the accuracy summary.
pub fn run_config(path: &Path, as_json: bool, progress: &Progress) -> Result<()> {
    let s = crate::pipeline::run::run(path, progress)?;
    if as_json {
        outln!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    outln!("tinykd run {} ({:.1} s)", path.display(), s.seconds);
    let t = s.temperature.map_or("–".into(), |t| t.to_string());
    let selected = if s.sweep.is_some() { " (selected by the sweep)" } else { "" };
    outln!("  student {} ({} parameters), T = {t}, α = {}{selected}", s.student, s.parameters, s.alpha);
    if let Some(t) = s.teacher_test_accuracy {
        let from = if s.teacher_backends.is_empty() {
            "logits from the cache".to_string()
        } else {
            s.teacher_backends.join(", ")
        };
        outln!("  teacher                          test accuracy {}  ({from})", pct(t));
    }
    outln!(
        "  distilled student, float         test accuracy {}  ({} optimizer steps)",
        pct(s.float_test_accuracy),
        s.steps
    );
    print_int8(&s);
    print_boards(&s);
    for x in &s.exports {
        outln!("  exported {:<8} {} ({} bytes)", x.format, x.file.display(), x.bytes);
    }
    outln!("  artefacts in {}", s.out_dir.display());
    Ok(())
}

/// The int8 student's lines and the α = 0 baseline's.
fn print_int8(s: &RunSummary) {
    match (s.ptq_int8_test_accuracy, s.qat.as_ref().map(|q| q.steps)) {
        (Some(ptq), Some(steps)) => {
            outln!("  distilled student, int8 PTQ      test accuracy {}", pct(ptq));
            outln!(
                "  distilled student, int8 QAT      test accuracy {}  ({} bytes; {steps} QAT steps)",
                pct(s.int8_test_accuracy),
                s.tkd_bytes
            );
        }
        _ => outln!(
            "  distilled student, int8 (.tkd)   test accuracy {}  ({} bytes)",
            pct(s.int8_test_accuracy),
            s.tkd_bytes
        ),
    }
    if let (Some(bf), Some(bsteps), Some(bi)) =
        (s.baseline_float_test_accuracy, s.baseline_steps, s.baseline_int8_test_accuracy)
    {
        outln!("  baseline (α = 0), float          test accuracy {}  ({bsteps} optimizer steps)", pct(bf));
        match s.baseline_ptq_int8_test_accuracy {
            Some(ptq) => {
                outln!("  baseline (α = 0), int8 PTQ       test accuracy {}", pct(ptq));
                outln!("  baseline (α = 0), int8 QAT       test accuracy {}", pct(bi));
            }
            None => outln!("  baseline (α = 0), int8           test accuracy {}", pct(bi)),
        }
    }
}

/// The emulated board's and the real board's lines.
fn print_boards(s: &RunSummary) {
    for e in s.emulation.iter().chain(&s.device) {
        if let Some(acc) = e.accuracy {
            outln!("  on {:<28} test accuracy {}  agreement {}", e.board, pct(acc), pct(e.agreement));
        }
        outln!(
            "    {:.0} instructions/inference, flash {} B, RAM {} B",
            e.instructions_per_inference,
            e.flash_bytes,
            e.ram_bytes
        );
    }
}
