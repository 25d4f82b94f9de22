//! The command line: the top-level [`Cli`] with its global flags, the table of
//! commands, dispatch, and the exit codes. Each command lives in a file of its
//! own (`cli/<command>.rs`) holding what was typed (its clap struct), what it
//! means (validation into the values the body uses), and what it does (its
//! `exec`, which calls into [`crate::app`] and [`crate::jobs`]).
//!
//! Exit codes are decided here and only here:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `probe`, live/healthy/ready |
//! | 1 | not ready, a job failed, a probe-mode or job validation error (as in the original), a runtime failure such as a port already in use, `plugin check` of something that is not a probe, `plugin new` into an existing directory, `precompile` without a usable cache |
//! | 2 | bad command line (with usage), bad configuration, or an unknown database alias |
//! | other | `lockedmigrate` and `run`: the command's own exit code (128 + N if a signal N ended it; 127 if it cannot be started) |

mod config;
mod ensureadmin;
mod lockedmigrate;
mod migrations;
mod plugin;
mod precompile;
mod probe;
mod run;
mod serve;
mod wait;
mod wait4db;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::StartupError;
use crate::config::{Config, ConfigError, ProcessEnv};
use crate::logging::{self, LogFormat};

pub use config::ConfigCommand;
pub use ensureadmin::EnsureAdminArgs;
pub use lockedmigrate::LockedMigrateArgs;
pub use migrations::{MigrationsCommand, PlanArgs};
pub use plugin::PluginCommand;
pub use probe::{ProbeArgs, ProbeMode};
pub use run::RunArgs;
pub use serve::ServeArgs;
pub use wait::WaitArgs;
pub use wait4db::Wait4dbArgs;

/// Exit codes.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
}

/// Kubernetes probes and deployment jobs for Django and other apps, with
/// readiness probes that run as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(
    name = "probehost",
    version,
    long_version = LONG_VERSION,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// `--version`: probehost's own version, the WIT package its probes are built
/// against, and the wasmtime that runs them.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nwit: ",
    env!("PROBEHOST_WIT_PACKAGE"),
    "\nwasmtime: ",
    env!("PROBEHOST_WASMTIME_VERSION"),
);

/// The flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
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
}

/// The commands: this enum is their one table.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the liveness and readiness probes over HTTP (with `--upstream`, in
    /// front of the application).
    Serve(ServeArgs),
    /// Run the application as a child and serve its probes while it runs;
    /// liveness follows the application, and probehost exits with its code.
    Run(RunArgs),
    /// Check liveness or readiness once, for Kubernetes exec probes.
    Probe(ProbeArgs),
    /// Work with the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with probe components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Compile every configured probe's component into the compiled-component
    /// cache (for image builds and init containers), so the first readiness
    /// check pays no compile.
    Precompile,
    /// Wait until readiness probes (every one, or those named) have passed for a
    /// stability window: one init container for every dependency.
    Wait(WaitArgs),
    /// Waits for the database to be ready before exiting.
    Wait4db(Wait4dbArgs),
    /// Ensures that a Django superuser exists with credentials from environment
    /// variables.
    Ensureadmin(EnsureAdminArgs),
    /// Run Django migrations (or any command after `--`) holding a database lock;
    /// safe across multiple processes.
    Lockedmigrate(LockedMigrateArgs),
    /// Work with the migrations plan that `builtin:migrations` and `wait4db
    /// --migrated` check the database against.
    #[command(subcommand)]
    Migrations(MigrationsCommand),
    /// Internal: the process that stops `run`'s and `lockedmigrate`'s command
    /// if probehost dies (see the `warden` module).
    #[command(hide = true)]
    Warden,
}

impl Command {
    /// The log filter when neither `--log` nor `PROBEHOST_LOG` sets one.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) | Command::Run(_) | Command::Precompile | Command::Warden => "info",
            // An exec probe's output is its answer; keep the probes' own log
            // lines out of it unless asked for.
            Command::Probe(_) => "warn,probehost::guest=off",
            // Its progress lines name every failure already.
            Command::Wait(_) => "warn,probehost::guest=off,probehost::readiness=error",
            Command::Config(_)
            | Command::Plugin(_)
            | Command::Wait4db(_)
            | Command::Ensureadmin(_)
            | Command::Lockedmigrate(_)
            | Command::Migrations(_) => "warn",
        }
    }

    fn exec(&self, global: &Global) -> Result<u8, StartupError> {
        match self {
            Command::Serve(args) => serve::exec(global, args),
            Command::Run(args) => run::exec(global, args),
            Command::Probe(args) => probe::exec(global, args),
            Command::Config(command) => config::exec(global, command),
            Command::Plugin(command) => plugin::exec(command),
            Command::Precompile => precompile::exec(global),
            Command::Wait(args) => wait::exec(global, args),
            Command::Wait4db(args) => wait4db::exec(global, args),
            Command::Ensureadmin(args) => ensureadmin::exec(global, args),
            Command::Lockedmigrate(args) => lockedmigrate::exec(global, args),
            Command::Migrations(command) => migrations::exec(global, command),
            Command::Warden => Ok(crate::warden::serve_orders()),
        }
    }
}

/// Entry point of the `probehost` binary.
pub fn main() -> ExitCode {
    // clap prints usage and exits 2 on a bad command line.
    let cli = Cli::parse();
    let code = run(cli);
    crate::logging::flush();
    ExitCode::from(code)
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let filter = cli.command.default_log_filter();
    logging::init(
        cli.global.log_format,
        cli.global.log.as_deref().unwrap_or(filter),
    );
    match cli.command.exec(&cli.global) {
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

/// Exit with usage (2) for a combination of flags clap cannot express.
fn usage_error(message: &str) -> ! {
    use clap::CommandFactory;
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit();
}

/// The configuration the global flags name (or the defaults), its warnings
/// logged.
fn load_config(global: &Global) -> Result<Config, ConfigError> {
    let config = crate::config::load(global.config.as_deref(), &ProcessEnv)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// A runtime for a one-shot command (a job, an exec probe): single-threaded,
/// on the main thread (which `lockedmigrate`'s parent-death signal relies on).
fn current_thread_runtime(what: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("starting the {what} runtime"))
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

/// Write `text` to stdout as it is.
fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
