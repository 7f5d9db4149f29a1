//! Fuzzes the runtime's parser and kernels from the committed corpus:
//!
//! ```sh
//! cargo run --release -p tinykd-runtime --example fuzz -- 600        # seconds
//! ```
//!
//! Prints executions, parsed and run counts; on a panic or hang writes the
//! blob to `firmware/runtime/fuzz/failures/` and exits 1.

mod engine;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = engine::seeds(&root.join("corpus"));
    if seeds.is_empty() {
        eprintln!("no seed blobs in {}", root.join("corpus").display());
        return ExitCode::FAILURE;
    }
    let stats = engine::fuzz(seeds, seed, Duration::from_secs(seconds), u64::MAX);
    println!(
        "{} executions in {seconds} s (seed {seed}): {} parsed, {} run, corpus grew to {}",
        stats.executions, stats.parsed, stats.ran, stats.corpus
    );
    if let Some((what, blob)) = stats.failure {
        let dir = root.join("failures");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("failure-{seed}-{}.tkd", stats.executions));
        let _ = std::fs::write(&path, &blob);
        eprintln!("{what}; blob written to {}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
