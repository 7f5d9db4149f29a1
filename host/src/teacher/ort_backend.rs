//! onnxruntime backend through `ort` with `load-dynamic`: the shared library
//! is found at run time, so tinykd builds without downloading anything and
//! works without onnxruntime installed (tract is always there).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{DynMapValueType, DynSequenceValueType, Tensor, TensorElementType, ValueType};

use super::{Backend, Dim, RawOutput};

const INSTALL_HINT: &str = "install it with `pip install onnxruntime` (tinykd finds the wheel's \
    libonnxruntime.so through python3) or set ORT_DYLIB_PATH to the library file";

/// Locates `libonnxruntime`: `ORT_DYLIB_PATH`, else the `onnxruntime` Python
/// package, else the system library directories.
pub(crate) fn find_library() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH={} does not exist; {INSTALL_HINT}", p.display()))
        };
    }
    for python in ["python3", "python"] {
        let out = crate::children::output(
            std::process::Command::new(python)
                .args(["-c", "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"]),
        );
        if let Ok(out) = out
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
            if let Some(lib) = newest_library_in(&dir) {
                return Ok(lib);
            }
        }
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    dirs.extend(
        ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"].map(PathBuf::from),
    );
    dirs.iter()
        .find_map(|d| newest_library_in(d))
        .ok_or_else(|| format!("onnxruntime library not found; {INSTALL_HINT}"))
}

fn newest_library_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib" || n == "onnxruntime.dll"
            })
        })
        .collect();
    // Prefer the fully versioned name (the real file, not a dangling symlink).
    libs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    libs.into_iter().find(|p| p.is_file())
}

/// The process-wide onnxruntime environment: the library can be loaded once.
fn environment(lib: &Path) -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let builder = ort::init_from(lib).map_err(|e| format!("cannot load {}: {e}", lib.display()))?;
        builder.with_name("tinykd").build().map_err(|e| format!("cannot start onnxruntime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

pub(crate) struct OrtBackend {
    session: Session,
    input_name: String,
    input_dims: Vec<Dim>,
}

impl OrtBackend {
    pub(crate) fn open(path: &Path, lib: &Path) -> Result<OrtBackend> {
        let env = environment(lib)?;
        let ctx = || format!("{}: onnxruntime cannot load this ONNX model", path.display());
        let session = Session::builder(env)
            .and_then(|b| b.with_intra_threads(2).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| anyhow!("{e}"))
            .with_context(ctx)?;
        let [input] = session.inputs() else {
            anyhow::bail!(
                "{}: teacher has {} inputs; tinykd needs exactly one",
                path.display(),
                session.inputs().len()
            );
        };
        let input_dims = match input.dtype() {
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => {
                shape.iter().map(|&d| if d < 0 { Dim::Symbolic } else { Dim::Fixed(d as usize) }).collect()
            }
            other => anyhow::bail!(
                "{}: teacher input '{}' is {other}; tinykd feeds float32 tensors",
                path.display(),
                input.name()
            ),
        };
        let input_name = input.name().to_owned();
        Ok(OrtBackend { session, input_name, input_dims })
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn input_dims(&self) -> &[Dim] {
        &self.input_dims
    }

    fn run(&mut self, x: &[f32], shape: &[usize]) -> Result<Vec<RawOutput>> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let tensor = Tensor::from_array((dims, x.to_vec())).map_err(|e| anyhow!("{e}"))?;
        let outputs = self.session.run(vec![(self.input_name.as_str(), tensor)]).map_err(|e| anyhow!("{e}"))?;
        let mut raw = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let (shape, values) = match value.dtype() {
                ValueType::Tensor { ty: TensorElementType::Float32, .. } => {
                    let (s, v) = value.try_extract_tensor::<f32>().map_err(|e| anyhow!("{e}"))?;
                    (s.iter().map(|&d| d as usize).collect(), Some(v.to_vec()))
                }
                ValueType::Tensor { shape, .. } => (shape.iter().map(|&d| d.max(0) as usize).collect(), None),
                // scikit-learn's ZipMap: one {class: probability} map per sample.
                ValueType::Sequence(inner)
                    if matches!(
                        **inner,
                        ValueType::Map { key: TensorElementType::Int64, value: TensorElementType::Float32 }
                    ) =>
                {
                    let seq = value.downcast::<DynSequenceValueType>().map_err(|e| anyhow!("{e}"))?;
                    let maps = seq.try_extract_sequence::<DynMapValueType>().map_err(|e| anyhow!("{e}"))?;
                    let mut values = Vec::new();
                    let mut classes = 0;
                    for m in &maps {
                        let mut kv = m.try_extract_key_values::<i64, f32>().map_err(|e| anyhow!("{e}"))?;
                        kv.sort_by_key(|(k, _)| *k);
                        if kv.iter().enumerate().any(|(i, (k, _))| *k != i as i64) {
                            anyhow::bail!(
                                "ZipMap output '{name}' does not map classes 0..C-1; export the model with zipmap=False"
                            );
                        }
                        classes = kv.len();
                        values.extend(kv.into_iter().map(|(_, v)| v));
                    }
                    (vec![maps.len(), classes], Some(values))
                }
                ValueType::Sequence(_) => (vec![0], None),
                _ => (Vec::new(), None),
            };
            raw.push(RawOutput { name: name.to_owned(), shape, values });
        }
        Ok(raw)
    }
}
