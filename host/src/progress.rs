//! Progress on stderr (stdout stays machine-readable): status lines, and
//! for long stages (teacher inference, training, QAT, sweep cells) a bar
//! with an ETA on a terminal. `-q` silences both; `-v` also prints the
//! bars as plain lines (about one a second) when stderr is not a terminal,
//! e.g. in CI logs.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Verbosity {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

/// Decides once whether to draw bars and print status lines.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    interactive: bool,
    verbosity: Verbosity,
}

/// Bars rendered as plain lines (non-terminal stderr with `-v`): a line each
/// time the bar's fill changes (at most about 30 per bar), not at every update.
#[derive(Debug, Default)]
struct PlainLines {
    last: std::sync::Mutex<String>,
}

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let key = s.split_inclusive(']').next().unwrap_or(s);
        if let Ok(mut last) = self.last.lock()
            && !s.trim().is_empty()
            && *last != key
        {
            eprintln!("{}", s.trim_end());
            *last = key.to_owned();
        }
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The command line's verbosity, for code that is not handed a `Progress`
/// (a board session's bar): 0 quiet, 1 normal, 2 verbose.
static VERBOSITY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

impl Progress {
    /// Bars when stderr is a terminal, status lines either way, at the
    /// verbosity the command line set (normal by default).
    pub fn from_env() -> Progress {
        let v = match VERBOSITY.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Verbosity::Quiet,
            2 => Verbosity::Verbose,
            _ => Verbosity::Normal,
        };
        Progress::at(v)
    }

    fn at(verbosity: Verbosity) -> Progress {
        Progress { interactive: std::io::stderr().is_terminal(), verbosity }
    }

    /// [`Progress::from_env`] at a verbosity (`-q`, `-v`), which becomes the
    /// process's default.
    pub fn with(verbosity: Verbosity) -> Progress {
        VERBOSITY.store(verbosity as u8, std::sync::atomic::Ordering::Relaxed);
        Progress::at(verbosity)
    }

    /// Never draws (library use and tests).
    pub fn hidden() -> Progress {
        Progress { interactive: false, verbosity: Verbosity::Normal }
    }

    /// A bar of `len` steps: drawn with an ETA on a terminal, as plain lines
    /// with `-v` elsewhere, hidden otherwise.
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        let target = match (self.verbosity, self.interactive) {
            (Verbosity::Quiet, _) => ProgressDrawTarget::hidden(),
            (_, true) => ProgressDrawTarget::stderr(),
            (Verbosity::Verbose, false) => ProgressDrawTarget::term_like_with_hz(Box::new(PlainLines::default()), 1),
            (Verbosity::Normal, false) => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} (eta {eta})") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_owned());
        bar
    }

    /// A status line: to stderr, so stdout stays machine-readable; none with `-q`.
    pub fn note(&self, msg: &str) {
        if self.verbosity != Verbosity::Quiet {
            eprintln!("{msg}");
        }
    }
}
