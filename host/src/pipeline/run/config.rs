//! The run config: `tinykd run CONFIG.toml` runs the whole pipeline from one file.
//!
//! ```toml
//! data = "../data/mnist1d.npz"             # relative to this file
//! teachers = ["../teachers/mnist1d_cnn.onnx"]
//! backend = "tract"                         # auto | ort | tract
//! student = "dense(64) relu dense(32) relu dense(10)"
//!
//! [distill]                                 # every key optional
//! temperature = 4.0
//! alpha = 0.9
//! epochs = 60
//!
//! [emulate]                                 # optional
//! board = "qemu-mps2-an385"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::distill::DistillOptions;
use crate::distill::{LossKind, Optimizer, Schedule};
use crate::quant::{Calibration, Rounding, WeightScales};
use crate::teacher::BackendChoice;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data: PathBuf,
    #[serde(default)]
    pub teachers: Vec<PathBuf>,
    /// Teacher scores computed elsewhere (`--teacher-logits`), instead of `teachers`.
    pub teacher_logits: Option<PathBuf>,
    #[serde(default)]
    pub backend: BackendChoice,
    pub teacher_output: Option<String>,
    pub teacher_output_kind: Option<crate::teacher::OutputKind>,
    /// A spec string, or the TOML form: an array of layer tables.
    pub student: StudentField,
    /// Output directory; default `out/<config name>` under the current directory.
    pub out_dir: Option<PathBuf>,
    /// How the data file stores a sample's axes.
    #[serde(default)]
    pub layout: crate::data::Layout,
    #[serde(default)]
    pub distill: DistillSection,
    #[serde(default)]
    pub quantize: QuantizeSection,
    pub emulate: Option<EmulateSection>,
    pub export: Option<ExportSection>,
    pub sweep: Option<SweepSection>,
    pub device: Option<DeviceSection>,
}

/// `[device]`: a real board on a serial port — flash it (probe-rs) unless
/// `flash = false`, then stream the test split to it. Never skipped: the
/// board's state is not an input tinykd can hash.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    pub board: String,
    pub port: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default = "default_true")]
    pub flash: bool,
    pub limit: Option<usize>,
}

fn default_baud() -> u32 {
    115_200
}

fn default_true() -> bool {
    true
}

/// `[sweep]`: distil over a grid and keep the best validation row (α = 0
/// is always in the grid: its row is the baseline).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    pub temperatures: Vec<f32>,
    pub alphas: Vec<f32>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// `[export] formats = ["tflite", "onnx", …]`: the student in other formats.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    pub formats: Vec<crate::export::Format>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StudentField {
    Spec(String),
    Layers(Vec<crate::student::LayerSpec>),
}

impl StudentField {
    pub fn spec(&self) -> Result<String> {
        match self {
            StudentField::Spec(s) => Ok(s.clone()),
            StudentField::Layers(l) => crate::student::spec::from_layers(l),
        }
    }
}

/// Every key optional: unset keys keep `tinykd distill`'s defaults.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSection {
    pub temperature: Option<f32>,
    pub alpha: Option<f32>,
    pub loss: Option<LossKind>,
    pub epochs: Option<usize>,
    pub steps: Option<usize>,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f32>,
    pub weight_decay: Option<f32>,
    pub seed: Option<u64>,
    pub val_fraction: Option<f32>,
    pub input_scale: Option<f32>,
    pub baseline: Option<bool>,
    pub optimizer: Option<Optimizer>,
    pub schedule: Option<Schedule>,
    pub warmup_epochs: Option<usize>,
    pub patience: Option<usize>,
    pub shift: Option<usize>,
    pub noise: Option<f32>,
    pub views: Option<usize>,
    pub mixup: Option<f32>,
    pub mixup_share: Option<f32>,
    pub labelled_fraction: Option<f32>,
    pub use_unlabeled: Option<bool>,
}

impl DistillSection {
    pub fn apply(&self, o: &mut DistillOptions) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { o.$f = v; } )* };
        }
        set!(
            temperature,
            alpha,
            loss,
            batch_size,
            learning_rate,
            weight_decay,
            seed,
            val_fraction,
            input_scale,
            baseline,
            optimizer,
            schedule,
            warmup_epochs,
            patience,
            labelled_fraction,
            use_unlabeled
        );
        if self.epochs.is_some() || self.steps.is_some() {
            (o.epochs, o.steps) = (self.epochs, self.steps);
        }
        if let Some(v) = self.shift {
            o.augment.shift = v;
        }
        if let Some(v) = self.noise {
            o.augment.noise = v;
        }
        if let Some(v) = self.views {
            o.augment.views = v;
        }
        if let Some(v) = self.mixup {
            o.augment.mixup = v;
        }
        if let Some(v) = self.mixup_share {
            o.augment.mixup_share = v;
        }
    }
}

#[derive(Debug, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantizeSection {
    pub calibration: Calibration,
    pub calibration_samples: Option<usize>,
    /// Quantization-aware training steps (0: post-training quantization only).
    pub qat_steps: usize,
    pub qat_learning_rate: Option<f32>,
    pub weight_scales: WeightScales,
    pub rounding: Rounding,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmulateSection {
    pub board: String,
    pub limit: Option<usize>,
}

impl Config {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))
    }
}

/// `p` relative to the config file's directory `base`, unless absolute.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}
