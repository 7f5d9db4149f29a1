//! CSV tables (last column is the label, optional header) and IDX files
//! (MNIST's format) as datasets.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Dataset, LoadOptions, Split, validate_split};

/// Stratified, seeded split of one labelled table into train (80 %) and test.
fn split_table(path: &Path, x: Vec<f32>, y: Vec<i64>, len: usize, sample_shape: Vec<usize>) -> Result<Dataset> {
    let n = y.len();
    if n < 2 {
        bail!("{}: needs at least 2 rows to make a train and a test split", path.display());
    }
    let (train_idx, test_idx) = super::stratified_split(Some(&y), n, 0.2, 0);
    let take = |idx: &[usize]| Split {
        x: idx.iter().flat_map(|&i| x[i * len..(i + 1) * len].iter().copied()).collect(),
        y: Some(idx.iter().map(|&i| y[i]).collect()),
        n: idx.len(),
    };
    let (train, test) = (take(&train_idx), take(&test_idx));
    for (name, s) in [("train", &train), ("test", &test)] {
        validate_split(path, name, s, len)?;
    }
    let class_count = y.iter().max().map_or(0, |m| *m as usize + 1);
    Ok(Dataset::stored(path, sample_shape, train, test, None, None, class_count))
}

/// Reads a CSV file: numeric columns, the last one the class index; a first
/// line that is not all numbers is a header. Split 80/20, stratified, seed 0.
pub(super) fn load_csv(path: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut width = None;
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split([',', ';', '\t']).map(str::trim).collect();
        let parsed: Vec<Option<f64>> = fields.iter().map(|f| f.parse::<f64>().ok()).collect();
        if line_no == 0 && parsed.iter().any(Option::is_none) {
            continue; // header
        }
        if fields.len() < 2 {
            bail!("{}:{}: expected at least one feature and a label column", path.display(), line_no + 1);
        }
        if *width.get_or_insert(fields.len()) != fields.len() {
            bail!(
                "{}:{}: {} columns, the first row has {}",
                path.display(),
                line_no + 1,
                fields.len(),
                width.unwrap_or(0)
            );
        }
        for (i, v) in parsed[..fields.len() - 1].iter().enumerate() {
            let v = v.with_context(|| {
                format!("{}:{}: column {} is not a number: '{}'", path.display(), line_no + 1, i + 1, fields[i])
            })?;
            x.push(v as f32);
        }
        let label = fields[fields.len() - 1];
        let l: f64 = label
            .parse()
            .with_context(|| format!("{}:{}: label '{label}' is not a class index", path.display(), line_no + 1))?;
        if l.fract() != 0.0 || l < 0.0 {
            bail!("{}:{}: label {label} is not a class index 0..C-1", path.display(), line_no + 1);
        }
        y.push(l as i64);
    }
    let len = width.map_or(0, |w| w - 1);
    if y.is_empty() {
        bail!("{}: no data rows", path.display());
    }
    split_table(path, x, y, len, vec![len])
}

/// Parses one IDX file: element type u8 only (as MNIST); returns dims and bytes.
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let b = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        bail!(
            "{}: not an IDX file (bad magic){}",
            path.display(),
            if b.starts_with(&[0x1f, 0x8b]) { "; gunzip it first" } else { "" }
        );
    }
    if b[2] != 0x08 {
        bail!("{}: IDX element type {:#04x} is not supported (unsigned bytes, 0x08, are)", path.display(), b[2]);
    }
    let rank = b[3] as usize;
    let header = 4 + 4 * rank;
    if b.len() < header {
        bail!("{}: truncated IDX header", path.display());
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize)
        .collect();
    let count: usize = dims.iter().product();
    if b.len() != header + count {
        bail!("{}: IDX data has {} bytes, its dims {:?} need {count}", path.display(), b.len() - header, dims);
    }
    Ok((dims, b[header..].to_vec()))
}

