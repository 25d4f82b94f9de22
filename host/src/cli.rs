//! The command line: what was typed (clap structs), what it means (validated
//! values), and what the process exits with.
//!
//! Exit codes are decided here and only here:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `probe`, live/healthy/ready |
//! | 1 | not ready, a job failed, a probe-mode or job validation error (as in the original), a runtime failure such as a port already in use, `plugin check` of something that is not a probe, `plugin new` into an existing directory, `precompile` without a usable cache |
//! | 2 | bad command line (with usage), bad configuration, or an unknown database alias |
//! | other | `lockedmigrate`: the command's own exit code (128 + N if a signal N ended it; 127 if it cannot be started) |

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::app::{self, StartupError};
use crate::child;
use crate::config::{self, Config, ConfigError, ProcessEnv};
use crate::jobs::lock::MigrationLock;
use crate::jobs::lockedmigrate::EXIT_CANNOT_RUN;
use crate::jobs::lockedmigrate::{self, Ended};
use crate::jobs::wait4db::Wait4db;
use crate::jobs::{self, ensureadmin, password};
use crate::metrics::Metrics;
use crate::plugin::{Builtin, ComponentSource, Inspection, Origin, PluginRuntime, WORLD};
use crate::readiness::Verdict;
use crate::scaffold;
use crate::server::{AppState, Lifecycle, Listeners, ProbeSocket, Stop};

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
    /// Waits for the database to be ready before exiting.
    Wait4db(Wait4dbArgs),
    /// Ensures that a Django superuser exists with credentials from environment
    /// variables.
    Ensureadmin(EnsureAdminArgs),
    /// Run Django migrations (or any command after `--`) holding a database lock;
    /// safe across multiple processes.
    Lockedmigrate(LockedMigrateArgs),
}

#[derive(Debug, Args)]
pub struct Wait4dbArgs {
    /// number of seconds to wait for database until timeout
    #[arg(
        short,
        long,
        value_name = "SEC",
        default_value_t = 180.0,
        allow_negative_numbers = true
    )]
    pub timeout: f64,
    /// stability timeout to wait for continuous database connection
    #[arg(
        short,
        long,
        value_name = "SEC",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub stable: f64,
    /// number of seconds to wait between database checks
    #[arg(
        short,
        long,
        value_name = "SEC",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub interval: f64,
    /// which database to wait for
    #[arg(short, long, value_name = "DATABASE", default_value = config::DEFAULT_DATABASE)]
    pub database: String,
}

