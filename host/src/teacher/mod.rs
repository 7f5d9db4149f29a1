//! Teachers: any ONNX classifier, run by onnxruntime (`ort`) or tract.
//!
//! A backend returns every float output of the graph; this module picks the
//! class-score output, detects whether it holds probabilities or logits, and
//! turns it into logits (log-probabilities for probability outputs), which is
//! what the distillation loss consumes.

pub mod cache;
pub mod logits_file;
mod ort_backend;
mod set;
mod tract_backend;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use set::TeacherSet;

/// Which ONNX runtime executes a teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// onnxruntime when its library can be found, else tract.
    #[default]
    Auto,
    /// onnxruntime through the `ort` crate (library loaded at run time).
    Ort,
    /// tract, the pure-Rust runtime built into tinykd.
    Tract,
}

/// Dimension of a model input: fixed or symbolic (e.g. a dynamic batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbolic,
}

/// One named output tensor of a teacher run.
#[derive(Debug, Clone)]
pub struct RawOutput {
    pub name: String,
    pub shape: Vec<usize>,
    /// `None` when the output is not a float tensor (labels, maps, ...).
    pub values: Option<Vec<f32>>,
}

/// What the backends implement.
pub(crate) trait Backend {
    /// Short name for reports ("ort", "tract").
    fn name(&self) -> &'static str;
    /// Declared shape of the (single) input, including the batch axis; empty
    /// when the model declares none (the data's shape is used).
    fn input_dims(&self) -> &[Dim];
    /// Runs one batch of `n` samples laid out row-major with `shape` = [n, ...].
    fn run(&mut self, x: &[f32], shape: &[usize]) -> Result<Vec<RawOutput>>;
}

/// Whether the chosen output holds probabilities or logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Logits,
    Probabilities,
}

/// A loaded teacher, ready to produce logits for a dataset.
pub struct Teacher {
    pub path: PathBuf,
    backend: Box<dyn Backend>,
    /// Why `auto` picked this backend (shown to the user).
    pub backend_note: String,
    output_name: Option<String>,
    /// The data's class count, when known: helps pick the class-score output.
    pub expected_classes: Option<usize>,
    /// Forces the output kind instead of detecting it.
    pub kind_override: Option<OutputKind>,
    /// Samples per backend call.
    pub batch_size: usize,
}

impl std::fmt::Debug for Teacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teacher").field("path", &self.path).field("backend", &self.backend.name()).finish()
    }
}

/// Logits of a teacher over a split.
#[derive(Debug, Clone)]
pub struct TeacherOutputs {
    /// `n × classes` logits (log-probabilities for probability outputs).
    pub logits: Vec<f32>,
    pub classes: usize,
    pub kind: OutputKind,
    pub output_name: String,
}

impl Teacher {
    /// Opens an ONNX teacher with the requested backend.
    pub fn open(path: &Path, choice: BackendChoice, output_name: Option<&str>) -> Result<Teacher> {
        Self::open_unmarked(path, choice, output_name).context(crate::failure::Failure::Teacher)
    }

    fn open_unmarked(path: &Path, choice: BackendChoice, output_name: Option<&str>) -> Result<Teacher> {
        check_onnx_file(path)?;
        let (backend, note): (Box<dyn Backend>, String) = match choice {
            BackendChoice::Tract => (Box::new(tract_backend::TractBackend::open(path)?), "requested".into()),
            BackendChoice::Ort => {
                let lib = ort_backend::find_library().map_err(|e| anyhow::anyhow!("{e}"))?;
                (Box::new(ort_backend::OrtBackend::open(path, &lib)?), "requested".into())
            }
            BackendChoice::Auto => match ort_backend::find_library() {
                Ok(lib) => match ort_backend::OrtBackend::open(path, &lib) {
                    Ok(b) => (Box::new(b), format!("auto: onnxruntime found at {}", lib.display())),
                    Err(e) => {
                        let t = tract_backend::TractBackend::open(path)
                            .with_context(|| format!("onnxruntime also failed: {e:#}"))?;
                        (Box::new(t), format!("auto: onnxruntime could not load the model ({e:#}); using tract"))
                    }
                },
                Err(why) => match tract_backend::TractBackend::open(path) {
                    Ok(t) => (Box::new(t), format!("auto: onnxruntime not found ({why}); using tract")),
                    Err(e) => return Err(e),
                },
            },
        };
        Ok(Teacher {
            path: path.to_path_buf(),
            backend,
            backend_note: note,
            output_name: output_name.map(str::to_owned),
            expected_classes: None,
            kind_override: None,
            batch_size: 256,
        })
    }

