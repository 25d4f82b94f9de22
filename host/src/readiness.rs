//! Readiness: the one seam between serving and deciding.
//!
//! An [`Evaluation`] runs every configured probe concurrently on the guest
//! runtime under one overall deadline and publishes each probe's result as it
//! comes. Whoever asks reads what it needs from it: the verdict (the first
//! failure in configured order, known as soon as the probes before it have
//! passed), one probe's result, or all of them. [`Readiness`] decides which
//! evaluation a request reads: the one in flight if there is one (so a storm of
//! requests is one evaluation, not a storm of database checks), a recent one
//! within `readiness.cache_ttl`, or with `readiness.interval` the latest one a
//! background loop produced.
//!
//! This module knows nothing of HTTP; it knows plugins only through
//! [`Plugin::check`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::metrics::{CheckResult, Metrics};
use crate::plugin::{CheckOutcome, Plugin, ProbeRequest, Spent};

/// Extra time past the overall deadline for checks to report their own timeout
/// before the evaluation stops waiting for them.
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

/// How a probe's failure gates readiness (`probes.NAME.gate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gate {
    /// Every failure makes readiness fail (the original's behaviour).
    #[default]
    Always,
    /// Failures gate readiness until the first time readiness passes; after
    /// that the probe is reported as degraded, and the pod stays in rotation.
    Startup,
    /// Never gates readiness: reported only.
    Never,
}

impl Gate {
    pub const NAMES: [&'static str; 3] = ["always", "startup", "never"];

    pub fn from_name(name: &str) -> Option<Gate> {
        match name {
            "always" => Some(Gate::Always),
            "startup" => Some(Gate::Startup),
            "never" => Some(Gate::Never),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Gate::Always => "always",
            Gate::Startup => "startup",
            Gate::Never => "never",
        }
    }
}

/// Where a probe stands after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Ready,
    /// Failed, and the failure gates readiness.
    NotReady,
    /// Failed, but its gate lets readiness pass.
    Degraded,
}

/// One probe's result in an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub name: String,
    /// `None` when ready; else the status and message of the answer.
    pub failure: Option<(u16, String)>,
    pub duration: Duration,
    /// Whether a failure gates readiness (decided when the result came in).
    gates: bool,
    kind: CheckResult,
}

impl ProbeResult {
    /// Whether the check itself passed.
    pub fn is_ready(&self) -> bool {
        self.failure.is_none()
    }

    pub fn standing(&self) -> Standing {
        match (&self.failure, self.gates) {
            (None, _) => Standing::Ready,
            (Some(_), true) => Standing::NotReady,
            (Some(_), false) => Standing::Degraded,
        }
    }

    /// Whether this result makes readiness fail.
    pub fn blocks(&self) -> bool {
        self.standing() == Standing::NotReady
    }

    fn new(
        plugin: &Plugin,
        outcome: &CheckOutcome,
        limit: Duration,
        duration: Duration,
        gates: bool,
    ) -> ProbeResult {
        let probe = plugin.name();
        let (kind, failure) = match outcome {
            CheckOutcome::Ready => (CheckResult::Ready, None),
            CheckOutcome::NotReady { message, status } => {
                (CheckResult::NotReady, Some((*status, message.clone())))
            }
            CheckOutcome::TimedOut => (
                CheckResult::Timeout,
                Some((
                    503,
                    format!("{probe}: timed out after {}ms", limit.as_millis()),
                )),
            ),
            CheckOutcome::MemoryExceeded { limit } => (
                CheckResult::Memory,
                Some((
                    503,
                    format!(
                        "{probe}: exceeded its memory limit of {}",
                        format_size(*limit)
                    ),
                )),
            ),
            CheckOutcome::Crashed(reason) => (
                CheckResult::Crash,
                Some((503, format!("{probe}: crashed: {reason}"))),
            ),
        };
        ProbeResult {
            name: probe.to_owned(),
            failure,
            duration,
            gates,
            kind,
        }
    }
}

