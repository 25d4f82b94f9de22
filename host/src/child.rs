//! Child processes probehost runs (`run`'s application, `lockedmigrate`'s
//! command): each in a process group of its own, so signals reach it only when
//! probehost forwards them, to the whole group; and killed if probehost dies
//! (`PR_SET_PDEATHSIG`), so it never outlives its supervisor unwatched.

use std::process::ExitStatus;

use rustix::process::{Pid, Signal, kill_process_group};

/// A command for `argv`, set up as described above. The parent-death signal
/// follows the *thread* that spawns, so spawn from a thread that lives as long
/// as the process (the main thread: a `block_on` future, not a spawned task).
pub fn command(argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).process_group(0).kill_on_drop(false);
    die_with_parent(&mut cmd);
    cmd
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
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

/// Signal the process group of the child with this pid (its group id).
pub fn signal_group(pid: Option<u32>, signal: Signal) {
    if let Some(group) = pid.and_then(|id| Pid::from_raw(id as i32)) {
        let _ = kill_process_group(group, signal);
    }
}

/// The exit code to pass on: the child's own, or 128 + N if signal N ended it.
pub fn exit_code(status: std::io::Result<ExitStatus>) -> u8 {
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
