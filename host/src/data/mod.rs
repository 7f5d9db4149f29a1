//! Datasets: the `.npz` data contract (see docs/pipeline.md), validated on load.
//!
//! Every sample is stored row-major as f32; `sample_shape` is the shape of one
//! sample without the leading batch axis, channels first (a channels-last
//! file is transposed on load, see [`Layout`]). Labels are class indices `0..C`.

mod layout;
mod npz;
mod split;
mod table;

pub use layout::Layout;
pub use npz::read_floats;
pub use split::stratified_split;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One split of a dataset.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// `n × sample_len` values, row-major.
    pub x: Vec<f32>,
    /// Labels, when the split has them.
    pub y: Option<Vec<i64>>,
    /// Number of samples.
    pub n: usize,
}

impl Split {
    /// Sample `i` as a slice of `sample_len` values.
    pub fn sample(&self, i: usize, sample_len: usize) -> &[f32] {
        &self.x[i * sample_len..(i + 1) * sample_len]
    }
}

/// Which split a command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitName {
    Train,
    Val,
    Test,
    Unlabeled,
}

impl SplitName {
    /// The name used in `.npz` keys (`x_<name>`) and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Val => "val",
            SplitName::Test => "test",
            SplitName::Unlabeled => "unlabeled",
        }
    }
}

/// Options for reading a dataset.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Multiplier applied to uint8 inputs (e.g. 1/255).
    pub input_scale: f32,
    /// How the file's samples are laid out.
    pub layout: Layout,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { input_scale: 1.0 / 255.0, layout: Layout::ChannelsFirst }
    }
}

/// How a command that works on a trained model reads data: the user's
/// `--layout` when given, else the layout the model was trained with.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub input_scale: f32,
    pub layout: Option<Layout>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { input_scale: LoadOptions::default().input_scale, layout: None }
    }
}

impl ReadOptions {
    /// Load options for a model trained on `model_layout` data (`None`: not known).
    pub fn for_model(self, model_layout: Option<Layout>) -> LoadOptions {
        LoadOptions { input_scale: self.input_scale, layout: self.layout.or(model_layout).unwrap_or_default() }
    }
}

/// A loaded, validated dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    /// Shape of one sample, without the batch axis, channels first.
    pub sample_shape: Vec<usize>,
    /// Shape of one sample as the file stores it (what the teacher takes).
    pub stored_shape: Vec<usize>,
    /// How the file stores its samples.
    pub layout: Layout,
    pub train: Split,
    pub test: Split,
    pub val: Option<Split>,
    pub unlabeled: Option<Split>,
    /// Number of classes: one more than the largest label seen.
    pub class_count: usize,
}

impl Dataset {
    /// A dataset as a reader made it: samples stored channels first (the
    /// layout is applied by [`Dataset::load`]).
    pub(crate) fn stored(
        path: &Path,
        sample_shape: Vec<usize>,
        train: Split,
        test: Split,
        val: Option<Split>,
        unlabeled: Option<Split>,
        class_count: usize,
    ) -> Dataset {
        Dataset {
            path: path.to_path_buf(),
            stored_shape: sample_shape.clone(),
            sample_shape,
            layout: Layout::ChannelsFirst,
            train,
            test,
            val,
            unlabeled,
            class_count,
        }
    }

    /// Loads and validates a dataset: an `.npz` (the data contract), a directory of
    /// `.npy` files named like the `.npz` keys, a CSV table (last column the
    /// label; split 80/20, stratified, seed 0) or a directory of MNIST-style
    /// IDX files.
    pub fn load(path: &Path, opts: LoadOptions) -> Result<Dataset> {
        anyhow::Context::context(Self::load_unmarked(path, opts), crate::failure::Failure::Data)
    }

    fn load_unmarked(path: &Path, opts: LoadOptions) -> Result<Dataset> {
        let mut d = Self::load_stored(path, opts)?;
        d.stored_shape = d.sample_shape.clone();
        d.layout = opts.layout;
        d.sample_shape = opts.layout.to_internal_shape(&d.stored_shape);
        let splits = [Some(&mut d.train), Some(&mut d.test), d.val.as_mut(), d.unlabeled.as_mut()];
        for s in splits.into_iter().flatten() {
            if let std::borrow::Cow::Owned(x) = opts.layout.to_internal(&s.x, &d.stored_shape) {
                s.x = x;
            }
        }
        Ok(d)
    }

    /// Channels-first samples (e.g. augmented views) in the file's layout,
    /// which is what the teacher was trained on.
    pub fn stored_order<'a>(&self, x: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        self.layout.to_stored(x, &self.stored_shape)
    }

    /// How a sample is read (shown by `distill` and `inspect`).
    pub fn describe_layout(&self) -> String {
        self.layout.describe(&self.stored_shape)
    }

    fn load_stored(path: &Path, opts: LoadOptions) -> Result<Dataset> {
        if path.is_dir() {
            if path.join("x_train.npy").is_file() {
                return npz::load_npy_dir(path, opts);
            }
            return table::load_idx_dir(path, opts);
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "npz" => npz::load(path, opts),
            "csv" | "tsv" => table::load_csv(path),
            _ => bail!(
                "{}: unsupported dataset (expected a .npz with x_train, y_train, x_test, y_test; a directory of \
                 x_train.npy, y_train.npy, …; a .csv whose last column is the label; or a directory of MNIST-style \
                 IDX files)",
                path.display()
            ),
        }
    }

    /// Number of values in one sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// A split by name, or an error naming what is missing.
    pub fn split(&self, name: SplitName) -> Result<&Split> {
        match name {
            SplitName::Train => Ok(&self.train),
            SplitName::Test => Ok(&self.test),
            SplitName::Val => self
                .val
                .as_ref()
                .with_context(|| format!("{}: has no validation split (x_val, y_val)", self.path.display())),
            SplitName::Unlabeled => self
                .unlabeled
                .as_ref()
                .with_context(|| format!("{}: has no unlabeled split (x_unlabeled)", self.path.display())),
        }
    }

    /// Labels of a split, or an error if it has none.
    pub fn labels(&self, name: SplitName) -> Result<&[i64]> {
        self.split(name)?.y.as_deref().with_context(|| {
            format!("{}: split '{}' has no labels (y_{})", self.path.display(), name.as_str(), name.as_str())
        })
    }
}

/// Checks the invariants shared by every reader: finite inputs, non-empty
/// splits, labels in range. `what` names the file for messages.
pub(crate) fn validate_split(what: &Path, name: &str, split: &Split, sample_len: usize) -> Result<()> {
    if split.n == 0 {
        bail!("{}: split '{name}' is empty (x_{name} has 0 samples)", what.display());
    }
    if split.x.len() != split.n * sample_len {
        bail!("{}: x_{name} has {} values, expected {} × {sample_len}", what.display(), split.x.len(), split.n);
    }
    if let Some(pos) = split.x.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: x_{name} contains a non-finite value ({}) at sample {}; clean the data (NaN/Inf are not allowed)",
            what.display(),
            split.x[pos],
            pos / sample_len.max(1)
        );
    }
    if let Some(y) = &split.y {
        if y.len() != split.n {
            bail!("{}: y_{name} has {} labels but x_{name} has {} samples", what.display(), y.len(), split.n);
        }
        if let Some((i, v)) = y.iter().enumerate().find(|(_, v)| **v < 0) {
            bail!("{}: y_{name}[{i}] = {v}: labels must be class indices 0..C-1", what.display());
        }
    }
    Ok(())
}