type Slots = Vec<Option<Arc<ProbeResult>>>;

/// A readiness evaluation, finished or in flight.
#[derive(Debug)]
pub struct Evaluation {
    started: Instant,
    results: watch::Receiver<Slots>,
    finished: Arc<OnceLock<Instant>>,
}

impl Evaluation {
    /// Time since it started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether every probe has a result.
    pub fn is_finished(&self) -> bool {
        self.finished.get().is_some()
    }

    fn finished_at(&self) -> Option<Instant> {
        self.finished.get().copied()
    }

    /// Wait until `enough` holds for the results so far.
    async fn wait(&self, enough: impl Fn(&Slots) -> bool) -> Slots {
        let mut results = self.results.clone();
        if let Ok(slots) = results.wait_for(|slots| enough(slots)).await {
            return slots.clone();
        }
        // The driver is gone (the runtime is shutting down): what is there.
        results.borrow().clone()
    }

    /// The verdict, ignoring the probes in `exclude`, as soon as it is known.
    pub async fn verdict(&self, exclude: &[String]) -> Verdict {
        let counts =
            |r: &Option<Arc<ProbeResult>>| r.as_ref().is_none_or(|r| !exclude.contains(&r.name));
        let slots = self
            .wait(|slots| {
                for slot in slots {
                    match slot {
                        None => return false,
                        Some(r) if r.blocks() && counts(slot) => return true,
                        Some(_) => {}
                    }
                }
                true
            })
            .await;
        for slot in &slots {
            match slot {
                Some(r) if counts(slot) && r.blocks() => {
                    if let Some((status, message)) = &r.failure {
                        return Verdict::NotReady {
                            probe: r.name.clone(),
                            status: *status,
                            message: message.clone(),
                        };
                    }
                }
                Some(_) => {}
                None => {
                    return Verdict::NotReady {
                        probe: String::new(),
                        status: 503,
                        message: "shutting down".into(),
                    };
                }
            }
        }
        Verdict::Ready
    }

    /// Every probe's result, in configured order, once all are in.
    pub async fn results(&self) -> Vec<Arc<ProbeResult>> {
        self.wait(|slots| slots.iter().all(Option::is_some))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One probe's result, once it is in.
    pub async fn result(&self, index: usize) -> Option<Arc<ProbeResult>> {
        self.wait(|slots| slots.get(index).is_none_or(Option::is_some))
            .await
            .get(index)
            .cloned()
            .flatten()
    }
}

/// Runs the configured probes.
#[derive(Debug)]
pub struct Evaluator {
    probes: Vec<Arc<Plugin>>,
    /// Each probe's gate, in the same order.
    gates: Vec<Gate>,
    timeout: Duration,
    guests: Handle,
    metrics: Arc<Metrics>,
    /// Each probe's standing after the last evaluation, to log changes only.
    last: Mutex<Vec<Option<Standing>>>,
    /// Whether any evaluation has passed (which ends the `startup` gates).
    passed: AtomicBool,
    /// Whether to make each probe's next instance once an evaluation is out.
    prepare: bool,
}

impl Evaluator {
    /// `guests` is the runtime the probe checks run on; keeping it apart from the
    /// runtime that serves HTTP means no probe can delay a liveness answer.
    pub fn new(
        probes: Vec<(Plugin, Gate)>,
        timeout: Duration,
        guests: Handle,
        metrics: Arc<Metrics>,
        prepare: bool,
    ) -> Evaluator {
        let n = probes.len();
        let (probes, gates): (Vec<Plugin>, Vec<Gate>) = probes.into_iter().unzip();
        Evaluator {
            probes: probes.into_iter().map(Arc::new).collect(),
            gates,
            timeout,
            guests,
            metrics,
            last: Mutex::new(vec![None; n]),
            passed: AtomicBool::new(false),
            prepare,
        }
    }

    /// The probe names in configured order.
    pub fn probe_names(&self) -> impl Iterator<Item = &str> {
        self.probes.iter().map(|p| p.name())
    }

