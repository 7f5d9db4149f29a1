//! `tinykd inspect FILE`: what is inside a dataset, a teacher or a `.tkd`.

use std::path::Path;

use anyhow::{Context, Result};
use tract_onnx::prelude::*;

use crate::data::{Dataset, LoadOptions, SplitName};

/// Prints a description of `path`, chosen by its extension.
pub fn inspect(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "onnx" => inspect_onnx(path),
        "tkd" => inspect_tkd(path),
        _ => inspect_data(path),
    }
}

fn inspect_data(path: &Path) -> Result<()> {
    if path.extension().is_some_and(|e| e == "npz") {
        let mut npz =
            npyz::npz::NpzArchive::open(path).with_context(|| format!("{}: cannot open as .npz", path.display()))?;
        let names: Vec<String> = npz.array_names().map(str::to_owned).collect();
        println!("{}: {} arrays", path.display(), names.len());
        for name in names {
            if let Ok(Some(a)) = npz.by_name(&name) {
                println!("  {name:<12} {:<6} {:?}", a.dtype().descr().trim_matches('\''), a.shape());
            }
        }
    }
    let d = Dataset::load(path, LoadOptions::default())?;
    println!("sample shape {:?}, {} classes", d.sample_shape, d.class_count);
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
        println!("  {:<9} {:>6} samples, x in [{lo:.3}, {hi:.3}], {balance}", name.as_str(), s.n);
    }
    Ok(())
}

fn inspect_onnx(path: &Path) -> Result<()> {
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .with_context(|| format!("{}: cannot read as ONNX", path.display()))?;
    let opsets: Vec<String> = proto
        .opset_import
        .iter()
        .map(|o| format!("{}{}", if o.domain.is_empty() { "ai.onnx" } else { &o.domain }, o.version))
        .collect();
    println!(
        "{}: ONNX IR {}, opsets {}, produced by {} {}",
        path.display(),
        proto.ir_version,
        opsets.join(" "),
        if proto.producer_name.is_empty() { "?" } else { &proto.producer_name },
        proto.producer_version
    );
    if let Some(g) = &proto.graph {
        let mut ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        ops.sort_unstable();
        ops.dedup();
        println!("  {} nodes; operators: {}", g.node.len(), ops.join(", "));
        let params: usize = g.initializer.iter().map(|t| t.dims.iter().product::<i64>().max(0) as usize).sum();
        println!("  {params} values in initializers");
        let external = g.initializer.iter().filter(|t| !t.external_data.is_empty()).count();
        if external > 0 {
            println!("  {external} tensors stored as external data");
        }
    }
    match tract_onnx::onnx().model_for_path(path) {
        Ok(m) => {
            for (i, o) in m.input_outlets()?.iter().enumerate() {
                println!("  input  {i}: {} {:?}", m.node(o.node).name, m.outlet_fact(*o)?);
            }
            for (i, o) in m.output_outlets()?.iter().enumerate() {
                println!(
                    "  output {i}: {} {:?}",
                    m.outlet_label(*o).unwrap_or(&m.node(o.node).name),
                    m.outlet_fact(*o)?
                );
            }
        }
        Err(e) => println!("  tract cannot load it: {e:#}"),
    }
    Ok(())
}

fn inspect_tkd(path: &Path) -> Result<()> {
    let bytes = crate::export::tkd::read(path)?;
    let m = tinykd_runtime::Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let iq = m.input_quant();
    let oq = m.output_quant();
    println!(
        "{}: tinykd model, format v{}, {} bytes, CRC ok",
        path.display(),
        tinykd_runtime::format::VERSION,
        bytes.len()
    );
    println!(
        "  input {:?} (int8, scale {} zero point {}), {} classes (scale {} zero point {})",
        m.input_shape(),
        iq.scale,
        iq.zero_point,
        m.class_count(),
        oq.scale,
        oq.zero_point
    );
    println!("  arena {} bytes", m.arena_bytes());
    for (i, l) in m.layers().enumerate() {
        let l = l.map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "  layer {i}: {:?} {} → {} values, {:?}, params {:?}, {} weights, clamp [{}, {}]",
            l.op, l.input_len, l.output_len, l.activation, l.params, l.weights_len, l.clamp.min, l.clamp.max
        );
    }
    Ok(())
}
