//! The firmware sources the boards are built from: the checkout's, or the
//! copy embedded in the binary, unpacked once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/firmware_files.rs"));
}

/// Where the board crates are built from: `TINYKD_FIRMWARE_DIR` when set;
/// the checkout this binary was built in when it runs from that checkout
/// (development); else the firmware sources embedded in the binary,
/// unpacked once into the cache directory — so an installed or copied
/// `tinykd` builds the firmware that matches it, wherever it runs.
pub fn firmware_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("TINYKD_FIRMWARE_DIR") {
        return Ok(PathBuf::from(d));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let (Ok(exe), Ok(repo)) = (std::env::current_exe().and_then(|e| e.canonicalize()), repo.canonicalize())
        && exe.starts_with(&repo)
        && repo.join("firmware").join("boards").is_dir()
    {
        return Ok(repo.join("firmware"));
    }
    unpack_embedded(&crate::teacher::cache::default_dir())
}

/// Writes the embedded firmware sources below `cache` (once per content
/// hash; a half-written copy is never used: it is built aside and renamed).
pub fn unpack_embedded(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(format!("firmware-{:016x}", embedded::HASH));
    if dir.join("boards").is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("{}: cannot create", cache.display()))?;
    let tmp = tempfile::tempdir_in(cache).with_context(|| format!("{}: cannot write here", cache.display()))?;
    for (rel, bytes) in embedded::FILES {
        let path = tmp.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another tinykd unpacked the same sources first: use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join("boards").is_dir() {
            bail!("{}: cannot unpack the firmware sources", dir.display());
        }
    }
    Ok(dir)
}
