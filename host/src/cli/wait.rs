//! `probehost wait [PROBE...] [-t 180] [-s 5] [-i 1]`: one init container for
//! every dependency. Waits until each named readiness probe (all of them by
//! default) has passed continuously for the stability window.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::{Global, error, exit, load_config, usage_error};
use crate::app::{self, StartupError};
use crate::config::Config;
use crate::jobs::wait4db::Wait4db;
use crate::metrics::Metrics;
use crate::readiness::Gate;

/// The first pause after a failure; it doubles with each failure in a row, up
/// to the interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// A probe still failing for the same reason is reported again this often.
const REPEAT_PROGRESS: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The readiness probes to wait for, by name [default: every configured probe]
    #[arg(value_name = "PROBE")]
    pub probes: Vec<String>,
    /// Give up (exit 1) after this many seconds
    #[arg(short, long, value_name = "SEC", default_value_t = 180.0)]
    pub timeout: f64,
    /// How long every probe must keep passing
    #[arg(short, long, value_name = "SEC", default_value_t = 5.0)]
    pub stable: f64,
    /// Longest pause between checks; after a failure the pause starts at 0.1 s
    /// and doubles up to this
    #[arg(short, long, value_name = "SEC", default_value_t = 1.0)]
    pub interval: f64,
}

/// One probe's progress.
struct Waiting {
    name: String,
    passing_since: Option<Instant>,
    /// The failure last reported, and when.
    reported: Option<(String, Instant)>,
    failure: Option<String>,
}

pub(super) fn exec(global: &Global, args: &WaitArgs) -> Result<u8, StartupError> {
    let settings = match Wait4db::new(args.timeout, args.stable, args.interval) {
        Ok(settings) => settings,
        Err(message) => usage_error(message),
    };
    let config = load_config(global)?;
    let selected = select(&config, &args.probes);
    let runtime = super::current_thread_runtime("wait")?;
    let metrics = Arc::new(Metrics::new(
        selected.probes.iter().map(|p| p.name.as_str()),
    ));
    let evaluator = app::build_evaluator(&selected, runtime.handle(), metrics, true)?;
    let mut waiting: Vec<Waiting> = selected
        .probes
        .iter()
        .map(|p| Waiting {
            name: p.name.clone(),
            passing_since: None,
            reported: None,
            failure: None,
        })
        .collect();
    let stderr = &mut std::io::stderr();
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let mut backoff = FIRST_BACKOFF;
    let done = runtime.block_on(async {
        loop {
            let results = evaluator.start(None).results().await;
            let now = Instant::now();
            for (probe, result) in waiting.iter_mut().zip(&results) {
                match &result.failure {
                    None => {
                        if probe.passing_since.is_none() {
                            let _ = writeln!(stderr, "{}: ok", probe.name);
                        }
                        probe.passing_since.get_or_insert(now);
                        probe.failure = None;
                        probe.reported = None;
                    }
                    Some((_, message)) => {
                        probe.passing_since = None;
                        probe.failure = Some(message.clone());
                        let repeat = probe.reported.as_ref().is_none_or(|(last, at)| {
                            last != message || at.elapsed() >= REPEAT_PROGRESS
                        });
                        if repeat {
                            let _ = writeln!(
                                stderr,
                                "waiting for {}: {message} (elapsed: {:.1}s)",
                                probe.name,
                                started.elapsed().as_secs_f64()
                            );
                            probe.reported = Some((message.clone(), now));
                        }
                    }
                }
            }
            let stable = |p: &Waiting| {
                p.passing_since
                    .is_some_and(|since| now.duration_since(since) >= settings.stable)
            };
            if waiting.iter().all(stable) {
                return true;
            }
            let pause = if waiting.iter().any(|p| p.failure.is_some()) {
                let pause = backoff;
                backoff = (backoff * 2).min(settings.interval);
                pause
            } else {
                backoff = FIRST_BACKOFF;
                settings.interval
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(pause.min(left)).await;
        }
    });
    if done {
        return Ok(exit::OK);
    }
    let mut message = format!(
        "probehost wait: timed out after {:.1}s; still waiting for:",
        started.elapsed().as_secs_f64()
    );
    for probe in &waiting {
        let why = match (&probe.failure, probe.passing_since) {
            (Some(failure), _) => failure.clone(),
            (None, Some(since)) if since.elapsed() >= settings.stable => continue,
            (None, Some(since)) => format!(
                "passing for {:.1}s of the {:.1}s stability window",
                since.elapsed().as_secs_f64(),
                settings.stable.as_secs_f64()
            ),
            (None, None) => continue,
        };
        message.push_str(&format!("\n  {}: {why}", probe.name));
    }
    error(&message);
    Ok(exit::FAILURE)
}

/// The config with only the probes named (all when none is), each gating:
/// `wait` waits for what it is told to, whatever the probe's gate.
fn select(config: &Config, names: &[String]) -> Config {
    let configured: Vec<&str> = config.probes.iter().map(|p| p.name.as_str()).collect();
    let unknown: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !configured.contains(n))
        .collect();
    if !unknown.is_empty() {
        usage_error(&format!(
            "no probe named {} is configured (configured: {})",
            unknown
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            configured.join(", ")
        ));
    }
    let probes = config
        .probes
        .iter()
        .filter(|p| names.is_empty() || names.contains(&p.name))
        .cloned()
        .map(|mut p| {
            p.gate = Gate::Always;
            p
        })
        .collect();
    Config {
        probes,
        ..config.clone()
    }
}
