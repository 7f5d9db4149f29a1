//! The student spec language: `dense(32) relu dense(10)`.

use anyhow::{Context, Result, bail};

use super::architectures::{Expanded, expand};
use super::geometry::one_or_two;

/// Padding of a convolution or pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    Same,
    Valid,
}

fn one() -> usize {
    1
}

fn ones() -> [usize; 2] {
    [1, 1]
}

fn same() -> Padding {
    Padding::Same
}

/// One layer of a student spec. Also the TOML form of a layer, e.g.
/// `{ kind = "conv1d", channels = 8, kernel = 5, stride = 2 }` (stride 1 and
/// SAME padding by default; a pool's stride defaults to its size when 0).
/// 2-D windows and their strides are `[height, width]`, or one number for
/// both: `{ kind = "conv2d", channels = 64, kernel = [10, 4], stride = 2 }`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerSpec {
    Dense {
        units: usize,
    },
    Conv1d {
        channels: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default = "same")]
        padding: Padding,
    },
    Conv2d {
        channels: usize,
        #[serde(with = "one_or_two")]
        kernel: [usize; 2],
        #[serde(default = "ones", with = "one_or_two")]
        stride: [usize; 2],
        #[serde(default = "same")]
        padding: Padding,
    },
    Dwconv1d {
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default = "same")]
        padding: Padding,
    },
    Dwconv2d {
        #[serde(with = "one_or_two")]
        kernel: [usize; 2],
        #[serde(default = "ones", with = "one_or_two")]
        stride: [usize; 2],
        #[serde(default = "same")]
        padding: Padding,
    },
    Maxpool {
        #[serde(with = "one_or_two")]
        size: [usize; 2],
        #[serde(default, with = "one_or_two")]
        stride: [usize; 2],
    },
    Avgpool {
        #[serde(with = "one_or_two")]
        size: [usize; 2],
        #[serde(default, with = "one_or_two")]
        stride: [usize; 2],
    },
    Gap,
    Relu,
    Relu6,
    Flatten,
    Dropout {
        p: f32,
    },
    Bn,
    /// A residual block: the block's input is added to its body's output
    /// (through a 1×1 projection with the body's stride when their shapes
    /// differ). TOML: `{ kind = "res", body = [ … ] }`.
    Res {
        body: Vec<LayerSpec>,
    },
}

impl LayerSpec {
    /// The spec-string form of this layer.
    pub fn to_spec_string(&self) -> String {
        let pad = |p: &Padding| if *p == Padding::Valid { ",valid" } else { "" };
        let stride = |s: &usize| if *s != 1 { format!(",s{s}") } else { String::new() };
        let strides = |s: &[usize; 2]| if *s != [1, 1] { format!(",s{}", extent(*s)) } else { String::new() };
        match self {
            LayerSpec::Dense { units } => format!("dense({units})"),
            LayerSpec::Conv1d { channels, kernel, stride: s, padding } => {
                format!("conv1d({channels},k{kernel}{}{})", stride(s), pad(padding))
            }
            LayerSpec::Conv2d { channels, kernel, stride: s, padding } => {
                format!("conv2d({channels},k{}{}{})", extent(*kernel), strides(s), pad(padding))
            }
            LayerSpec::Dwconv1d { kernel, stride: s, padding } => {
                format!("dwconv1d(k{kernel}{}{})", stride(s), pad(padding))
            }
            LayerSpec::Dwconv2d { kernel, stride: s, padding } => {
                format!("dwconv2d(k{}{}{})", extent(*kernel), strides(s), pad(padding))
            }
            LayerSpec::Maxpool { size, stride: s } => format!("maxpool({}{})", extent(*size), strides(s)),
            LayerSpec::Avgpool { size, stride: s } => format!("avgpool({}{})", extent(*size), strides(s)),
            LayerSpec::Gap => "gap".into(),
            LayerSpec::Relu => "relu".into(),
            LayerSpec::Relu6 => "relu6".into(),
            LayerSpec::Flatten => "flatten".into(),
            LayerSpec::Dropout { p } => format!("dropout({p})"),
            LayerSpec::Bn => "bn".into(),
            LayerSpec::Res { body } => format!("res({})", to_string(body)),
        }
    }
}

