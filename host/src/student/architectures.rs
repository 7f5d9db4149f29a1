//! What a spec token stands for beyond one layer: blocks (`dsconv(…)`,
//! `res(…)`) and the named architectures of MLPerf Tiny (`ds-cnn-s`,
//! `resnet8`, `mobilenet-v1(W)`), each written out in the spec language
//! itself, so a student built from one prints the layers it is.

use anyhow::{Context, Result, bail};

use super::spec::{LayerSpec, Padding, parse_layer, parse_tokens, split_token};

/// Named architectures, as `tinykd` writes them: name, what it is.
pub const ARCHITECTURES: [(&str, &str); 3] = [
    ("ds-cnn-s[(W)]", "MLPerf Tiny's keyword-spotting DS-CNN: conv2d(64,k10x4,s2) bn relu, four dsconv(64,k3), gap"),
    (
        "resnet8[(W)]",
        "MLPerf Tiny's image-classification ResNet-8: conv2d(16,k3) bn relu, three residual stacks of 16, 32 (s2) and 64 (s2) channels, gap",
    ),
    (
        "mobilenet-v1(W)",
        "MobileNetV1 at width W (MLPerf Tiny's visual wake words: 0.25): conv2d(32,k3,s2) bn relu, 13 dsconv, gap",
    ),
];

/// What one token of a spec stands for.
pub(super) enum Expanded {
    /// One layer; `expanded` when blocks inside it were written out.
    Layer {
        layer: LayerSpec,
        expanded: bool,
    },
    Block(Vec<LayerSpec>),
    Architecture(Vec<LayerSpec>),
}

pub(super) fn expand(token: &str) -> Result<Expanded> {
    if let Some(inner) = residual_body(token) {
        let parsed = parse_tokens(inner).with_context(|| format!("in '{token}'"))?;
        if parsed.named_last || parsed.named {
            bail!("'{token}': a residual block's body is layers and blocks, not a named architecture");
        }
        return Ok(Expanded::Layer { layer: LayerSpec::Res { body: parsed.layers }, expanded: parsed.expanded });
    }
    // Only a residual body keeps its spaces (they separate its layers).
    let token: String = token.chars().filter(|c| !c.is_whitespace()).collect();
    let token = token.as_str();
    let (name, args) = split_token(token)?;
    let width = |args: &[&str], default: Option<f64>| -> Result<f64> {
        let w = match (args, default) {
            ([], Some(d)) => d,
            ([w], _) => {
                w.parse().with_context(|| format!("'{token}': the width multiplier must be a number, got '{w}'"))?
            }
            _ => bail!("'{token}': expected {name}(W) with a width multiplier W"),
        };
        if !(w > 0.0 && w <= 16.0) {
            bail!("'{token}': the width multiplier must be in (0, 16], got {w}");
        }
        Ok(w)
    };
    // Channels at a width multiplier (as Keras: truncated, at least 1).
    let at = |c: usize, w: f64| ((c as f64 * w) as usize).max(1);
    let body = |s: String| -> Result<Vec<LayerSpec>> { Ok(parse_tokens(&s)?.layers) };
    match name.as_str() {
        "dsconv" => {
            let (c, rest) = args
                .split_first()
                .with_context(|| format!("'{token}': expected dsconv(C,kK[,sS]) or dsconv(C,kHxW[,sHxW])"))?;
            let inner = rest.join(",");
            let units: usize = c
                .parse()
                .ok()
                .filter(|&c| c > 0)
                .with_context(|| format!("'{token}': channels C must be a positive integer, got '{c}'"))?;
            // Depthwise + BN + ReLU, then a 1×1 convolution + BN + ReLU.
            let mut ls = match parse_layer(&format!("dwconv2d({inner})"))? {
                dw @ LayerSpec::Dwconv2d { .. } => vec![dw, LayerSpec::Bn, LayerSpec::Relu],
                _ => unreachable!("dwconv2d parses to a depthwise layer"),
            };
            ls.extend([
                LayerSpec::Conv2d { channels: units, kernel: [1, 1], stride: [1, 1], padding: Padding::Same },
                LayerSpec::Bn,
                LayerSpec::Relu,
            ]);
            Ok(Expanded::Block(ls))
        }
        "ds-cnn-s" => {
            let w = width(&args, Some(1.0))?;
            let c = at(64, w);
            let blocks = vec![format!("dsconv({c},k3)"); 4].join(" ");
            Ok(Expanded::Architecture(body(format!("conv2d({c},k10x4,s2) bn relu {blocks} gap"))?))
        }
        "resnet8" => {
            // MLPerf Tiny's ResNet-8: the first stack keeps its 16
            // channels (identity shortcut), the next two halve the map and
            // double the channels (1×1 strided projections).
            let w = width(&args, Some(1.0))?;
            let (a, b, c) = (at(16, w), at(32, w), at(64, w));
            let stack = |ch: usize, s: &str| format!("res(conv2d({ch},k3{s}) bn relu conv2d({ch},k3) bn) relu");
            let spec = format!("conv2d({a},k3) bn relu {} {} {} gap", stack(a, ""), stack(b, ",s2"), stack(c, ",s2"));
            Ok(Expanded::Architecture(body(spec)?))
        }
        "mobilenet-v1" => {
            let w = width(&args, None)?;
            let blocks: Vec<String> = [
                (64, 1),
                (128, 2),
                (128, 1),
                (256, 2),
                (256, 1),
                (512, 2),
                (512, 1),
                (512, 1),
                (512, 1),
                (512, 1),
                (512, 1),
                (1024, 2),
                (1024, 1),
            ]
            .iter()
            .map(
                |&(c, s)| {
                    if s == 1 { format!("dsconv({},k3)", at(c, w)) } else { format!("dsconv({},k3,s{s})", at(c, w)) }
                },
            )
            .collect();
            Ok(Expanded::Architecture(body(format!("conv2d({},k3,s2) bn relu {} gap", at(32, w), blocks.join(" ")))?))
        }
        _ => Ok(Expanded::Layer { layer: parse_layer(token)?, expanded: false }),
    }
}

/// The text inside `res( … )`, if `token` is a residual block.
fn residual_body(token: &str) -> Option<&str> {
    let rest = token.trim_start();
    let open = rest.find('(')?;
    if !rest[..open].trim().eq_ignore_ascii_case("res") {
        return None;
    }
    rest[open + 1..].trim_end().strip_suffix(')')
}
