//! Resumable pipeline stages. Each stage of `tinykd run` records, in
//! `stages.json` beside its artefacts, the hash of everything it read (its
//! config section, upstream artefacts, teacher and data bytes, the tinykd
//! version) and the hash of every file it wrote. A later run whose inputs
//! hash the same, with the files still as written, skips the stage and
//! reuses its record; anything else reruns it — and, because downstream
//! stages hash the artefacts they read, whatever depends on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The record file's name inside the output directory.
pub const FILE: &str = "stages.json";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    /// Hash of the stage's inputs.
    inputs: String,
    /// Hash of each file the stage wrote (path relative to the output directory).
    outputs: BTreeMap<String, String>,
    /// What the stage reported (accuracies, sizes, …).
    record: serde_json::Value,
}

/// The stage records of one output directory.
#[derive(Debug)]
pub struct Stages {
    dir: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl Stages {
    /// Reads `dir/stages.json`; a missing or unreadable file is an empty record
    /// (every stage runs).
    pub fn load(dir: &Path) -> Stages {
        let entries =
            std::fs::read(dir.join(FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Stages { dir: dir.to_path_buf(), entries }
    }

    /// The record of `stage` if it ran with inputs hashing to `inputs` and
    /// every file it wrote is still there, unchanged.
    pub fn fresh<T: DeserializeOwned>(&self, stage: &str, inputs: &str) -> Option<T> {
        let e = self.entries.get(stage)?;
        if e.inputs != inputs {
            return None;
        }
        for (file, hash) in &e.outputs {
            if hash_file(&self.dir.join(file)).ok()? != *hash {
                return None;
            }
        }
        serde_json::from_value(e.record.clone()).ok()
    }

    /// Records that `stage` ran with `inputs`, wrote `outputs` (paths inside
    /// the output directory) and reported `record`; rewrites `stages.json`
    /// atomically.
    pub fn store<T: Serialize>(&mut self, stage: &str, inputs: &str, outputs: &[&Path], record: &T) -> Result<()> {
        let mut hashes = BTreeMap::new();
        for f in outputs {
            let rel = f.strip_prefix(&self.dir).unwrap_or(f).to_string_lossy().into_owned();
            hashes.insert(rel, hash_file(f)?);
        }
        let entry = Entry { inputs: inputs.into(), outputs: hashes, record: serde_json::to_value(record)? };
        self.entries.insert(stage.into(), entry);
        crate::util::write_atomic(&self.dir.join(FILE), serde_json::to_string_pretty(&self.entries)?.as_bytes())
    }
}

/// Builds a stage's input hash from its parts.
#[derive(Debug)]
pub struct InputHash(Sha256);

impl InputHash {
    /// Starts the hash of `stage` (the tinykd version is part of every key:
    /// a new version may compute differently).
    pub fn new(stage: &str) -> InputHash {
        let mut h = Sha256::new();
        h.update(format!("tinykd {} stage {stage}\0", env!("CARGO_PKG_VERSION")));
        InputHash(h)
    }

    /// Adds a value through its JSON form (config sections, options).
    pub fn value(mut self, v: &impl Serialize) -> Result<InputHash> {
        let s = serde_json::to_string(v)?;
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s);
        Ok(self)
    }

    /// Adds a file's bytes, or every file under a directory (sorted, with
    /// their relative names).
    pub fn path(mut self, p: &Path) -> Result<InputHash> {
        self.0.update(hash_path(p)?);
        Ok(self)
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_file(p: &Path) -> Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
    Ok(hex(&Sha256::digest(bytes)))
}

/// Hash of a file, or of a directory's files (recursively, sorted by name).
fn hash_path(p: &Path) -> Result<String> {
    if !p.is_dir() {
        return hash_file(p);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(p)
        .with_context(|| format!("{}: cannot list", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut h = Sha256::new();
    for n in names {
        h.update(n.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        h.update(hash_path(&n)?);
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_stage_is_fresh_until_its_inputs_or_outputs_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = d.join("a.bin");
        std::fs::write(&out, b"artefact").unwrap();
        let key = InputHash::new("s").value(&("x", 1)).unwrap().finish();
        let mut st = Stages::load(d);
        assert!(st.fresh::<u32>("s", &key).is_none());
        st.store("s", &key, &[&out], &7u32).unwrap();
        // Reloaded from disk.
        let st = Stages::load(d);
        assert_eq!(st.fresh::<u32>("s", &key), Some(7));
        let other = InputHash::new("s").value(&("x", 2)).unwrap().finish();
        assert!(st.fresh::<u32>("s", &other).is_none());
        std::fs::write(&out, b"edited").unwrap();
        assert!(st.fresh::<u32>("s", &key).is_none(), "an edited artefact reruns its stage");
        std::fs::remove_file(&out).unwrap();
        assert!(st.fresh::<u32>("s", &key).is_none());
    }

    #[test]
    fn directories_hash_their_files_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.npy"), b"1").unwrap();
        let h1 = InputHash::new("s").path(d).unwrap().finish();
        std::fs::write(d.join("b.npy"), b"2").unwrap();
        let h2 = InputHash::new("s").path(d).unwrap().finish();
        std::fs::rename(d.join("b.npy"), d.join("c.npy")).unwrap();
        let h3 = InputHash::new("s").path(d).unwrap().finish();
        assert!(h1 != h2 && h2 != h3);
        assert_eq!(h3, InputHash::new("s").path(d).unwrap().finish());
    }
}
