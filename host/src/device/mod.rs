//! Runs a `.tkd` student on a board — emulated in QEMU or on silicon
//! through a serial port — over a dataset split, with tinykd's board
//! protocol, and compares the device's int8 logits with the host's, bit for
//! bit. `tinykd emulate` and `tinykd verify` are this module.

mod boards;
mod footprint;
mod link;
mod session;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tinykd_runtime::Model;

pub use boards::{BOARDS, Board, Runner, board, board_of_image};
pub use footprint::{Footprint, symbol_bytes};
pub use link::{HostLink, open_port};
pub use session::{DeviceInfo, Reply, Session, describe};

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

/// Result of running a split on a board.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmulationReport {
    pub board: String,
    pub n: usize,
    pub accuracy: Option<f64>,
    /// Share of samples whose int8 logits equal the host's, bit for bit.
    pub agreement: f64,
    pub host_accuracy: Option<f64>,
    pub flash_bytes: u64,
    pub ram_bytes: u64,
    pub static_ram_bytes: u64,
    pub peak_stack_bytes: u64,
    pub model_bytes: usize,
    /// Emulated boards: instructions (exact under `-icount`); silicon: core cycles.
    pub instructions_per_inference: f64,
    /// What the per-inference count counts: "instructions" or "cycles".
    pub counted: &'static str,
    pub device: DeviceInfo,
    pub elf: Option<PathBuf>,
    #[serde(skip)]
    pub device_logits: Vec<i8>,
}

/// What a model needs on a board, estimated before building: flash for the
/// blob and the board's firmware (its largest measured image), RAM for the
/// arena, the receive buffer and the firmware's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitEstimate {
    pub flash: u64,
    pub receive_buffer: u64,
    pub ram: u64,
}

/// The [`FitEstimate`] of `model` on `board`.
pub fn fit_estimate(board: &Board, model: &Model<'_>) -> FitEstimate {
    let receive_buffer = model.input_len().max(16) as u64;
    FitEstimate {
        flash: model.as_bytes().len() as u64 + board.engine_flash_bytes,
        receive_buffer,
        ram: model.arena_bytes() as u64 + receive_buffer + board.engine_stack_bytes + packed_ring_bytes(board, model),
    }
}

/// The stack a Cortex-M4/M7 build for speed takes beyond the engine's
/// estimate for its convolutions' packed rows (`kernels::conv_packed_rows`):
/// a ring of twice the largest window it takes, four bytes a value (3×3
/// over 16 channels: 1,152 B). 0 on other cores.
fn packed_ring_bytes(board: &Board, model: &Model<'_>) -> u64 {
    use tinykd_runtime::compiled::Step;
    if !board.target.starts_with("thumbv7em") {
        return 0;
    }
    (0..model.layer_count())
        .filter_map(|i| match model.compiled_layer(i).ok()?.step {
            Step::Conv { params, .. } => tinykd_runtime::kernels::conv_gathered::gathered_window(&params),
            _ => None,
        })
        .max()
        .map_or(0, |n| 2 * 4 * n as u64)
}

/// Refuses a model that cannot fit the board, before anything is built:
/// the blob against flash, the arena + receive buffer + the engine's stack
/// against RAM, with the numbers.
pub fn fit_check(board: &Board, model: &Model<'_>, what: &Path) -> Result<()> {
    let need = fit_estimate(board, model);
    let flash_need = need.flash;
    if flash_need > board.flash_bytes {
        bail!(
            "{}: does not fit {}: the model ({} bytes) and the firmware (~{} bytes) need {} bytes of flash, the \
             board has {}",
            what.display(),
            board.name,
            model.as_bytes().len(),
            board.engine_flash_bytes,
            flash_need,
            board.flash_bytes
        );
    }
    let (rx, ram_need) = (need.receive_buffer, need.ram);
    if ram_need > board.ram_bytes {
        bail!(
            "{}: does not fit {}: arena {} + receive buffer {} + stack ~{} = {} bytes of RAM, the board has {}",
            what.display(),
            board.name,
            model.arena_bytes(),
            rx,
            board.engine_stack_bytes,
            ram_need,
            board.ram_bytes
        );
    }
    Ok(())
}

