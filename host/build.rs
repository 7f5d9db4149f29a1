//! Embeds the firmware sources (runtime, protocol, board crates) in the
//! binary, so that an installed `tinykd` builds its boards without the
//! checkout it was built from (see `device::firmware_dir`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name == "target" || (name.starts_with('.') && name != ".cargo") {
                continue;
            }
            collect(root, &p, out);
        } else if p.is_file() && !name.ends_with(".swp") {
            out.push(p.strip_prefix(root).expect("below root").to_path_buf());
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let firmware = manifest.join("..").join("firmware");
    let mut files = Vec::new();
    collect(&firmware, &firmware, &mut files);
    println!("cargo:rerun-if-changed={}", firmware.display());
    let mut code = String::from(
        "/// Firmware sources: (path below firmware/, contents).\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let abs = firmware.join(f);
        println!("cargo:rerun-if-changed={}", abs.display());
        let rel = f.to_string_lossy().replace('\\', "/");
        for b in rel.bytes().chain(std::fs::read(&abs).expect("readable firmware file")) {
            hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let _ = writeln!(code, "    ({rel:?}, include_bytes!({:?})),", abs.display().to_string());
    }
    code.push_str("];\n");
    let _ = writeln!(
        code,
        "/// FNV-1a over every path and byte: names the unpacked copy.\npub const HASH: u64 = {hash:#x};"
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("firmware_files.rs"), code).expect("write firmware_files.rs");
}
