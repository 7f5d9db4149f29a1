//! `tinykd inspect FILE`: what is inside a dataset, a teacher, a `.tkd` or a
//! `.tflite` (its operators, and whether tinykd runs it).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use tract_onnx::prelude::*;

use crate::data::{Dataset, Layout, LoadOptions, SplitName};

/// A description of `path`, chosen by its extension.
pub fn inspect(path: &Path, layout: Layout) -> Result<String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mut o = String::new();
    match ext.as_str() {
        "onnx" => inspect_onnx(&mut o, path)?,
        "tkd" => inspect_tkd(&mut o, path)?,
        "tflite" => {
            let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            o = crate::export::tflite_import::describe(&bytes).with_context(|| format!("{}", path.display()))?;
        }
        _ => inspect_data(&mut o, path, layout)?,
    }
    Ok(o)
}

fn inspect_data(o: &mut String, path: &Path, layout: Layout) -> Result<()> {
    if path.extension().is_some_and(|e| e == "npz") {
        let mut npz =
            npyz::npz::NpzArchive::open(path).with_context(|| format!("{}: cannot open as .npz", path.display()))?;
        let names: Vec<String> = npz.array_names().map(str::to_owned).collect();
        writeln!(o, "{}: {} arrays", path.display(), names.len())?;
        for name in names {
            if let Ok(Some(a)) = npz.by_name(&name) {
                writeln!(o, "  {name:<12} {:<6} {:?}", a.dtype().descr().trim_matches('\''), a.shape())?;
            }
        }
    }
    let d = Dataset::load(path, LoadOptions { layout, ..LoadOptions::default() })?;
    writeln!(o, "sample shape {:?}, {} classes", d.stored_shape, d.class_count)?;
    writeln!(o, "{}", d.describe_layout())?;
    for name in [SplitName::Train, SplitName::Val, SplitName::Test, SplitName::Unlabeled] {
        let Ok(s) = d.split(name) else { continue };
        let balance = match &s.y {
            Some(y) => {
                let mut counts = vec![0usize; d.class_count];
                y.iter().for_each(|v| counts[*v as usize] += 1);
                format!("per class {counts:?}")
            }
            None => "unlabeled".into(),
        };
        let (lo, hi) = s.x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        writeln!(o, "  {:<9} {:>6} samples, x in [{lo:.3}, {hi:.3}], {balance}", name.as_str(), s.n)?;
    }
    Ok(())
}

fn inspect_onnx(o: &mut String, path: &Path) -> Result<()> {
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .with_context(|| format!("{}: cannot read as ONNX", path.display()))?;
    let opsets: Vec<String> = proto
        .opset_import
        .iter()
        .map(|o| format!("{}{}", if o.domain.is_empty() { "ai.onnx" } else { &o.domain }, o.version))
        .collect();
    writeln!(
        o,
        "{}: ONNX IR {}, opsets {}, produced by {} {}",
        path.display(),
        proto.ir_version,
        opsets.join(" "),
        if proto.producer_name.is_empty() { "?" } else { &proto.producer_name },
        proto.producer_version
    )?;
    if let Some(g) = &proto.graph {
        let mut ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        ops.sort_unstable();
        ops.dedup();
        writeln!(o, "  {} nodes; operators: {}", g.node.len(), ops.join(", "))?;
        let params: usize = g.initializer.iter().map(|t| t.dims.iter().product::<i64>().max(0) as usize).sum();
        writeln!(o, "  {params} values in initializers")?;
        let external = g.initializer.iter().filter(|t| !t.external_data.is_empty()).count();
        if external > 0 {
            writeln!(o, "  {external} tensors stored as external data")?;
        }
    }
    // The file's own declarations, as written (tract's facts before analysis
    // would show partly known shapes such as Keras's [N, 9] as "..,?").
    if let Some(g) = &proto.graph {
        let initializers: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = g.input.iter().filter(|v| !initializers.contains(v.name.as_str()));
        for (i, v) in inputs.enumerate() {
            writeln!(o, "  input  {i}: {} {}", v.name, describe_value_type(v.r#type.as_ref()))?;
        }
        for (i, v) in g.output.iter().enumerate() {
            writeln!(o, "  output {i}: {} {}", v.name, describe_value_type(v.r#type.as_ref()))?;
        }
    }
    if let Err(e) = crate::teacher::Teacher::open(path, crate::teacher::BackendChoice::Tract, None) {
        writeln!(o, "  tract cannot run it: {e:#}")?;
    }
    Ok(())
}

/// `float32 [N, 64]` for a tensor type (`?` for an unnamed unknown axis).
fn describe_value_type(t: Option<&tract_onnx::pb::TypeProto>) -> String {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value;
    let Some(Value::TensorType(t)) = t.and_then(|t| t.value.as_ref()) else {
        return "(not a tensor: a sequence or map)".into();
    };
    let dtype = match t.elem_type {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        _ => "other",
    };
    let Some(shape) = &t.shape else { return format!("{dtype} (shape not declared)") };
    let dims: Vec<String> = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(v)) => v.to_string(),
            Some(D::DimParam(p)) if !p.is_empty() => p.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("{dtype} [{}]", dims.join(", "))
}

fn inspect_tkd(o: &mut String, path: &Path) -> Result<()> {
    let bytes = crate::int8::read(path)?;
    let m = tinykd_runtime::Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let iq = m.input_quant();
    let oq = m.output_quant();
    writeln!(
        o,
        "{}: tinykd model, format v{}, {} bytes, CRC ok",
        path.display(),
        tinykd_runtime::format::VERSION,
        bytes.len()
    )?;
    writeln!(
        o,
        "  input {:?} (int8, scale {} zero point {}), {} classes (scale {} zero point {})",
        m.input_shape(),
        iq.scale,
        iq.zero_point,
        m.class_count(),
        oq.scale,
        oq.zero_point
    )?;
    writeln!(
        o,
        "  arena {} bytes (most alive at once: {}), model CRC-32 {:#010x}",
        m.arena_bytes(),
        crate::int8::liveness_bound(&m)?,
        m.crc()
    )?;
    writeln!(
        o,
        "  requantization rounds {}",
        if m.single_rounding() { "once (--rounding single)" } else { "twice, as TFLite Micro (--rounding tflm)" }
    )?;
    if let Some(layout) = crate::int8::data_layout(&bytes) {
        writeln!(
            o,
            "  trained on {} data (eval and emulate read data this way unless --layout says otherwise)",
            layout.as_str()
        )?;
    }
    for (i, l) in m.layers().enumerate() {
        let l = l.map_err(|e| anyhow::anyhow!("{e}"))?;
        let tensor = |t: u16| if t == 0 { "input".to_string() } else { format!("layer {}", t - 1) };
        let reads = match l.second_tensor {
            tinykd_runtime::format::NO_TENSOR => tensor(l.input_tensor),
            t => format!("{} + {}", tensor(l.input_tensor), tensor(t)),
        };
        writeln!(
            o,
            "  layer {i}: {:?} {} → {} values, {:?}, params {:?}, {} weights, clamp [{}, {}], reads {reads}, \
             writes arena {}..{}",
            l.op,
            l.input_len,
            l.output_len,
            l.activation,
            l.params,
            l.weights_len,
            l.clamp.min,
            l.clamp.max,
            l.output_offset,
            l.output_offset + l.output_len
        )?;
    }
    Ok(())
}
