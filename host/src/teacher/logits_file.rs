//! Teacher outputs computed elsewhere (`--teacher-logits FILE.npz`): a GPU
//! cluster, onnxruntime or PyTorch over a transfer set too big for one
//! machine. The file holds one row of class scores per stored sample, in
//! the data file's order, under the data contract's split names:
//!
//! | array | shape | rows |
//! |---|---|---|
//! | `train` | `[N_train, C]` | every `x_train` sample |
//! | `test` | `[N_test, C]` | every `x_test` sample |
//! | `unlabeled` | `[N_unlabeled, C]` | every `x_unlabeled` sample (needed when the data has them and they are used) |
//!
//! float32 or float64; logits or probabilities (rows in [0, 1] summing to
//! 1 are detected and turned into log-probabilities, as a teacher's would
//! be). Only the stored samples have scores, so augmented views (which
//! need the teacher to label them) are refused.

use std::path::Path;

use anyhow::{Result, bail};

use super::{OutputKind, detect_kind};

/// Scores of every sample of one split.
#[derive(Debug, Clone)]
pub struct SplitLogits {
    pub logits: Vec<f32>,
    pub classes: usize,
    pub kind: OutputKind,
}

/// Reads split `name` (`rows` samples expected); `None` when absent.
pub fn load(path: &Path, name: &str, rows: usize) -> Result<Option<SplitLogits>> {
    let Some((shape, mut v)) = crate::data::read_floats(path, name)? else { return Ok(None) };
    let [n, classes] = shape[..] else {
        bail!("{}: '{name}' has shape {shape:?}; expected [samples, classes]", path.display());
    };
    if n != rows {
        bail!(
            "{}: '{name}' has {n} rows but the data's split has {rows} samples (one row per sample, same order)",
            path.display()
        );
    }
    if classes < 2 {
        bail!("{}: '{name}' has {classes} column(s); expected one score per class", path.display());
    }
    if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
        bail!("{}: '{name}' row {} holds a non-finite value", path.display(), bad / classes);
    }
    let kind = detect_kind(&v, classes);
    if kind == OutputKind::Probabilities {
        v.iter_mut().for_each(|p| *p = p.max(1e-30).ln());
    }
    // Rounded as the teacher cache stores outputs, like every other teacher's.
    super::cache::round_to_f16(&mut v);
    Ok(Some(SplitLogits { logits: v, classes, kind }))
}

/// [`load`] for a split that must be there.
pub fn require(path: &Path, name: &str, rows: usize) -> Result<SplitLogits> {
    load(path, name, rows)?.ok_or_else(|| {
        anyhow::anyhow!("{}: has no '{name}' array (teacher scores for the {name} split)", path.display())
    })
}
