//! Building a board's firmware with a model embedded: one build of a crate
//! at a time, each image kept under a name of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Board;
use super::sources::firmware_dir;

/// How board firmware runs its model (the board build script's
/// `TINYKD_ENGINE`; all three are bit-identical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// The model compiled into a constant layer table, every layer through
    /// the shared kernels: the smallest image at opt-level "s".
    Compiled,
    /// Compiled, with one kernel copy per layer specialised to its shape
    /// (the boards' default): faster, a shallower stack, about the same
    /// flash at the boards' opt-level 3.
    Specialized,
    /// The `.tkd` embedded and parsed at boot.
    Interpreted,
}

impl Engine {
    /// The `TINYKD_ENGINE` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Compiled => "compiled",
            Engine::Specialized => "specialized",
            Engine::Interpreted => "interpreted",
        }
    }
}

/// The optimisation level a board's firmware is built at: the board
/// crates' release profile (`3`, for speed) unless one is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptLevel {
    #[value(name = "0")]
    O0,
    #[value(name = "1")]
    O1,
    #[value(name = "2")]
    O2,
    #[value(name = "3")]
    O3,
    /// For size: kernels that trade flash for speed take their compact
    /// variant (`cfg(tinykd_small)`).
    #[value(name = "s")]
    S,
    #[value(name = "z")]
    Z,
}

impl OptLevel {
    /// The profile's `opt-level` value.
    pub fn as_str(self) -> &'static str {
        match self {
            OptLevel::O0 => "0",
            OptLevel::O1 => "1",
            OptLevel::O2 => "2",
            OptLevel::O3 => "3",
            OptLevel::S => "s",
            OptLevel::Z => "z",
        }
    }
}

/// How to build a board's firmware; the default is the board crate's own
/// (engine from the environment's `TINYKD_ENGINE`, else specialized;
/// the release profile's opt-level).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirmwareBuild {
    pub engine: Option<Engine>,
    pub opt_level: Option<OptLevel>,
}

impl FirmwareBuild {
    /// The default build with this engine.
    pub fn engine(engine: Option<Engine>) -> FirmwareBuild {
        FirmwareBuild { engine, opt_level: None }
    }
}

/// Builds the board firmware with `model_path` embedded; returns the path
/// of its ELF as kept for this model and build
/// (`firmware/boards/target/images/<crate>-<key>.elf`, the newest 64 kept):
/// builds of one crate run one at a time, across processes too, and a
/// later build never changes an image already returned.
/// All boards share one target directory, so dependencies built for one
/// target are reused by every board on it; a build at another opt-level
/// has a directory of its own inside it (`opt-s`, …), so switching levels
/// does not rebuild everything each time.
pub fn build_firmware(board: &Board, model_path: &Path, build: FirmwareBuild) -> Result<PathBuf> {
    let mut env: Vec<(&str, &str)> = build.engine.map(|e| ("TINYKD_ENGINE", e.as_str())).into_iter().collect();
    if let Some(o) = build.opt_level {
        env.push(("CARGO_PROFILE_RELEASE_OPT_LEVEL", o.as_str()));
    }
    let target_dir = build.opt_level.map(|o| format!("opt-{}", o.as_str()));
    build_crate_unmarked(board.crate_dir, board.target, board.name, model_path, &env, target_dir.as_deref())
        .context(crate::failure::Failure::Build)
}

/// Builds the firmware crate `firmware/boards/<crate_dir>` (for `target`)
/// with `model_path` embedded; returns the ELF path.
pub fn build_crate(crate_dir: &str, target: &str, label: &str, model_path: &Path) -> Result<PathBuf> {
    build_crate_with(crate_dir, target, label, model_path, &[])
}

/// [`build_crate`] with extra environment for its build script, e.g.
/// `TINYKD_ENGINE=interpreted`.
pub fn build_crate_with(
    crate_dir: &str,
    target: &str,
    label: &str,
    model_path: &Path,
    env: &[(&str, &str)],
) -> Result<PathBuf> {
    build_crate_unmarked(crate_dir, target, label, model_path, env, None).context(crate::failure::Failure::Build)
}