    /// The position of the probe called `name`.
    pub fn probe_index(&self, name: &str) -> Option<usize> {
        self.probes.iter().position(|p| p.name() == name)
    }

    /// Start an evaluation on the guest runtime.
    pub fn start(self: &Arc<Self>, request: Option<ProbeRequest>) -> Arc<Evaluation> {
        let started = Instant::now();
        let (tx, rx) = watch::channel(vec![None; self.probes.len()]);
        let finished = Arc::new(OnceLock::new());
        let evaluation = Arc::new(Evaluation {
            started,
            results: rx,
            finished: finished.clone(),
        });
        let this = self.clone();
        self.guests.spawn(async move {
            this.drive(request, started, tx, &finished).await;
        });
        evaluation
    }

    /// Check readiness once and return the verdict.
    pub async fn evaluate(self: &Arc<Self>, request: Option<ProbeRequest>) -> Verdict {
        self.start(request).verdict(&[]).await
    }

    async fn drive(
        &self,
        request: Option<ProbeRequest>,
        started: Instant,
        tx: watch::Sender<Slots>,
        finished: &OnceLock<Instant>,
    ) {
        let deadline = started + self.timeout;
        let request = request.map(Arc::new);
        let mut running: FuturesUnordered<_> = self
            .probes
            .iter()
            .enumerate()
            .map(|(index, plugin)| {
                let request = request.clone();
                async move {
                    let check = plugin.check_then_release(request.as_deref(), started, deadline);
                    match std::panic::AssertUnwindSafe(check).catch_unwind().await {
                        Ok((outcome, spent)) => (index, outcome, spent),
                        Err(_) => (
                            index,
                            CheckOutcome::Crashed("internal error: the check panicked".into()),
                            Spent::default(),
                        ),
                    }
                }
            })
            .collect();

        let give_up = tokio::time::sleep_until((deadline + DEADLINE_GRACE).into());
        tokio::pin!(give_up);
        let mut pending = self.probes.len();
        while pending > 0 {
            tokio::select! {
                Some((index, outcome, spent)) = running.next() => {
                    self.publish(&tx, index, &outcome, started, finished);
                    // The instance is torn down after its result is out.
                    drop(spent);
                    pending -= 1;
                }
                () = &mut give_up => {
                    // Whatever has not answered by now has timed out.
                    for index in 0..self.probes.len() {
                        if tx.borrow()[index].is_none() {
                            self.publish(&tx, index, &CheckOutcome::TimedOut, started, finished);
                        }
                    }
                    break;
                }
            }
        }
        // Every result is out: make the next evaluation's instances now.
        drop(running);
        if self.prepare {
            futures::future::join_all(self.probes.iter().map(|p| p.prepare())).await;
        }
    }

    /// Make one probe's result visible. The last result of an evaluation is
    /// made visible only after the evaluation is recorded (logs, metrics, the
    /// startup flag) and marked finished, so whoever sees the full verdict also
    /// sees its effects, and a request that comes after it never joins it as
    /// if it were still in flight.
    fn publish(
        &self,
        tx: &watch::Sender<Slots>,
        index: usize,
        outcome: &CheckOutcome,
        started: Instant,
        finished: &OnceLock<Instant>,
    ) {
        let plugin = &self.probes[index];
        let limit = plugin.timeout().min(self.timeout);
        let gates = match self.gates[index] {
            Gate::Always => true,
            Gate::Startup => !self.passed.load(Ordering::Relaxed),
            Gate::Never => false,
        };
        let result = ProbeResult::new(plugin, outcome, limit, started.elapsed(), gates);
        self.metrics.record_check(
            index,
            result.kind,
            result.standing() == Standing::Degraded,
            result.duration,
        );
        // Only the driver sends, so this copy cannot lose an update.
        let mut slots = tx.borrow().clone();
        slots[index] = Some(Arc::new(result));
        if slots.iter().all(Option::is_some) {
            self.after(&slots);
            let _ = finished.set(Instant::now());
        }
        tx.send_replace(slots);
    }