/// Flash the model takes in a board image: its compiled tables (weights,
/// channel tables, layer table), or the `.tkd` (`tkd_len`) in an image
/// built with `TINYKD_ENGINE=interpreted`.
fn model_bytes_in(elf: &Path, tkd_len: usize) -> Result<usize> {
    let compiled = symbol_bytes(elf, "COMPILED")? as usize;
    Ok(if compiled > 0 { compiled } else { tkd_len })
}

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
    let out = Command::new(&cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .env("TINYKD_MODEL", &model_path)
        .env("CARGO_TARGET_DIR", &target_dir)
        .envs(env.iter().copied())
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .output()
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

/// A QEMU process that is killed when dropped.
#[derive(Debug)]
pub struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The QEMU binary (found on PATH) and machine arguments of an emulated board.
fn qemu_for(board: &Board) -> Result<(PathBuf, &'static [&'static str])> {
    let Runner::Qemu { binary, machine, package, .. } = board.runner else {
        bail!("{} is a real board: use `tinykd verify --port …` after `tinykd flash`", board.name);
    };
    let qemu = which(binary).with_context(|| {
        format!("{binary} not found on PATH; install it (Debian/Ubuntu: apt-get install {package})")
    })?;
    Ok((qemu, machine))
}

/// Starts `elf` on an emulated board with its UART on QEMU's stdio and
/// instruction counting on; returns the process and the line to the board.
pub fn start_qemu(board: &Board, elf: &Path) -> Result<(Qemu, HostLink)> {
    let (qemu, machine) = qemu_for(board)?;
    let binary = qemu.file_name().and_then(|n| n.to_str()).unwrap_or("qemu");
    let mut child = Command::new(&qemu)
        .args(machine)
        .args(["-display", "none", "-monitor", "none"])
        .args(["-chardev", "stdio,id=uart,mux=off,signal=off", "-serial", "chardev:uart"])
        .args(["-icount", "shift=0,sleep=off", "-kernel"])
        .arg(elf)
        // Profiling: e.g. TINYKD_QEMU_ARGS="-d exec,nochain -D trace.log"
        // logs every translation block run, to attribute instructions to code.
        .args(std::env::var("TINYKD_QEMU_ARGS").unwrap_or_default().split_whitespace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", qemu.display()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("cannot talk to {}", qemu.display());
    };
    let link = HostLink::new(format!("{} ({binary})", board.name), Box::new(stdout), Box::new(stdin));
    Ok((Qemu(child), link))
}

/// Builds the firmware for an emulated board, starts it in QEMU and runs
/// `inputs` (already quantized, `n × input_len`), comparing with the host.
pub fn emulate(
    board: &Board,
    model_path: &Path,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
) -> Result<EmulationReport> {
    emulate_with(board, model_path, inputs, n, labels, FirmwareBuild::default())
}

/// [`emulate`] with the firmware built as `build` says (its engine, its
/// opt-level).
pub fn emulate_with(
    board: &Board,
    model_path: &Path,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
    build: FirmwareBuild,
) -> Result<EmulationReport> {
    let bytes = crate::export::tkd::read(model_path)?;
    let model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    use crate::failure::Failure;
    fit_check(board, &model, model_path).context(Failure::Build)?;
    // Before building: a missing QEMU or a real board fails fast.
    qemu_for(board).context(Failure::Board)?;
    // An image of its own (see `keep_image`): other builds, here or in
    // another process, do not touch it.
    let elf = build_firmware(board, model_path, build)?;
    let footprint = Footprint::of_elf(&elf)?;
    let model_bytes = model_bytes_in(&elf, bytes.len())?;
    let (_qemu, link) = start_qemu(board, &elf).context(Failure::Board)?;
    let (mut session, info) = Session::open(link, Duration::from_secs(30)).context(Failure::Board)?;
    let mut report = run_split(&mut session, &info, board, &model, inputs, n, labels).context(Failure::Board)?;
    report.flash_bytes = footprint.flash_bytes;
    report.model_bytes = model_bytes;
    report.static_ram_bytes = footprint.static_ram_bytes;
    report.ram_bytes = footprint.static_ram_bytes + report.peak_stack_bytes;
    report.elf = Some(elf);
    Ok(report)
}