/// `h x w` as a spec writes it: one number when both agree, else `HxW`.
fn extent([h, w]: [usize; 2]) -> String {
    if h == w { h.to_string() } else { format!("{h}x{w}") }
}

/// The spec string of a TOML layer list (validated by parsing it back).
pub fn from_layers(layers: &[LayerSpec]) -> Result<String> {
    // A pool's stride of 0 (left out) is its size, per axis.
    let or_size =
        |stride: [usize; 2], size: [usize; 2]| [0, 1].map(|a| if stride[a] == 0 { size[a] } else { stride[a] });
    fn fixed(layers: &[LayerSpec], or_size: &impl Fn([usize; 2], [usize; 2]) -> [usize; 2]) -> Vec<LayerSpec> {
        layers
            .iter()
            .map(|l| match l {
                LayerSpec::Maxpool { size, stride } => {
                    LayerSpec::Maxpool { size: *size, stride: or_size(*stride, *size) }
                }
                LayerSpec::Avgpool { size, stride } => {
                    LayerSpec::Avgpool { size: *size, stride: or_size(*stride, *size) }
                }
                LayerSpec::Res { body } => LayerSpec::Res { body: fixed(body, or_size) },
                other => other.clone(),
            })
            .collect()
    }
    let s = to_string(&fixed(layers, &or_size));
    parse(&s)?;
    Ok(s)
}

/// Formats a whole spec back to its string form.
pub fn to_string(layers: &[LayerSpec]) -> String {
    layers.iter().map(LayerSpec::to_spec_string).collect::<Vec<_>>().join(" ")
}

/// Parses a spec string such as `conv1d(8,k5,s2) relu gap dense(10)`.
/// Blocks (`dsconv(…)`) and named architectures (`ds-cnn-s`, `resnet8`,
/// `mobilenet-v1(0.25)`) become the layers they stand for.
pub fn parse(spec: &str) -> Result<Vec<LayerSpec>> {
    Ok(parse_tokens(spec)?.layers)
}

/// A spec's layers, with what its tokens were.
#[derive(Debug)]
pub struct Parsed {
    pub layers: Vec<LayerSpec>,
    /// The last token was a named architecture (whose class layer,
    /// `dense(classes)`, the student adds).
    pub named_last: bool,
    /// Some token was a block or an architecture.
    pub expanded: bool,
    /// Some token was a named architecture.
    pub named: bool,
}

/// [`parse`], saying what the tokens were.
pub fn parse_tokens(spec: &str) -> Result<Parsed> {
    let mut p = Parsed { layers: Vec::new(), named_last: false, expanded: false, named: false };
    for token in tokens(spec)? {
        let expanded = expand(&token).with_context(|| format!("in student spec '{spec}'"))?;
        p.named_last = matches!(expanded, Expanded::Architecture(_));
        p.named |= p.named_last;
        match expanded {
            Expanded::Layer { layer, expanded } => {
                p.expanded |= expanded;
                p.layers.push(layer)
            }
            Expanded::Block(ls) | Expanded::Architecture(ls) => {
                p.expanded = true;
                p.layers.extend(ls)
            }
        }
    }
    if p.layers.is_empty() {
        bail!("student spec is empty (example: \"dense(32) relu dense(10)\")");
    }
    Ok(p)
}

