//! PID 1 duties: reaping orphans.
//!
//! `probehost run -- gunicorn ...` is the natural container entrypoint, so
//! probehost is often PID 1, and every process in the container whose parent
//! dies is re-parented to it: worker subprocesses, the children of exec
//! probes, double-forked helpers. Each leaves a zombie until its new parent
//! waits for it, which is the job tini and dumb-init exist for.
//!
//! `run` and `lockedmigrate` do it themselves. As PID 1 they reap every
//! orphan; otherwise they first become a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), so that their own descendants' orphans come to
//! them instead of to the real init, and the behaviour is the same everywhere.
//!
//! The reaper never takes the exit status of a child probehost waits for
//! itself (the application, the migration command, the warden): it looks at a
//! child that has exited *without* reaping it (`waitid` with `WNOWAIT`), and
//! reaps it only when its pid is not one of those.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::process::{Pid, WaitOptions};
use tokio::signal::unix::{SignalKind, signal};

/// How often the reaper looks even without a SIGCHLD (signals coalesce, and
/// one may arrive while a round is running).
const SWEEP: Duration = Duration::from_secs(1);

/// Make orphaned descendants of this process its children, unless it is PID 1
/// (which they reach anyway).
pub fn adopt_orphans() {
    if rustix::process::getpid().is_init() {
        return;
    }
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::warn!("cannot become a child subreaper ({e}); orphans go to the system's init");
    }
}

/// Reap orphans on the current tokio runtime until it ends, leaving the
/// children in `own` to whoever waits for them. Returns the count of orphans
/// reaped so far.
pub fn spawn(own: Vec<u32>) -> Arc<AtomicU64> {
    let reaped = Arc::new(AtomicU64::new(0));
    let count = reaped.clone();
    tokio::spawn(async move {
        let mut exited = signal(SignalKind::child()).ok();
        loop {
            reap(&own, &count);
            let sigchld = async {
                match exited.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sigchld => {}
                () = tokio::time::sleep(SWEEP) => {}
            }
        }
    });
    reaped
}

/// Reap every exited child that is not one of `own`, stopping at the first
/// that is (its waiter will reap it; the next round sees past it).
fn reap(own: &[u32], count: &AtomicU64) {
    while let Some(pid) = exited_child() {
        let raw = pid.as_raw_nonzero().get();
        if own.iter().any(|o| i32::try_from(*o) == Ok(raw)) {
            return;
        }
        match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some(_)) => {
                count.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pid = raw, "reaped an orphan");
            }
            // Gone already (another waiter was quicker), or nothing to reap.
            _ => return,
        }
    }
}

/// A child that has exited and not yet been waited for, left waitable.
#[allow(unsafe_code)]
fn exited_child() -> Option<Pid> {
    // SAFETY: `siginfo_t` is plain data for which all zeroes is valid; waitid
    // writes into it and nothing else; `si_pid` reads the field waitid filled
    // for a child that exited (and 0, still zeroed, when none has).
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_ALL, 0, &mut info, flags) != 0 {
            // ECHILD: no children at all.
            return None;
        }
        Pid::from_raw(info.si_pid())
    }
}