/// Streams `n` inputs over an open session and compares every answer with
/// the host runtime's. Refuses a board that runs another model.
pub fn run_split(
    session: &mut Session,
    info: &DeviceInfo,
    board: &Board,
    model: &Model<'_>,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
) -> Result<EmulationReport> {
    if info.model_crc != model.crc() || info.input_shape != model.input_shape() || info.classes != model.class_count() {
        bail!(
            "{}: the board runs another model (CRC {:#010x}, input {:?}, {} classes; expected {:#010x}, {:?}, {}): \
             flash this model first (tinykd flash --model …)",
            session.name(),
            info.model_crc,
            info.input_shape,
            info.classes,
            model.crc(),
            model.input_shape(),
            model.class_count()
        );
    }
    let len = model.input_len();
    let classes = model.class_count();
    let (host_pred, host_logits) = crate::pipeline::run_quantized(model, inputs, n)?;
    let mut device_logits = Vec::with_capacity(n * classes);
    let mut device_pred = Vec::with_capacity(n);
    let mut ticks = 0u128;
    let bar = crate::progress::Progress::from_env().bar(n as u64, board.name);
    for i in 0..n {
        bar.inc(1);
        let (class, t, logits) = session.infer(&inputs[i * len..(i + 1) * len])?;
        if logits.len() != classes {
            bail!("{}: the board sent {} logits, the model has {classes} classes", session.name(), logits.len());
        }
        device_pred.push(class as usize);
        device_logits.extend_from_slice(&logits);
        ticks += t as u128;
    }
    let end = session.hello()?;
    let agree =
        host_logits.chunks_exact(classes).zip(device_logits.chunks_exact(classes)).filter(|(h, d)| h == d).count();
    bar.finish_and_clear();
    let per_inference = ticks as f64 / n.max(1) as f64;
    let (count, counted) = match (board.runner, info.counter_kind) {
        (Runner::Qemu { instructions_per_tick, .. }, 0) => (per_inference * instructions_per_tick, "instructions"),
        (_, 2) => (per_inference, "instructions"),
        _ => (per_inference, "cycles"),
    };
    Ok(EmulationReport {
        board: board.name.into(),
        n,
        accuracy: labels.map(|y| crate::util::accuracy(&device_pred, y)),
        host_accuracy: labels.map(|y| crate::util::accuracy(&host_pred, y)),
        agreement: agree as f64 / n.max(1) as f64,
        flash_bytes: 0,
        ram_bytes: 0,
        static_ram_bytes: 0,
        peak_stack_bytes: end.peak_stack as u64,
        model_bytes: model.as_bytes().len(),
        instructions_per_inference: count,
        counted,
        device: end,
        elf: None,
        device_logits,
    })
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// What `tinykd flash` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashReport {
    pub board: String,
    pub elf: PathBuf,
    pub flash_bytes: u64,
    pub static_ram_bytes: u64,
    pub model_bytes: usize,
    /// Whether probe-rs wrote the image to the chip (false with `build_only`).
    pub flashed: bool,
}

