//! A set of teachers (one, or an ensemble) behind the logit cache: teachers
//! are opened only when an input array is not cached yet.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{BackendChoice, OutputKind, Teacher, cache};
use crate::progress::Progress;

struct Member {
    path: PathBuf,
    key: [u8; 32],
    teacher: Option<Teacher>,
}

/// One or more teachers producing (combined) logits.
pub struct TeacherSet {
    members: Vec<Member>,
    backend: BackendChoice,
    output: Option<String>,
    cache_dir: Option<PathBuf>,
    /// Backends that actually ran, for reports.
    pub backends: Vec<String>,
    /// Samples the teachers computed (cache misses); 0 when all came from the cache.
    pub computed_samples: usize,
    pub cached_samples: usize,
    pub kinds: Vec<OutputKind>,
    /// The data's class count (helps pick a multi-output teacher's scores).
    pub expected_classes: Option<usize>,
    /// Forces logits or probabilities instead of detecting them.
    pub kind_override: Option<OutputKind>,
}

impl std::fmt::Debug for TeacherSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeacherSet")
            .field("teachers", &self.members.iter().map(|m| &m.path).collect::<Vec<_>>())
            .finish()
    }
}

impl TeacherSet {
    /// Checks the files and hashes them; opens nothing yet. `cache_dir`
    /// `None` disables the cache.
    pub fn new(
        paths: &[PathBuf],
        backend: BackendChoice,
        output: Option<&str>,
        cache_dir: Option<PathBuf>,
    ) -> Result<TeacherSet> {
        if paths.is_empty() {
            bail!("no teacher given (--teacher T.onnx)");
        }
        let mut members = Vec::new();
        for p in paths {
            anyhow::Context::context(super::check_onnx_file(p), crate::failure::Failure::Teacher)?;
            members.push(Member {
                path: p.clone(),
                key: cache::teacher_key(std::slice::from_ref(p), output)?,
                teacher: None,
            });
        }
        Ok(TeacherSet {
            members,
            backend,
            output: output.map(str::to_owned),
            cache_dir,
            backends: Vec::new(),
            computed_samples: 0,
            cached_samples: 0,
            kinds: Vec::new(),
            expected_classes: None,
            kind_override: None,
        })
    }

    /// Logits of every teacher for `n` samples; an ensemble is combined as
    /// the mean of probabilities tempered at `temperature`, returned as
    /// `T·log(mean)` so that softmax at T gives that mean back.
    pub fn logits(
        &mut self,
        x: &[f32],
        n: usize,
        sample_shape: &[usize],
        temperature: f32,
        progress: &Progress,
    ) -> Result<(Vec<f32>, usize)> {
        let mut all: Vec<(Vec<f32>, usize)> = Vec::new();
        let mut shape = vec![n];
        shape.extend_from_slice(sample_shape);
        let first_path = self.members[0].path.clone();
        for m in &mut self.members {
            // The class count steers which output is chosen, so it is part of the key.
            let kind_tag = match self.kind_override {
                None => 0.0,
                Some(OutputKind::Logits) => 0.25,
                Some(OutputKind::Probabilities) => 0.5,
            };
            let key = cache::key(&m.key, x, &shape, self.expected_classes.unwrap_or(0) as f32 + kind_tag);
            let hit = self.cache_dir.as_ref().and_then(|d| cache::load(d, &key, n));
            let (logits, classes, kind) = match hit {
                Some(v) => {
                    progress.note(&format!("teacher {}: {} samples from the cache", m.path.display(), n));
                    self.cached_samples += n;
                    v
                }
                None => {
                    if m.teacher.is_none() {
                        let mut t = Teacher::open(&m.path, self.backend, self.output.as_deref())?;
                        t.expected_classes = self.expected_classes;
                        t.kind_override = self.kind_override;
                        progress.note(&format!(
                            "teacher {}: backend {} ({})",
                            m.path.display(),
                            t.backend_name(),
                            t.backend_note
                        ));
                        self.backends.push(t.backend_name().to_owned());
                        m.teacher = Some(t);
                    }
                    let Some(t) = m.teacher.as_mut() else { unreachable!("opened above") };
                    let mut out = t.logits(x, n, sample_shape, progress)?;
                    self.computed_samples += n;
                    // Round as the cache stores them, so a run that computes the
                    // logits and a run that reads them train bit-identically.
                    cache::round_to_f16(&mut out.logits);
                    if let Some(dir) = &self.cache_dir
                        && let Err(e) = cache::store(dir, &key, &out.logits, out.classes, out.kind)
                    {
                        progress.note(&format!("warning: cannot write the teacher cache: {e:#}"));
                    }
                    (out.logits, out.classes, out.kind)
                }
            };
            if !self.kinds.contains(&kind) {
                self.kinds.push(kind);
            }
            if let Some((_, c)) = all.first()
                && *c != classes
            {
                bail!("{}: teacher has {classes} classes, {} has {c}", m.path.display(), first_path.display());
            }
            all.push((logits, classes));
        }
        let classes = all[0].1;
        if all.len() == 1 {
            return Ok(all.remove(0));
        }
        let mut out = vec![0f32; n * classes];
        for i in 0..n {
            let mut mean = vec![0f64; classes];
            for (m, _) in &all {
                let p = crate::util::softmax(&m[i * classes..(i + 1) * classes], temperature);
                mean.iter_mut().zip(p).for_each(|(a, b)| *a += b / all.len() as f64);
            }
            for (o, p) in out[i * classes..(i + 1) * classes].iter_mut().zip(mean) {
                *o = (temperature as f64 * p.max(1e-30).ln()) as f32;
            }
        }
        Ok((out, classes))
    }

    /// The teacher files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.members.iter().map(|m| m.path.clone()).collect()
    }
}
