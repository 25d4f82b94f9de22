//! `probehost run [serve options] -- CMD ARGS...`: the supervisor. Starts the
//! application as a child in a process group of its own, serves its probes
//! while it runs (liveness follows it), drains and passes the stopping signal
//! on, reaps orphans (PID 1's duty; see [`crate::reaper`]), and exits with the
//! application's exit code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::serve::{ServeArgs, bind, serve_config};
use super::{Global, error, exit};
use crate::app::{self, StartupError};
use crate::child;
use crate::jobs::lockedmigrate::EXIT_CANNOT_RUN;
use crate::reaper;
use crate::server::{Lifecycle, Stop};
use crate::signals;
use crate::warden::{self, Warden};

/// `probehost run [serve options] -- CMD ARGS...`
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The application to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub(super) fn exec(global: &Global, args: &RunArgs) -> Result<u8, StartupError> {
    let config = serve_config(global, &args.serve)?;
    reaper::adopt_orphans();
    let alive = Arc::new(AtomicBool::new(true));
    let port = if config.server.liveness_upstream {
        Some(app::upstream_address(&config).context("resolving server.upstream")?)
    } else {
        None
    };
    let guests = app::guest_runtime().context("starting the probe runtime")?;
    let state = app::build_state(
        &config,
        guests.handle(),
        Lifecycle::supervising(alive.clone(), port),
    )?;
    let control = super::current_thread_runtime("control")?;
    let code: anyhow::Result<u8> = control.block_on(async {
        let (stops, stopping) = tokio::sync::mpsc::unbounded_channel();
        let (first_signal, received) = tokio::sync::oneshot::channel();
        tokio::spawn(signals::shutdown(stops.clone(), Some(first_signal)));
        let forward = signals::forward();
        let listener = bind(&config, &state).await?;
        let mut warden = Warden::start(&[]).context("starting the warden process")?;
        // Spawned here, on the main thread, which the parent-death signal follows.
        let mut app = match child::command(&args.command).spawn() {
            Ok(app) => app,
            Err(e) => {
                warden.stand_down();
                error(&format!("cannot run {}: {e}", args.command[0]));
                return Ok(EXIT_CANNOT_RUN);
            }
        };
        let pid = app.id();
        if let Some(pid) = pid {
            warden.watch(pid);
        }
        // PID 1's duty (or a subreaper's): orphans are reaped, never the
        // application or the warden, whose waiters need their exit status.
        reaper::spawn(pid.into_iter().chain([warden.pid()]).collect());
        // Only the program: arguments can carry secrets.
        tracing::info!(pid, program = %args.command[0], "application started");
        let (exited_tx, mut exited) = tokio::sync::watch::channel(None);
        let watching = alive.clone();
        let exit_stops = stops.clone();
        tokio::spawn(async move {
            let status = app.wait().await;
            watching.store(false, Ordering::SeqCst);
            let code = child::exit_code(status);
            tracing::warn!(code, "application exited");
            let _ = exited_tx.send(Some(code));
            let _ = exit_stops.send(Stop::Now);
        });
        forward(pid);
        app::serve(&config, listener, state, stopping).await?;
        // A signal that started the stop, unless the application ended first.
        let received = match exited.borrow().is_some() {
            true => None,
            false => received.await.ok(),
        };
        if let Some(signal) = received {
            // After the drain, pass the signal on and wait for the application.
            child::signal_group(pid, signal);
            let wait = exited.wait_for(Option::is_some);
            if tokio::time::timeout(config.server.grace, wait)
                .await
                .is_err()
            {
                tracing::warn!(
                    "application did not exit within {:?}; killing it",
                    config.server.grace
                );
                child::signal_group(pid, rustix::process::Signal::KILL);
            }
        }
        let code = *exited
            .wait_for(Option::is_some)
            .await
            .expect("the waiter reports once");
        // What the application left in its group: SIGTERM, then SIGKILL
        // after the grace.
        if let Some(pid) = pid {
            warden::stop_group(pid, config.server.grace).await;
        }
        warden.stand_down();
        tracing::info!(code, "stopped");
        Ok(code.unwrap_or(exit::FAILURE))
    });
    drop(control);
    guests.shutdown_timeout(Duration::from_secs(1));
    Ok(code?)
}
