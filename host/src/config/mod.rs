//! The configuration: a TOML file (or the original's defaults when there is none),
//! validated into plain values before anything starts.
//!
//! Parsing collects every problem with its place ([`ConfigError`]); `${VAR}`
//! references are resolved through an injectable [`Env`]. This module owns what
//! the settings are and their defaults; it does not connect, load or bind.

mod interpolate;
mod parse;
mod render;
mod secrets;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::interpolate::{Env, ProcessEnv};
pub use self::secrets::{mask_text, redact};
use crate::db::ConnectOptions;
use crate::plugin::{Builtin, ComponentSource, HttpOrigin, NetworkGrant};
use crate::readiness::Gate;

/// `server.listen` when not set.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// The original's ready paths.
pub const DEFAULT_READY_PATHS: &[&str] = &["/readyz"];
/// The original's health (liveness) paths.
pub const DEFAULT_HEALTH_PATHS: &[&str] = &["/healthz", "/livez"];
/// Kubernetes startup probes' path.
pub const DEFAULT_STARTUP_PATHS: &[&str] = &["/startupz"];
/// Prometheus metrics, in standalone mode.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Long enough for Kubernetes to take the pod out of its endpoints.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response write may make no progress before the connection is
/// closed (nginx's `send_timeout`, shorter: a probe answer is tiny).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// More serving threads than this only adds contention.
pub const MAX_THREADS: i64 = 64;

/// One serving thread per CPU the process may use (the cgroup's CPU quota
/// counts), at least one.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS as usize))
}

/// Overall readiness deadline: below Kubernetes' default 1 s probe timeout, so
/// the answer is a 503 with a reason rather than a probe timeout.
pub const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_millis(800);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_secs(1);
/// Memory cap of a probe instance.
pub const DEFAULT_PROBE_MEMORY: usize = 64 << 20;
/// The original's migrate lock id.
pub const DEFAULT_LOCK_ID: i64 = 1000;
/// What `lockedmigrate` runs by default (migrate's flags are appended).
pub const DEFAULT_MIGRATE_COMMAND: &[&str] = &["python", "manage.py", "migrate"];
/// Django 5.2's PBKDF2-SHA256 iteration count.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 1_000_000;
/// Django's `MinimumLengthValidator` default.
pub const DEFAULT_MIN_PASSWORD_LENGTH: usize = 8;
/// Django's default validators that `ensureadmin` implements, in Django's order;
/// `common` applies only when a list file is configured.
pub const DEFAULT_PASSWORD_VALIDATORS: &[&str] = &["minimum_length", "common", "numeric"];
/// The database used when neither the file nor `DATABASE_URL` names one:
/// Django's default `db.sqlite3` in the working directory.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://db.sqlite3";
/// The alias the jobs use unless told otherwise, and that `DATABASE_URL` fills.
pub const DEFAULT_DATABASE: &str = "default";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub readiness: ReadinessConfig,
    pub databases: Vec<DatabaseConfig>,
    pub caches: Vec<CacheConfig>,
    pub probes: Vec<ProbeConfig>,
    pub jobs: JobsConfig,
    pub runtime: RuntimeConfig,
    /// Things that are allowed but probably not meant.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// A Unix socket that answers the probe paths too (for `probe --ready`
    /// and node-local agents); `None` for none.
    pub socket: Option<PathBuf>,
    pub ready_paths: Vec<String>,
    pub health_paths: Vec<String>,
    /// Paths that answer 503 until readiness has passed once, then 200.
    pub startup_paths: Vec<String>,
    /// Where Prometheus metrics are served; `None` for nowhere.
    pub metrics_path: Option<String>,
    /// Proxy mode: the application's `http://host:port`.
    pub upstream: Option<String>,
    /// How long the application may take to start answering a request.
    pub upstream_timeout: Duration,
    /// After SIGTERM: how long readiness answers 503 before the listener closes.
    pub drain: Duration,
    /// After the drain: how long in-flight requests may take to finish.
    pub grace: Duration,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long a response write may make no progress before the
    /// connection is closed.
    pub send_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Threads serving connections (default: one per CPU the process may use).
    pub threads: usize,
    /// Who sees the probes' messages in `?verbose` and JSON answers.
    pub verbose: Detail,
    /// `run`: liveness also needs the upstream port to accept connections.
    pub liveness_upstream: bool,
    /// Proxy mode: readiness also needs the upstream port to accept
    /// connections (the default with an upstream).
    pub readiness_upstream: bool,
    /// Which of the settings whose default follows `upstream` the file set.
    pub(crate) set: UpstreamFollowers,
}

