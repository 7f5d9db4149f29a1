//! A validated model as Rust source, for firmware that compiles it in (see
//! [`crate::compiled`]): a board's build script and `tinykd export
//! --format rust` write it. Host-side only (`codegen` feature, needs
//! `alloc`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::kernels::{ChannelQuant, SharedMultiplier};
use crate::{Error, Model, QuantParams};

/// Rust source of `model` compiled into a constant layer table: one
/// `static` array per weight tensor and channel table (`COMPILED_W<i>`,
/// `COMPILED_C<i>`), each layer's step as a `const` (`COMPILED_STEP<i>`),
/// the table (`COMPILED_LAYERS`) and `COMPILED`, a
/// [`Compiled`](crate::Compiled)`<'static, MODEL_OPS>` over them, which
/// the including code defines `MODEL_OPS` for. `krate` is the path the
/// source names this crate by (`tinykd_runtime`, or an alias).
///
/// `specialize`: also one function per layer (`compiled_layer_<i>`) that
/// runs it with its own copy of its kernel, which LLVM specialises to the
/// layer's constant shape: faster, more flash (measured in the README). The channel tables are then decoded
/// at compile time (`COMPILED_P<i>`, see
/// [`PreparedChannel`](crate::kernels::PreparedChannel), or
/// `COMPILED_S<i>`, [`SharedMultiplier`]) and the raw ones are `const`s,
/// not in the image.
///
/// `straight_line` (with `specialize`; for a build optimised for size):
/// `compiled_run` calls the layer functions one after the other on
/// constant arena ranges (see `model_function`), and LLVM inlines them
/// into it (microflow's shape at opt-level "s": 392 B less flash).
/// Otherwise `COMPILED_FNS` lists them for the plan's loop
/// ([`crate::compiled::Specialized::Layers`]): at opt-level 3 the
/// straight-line form was 1.5 KB larger (the main job on the M3) for 1 %
/// fewer instructions.
pub fn compiled_source(model: &Model<'_>, krate: &str, specialize: bool, straight_line: bool) -> Result<String, Error> {
    let mut src = String::new();
    let mut layers = String::new();
    // One table type serves every layer; the shared-multiplier form only
    // when every layer with a table has one (per-tensor weight scales).
    let mut shared = specialize;
    for i in 0..model.layer_count() {
        // The table the step reads (a convolution-add's own entries, not the addition's).
        let table = model.compiled_layer(i)?.step.channels();
        shared &= table.is_none_or(|t| SharedMultiplier::shared_by(t).is_some());
    }
    let table_type = if shared {
        format!("&'static {krate}::kernels::SharedMultiplier")
    } else if specialize {
        format!("&'static [{krate}::kernels::PreparedChannel]")
    } else {
        "&'static [u8]".into()
    };
    let w = &mut src;
    let _ = writeln!(
        w,
        "// The embedded student compiled by tinykd-board-build from its .tkd (CRC-32 {:#010x}).",
        model.crc()
    );
    for i in 0..model.layer_count() {
        let record = model.layer(i)?;
        let layer = model.compiled_layer(i)?;
        // The table the step reads (see above).
        let table = layer.step.channels().unwrap_or_default();
        let n = table.len() / crate::format::CHANNEL_ENTRY_LEN;
        let mut tensors = |weights: &[i8]| {
            let _ = writeln!(w, "static COMPILED_W{i}: [i8; {}] = {:?};", weights.len(), weights);
            let channels = if let Some((m, e)) = SharedMultiplier::shared_by(table).filter(|_| shared) {
                // The biases alone; the multiplier a constant in the code.
                let biases: Vec<i32> = (0..n).filter_map(|o| ChannelQuant::read(table, o)).map(|q| q.bias).collect();
                let _ = writeln!(
                    w,
                    "static COMPILED_S{i}: {krate}::kernels::SharedMultiplier<[i32; {n}]> = \
                     {krate}::kernels::SharedMultiplier {{ \
                     multiplier: {krate}::requant::QuantizedMultiplier::new({m}, {e}), biases: {biases:?} }};"
                );
                format!("&COMPILED_S{i}")
            } else if specialize {
                // Decoded at compile time (see `kernels::PreparedChannel`):
                // only the prepared table is in the image.
                let _ = writeln!(w, "const COMPILED_C{i}: [u8; {}] = {:?};", table.len(), table);
                let _ = writeln!(
                    w,
                    "static COMPILED_P{i}: [{krate}::kernels::PreparedChannel; {n}] = \
                     {krate}::kernels::prepare_channels::<{n}>(&COMPILED_C{i});"
                );
                format!("&COMPILED_P{i}")
            } else {
                let _ = writeln!(w, "static COMPILED_C{i}: [u8; {}] = {:?};", table.len(), table);
                format!("&COMPILED_C{i}")
            };
            format!("weights: &COMPILED_W{i}, channels: {channels}")
        };
        let step = layer.step.source(&record, krate, &mut tensors);
        // Each step is also a constant of its own: a layer function runs
        // its step from there, so only what the kernel still reads through
        // a reference (the parameters) stays in the image, not the whole
        // layer table.
        let _ = writeln!(w, "const COMPILED_STEP{i}: {krate}::compiled::Step<'static, {table_type}> = {step};");
        let _ = writeln!(
            layers,
            "    {krate}::compiled::CompiledLayer {{ step: COMPILED_STEP{i}, wiring: {} }},",
            layer.wiring.source(krate)
        );
    }
    let id = model.identity();
    let quant = |q: QuantParams| {
        format!(
            "{krate}::QuantParams {{ scale: f32::from_bits({:#010x}), zero_point: {} }}",
            q.scale.to_bits(),
            q.zero_point
        )
    };
    let _ = write!(
        w,
        "static COMPILED_LAYERS: [{krate}::compiled::CompiledLayer<'static, {table_type}>; {}] = [\n{layers}];\n\
         /// The embedded model as a constant layer table: what `MODEL` holds, run without parsing it.\n\
         #[allow(dead_code)]\n\
         static COMPILED: {krate}::Compiled<'static, MODEL_OPS, {table_type}> = {krate}::Compiled {{\n    \
         layers: &COMPILED_LAYERS,\n    \
         identity: {krate}::Identity {{ crc: {:#010x}, blob_len: {}, input_len: {}, input_rank: {}, \
         input_dims: {:?}, class_count: {}, arena_bytes: {}, input: {}, output: {} }},\n    \
         ops: {:#x},\n    \
         specialized: {},\n}};\n",
        model.layer_count(),
        id.crc,
        id.blob_len,
        id.input_len,
        id.input_rank,
        id.input_dims,
        id.class_count,
        id.arena_bytes,
        quant(id.input),
        quant(id.output),
        model.ops(),
        match (specialize, straight_line) {
            (false, _) => String::from("None"),
            (true, false) => format!("Some({krate}::compiled::Specialized::Layers(&COMPILED_FNS))"),
            (true, true) => format!("Some({krate}::compiled::Specialized::Model(compiled_run))"),
        }
    );
    if specialize {
        for i in 0..model.layer_count() {
            // A convolution whose filter fits is gathered into a buffer of
            // exactly its length (see `kernels::conv_gathered`); a fully
            // connected layer's rows are read at constant offsets (see
            // `kernels::fully_connected::fully_connected_layer`).
            let window = model.compiled_layer(i)?.step.window();
            let _ = writeln!(
                w,
                "fn compiled_layer_{i}(single: bool, x: &[i8], y: &mut [i8]) -> Result<(), {krate}::Error> {{\n    \
                 COMPILED_STEP{i}.run_layer::<MODEL_OPS, {i}, {window}>(single, x, y)\n}}"
            );
        }
        if straight_line {
            model_function(w, model, krate)?;
        } else {
            let mut fns = String::new();
            for i in 0..model.layer_count() {
                let _ = write!(
                    fns,
                    "{krate}::compiled::SpecializedLayer {{ run: compiled_layer_{i}, wiring: {} }}, ",
                    model.compiled_layer(i)?.wiring.source(krate)
                );
            }
            let _ = writeln!(
                w,
                "static COMPILED_FNS: [{krate}::compiled::SpecializedLayer; {}] = [{fns}];",
                model.layer_count()
            );
        }
    }
    Ok(src)
}

