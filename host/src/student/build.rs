//! A student from its spec: each layer initialised on the shape before it,
//! and whatever the firmware cannot run (a BatchNorm or activation with
//! nothing to fold into, a window that does not fit, a residual block
//! whose two branches cannot be added) refused here, naming the layer,
//! before any training starts.

use anyhow::{Result, bail};
use rand::Rng;

use super::residual::Add;
use super::spec::{self, LayerSpec, Padding};
use super::{BatchNorm, Conv, Dense, Depthwise, Device, Layer, Pool, PoolKind, Shape, Student, activation, geometry};
use super::{dropout, flatten, pool};

/// The layers built so far, and what every check needs.
struct Builder<'a, R> {
    spec: &'a str,
    /// Rank of the input samples (2-D layers need `[C, H, W]` ones).
    input_rank: usize,
    layers: Vec<Layer>,
    shapes: Vec<Shape>,
    rng: &'a mut R,
}

impl Student {
    pub(super) fn build(
        spec: &str,
        input_shape: &[usize],
        classes: Option<usize>,
        rng: &mut impl Rng,
    ) -> Result<Student> {
        let parsed = spec::parse_tokens(spec)?;
        let mut specs = parsed.layers;
        // A named architecture ends in its features: the class layer is the task's.
        if let (true, Some(classes)) = (parsed.named_last, classes) {
            specs.push(LayerSpec::Dense { units: classes });
        }
        // Blocks and architectures are kept (and printed) as the layers
        // they expand to.
        let expanded = if parsed.expanded { spec::to_string(&specs) } else { spec.to_owned() };
        let spec = expanded.as_str();
        let Some(shape) = geometry::as_chw(input_shape) else {
            bail!("input shape {input_shape:?} is not supported: students take [L], [C, L] or [C, H, W] samples");
        };
        let mut b = Builder { spec, input_rank: input_shape.len(), layers: Vec::new(), shapes: vec![shape], rng };
        b.push_all(&specs, 0)?;
        let Builder { layers, shapes, .. } = b;
        let Some(classes) = classes else {
            let classes = shapes.last().map_or(0, |s| s.iter().product());
            return Ok(Student { spec: spec.to_owned(), input_shape: input_shape.to_vec(), classes, layers, shapes });
        };
        match layers.iter().rev().find(|l| l.device() != Device::Nothing) {
            Some(Layer::Dense(d)) if d.outputs == classes => {}
            Some(Layer::Dense(d)) => bail!(
                "student spec '{spec}': the last dense layer has {} outputs but there are {classes} classes (end with dense({classes}))",
                d.outputs
            ),
            _ => bail!("student spec '{spec}': must end with dense({classes}) producing the class logits"),
        }
        Ok(Student { spec: spec.to_owned(), input_shape: input_shape.to_vec(), classes, layers, shapes })
    }
}