    /// The backend in use ("ort" or "tract").
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Checks that the teacher's input matches the data's sample shape and
    /// returns the batch size the model forces (`None` = any).
    fn plan_input(&self, sample_shape: &[usize]) -> Result<Option<usize>> {
        let dims = self.backend.input_dims();
        let show = |d: &[Dim]| {
            let parts: Vec<String> =
                d.iter().map(|d| if let Dim::Fixed(v) = d { v.to_string() } else { "?".into() }).collect();
            format!("[{}]", parts.join(", "))
        };
        let sample_len: usize = sample_shape.iter().product();
        let mismatch = || {
            anyhow::anyhow!(
                "{}: teacher input shape {} does not match the data's sample shape {:?} (plus a batch axis)",
                self.path.display(),
                show(dims),
                sample_shape
            )
        };
        let Some((batch, rest)) = dims.split_first() else {
            // No declared shape: the backend takes the data's (tract completes its fact from it).
            return Ok(None);
        };
        let same_shape = rest.len() == sample_shape.len()
            && rest.iter().zip(sample_shape).all(|(d, s)| matches!(d, Dim::Symbolic) || *d == Dim::Fixed(*s));
        // A flat teacher input on shaped data (or the reverse) is the same
        // row-major memory; accept it when the element counts agree.
        let flat_ok = rest == [Dim::Symbolic]
            || (rest.len() == 1 || sample_shape.len() == 1)
                && rest.iter().try_fold(1usize, |acc, d| if let Dim::Fixed(v) = d { Some(acc * v) } else { None })
                    == Some(sample_len);
        if !same_shape && !flat_ok {
            return Err(mismatch());
        }
        Ok(match batch {
            Dim::Fixed(b) => Some(*b),
            Dim::Symbolic => None,
        })
    }

    /// Input shape of one batch for the backend.
    fn batch_shape(&self, n: usize, sample_shape: &[usize]) -> Vec<usize> {
        let rest = self.backend.input_dims().get(1..).unwrap_or_default();
        let mut shape = vec![n];
        if rest.len() == sample_shape.len() || self.backend.input_dims().is_empty() {
            shape.extend_from_slice(sample_shape);
        } else if rest.len() == 1 {
            shape.push(sample_shape.iter().product());
        } else {
            shape.extend(rest.iter().map(|d| if let Dim::Fixed(v) = d { *v } else { 1 }));
        }
        shape
    }

    /// Runs the teacher over `n` samples and returns its logits.
    pub fn logits(
        &mut self,
        x: &[f32],
        n: usize,
        sample_shape: &[usize],
        progress: &crate::progress::Progress,
    ) -> Result<TeacherOutputs> {
        self.logits_unmarked(x, n, sample_shape, progress).context(crate::failure::Failure::Teacher)
    }

