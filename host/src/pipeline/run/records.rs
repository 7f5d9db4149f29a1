//! What each stage of a run records in `stages.json` (so a skipped stage
//! still reports), and the run's summary (`report.json`).

use std::path::PathBuf;

use crate::device::EmulationReport;
use crate::distill::CurvePoint;
use crate::distill::{DistillOptions, SweepRow};
use crate::quant::qat::QatReport;

/// What the distill stage reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DistillRecord {
    pub teacher_test_accuracy: Option<f64>,
    pub teacher_backends: Vec<String>,
    pub parameters: usize,
    pub float_test_accuracy: f64,
    pub steps: usize,
    /// The α = 0 baseline's float test accuracy and steps.
    pub baseline: Option<(f64, usize)>,
    pub curve: Vec<CurvePoint>,
    pub baseline_curve: Option<Vec<CurvePoint>>,
    /// The grid, when the run swept.
    pub sweep: Option<SweepRecord>,
}

impl DistillRecord {
    /// The distilled student's T and α: the sweep's selection, else the config's.
    pub fn temperature_alpha(&self, opts: &DistillOptions) -> (String, f32) {
        match &self.sweep {
            Some(s) => (s.temperature.map_or("–".into(), |t| t.to_string()), s.alpha),
            None => (opts.temperature.to_string(), opts.alpha),
        }
    }
}

/// A sweep's grid and selection.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SweepRecord {
    pub rows: Vec<SweepRow>,
    pub best: usize,
    pub baseline: usize,
    /// The selected T (none for α = 0) and α.
    pub temperature: Option<f32>,
    pub alpha: f32,
}

/// What the quantize stage reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QuantizeRecord {
    pub int8_test_accuracy: f64,
    pub ptq_int8_test_accuracy: Option<f64>,
    pub qat: Option<QatReport>,
    pub int8_float_agreement: f64,
    pub tkd_bytes: usize,
    /// The baseline's int8 (shipped) and post-training test accuracies.
    pub baseline: Option<(f64, Option<f64>)>,
}

/// One exported file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportRecord {
    pub format: String,
    pub file: PathBuf,
    pub bytes: u64,
}

/// Everything a run measured, as `report.json` holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub config: PathBuf,
    pub teacher_test_accuracy: Option<f64>,
    /// Backends that ran the teachers (empty when their logits came from the cache).
    pub teacher_backends: Vec<String>,
    pub student: String,
    pub parameters: usize,
    /// `None` when the sweep selected α = 0.
    pub temperature: Option<f32>,
    pub alpha: f32,
    /// Whether the sweep selected T and α.
    pub sweep: Option<SweepRecord>,
    pub steps: usize,
    pub baseline_steps: Option<usize>,
    pub float_test_accuracy: f64,
    pub int8_test_accuracy: f64,
    pub ptq_int8_test_accuracy: Option<f64>,
    pub qat: Option<QatReport>,
    pub int8_float_agreement: f64,
    pub baseline_float_test_accuracy: Option<f64>,
    pub baseline_int8_test_accuracy: Option<f64>,
    pub baseline_ptq_int8_test_accuracy: Option<f64>,
    pub tkd_bytes: usize,
    pub emulation: Option<EmulationReport>,
    pub device: Option<EmulationReport>,
    pub exports: Vec<ExportRecord>,
    pub seconds: f64,
    pub out_dir: PathBuf,
}