/// Builds the firmware of a real board with the model, after checking that
/// it fits, and flashes it with probe-rs (unless `build_only`).
pub fn flash(board: &Board, model_path: &Path, build_only: bool, build: FirmwareBuild) -> Result<FlashReport> {
    let Runner::Probe { chip } = board.runner else {
        bail!(
            "{} is an emulated board: run it with `tinykd emulate --board {0}` (or `tinykd verify --board {0}`)",
            board.name
        );
    };
    let bytes = crate::export::tkd::read(model_path)?;
    let model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    fit_check(board, &model, model_path)?;
    let elf = build_firmware(board, model_path, build)?;
    let footprint = Footprint::of_elf(&elf)?;
    if footprint.flash_bytes > board.flash_bytes || footprint.static_ram_bytes > board.ram_bytes {
        bail!(
            "{}: the firmware takes {} bytes of flash and {} of static RAM; {} has {} and {}",
            model_path.display(),
            footprint.flash_bytes,
            footprint.static_ram_bytes,
            board.name,
            board.flash_bytes,
            board.ram_bytes
        );
    }
    let mut report = FlashReport {
        board: board.name.into(),
        elf: elf.clone(),
        flash_bytes: footprint.flash_bytes,
        static_ram_bytes: footprint.static_ram_bytes,
        model_bytes: model_bytes_in(&elf, bytes.len())?,
        flashed: false,
    };
    if build_only {
        return Ok(report);
    }
    let probe_rs = which("probe-rs").with_context(|| {
        format!(
            "built {} ({} bytes of flash), but probe-rs is not installed: install it (cargo install probe-rs-tools \
             --locked) and run again, or flash that ELF with your own tool",
            elf.display(),
            footprint.flash_bytes
        )
    })?;
    for args in [&["download", "--chip", chip][..], &["reset", "--chip", chip][..]] {
        let out = Command::new(&probe_rs)
            .args(args)
            .args(if args[0] == "download" { vec![elf.as_os_str()] } else { vec![] })
            .output()
            .with_context(|| format!("cannot run {}", probe_rs.display()))?;
        if !out.status.success() {
            bail!(
                "probe-rs {} failed for {chip}: {} (is the board connected through a debug probe?)",
                args[0],
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    report.flashed = true;
    Ok(report)
}

/// Runs `inputs` on a board already running the model, over a serial port.
pub fn verify_port(
    port: &str,
    baud: u32,
    expected_board: Option<&Board>,
    model_path: &Path,
    inputs: &[i8],
    n: usize,
    labels: Option<&[i64]>,
) -> Result<EmulationReport> {
    let bytes = crate::export::tkd::read(model_path)?;
    let model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    let link = open_port(port, baud).context(crate::failure::Failure::Board)?;
    let (mut session, info) = Session::open(link, Duration::from_secs(10)).context(crate::failure::Failure::Board)?;
    let board = board_of_image(&info.board, true)
        .with_context(|| format!("{port}: the board says it is '{}', which this tinykd does not know", info.board))?;
    if let Some(b) = expected_board
        && b.crate_dir != board.crate_dir
    {
        bail!("{port}: expected a {} but the board says it is '{}'", b.name, info.board);
    }
    let mut report =
        run_split(&mut session, &info, board, &model, inputs, n, labels).context(crate::failure::Failure::Board)?;
    report.ram_bytes = report.peak_stack_bytes;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_m4_estimate_counts_the_packed_ring() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let spec = "conv2d(16,k3) relu conv2d(16,k3) relu gap dense(5)";
        let s = crate::student::Student::from_spec_any_output(spec, &[3, 7, 9], &mut rng).unwrap();
        let calib = vec![0.5f32; 4 * s.input_len()];
        let q = crate::quant::quantize_student(&s, &calib, 4, crate::quant::Calibration::Minmax).unwrap();
        let bytes = crate::export::tkd::encode(&q).unwrap();
        let model = Model::from_bytes(&bytes).unwrap();
        let m3 = fit_estimate(boards::board("qemu-mps2-an385").unwrap(), &model);
        let m4 = fit_estimate(boards::board("qemu-mps2-an386").unwrap(), &model);
        // The largest window: 3×3 over 16 channels, a ring of 2 × 144 words.
        assert_eq!(m4.ram - m3.ram, 1152);
        assert_eq!(
            m4.flash,
            m3.flash + boards::board("qemu-mps2-an386").unwrap().engine_flash_bytes
                - boards::board("qemu-mps2-an385").unwrap().engine_flash_bytes
        );
    }
}
