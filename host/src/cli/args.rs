//! The commands' arguments (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::Args;

use crate::data::{Layout, ReadOptions, SplitName};
use crate::distill::DistillOptions;
use crate::distill::{Augment, LossKind, Optimizer, Schedule};
use crate::quant::{Calibration, Rounding, WeightScales};
use crate::teacher::{BackendChoice, OutputKind};

/// Options shared by everything that runs a teacher.
#[derive(Debug, Clone, Args)]
pub struct TeacherArgs {
    /// ONNX teacher; repeat for an ensemble (mean of tempered probabilities).
    #[arg(long = "teacher", value_name = "T.onnx")]
    pub teachers: Vec<PathBuf>,
    /// ONNX runtime for the teacher.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Name of the teacher output holding class scores (default: the float [N, C] output
    /// whose width is the class count, preferring names with "logit", then "prob").
    #[arg(long, value_name = "NAME")]
    pub teacher_output: Option<String>,
    /// What the teacher output holds (default: detected; rows in [0, 1] summing to 1 are probabilities).
    #[arg(long, value_enum)]
    pub teacher_output_kind: Option<OutputKind>,
}

#[derive(Debug, Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub teacher: TeacherArgs,
    /// Teacher scores computed elsewhere instead of --teacher: an .npz with
    /// `train` [N_train, C], `test` [N_test, C] (and `unlabeled`), one row per
    /// stored sample in the data's order; logits or probabilities.
    #[arg(long, value_name = "T.npz")]
    pub teacher_logits: Option<PathBuf>,
    /// Dataset (.npz with x_train, y_train, x_test, y_test).
    #[arg(long, value_name = "D.npz")]
    pub data: PathBuf,
    /// Student spec, e.g. "dense(64) relu dense(10)".
    #[arg(long, value_name = "SPEC")]
    pub student: String,
    /// Softmax temperature of the soft targets.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f32,
    /// Weight of the soft (teacher) term; 1 − α weighs the hard labels. 0 = no teacher.
    #[arg(long, default_value_t = 0.9)]
    pub alpha: f32,
    /// Soft-term loss: KL on softened distributions (×T²) or MSE on logits.
    #[arg(long, value_enum, default_value_t = LossKind::Kl)]
    pub loss: LossKind,
    /// Training length in epochs of the reference set: every training row of the distilled
    /// run (labelled and unlabeled). The α = 0 baseline and every sweep cell take the same
    /// number of optimizer steps, however few rows they train on. [default: 60 epochs, at
    /// least 4,000 and at most 40,000 steps]
    #[arg(long, value_name = "E")]
    pub epochs: Option<usize>,
    /// Training length in optimizer steps (batches) for every run of the comparison;
    /// overrides --epochs.
    #[arg(long, value_name = "N", conflicts_with = "epochs")]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Adam learning rate (cosine-decayed to 0).
    #[arg(long = "lr", default_value_t = 3e-3)]
    pub learning_rate: f32,
    /// Decoupled (AdamW) weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of train held out for model selection when the data has no x_val.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    /// Scale applied to uint8 inputs.
    #[arg(long, default_value_t = 1.0 / 255.0)]
    pub input_scale: f32,
    /// How a sample's axes are stored: channels-first ([C, L], [C, H, W], as PyTorch) or
    /// channels-last ([T, C], [H, W, C], as Keras and most sensor logs). The student's convs
    /// slide along time and --shift shifts along time in both; the teacher gets the file's layout.
    #[arg(long, value_enum, default_value_t = Layout::ChannelsFirst)]
    pub layout: Layout,
    /// Skip training the α = 0 baseline shown next to the distilled student.
    #[arg(long)]
    pub no_baseline: bool,
    #[arg(long, value_enum, default_value_t = Optimizer::Adamw)]
    pub optimizer: Optimizer,
    #[arg(long, value_enum, default_value_t = Schedule::Cosine)]
    pub schedule: Schedule,
    /// Linear learning-rate warm-up, in epochs of the reference set.
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Early stopping: validation checks without a better accuracy (0 = off). A check runs
    /// every reference epoch, or every 1/200 of the step budget when that is longer.
    #[arg(long, default_value_t = 0)]
    pub patience: usize,
    /// Augmentation: largest random shift along the last axis (zero-filled).
    #[arg(long, default_value_t = 0)]
    pub shift: usize,
    /// Augmentation: standard deviation of Gaussian noise.
    #[arg(long, default_value_t = 0.0)]
    pub noise: f32,
    /// Augmented views per sample (each labelled by the teacher once, cached).
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Augmentation: mixup with weight λ ~ Beta(a, a) (folded to λ ≥ ½), a = this value; 0 = off.
    /// Mixed views are teacher-labelled like the others; their hard label is the same mix.
    #[arg(long, default_value_t = 0.0, value_name = "A")]
    pub mixup: f32,
    /// Share of the augmented views that are mixed (with --mixup).
    #[arg(long, default_value_t = 0.5)]
    pub mixup_share: f32,
    /// Keep the labels of only this share of train (stratified); the rest is unlabeled transfer data.
    #[arg(long, default_value_t = 1.0)]
    pub labelled_fraction: f32,
    /// Ignore x_unlabeled even when the data has it.
    #[arg(long)]
    pub no_unlabeled: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Where to write the float student checkpoint (sweep: the output directory).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Print one JSON object (accuracies, step counts) instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Teacher-logit cache options.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Teacher-logit cache directory [default: $TINYKD_CACHE_DIR or ~/.cache/tinykd].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Do not read or write the teacher-logit cache.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
}

