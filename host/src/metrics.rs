//! Counters for Prometheus, and their text exposition format.
//!
//! Everything is a fixed set of atomics decided at start-up (one slot per probe,
//! one per route and status class), so recording is lock-free and the label
//! sets cannot grow with traffic.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;

/// Upper bounds (seconds) of the probe duration histogram.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How a check ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Ready,
    NotReady,
    Timeout,
    Crash,
    Memory,
}

impl CheckResult {
    const ALL: [CheckResult; 5] = [
        CheckResult::Ready,
        CheckResult::NotReady,
        CheckResult::Timeout,
        CheckResult::Crash,
        CheckResult::Memory,
    ];

    fn label(self) -> &'static str {
        match self {
            CheckResult::Ready => "ready",
            CheckResult::NotReady => "not_ready",
            CheckResult::Timeout => "timeout",
            CheckResult::Crash => "crash",
            CheckResult::Memory => "memory",
        }
    }
}

/// What an HTTP request was, as the `route` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    Health,
    Ready,
    Startup,
    Metrics,
    Upstream,
    Other,
}

impl RouteLabel {
    const ALL: [RouteLabel; 6] = [
        RouteLabel::Health,
        RouteLabel::Ready,
        RouteLabel::Startup,
        RouteLabel::Metrics,
        RouteLabel::Upstream,
        RouteLabel::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            RouteLabel::Health => "health",
            RouteLabel::Ready => "ready",
            RouteLabel::Startup => "startup",
            RouteLabel::Metrics => "metrics",
            RouteLabel::Upstream => "upstream",
            RouteLabel::Other => "other",
        }
    }
}

struct ProbeMetrics {
    name: String,
    /// 1 ready, 0 not ready, -1 not checked yet.
    up: AtomicI64,
    /// 1 when the last check failed but the probe's gate let readiness pass.
    degraded: AtomicI64,
    results: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The process's metrics.
pub struct Metrics {
    probes: Vec<ProbeMetrics>,
    evaluations: AtomicU64,
    shared: AtomicU64,
    ready: AtomicI64,
    /// [route][status class 1xx..5xx]
    requests: [[AtomicU64; 5]; 6],
    /// The runtimes whose live tasks `probehost_tasks` counts, by label.
    runtimes: Mutex<Vec<(&'static str, Handle)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("probes", &self.probes.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for these probes, in configured order.
    pub fn new<'a>(probes: impl IntoIterator<Item = &'a str>) -> Metrics {
        Metrics {
            probes: probes
                .into_iter()
                .map(|name| ProbeMetrics {
                    name: name.to_owned(),
                    up: AtomicI64::new(-1),
                    degraded: AtomicI64::new(0),
                    results: Default::default(),
                    buckets: Default::default(),
                    count: AtomicU64::new(0),
                    sum_micros: AtomicU64::new(0),
                })
                .collect(),
            evaluations: AtomicU64::new(0),
            shared: AtomicU64::new(0),
            ready: AtomicI64::new(-1),
            requests: Default::default(),
            runtimes: Mutex::new(Vec::new()),
        }
    }

    /// Count the tasks alive on `handle`'s runtime under `runtime="label"`
    /// (several runtimes may share a label; they are summed).
    pub fn watch_runtime(&self, label: &'static str, handle: Handle) {
        self.runtimes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((label, handle));
    }