impl<R: Rng> Builder<'_, R> {
    fn shape(&self) -> Shape {
        self.shapes.last().copied().unwrap_or([0; 3])
    }

    /// Builds `specs` in order; layers from `start` on are in the same
    /// block (a BatchNorm or activation cannot fold into a layer outside it).
    fn push_all(&mut self, specs: &[LayerSpec], start: usize) -> Result<()> {
        for s in specs {
            let layer = self.layer(s, start)?;
            let shape = layer.kind().out_shape(self.shape());
            if shape.contains(&0) {
                bail!(
                    "student spec '{}': {} does not fit its input of shape [C, H, W] = {:?}",
                    self.spec,
                    s.to_spec_string(),
                    self.shape()
                );
            }
            self.layers.push(layer);
            self.shapes.push(shape);
        }
        Ok(())
    }

    fn layer(&mut self, s: &LayerSpec, start: usize) -> Result<Layer> {
        let (spec, shape) = (self.spec, self.shape());
        let name = s.to_spec_string();
        let too_small =
            || anyhow::anyhow!("student spec '{spec}': {name} does not fit its input of shape [C, H, W] = {shape:?}");
        let one_d = |what: &str| -> Result<()> {
            if shape[1] != 1 {
                bail!(
                    "student spec '{spec}': {what} needs 1-D input [C, L], got [C, H, W] = {shape:?} (use the 2-D layer)"
                );
            }
            Ok(())
        };
        // 2-D layers need 2-D samples; a 2-D map may shrink to one row
        // (MobileNet's last blocks at 32×32).
        let input_rank = self.input_rank;
        let two_d = |what: &str| -> Result<()> {
            if input_rank < 3 {
                bail!(
                    "student spec '{spec}': {what} needs 2-D input [C, H, W], got 1-D [C, L] = [{}, {}] (use the 1-D layer)",
                    shape[0],
                    shape[2]
                );
            }
            Ok(())
        };
        // What a BatchNorm or an activation would fold into.
        let prev = if self.layers.len() > start { self.layers.last() } else { None };
        let rng = &mut *self.rng;
        Ok(match s {
            LayerSpec::Dense { units } => Layer::Dense(Dense::new(shape.iter().product(), *units, rng)),
            LayerSpec::Conv1d { channels, kernel, stride, padding } => {
                one_d("conv1d")?;
                Layer::Conv(
                    Conv::new(shape, *channels, [1, *kernel], [*stride; 2], *padding, rng).ok_or_else(too_small)?,
                )
            }
            LayerSpec::Conv2d { channels, kernel, stride, padding } => {
                two_d("conv2d")?;
                Layer::Conv(Conv::new(shape, *channels, *kernel, *stride, *padding, rng).ok_or_else(too_small)?)
            }
            LayerSpec::Dwconv1d { kernel, stride, padding } => {
                one_d("dwconv1d")?;
                Layer::Depthwise(
                    Depthwise::new(shape, [1, *kernel], [*stride; 2], *padding, rng).ok_or_else(too_small)?,
                )
            }
            LayerSpec::Dwconv2d { kernel, stride, padding } => {
                two_d("dwconv2d")?;
                Layer::Depthwise(Depthwise::new(shape, *kernel, *stride, *padding, rng).ok_or_else(too_small)?)
            }
            LayerSpec::Maxpool { size, stride } | LayerSpec::Avgpool { size, stride } => {
                let kind = if matches!(s, LayerSpec::Maxpool { .. }) { PoolKind::Max } else { PoolKind::Avg };
                // Over 1-D input a pool's window is one row: `avgpool(5)`
                // or `avgpool(1x5)`.
                let (k, stride) = match (shape[1], size) {
                    (1, [h, w]) if *h == *w || *h == 1 => ([1, *w], *stride),
                    (1, _) => bail!(
                        "student spec '{spec}': {name} over 1-D input [C, L] = [{}, {}] takes one size (or 1xL), got {}x{}",
                        shape[0],
                        shape[2],
                        size[0],
                        size[1]
                    ),
                    _ => (*size, *stride),
                };
                Layer::Pool(Pool::new(kind, shape, k, stride, Padding::Valid).ok_or_else(too_small)?)
            }
            LayerSpec::Gap => Layer::Gap(pool::Gap { shape }),
            LayerSpec::Bn => {
                if !prev.is_some_and(Layer::is_weighted) {
                    bail!(
                        "student spec '{spec}': bn must directly follow dense, conv or dwconv (it is folded into it on the device)"
                    );
                }
                Layer::BatchNorm(BatchNorm::new(shape[0], shape[1] * shape[2]))
            }
            LayerSpec::Relu | LayerSpec::Relu6 => {
                if !prev.is_some_and(|l| matches!(l.device(), Device::Weighted | Device::Folded | Device::Add)) {
                    bail!(
                        "student spec '{spec}': {name} must directly follow dense, conv, dwconv, bn or res(…) (it is fused into it on the device)"
                    );
                }
                if *s == LayerSpec::Relu {
                    Layer::Relu(activation::Relu {})
                } else {
                    Layer::Relu6(activation::Relu6 {})
                }
            }
            LayerSpec::Flatten => Layer::Flatten(flatten::Flatten {}),
            LayerSpec::Dropout { p } => Layer::Dropout(dropout::Dropout { p: *p }),
            LayerSpec::Res { body } => return self.residual(body, &name),
        })
    }

    /// The layers of a residual block's body, then its addition (with a
    /// projection when the body changes the shape).
    fn residual(&mut self, body: &[LayerSpec], name: &str) -> Result<Layer> {
        let spec = self.spec;
        let from = self.layers.len();
        let input = self.shape();
        self.push_all(body, from)?;
        let layers = &self.layers[from..];
        if !layers.iter().any(|l| matches!(l.device(), Device::Weighted | Device::Add)) {
            bail!(
                "student spec '{spec}': {name} has no dense, conv or dwconv layer in its body: nothing to add its input to"
            );
        }
        let output = self.shape();
        if output == input {
            return Ok(Layer::Add(Add { from, shape: output, projection: None }));
        }
        // The body's stride: what its windows multiply to, per axis.
        let stride = layers.iter().fold([1, 1], |s, l| {
            let t = match l {
                Layer::Conv(c) => c.stride,
                Layer::Depthwise(d) => d.stride,
                Layer::Pool(p) => p.stride,
                _ => [1, 1],
            };
            [s[0] * t[0], s[1] * t[1]]
        });
        let projection = Conv::new(input, output[0], [1, 1], stride, Padding::Same, self.rng)
            .filter(|p| p.out_shape() == output)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "student spec '{spec}': {name} cannot add its input [C, H, W] = {input:?} to its output {output:?} \
                     (a 1×1 projection with the block's stride {}x{} does not give that shape)",
                    stride[0],
                    stride[1]
                )
            })?;
        Ok(Layer::Add(Add { from, shape: output, projection: Some(projection) }))
    }
}
