//! The command line: what was typed (clap structs), what it means (validated
//! values), and what the process exits with.
//!
//! Exit codes are decided here and only here:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `probe`, live/healthy/ready |
//! | 1 | not ready, a job failed, a probe-mode usage error (as in the original), or a runtime failure such as a port already in use |
//! | 2 | bad command line (with usage) or bad configuration |

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use crate::app::{self, StartupError};
use crate::config::{self, Config, ConfigError, ProcessEnv};
use crate::plugin::PluginRuntime;
use crate::readiness::Verdict;

/// Exit codes.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
}

/// Kubernetes probes and deployment jobs for Django and other apps, with
/// readiness probes that run as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "probehost", version, max_term_width = 100)]
pub struct Cli {
    /// Config file (TOML). Without one, the defaults of django-kubernetes apply.
    #[arg(
        short,
        long,
        global = true,
        env = "PROBEHOST_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PROBEHOST_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `probehost=debug` (tracing-subscriber syntax).
    #[arg(long, global = true, env = "PROBEHOST_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the liveness and readiness probes over HTTP.
    Serve(ServeArgs),
    /// Check liveness or readiness once, for Kubernetes exec probes.
    Probe(ProbeArgs),
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `server.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

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
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (loading every probe component) and print it
    /// resolved, with secrets masked.
    Check,
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

/// Entry point of the `probehost` binary.
pub fn main() -> ExitCode {
    // clap prints usage and exits 2 on a bad command line.
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        // An exec probe's output is its answer; keep the probes' own log lines
        // out of it unless asked for.
        Command::Probe(_) => "warn,probehost::guest=off",
        Command::Config(_) => "warn",
    };
    init_logging(cli.log_format, cli.log.as_deref().unwrap_or(default_filter));

    let result = match &cli.command {
        Command::Probe(args) => return probe(&cli, args),
        Command::Serve(args) => serve(&cli, args),
        Command::Config(ConfigCommand::Check) => config_check(&cli),
    };
    match result {
        Ok(code) => code,
        Err(StartupError::Config(e)) => {
            report(&e);
            exit::USAGE
        }
        Err(StartupError::Other(e)) => {
            error(&format!("{e:#}"));
            exit::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let config = config::load(cli.config.as_deref(), &ProcessEnv)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

fn serve(cli: &Cli, args: &ServeArgs) -> Result<u8, StartupError> {
    let mut config = load_config(cli)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    config.check_serve()?;
    let guests = app::guest_runtime().context("starting the probe runtime")?;
    let evaluator = app::build_evaluator(&config, guests.handle())?;
    let http = tokio::runtime::Builder::new_multi_thread()
        .thread_name("probehost-http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let served: anyhow::Result<()> = http.block_on(async {
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let address = listener.local_addr()?;
        let probes: Vec<&str> = evaluator.probe_names().collect();
        tracing::info!(%address, ?probes, "listening");
        app::serve(&config, listener, evaluator, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    });
    drop(http);
    guests.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(exit::OK)
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}

fn probe(cli: &Cli, args: &ProbeArgs) -> u8 {
    let mode = match args.mode() {
        Ok(mode) => mode,
        Err(message) => {
            error(message);
            return exit::FAILURE;
        }
    };
    let (code, answer) = match mode {
        // Liveness touches nothing: not the config, not a component, not a
        // dependency.
        ProbeMode::Live => (exit::OK, "Ok".to_owned()),
        ProbeMode::Ready => match ready_once(cli) {
            Ok(Verdict::Ready) => (exit::OK, "Ok".to_owned()),
            Ok(Verdict::NotReady { message, .. }) => (exit::FAILURE, message),
            Err(StartupError::Config(e)) => {
                report(&e);
                return exit::USAGE;
            }
            Err(StartupError::Other(e)) => {
                error(&format!("{e:#}"));
                return exit::FAILURE;
            }
        },
    };
    if !args.quiet {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{answer}");
    }
    code
}

/// One readiness evaluation in this process, on a small runtime of its own.
fn ready_once(cli: &Cli) -> Result<Verdict, StartupError> {
    let config = load_config(cli)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the probe runtime")?;
    let evaluator = app::build_evaluator(&config, runtime.handle())?;
    let verdict = runtime.block_on(evaluator.evaluate(None));
    drop(evaluator);
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(verdict)
}

fn config_check(cli: &Cli) -> Result<u8, StartupError> {
    let config = load_config(cli)?;
    let runtime = PluginRuntime::new(config.runtime.cache_dir.as_deref())?;
    let mut problems = match config.check_serve() {
        Ok(()) => Vec::new(),
        Err(e) => e.problems,
    };
    if let Err(e) = app::load_components(&config, &runtime) {
        problems.extend(e.problems);
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems }.into());
    }
    let mut stdout = std::io::stdout().lock();
    let source = match &config.source {
        Some(path) => format!("{}", path.display()),
        None => "built-in defaults (no config file)".to_owned(),
    };
    let _ = writeln!(
        stdout,
        "# configuration from {source}: valid\n{}",
        config.render()
    );
    Ok(exit::OK)
}

fn report(e: &ConfigError) {
    error(&e.to_string());
}

/// Write an error line to stderr. Messages the original prints are written as
/// they are, without a prefix.
fn error(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{message}");
}

fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        error(&format!("ignoring invalid log filter {filter:?}: {e}"));
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
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

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