    /// One check of probe number `index`; `degraded` when it failed without
    /// gating readiness.
    pub fn record_check(
        &self,
        index: usize,
        result: CheckResult,
        degraded: bool,
        duration: Duration,
    ) {
        let Some(p) = self.probes.get(index) else {
            return;
        };
        p.up.store(i64::from(result == CheckResult::Ready), Ordering::Relaxed);
        p.degraded.store(i64::from(degraded), Ordering::Relaxed);
        let slot = CheckResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        p.results[slot].fetch_add(1, Ordering::Relaxed);
        let secs = duration.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|b| secs <= *b) {
            p.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        p.count.fetch_add(1, Ordering::Relaxed);
        p.sum_micros.fetch_add(
            u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// An evaluation finished with this overall answer.
    pub fn record_evaluation(&self, ready: bool) {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        self.ready.store(i64::from(ready), Ordering::Relaxed);
    }

    /// A readiness request was answered from an evaluation started for another.
    pub fn record_shared(&self) {
        self.shared.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_request(&self, route: RouteLabel, status: u16) {
        let r = RouteLabel::ALL
            .iter()
            .position(|l| *l == route)
            .unwrap_or(0);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[r][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Readiness requests answered from a shared evaluation so far.
    pub fn shared(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
    }

    /// Evaluations run so far.
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        out.push_str(
            "# HELP probehost_ready Whether the last readiness evaluation passed (-1: none yet).\n",
        );
        out.push_str("# TYPE probehost_ready gauge\n");
        let _ = writeln!(
            out,
            "probehost_ready {}",
            self.ready.load(Ordering::Relaxed)
        );

        out.push_str("# HELP probehost_probe_up Whether the probe's last check passed (-1: not checked yet).\n");
        out.push_str("# TYPE probehost_probe_up gauge\n");
        for p in &self.probes {
            let _ = writeln!(
                out,
                "probehost_probe_up{{probe=\"{}\"}} {}",
                p.name,
                p.up.load(Ordering::Relaxed)
            );
        }

        out.push_str("# HELP probehost_probe_degraded Whether the probe's last check failed without gating readiness (its gate is `startup`, after the first pass, or `never`).\n");
        out.push_str("# TYPE probehost_probe_degraded gauge\n");
        for p in &self.probes {
            let _ = writeln!(
                out,
                "probehost_probe_degraded{{probe=\"{}\"}} {}",
                p.name,
                p.degraded.load(Ordering::Relaxed)
            );
        }

        out.push_str(
            "# HELP probehost_probe_checks_total Checks of each probe by how they ended.\n",
        );
        out.push_str("# TYPE probehost_probe_checks_total counter\n");
        for p in &self.probes {
            for (i, result) in CheckResult::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "probehost_probe_checks_total{{probe=\"{}\",result=\"{}\"}} {}",
                    p.name,
                    result.label(),
                    load(&p.results[i])
                );
            }
        }

        out.push_str("# HELP probehost_probe_duration_seconds How long each check took.\n");
        out.push_str("# TYPE probehost_probe_duration_seconds histogram\n");
        for p in &self.probes {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += load(&p.buckets[i]);
                let _ = writeln!(
                    out,
                    "probehost_probe_duration_seconds_bucket{{probe=\"{}\",le=\"{bound}\"}} {cumulative}",
                    p.name
                );
            }
            let count = load(&p.count);
            let _ = writeln!(
                out,
                "probehost_probe_duration_seconds_bucket{{probe=\"{}\",le=\"+Inf\"}} {count}",
                p.name
            );
            let _ = writeln!(
                out,
                "probehost_probe_duration_seconds_sum{{probe=\"{}\"}} {}",
                p.name,
                load(&p.sum_micros) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "probehost_probe_duration_seconds_count{{probe=\"{}\"}} {count}",
                p.name
            );
        }

        out.push_str("# HELP probehost_evaluations_total Readiness evaluations run.\n");
        out.push_str("# TYPE probehost_evaluations_total counter\n");
        let _ = writeln!(out, "probehost_evaluations_total {}", self.evaluations());
        out.push_str(
            "# HELP probehost_evaluations_shared_total Readiness requests answered from an evaluation run for another request.\n",
        );
        out.push_str("# TYPE probehost_evaluations_shared_total counter\n");
        let _ = writeln!(out, "probehost_evaluations_shared_total {}", self.shared());

        out.push_str(
            "# HELP probehost_log_lines_dropped_total Log lines lost: stderr was closed, full or too slow.\n",
        );
        out.push_str("# TYPE probehost_log_lines_dropped_total counter\n");
        let _ = writeln!(
            out,
            "probehost_log_lines_dropped_total {}",
            crate::logging::dropped()
        );

        out.push_str(
            "# HELP probehost_tasks Tasks alive: `http` serves connections, `probes` runs probe checks.\n",
        );
        out.push_str("# TYPE probehost_tasks gauge\n");
        let mut tasks: Vec<(&str, usize)> = Vec::new();
        for (label, handle) in self
            .runtimes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let alive = handle.metrics().num_alive_tasks();
            match tasks.iter_mut().find(|(l, _)| l == label) {
                Some((_, n)) => *n += alive,
                None => tasks.push((label, alive)),
            }
        }
        for (label, alive) in tasks {
            let _ = writeln!(out, "probehost_tasks{{runtime=\"{label}\"}} {alive}");
        }

        out.push_str(
            "# HELP probehost_http_requests_total HTTP requests by route and status class.\n",
        );
        out.push_str("# TYPE probehost_http_requests_total counter\n");
        for (r, route) in RouteLabel::ALL.iter().enumerate() {
            for class in 0..5 {
                let n = load(&self.requests[r][class]);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "probehost_http_requests_total{{route=\"{}\",status=\"{}xx\"}} {n}",
                        route.label(),
                        class + 1
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let m = Metrics::new(["database", "memcached"]);
        m.record_check(0, CheckResult::Ready, false, Duration::from_millis(3));
        m.record_check(0, CheckResult::NotReady, false, Duration::from_millis(300));
        m.record_check(1, CheckResult::Timeout, true, Duration::from_secs(1));
        m.record_evaluation(false);
        m.record_shared();
        m.record_request(RouteLabel::Ready, 503);
        m.record_request(RouteLabel::Health, 200);
        let text = m.render();
        for line in [
            "probehost_ready 0",
            "probehost_probe_up{probe=\"database\"} 0",
            "probehost_probe_up{probe=\"memcached\"} 0",
            "probehost_probe_degraded{probe=\"database\"} 0",
            "probehost_probe_degraded{probe=\"memcached\"} 1",
            "probehost_probe_checks_total{probe=\"database\",result=\"ready\"} 1",
            "probehost_probe_checks_total{probe=\"database\",result=\"not_ready\"} 1",
            "probehost_probe_checks_total{probe=\"memcached\",result=\"timeout\"} 1",
            "probehost_probe_duration_seconds_bucket{probe=\"database\",le=\"0.005\"} 1",
            "probehost_probe_duration_seconds_bucket{probe=\"database\",le=\"0.5\"} 2",
            "probehost_probe_duration_seconds_bucket{probe=\"database\",le=\"+Inf\"} 2",
            "probehost_probe_duration_seconds_count{probe=\"memcached\"} 1",
            "probehost_evaluations_total 1",
            "probehost_evaluations_shared_total 1",
            "probehost_http_requests_total{route=\"ready\",status=\"5xx\"} 1",
            "probehost_http_requests_total{route=\"health\",status=\"2xx\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