#[derive(Debug, Args)]
pub struct EnsureAdminArgs {
    /// The username for the Django admin, $DJANGO_ADMIN_USERNAME
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password for the Django admin, $DJANGO_ADMIN_PASSWORD (prefer the
    /// variable: a flag is visible in process listings)
    #[arg(short, long)]
    pub password: Option<String>,
    /// The email for the Django admin, $DJANGO_ADMIN_EMAIL
    #[arg(short, long)]
    pub email: Option<String>,
    /// Specifies the database to use.
    #[arg(short, long, value_name = "DATABASE", default_value = config::DEFAULT_DATABASE)]
    pub database: String,
}

/// Migrate's flags are passed through to `manage.py migrate`; a command after
/// `--` runs instead of it, as it is.
#[derive(Debug, Args)]
pub struct LockedMigrateArgs {
    /// The lock ID to use for migrations [default: jobs.lockedmigrate.lock_id, 1000]
    #[arg(
        short = 'L',
        long = "lock-id",
        value_name = "LOCK_ID",
        allow_negative_numbers = true
    )]
    pub lock_id: Option<i64>,
    /// Give up (exit 1) if the lock is not acquired within this many seconds
    #[arg(long, value_name = "SEC", value_parser = positive_seconds)]
    pub lock_timeout: Option<Duration>,
    /// Tells Django to NOT prompt the user for input of any kind.
    #[arg(long = "noinput", visible_alias = "no-input")]
    pub noinput: bool,
    /// Nominates a database to synchronize (and to lock). Defaults to "default".
    #[arg(long, value_name = "DATABASE")]
    pub database: Option<String>,
    /// Mark migrations as run without actually running them.
    #[arg(long)]
    pub fake: bool,
    /// Detect if tables already exist and fake-apply initial migrations if so.
    #[arg(long)]
    pub fake_initial: bool,
    /// Shows a list of the migration actions that will be performed.
    #[arg(long)]
    pub plan: bool,
    /// Creates tables for apps without migrations.
    #[arg(long)]
    pub run_syncdb: bool,
    /// Exits with a non-zero status if unapplied migrations exist and does not
    /// actually apply migrations.
    #[arg(long)]
    pub check: bool,
    /// Delete nonexistent migrations from the django_migrations table.
    #[arg(long)]
    pub prune: bool,
    /// Verbosity level; 0=minimal output, 1=normal output, 2=verbose output,
    /// 3=very verbose output
    #[arg(short, long, value_name = "{0,1,2,3}", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub verbosity: Option<u8>,
    /// The Python path to a settings module, e.g. "myproject.settings.main".
    #[arg(long, value_name = "SETTINGS")]
    pub settings: Option<String>,
    /// A directory to add to the Python path.
    #[arg(long, value_name = "PYTHONPATH")]
    pub pythonpath: Option<String>,
    /// Display a full stack trace on CommandError exceptions.
    #[arg(long)]
    pub traceback: bool,
    /// Don't colorize the command output.
    #[arg(long)]
    pub no_color: bool,
    /// Force colorization of the command output.
    #[arg(long)]
    pub force_color: bool,
    /// Skip system checks.
    #[arg(long)]
    pub skip_checks: bool,
    /// App label of an application to synchronize the state.
    pub app_label: Option<String>,
    /// Database state will be brought to the state after that migration. Use the
    /// name "zero" to unapply all migrations.
    pub migration_name: Option<String>,
    /// A command to run instead of `manage.py migrate` (alembic, rails, flyway, a
    /// script), after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl LockedMigrateArgs {
    /// Migrate's arguments as given, in the order `manage.py migrate` documents.
    fn migrate_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |on: bool, name: &str| {
            if on {
                args.push(name.to_owned());
            }
        };
        flag(self.noinput, "--noinput");
        flag(self.fake, "--fake");
        flag(self.fake_initial, "--fake-initial");
        flag(self.plan, "--plan");
        flag(self.run_syncdb, "--run-syncdb");
        flag(self.check, "--check");
        flag(self.prune, "--prune");
        flag(self.traceback, "--traceback");
        flag(self.no_color, "--no-color");
        flag(self.force_color, "--force-color");
        flag(self.skip_checks, "--skip-checks");
        let valued = [
            ("--database", self.database.clone()),
            ("--verbosity", self.verbosity.map(|v| v.to_string())),
            ("--settings", self.settings.clone()),
            ("--pythonpath", self.pythonpath.clone()),
        ];
        for (name, value) in valued {
            if let Some(value) = value {
                args.push(name.to_owned());
                args.push(value);
            }
        }
        args.extend(self.app_label.iter().cloned());
        args.extend(self.migration_name.iter().cloned());
        args
    }

    /// The command to run: after `--` as given, else `default` with migrate's
    /// arguments appended. Both at once is a usage error.
    pub fn command(&self, default: &[String]) -> Result<Vec<String>, &'static str> {
        let migrate = self.migrate_args();
        if self.command.is_empty() {
            return Ok(default.iter().cloned().chain(migrate).collect());
        }
        // `--database` also chooses what to lock, so it may go with a command.
        let only_database = migrate.len() == 2 && self.database.is_some();
        if migrate.is_empty() || only_database {
            Ok(self.command.clone())
        } else {
            Err("migrate's options and arguments cannot be combined with a command after `--`")
        }
    }
}

fn positive_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `server.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Proxy mode: forward every request that is not a probe to this
    /// `http://host:port` (overrides `server.upstream`).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

