//! What a trained student is saved with: the options it was distilled
//! with ([`DistillOptions`]) and a typed [`TrainingRecord`] of how training
//! went, in a [`Checkpoint`] beside the float weights.
//!
//! Quantization-aware training reads the recorded options back to distil
//! again with the same teacher, temperature and α; everything else in the
//! record is for the user. Reading is lenient where the file may be older
//! or newer than this tinykd: unknown keys are passed over, and options
//! that no longer parse are treated as not recorded (QAT then fine-tunes on
//! the labels and says so) rather than refusing the weights.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer};

use crate::data::Layout;
use crate::distill::{Augment, LossKind, Optimizer, Schedule, TrainReport};
use crate::student::Student;
use crate::teacher::{BackendChoice, OutputKind};

/// Everything `distill` needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct DistillOptions {
    pub teachers: Vec<PathBuf>,
    /// Teacher scores computed elsewhere (see `teacher::logits_file`), instead of `teachers`.
    #[serde(default)]
    pub teacher_logits: Option<PathBuf>,
    pub data: PathBuf,
    pub student: String,
    pub temperature: f32,
    pub alpha: f32,
    pub loss: LossKind,
    /// Training length in epochs of the reference set (see `pipeline::distill::StepBudget`).
    pub epochs: Option<usize>,
    /// Training length in optimizer steps; wins over `epochs`.
    #[serde(default)]
    pub steps: Option<usize>,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub seed: u64,
    pub val_fraction: f32,
    pub backend: BackendChoice,
    pub teacher_output: Option<String>,
    /// Forces what the teacher output holds (`None`: detected).
    pub teacher_output_kind: Option<OutputKind>,
    pub input_scale: f32,
    /// Also train the same student on hard labels only (α = 0) for comparison.
    pub baseline: bool,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub warmup_epochs: usize,
    pub patience: usize,
    pub augment: Augment,
    /// Share of the training labels kept; the rest of the train split becomes
    /// unlabeled transfer data (label-scarce experiments).
    pub labelled_fraction: f32,
    /// Train on `x_unlabeled` too (soft term only) when the data has it.
    pub use_unlabeled: bool,
    /// Teacher-logit cache directory (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// How the data file lays out a sample's axes.
    #[serde(default)]
    pub layout: Layout,
}

impl DistillOptions {
    /// Defaults for everything but the inputs.
    pub fn new(teachers: Vec<PathBuf>, data: PathBuf, student: &str) -> DistillOptions {
        DistillOptions {
            teachers,
            teacher_logits: None,
            data,
            student: student.into(),
            temperature: 4.0,
            alpha: 0.9,
            loss: LossKind::Kl,
            epochs: None,
            steps: None,
            batch_size: 64,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            seed: 0,
            val_fraction: 0.1,
            backend: BackendChoice::Auto,
            teacher_output: None,
            teacher_output_kind: None,
            input_scale: 1.0 / 255.0,
            baseline: true,
            optimizer: Optimizer::Adamw,
            schedule: Schedule::Cosine,
            warmup_epochs: 0,
            patience: 0,
            augment: Augment::default(),
            labelled_fraction: 1.0,
            use_unlabeled: true,
            cache_dir: Some(crate::teacher::cache::default_dir()),
            layout: Layout::ChannelsFirst,
        }
    }
}

impl DistillOptions {
    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.teachers.is_empty() && self.teacher_logits.is_none() && self.alpha > 0.0 {
            bail!("--teacher (or --teacher-logits) is required unless --alpha 0");
        }
        if !self.teachers.is_empty() && self.teacher_logits.is_some() {
            bail!("give --teacher or --teacher-logits, not both");
        }
        if self.teacher_logits.is_some() && self.augment.is_active() {
            bail!(
                "--teacher-logits scores the stored samples only: augmentation (--views, --shift, --noise, --mixup) needs a teacher model to label its new views"
            );
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            bail!("--alpha must be in [0, 1], got {}", self.alpha);
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!("--temperature must be positive, got {}", self.temperature);
        }
        if self.epochs == Some(0) || self.steps == Some(0) || self.batch_size == 0 {
            bail!("--epochs, --steps and --batch-size must be at least 1");
        }
        if self.epochs.is_some() && self.steps.is_some() {
            bail!("give the training length as epochs or as steps, not both");
        }
        if !(0.0..0.9).contains(&self.val_fraction) {
            bail!("--val-fraction must be in [0, 0.9), got {}", self.val_fraction);
        }
        if self.learning_rate <= 0.0 || !self.learning_rate.is_finite() {
            bail!("--lr must be positive");
        }
        if !(self.labelled_fraction > 0.0 && self.labelled_fraction <= 1.0) {
            bail!("--labelled-fraction must be in (0, 1], got {}", self.labelled_fraction);
        }
        self.augment.validate()
    }
}