/// Reads a directory holding MNIST-style IDX files: `train-images*`,
/// `train-labels*`, `t10k-images*` (or `test-images*`), `t10k-labels*`.
pub(super) fn load_idx_dir(dir: &Path, opts: LoadOptions) -> Result<Dataset> {
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let find = |prefixes: &[&str], what: &str| -> Result<std::path::PathBuf> {
        files
            .iter()
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| prefixes.iter().any(|pre| n.starts_with(pre)))
            })
            .cloned()
            .with_context(|| format!("{}: no {what} file ({}*)", dir.display(), prefixes[0]))
    };
    let split = |images: &Path, labels: &Path| -> Result<(Split, Vec<usize>)> {
        let (dims, px) = read_idx(images)?;
        let (ldims, lb) = read_idx(labels)?;
        if dims.is_empty() || ldims.len() != 1 || ldims[0] != dims[0] {
            bail!(
                "{} and {}: {} images but {:?} labels",
                images.display(),
                labels.display(),
                dims.first().unwrap_or(&0),
                ldims
            );
        }
        // Images become one-channel [1, H, W] samples (channels first).
        let mut shape = vec![1];
        shape.extend_from_slice(&dims[1..]);
        let x = px.into_iter().map(|v| v as f32 * opts.input_scale).collect();
        Ok((Split { x, y: Some(lb.into_iter().map(i64::from).collect()), n: dims[0] }, shape))
    };
    let (train, shape) =
        split(&find(&["train-images"], "training images")?, &find(&["train-labels"], "training labels")?)?;
    let (test, test_shape) = split(
        &find(&["t10k-images", "test-images"], "test images")?,
        &find(&["t10k-labels", "test-labels"], "test labels")?,
    )?;
    if shape != test_shape {
        bail!("{}: train images are {:?}, test images {:?}", dir.display(), shape, test_shape);
    }
    let len: usize = shape.iter().product();
    for (name, s) in [("train", &train), ("test", &test)] {
        validate_split(dir, name, s, len)?;
    }
    let class_count =
        [&train, &test].iter().filter_map(|s| s.y.as_ref()).flatten().max().map_or(0, |m| *m as usize + 1);
    Ok(Dataset::stored(dir, shape, train, test, None, None, class_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_splits_stratified() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        let mut text = String::from("a,b,label\n");
        for i in 0..20 {
            text.push_str(&format!("{},{},{}\n", i, i * 2, i % 2));
        }
        std::fs::write(&p, text).unwrap();
        let d = load_csv(&p).unwrap();
        assert_eq!(d.sample_shape, vec![2]);
        assert_eq!((d.train.n, d.test.n), (16, 4));
        assert_eq!(d.class_count, 2);
        assert_eq!(d.test.y.as_ref().unwrap().iter().filter(|v| **v == 1).count(), 2);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "1,2,0\n3,x,1\n").unwrap();
        assert!(format!("{:#}", load_csv(&p).unwrap_err()).contains("d.csv:2: column 2 is not a number"));
        std::fs::write(&p, "1,2,0\n3,4,1.5\n").unwrap();
        assert!(format!("{:#}", load_csv(&p).unwrap_err()).contains("not a class index"));
    }

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn idx_directory_like_mnist() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, b: Vec<u8>| std::fs::write(dir.path().join(n), b).unwrap();
        w("train-images-idx3-ubyte", idx(&[2, 2, 2], &[0, 255, 0, 255, 255, 0, 255, 0]));
        w("train-labels-idx1-ubyte", idx(&[2], &[0, 1]));
        w("t10k-images-idx3-ubyte", idx(&[1, 2, 2], &[1, 2, 3, 4]));
        w("t10k-labels-idx1-ubyte", idx(&[1], &[1]));
        let d = load_idx_dir(dir.path(), LoadOptions::default()).unwrap();
        assert_eq!(d.sample_shape, vec![1, 2, 2]);
        assert_eq!(d.train.x[1], 1.0);
        assert_eq!(d.class_count, 2);
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), idx(&[2], &[1, 0])).unwrap();
        assert!(format!("{:#}", load_idx_dir(dir.path(), LoadOptions::default()).unwrap_err()).contains("labels"));
    }
}