impl CacheArgs {
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache { None } else { Some(self.cache.clone().unwrap_or_else(crate::teacher::cache::default_dir)) }
    }
}

impl DistillArgs {
    /// The pipeline options these flags describe.
    pub fn to_options(&self) -> DistillOptions {
        DistillOptions {
            teachers: self.teacher.teachers.clone(),
            teacher_logits: self.teacher_logits.clone(),
            data: self.data.clone(),
            student: self.student.clone(),
            temperature: self.temperature,
            alpha: self.alpha,
            loss: self.loss,
            epochs: self.epochs,
            steps: self.steps,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            seed: self.seed,
            val_fraction: self.val_fraction,
            backend: self.teacher.backend,
            teacher_output: self.teacher.teacher_output.clone(),
            teacher_output_kind: self.teacher.teacher_output_kind,
            input_scale: self.input_scale,
            baseline: !self.no_baseline,
            optimizer: self.optimizer,
            schedule: self.schedule,
            warmup_epochs: self.warmup_epochs,
            patience: self.patience,
            augment: Augment {
                shift: self.shift,
                noise: self.noise,
                views: self.views,
                mixup: self.mixup,
                mixup_share: self.mixup_share,
            },
            labelled_fraction: self.labelled_fraction,
            use_unlabeled: !self.no_unlabeled,
            cache_dir: self.cache.dir(),
            layout: self.layout,
        }
    }
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub distill: DistillArgs,
    /// Temperatures to try.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub temperatures: Vec<f32>,
    /// Soft-term weights to try (0 is always added).
    #[arg(long, value_delimiter = ',', default_value = "0,0.5,0.9,1")]
    pub alphas: Vec<f32>,
    /// Several student specs separated by ';' (default: --student).
    #[arg(long)]
    pub students: Option<String>,
    /// Seeds; each grid point reports the mean and spread over them.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
}

#[derive(Debug, Args)]
pub struct TeachArgs {
    #[command(flatten)]
    pub teacher: TeacherArgs,
    #[arg(long, value_name = "D.npz")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 1.0 / 255.0)]
    pub input_scale: f32,
    /// How a sample's axes are stored (see distill --help).
    #[arg(long, value_enum, default_value_t = Layout::ChannelsFirst)]
    pub layout: Layout,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// How commands that take a trained model read the data.
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Scale applied to uint8 inputs.
    #[arg(long, default_value_t = 1.0 / 255.0)]
    pub input_scale: f32,
    /// How a sample's axes are stored [default: the layout the model was trained on,
    /// else channels-first].
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
}

