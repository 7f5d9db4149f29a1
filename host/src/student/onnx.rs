//! The ONNX graph builder layers write themselves into (see
//! [`super::LayerKind::onnx`]), with the ONNX message types tract already
//! carries (`tract_onnx::pb`), encoded by `prost`. The float export
//! (`export::onnx`) strings the layers together; the int8 QDQ export uses
//! the same builder.

use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto, tensor_proto, tensor_shape_proto, type_proto,
};

use super::Shape;
use super::geometry::window2d;
use super::spec::Padding;
use crate::data::Layout;

/// Where the float graph stands before a layer: its input's `[C, H, W]`,
/// whether the graph is 1-D (`[N, C, L]`) and whether the activation is
/// flat already.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub shape: Shape,
    pub one_d: bool,
    pub flat: bool,
}

impl Cursor {
    /// A window's kernel dimensions as the graph's convolutions and pools take them.
    pub fn kernel_dims(&self, k: [usize; 2]) -> Vec<usize> {
        if self.one_d { vec![k[1]] } else { vec![k[0], k[1]] }
    }

    /// Flattens the activation, once.
    pub fn flatten(&mut self, b: &mut Builder) {
        if !self.flat {
            b.op("Flatten", &[], vec![attr_int("axis", 1)]);
            self.flat = true;
        }
    }
}

const OPSET: i64 = 13;

#[derive(Debug)]
pub struct Builder {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    /// The current activation's name.
    pub x: String,
    pub count: usize,
    /// The name of each activation written so far (`Student::activations`'
    /// numbering; residual additions read earlier ones).
    pub activations: Vec<String>,
    /// Declared input shape (`None`: the batch axis).
    input_dims: Vec<Option<usize>>,
}

pub fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: v.iter().map(|x| *x as i64).collect(),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_proto::AttributeType::Int as i32, i: v, ..Default::default() }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

pub fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
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
    pub fn new(layout: Layout, internal: &[usize], [c, h, w]: [usize; 3], one_d: bool) -> Builder {
        let stored = layout.to_stored_shape(internal);
        let mut b = Builder {
            nodes: Vec::new(),
            inits: Vec::new(),
            x: "input".into(),
            count: 0,
            activations: Vec::new(),
            input_dims: vec![None],
        };
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
    pub fn finish(mut self, name: &str, doc: String, classes: usize) -> Vec<u8> {
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

    pub fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{what}_{}", self.count)
    }

    pub fn init_f32(&mut self, what: &str, dims: &[usize], values: &[f32]) -> String {
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
    pub fn init_raw(&mut self, what: &str, dims: &[usize], data_type: tensor_proto::DataType, raw: Vec<u8>) -> String {
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

    pub fn init_i64(&mut self, what: &str, values: &[i64]) -> String {
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
    pub fn op(&mut self, op: &str, extra: &[String], attrs: Vec<AttributeProto>) {
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
pub fn window_attrs(
    shape: [usize; 3],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    one_d: bool,
) -> Vec<AttributeProto> {
    let (out, before) = window2d(shape, kernel, stride, padding);
    let after = |axis: usize| {
        ((out[axis].max(1) - 1) * stride[axis] + kernel[axis]).saturating_sub(shape[axis + 1] + before[axis])
    };
    if one_d {
        vec![
            attr_ints("kernel_shape", &[kernel[1]]),
            attr_ints("strides", &[stride[1]]),
            attr_ints("pads", &[before[1], after(1)]),
        ]
    } else {
        vec![
            attr_ints("kernel_shape", &kernel),
            attr_ints("strides", &stride),
            attr_ints("pads", &[before[0], before[1], after(0), after(1)]),
        ]
    }
}