    /// Log each probe whose readiness changed, with the reason, and record the
    /// overall answer.
    fn after(&self, slots: &Slots) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut all_ready = true;
        for (index, slot) in slots.iter().enumerate() {
            let Some(result) = slot else { continue };
            let standing = result.standing();
            all_ready &= standing != Standing::NotReady;
            if last[index] != Some(standing) {
                let name = &result.name;
                let (status, reason) = result
                    .failure
                    .as_ref()
                    .map_or((200, ""), |(s, m)| (*s, m.as_str()));
                match standing {
                    Standing::Ready => tracing::info!(probe = %name, "probe is ready"),
                    Standing::NotReady => {
                        tracing::warn!(probe = %name, status, reason = %reason, "probe is not ready");
                    }
                    Standing::Degraded => tracing::warn!(
                        probe = %name,
                        gate = self.gates[index].name(),
                        reason = %reason,
                        "probe is degraded: it fails, but its gate keeps readiness passing"
                    ),
                }
                last[index] = Some(standing);
            }
        }
        if all_ready {
            self.passed.store(true, Ordering::Relaxed);
        }
        self.metrics.record_evaluation(all_ready);
    }
}

/// How readiness requests share evaluations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Reuse a finished evaluation this young.
    pub cache_ttl: Option<Duration>,
    /// Evaluate in the background this often; requests read the latest result.
    pub interval: Option<Duration>,
}

/// Readiness as the server sees it: shared evaluations, and whether it has ever
/// been ready (for startup probes).
#[derive(Debug)]
pub struct Readiness {
    evaluator: Arc<Evaluator>,
    sharing: Sharing,
    metrics: Arc<Metrics>,
    /// The newest evaluation (finished or not).
    newest: Mutex<Option<Arc<Evaluation>>>,
    /// The newest finished evaluation, for background mode.
    latest_finished: Mutex<Option<Arc<Evaluation>>>,
}

impl Readiness {
    pub fn new(
        evaluator: Arc<Evaluator>,
        sharing: Sharing,
        metrics: Arc<Metrics>,
    ) -> Arc<Readiness> {
        Arc::new(Readiness {
            evaluator,

            sharing,
            metrics,
            newest: Mutex::new(None),
            latest_finished: Mutex::new(None),
        })
    }

    pub fn evaluator(&self) -> &Arc<Evaluator> {
        &self.evaluator
    }

    /// Start the background loop when `readiness.interval` is set.
    pub fn start_background(self: &Arc<Self>) {
        let Some(interval) = self.sharing.interval else {
            return;
        };
        let this = self.clone();
        self.evaluator.guests.spawn(async move {
            loop {
                let evaluation = this.evaluator.start(None);
                *this.newest.lock().unwrap_or_else(|e| e.into_inner()) = Some(evaluation.clone());
                evaluation.results().await;
                *this
                    .latest_finished
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(evaluation);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// The evaluation a readiness request should read. `request` describes the
    /// HTTP request to the probes; it is only called when a new evaluation
    /// starts.
    pub fn evaluation(&self, request: impl FnOnce() -> Option<ProbeRequest>) -> Arc<Evaluation> {
        let latest = self
            .latest_finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if self.sharing.interval.is_some()
            && let Some(latest) = latest
        {
            self.metrics.record_shared();
            return latest;
        }

        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = newest.as_ref() {
            let reusable = match current.finished_at() {
                // In flight: join it.
                None => true,
                Some(at) => self.sharing.cache_ttl.is_some_and(|ttl| at.elapsed() < ttl),
            };
            if reusable || self.sharing.interval.is_some() {
                self.metrics.record_shared();
                return current.clone();
            }
        }
        let evaluation = self.evaluator.start(request());
        *newest = Some(evaluation.clone());
        evaluation
    }

    /// Whether any evaluation has passed every probe (for startup probes).
    pub fn has_passed(&self) -> bool {
        self.evaluator.passed.load(Ordering::Relaxed)
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
