//! The warden: a small process that outlives probehost just long enough to
//! stop what probehost started.
//!
//! `run`'s application and `lockedmigrate`'s command run in a process group of
//! their own. The parent-death signal reaches only the direct child; a wrapper
//! (`sh -c`, `npm run`, `manage.py` calling subprocesses) leaves grandchildren
//! that would run on, and for `lockedmigrate` the database would release the
//! lock the moment probehost's connection closed. So before the command starts,
//! probehost starts the warden (itself, re-executed as the hidden `warden`
//! command), in a session of its own so that signals for probehost's group
//! or terminal do not reach it:
//!
//! - its stdin is a pipe whose only writer is probehost: when probehost dies
//!   by any signal, SIGKILL included, the warden reads end-of-file;
//! - it inherits what keeps the lock (a duplicate of the lock connection's
//!   socket, or of the locked file) and holds it without using it, so the
//!   lock outlives probehost too;
//! - told the command's group (`G <pgid>`), on end-of-file it kills the whole
//!   group, waits until no process of it is alive, and only then exits,
//!   closing the descriptors, which releases the lock;
//! - told to stand down (`D`), probehost having stopped the group and released
//!   the lock itself, it exits without touching anything.

use std::io::{BufRead, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// How long the warden waits for a killed group to be gone before it gives up
/// (a process in uninterruptible sleep dies when it wakes).
const GONE_WITHIN: Duration = Duration::from_secs(60);

/// probehost's side of a running warden.
#[derive(Debug)]
pub struct Warden {
    child: Child,
    orders: std::io::PipeWriter,
}

impl Warden {
    /// Start the warden, holding `held` (duplicated into it) until it exits.
    pub fn start(held: &[BorrowedFd<'_>]) -> std::io::Result<Warden> {
        let (orders_in, orders) = std::io::pipe()?;
        let held: Vec<OwnedFd> = held
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<_>>()?;
        let mut command = Command::new("/proc/self/exe");
        command
            .arg("warden")
            .stdin(Stdio::from(OwnedFd::from(orders_in)))
            .stdout(Stdio::null());
        new_session(&mut command);
        pass_descriptors(&held)?;
        let child = command.spawn()?;
        drop(held);
        Ok(Warden { child, orders })
    }

    /// The warden's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// From now on, if probehost dies, the warden kills process group `group`.
    pub fn watch(&mut self, group: u32) {
        let _ = writeln!(self.orders, "G {group}");
    }

    /// probehost has done the cleaning up itself: the warden exits quietly.
    pub fn stand_down(mut self) {
        let _ = writeln!(self.orders, "D");
        drop(self.orders);
        let _ = self.child.wait();
    }
}

/// Start the warden in a session of its own: no signal meant for probehost's
/// process group or terminal reaches it, and its group, orphaned from the
/// start, is not sent SIGHUP and SIGCONT when probehost dies.
fn new_session(command: &mut Command) {
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec the closure only makes the setsid system
    // call, which is async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
}

/// Let the next child inherit `held`: duplicates made for it alone, so
/// clearing close-on-exec exposes nothing else, and closed here once the
/// warden has them (jobs and `run` fork nowhere else meanwhile).
fn pass_descriptors(held: &[OwnedFd]) -> std::io::Result<()> {
    for fd in held {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    Ok(())
}

/// The `warden` command: read orders until probehost stands the warden down
/// or dies. Returns the exit code.
pub fn serve_orders() -> u8 {
    let mut group: Option<i32> = None;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        match line.split_once(' ') {
            Some(("G", pgid)) => group = pgid.trim().parse().ok(),
            _ if line.trim() == "D" => return 0,
            _ => {}
        }
    }
    // End of file: probehost is gone.
    let Some(group) = group else { return 0 };
    tracing::warn!(
        group,
        "probehost ended without stopping its command; killing the command's process group"
    );
    kill_group(group);
    let started = Instant::now();
    while group_alive(group) {
        if started.elapsed() > GONE_WITHIN {
            tracing::error!(
                group,
                "the command's process group is still alive; giving up"
            );
            return 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    0
}

fn kill_group(group: i32) {
    if let Some(pgid) = Pid::from_raw(group) {
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}

/// Whether a process of group `group` is alive (zombies, waiting for their
/// parent to collect them, no longer run and do not count).
pub fn group_alive(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Without /proc, ask the kernel: a group with only zombies in it
        // still counts as alive here, which errs on the safe side.
        return Pid::from_raw(group)
            .is_some_and(|pgid| rustix::process::test_kill_process_group(pgid).is_ok());
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return false;
        };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold anything, so read
        // after its last parenthesis.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(group) && !matches!(state, Some("Z" | "X"))
    })
}

/// Stop what is left of process group `group` after its leader has exited:
/// SIGTERM, SIGKILL after `grace`, then wait (at most a minute) until
/// no process of it is alive.
pub async fn stop_group(group: u32, grace: Duration) {
    let Ok(group) = i32::try_from(group) else {
        return;
    };
    if !group_alive(group) {
        return;
    }
    tracing::info!(group, "stopping the processes the command left behind");
    if let Some(pgid) = Pid::from_raw(group) {
        let _ = kill_process_group(pgid, Signal::TERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while group_alive(group) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if group_alive(group) {
        tracing::warn!(
            group,
            "killing what the command left behind after {grace:?}"
        );
        kill_group(group);
    }
    let deadline = tokio::time::Instant::now() + GONE_WITHIN;
    while group_alive(group) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
