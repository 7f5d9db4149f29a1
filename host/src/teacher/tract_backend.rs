//! tract backend: pure Rust, always available.
//!
//! tract needs a complete fact (type and shape) for the model input before it
//! can type and optimise the graph. Most exporters declare one; the usual
//! scikit-learn export (`FloatTensorType([None, n])`) leaves the batch axis
//! unnamed and unknown, and some files declare no shape at all. The input
//! fact is therefore completed here: an unknown batch axis becomes the
//! symbol `N`, and unknown sample axes (or a missing shape) are taken from
//! the data when the first batch arrives.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::{Backend, Dim, RawOutput};

type Runnable = std::sync::Arc<TypedRunnableModel>;

pub(crate) struct TractBackend {
    path: PathBuf,
    /// Typed and optimised; `None` until the data's shape completes the input fact.
    runnable: Option<Runnable>,
    /// The loaded graph, kept while `runnable` waits for the data's shape.
    pending: Option<InferenceModel>,
    input_dims: Vec<Dim>,
    output_names: Vec<String>,
}

fn load_error(path: &Path) -> String {
    format!("{}: tract cannot load this ONNX model", path.display())
}

/// Operators tract 0.23 does not run that onnxruntime does, with the advice to give.
fn unsupported_op_advice(path: &Path) -> Option<String> {
    let proto = tract_onnx::onnx().proto_model_for_path(path).ok()?;
    let ops: Vec<&str> = proto.graph.as_ref()?.node.iter().map(|n| n.op_type.as_str()).collect();
    if ops.contains(&"ZipMap") {
        return Some(format!(
            "{}: tract cannot run ZipMap (scikit-learn's default probability output, a list of maps); use \
             --backend ort (pip install onnxruntime), or export without it: \
             to_onnx(clf, …, options={{id(clf): {{\"zipmap\": False}}}})",
            path.display()
        ));
    }
    None
}

impl TractBackend {
    pub(crate) fn open(path: &Path) -> Result<TractBackend> {
        let ctx = || load_error(path);
        let mut model = tract_onnx::onnx().model_for_path(path).with_context(ctx)?;
        if model.inputs.len() != 1 {
            bail!("{}: teacher has {} inputs; tinykd needs exactly one", path.display(), model.inputs.len());
        }
        let fact = model.input_fact(0).with_context(ctx)?.clone();
        let declared: Option<Vec<Option<TDim>>> =
            (!fact.shape.is_open()).then(|| fact.shape.dims().map(|d| d.concretize()).collect());
        let sample_dims_known = declared.as_ref().is_some_and(|d| d.iter().skip(1).all(Option::is_some));
        let complete =
            declared.as_ref().is_some_and(|d| d.iter().all(Option::is_some)) && fact.datum_type.concretize().is_some();
        let output_names = model
            .output_outlets()
            .with_context(ctx)?
            .iter()
            .map(|o| model.outlet_label(*o).map(str::to_owned).unwrap_or_else(|| model.node(o.node).name.clone()))
            .collect();
        let dim_of = |d: &Option<TDim>| {
            d.as_ref().and_then(|d| d.to_i64().ok()).map_or(Dim::Symbolic, |v| Dim::Fixed(v as usize))
        };
        let input_dims: Vec<Dim> = declared.as_ref().map(|d| d.iter().map(dim_of).collect()).unwrap_or_default();
        let mut backend =
            TractBackend { path: path.to_path_buf(), runnable: None, pending: None, input_dims, output_names };
        if complete {
            // Keep the model's own input fact: forcing a concrete batch fails on
            // files whose value_info keeps a symbolic batch axis.
            backend.runnable = Some(backend.finish(model)?);
        } else if let (Some(dims), true) = (&declared, sample_dims_known) {
            // Only the batch axis is unknown (skl2onnx's `[None, n]`): make it a symbol.
            let batch = model.symbols.sym("N");
            let shape: TVec<TDim> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| d.clone().unwrap_or_else(|| if i == 0 { batch.clone().into() } else { TDim::Val(1) }))
                .collect();
            let dt = fact.datum_type.concretize().unwrap_or(DatumType::F32);
            model = model.with_input_fact(0, InferenceFact::dt_shape(dt, shape)).with_context(ctx)?;
            backend.runnable = Some(backend.finish(model)?);
        } else {
            // Sample axes unknown: the data's shape completes the fact at the first run.
            backend.pending = Some(model);
        }
        Ok(backend)
    }

    fn finish(&self, model: InferenceModel) -> Result<Runnable> {
        let ctx = || load_error(&self.path);
        let typed = match model.into_typed() {
            Ok(t) => t,
            Err(e) => match unsupported_op_advice(&self.path) {
                Some(advice) => bail!("{advice}"),
                None => return Err(e).with_context(ctx),
            },
        };
        typed.into_optimized().with_context(ctx)?.into_runnable().with_context(ctx)
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn input_dims(&self) -> &[Dim] {
        &self.input_dims
    }

    fn run(&mut self, x: &[f32], shape: &[usize]) -> Result<Vec<RawOutput>> {
        if let Some(mut model) = self.pending.take() {
            let batch = model.symbols.sym("N");
            let dims: TVec<TDim> =
                std::iter::once(batch.into()).chain(shape[1..].iter().map(|d| TDim::Val(*d as i64))).collect();
            model = model.with_input_fact(0, InferenceFact::dt_shape(DatumType::F32, dims))?;
            self.runnable = Some(self.finish(model)?);
        }
        let model = self.runnable.as_ref().context("tract model not ready")?;
        let input = Tensor::from_shape(shape, x)?;
        let outputs = model.run(tvec!(input.into()))?;
        outputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = self.output_names.get(i).cloned().unwrap_or_else(|| format!("output{i}"));
                let shape = t.shape().to_vec();
                let values = match t.datum_type() {
                    DatumType::F32 => Some(t.to_plain_array_view::<f32>()?.iter().copied().collect()),
                    DatumType::F64 => Some(t.to_plain_array_view::<f64>()?.iter().map(|v| *v as f32).collect()),
                    _ => None,
                };
                Ok(RawOutput { name, shape, values })
            })
            .collect()
    }
}
