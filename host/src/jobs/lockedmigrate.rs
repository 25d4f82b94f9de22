//! `lockedmigrate`: run the migration command while holding the migration lock.
//!
//! The command runs as a child in a process group of its own; SIGTERM and SIGINT
//! sent to probehost are forwarded to that group (the command and whatever it
//! started), and the command is killed if probehost dies (`PR_SET_PDEATHSIG`),
//! so a killed holder never leaves a migration running unlocked. While it runs, the lock's connection is checked; if it is lost, the
//! command is stopped, because another replica may already hold the lock.

use std::time::Duration;

use rustix::process::Signal;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

use super::lock::MigrationLock;
use crate::child::{self, exit_code, signal_group};

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
    let pid = child.id();
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
                    stop(&mut child, pid).await;
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