/// `probehost run [serve options] -- CMD ARGS...`
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The application to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
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
    /// Evaluate in this process even if a probehost server of the same
    /// configuration is running (by default `--ready` asks it).
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Say whether a file is a probe component, what it imports, and which
    /// grants a config must give it.
    Check {
        /// The component (`.wasm`), or `builtin:NAME` for a bundled probe.
        file: PathBuf,
    },
    /// Create a Rust probe crate that builds for wasm32-wasip2 as it is, with
    /// the guest SDK and the WIT files copied in.
    New {
        /// Crate name (letters, digits, `-`, `_`).
        name: String,
        /// Where to create it (default: ./NAME); must not exist.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
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
        Command::Serve(_) | Command::Run(_) => "info",
        // An exec probe's output is its answer; keep the probes' own log lines
        // out of it unless asked for.
        Command::Probe(_) => "warn,probehost::guest=off",
        Command::Precompile => "info",
        Command::Config(_)
        | Command::Plugin(_)
        | Command::Wait4db(_)
        | Command::Ensureadmin(_)
        | Command::Lockedmigrate(_) => "warn",
    };
    init_logging(cli.log_format, cli.log.as_deref().unwrap_or(default_filter));

    let result = match &cli.command {
        Command::Probe(args) => return probe(&cli, args),
        Command::Serve(args) => serve(&cli, args),
        Command::Run(args) => run_app(&cli, args),
        Command::Config(ConfigCommand::Check) => config_check(&cli),
        Command::Plugin(PluginCommand::Check { file }) => plugin_check(file),
        Command::Plugin(PluginCommand::New { name, dir }) => plugin_new(name, dir.as_deref()),
        Command::Precompile => precompile(&cli),
        Command::Wait4db(args) => wait4db(&cli, args),
        Command::Ensureadmin(args) => ensureadmin(&cli, args),
        Command::Lockedmigrate(args) => lockedmigrate(&cli, args),
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

/// The configuration for serving, with the command line's overrides.
fn serve_config(cli: &Cli, args: &ServeArgs) -> Result<Config, StartupError> {
    let mut config = load_config(cli)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(upstream) = &args.upstream {
        config.server.upstream = Some(upstream.clone());
    }
    config.check_serve()?;
    Ok(config)
}

/// The runtime that binds, watches signals (and in `run` mode the
/// application) and coordinates shutdown; connections are served on threads
/// of their own (`server::serve`).
fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")
}

async fn bind(config: &Config, state: &AppState) -> anyhow::Result<Listeners> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let address = listener.local_addr()?;
    let unix = match &config.server.socket {
        Some(path) => {
            let socket = ProbeSocket::bind(path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            tracing::info!(socket = %socket.path().display(), "probe socket listening");
            Some(socket)
        }
        None => None,
    };
    let probes: Vec<&str> = state.readiness.evaluator().probe_names().collect();
    let mode = if config.server.upstream.is_some() {
        "proxy"
    } else {
        "standalone"
    };
    tracing::info!(%address, mode, ?probes, "listening");
    Ok(Listeners {
        tcp: listener,
        unix,
    })
}

fn serve(cli: &Cli, args: &ServeArgs) -> Result<u8, StartupError> {
    let config = serve_config(cli, args)?;
    let guests = app::guest_runtime().context("starting the probe runtime")?;
    let state = app::build_state(&config, guests.handle(), Lifecycle::default())?;
    let control = control_runtime()?;
    let served: anyhow::Result<()> = control.block_on(async {
        let (stops, stopping) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(shutdown_signals(stops, None));
        let listener = bind(&config, &state).await?;
        app::serve(&config, listener, state, stopping).await?;
        tracing::info!("stopped");
        Ok(())
    });
    drop(control);
    guests.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(exit::OK)
}