impl ReadArgs {
    pub fn options(&self) -> ReadOptions {
        ReadOptions { input_scale: self.input_scale, layout: self.layout }
    }
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Float student checkpoint from `tinykd distill`.
    #[arg(long, value_name = "student.ckpt")]
    pub student: PathBuf,
    /// Dataset: train is the calibration set, test measures accuracy.
    #[arg(long, value_name = "D.npz")]
    pub data: PathBuf,
    /// How activation ranges are chosen on the calibration samples.
    #[arg(long, value_enum, default_value_t = Calibration::Auto)]
    pub calibration: Calibration,
    /// Calibrate on this many train samples, evenly spaced (default: all).
    #[arg(long, value_name = "N")]
    pub calibration_samples: Option<usize>,
    /// Then fine-tune quantization-aware for N steps with the distillation
    /// that trained the checkpoint (its teacher, T, α, augmentation; teacher
    /// logits from the cache); keeps the best int8 validation accuracy.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub qat_steps: usize,
    /// QAT learning rate (default: a third of the distillation's).
    #[arg(long, value_name = "LR")]
    pub qat_learning_rate: Option<f32>,
    /// One weight scale per output channel, or one per layer (for runtimes
    /// that take nothing else).
    #[arg(long, value_enum, default_value_t = WeightScales::PerChannel)]
    pub weight_scales: WeightScales,
    /// How requantization rounds: `tflm` twice, as TFLite Micro and CMSIS-NN
    /// (bit-exact with the TFLite export on a microcontroller), or `single`
    /// once, as desktop TFLite's optimised kernels and onnxruntime (the QDQ
    /// export then agrees with the device).
    #[arg(long, value_enum, default_value_t = Rounding::Tflm)]
    pub rounding: Rounding,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Where to write the int8 model.
    #[arg(long, value_name = "student.tkd")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// .onnx teacher, .ckpt float student or .tkd int8 student.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_name = "D.npz")]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    pub split: SplitName,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    #[arg(long, value_name = "NAME")]
    pub teacher_output: Option<String>,
    /// What the teacher output holds (default: detected).
    #[arg(long, value_enum)]
    pub teacher_output_kind: Option<OutputKind>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// Write predictions (pred) and logits to an .npz.
    #[arg(long, value_name = "OUT.npz")]
    pub save_outputs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EmulateArgs {
    #[command(flatten)]
    pub run: DeviceRunArgs,
    /// Emulated board.
    #[arg(long, default_value = "qemu-mps2-an385")]
    pub board: String,
    #[command(flatten)]
    pub build: BuildArgs,
    #[arg(long)]
    pub json: bool,
}

/// How a board's firmware is built (`emulate` and `flash`).
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// How the firmware runs the model [default: TINYKD_ENGINE, else specialized].
    #[arg(long, value_enum)]
    pub engine: Option<crate::device::Engine>,
    /// Build the firmware at this opt-level (e.g. `s`, for size) instead of
    /// the board crate's release profile (3).
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub opt_level: Option<crate::device::OptLevel>,
}

impl BuildArgs {
    pub fn firmware_build(&self) -> crate::device::FirmwareBuild {
        crate::device::FirmwareBuild { engine: self.engine, opt_level: self.opt_level }
    }
}

