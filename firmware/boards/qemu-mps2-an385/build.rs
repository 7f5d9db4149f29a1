//! Embeds the student named by `TINYKD_MODEL` (a `.tkd` file) into the
//! firmware, validated by the runtime's own parser, and emits its sizes so
//! the arena is exactly as large as the exporter planned and only the
//! kernels of the model's operators are linked.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=TINYKD_MODEL");
    println!("cargo:rerun-if-changed=memory.x");
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x is next to build.rs");
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
             pub const MODEL_OPS: tinykd_runtime::format::OpSet = {:#x};\n",
            model.as_bytes().len(),
            model.arena_bytes(),
            model.input_len(),
            model.class_count(),
            model.ops()
        ),
    )
    .expect("write model_info.rs");
}