/// A token's lowercase name and its comma-separated arguments.
pub(super) fn split_token(token: &str) -> Result<(String, Vec<&str>)> {
    Ok(match token.find('(') {
        Some(i) => {
            let inner =
                token[i + 1..].strip_suffix(')').with_context(|| format!("'{token}': expected ')' at the end"))?;
            (token[..i].to_ascii_lowercase(), inner.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
        }
        None => (token.to_ascii_lowercase(), Vec::new()),
    })
}

/// Splits on whitespace outside parentheses, so `conv1d(8, k5)` is one
/// token; inside them a run of whitespace is kept as one space (a residual
/// block's layers are separated by it).
fn tokens(spec: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    for c in spec.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    bail!("unbalanced ')' in student spec '{spec}'");
                }
                cur.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_whitespace() => {
                if !cur.ends_with(' ') {
                    cur.push(' ');
                }
            }
            c => cur.push(c),
        }
    }
    if depth != 0 {
        bail!("unbalanced '(' in student spec '{spec}'");
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

pub(super) fn parse_layer(token: &str) -> Result<LayerSpec> {
    let (name, args) = split_token(token)?;
    let positive = |s: &str, what: &str| -> Result<usize> {
        let v: usize = s.parse().with_context(|| format!("'{token}': {what} must be a positive integer, got '{s}'"))?;
        if v == 0 {
            bail!("'{token}': {what} must be at least 1");
        }
        Ok(v)
    };
    // `N` or, where 2-D, `HxW`.
    let extent = |s: &str, what: &str, two_d: bool| -> Result<[usize; 2]> {
        match s.split_once(['x', 'X']) {
            Some((h, w)) if two_d => Ok([positive(h, what)?, positive(w, what)?]),
            Some(_) => bail!("'{token}': a 1-D layer's {what} is one number, got '{s}'"),
            None => positive(s, what).map(|v| [v, v]),
        }
    };
    // Options shared by conv and depthwise layers: kK, sS (kHxW, sHxW in
    // 2-D), same|valid.
    let window = |args: &[&str], two_d: bool| -> Result<([usize; 2], [usize; 2], Padding)> {
        let (mut k, mut s, mut p) = (None, [1, 1], Padding::Same);
        for a in args {
            if let Some(v) = a.strip_prefix('k') {
                k = Some(extent(v, "kernel size", two_d)?);
            } else if let Some(v) = a.strip_prefix('s') {
                if *a == "same" {
                    p = Padding::Same;
                } else {
                    s = extent(v, "stride", two_d)?;
                }
            } else if *a == "valid" {
                p = Padding::Valid;
            } else {
                let forms = if two_d { "kK or kHxW, sS or sHxW" } else { "kK, sS" };
                bail!("'{token}': unknown option '{a}' (expected {forms}, same or valid)");
            }
        }
        Ok((k.with_context(|| format!("'{token}': kernel size kK is required"))?, s, p))
    };
    let no_args = |l: LayerSpec| -> Result<LayerSpec> {
        if !args.is_empty() {
            bail!("'{token}': takes no arguments");
        }
        Ok(l)
    };
    match name.as_str() {
        "dense" => match args.as_slice() {
            [n] => Ok(LayerSpec::Dense { units: positive(n, "units")? }),
            _ => bail!("'{token}': expected dense(N)"),
        },
        "conv1d" | "conv2d" => {
            let (c, rest) =
                args.split_first().with_context(|| format!("'{token}': expected {name}(C,kK[,sS][,same|valid])"))?;
            let channels = positive(c, "channels")?;
            let (kernel, stride, padding) = window(rest, name == "conv2d")?;
            Ok(if name == "conv1d" {
                LayerSpec::Conv1d { channels, kernel: kernel[1], stride: stride[1], padding }
            } else {
                LayerSpec::Conv2d { channels, kernel, stride, padding }
            })
        }
        "dwconv1d" | "dwconv2d" => {
            let (kernel, stride, padding) = window(&args, name == "dwconv2d")?;
            Ok(if name == "dwconv1d" {
                LayerSpec::Dwconv1d { kernel: kernel[1], stride: stride[1], padding }
            } else {
                LayerSpec::Dwconv2d { kernel, stride, padding }
            })
        }
        "maxpool" | "avgpool" => {
            let (k, rest) = args
                .split_first()
                .with_context(|| format!("'{token}': expected {name}(K[,sS]) or {name}(HxW[,sHxW])"))?;
            let size = extent(k, "pool size", true)?;
            let stride = match rest {
                [] => size,
                [s] => extent(s.strip_prefix('s').with_context(|| format!("'{token}': expected sS"))?, "stride", true)?,
                _ => bail!("'{token}': expected {name}(K[,sS]) or {name}(HxW[,sHxW])"),
            };
            Ok(if name == "maxpool" {
                LayerSpec::Maxpool { size, stride }
            } else {
                LayerSpec::Avgpool { size, stride }
            })
        }
        "dropout" => match args.as_slice() {
            [p] => {
                let p: f32 = p.parse().with_context(|| format!("'{token}': dropout rate must be a number"))?;
                if !(0.0..1.0).contains(&p) {
                    bail!("'{token}': dropout rate must be in [0, 1)");
                }
                Ok(LayerSpec::Dropout { p })
            }
            _ => bail!("'{token}': expected dropout(P)"),
        },
        "gap" => no_args(LayerSpec::Gap),
        "relu" => no_args(LayerSpec::Relu),
        "relu6" => no_args(LayerSpec::Relu6),
        "flatten" => no_args(LayerSpec::Flatten),
        "bn" => no_args(LayerSpec::Bn),
        _ => bail!(
            "unknown layer '{token}' (layers: dense, conv1d, conv2d, dwconv1d, dwconv2d, maxpool, avgpool, gap, relu, relu6, flatten, dropout, bn; blocks: dsconv, res; architectures: ds-cnn-s, resnet8, mobilenet-v1)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example() {
        let l = parse("conv1d(8,k5,s2) relu conv1d(16, k3, s2, valid) relu gap dense(10)").unwrap();
        assert_eq!(l[0], LayerSpec::Conv1d { channels: 8, kernel: 5, stride: 2, padding: Padding::Same });
        assert_eq!(l[2], LayerSpec::Conv1d { channels: 16, kernel: 3, stride: 2, padding: Padding::Valid });
        assert_eq!(l[4], LayerSpec::Gap);
        assert_eq!(l[5], LayerSpec::Dense { units: 10 });
        assert_eq!(to_string(&l), "conv1d(8,k5,s2) relu conv1d(16,k3,s2,valid) relu gap dense(10)");
    }

    #[test]
    fn parses_pools_and_dropout() {
        let l = parse("maxpool(2) avgpool(3,s1) dropout(0.25) relu6 flatten bn").unwrap();
        assert_eq!(l[0], LayerSpec::Maxpool { size: [2, 2], stride: [2, 2] });
        assert_eq!(l[1], LayerSpec::Avgpool { size: [3, 3], stride: [1, 1] });
        assert_eq!(l[2], LayerSpec::Dropout { p: 0.25 });
    }

    #[test]
    fn parses_rectangular_windows_and_strides_per_axis() {
        // MLPerf Tiny's keyword spotter: a 10×4 stride-2 convolution, a
        // 25×5 average pool.
        let l = parse("conv2d(64,k10x4,s2) relu dwconv2d(k15x1,s2x1,valid) avgpool(25x5) maxpool(3x2,s1x2)").unwrap();
        assert_eq!(l[0], LayerSpec::Conv2d { channels: 64, kernel: [10, 4], stride: [2, 2], padding: Padding::Same });
        assert_eq!(l[2], LayerSpec::Dwconv2d { kernel: [15, 1], stride: [2, 1], padding: Padding::Valid });
        assert_eq!(l[3], LayerSpec::Avgpool { size: [25, 5], stride: [25, 5] });
        assert_eq!(l[4], LayerSpec::Maxpool { size: [3, 2], stride: [1, 2] });
        assert_eq!(
            to_string(&l),
            "conv2d(64,k10x4,s2) relu dwconv2d(k15x1,s2x1,valid) avgpool(25x5,s25x5) maxpool(3x2,s1x2)"
        );
        assert_eq!(parse(&to_string(&l)).unwrap(), l);
        // 1-D layers take one number.
        let err = format!("{:#}", parse("conv1d(8,k3x3)").unwrap_err());
        assert!(err.contains("1-D layer's kernel size is one number"), "{err}");
        assert!(format!("{:#}", parse("conv2d(8,k3x0)").unwrap_err()).contains("at least 1"));
    }

    #[test]
    fn blocks_and_named_architectures_expand_to_layers() {
        assert_eq!(
            to_string(&parse("dsconv(16,k3,s2) dsconv(8,k5x1)").unwrap()),
            "dwconv2d(k3,s2) bn relu conv2d(16,k1) bn relu dwconv2d(k5x1) bn relu conv2d(8,k1) bn relu"
        );
        let ds = to_string(&parse("ds-cnn-s").unwrap());
        assert!(ds.starts_with("conv2d(64,k10x4,s2) bn relu dwconv2d(k3) bn relu conv2d(64,k1) bn relu"), "{ds}");
        assert!(ds.ends_with("conv2d(64,k1) bn relu gap"), "{ds}");
        assert_eq!(ds.matches("dwconv2d").count(), 4);
        assert!(to_string(&parse("ds-cnn-s(0.5)").unwrap()).starts_with("conv2d(32,k10x4,s2)"));
        // MobileNetV1 0.25: 8 channels first, 13 blocks, 256 channels last.
        let mb = parse("mobilenet-v1(0.25)").unwrap();
        assert_eq!(mb[0], LayerSpec::Conv2d { channels: 8, kernel: [3, 3], stride: [2, 2], padding: Padding::Same });
        let dws: Vec<_> = mb.iter().filter(|l| matches!(l, LayerSpec::Dwconv2d { .. })).collect();
        assert_eq!(dws.len(), 13);
        let strided = dws.iter().filter(|l| matches!(l, LayerSpec::Dwconv2d { stride: [2, 2], .. })).count();
        assert_eq!(strided, 4);
        assert_eq!(
            mb[mb.len() - 4],
            LayerSpec::Conv2d { channels: 256, kernel: [1, 1], stride: [1, 1], padding: Padding::Same }
        );
        let err = |s: &str| format!("{:#}", parse(s).unwrap_err());
        assert!(err("mobilenet-v1").contains("width multiplier"), "{}", err("mobilenet-v1"));
        assert!(err("ds-cnn-s(0)").contains("(0, 16]"));
        assert!(err("dsconv(8)").contains("kernel size"));
        assert!(err("dsconv(k3)").contains("channels"));
    }

    #[test]
    fn residual_blocks_nest_and_keep_their_layers() {
        let l = parse("conv2d(16,k3) res( conv2d(32,k3,s2) bn relu\n conv2d(32,k3) bn ) relu").unwrap();
        let LayerSpec::Res { body } = &l[1] else { panic!("{l:?}") };
        assert_eq!(to_string(body), "conv2d(32,k3,s2) bn relu conv2d(32,k3) bn");
        assert_eq!(to_string(&l), "conv2d(16,k3) res(conv2d(32,k3,s2) bn relu conv2d(32,k3) bn) relu");
        assert_eq!(parse(&to_string(&l)).unwrap(), l);
        // Blocks inside are written out; blocks nest.
        let p = parse_tokens("res(dsconv(8,k3) res(conv1d(8,k3)))").unwrap();
        assert!(p.expanded);
        assert_eq!(to_string(&p.layers), "res(dwconv2d(k3) bn relu conv2d(8,k1) bn relu res(conv1d(8,k3)))");
        // ResNet-8: three stacks, the last two strided.
        let r = to_string(&parse("resnet8").unwrap());
        assert_eq!(r.matches("res(").count(), 3, "{r}");
        assert!(r.starts_with("conv2d(16,k3) bn relu res(conv2d(16,k3) bn relu conv2d(16,k3) bn) relu"), "{r}");
        assert!(r.ends_with("res(conv2d(64,k3,s2) bn relu conv2d(64,k3) bn) relu gap"), "{r}");
        assert!(to_string(&parse("resnet8(0.5)").unwrap()).starts_with("conv2d(8,k3)"));
        let err = |s: &str| format!("{:#}", parse(s).unwrap_err());
        assert!(err("res(resnet8)").contains("not a named architecture"), "{}", err("res(resnet8)"));
        assert!(err("res(lstm(3))").contains("unknown layer"));
        assert!(err("res()").contains("empty"));
        // TOML: `{ kind = "res", body = [ … ] }`.
        #[derive(serde::Deserialize)]
        struct Doc {
            student: Vec<LayerSpec>,
        }
        let doc: Doc = toml::from_str(
            r#"student = [
                { kind = "conv2d", channels = 8, kernel = 3 },
                { kind = "res", body = [{ kind = "conv2d", channels = 8, kernel = 3 }, { kind = "bn" }] },
                { kind = "relu" },
            ]"#,
        )
        .unwrap();
        assert_eq!(from_layers(&doc.student).unwrap(), "conv2d(8,k3) res(conv2d(8,k3) bn) relu");
    }

    #[test]
    fn toml_windows_take_one_number_or_height_and_width() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct Doc {
            student: Vec<LayerSpec>,
        }
        let doc: Doc = toml::from_str(
            r#"student = [
                { kind = "conv2d", channels = 64, kernel = [10, 4], stride = 2 },
                { kind = "dwconv2d", kernel = 3, stride = [2, 1] },
                { kind = "avgpool", size = [25, 5] },
            ]"#,
        )
        .unwrap();
        assert_eq!(from_layers(&doc.student).unwrap(), "conv2d(64,k10x4,s2) dwconv2d(k3,s2x1) avgpool(25x5,s25x5)");
        // Written back: one number where both axes agree.
        let text = toml::to_string(&doc).unwrap();
        assert!(text.contains("kernel = [10, 4]") && text.contains("stride = 2"), "{text}");
    }

    #[test]
    fn toml_form_matches_the_string_form() {
        #[derive(serde::Deserialize)]
        struct Doc {
            student: Vec<LayerSpec>,
        }
        let doc: Doc = toml::from_str(
            r#"student = [
                { kind = "conv1d", channels = 8, kernel = 5, stride = 2 },
                { kind = "relu" },
                { kind = "maxpool", size = 2 },
                { kind = "conv1d", channels = 16, kernel = 3, padding = "valid" },
                { kind = "gap" },
                { kind = "dense", units = 10 },
            ]"#,
        )
        .unwrap();
        assert_eq!(
            from_layers(&doc.student).unwrap(),
            "conv1d(8,k5,s2) relu maxpool(2,s2) conv1d(16,k3,valid) gap dense(10)"
        );
        assert!(toml::from_str::<Doc>(r#"student = [{ kind = "dense", unit = 3 }]"#).is_err());
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        let err = |s: &str| format!("{:#}", parse(s).unwrap_err());
        assert!(err("dense(0)").contains("at least 1"));
        assert!(err("dense(x)").contains("positive integer"));
        assert!(err("conv1d(8)").contains("kernel size"));
        assert!(err("lstm(8)").contains("unknown layer"));
        assert!(err("dense(8").contains("unbalanced"));
        assert!(err("dropout(1.5)").contains("[0, 1)"));
        assert!(err("relu(3)").contains("no arguments"));
        assert!(err("  ").contains("empty"));
    }
}
