//! `lockedmigrate`: run the migration command while holding the migration lock.
//!
//! The command runs as a child in a process group of its own; SIGTERM and SIGINT
//! sent to probehost are forwarded to that group (the command and whatever it
//! started). If probehost dies, by any signal, the warden ([`crate::warden`])
//! kills the whole group and holds the lock until every process of it is gone,
//! so a killed holder never leaves a migration running unlocked. When the
//! command exits, what it left in its group is stopped before the lock is
//! released. While it runs, the lock's connection is checked; if it is lost,
//! the command is stopped, because another replica may already hold the lock.

use std::time::Duration;

use rustix::process::Signal;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

use super::lock::MigrationLock;
use crate::child::{self, exit_code, signal_group};
use crate::reaper;
use crate::warden::{self, Warden};

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
    let mut warden = match Warden::start(&lock.held_fds()) {
        Ok(warden) => warden,
        Err(e) => {
            lock.release().await;
            return Ended::CannotRun(format!("cannot start the warden process: {e}"));
        }
    };
    let (ended, group) = supervise(&mut lock, command, &mut warden).await;
    // Nothing the command started outlives it while the lock is held.
    if let Some(group) = group {
        warden::stop_group(group, STOP_GRACE).await;
    }
    lock.release().await;
    warden.stand_down();
    ended
}

async fn supervise(
    lock: &mut MigrationLock,
    command: &[String],
    warden: &mut Warden,
) -> (Ended, Option<u32>) {
    reaper::adopt_orphans();
    let mut child = match spawn(command) {
        Ok(child) => child,
        Err(e) => {
            return (
                Ended::CannotRun(format!("cannot run {}: {e}", command[0])),
                None,
            );
        }
    };
    let pid = child.id();
    if let Some(pid) = pid {
        warden.watch(pid);
    }
    // As a Job's entrypoint probehost is PID 1: reap the command's orphans,
    // never the command itself or the warden.
    reaper::spawn(pid.into_iter().chain([warden.pid()]).collect());
    (watch_child(lock, &mut child, pid).await, pid)
}

async fn watch_child(lock: &mut MigrationLock, child: &mut Child, pid: Option<u32>) -> Ended {
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
            _ = term.recv() => signal_group(pid, Signal::TERM),
            _ = int.recv() => signal_group(pid, Signal::INT),
            _ = check.tick() => {
                if let Err(reason) = lock.check(LOCK_CHECK_TIMEOUT).await {
                    stop(child, pid).await;
                    return Ended::LockLost(reason);
                }
            }
        }
    }
}

fn spawn(command: &[String]) -> std::io::Result<Child> {
    child::command(command).spawn()
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`], to the whole group.
async fn stop(child: &mut Child, pid: Option<u32>) {
    signal_group(pid, Signal::TERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        signal_group(pid, Signal::KILL);
        let _ = child.wait().await;
    }
}
