//! Small helpers shared by the pipeline stages.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed, so a failure never leaves a partial file.
/// The file gets the mode any new file gets (0666 less the umask: 0644
/// under the usual 022), not the temporary file's private 0600, so that
/// teammates, web servers and CI artefact steps can read it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Opened with 0666, the kernel applies the umask, as for any new file.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).with_context(|| format!("{}: cannot create a file here", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("{}: write failed", path.display()))?;
    tmp.as_file().sync_all().ok();
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Softmax of `z / t`, computed stably in f64 (the loss value and the
/// ensemble's mean of tempered probabilities both need it).
pub fn softmax(z: &[f32], t: f32) -> Vec<f64> {
    let max = z.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
    let e: Vec<f64> = z.iter().map(|v| ((*v as f64 - max) / t as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Share of equal elements in two label sequences.
pub fn accuracy(pred: &[usize], labels: &[i64]) -> f64 {
    if pred.is_empty() {
        return 0.0;
    }
    pred.iter().zip(labels).filter(|(p, y)| **p as i64 == **y).count() as f64 / pred.len() as f64
}

/// Row-wise argmax of `n × classes` scores (first index on ties).
pub fn argmax_rows(scores: &[f32], classes: usize) -> Vec<usize> {
    scores
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_honour_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        // The umask is the process's: read it without changing it.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let Some(umask) = status.lines().find_map(|l| l.strip_prefix("Umask:")) else {
            return; // not Linux: nothing to compare with
        };
        let umask = u32::from_str_radix(umask.trim(), 8).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask, "umask {umask:03o}");
        // A plain file created the ordinary way gets the same mode.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert_eq!(mode, std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777);
    }

    #[test]
    fn argmax_and_accuracy() {
        assert_eq!(argmax_rows(&[0.1, 0.9, 0.5, 0.5], 2), vec![1, 0]);
        assert_eq!(accuracy(&[1, 0, 2], &[1, 1, 2]), 2.0 / 3.0);
    }
}
