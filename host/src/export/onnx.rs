//! The float student as an ONNX model (opset 13), the way the data comes:
//! input `input` `[N, …stored sample shape]` (a channels-last dataset gets
//! a Transpose in front), output `logits` `[N, classes]`. Every layer maps
//! to one standard operator, so onnxruntime, tract and Netron open it; the
//! windows and paddings are tinykd's own (TFLite SAME: the extra padding
//! goes after), written out as explicit `pads`, and average pools exclude
//! padding (`count_include_pad = 0`) as the student and the device do.
//!
//! The protobuf is written with the ONNX message types tract already
//! carries (`tract_onnx::pb`), encoded by `prost`.

use anyhow::{Result, bail};
use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto, tensor_proto, tensor_shape_proto, type_proto,
};

use crate::data::Layout;
use crate::student::geometry::window2d;
use crate::student::spec::Padding;
use crate::student::{Layer, PoolKind, Student, batchnorm};

const OPSET: i64 = 13;

pub(super) struct Builder {
    pub(super) nodes: Vec<NodeProto>,
    pub(super) inits: Vec<TensorProto>,
    /// The current activation's name.
    pub(super) x: String,
    pub(super) count: usize,
    /// Declared input shape (`None`: the batch axis).
    input_dims: Vec<Option<usize>>,
}

pub(super) fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: v.iter().map(|x| *x as i64).collect(),
        ..Default::default()
    }
}

pub(super) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_proto::AttributeType::Int as i32, i: v, ..Default::default() }
}

pub(super) fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