/// `run`: serve while the application runs, and exit with its code.
fn run_app(cli: &Cli, args: &RunArgs) -> Result<u8, StartupError> {
    let config = serve_config(cli, &args.serve)?;
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
    let control = control_runtime()?;
    let code: anyhow::Result<u8> = control.block_on(async {
        let (stops, stopping) = tokio::sync::mpsc::unbounded_channel();
        let (first_signal, received) = tokio::sync::oneshot::channel();
        tokio::spawn(shutdown_signals(stops.clone(), Some(first_signal)));
        let forward = forward_signals();
        let listener = bind(&config, &state).await?;
        // Spawned here, on the main thread, which the parent-death signal follows.
        let mut app = match child::command(&args.command).spawn() {
            Ok(app) => app,
            Err(e) => {
                error(&format!("cannot run {}: {e}", args.command[0]));
                return Ok(EXIT_CANNOT_RUN);
            }
        };
        let pid = app.id();
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
        tracing::info!(code, "stopped");
        Ok(code.unwrap_or(exit::FAILURE))
    });
    drop(control);
    guests.shutdown_timeout(Duration::from_secs(1));
    Ok(code?)
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal) asks `stops` for a drain, and
/// a second one to stop at once; `first` learns which signal came first. The
/// handlers are installed when this is called (before the listener is
/// announced), the returned future acts on them.
fn shutdown_signals(
    stops: tokio::sync::mpsc::UnboundedSender<Stop>,
    mut first: Option<tokio::sync::oneshot::Sender<rustix::process::Signal>>,
) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let mut draining = false;
    async move {
        loop {
            let (name, signal) = tokio::select! {
                _ = term.recv() => ("SIGTERM", rustix::process::Signal::TERM),
                _ = int.recv() => ("SIGINT", rustix::process::Signal::INT),
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
fn forward_signals() -> impl FnOnce(Option<u32>) {
    use rustix::process::Signal;
    use tokio::signal::unix::{SignalKind, signal};
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
        ProbeMode::Ready => match ready_once(cli, args.local) {
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

/// The readiness answer: from the probehost serving this configuration if one
/// answers (cheap: no component is loaded here), else from one evaluation in this
/// process, on a small runtime of its own.
fn ready_once(cli: &Cli, local: bool) -> Result<Verdict, StartupError> {
    let config = load_config(cli)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the probe runtime")?;
    if !local && let Some((status, body)) = runtime.block_on(app::ask_running_server(&config)) {
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
    let metrics = Arc::new(Metrics::new(config.probes.iter().map(|p| p.name.as_str())));
    let evaluator = app::build_evaluator(&config, runtime.handle(), metrics)?;
    let verdict = runtime.block_on(evaluator.evaluate(None));
    drop(evaluator);
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(verdict)
}

fn config_check(cli: &Cli) -> Result<u8, StartupError> {
    let config = load_config(cli)?;
    app::check_config(&config)?;
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

/// `plugin check`: exit 0 for a probe component, 1 for anything else.
fn plugin_check(file: &std::path::Path) -> Result<u8, StartupError> {
    let runtime = PluginRuntime::new(None)?;
    let source = match file.to_str().and_then(|f| f.strip_prefix("builtin:")) {
        Some(name) => match Builtin::from_name(name) {
            Some(builtin) => ComponentSource::Builtin(builtin),
            None => {
                let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
                error(&format!(
                    "unknown built-in probe {name:?} (known: builtin:{})",
                    known.join(", builtin:")
                ));
                return Ok(exit::FAILURE);
            }
        },
        None => ComponentSource::File(file.to_owned()),
    };
    let inspection = match runtime.inspect(&source) {
        Ok(inspection) => inspection,
        Err(e) => {
            error(&format!("{}: {e}", file.display()));
            return Ok(exit::FAILURE);
        }
    };
    let mut out = String::new();
    let name = file.display();
    match &inspection.probe {
        Ok(()) => out.push_str(&format!("{name}: a probe component ({WORLD})\n")),
        Err(why) => out.push_str(&format!(
            "{name}: not a probe component: it does not implement {WORLD}: {why}\n"
        )),
    }
    out.push_str("exports:\n");
    for export in &inspection.exports {
        out.push_str(&format!("  {export}\n"));
    }
    out.push_str("imports:\n");
    let width = inspection
        .imports
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for import in &inspection.imports {
        let capability = Inspection::capability(import);
        out.push_str(&format!("  {import:width$}  {}\n", capability.what));
    }
    let grants = inspection.grants();
    if grants.is_empty() {
        out.push_str("grants: none needed\n");
    } else {
        out.push_str("grants it can use, in its [probes.NAME] table:\n");
        for grant in grants {
            let example = match grant {
                "databases" => "databases = [\"default\"]",
                "caches" => "caches = [\"default\"]",
                "network" => "network = [\"HOST:PORT\", ...]",
                "http" => "http = [\"https://HOST[:PORT]\", ...]",
                _ => "config = { KEY = \"VALUE\" }",
            };
            out.push_str(&format!("  {example}\n"));
        }
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(if inspection.probe.is_ok() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// `plugin new`: exit 0 when created, 1 when it could not be.
fn plugin_new(name: &str, dir: Option<&std::path::Path>) -> Result<u8, StartupError> {
    let dir = dir.map_or_else(|| PathBuf::from(name), std::path::Path::to_owned);
    match scaffold::new_probe(name, &dir) {
        Ok(created) => {
            let _ = writeln!(
                std::io::stdout().lock(),
                "created {dir}\nbuild it:  cd {dir} && cargo build --release\nthen use:  [probes.{name}]\n           component = \"{dir}/{artifact}\"",
                dir = created.dir.display(),
                artifact = created.artifact,
            );
            Ok(exit::OK)
        }
        Err(e) => {
            error(&e.to_string());
            Ok(exit::FAILURE)
        }
    }
}

/// `precompile`: fill the compiled-component cache for every configured probe.
fn precompile(cli: &Cli) -> Result<u8, StartupError> {
    let config = load_config(cli)?;
    let Some(dir) = config.runtime.cache_dir.as_deref() else {
        error(
            "no compiled-component cache is configured: set runtime.cache_dir (or \
             PROBEHOST_CACHE_DIR), and do not set runtime.cache = false",
        );
        return Ok(exit::FAILURE);
    };
    let runtime = PluginRuntime::new(Some(dir))?;
    let Some(cache) = runtime.cache() else {
        error(&format!(
            "the compiled-component cache at {} cannot be used (see the warning above)",
            dir.display()
        ));
        return Ok(exit::FAILURE);
    };
    let loaded = app::load_components(&config, &runtime)?;
    let mut out = String::new();
    for ((name, component), probe) in loaded.iter().zip(&config.probes) {
        let how = match component.origin() {
            Origin::Compiled => "compiled",
            Origin::Cached => "already cached",
        };
        out.push_str(&format!("{name}: {} {how}\n", probe.component));
    }
    out.push_str(&format!("cache: {}\n", cache.dir().display()));
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(exit::OK)
}

/// A runtime for a job: single-threaded, on the main thread (which
/// `lockedmigrate`'s parent-death signal relies on).
fn job_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the job runtime")
}

fn wait4db(cli: &Cli, args: &Wait4dbArgs) -> Result<u8, StartupError> {
    let settings = match Wait4db::new(args.timeout, args.stable, args.interval) {
        Ok(settings) => settings,
        Err(message) => {
            error(message);
            return Ok(exit::FAILURE);
        }
    };
    let config = load_config(cli)?;
    let db = jobs::database(&config, &args.database)?;
    let ready = job_runtime()?.block_on(jobs::wait4db::wait4db(
        db,
        settings,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ));
    if ready {
        Ok(exit::OK)
    } else {
        error("Could not establish database connection");
        Ok(exit::FAILURE)
    }
}

/// A flag, else the environment variable; empty counts as missing, as in the
/// original.
fn flag_or_env(flag: &Option<String>, var: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
}

fn ensureadmin(cli: &Cli, args: &EnsureAdminArgs) -> Result<u8, StartupError> {
    let config = load_config(cli)?;
    let db = jobs::database(&config, &args.database)?;
    let Some(username) = flag_or_env(&args.username, "DJANGO_ADMIN_USERNAME") else {
        error("Username is required. Set DJANGO_ADMIN_USERNAME or use --username.");
        return Ok(exit::FAILURE);
    };
    let Some(password) = flag_or_env(&args.password, "DJANGO_ADMIN_PASSWORD") else {
        error("Password is required. Set DJANGO_ADMIN_PASSWORD or use --password.");
        return Ok(exit::FAILURE);
    };
    let email = ensureadmin::normalize_email(
        &flag_or_env(&args.email, "DJANGO_ADMIN_EMAIL").unwrap_or_default(),
    );
    let username = match ensureadmin::normalize_username(&username) {
        Ok(username) => username,
        Err(message) => {
            error(&message);
            return Ok(exit::FAILURE);
        }
    };
    let settings = &config.jobs.ensureadmin;

    let outcome: Result<Option<bool>, String> = job_runtime()?.block_on(async {
        let mut conn = db
            .options
            .connect(db.connect_timeout)
            .await
            .map_err(|e| format!("Could not connect to database {:?}: {e}", db.name))?;
        let run = async {
            // An existing user is left alone whatever the password: no need to
            // validate or hash it.
            if ensureadmin::exists(&mut conn, &username).await? {
                return Ok(None);
            }
            if let Err(messages) = password::validate(&password, &settings.validators) {
                return Ok(Some(Err(messages)));
            }
            let iterations = settings.iterations;
            let hash =
                tokio::task::spawn_blocking(move || password::make_password(&password, iterations))
                    .await
                    .expect("hashing does not panic");
            let admin = ensureadmin::Admin {
                username: username.clone(),
                password: hash,
                email,
            };
            ensureadmin::ensure_admin(&mut conn, &admin)
                .await
                .map(|created| Some(Ok(created)))
        };
        let result = run.await;
        conn.close().await;
        match result {
            Ok(None) => Ok(Some(false)),
            Ok(Some(Ok(created))) => Ok(Some(created)),
            Ok(Some(Err(messages))) => {
                Err(format!("Password validation error: {}", messages.join(" ")))
            }
            Err(ensureadmin::EnsureError::NoTable) => Err(format!(
                "The auth_user table does not exist in database {:?}: run migrations first.",
                db.name
            )),
            Err(e) => Err(format!("Could not create the admin user: {e}")),
        }
    });
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(Some(true)) => {
            let _ = writeln!(stdout, "Admin user created from environment variables.");
            Ok(exit::OK)
        }
        Ok(_) => {
            let _ = writeln!(stdout, "Admin user already exists, service is ready.");
            Ok(exit::OK)
        }
        Err(message) => {
            error(&message);
            Ok(exit::FAILURE)
        }
    }
}

fn lockedmigrate(cli: &Cli, args: &LockedMigrateArgs) -> Result<u8, StartupError> {
    let config = load_config(cli)?;
    let command = match args.command(&config.jobs.migrate_command) {
        Ok(command) => command,
        Err(message) => {
            use clap::CommandFactory;
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
    };
    let alias = args.database.as_deref().unwrap_or(config::DEFAULT_DATABASE);
    let db = jobs::database(&config, alias)?;
    let id = args.lock_id.unwrap_or(config.jobs.lock_id);

    let ended = job_runtime()?.block_on(async {
        let mut waiting = |waited: Duration, holder: &str| {
            error(&format!(
                "Waiting for migration lock {id} on database {alias:?}: {holder} ({}s)",
                waited.as_secs()
            ));
        };
        let lock = match MigrationLock::acquire(db, id, args.lock_timeout, &mut waiting).await {
            Ok(lock) => lock,
            Err(e) => return Err(e.to_string()),
        };
        tracing::info!(id, database = alias, "holding the migration lock");
        Ok(lockedmigrate::run_locked(lock, &command).await)
    });
    match ended {
        Ok(Ended::Exited(code)) => Ok(code),
        Ok(Ended::LockLost(reason)) => {
            error(&format!(
                "Lost the connection holding migration lock {id} ({reason}); stopped the command, \
                 as another process may now hold the lock"
            ));
            Ok(exit::FAILURE)
        }
        Ok(Ended::CannotRun(message)) => {
            error(&message);
            Ok(lockedmigrate::EXIT_CANNOT_RUN)
        }
        Err(message) => {
            error(&format!("{}{}", message[..1].to_uppercase(), &message[1..]));
            Ok(exit::FAILURE)
        }
    }
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

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
