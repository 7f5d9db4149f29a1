//! Flash and RAM use of a firmware ELF, from its section headers.

use std::path::Path;

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionKind};

/// Section sizes that matter on a microcontroller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// Code, read-only data, vector table and the `.data` load image.
    pub flash_bytes: u64,
    /// `.data`, `.bss` and `.uninit` (the stack comes on top, measured at run time).
    pub static_ram_bytes: u64,
}

impl Footprint {
    /// Reads an ELF file.
    pub fn of_elf(path: &Path) -> Result<Footprint> {
        let data = std::fs::read(path).with_context(|| format!("{}: cannot read ELF", path.display()))?;
        let file = object::File::parse(&*data).with_context(|| format!("{}: not an ELF file", path.display()))?;
        let mut flash = 0;
        let mut ram = 0;
        for s in file.sections() {
            let SectionFlags::Elf { sh_flags } = s.flags() else { continue };
            const SHF_ALLOC: u64 = 0x2;
            if sh_flags & SHF_ALLOC == 0 || s.size() == 0 {
                continue;
            }
            let name = s.name().unwrap_or("");
            // riscv-rt describes the free RAM as `.heap` and `.stack` sections: not data.
            if name == ".stack" || name == ".heap" {
                continue;
            }
            if name.starts_with(".bss") || name.starts_with(".uninit") || s.kind() == SectionKind::UninitializedData {
                ram += s.size();
            } else if name.starts_with(".data") {
                ram += s.size();
                flash += s.size();
            } else {
                flash += s.size();
            }
        }
        Ok(Footprint { flash_bytes: flash, static_ram_bytes: ram })
    }
}

/// Bytes of the symbols whose (mangled) name contains `needle`, e.g. the
/// tables of a compiled model (`COMPILED`: its weights, channel tables and
/// layer table) or an embedded `.tkd` (`MODEL`).
pub fn symbol_bytes(path: &Path, needle: &str) -> Result<u64> {
    let data = std::fs::read(path).with_context(|| format!("{}: cannot read ELF", path.display()))?;
    let file = object::File::parse(&*data).with_context(|| format!("{}: not an ELF file", path.display()))?;
    Ok(file.symbols().filter(|s| s.name().is_ok_and(|n| n.contains(needle))).map(|s| s.size()).sum())
}

/// Flash the model takes in a board image: its compiled tables (weights,
/// channel tables, layer table), or the `.tkd` (`tkd_len`) in an image
/// built with `TINYKD_ENGINE=interpreted`.
pub fn model_bytes_in(elf: &Path, tkd_len: usize) -> Result<usize> {
    let compiled = symbol_bytes(elf, "COMPILED")? as usize;
    Ok(if compiled > 0 { compiled } else { tkd_len })
}
