//! tract backend: pure Rust, always available.

use std::path::Path;

use anyhow::{Context, Result};
use tract_onnx::prelude::*;

use super::{Backend, Dim, RawOutput};

type Runnable = std::sync::Arc<TypedRunnableModel>;

pub(crate) struct TractBackend {
    model: Runnable,
    input_dims: Vec<Dim>,
    output_names: Vec<String>,
}

impl TractBackend {
    pub(crate) fn open(path: &Path) -> Result<TractBackend> {
        let ctx = || format!("{}: tract cannot load this ONNX model", path.display());
        // Keep the model's own input facts: forcing a concrete batch fails on
        // files whose value_info keeps a symbolic batch axis.
        let typed = tract_onnx::onnx().model_for_path(path).with_context(ctx)?.into_typed().with_context(ctx)?;
        if typed.inputs.len() != 1 {
            anyhow::bail!("{}: teacher has {} inputs; tinykd needs exactly one", path.display(), typed.inputs.len());
        }
        let fact = typed.input_fact(0).with_context(ctx)?;
        let input_dims =
            fact.shape.iter().map(|d| d.to_i64().ok().map_or(Dim::Symbolic, |v| Dim::Fixed(v as usize))).collect();
        let output_names = typed.outputs.iter().map(|o| typed.node(o.node).name.clone()).collect::<Vec<_>>();
        let output_names = output_names
            .into_iter()
            .enumerate()
            .map(|(i, n)| typed.outlet_label(typed.outputs[i]).map(str::to_owned).unwrap_or(n))
            .collect();
        let model = typed.into_optimized().with_context(ctx)?.into_runnable().with_context(ctx)?;
        Ok(TractBackend { model, input_dims, output_names })
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
        let input = Tensor::from_shape(shape, x)?;
        let outputs = self.model.run(tvec!(input.into()))?;
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
