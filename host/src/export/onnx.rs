//! The float student as an ONNX model (opset 13), the way the data comes:
//! input `input` `[N, …stored sample shape]` (a channels-last dataset gets
//! a Transpose in front), output `logits` `[N, classes]`. Every layer maps
//! to one standard operator, so onnxruntime, tract and Netron open it; the
//! windows and paddings are tinykd's own (TFLite SAME: the extra padding
//! goes after), written out as explicit `pads`, and average pools exclude
//! padding (`count_include_pad = 0`) as the student and the device do.
//!
//! Each layer writes its own nodes (`LayerKind::onnx`) through the graph
//! builder of `student::onnx`, which the QDQ export shares.

use anyhow::Result;

use crate::data::Layout;
use crate::student::Student;
use crate::student::onnx::Cursor;
pub(super) use crate::student::onnx::{Builder, attr_int, attr_ints, window_attrs};

/// Encodes `student` as an ONNX model taking data in `layout`.
pub fn float_model(student: &Student, layout: Layout) -> Result<Vec<u8>> {
    // 1-D students stay [N, C, L] (tract's optimizer trips on a strided
    // convolution over an added unit axis); 2-D ones are [N, C, H, W].
    let one_d = student.shapes.iter().all(|s| s[1] == 1) && student.input_shape.len() <= 2;
    let mut b = Builder::new(layout, &student.input_shape, student.shapes[0], one_d);
    let mut at = Cursor { shape: student.shapes[0], one_d, flat: false };
    for (layer, shape) in student.layers.iter().zip(&student.shapes) {
        at.shape = *shape;
        b.activations.push(b.x.clone());
        layer.kind().onnx(&mut b, &mut at)?;
    }
    at.flatten(&mut b);
    Ok(b.finish("tinykd_student", format!("tinykd student: {}", student.spec), student.classes))
}