/// `compiled_run`, a specialised model's [`ModelFn`](crate::compiled::ModelFn):
/// every layer function called in turn on the tensors of its constant
/// wiring (through [`crate::compiled::connect`], which LLVM folds to
/// constant slices of the arena), so the firmware holds straight-line
/// calls instead of the plan's loop and a table of layer functions.
fn model_function(w: &mut String, model: &Model<'_>, krate: &str) -> Result<(), Error> {
    let (total, input) = (model.arena_bytes(), model.input_len());
    let _ = write!(
        w,
        "/// The specialised model: every layer on its constant arena range.\n\
         fn compiled_run<'b>(single: bool, x: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], {krate}::Error> {{\n    \
         let found = arena.len();\n    \
         let Some(arena) = arena.get_mut(..{total}).and_then(|a| <&mut [u8; {total}]>::try_from(a).ok()) else {{\n        \
         return Err({krate}::Error::ArenaTooSmall {{ needed: {total}, found }});\n    }};\n    \
         if x.len() != {input} {{\n        \
         return Err({krate}::Error::InputLength {{ expected: {input}, found: x.len() }});\n    }}\n"
    );
    let mut last = (0usize, 0usize);
    for i in 0..model.layer_count() {
        let wiring = model.compiled_layer(i)?.wiring;
        let _ = writeln!(
            w,
            "    {{\n        let (x, y) = {krate}::compiled::connect(x, &mut arena[..], {})?;\n        \
             compiled_layer_{i}(single, x, y)?;\n    }}",
            wiring.source(krate)
        );
        last = wiring.output;
    }
    let _ = writeln!(w, "    Ok({krate}::as_i8(&arena[{}..{}]))\n}}", last.0, last.1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the source must say for a model of every operator; that it
    /// compiles and runs bit-exactly is the boards test's part (every board
    /// build compiles it).
    #[test]
    fn every_layer_becomes_a_step_over_its_own_tensors() {
        let blob = crate::model::test_blob();
        let model = Model::from_bytes(&blob).unwrap();
        let src = compiled_source(&model, "rt", false, false).unwrap();
        for kind in ["Conv", "Depthwise", "FullyConnected", "MaxPool", "AvgPool", "GlobalAvgPool"] {
            assert!(src.contains(&format!("rt::compiled::Step::{kind}")), "{kind} missing:\n{src}");
        }
        for i in 0..model.layer_count() {
            let l = model.layer(i).unwrap();
            if l.weights_len > 0 {
                assert!(src.contains(&format!("static COMPILED_W{i}: [i8; {}] = [", l.weights_len)), "layer {i}");
                let table = l.channel_count * crate::format::CHANNEL_ENTRY_LEN;
                assert!(src.contains(&format!("static COMPILED_C{i}: [u8; {table}] = [")), "layer {i}");
            }
        }
        assert!(src.contains("layers: &COMPILED_LAYERS"));
        assert!(src.contains(&format!("crc: {:#010x}, blob_len: {}", model.crc(), blob.len())));
        assert!(src.contains(&format!("ops: {:#x}", model.ops())));
        assert!(!src.contains("__tinykd"), "paths use the given crate name");
        assert!(src.contains("specialized: None") && !src.contains("compiled_run") && !src.contains("COMPILED_FNS"));
        assert!(src.contains("channels: &COMPILED_C") && !src.contains("COMPILED_P"));
        assert!(src.contains("Compiled<'static, MODEL_OPS, &'static [u8]>"));
        let src = compiled_source(&model, "rt", true, false).unwrap();
        assert!(src.contains("specialized: Some(rt::compiled::Specialized::Layers(&COMPILED_FNS))"));
        let wiring = model.compiled_layer(5).unwrap().wiring.source("rt");
        assert!(src.contains(&format!("rt::compiled::SpecializedLayer {{ run: compiled_layer_5, wiring: {wiring} }}")));
        assert!(!src.contains("compiled_run"));
        let src = compiled_source(&model, "rt", true, true).unwrap();
        assert!(src.contains("specialized: Some(rt::compiled::Specialized::Model(compiled_run))"));
        assert!(!src.contains("COMPILED_FNS"));
        // Each layer on its wiring's constant tensors: outputs of 144, 36,
        // 36, 16, 4 and 3 values, planned in 180 bytes.
        for line in [
            "fn compiled_run<'b>(single: bool, x: &[i8], arena: &'b mut [u8]) -> Result<&'b [i8], rt::Error> {",
            "<&mut [u8; 180]>::try_from(a)",
            "return Err(rt::Error::ArenaTooSmall { needed: 180, found });",
            "if x.len() != 72 {",
            "return Err(rt::Error::InputLength { expected: 72, found: x.len() });",
        ] {
            assert!(src.contains(line), "missing {line:?} in\n{src}");
        }
        let mut last = (0, 0);
        for i in 0..model.layer_count() {
            let wiring = model.compiled_layer(i).unwrap().wiring;
            let call = format!(
                "let (x, y) = rt::compiled::connect(x, &mut arena[..], {})?;\n        compiled_layer_{i}(single, x, y)?;",
                wiring.source("rt")
            );
            assert!(src.contains(&call), "missing {call:?} in\n{src}");
            last = wiring.output;
        }
        assert!(src.contains(&format!("Ok(rt::as_i8(&arena[{}..{}]))", last.0, last.1)));
        assert!(src.contains("Compiled<'static, MODEL_OPS, &'static [rt::kernels::PreparedChannel]>"));
        for i in 0..model.layer_count() {
            assert!(src.contains(&format!("run_layer::<MODEL_OPS, {i}, ")), "layer {i}");
            let l = model.layer(i).unwrap();
            if l.op == crate::format::Op::FullyConnected {
                // Its input length, for the four-row pass.
                let inputs = l.weights_len / l.channel_count;
                assert!(src.contains(&format!("run_layer::<MODEL_OPS, {i}, {inputs}>")), "layer {i}");
            }
            if l.weights_len > 0 {
                // The raw table only as a constant, decoded into the prepared one.
                let (n, table) = (l.channel_count, l.channel_count * crate::format::CHANNEL_ENTRY_LEN);
                assert!(src.contains(&format!("const COMPILED_C{i}: [u8; {table}] = [")), "layer {i}");
                assert!(!src.contains(&format!("static COMPILED_C{i}:")), "layer {i}");
                let prepared = format!(
                    "static COMPILED_P{i}: [rt::kernels::PreparedChannel; {n}] = \
                     rt::kernels::prepare_channels::<{n}>(&COMPILED_C{i});"
                );
                assert!(src.contains(&prepared), "layer {i}");
                assert!(src.contains(&format!("channels: &COMPILED_P{i} }}")), "layer {i}");
            }
        }
        assert!(!src.contains("SharedMultiplier"), "per-channel multipliers: {src}");
    }

    /// One multiplier per layer: a specialised model stores the biases and
    /// that multiplier (`SharedMultiplier`), the interpreted table the raw entries.
    #[test]
    fn per_tensor_layers_share_one_multiplier() {
        let blob = crate::model::test_blob_per_tensor();
        let model = Model::from_bytes(&blob).unwrap();
        let src = compiled_source(&model, "rt", true, false).unwrap();
        assert!(src.contains("Compiled<'static, MODEL_OPS, &'static rt::kernels::SharedMultiplier>"), "{src}");
        assert!(!src.contains("COMPILED_P") && !src.contains("COMPILED_C"), "{src}");
        let mut weighted = 0;
        for i in 0..model.layer_count() {
            let l = model.layer(i).unwrap();
            if l.channel_count == 0 {
                continue;
            }
            weighted += 1;
            let table = model.channel_table(&l);
            let (m, e) = SharedMultiplier::shared_by(table).unwrap();
            let biases: Vec<i32> = (0..l.channel_count).map(|o| ChannelQuant::read(table, o).unwrap().bias).collect();
            let want = format!(
                "static COMPILED_S{i}: rt::kernels::SharedMultiplier<[i32; {}]> = rt::kernels::SharedMultiplier {{ \
                 multiplier: rt::requant::QuantizedMultiplier::new({m}, {e}), biases: {biases:?} }};",
                l.channel_count
            );
            assert!(src.contains(&want), "layer {i}: {want}\n{src}");
            assert!(src.contains(&format!("channels: &COMPILED_S{i} }}")), "layer {i}");
        }
        assert_eq!(weighted, 3);
        let src = compiled_source(&model, "rt", false, false).unwrap();
        assert!(!src.contains("SharedMultiplier") && src.contains("channels: &COMPILED_C"));
    }
}