/// One grid point, averaged over seeds. Selection uses the mean validation
/// accuracy over the seeds, which is steadier than any one seed's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
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

/// How a saved student was trained. Every field is optional: a baseline
/// records its α and data layout only, a distilled student its options and
/// metrics, a sweep's choice its grid rows too.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct TrainingRecord {
    /// The options the student was distilled with (for a sweep: with the
    /// selected student, T and α).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub options: Option<DistillOptions>,
    /// The α it was trained with, when no options are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// The layout of its data, when no options are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// How distillation went.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DistillMetrics>,
    /// The sweep's selected row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepRow>,
    /// The sweep's α = 0 row of the selected student (its baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<SweepRow>,
}

impl TrainingRecord {
    /// A record of the options alone.
    pub fn options(options: DistillOptions) -> TrainingRecord {
        TrainingRecord { options: Some(options), ..Default::default() }
    }

    /// The layout of the data the student was trained on, when recorded.
    pub fn data_layout(&self) -> Option<Layout> {
        self.options.as_ref().map(|o| o.layout).or(self.layout)
    }
}

/// What `distill` measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct DistillMetrics {
    pub teacher_backends: Vec<String>,
    pub teacher_output_kinds: Vec<OutputKind>,
    pub teacher_test_accuracy: Option<f64>,
    pub report: TrainReport,
    pub test_accuracy: f64,
    pub teacher_agreement: Option<f64>,
    pub baseline_test_accuracy: Option<f64>,
    pub parameters: usize,
}

/// `Some` when the value parses, `None` when it is absent or does not
/// (options written by another tinykd version).
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// A saved float student plus how it was trained.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub version: u32,
    pub student: Student,
    #[serde(serialize_with = "as_json_value")]
    pub training: TrainingRecord,
}

/// The record as a JSON value first, as checkpoints have always been
/// written: keys sorted, f32 options widened to f64 (`0.4` is written
/// `0.4000000059604645`, the f32's exact value), so files from before the
/// record was typed and after it compare equal.
fn as_json_value<S: serde::Serializer>(t: &TrainingRecord, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize as _;
    serde_json::to_value(t).map_err(serde::ser::Error::custom)?.serialize(s)
}

const CHECKPOINT_FORMAT: &str = "tinykd-student";
const CHECKPOINT_VERSION: u32 = 1;

impl Checkpoint {
    pub fn new(student: Student, training: TrainingRecord) -> Checkpoint {
        Checkpoint { format: CHECKPOINT_FORMAT.into(), version: CHECKPOINT_VERSION, student, training }
    }

