//! What every board's `build.rs` does: embed the student named by
//! `TINYKD_MODEL` (a `.tkd` file), validated by the runtime's own parser,
//! compiled into a constant layer table (`model_compiled.rs`, see
//! `tinykd_runtime::compiled`), and emit its sizes so the arena is exactly
//! as large as the exporter planned and only the kernels of the model's
//! operators are linked; copy the board's `memory.x` where the linker
//! finds it.

use std::fmt::Write as _;

use std::env;
use std::fs;
use std::path::PathBuf;

/// Runs the board build script. `memory_x`: the board's memory layout file
/// (relative to its crate).
pub fn embed_model(memory_x: &str) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=TINYKD_MODEL");
    // TINYKD_ENGINE=interpreted: the board parses the `.tkd` at boot and runs
    // it with `Model::run_with_ops` instead of the compiled table (for
    // comparing the two; both are bit-identical).
    println!("cargo:rerun-if-env-changed=TINYKD_ENGINE");
    println!("cargo::rustc-check-cfg=cfg(tinykd_interpreted)");
    match env::var("TINYKD_ENGINE").as_deref() {
        Ok("interpreted") => println!("cargo::rustc-cfg=tinykd_interpreted"),
        Ok("compiled") | Err(_) => {}
        Ok(other) => panic!("TINYKD_ENGINE={other}: expected `compiled` (the default) or `interpreted`"),
    }
    println!("cargo:rerun-if-changed={memory_x}");
    fs::copy(memory_x, out.join("memory.x")).unwrap_or_else(|e| panic!("{memory_x}: {e}"));
    println!("cargo:rustc-link-search={}", out.display());

    let Some(path) = env::var_os("TINYKD_MODEL") else {
        panic!("set TINYKD_MODEL=/path/to/student.tkd (written by `tinykd quantize`) to build this board");
    };
    let path = PathBuf::from(path);
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let model = tinykd_runtime::Model::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::write(out.join("model.tkd"), model.as_bytes()).expect("write model copy");
    fs::write(
        out.join("model_info.rs"),
        format!(
            "/// Length of the embedded model blob.\npub const MODEL_LEN: usize = {};\n\
             /// Arena the model needs, as planned at export.\npub const ARENA_BYTES: usize = {};\n\
             /// Int8 input elements per inference.\npub const INPUT_LEN: usize = {};\n\
             /// Output classes.\npub const CLASS_COUNT: usize = {};\n\
             /// Operators the model uses: only their kernels are linked.\n\
             pub const MODEL_OPS: u32 = {:#x};\n",
            model.as_bytes().len(),
            model.arena_bytes(),
            model.input_len(),
            model.class_count(),
            model.ops()
        ),
    )
    .expect("write model_info.rs");
    let compiled = compiled_source(&model).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::write(out.join("model_compiled.rs"), compiled).expect("write model_compiled.rs");
}

/// Rust source of the model compiled into a constant layer table: one
/// `static` array per weight tensor and channel table, and `COMPILED`, a
/// `tinykd_runtime::Compiled` over them. Paths go through `__tinykd`, an
/// alias of the runtime crate the including macro defines; `MODEL_OPS`
/// comes from `model_info.rs`.
pub fn compiled_source(model: &tinykd_runtime::Model<'_>) -> Result<String, tinykd_runtime::Error> {
    use tinykd_runtime::compiled::Step;
    let mut src = String::new();
    let mut layers = String::new();
    let w = &mut src;
    let _ = writeln!(
        w,
        "// The embedded student compiled by tinykd-board-build from its .tkd (CRC-32 {:#010x}).",
        model.crc()
    );
    for i in 0..model.layer_count() {
        let record = model.layer(i)?;
        let layer = model.compiled_layer(i)?;
        let clamp = format!("__tinykd::kernels::Clamp {{ min: {}, max: {} }}", record.clamp.min, record.clamp.max);
        let mut tensors = |weights: &[i8], channels: &[u8]| {
            let _ = writeln!(w, "static COMPILED_W{i}: [i8; {}] = {:?};", weights.len(), weights);
            let _ = writeln!(w, "static COMPILED_C{i}: [u8; {}] = {:?};", channels.len(), channels);
            format!("weights: &COMPILED_W{i}, channels: &COMPILED_C{i}")
        };
        let step = match layer.step {
            Step::Conv { weights, channels, .. } | Step::Depthwise { weights, channels, .. } => {
                let kind = if matches!(layer.step, Step::Conv { .. }) { "Conv" } else { "Depthwise" };
                let t = tensors(weights, channels);
                format!(
                    "Step::{kind} {{ params: __tinykd::compiled::conv({:?}, {}, {}, {clamp}), {t} }}",
                    record.params, record.input_zero_point, record.output.zero_point
                )
            }
            Step::FullyConnected { output_zero_point, weights, channels, .. } => {
                let t = tensors(weights, channels);
                format!("Step::FullyConnected {{ output_zero_point: {output_zero_point}, clamp: {clamp}, {t} }}")
            }
            Step::MaxPool(_) => format!("Step::MaxPool(__tinykd::compiled::pool({:?}, {clamp}))", record.params),
            Step::AvgPool(_) => format!("Step::AvgPool(__tinykd::compiled::pool({:?}, {clamp}))", record.params),
            Step::GlobalAvgPool { channels, .. } => format!("Step::GlobalAvgPool {{ channels: {channels}, clamp: {clamp} }}"),
        };
        let _ = writeln!(
            layers,
            "    __tinykd::compiled::CompiledLayer {{ step: __tinykd::compiled::{step}, output_len: {} }},",
            layer.output_len
        );
    }
    let id = model.identity();
    let quant = |q: tinykd_runtime::QuantParams| {
        format!(
            "__tinykd::QuantParams {{ scale: f32::from_bits({:#010x}), zero_point: {} }}",
            q.scale.to_bits(),
            q.zero_point
        )
    };
    let _ = write!(
        w,
        "static COMPILED_LAYERS: [__tinykd::compiled::CompiledLayer<'static>; {}] = [\n{layers}];\n\
         /// The embedded model as a constant layer table: what `MODEL` holds, run without parsing it.\n\
         #[allow(dead_code)]\n\
         static COMPILED: __tinykd::Compiled<'static, MODEL_OPS> = __tinykd::Compiled {{\n    \
         layers: &COMPILED_LAYERS,\n    \
         identity: __tinykd::Identity {{ crc: {:#010x}, blob_len: {}, input_len: {}, input_rank: {}, \
         input_dims: {:?}, class_count: {}, arena_bytes: {}, input: {}, output: {} }},\n    \
         ops: {:#x},\n}};\n",
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
        model.ops()
    );
    Ok(src)
}
