//! Signals for the long-running commands (`serve`, `run`): the ones that stop
//! probehost (SIGTERM, SIGINT: a drain, then at once on the second) and, under
//! `run`, the ones passed on to the application's process group. The children
//! themselves are [`crate::child`]'s.

use rustix::process::Signal;
use tokio::signal::unix::{SignalKind, signal};

use crate::child;
use crate::server::Stop;

/// SIGTERM (Kubernetes) or SIGINT (a terminal) asks `stops` for a drain, and
/// a second one to stop at once; `first` learns which signal came first. The
/// handlers are installed when this is called (before the listener is
/// announced), the returned future acts on them.
pub fn shutdown(
    stops: tokio::sync::mpsc::UnboundedSender<Stop>,
    mut first: Option<tokio::sync::oneshot::Sender<Signal>>,
) -> impl Future<Output = ()> {
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let mut draining = false;
    async move {
        loop {
            let (name, signal) = tokio::select! {
                _ = term.recv() => ("SIGTERM", Signal::TERM),
                _ = int.recv() => ("SIGINT", Signal::INT),
            };
            if draining {
                tracing::info!(signal = name, "stopping without waiting for the drain");
                let _ = stops.send(Stop::Now);
                continue;
            }
            tracing::info!(signal = name, "shutting down");
            draining = true;
            if let Some(first) = first.take() {
                let _ = first.send(signal);
            }
            let _ = stops.send(Stop::Drain);
        }
    }
}

/// `run`: the signals that do not stop probehost go straight to the
/// application (SIGHUP to reload, SIGUSR1/SIGUSR2 for what it defines them,
/// SIGQUIT); SIGTERM and SIGINT reach it after the drain. The handlers are
/// installed now; the returned function starts passing signals on to the
/// application's process group.
pub fn forward() -> impl FnOnce(Option<u32>) {
    let installed: Vec<_> = [
        (SignalKind::hangup(), Signal::HUP),
        (SignalKind::quit(), Signal::QUIT),
        (SignalKind::user_defined1(), Signal::USR1),
        (SignalKind::user_defined2(), Signal::USR2),
    ]
    .into_iter()
    .filter_map(|(kind, to_send)| Some((signal(kind).ok()?, to_send)))
    .collect();
    move |pid| {
        for (mut received, to_send) in installed {
            tokio::spawn(async move {
                while received.recv().await.is_some() {
                    tracing::info!(signal = ?to_send, "passing the signal to the application");
                    child::signal_group(pid, to_send);
                }
            });
        }
    }
}
