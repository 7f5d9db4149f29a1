//! `teach`: the teachers' logits for every split, computed into the cache
//! once, so later distillation runs never run the teachers again.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::data::{Dataset, LoadOptions, SplitName};
use crate::progress::Progress;
use crate::teacher::{BackendChoice, OutputKind, TeacherSet};

/// The teachers and the data to teach.
#[derive(Debug, Clone)]
pub struct TeachOptions {
    pub teachers: Vec<PathBuf>,
    pub backend: BackendChoice,
    pub teacher_output: Option<String>,
    pub teacher_output_kind: Option<OutputKind>,
    pub data: PathBuf,
    pub load: LoadOptions,
    /// The logit cache to fill; `None` refuses (teaching fills the cache).
    pub cache: Option<PathBuf>,
}

/// What `teach` did.
#[derive(Debug, Clone)]
pub struct TeachReport {
    /// Each split present: its samples and the teachers' class count.
    pub splits: Vec<(SplitName, usize, usize)>,
    pub cache: PathBuf,
    pub computed_samples: usize,
    pub cached_samples: usize,
}

/// Fills the cache with the teachers' logits of every split of the data.
pub fn teach(o: &TeachOptions, progress: &Progress) -> Result<TeachReport> {
    let data = Dataset::load(&o.data, o.load)?;
    let Some(cache) = o.cache.clone() else { bail!("tinykd teach fills the cache: drop --no-cache") };
    let mut set = TeacherSet::new(&o.teachers, o.backend, o.teacher_output.as_deref(), Some(cache.clone()))?;
    set.expected_classes = (data.class_count > 0).then_some(data.class_count);
    set.kind_override = o.teacher_output_kind;
    let mut splits = Vec::new();
    for name in [SplitName::Train, SplitName::Val, SplitName::Test, SplitName::Unlabeled] {
        let Ok(s) = data.split(name) else { continue };
        let (_, classes) = set.logits(&data.stored_order(&s.x), s.n, &data.stored_shape, 1.0, progress)?;
        splits.push((name, s.n, classes));
    }
    Ok(TeachReport { splits, cache, computed_samples: set.computed_samples, cached_samples: set.cached_samples })
}
