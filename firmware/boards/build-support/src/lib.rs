//! What every board's `build.rs` does: embed the student named by
//! `TINYKD_MODEL` (a `.tkd` file), validated by the runtime's own parser,
//! compiled into a constant layer table (`model_compiled.rs`, see
//! `tinykd_runtime::compiled`), and emit its sizes so the arena is exactly
//! as large as the exporter planned and only the kernels of the model's
//! operators are linked; copy the board's `memory.x` where the linker
//! finds it.

use std::env;
use std::fs;
use std::path::PathBuf;

/// How the firmware runs its model; `TINYKD_ENGINE` (`compiled`,
/// `specialized`, `interpreted`) overrides the crate's default. All three
/// are bit-identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The constant layer table, every layer through the shared kernels:
    /// the smallest image at opt-level "s" when some layer still takes the
    /// general convolution (see the README).
    Compiled,
    /// The table plus one function per layer with its own kernel copy,
    /// specialised by LLVM to the layer's shape: faster, a shallower stack,
    /// and at opt-level 3 about the same flash (the board crates' default).
    Specialized,
    /// The `.tkd` embedded and parsed at boot (`Model::from_validated`).
    Interpreted,
}

/// Runs the board build script with the boards' default engine,
/// [`Engine::Specialized`]. `memory_x`: the board's memory layout file
/// (relative to its crate).
pub fn embed_model(memory_x: &str) {
    embed_model_with(memory_x, Engine::Specialized)
}

/// [`embed_model`] with the crate's own default engine (e.g. the smallest
/// image's, [`Engine::Compiled`]).
pub fn embed_model_with(memory_x: &str, default: Engine) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=TINYKD_MODEL");
    println!("cargo:rerun-if-env-changed=TINYKD_ENGINE");
    println!("cargo::rustc-check-cfg=cfg(tinykd_interpreted)");
    // A clock self-test image instead of the serve loop (see the board
    // macros in `tinykd-board`): the emulator tests build it to read the
    // cycle counter across thousands of wraps.
    println!("cargo:rerun-if-env-changed=TINYKD_CLOCK_TEST");
    println!("cargo::rustc-check-cfg=cfg(tinykd_clock_test)");
    if env::var_os("TINYKD_CLOCK_TEST").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo::rustc-cfg=tinykd_clock_test");
    }
    let engine = match env::var("TINYKD_ENGINE").as_deref() {
        Err(_) => default,
        Ok("compiled") => Engine::Compiled,
        Ok("specialized") => Engine::Specialized,
        Ok("interpreted") => Engine::Interpreted,
        Ok(other) => panic!("TINYKD_ENGINE={other}: expected `compiled`, `specialized` or `interpreted`"),
    };
    if engine == Engine::Interpreted {
        println!("cargo::rustc-cfg=tinykd_interpreted");
    }
    let specialize = engine == Engine::Specialized;
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
    // Built for size (the profile's opt-level, which cargo passes build
    // scripts): the specialised model as straight-line calls (see
    // `compiled_source`).
    let small = matches!(env::var("OPT_LEVEL").as_deref(), Ok("s" | "z"));
    // Paths in the table go through `__tinykd`, the alias `embedded_model!` defines.
    let compiled = tinykd_runtime::codegen::compiled_source(&model, "__tinykd", specialize, small)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::write(out.join("model_compiled.rs"), compiled).expect("write model_compiled.rs");
}
