//! Progress bars on a terminal, plain lines when piped (DESIGN §11).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Decides once whether to draw bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    interactive: bool,
}

impl Progress {
    /// Bars when stderr is a terminal, nothing otherwise.
    pub fn from_env() -> Progress {
        Progress { interactive: std::io::stderr().is_terminal() }
    }

    /// Never draws (library use and tests).
    pub fn hidden() -> Progress {
        Progress { interactive: false }
    }

    /// A bar of `len` steps; hidden when not interactive.
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_owned());
        bar
    }

    /// A status line: to stderr, so stdout stays machine-readable.
    pub fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }
}
