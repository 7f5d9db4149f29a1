//! Child processes die with tinykd.
//!
//! QEMU busy-polls its UART and never exits by itself, and a firmware build
//! runs cargo with its rustc children: when tinykd is stopped (Ctrl-C,
//! `kill`, `timeout`, a CI step's time limit, a closed terminal) or panics,
//! nothing it started may keep running. Three layers make sure of it:
//!
//! - every child runs in a process group of its own, registered here, and
//!   tinykd's SIGINT/SIGTERM/SIGHUP handler kills each registered group
//!   before tinykd itself dies of the signal (so a shell still sees 130/143);
//! - [`Tied`] kills the group when dropped, so a panic that unwinds or an
//!   early return does too;
//! - on Linux the child also asks the kernel for SIGKILL when tinykd dies
//!   (`PR_SET_PDEATHSIG`), which covers `kill -9` of tinykd, where no
//!   handler runs.
//!
//! A group of its own keeps the terminal's Ctrl-C from reaching the child
//! before tinykd has decided what to do, and lets one `kill` reach
//! grandchildren (cargo's rustc).

// Signal handling and process groups need libc calls, each justified below.
#![allow(unsafe_code)]

use std::io;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output};
use std::sync::atomic::{AtomicI32, Ordering};

#[cfg(not(unix))]
pub use portable::install_signal_handlers;
#[cfg(not(unix))]
use portable::{kill_group, tie};
#[cfg(unix)]
pub use sys::install_signal_handlers;
#[cfg(unix)]
use sys::{kill_group, tie};

/// Process groups of the running children (0: a free slot). A fixed table
/// of atomics, because the signal handler may only do async-signal-safe
/// work: no locks, no allocation.
static GROUPS: [AtomicI32; 32] = [const { AtomicI32::new(0) }; 32];

fn register(pid: i32) {
    // More than 32 children at once never happens in tinykd; a child that
    // finds no slot is still covered by its drop guard and the death signal.
    for slot in &GROUPS {
        if slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return;
        }
    }
}

fn unregister(pid: i32) {
    for slot in &GROUPS {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

#[cfg(unix)]
mod sys {
    use super::*;

    /// SIGKILL to the process group `pid` leads (async-signal-safe).
    pub(super) fn kill_group(pid: i32) {
        // SAFETY: kill(2) takes plain integers and is async-signal-safe.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }

    /// Kills every registered child's process group (async-signal-safe).
    fn kill_all() {
        for slot in &GROUPS {
            let pid = slot.load(Ordering::SeqCst);
            if pid > 0 {
                kill_group(pid);
            }
        }
    }

    extern "C" fn on_signal(sig: libc::c_int) {
        kill_all();
        // SAFETY: signal(2) and raise(3) are async-signal-safe; with the default
        // disposition back, tinykd dies of the same signal, as if unhandled.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }

    /// Installs the handler that kills children on SIGINT, SIGTERM and SIGHUP.
    /// The binary calls it first thing; a library user that wants the same
    /// calls it too.
    pub fn install_signal_handlers() {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only calls async-signal-safe functions (kill,
            // signal, raise) and reads atomics.
            unsafe {
                libc::signal(sig, on_signal as *const () as libc::sighandler_t);
            }
        }
    }

    /// Prepares `cmd` to run tied to tinykd: its own process group and, on
    /// Linux, SIGKILL when tinykd dies.
    pub(super) fn tie(cmd: &mut Command) -> &mut Command {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: runs in the forked child before exec: prctl and getppid
            // are async-signal-safe and nothing is allocated.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // tinykd died between fork and prctl: the signal would never come.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
        }
        cmd
    }
}

/// Elsewhere: no process groups or signals to handle; the drop guard
/// still kills the child.
#[cfg(not(unix))]
mod portable {
    use std::process::Command;

    pub(super) fn kill_group(_pid: i32) {}

    pub(super) fn tie(cmd: &mut Command) -> &mut Command {
        cmd
    }

    /// Nothing to install off Unix.
    pub fn install_signal_handlers() {}
}

/// A child tied to tinykd: killed (its whole process group) when dropped,
/// on a signal to tinykd, or when tinykd dies.
#[derive(Debug)]
pub struct Tied {
    /// `None` once waited for.
    child: Option<Child>,
    pid: i32,
}

impl Tied {
    /// Starts `cmd` tied to tinykd.
    pub fn spawn(cmd: &mut Command) -> io::Result<Tied> {
        let child = tie(cmd).spawn()?;
        let pid = child.id() as i32;
        register(pid);
        Ok(Tied { child: Some(child), pid })
    }

    /// The child's stdin and stdout, when piped (each taken once).
    pub fn take_pipes(&mut self) -> (Option<ChildStdin>, Option<ChildStdout>) {
        match &mut self.child {
            Some(c) => (c.stdin.take(), c.stdout.take()),
            None => (None, None),
        }
    }

    /// Waits for the child to finish, collecting its output. The group stays
    /// registered while it runs, so a signal to tinykd still kills it.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        let out = match self.child.take() {
            Some(child) => child.wait_with_output(),
            None => Err(io::Error::other("the child was already waited for")),
        };
        unregister(self.pid);
        out
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(self.pid);
            let _ = child.kill();
            let _ = child.wait();
            unregister(self.pid);
        }
    }
}

/// `cmd.output()` tied to tinykd: stdout and stderr captured, stdin empty.
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    Tied::spawn(cmd)?.wait_with_output()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn alive(pid: i32) -> bool {
        // A zombie still answers kill(0); /proc says whether it is one.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
            Err(_) => false,
        }
    }

    #[test]
    fn output_is_collected_and_the_slot_freed() {
        let out = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn dropping_kills_the_child_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let tied = Tied::spawn(Command::new("sh").args(["-c", &script])).unwrap();
        let pid = tied.pid;
        let mut grandchild = None;
        for _ in 0..200 {
            if let Some(p) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                grandchild = Some(p);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let grandchild = grandchild.expect("the shell started its child");
        assert!(GROUPS.iter().any(|s| s.load(Ordering::SeqCst) == pid));
        drop(tied);
        assert!(!alive(pid));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!alive(grandchild), "the grandchild {grandchild} outlived the group");
        assert!(!GROUPS.iter().any(|s| s.load(Ordering::SeqCst) == pid));
    }
}
