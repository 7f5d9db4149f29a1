//! Embeds the student (`TINYKD_MODEL`, a `.tkd`) as the boards do, and for
//! microflow writes the glue its `#[model]` needs: the input tensor type
//! from the model's first layer, so one `main.rs` serves any student.
//! `PEER_INPUTS` (optional): int8 inputs, back to back, for `measure`.

use std::env;
use std::fs;
use std::path::PathBuf;

use tinykd_runtime::Model;
use tinykd_runtime::format::Op;

fn main() {
    // The boards' default engine, per-layer copies: on microflow's model it
    // is also the smaller image (every convolution gathered, the general
    // kernel not linked). The script passes TINYKD_ENGINE on to compare
    // the others.
    tinykd_board_build::embed_model_with("memory.x", tinykd_board_build::Engine::Specialized);
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let path = PathBuf::from(env::var_os("TINYKD_MODEL").expect("embed_model checked TINYKD_MODEL"));
    let bytes = fs::read(&path).expect("embed_model read the model");
    let model = Model::from_bytes(&bytes).expect("embed_model validated the model");
    let first = model.layer(0).expect("a model has a first layer");
    // microflow takes the TFLite export's input: [1, n] before a fully
    // connected layer, else [1, H, W, C] (channels last, as the device).
    let input = match first.op {
        Op::FullyConnected => format!(
            "let input: microflow::buffer::Buffer2D<i8, 1, {n}> = nalgebra::SMatrix::from_fn(|_, c| x[c]);",
            n = model.input_len()
        ),
        _ => {
            let p = first.params;
            let (h, w, c) = (p[0] as usize, p[1] as usize, p[2] as usize);
            format!(
                "let input: microflow::buffer::Buffer4D<i8, 1, {h}, {w}, {c}> = \
                 [nalgebra::SMatrix::from_fn(|r, col| core::array::from_fn(|k| x[(r * {w} + col) * {c} + k]))];"
            )
        }
    };
    fs::write(
        out.join("microflow_glue.rs"),
        format!(
            "#[microflow::model(\"model.tflite\")]\nstruct Student;\n\n\
             /// One inference through microflow: int8 input in, class out.\n\
             #[inline(never)]\n#[allow(clippy::identity_op)]\nfn infer(x: &[i8; INPUT_LEN]) -> usize {{\n    {input}\n    \
             let y = Student::predict_quantized(input);\n    argmax_f32(y.as_slice())\n}}\n"
        ),
    )
    .expect("write microflow_glue.rs");
    println!("cargo:rerun-if-changed=model.tflite");

    println!("cargo:rerun-if-env-changed=PEER_INPUTS");
    let inputs = match env::var_os("PEER_INPUTS") {
        Some(p) => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&p).display());
            fs::read(&p).unwrap_or_else(|e| panic!("PEER_INPUTS: {e}"))
        }
        None => Vec::new(),
    };
    if inputs.len() % model.input_len() != 0 {
        panic!("PEER_INPUTS holds {} bytes, not a whole number of {}-byte inputs", inputs.len(), model.input_len());
    }
    fs::write(out.join("inputs.bin"), inputs).expect("write inputs.bin");
}
