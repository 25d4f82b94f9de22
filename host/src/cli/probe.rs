//! `probehost probe --live | --health | --ready [-q] [--local]`: one check for a
//! Kubernetes exec probe, with the original's flags, output and exit codes.
//! `--ready` asks a probehost serving the same configuration first, and
//! evaluates in this process only when none answers (or with `--local`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{Global, error, exit, load_config, report};
use crate::app::{self, StartupError};
use crate::metrics::Metrics;
use crate::readiness::Verdict;

/// Allows Kubernetes to probe the readiness and liveness state of the container
/// with an exec instead of an HTTP request.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Check the readiness state of the container
    #[arg(short = 'R', long)]
    pub ready: bool,
    /// Check the liveness state of the container
    #[arg(short = 'L', long)]
    pub live: bool,
    /// Check the health state of the container
    #[arg(short = 'H', long)]
    pub health: bool,
    /// Suppress output for the probe check
    #[arg(short, long)]
    pub quiet: bool,
    /// Evaluate in this process even if a probehost server of the same
    /// configuration is running (by default `--ready` asks it).
    #[arg(long)]
    pub local: bool,
}

/// What `probe` was asked to do, once the flags are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    Live,
    Ready,
}

impl ProbeArgs {
    /// The original's rules: exactly one kind of check.
    pub fn mode(&self) -> Result<ProbeMode, &'static str> {
        match (self.live || self.health, self.ready) {
            (false, false) => Err("specify one of --live, --health, or --ready"),
            (true, true) => Err("cannot specify both a live/health and readiness check"),
            (true, false) => Ok(ProbeMode::Live),
            (false, true) => Ok(ProbeMode::Ready),
        }
    }
}

/// The probe's own exit codes: a bad configuration is 2 as everywhere, any
/// other failure to evaluate is "not ready" (1), which is what Kubernetes
/// needs to hear.
pub(super) fn exec(global: &Global, args: &ProbeArgs) -> Result<u8, StartupError> {
    let mode = match args.mode() {
        Ok(mode) => mode,
        Err(message) => {
            error(message);
            return Ok(exit::FAILURE);
        }
    };
    let (code, answer) = match mode {
        // Liveness touches nothing: not the config, not a component, not a
        // dependency.
        ProbeMode::Live => (exit::OK, "Ok".to_owned()),
        ProbeMode::Ready => match ready_once(global, args.local) {
            Ok(Verdict::Ready) => (exit::OK, "Ok".to_owned()),
            Ok(Verdict::NotReady { message, .. }) => (exit::FAILURE, message),
            Err(StartupError::Config(e)) => {
                report(&e);
                return Ok(exit::USAGE);
            }
            Err(StartupError::Other(e)) => {
                error(&format!("{e:#}"));
                return Ok(exit::FAILURE);
            }
        },
    };
    if !args.quiet {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{answer}");
    }
    Ok(code)
}

/// The readiness answer: from the probehost serving this configuration if one
/// answers (cheap: no component is loaded here), else from one evaluation in this
/// process, on a small runtime of its own.
fn ready_once(global: &Global, local: bool) -> Result<Verdict, StartupError> {
    let config = load_config(global)?;
    if !local && let Some((status, body)) = app::ask_running_server(&config) {
        return Ok(if status == 200 {
            Verdict::Ready
        } else {
            Verdict::NotReady {
                probe: String::new(),
                status,
                message: body,
            }
        });
    }
    let runtime = super::current_thread_runtime("probe")?;
    let metrics = Arc::new(Metrics::new(config.probes.iter().map(|p| p.name.as_str())));
    let evaluator = app::build_evaluator(&config, runtime.handle(), metrics, false)?;
    let verdict = runtime.block_on(evaluator.evaluate(None));
    drop(evaluator);
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(live: bool, health: bool, ready: bool) -> ProbeArgs {
        ProbeArgs {
            ready,
            live,
            health,
            quiet: false,
            local: false,
        }
    }

    #[test]
    fn probe_needs_exactly_one_kind_of_check() {
        assert_eq!(
            args(false, false, false).mode(),
            Err("specify one of --live, --health, or --ready")
        );
        assert_eq!(
            args(true, false, true).mode(),
            Err("cannot specify both a live/health and readiness check")
        );
        assert_eq!(
            args(false, true, true).mode(),
            Err("cannot specify both a live/health and readiness check")
        );
        assert_eq!(args(true, true, false).mode(), Ok(ProbeMode::Live));
        assert_eq!(args(false, true, false).mode(), Ok(ProbeMode::Live));
        assert_eq!(args(false, false, true).mode(), Ok(ProbeMode::Ready));
    }
}
