//! What every board's `build.rs` does: embed the student named by
//! `TINYKD_MODEL` (a `.tkd` file), validated by the runtime's own parser,
//! and emit its sizes so the arena is exactly as large as the exporter
//! planned and only the kernels of the model's operators are linked; copy
//! the board's `memory.x` where the linker finds it.

use std::env;
use std::fs;
use std::path::PathBuf;

/// Runs the board build script. `memory_x`: the board's memory layout file
/// (relative to its crate).
pub fn embed_model(memory_x: &str) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=TINYKD_MODEL");
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
}
