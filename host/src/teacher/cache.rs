//! Teacher-logit cache: a teacher's outputs for an input array are computed
//! once and reused by every later distill, sweep and quantize run.
//!
//! Key: SHA-256 over the teacher files' bytes, the chosen output name, and the
//! exact input array (shape and f32 bytes). Anything that changes either the
//! teacher or the inputs (another split, other augmented views, edited data)
//! changes the key, so a stale entry can never be read.
//!
//! File `<key hex>.tkc`, little-endian:
//!
//! | off | field |
//! |----:|-------|
//! | 0 | magic `TKDC` |
//! | 4 | version (u32, 1) |
//! | 8 | samples n (u64) |
//! | 16 | classes C (u32) |
//! | 20 | output kind (u8: 0 logits, 1 probabilities — the values are logits either way) |
//! | 21 | reserved (3 bytes) |
//! | 24 | n × C logits, IEEE half precision (f16) |
//!
//! f16 keeps ~3 significant digits, far below what changes a softened target;
//! it halves the cache against f32.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use half::f16;
use sha2::{Digest, Sha256};

use super::OutputKind;

const MAGIC: &[u8; 4] = b"TKDC";
const VERSION: u32 = 1;
const HEADER: usize = 24;

/// Default cache directory: `TINYKD_CACHE_DIR`, else `$XDG_CACHE_HOME/tinykd`,
/// else `~/.cache/tinykd`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TINYKD_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("tinykd");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("tinykd"))
        .unwrap_or_else(|| PathBuf::from(".tinykd-cache"))
}

/// Hash of the teacher side of the key (computed once per teacher set).
pub fn teacher_key(files: &[PathBuf], output: Option<&str>) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"tinykd teacher v1");
    for f in files {
        // External tensor data next to the model is part of the teacher.
        let bytes = std::fs::read(f).with_context(|| format!("{}: cannot read teacher", f.display()))?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
        if let Some(dir) = f.parent() {
            let stem = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let mut extra: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            extra.retain(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n != stem && n.starts_with(stem) && n.ends_with(".data"))
            });
            extra.sort();
            for e in extra {
                h.update(std::fs::read(&e).unwrap_or_default());
            }
        }
    }
    h.update(output.unwrap_or("").as_bytes());
    Ok(h.finalize().into())
}

/// Full key of one input array.
pub fn key(teacher: &[u8; 32], x: &[f32], shape: &[usize], temperature_tag: f32) -> String {
    let mut h = Sha256::new();
    h.update(teacher);
    for d in shape {
        h.update((*d as u64).to_le_bytes());
    }
    // Ensembles are combined at a temperature, so it is part of the key.
    h.update(temperature_tag.to_le_bytes());
    for v in x {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Rounds values to what an entry stores (f16), in place.
pub fn round_to_f16(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
}

/// Reads an entry; `None` when absent or unreadable (then it is recomputed).
pub fn load(dir: &Path, key: &str, n: usize) -> Option<(Vec<f32>, usize, OutputKind)> {
    let bytes = std::fs::read(dir.join(format!("{key}.tkc"))).ok()?;
    if bytes.len() < HEADER || &bytes[0..4] != MAGIC || u32::from_le_bytes(bytes[4..8].try_into().ok()?) != VERSION {
        return None;
    }
    let count = u64::from_le_bytes(bytes[8..16].try_into().ok()?) as usize;
    let classes = u32::from_le_bytes(bytes[16..20].try_into().ok()?) as usize;
    let kind = if bytes[20] == 1 { OutputKind::Probabilities } else { OutputKind::Logits };
    if count != n || bytes.len() != HEADER + count * classes * 2 {
        return None;
    }
    let logits = bytes[HEADER..].chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    Some((logits, classes, kind))
}

/// Writes an entry atomically.
pub fn store(dir: &Path, key: &str, logits: &[f32], classes: usize, kind: OutputKind) -> Result<()> {
    let n = logits.len() / classes.max(1);
    let mut bytes = Vec::with_capacity(HEADER + logits.len() * 2);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(n as u64).to_le_bytes());
    bytes.extend_from_slice(&(classes as u32).to_le_bytes());
    bytes.push(matches!(kind, OutputKind::Probabilities) as u8);
    bytes.extend_from_slice(&[0, 0, 0]);
    for v in logits {
        bytes.extend_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
    crate::util::write_atomic(&dir.join(format!("{key}.tkc")), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_key_sensitivity() {
        let dir = tempfile::tempdir().unwrap();
        let t = [7u8; 32];
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let k = key(&t, &x, &[2, 2], 1.0);
        assert_ne!(k, key(&t, &[1.0, 2.0, 3.0, 4.5], &[2, 2], 1.0));
        assert_ne!(k, key(&[8u8; 32], &x, &[2, 2], 1.0));
        assert_ne!(k, key(&t, &x, &[1, 4], 1.0));
        store(dir.path(), &k, &[0.5, -1.25, 3.0, 10.0], 2, OutputKind::Logits).unwrap();
        let (l, c, kind) = load(dir.path(), &k, 2).unwrap();
        assert_eq!((l, c, kind), (vec![0.5, -1.25, 3.0, 10.0], 2, OutputKind::Logits));
        assert!(load(dir.path(), &k, 3).is_none(), "a count mismatch is a miss");
        std::fs::write(dir.path().join(format!("{k}.tkc")), b"TKDCjunk").unwrap();
        assert!(load(dir.path(), &k, 2).is_none(), "a damaged entry is a miss");
    }
}