pub(super) fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
                None => tensor_shape_proto::dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor_proto::DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Builder {
    /// A graph whose input `input` has the data's stored layout, turned into
    /// the channels-first `[N, C, L]` (`one_d`) or `[N, C, H, W]` the layers use.
    pub(super) fn new(layout: Layout, internal: &[usize], [c, h, w]: [usize; 3], one_d: bool) -> Builder {
        let stored = layout.to_stored_shape(internal);
        let mut b =
            Builder { nodes: Vec::new(), inits: Vec::new(), x: "input".into(), count: 0, input_dims: vec![None] };
        b.input_dims.extend(stored.iter().map(|d| Some(*d)));
        if layout == Layout::ChannelsLast && stored.len() >= 2 {
            let mut perm = vec![0usize, stored.len()];
            perm.extend(1..stored.len());
            b.op("Transpose", &[], vec![attr_ints("perm", &perm)]);
        }
        let target: Vec<i64> =
            if one_d { vec![-1, c as i64, w as i64] } else { vec![-1, c as i64, h as i64, w as i64] };
        let shape = b.init_i64("shape", &target);
        b.op("Reshape", &[shape], vec![]);
        b
    }

    /// The encoded model: the last node's output becomes `logits` `[N, classes]`.
    pub(super) fn finish(mut self, name: &str, doc: String, classes: usize) -> Vec<u8> {
        if let Some(last) = self.nodes.last_mut() {
            last.output = vec!["logits".into()];
        }
        let graph = GraphProto {
            name: name.into(),
            node: self.nodes,
            initializer: self.inits,
            input: vec![value_info("input", &self.input_dims)],
            output: vec![value_info("logits", &[None, Some(classes)])],
            doc_string: doc,
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "tinykd".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    pub(super) fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{what}_{}", self.count)
    }

    pub(super) fn init_f32(&mut self, what: &str, dims: &[usize], values: &[f32]) -> String {
        let name = self.name(what);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: tensor_proto::DataType::Float as i32,
            float_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// An initializer from raw little-endian bytes of `data_type`.
    pub(super) fn init_raw(
        &mut self,
        what: &str,
        dims: &[usize],
        data_type: tensor_proto::DataType,
        raw: Vec<u8>,
    ) -> String {
        let name = self.name(what);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    pub(super) fn init_i64(&mut self, what: &str, values: &[i64]) -> String {
        let name = self.name(what);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: tensor_proto::DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// Appends a node reading the current activation (plus `extra` inputs).
    pub(super) fn op(&mut self, op: &str, extra: &[String], attrs: Vec<AttributeProto>) {
        let out = self.name(&op.to_ascii_lowercase());
        let mut input = vec![self.x.clone()];
        input.extend_from_slice(extra);
        self.nodes.push(NodeProto {
            name: out.clone(),
            op_type: op.into(),
            input,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        self.x = out;
    }
}

/// The window attributes (`kernel_shape`, `strides`, `pads`) of a window on
/// `[C, H, W]`; 1-D (`[C, L]`) when `one_d`: ONNX pads are `[begin…, end…]`.
pub(super) fn window_attrs(
    shape: [usize; 3],
    kernel: [usize; 2],
    stride: usize,
    padding: Padding,
    one_d: bool,
) -> Vec<AttributeProto> {
    let (out, before) = window2d(shape, kernel, stride, padding);
    let after =
        |axis: usize| ((out[axis].max(1) - 1) * stride + kernel[axis]).saturating_sub(shape[axis + 1] + before[axis]);
    if one_d {
        vec![
            attr_ints("kernel_shape", &[kernel[1]]),
            attr_ints("strides", &[stride]),
            attr_ints("pads", &[before[1], after(1)]),
        ]
    } else {
        vec![
            attr_ints("kernel_shape", &kernel),
            attr_ints("strides", &[stride, stride]),
            attr_ints("pads", &[before[0], before[1], after(0), after(1)]),
        ]
    }
}

/// Encodes `student` as an ONNX model taking data in `layout`.
pub fn float_model(student: &Student, layout: Layout) -> Result<Vec<u8>> {
    // 1-D students stay [N, C, L] (tract's optimizer trips on a strided
    // convolution over an added unit axis); 2-D ones are [N, C, H, W].
    let one_d = student.shapes.iter().all(|s| s[1] == 1) && student.input_shape.len() <= 2;
    let mut b = Builder::new(layout, &student.input_shape, student.shapes[0], one_d);
    let kdims = |k: [usize; 2]| if one_d { vec![k[1]] } else { vec![k[0], k[1]] };
    let mut flat = false;
    for (i, layer) in student.layers.iter().enumerate() {
        let s = student.shapes[i];
        match layer {
            Layer::Dense(d) => {
                if !flat {
                    b.op("Flatten", &[], vec![attr_int("axis", 1)]);
                    flat = true;
                }
                let wt = b.init_f32("weight", &[d.outputs, d.inputs], &d.weight);
                let bias = b.init_f32("bias", &[d.outputs], &d.bias);
                b.op("Gemm", &[wt, bias], vec![attr_int("transB", 1)]);
            }
            Layer::Conv(cv) => {
                let dims = [&[cv.out_channels, s[0]][..], &kdims(cv.kernel)].concat();
                let wt = b.init_f32("weight", &dims, &cv.weight);
                let bias = b.init_f32("bias", &[cv.out_channels], &cv.bias);
                b.op("Conv", &[wt, bias], window_attrs(s, cv.kernel, cv.stride, cv.padding, one_d));
            }
            Layer::Depthwise(dw) => {
                let dims = [&[s[0], 1][..], &kdims(dw.kernel)].concat();
                let wt = b.init_f32("weight", &dims, &dw.weight);
                let bias = b.init_f32("bias", &[s[0]], &dw.bias);
                let mut attrs = window_attrs(s, dw.kernel, dw.stride, dw.padding, one_d);
                attrs.push(attr_int("group", s[0] as i64));
                b.op("Conv", &[wt, bias], attrs);
            }
            Layer::Pool(p) => {
                let mut attrs = window_attrs(s, p.size, p.stride, p.padding, one_d);
                let op = match p.kind {
                    PoolKind::Max => "MaxPool",
                    PoolKind::Avg => {
                        attrs.push(attr_int("count_include_pad", 0));
                        "AveragePool"
                    }
                };
                b.op(op, &[], attrs);
            }
            Layer::Gap { .. } => b.op("GlobalAveragePool", &[], vec![]),
            Layer::BatchNorm(bn) => {
                if flat {
                    bail!("BatchNorm after a dense layer has no ONNX form here (it folds into the dense layer)");
                }
                let g = b.init_f32("gamma", &[bn.channels], &bn.gamma);
                let be = b.init_f32("beta", &[bn.channels], &bn.beta);
                let m = b.init_f32("mean", &[bn.channels], &bn.running_mean);
                let v = b.init_f32("var", &[bn.channels], &bn.running_var);
                b.op("BatchNormalization", &[g, be, m, v], vec![attr_float("epsilon", batchnorm::EPS)]);
            }
            Layer::Relu => b.op("Relu", &[], vec![]),
            Layer::Relu6 => {
                let lo = b.init_f32("zero", &[], &[0.0]);
                let hi = b.init_f32("six", &[], &[6.0]);
                b.op("Clip", &[lo, hi], vec![]);
            }
            Layer::Flatten => {
                if !flat {
                    b.op("Flatten", &[], vec![attr_int("axis", 1)]);
                    flat = true;
                }
            }
            Layer::Dropout { .. } => {}
        }
    }
    if !flat {
        b.op("Flatten", &[], vec![attr_int("axis", 1)]);
    }
    Ok(b.finish("tinykd_student", format!("tinykd student: {}", student.spec), student.classes))
}