/// What a board runs: the model and the samples (`emulate` and `verify`).
#[derive(Debug, Args)]
pub struct DeviceRunArgs {
    /// Int8 student (.tkd) the board runs.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_name = "D.npz")]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    pub split: SplitName,
    /// Use only the first N samples of the split.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Float student (.ckpt) for onnx; int8 student (.tkd) for rust and c.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum)]
    pub format: crate::export::Format,
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Int8 TFLite model (.tflite): a chain of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
    /// AVERAGE_POOL_2D, MAX_POOL_2D, SOFTMAX, RESHAPE and SQUEEZE operators.
    pub model: PathBuf,
    /// Where to write the .tkd.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Int8 student (.tkd).
    #[arg(long)]
    pub model: PathBuf,
    /// Real board: microbit, stm32f405, nrf52840-dk, rp-pico.
    #[arg(long)]
    pub board: String,
    /// Build and check the firmware, do not flash it.
    #[arg(long)]
    pub build_only: bool,
    #[command(flatten)]
    pub build: BuildArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub run: DeviceRunArgs,
    /// Serial port of a real board (e.g. /dev/ttyACM0).
    #[arg(long, required_unless_present = "board")]
    pub port: Option<String>,
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Board name: an emulated one (qemu-…) without --port; with --port, checked against the board.
    #[arg(long)]
    pub board: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_name = "D.npz", required_unless_present = "firmware")]
    pub data: Option<PathBuf>,
    /// Device kernels: instructions per MAC of every layer on CMSIS-NN's shapes and of whole
    /// students, on emulated boards (QEMU -icount), beside CMSIS-NN's figures.
    #[arg(long)]
    pub firmware: bool,
    /// Boards for --firmware.
    #[arg(long, value_delimiter = ',', default_value = "qemu-mps2-an385,qemu-mps2-an386")]
    pub boards: Vec<String>,
    /// For --firmware: MLPerf Tiny's four reference models whole (imported from
    /// --mlperf-dir), on the boards (default an386 and an500), beside CMSIS-NN and the
    /// published figures; --case picks models by name (e.g. "KWS").
    #[arg(long, requires = "firmware")]
    pub mlperf: bool,
    /// Where the MLPerf Tiny `.tflite` files are.
    #[arg(long, value_name = "DIR", default_value = "models/mlperf-tiny")]
    pub mlperf_dir: PathBuf,
    /// For --firmware: only the cases whose name contains this text (e.g. "8×8×16", "FC").
    #[arg(long, value_name = "TEXT")]
    pub case: Option<String>,
    /// For --firmware: write each case's model (`caseN.tkd`) to this directory and keep it,
    /// e.g. to profile one with `emulate` and TINYKD_QEMU_ARGS.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Student specs to time, separated by ';'.
    #[arg(long)]
    pub student: Option<String>,
    /// Teachers whose inference to time with both backends.
    #[arg(long = "teacher")]
    pub teachers: Vec<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// For --student: time tinykd and PyTorch this many times each, alternating, and report
    /// the median round (on a shared or virtual machine, one round can be off by a third).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Python interpreter with torch for the comparison.
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub file: PathBuf,
    /// For a dataset: how a sample's axes are stored (see distill --help).
    #[arg(long, value_enum, default_value_t = Layout::ChannelsFirst)]
    pub layout: Layout,
}

/// What `tinykd init` needs.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Dataset the config trains on (sets the student's shape and classes).
    #[arg(long, value_name = "D.npz")]
    pub data: PathBuf,
    /// ONNX teacher (repeat for an ensemble); without one the config trains on labels (α = 0).
    #[arg(long = "teacher", value_name = "T.onnx")]
    pub teachers: Vec<PathBuf>,
    /// How the data stores a sample's axes.
    #[arg(long, value_enum, default_value_t = Layout::ChannelsFirst)]
    pub layout: Layout,
    /// Where to write the config.
    #[arg(long, value_name = "C.toml", default_value = "tinykd.toml")]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

impl InitArgs {
    pub(super) fn options(&self) -> crate::pipeline::init::InitOptions {
        crate::pipeline::init::InitOptions {
            data: self.data.clone(),
            teachers: self.teachers.clone(),
            layout: self.layout,
            out: self.out.clone(),
            force: self.force,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline config (TOML); relative paths are relative to the file.
    pub config: PathBuf,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}