/// Settings whose default depends on whether there is an upstream: which of
/// them the configuration file set, so that `--upstream` can give the others
/// their proxy-mode defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UpstreamFollowers {
    pub(crate) verbose: bool,
    pub(crate) readiness_upstream: bool,
}

impl ServerConfig {
    /// Serve in front of `url` (`--upstream`). What the file left unset takes
    /// its proxy-mode default, as if the file had named the upstream.
    pub fn set_upstream(&mut self, url: String) {
        self.upstream = Some(url);
        if !self.set.verbose {
            self.verbose = Detail::Local;
        }
        if !self.set.readiness_upstream {
            self.readiness_upstream = true;
        }
    }
}

/// Who sees the probes' messages in `?verbose` and JSON answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Everyone (`server.verbose = true`; the default without an upstream).
    Everywhere,
    /// Only the probe socket and loopback connections that were not forwarded
    /// by a proxy: the default in proxy mode, where the probe paths are
    /// reachable through the ingress.
    Local,
    /// Nobody (`server.verbose = false`).
    Nowhere,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessConfig {
    /// Overall deadline of one evaluation.
    pub timeout: Duration,
    /// Reuse a finished evaluation this young.
    pub cache_ttl: Option<Duration>,
    /// Evaluate in the background this often; requests read the latest result.
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub name: String,
    /// The URL after interpolation; it may hold a password (see [`Config::render`]).
    pub url: String,
    pub options: ConnectOptions,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
    /// `require = "primary"`: `builtin:database` also checks that the server
    /// accepts writes (not a standby, not read-only).
    pub require_primary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub name: String,
    /// `host:port` of each memcached server.
    pub servers: Vec<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    pub name: String,
    pub component: ComponentSource,
    /// Where `component` is written, for errors found when it is loaded.
    pub component_location: Option<Location>,
    /// Granted database aliases, in config order.
    pub databases: Vec<String>,
    /// Granted cache names, in config order.
    pub caches: Vec<String>,
    /// TCP addresses the probe may connect to (`network = [...]`).
    pub network: Vec<NetworkGrant>,
    /// HTTP origins the probe may send requests to (`http = [...]`).
    pub http: Vec<HttpOrigin>,
    pub timeout: Duration,
    pub memory: usize,
    /// The probe's own settings, in file order.
    pub config: Vec<(String, String)>,
    /// `builtin:migrations` with Django: the text of the plan file named by the
    /// `plan` setting, read when the config is loaded.
    pub plan: Option<String>,
    /// How a failure gates readiness.
    pub gate: Gate,
    /// `builtin:database`: the granted aliases that must be a writable primary
    /// (`require = "primary"`); the component gets them as its `primary` setting.
    pub primary: Vec<String>,
}

/// The aliases among `granted` whose database has `require = "primary"`.
pub(crate) fn primary_among(databases: &[DatabaseConfig], granted: &[String]) -> Vec<String> {
    granted
        .iter()
        .filter(|name| {
            databases
                .iter()
                .any(|d| &d.name == *name && d.require_primary)
        })
        .cloned()
        .collect()
}

impl ProbeConfig {
    /// A bundled probe called `name` with the defaults: granted nothing, the
    /// given timeout, the default memory and gate, no settings.
    pub fn bundled(name: &str, builtin: Builtin, timeout: Duration) -> ProbeConfig {
        ProbeConfig {
            name: name.to_owned(),
            component: ComponentSource::Builtin(builtin),
            component_location: None,
            databases: Vec::new(),
            caches: Vec::new(),
            network: Vec::new(),
            http: Vec::new(),
            timeout,
            memory: DEFAULT_PROBE_MEMORY,
            config: Vec::new(),
            plan: None,
            gate: Gate::Always,
            primary: Vec::new(),
        }
    }

    /// The settings the component sees: its own, with the plan file's text in
    /// place of its path (a component has no filesystem), and for
    /// `builtin:database` the aliases that must be a primary.
    pub fn component_settings(&self) -> Vec<(String, String)> {
        let mut settings = self.config.clone();
        if let Some(text) = &self.plan {
            for (key, value) in &mut settings {
                if key == "plan" {
                    value.clone_from(text);
                }
            }
        }
        if !self.primary.is_empty() {
            settings.retain(|(key, _)| key != "primary");
            settings.push(("primary".to_owned(), self.primary.join(" ")));
        }
        settings
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// `lockedmigrate`'s lock id unless `-L` is given.
    pub lock_id: i64,
    /// What `lockedmigrate` runs (with migrate's flags appended) unless a command
    /// follows `--`.
    pub migrate_command: Vec<String>,
    pub ensureadmin: EnsureAdminConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsureAdminConfig {
    /// PBKDF2 iterations of the password hash (Django 5.2's default unless set).
    pub iterations: u32,
    /// Password validators, in the order their messages are reported.
    pub validators: Vec<PasswordValidator>,
}

/// Django's standard password validators that `ensureadmin` applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordValidator {
    /// `MinimumLengthValidator(min_length)`
    MinimumLength(usize),
    /// `CommonPasswordValidator` with this list (one password per line, gzip or plain).
    Common(PathBuf),
    /// `NumericPasswordValidator`
    Numeric,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

/// A place in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Option<Location>,
    /// The setting, e.g. `probes.redis.timeout`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(problem: Problem) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems in the configuration:", many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Load the configuration: the file at `path` if given, else the defaults.
pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
    match path {
        None => Ok(Config::defaults(env)),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::single(Problem {
                    location: None,
                    key: String::new(),
                    message: format!("cannot read config file {}: {e}", path.display()),
                })
            })?;
            parse::parse(&text, path, env)
        }
    }
}