    fn logits_unmarked(
        &mut self,
        x: &[f32],
        n: usize,
        sample_shape: &[usize],
        progress: &crate::progress::Progress,
    ) -> Result<TeacherOutputs> {
        let sample_len: usize = sample_shape.iter().product();
        let forced = self.plan_input(sample_shape)?;
        let batch = forced.unwrap_or(self.batch_size).max(1);
        let mut chosen: Option<(usize, String)> = None;
        let mut classes = 0;
        let mut logits = Vec::with_capacity(n * 16);
        let bar = progress.bar(n as u64, "teacher");
        let mut start = 0;
        while start < n {
            let count = (n - start).min(batch);
            // A model with a fixed batch gets a zero-padded last batch.
            let run_n = forced.unwrap_or(count);
            let mut xb = x[start * sample_len..(start + count) * sample_len].to_vec();
            xb.resize(run_n * sample_len, 0.0);
            let shape = self.batch_shape(run_n, sample_shape);
            let outputs = self
                .backend
                .run(&xb, &shape)
                .with_context(|| format!("{}: running the teacher ({})", self.path.display(), self.backend.name()))?;
            let idx = match &chosen {
                Some((i, _)) => *i,
                None => {
                    let (i, c) = self.choose_output(&outputs, run_n)?;
                    chosen = Some((i, outputs[i].name.clone()));
                    classes = c;
                    i
                }
            };
            let out = &outputs[idx];
            let values = out.values.as_ref().context("teacher output is not a float tensor")?;
            if out.shape != [run_n, classes] {
                bail!("{}: output '{}' changed shape to {:?}", self.path.display(), out.name, out.shape);
            }
            logits.extend_from_slice(&values[..count * classes]);
            start += count;
            bar.inc(count as u64);
        }
        bar.finish();
        let (_, output_name) = chosen.context("no samples to run the teacher on")?;
        if let Some(pos) = logits.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: teacher produced a non-finite output ({}) for sample {}",
                self.path.display(),
                logits[pos],
                pos / classes
            );
        }
        let kind = match self.kind_override {
            Some(k) => k,
            None => detect_kind(&logits, classes),
        };
        if kind == OutputKind::Probabilities {
            for v in &mut logits {
                *v = v.max(1e-12).ln();
            }
        }
        Ok(TeacherOutputs { logits, classes, kind, output_name })
    }

    /// Picks the class-score output: the one named by `--teacher-output`,
    /// else among the float `[n, C]` outputs (C ≥ 2) the best by
    /// [`output_preference`], the first on ties.
    fn choose_output(&self, outputs: &[RawOutput], n: usize) -> Result<(usize, usize)> {
        let describe = || {
            outputs
                .iter()
                .map(|o| format!("'{}' {:?}{}", o.name, o.shape, if o.values.is_some() { "" } else { " (not float)" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fits = |o: &RawOutput| o.values.is_some() && o.shape.len() == 2 && o.shape[0] == n && o.shape[1] >= 2;
        if let Some(name) = &self.output_name {
            let i = outputs.iter().position(|o| &o.name == name).with_context(|| {
                format!("{}: no output named '{name}' (outputs: {})", self.path.display(), describe())
            })?;
            if !fits(&outputs[i]) {
                bail!(
                    "{}: output '{name}' is not a float [N, classes] tensor (outputs: {})",
                    self.path.display(),
                    describe()
                );
            }
            return Ok((i, outputs[i].shape[1]));
        }
        let i = (0..outputs.len())
            .filter(|&i| fits(&outputs[i]))
            .max_by_key(|&i| (output_preference(&outputs[i], self.expected_classes), std::cmp::Reverse(i)))
            .with_context(|| {
                format!(
                    "{}: no float [N, classes] output to distill from (outputs: {})",
                    self.path.display(),
                    describe()
                )
            })?;
        Ok((i, outputs[i].shape[1]))
    }
}

/// How likely an output is to hold class scores: its width matching the
/// data's class count counts most, then its name (logits over probabilities
/// over generic names; embeddings and features last).
fn output_preference(o: &RawOutput, expected_classes: Option<usize>) -> (bool, i32) {
    let name = o.name.to_ascii_lowercase();
    let by_name = if name.contains("logit") {
        3
    } else if name.contains("prob") {
        2
    } else if ["embed", "feature", "hidden", "latent"].iter().any(|w| name.contains(w)) {
        -1
    } else {
        0
    };
    (expected_classes.is_some_and(|c| o.shape.get(1) == Some(&c)), by_name)
}

/// Rows that are all in [0, 1] and sum to 1 are probabilities.
pub fn detect_kind(values: &[f32], classes: usize) -> OutputKind {
    let probs = values.chunks_exact(classes).all(|row| {
        row.iter().all(|v| (0.0..=1.0).contains(v)) && (row.iter().map(|v| *v as f64).sum::<f64>() - 1.0).abs() < 1e-3
    });
    if probs { OutputKind::Probabilities } else { OutputKind::Logits }
}

/// Fails early, with a clear message, on a missing or obviously non-ONNX file.
pub(crate) fn check_onnx_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read teacher", path.display()))?;
    if !meta.is_file() {
        bail!("{}: teacher is not a file", path.display());
    }
    let mut head = [0u8; 64];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open teacher", path.display()))?;
        f.read(&mut head).with_context(|| format!("{}: cannot read teacher", path.display()))?
    };
    // An ONNX ModelProto starts with field 1 (ir_version, varint: 0x08) in
    // practice; anything textual or empty is certainly not ONNX.
    if n == 0 || head[0] != 0x08 {
        bail!("{}: not an ONNX model (expected a protobuf ModelProto)", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_probabilities_and_logits() {
        assert_eq!(detect_kind(&[0.2, 0.8, 1.0, 0.0], 2), OutputKind::Probabilities);
        assert_eq!(detect_kind(&[0.2, 0.7, 1.0, 0.0], 2), OutputKind::Logits);
        assert_eq!(detect_kind(&[-1.0, 2.0], 2), OutputKind::Logits);
    }

    #[test]
    fn rejects_non_onnx_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.onnx");
        std::fs::write(&p, b"hello world").unwrap();
        let e = check_onnx_file(&p).unwrap_err().to_string();
        assert!(e.contains("not an ONNX model"), "{e}");
        let e = check_onnx_file(&dir.path().join("missing.onnx")).unwrap_err().to_string();
        assert!(e.contains("cannot read teacher"), "{e}");
    }
}
