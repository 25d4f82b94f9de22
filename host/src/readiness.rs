//! The readiness evaluator: the one seam between serving and deciding.
//!
//! The HTTP routes and `probehost probe --ready` both ask [`Evaluator::evaluate`].
//! It runs every configured probe concurrently on the guest runtime under one
//! overall deadline and answers with the first failure in configured order, as
//! soon as that is known (the probes before it have passed); the checks still
//! running are then cancelled. It knows nothing of HTTP; it knows plugins only
//! through [`Plugin::check`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::plugin::{CheckOutcome, Plugin, ProbeRequest};

/// Extra time past the overall deadline for checks to report their own timeout
/// before the evaluator stops waiting for them.
const DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// The answer to a readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    NotReady {
        /// The probe that failed first in configured order.
        probe: String,
        /// HTTP status of the answer.
        status: u16,
        /// Body of the answer.
        message: String,
    },
}

/// Runs the configured probes.
#[derive(Debug)]
pub struct Evaluator {
    probes: Vec<Arc<Plugin>>,
    timeout: Duration,
    guests: Handle,
}

impl Evaluator {
    /// `guests` is the runtime the probe checks run on; keeping it apart from the
    /// runtime that serves HTTP means no probe can delay a liveness answer.
    pub fn new(probes: Vec<Plugin>, timeout: Duration, guests: Handle) -> Evaluator {
        Evaluator {
            probes: probes.into_iter().map(Arc::new).collect(),
            timeout,
            guests,
        }
    }

    /// The probe names in configured order.
    pub fn probe_names(&self) -> impl Iterator<Item = &str> {
        self.probes.iter().map(|p| p.name())
    }

    /// Check readiness, within the overall deadline.
    pub async fn evaluate(&self, request: Option<ProbeRequest>) -> Verdict {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let request = request.map(Arc::new);
        let mut running: FuturesUnordered<_> = self
            .probes
            .iter()
            .enumerate()
            .map(|(index, plugin)| {
                let plugin = plugin.clone();
                let request = request.clone();
                let task = AbortOnDrop(self.guests.spawn(async move {
                    plugin.check(request.as_deref(), started, deadline).await
                }));
                async move { (index, task.join().await) }
            })
            .collect();

        let mut outcomes: Vec<Option<CheckOutcome>> = vec![None; self.probes.len()];
        let mut settled = 0;
        let give_up = tokio::time::sleep_until((deadline + DEADLINE_GRACE).into());
        tokio::pin!(give_up);
        loop {
            // Every probe before `settled` passed; the verdict is known once the
            // probe at `settled` has an outcome.
            while let Some(Some(outcome)) = outcomes.get(settled) {
                if *outcome != CheckOutcome::Ready {
                    return self.not_ready(settled, outcome);
                }
                settled += 1;
            }
            if settled == self.probes.len() {
                return Verdict::Ready;
            }
            tokio::select! {
                Some((index, outcome)) = running.next() => outcomes[index] = Some(outcome),
                () = &mut give_up => return self.not_ready(settled, &CheckOutcome::TimedOut),
            }
        }
    }

    fn not_ready(&self, index: usize, outcome: &CheckOutcome) -> Verdict {
        let plugin = &self.probes[index];
        let probe = plugin.name();
        let (status, message) = match outcome {
            CheckOutcome::Ready => unreachable!("a ready probe is not a failure"),
            CheckOutcome::NotReady { message, status } => (*status, message.clone()),
            CheckOutcome::TimedOut => {
                let limit = plugin.timeout().min(self.timeout);
                (
                    503,
                    format!("{probe}: timed out after {}ms", limit.as_millis()),
                )
            }
            CheckOutcome::MemoryExceeded { limit } => (
                503,
                format!(
                    "{probe}: exceeded its memory limit of {}",
                    format_size(*limit)
                ),
            ),
            CheckOutcome::Crashed(reason) => (503, format!("{probe}: crashed: {reason}")),
        };
        tracing::debug!(probe, status, %message, "not ready");
        Verdict::NotReady {
            probe: probe.to_owned(),
            status,
            message,
        }
    }
}

/// Human form of a byte count, as the config file writes it.
pub fn format_size(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    const KIB: usize = 1 << 10;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A spawned check that is cancelled when its verdict is no longer needed.
struct AbortOnDrop(JoinHandle<CheckOutcome>);

impl AbortOnDrop {
    async fn join(mut self) -> CheckOutcome {
        match (&mut self.0).await {
            Ok(outcome) => outcome,
            Err(e) => CheckOutcome::Crashed(format!("internal error: {e}")),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