    /// Reads a checkpoint written by `save`.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
        let ck: Checkpoint = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a tinykd student checkpoint", path.display()))?;
        if ck.format != CHECKPOINT_FORMAT {
            bail!("{}: not a tinykd student checkpoint (format '{}')", path.display(), ck.format);
        }
        if ck.version > CHECKPOINT_VERSION {
            bail!(
                "{}: checkpoint version {} is newer than this tinykd reads ({CHECKPOINT_VERSION})",
                path.display(),
                ck.version
            );
        }
        Ok(ck)
    }

    /// The layout of the data the student was trained on, when recorded.
    pub fn layout(&self) -> Option<Layout> {
        self.training.data_layout()
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)?;
        crate::util::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn checkpoints_of_every_layer_kind_load_back() {
        let dir = tempfile::tempdir().unwrap();
        for (spec, shape) in [
            (
                "conv1d(4,k3,s2) bn relu maxpool(2) dwconv1d(k3) relu6 avgpool(2,s1) dropout(0.1) flatten dense(3)",
                vec![2, 20],
            ),
            ("conv2d(4,k3) relu maxpool(2) dwconv2d(k3) bn relu gap dense(3)", vec![1, 8, 8]),
        ] {
            let s = Student::from_spec(spec, &shape, 3, &mut rng()).unwrap();
            let path = dir.path().join("s.ckpt");
            let mut options = DistillOptions::new(vec!["t.onnx".into()], "d.npz".into(), spec);
            options.layout = Layout::ChannelsLast;
            let training = TrainingRecord::options(options);
            Checkpoint::new(s.clone(), training.clone()).save(&path).unwrap();
            let back = Checkpoint::load(&path).unwrap_or_else(|e| panic!("{spec}: {e:#}"));
            assert_eq!(back.student, s, "{spec}");
            assert_eq!(back.training, training, "{spec}");
            assert_eq!(back.layout(), Some(Layout::ChannelsLast));
        }
    }

    fn load_json(text: &str) -> Result<Checkpoint> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ckpt");
        std::fs::write(&path, text).unwrap();
        Checkpoint::load(&path)
    }

    fn student_json() -> String {
        let s = Student::from_spec("dense(3)", &[4], 3, &mut rng()).unwrap();
        serde_json::to_string(&s).unwrap()
    }

    #[test]
    fn a_baselines_record_gives_its_layout() {
        let text = format!(
            r#"{{"format":"tinykd-student","version":1,"student":{},"training":{{"alpha":0.0,"layout":"channels-last"}}}}"#,
            student_json()
        );
        let ck = load_json(&text).unwrap();
        assert_eq!(ck.training.alpha, Some(0.0));
        assert_eq!(ck.layout(), Some(Layout::ChannelsLast));
        assert!(ck.training.options.is_none() && ck.training.outcome.is_none());
    }

    #[test]
    fn options_another_version_wrote_are_passed_over_not_refused() {
        // Options missing required fields and an unknown key: the weights
        // still load; the options count as not recorded.
        let text = format!(
            r#"{{"format":"tinykd-student","version":1,"student":{},"training":{{"options":{{"alpha":"high"}},"note":"x"}}}}"#,
            student_json()
        );
        let ck = load_json(&text).unwrap();
        assert!(ck.training.options.is_none());
        assert_eq!(ck.layout(), None);
    }

    #[test]
    fn a_distilled_and_swept_record_loads_back_whole() {
        let options = DistillOptions::new(vec!["t.onnx".into()], "d.npz".into(), "dense(3)");
        let report = TrainReport {
            steps: 10,
            step_budget: 10,
            rows: 64,
            passes: 10.0,
            best_step: 8,
            best_val_accuracy: Some(0.5),
            final_train_loss: 0.25,
            curve: vec![],
        };
        let row = SweepRow {
            student: "dense(3)".into(),
            parameters: 15,
            temperature: Some(4.0),
            alpha: 0.9,
            val_accuracy: 0.5,
            test_accuracy: 0.5,
            test_accuracy_std: 0.0,
            test_accuracies: vec![0.5],
            steps: vec![10],
        };
        let record = TrainingRecord {
            outcome: Some(DistillMetrics {
                teacher_backends: vec!["tract".into()],
                teacher_output_kinds: vec![],
                teacher_test_accuracy: Some(0.75),
                report,
                test_accuracy: 0.5,
                teacher_agreement: None,
                baseline_test_accuracy: Some(0.25),
                parameters: 15,
            }),
            sweep: Some(row.clone()),
            baseline: Some(SweepRow { alpha: 0.0, temperature: None, ..row }),
            ..TrainingRecord::options(options)
        };
        let text = serde_json::to_string(&record).unwrap();
        // The metrics sit beside the options, as `distill` has always written them.
        let flat: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(flat["test_accuracy"], 0.5);
        let back: TrainingRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn a_newer_version_or_another_format_is_refused() {
        let newer =
            format!(r#"{{"format":"tinykd-student","version":99,"student":{},"training":{{}}}}"#, student_json());
        let e = format!("{:#}", load_json(&newer).unwrap_err());
        assert!(e.contains("newer than this tinykd"), "{e}");
        let other = format!(r#"{{"format":"other","version":1,"student":{},"training":{{}}}}"#, student_json());
        let e = format!("{:#}", load_json(&other).unwrap_err());
        assert!(e.contains("format 'other'"), "{e}");
    }
}