/// The build, into `firmware/boards/target/<subdir>` when given.
fn build_crate_unmarked(
    crate_dir: &str,
    target: &str,
    label: &str,
    model_path: &Path,
    env: &[(&str, &str)],
    subdir: Option<&str>,
) -> Result<PathBuf> {
    let firmware = firmware_dir()?;
    let dir = firmware.join("boards").join(crate_dir);
    if !dir.join("Cargo.toml").is_file() {
        bail!("board crate not found at {} (set TINYKD_FIRMWARE_DIR to tinykd's firmware/ directory)", dir.display());
    }
    let model_path =
        std::fs::canonicalize(model_path).with_context(|| format!("{}: cannot resolve", model_path.display()))?;
    let mut target_dir = firmware.join("boards").join("target");
    if let Some(sub) = subdir {
        target_dir = target_dir.join(sub);
    }
    // Every build of a crate writes the same ELF path, whatever model it
    // embeds: one build at a time, across threads and processes, and the
    // image copied under the lock to a path of its own that later builds
    // leave alone (see `keep_image`).
    std::fs::create_dir_all(&target_dir).with_context(|| format!("{}: cannot create", target_dir.display()))?;
    let lock_path = target_dir.join(".tinykd-build.lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("{}: cannot open", lock_path.display()))?;
    lock.lock().with_context(|| format!("{}: cannot lock", lock_path.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = crate::children::output(
        Command::new(&cargo)
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env("TINYKD_MODEL", &model_path)
            .env("CARGO_TARGET_DIR", &target_dir)
            .envs(env.iter().copied())
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS"),
    )
    .with_context(|| format!("cannot run cargo to build {}", dir.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = if err.contains("target may not be installed") || err.contains("can't find crate for `core`") {
            format!("\nhint: rustup target add {target}")
        } else {
            String::new()
        };
        let tail: Vec<&str> = err.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("building firmware for {label} failed:\n{}{hint}", tail.join("\n"));
    }
    let elf = target_dir.join(target).join("release").join(format!("tinykd-board-{crate_dir}"));
    if !elf.is_file() {
        bail!("firmware build produced no ELF at {}", elf.display());
    }
    let key = image_key(crate_dir, target, &model_path, env)?;
    keep_image(&elf, &target_dir.join("images"), &format!("{crate_dir}-{key:08x}.elf"))
}

/// Images kept per target directory; the oldest beyond these are removed.
const KEPT_IMAGES: usize = 64;

/// What an image is built from: the crate, the target, the model's bytes
/// and the build's environment.
fn image_key(crate_dir: &str, target: &str, model_path: &Path, env: &[(&str, &str)]) -> Result<u32> {
    let model = std::fs::read(model_path).with_context(|| format!("{}: cannot read", model_path.display()))?;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut d = crc.digest();
    for part in [crate_dir, target].into_iter().chain(env.iter().flat_map(|(k, v)| [*k, *v])) {
        d.update(part.as_bytes());
        d.update(&[0]);
    }
    d.update(&model);
    Ok(d.finalize())
}

/// Copies the ELF cargo wrote to `dir/name` (atomically: a reader sees the
/// old file or the new one) and removes the oldest images beyond
/// [`KEPT_IMAGES`]. The copy is what the caller reads and runs: the next
/// build of the crate, in this process or another, overwrites cargo's ELF
/// but not it.
fn keep_image(elf: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let bytes = std::fs::read(elf).with_context(|| format!("{}: cannot read", elf.display()))?;
    let kept = dir.join(name);
    crate::util::write_atomic(&kept, &bytes)?;
    let mut images: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "elf"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if images.len() > KEPT_IMAGES {
        images.sort();
        for (_, old) in &images[..images.len() - KEPT_IMAGES] {
            if *old != kept {
                let _ = std::fs::remove_file(old);
            }
        }
    }
    Ok(kept)
}