/// Parse configuration text as if read from `file` (used for messages and to
/// resolve relative paths).
pub fn parse(text: &str, file: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    parse::parse(text, file, env)
}

impl Config {
    /// The original's defaults: its paths, the `database` then `memcached` probes
    /// granted everything, lock id 1000, and the `default` database from
    /// `DATABASE_URL`, or Django's `db.sqlite3` when that is unset.
    pub fn defaults(env: &dyn Env) -> Config {
        parse::parse("", Path::new("<defaults>"), env)
            .expect("the built-in defaults are a valid configuration")
            .with_source(None)
    }

    fn with_source(mut self, source: Option<PathBuf>) -> Config {
        self.source = source;
        self
    }

    /// Problems that prevent serving: the original refuses to start without
    /// probes or paths.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.server.ready_paths.is_empty() && self.server.health_paths.is_empty() {
            problems.push(self.startup_problem("no ready or health paths configured"));
        }
        if self.probes.is_empty() {
            problems.push(self.startup_problem("no readiness probes configured"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Problems that prevent a readiness check.
    pub fn check_ready(&self) -> Result<(), ConfigError> {
        if self.probes.is_empty() {
            return Err(ConfigError::single(
                self.startup_problem("no readiness probes configured"),
            ));
        }
        Ok(())
    }

    fn startup_problem(&self, message: &str) -> Problem {
        Problem {
            location: None,
            key: String::new(),
            message: message.to_owned(),
        }
    }

    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.name == name)
    }

    pub fn cache(&self, name: &str) -> Option<&CacheConfig> {
        self.caches.iter().find(|c| c.name == name)
    }

    /// The resolved configuration as TOML, with secrets masked.
    /// What must never appear in what the probe `probe` says or logs: the
    /// secret parts of its settings and of its granted databases' URLs.
    pub fn probe_secrets(&self, probe: &ProbeConfig) -> Vec<String> {
        let settings = probe
            .config
            .iter()
            .flat_map(|(key, value)| secrets::secret_parts(key, value));
        let databases = self
            .databases
            .iter()
            .filter(|d| probe.databases.contains(&d.name))
            .flat_map(|d| secrets::secret_parts("url", &d.url));
        settings.chain(databases).collect()
    }

    pub fn render(&self) -> String {
        render::render(self)
    }
}

/// The cache directory used when the config does not set one:
/// `$PROBEHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/probehost`, else
/// `$HOME/.cache/probehost`.
pub fn default_cache_dir(env: &dyn Env) -> Option<PathBuf> {
    let nonempty = |name: &str| env.var(name).filter(|v| !v.is_empty());
    nonempty("PROBEHOST_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| nonempty("XDG_CACHE_HOME").map(|d| Path::new(&d).join("probehost")))
        .or_else(|| nonempty("HOME").map(|d| Path::new(&d).join(".cache/probehost")))
}

/// The default probes: the bundled ones, granted every database and cache.
fn default_probes(
    databases: &[DatabaseConfig],
    caches: &[CacheConfig],
    timeout: Duration,
) -> Vec<ProbeConfig> {
    let all_databases: Vec<String> = databases.iter().map(|d| d.name.clone()).collect();
    [Builtin::Database, Builtin::Memcached]
        .into_iter()
        .map(|builtin| {
            let mut probe = ProbeConfig::bundled(builtin.name(), builtin, timeout);
            match builtin {
                Builtin::Database => {
                    probe.primary = primary_among(databases, &all_databases);
                    probe.databases = all_databases.clone();
                }
                Builtin::Memcached => {
                    probe.caches = caches.iter().map(|c| c.name.clone()).collect();
                }
                Builtin::Migrations => {}
            }
            probe
        })
        .collect()
}

#[cfg(test)]
mod tests;
