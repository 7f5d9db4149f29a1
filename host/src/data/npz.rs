//! `.npz` reader (through `npyz`), converting every accepted dtype to f32
//! inputs and i64 labels.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::npz::NpzArchive;
use npyz::{DType, TypeChar};

use super::{Dataset, LoadOptions, Split, validate_split};

type Archive = NpzArchive<BufReader<File>>;

struct Array {
    shape: Vec<usize>,
    data: ArrayData,
}

enum ArrayData {
    Float(Vec<f32>),
    Int(Vec<i64>),
    Bytes(Vec<u8>),
}

/// Where the arrays come from: one `.npz`, or a directory of `<key>.npy` files.
enum Source {
    Npz(Archive),
    Dir(std::path::PathBuf),
}

impl Source {
    fn names(&self) -> Vec<String> {
        match self {
            Source::Npz(a) => a.array_names().map(str::to_owned).collect(),
            Source::Dir(d) => std::fs::read_dir(d)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".npy")).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn read_array(source: &mut Source, path: &Path, key: &str) -> Result<Option<Array>> {
    match source {
        Source::Npz(archive) => {
            let file =
                archive.by_name(key).with_context(|| format!("{}: cannot read array '{key}'", path.display()))?;
            file.map(|f| decode(f, path, key)).transpose()
        }
        Source::Dir(dir) => {
            let p = dir.join(format!("{key}.npy"));
            if !p.is_file() {
                return Ok(None);
            }
            let f = File::open(&p).with_context(|| format!("{}: cannot open", p.display()))?;
            let file =
                npyz::NpyFile::new(BufReader::new(f)).with_context(|| format!("{}: not a .npy file", p.display()))?;
            decode(file, &p, key).map(Some)
        }
    }
}

fn decode<R: std::io::Read>(file: npyz::NpyFile<R>, path: &Path, key: &str) -> Result<Array> {
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let DType::Plain(ts) = file.dtype() else {
        bail!("{}: array '{key}' has a structured dtype; expected a plain numeric array", path.display());
    };
    let ctx = || format!("{}: cannot decode array '{key}' ({ts})", path.display());
    let size = ts.size_field();
    let data = match (ts.type_char(), size) {
        (TypeChar::Float, 4) => ArrayData::Float(file.into_vec::<f32>().with_context(ctx)?),
        (TypeChar::Float, 8) => {
            ArrayData::Float(file.into_vec::<f64>().with_context(ctx)?.into_iter().map(|v| v as f32).collect())
        }
        (TypeChar::Uint, 1) => ArrayData::Bytes(file.into_vec::<u8>().with_context(ctx)?),
        (TypeChar::Int, 8) => ArrayData::Int(file.into_vec::<i64>().with_context(ctx)?),
        (TypeChar::Int, 4) => {
            ArrayData::Int(file.into_vec::<i32>().with_context(ctx)?.into_iter().map(i64::from).collect())
        }
        (TypeChar::Int, 2) => {
            ArrayData::Int(file.into_vec::<i16>().with_context(ctx)?.into_iter().map(i64::from).collect())
        }
        (TypeChar::Int, 1) => {
            ArrayData::Int(file.into_vec::<i8>().with_context(ctx)?.into_iter().map(i64::from).collect())
        }
        (TypeChar::Uint, 2) => {
            ArrayData::Int(file.into_vec::<u16>().with_context(ctx)?.into_iter().map(i64::from).collect())
        }
        (TypeChar::Uint, 4) => {
            ArrayData::Int(file.into_vec::<u32>().with_context(ctx)?.into_iter().map(i64::from).collect())
        }
        _ => bail!("{}: array '{key}' has unsupported dtype {ts}", path.display()),
    };
    Ok(Array { shape, data })
}

fn inputs(path: &Path, key: &str, a: Array, opts: LoadOptions) -> Result<(Vec<usize>, Vec<f32>)> {
    if a.shape.len() < 2 {
        bail!("{}: {key} has shape {:?}; expected [N, ...sample shape] with at least 2 axes", path.display(), a.shape);
    }
    let x = match a.data {
        ArrayData::Float(v) => v,
        ArrayData::Bytes(v) => v.into_iter().map(|b| b as f32 * opts.input_scale).collect(),
        ArrayData::Int(_) => {
            bail!("{}: {key} must be float32/float64 (or uint8 with --input-scale), found integers", path.display())
        }
    };
    Ok((a.shape, x))
}

fn labels(path: &Path, key: &str, a: Array) -> Result<Vec<i64>> {
    if a.shape.len() != 1 {
        bail!("{}: {key} has shape {:?}; expected a 1-D array of class indices [N]", path.display(), a.shape);
    }
    match a.data {
        ArrayData::Int(v) => Ok(v),
        ArrayData::Bytes(v) => Ok(v.into_iter().map(i64::from).collect()),
        ArrayData::Float(_) => {
            bail!("{}: {key} must hold integer class indices (int32/int64), found floats", path.display())
        }
    }
}

/// The float array `key` of an `.npz` (or a directory of `.npy` files) with
/// its shape; `None` when the file has no such array.
pub fn read_floats(path: &Path, key: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
    let mut source = if path.is_dir() {
        Source::Dir(path.to_path_buf())
    } else {
        Source::Npz(NpzArchive::open(path).with_context(|| format!("{}: cannot open as .npz", path.display()))?)
    };
    match read_array(&mut source, path, key)? {
        None => Ok(None),
        Some(Array { shape, data: ArrayData::Float(v) }) => Ok(Some((shape, v))),
        Some(_) => bail!("{}: array '{key}' must be float32 or float64", path.display()),
    }
}

pub(super) fn load(path: &Path, opts: LoadOptions) -> Result<Dataset> {
    let archive = NpzArchive::open(path).with_context(|| format!("{}: cannot open as .npz", path.display()))?;
    load_from(path, Source::Npz(archive), opts)
}

/// A directory holding `x_train.npy`, `y_train.npy`, `x_test.npy`, … (the
/// `.npz` keys as separate files).
pub(super) fn load_npy_dir(dir: &Path, opts: LoadOptions) -> Result<Dataset> {
    load_from(dir, Source::Dir(dir.to_path_buf()), opts)
}

fn load_from(path: &Path, mut archive: Source, opts: LoadOptions) -> Result<Dataset> {
    let mut sample_shape: Option<Vec<usize>> = None;
    let mut split = |archive: &mut Source, name: &str, required: bool, labelled: bool| -> Result<Option<Split>> {
        let xk = format!("x_{name}");
        let Some(xa) = read_array(archive, path, &xk)? else {
            if required {
                let keys = archive.names();
                bail!("{}: missing array '{xk}' (found: {})", path.display(), keys.join(", "));
            }
            return Ok(None);
        };
        let (shape, x) = inputs(path, &xk, xa, opts)?;
        let this = shape[1..].to_vec();
        match &sample_shape {
            None => sample_shape = Some(this),
            Some(s) if *s != this => {
                bail!("{}: {xk} has sample shape {:?} but x_train has {:?}", path.display(), this, s)
            }
            Some(_) => {}
        }
        let y = if labelled {
            let yk = format!("y_{name}");
            read_array(archive, path, &yk)?.map(|a| labels(path, &yk, a)).transpose()?
        } else {
            None
        };
        Ok(Some(Split { x, y, n: shape[0] }))
    };
    let train = split(&mut archive, "train", true, true)?.context("x_train")?;
    let test = split(&mut archive, "test", true, true)?.context("x_test")?;
    let val = split(&mut archive, "val", false, true)?;
    let unlabeled = split(&mut archive, "unlabeled", false, false)?;
    let sample_shape = sample_shape.context("no samples")?;
    let sample_len: usize = sample_shape.iter().product();
    if sample_len == 0 {
        bail!("{}: samples have shape {:?} (no values)", path.display(), sample_shape);
    }
    for (name, s) in
        [("train", Some(&train)), ("test", Some(&test)), ("val", val.as_ref()), ("unlabeled", unlabeled.as_ref())]
    {
        if let Some(s) = s {
            validate_split(path, name, s, sample_len)?;
        }
    }
    let class_count = [&train, &test]
        .into_iter()
        .chain(val.as_ref())
        .filter_map(|s| s.y.as_ref())
        .flat_map(|y| y.iter().copied())
        .max()
        .map_or(0, |m| m as usize + 1);
    Ok(Dataset::stored(path, sample_shape, train, test, val, unlabeled, class_count))
}
