//! `lockedmigrate`: run the migration command while holding the migration lock.
//!
//! The command runs as a child in a process group of its own; SIGTERM and SIGINT
//! sent to probehost are forwarded to that group (the command and whatever it
//! started), and the command is killed if probehost dies (`PR_SET_PDEATHSIG`),
//! so a killed holder never leaves a migration running unlocked. While it runs, the lock's connection is checked; if it is lost, the
//! command is stopped, because another replica may already hold the lock.

use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use super::lock::MigrationLock;

/// How often the lock's connection is checked while the command runs.
const LOCK_CHECK: Duration = Duration::from_secs(2);
/// How long a lock check may take before the connection counts as lost.
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM, how long the command gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Exit code when the command cannot be started (as shells use).
pub const EXIT_CANNOT_RUN: u8 = 127;

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited (or was killed by a signal, as 128 + signal).
    Exited(u8),
    /// The lock was lost; the command was stopped.
    LockLost(String),
    /// It could not be started.
    CannotRun(String),
}

/// Start `command` while `lock` is held, forward signals to it, watch the lock,
/// and release the lock when the command has ended.
pub async fn run_locked(mut lock: MigrationLock, command: &[String]) -> Ended {
    let ended = supervise(&mut lock, command).await;
    lock.release().await;
    ended
}

async fn supervise(lock: &mut MigrationLock, command: &[String]) -> Ended {
    let mut child = match spawn(command) {
        Ok(child) => child,
        Err(e) => return Ended::CannotRun(format!("cannot run {}: {e}", command[0])),
    };
    let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default action would kill probehost and leave the
        // child to PR_SET_PDEATHSIG; still correct, but say so.
        tracing::warn!("cannot install signal handlers; signals will not be forwarded");
        return Ended::Exited(exit_code(child.wait().await));
    };
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + LOCK_CHECK, LOCK_CHECK);
    loop {
        tokio::select! {
            status = child.wait() => return Ended::Exited(exit_code(status)),
            _ = term.recv() => forward(pid, Signal::TERM),
            _ = int.recv() => forward(pid, Signal::INT),
            _ = check.tick() => {
                if let Err(reason) = lock.check(LOCK_CHECK_TIMEOUT).await {
                    stop(&mut child, pid).await;
                    return Ended::LockLost(reason);
                }
            }
        }
    }
}

fn spawn(command: &[String]) -> std::io::Result<Child> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).process_group(0).kill_on_drop(false);
    die_with_parent(&mut cmd);
    cmd.spawn()
}

/// Make the child receive SIGKILL if probehost dies. The signal follows the
/// thread that forked, so the job runs on a single-threaded runtime (the main
/// thread), which lives as long as the process.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs between fork and exec and only makes the prctl
    // and getppid system calls, which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died before the prctl took effect.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// Signal the command's process group (its id is the command's pid).
fn forward(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        let _ = kill_process_group(group, signal);
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`], to the whole group.
async fn stop(child: &mut Child, group: Option<Pid>) {
    forward(group, Signal::TERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        forward(group, Signal::KILL);
        let _ = child.wait().await;
    }
}

fn exit_code(status: std::io::Result<ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            (None, None) => 1,
        },
        Err(_) => 1,
    }
}
