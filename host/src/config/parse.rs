//! Turns config text into a [`Config`], collecting every problem with its place.
//!
//! The document is walked by hand (not through serde) so that one run reports all
//! unknown keys, wrong types and bad values at once, each with its line and
//! column, instead of stopping at the first.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::interpolate::{Env, interpolate};
use super::secrets::{mask_value, redact, secret_parts};
use super::*;
use crate::db::ConnectOptions;
use crate::plugin::{Builtin, ComponentSource, HttpOrigin, NetworkGrant};
use crate::readiness::Gate;

/// Longest duration any setting accepts (deadlines are added to clock readings).
const MAX_DURATION: Duration = Duration::from_secs(3600);

const TOP_KEYS: &[&str] = &[
    "server",
    "readiness",
    "databases",
    "caches",
    "probes",
    "jobs",
    "runtime",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "socket",
    "ready_paths",
    "health_paths",
    "startup_paths",
    "metrics_path",
    "upstream",
    "upstream_timeout",
    "drain",
    "grace",
    "header_read_timeout",
    "send_timeout",
    "max_connections",
    "threads",
    "verbose",
    "liveness_upstream",
    "readiness_upstream",
];
/// `sun_path` holds 108 bytes, the last a NUL.
const MAX_SOCKET_PATH: usize = 107;
const READINESS_KEYS: &[&str] = &["timeout", "cache_ttl", "interval"];
const DATABASE_KEYS: &[&str] = &["url", "connect_timeout", "query_timeout", "require"];
const CACHE_KEYS: &[&str] = &["servers", "timeout"];
/// The settings `builtin:migrations` reads from `[probes.NAME.config]`.
const MIGRATIONS_SETTINGS: &[&str] = &["tool", "plan", "head", "table"];
const PROBE_KEYS: &[&str] = &[
    "component",
    "gate",
    "databases",
    "caches",
    "network",
    "http",
    "timeout",
    "memory",
    "config",
];
const JOBS_KEYS: &[&str] = &["lockedmigrate", "ensureadmin"];
const LOCKEDMIGRATE_KEYS: &[&str] = &["lock_id", "command"];
const ENSUREADMIN_KEYS: &[&str] = &["iterations", "min_length", "common_passwords", "validators"];
const RUNTIME_KEYS: &[&str] = &["cache_dir", "cache"];

pub(super) fn parse(text: &str, file: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let doc = toml_edit::Document::parse(text).map_err(|e| {
        let mut parser = Parser::new(text, file, env);
        parser.problem(
            e.span(),
            "",
            format!("invalid TOML: {}", e.message().trim_end()),
        );
        ConfigError {
            problems: parser.problems,
        }
    })?;
    let mut parser = Parser::new(text, file, env);
    let mut config = parser.config(doc.as_item());
    for warning in &mut config.warnings {
        *warning = redact(warning, &parser.secrets);
    }
    if parser.problems.is_empty() {
        return Ok(config);
    }
    // In file order; problems without a place (missing keys) last.
    let mut problems = parser.problems;
    for problem in &mut problems {
        problem.message = redact(&problem.message, &parser.secrets);
    }
    problems.sort_by_key(|p| {
        p.location
            .as_ref()
            .map_or((usize::MAX, 0), |l| (l.line, l.column))
    });
    Err(ConfigError { problems })
}

struct Parser<'a> {
    text: &'a str,
    file: &'a Path,
    env: &'a dyn Env,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    /// (section, name) of every `[databases.NAME]` and `[caches.NAME]` written,
    /// valid or not.
    declared: Vec<(&'static str, String)>,
    /// Secret parts of the values read, raw and resolved: redacted from every
    /// problem and warning, whatever produced its text.
    secrets: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: &'a Path, env: &'a dyn Env) -> Parser<'a> {
        Parser {
            text,
            file,
            env,
            problems: Vec::new(),
            warnings: Vec::new(),
            declared: Vec::new(),
            secrets: Vec::new(),
        }
    }

    fn config(&mut self, root: &Item) -> Config {
        let top = self.table(root, "", TOP_KEYS);
        let get = |key: &str| top.and_then(|t| t.get(key));

        let server = self.server(get("server"));
        let readiness_table =
            get("readiness").and_then(|i| self.table(i, "readiness", READINESS_KEYS));
        let readiness_field = |parser: &mut Self, field: &str| {
            readiness_table.and_then(|t| parser.field(t, "readiness", field, Self::duration))
        };
        let readiness = ReadinessConfig {
            timeout: readiness_field(self, "timeout").unwrap_or(DEFAULT_READINESS_TIMEOUT),
            cache_ttl: readiness_field(self, "cache_ttl"),
            interval: readiness_field(self, "interval"),
        };
        let databases = self.databases(get("databases"));
        let caches = self.caches(get("caches"));
        let probes = match get("probes") {
            None => default_probes(&databases, &caches, readiness.timeout),
            Some(item) => self.probes(item, &databases, &caches, &readiness),
        };
        let jobs = self.jobs(get("jobs"));
        let runtime = self.runtime(get("runtime"));
        Config {
            source: Some(self.file.to_path_buf()),
            server,
            readiness,
            databases,
            caches,
            probes,
            jobs,
            runtime,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    fn server(&mut self, item: Option<&Item>) -> ServerConfig {
        let table = item.and_then(|i| self.table(i, "server", SERVER_KEYS));
        let listen = table
            .and_then(|t| t.get("listen"))
            .and_then(|i| self.socket_addr(i, "server.listen"))
            .unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .expect("valid default listen address")
            });
        let socket = table
            .and_then(|t| t.get("socket"))
            .and_then(|i| self.socket_path(i, "server.socket"));
        let mut paths = |key: &str, default: &[&str]| match table.and_then(|t| t.get(key)) {
            None => default.iter().map(|p| (*p).to_owned()).collect(),
            Some(i) => self.paths(i, &format!("server.{key}")),
        };
        let ready_paths = paths("ready_paths", DEFAULT_READY_PATHS);
        let health_paths = paths("health_paths", DEFAULT_HEALTH_PATHS);
        let startup_paths = paths("startup_paths", DEFAULT_STARTUP_PATHS);
        let upstream = table
            .and_then(|t| t.get("upstream"))
            .and_then(|i| self.upstream(i, "server.upstream"));

        let metrics_path = match table.and_then(|t| t.get("metrics_path")) {
            // Off by default in proxy mode, where every other path is the app's.
            None if upstream.is_some() => None,
            None => Some(DEFAULT_METRICS_PATH.to_owned()),
            Some(i) => match self.string(i, "server.metrics_path") {
                Some((path, _)) if path.is_empty() => None,
                Some((path, _)) if path.starts_with('/') => Some(path),
                Some((path, span)) => {
                    self.problem(
                        span,
                        "server.metrics_path",
                        format!("{path:?} is not a URL path (or \"\" for none)"),
                    );
                    None
                }
                None => None,
            },
        };
        let duration = |parser: &mut Self, key: &str, default: Duration| {
            table
                .and_then(|t| parser.field(t, "server", key, Self::duration))
                .unwrap_or(default)
        };
        let upstream_timeout = duration(self, "upstream_timeout", DEFAULT_UPSTREAM_TIMEOUT);
        let drain = duration(self, "drain", DEFAULT_DRAIN);
        let grace = duration(self, "grace", DEFAULT_GRACE);
        let header_read_timeout =
            duration(self, "header_read_timeout", DEFAULT_HEADER_READ_TIMEOUT);
        let send_timeout = duration(self, "send_timeout", DEFAULT_SEND_TIMEOUT);
        let max_connections = table
            .and_then(|t| self.field(t, "server", "max_connections", Self::integer))
            .map(|n| usize::try_from(n).unwrap_or(0).max(1))
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let threads = match table.and_then(|t| t.get("threads")) {
            None => default_threads(),
            Some(item) => match self.integer(item, "server.threads") {
                Some(n) if (1..=MAX_THREADS).contains(&n) => n as usize,
                Some(n) => {
                    self.problem(
                        item.span(),
                        "server.threads",
                        format!("{n} is not between 1 and {MAX_THREADS}"),
                    );
                    1
                }
                None => 1,
            },
        };
        let flag = |parser: &mut Self, key: &str, default: bool| {
            table
                .and_then(|t| t.get(key))
                .and_then(|i| parser.boolean(i, &format!("server.{key}")))
                .unwrap_or(default)
        };
        let set = UpstreamFollowers {
            verbose: table.is_some_and(|t| t.contains_key("verbose")),
            readiness_upstream: table.is_some_and(|t| t.contains_key("readiness_upstream")),
        };
        let verbose = match table
            .and_then(|t| t.get("verbose"))
            .and_then(|i| self.boolean(i, "server.verbose"))
        {
            Some(true) => Detail::Everywhere,
            Some(false) => Detail::Nowhere,
            None if upstream.is_some() => Detail::Local,
            None => Detail::Everywhere,
        };
        let liveness_upstream = flag(self, "liveness_upstream", false);
        let readiness_upstream = flag(self, "readiness_upstream", upstream.is_some());
        for (key, on) in [
            ("liveness_upstream", liveness_upstream),
            ("readiness_upstream", readiness_upstream),
        ] {
            if on && upstream.is_none() {
                let span = table.and_then(|t| t.get(key)).and_then(Item::span);
                self.problem(
                    span,
                    &format!("server.{key}"),
                    "needs `server.upstream`, the port to check",
                );
            }
        }

        ServerConfig {
            listen,
            socket,
            ready_paths,
            health_paths,
            startup_paths,
            metrics_path,
            upstream,
            upstream_timeout,
            drain,
            grace,
            header_read_timeout,
            send_timeout,
            max_connections,
            threads,
            verbose,
            liveness_upstream,
            readiness_upstream,
            set,
        }
    }

    /// Where a Unix socket is bound: a path relative to the file's directory,
    /// short enough for `sun_path`.
    fn socket_path(&mut self, item: &Item, key: &str) -> Option<PathBuf> {
        let (value, span) = self.string(item, key)?;
        if value.is_empty() {
            self.problem(span, key, "is empty (leave it out for no socket)");
            return None;
        }
        let path = self.relative(&value);
        let length = path.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            self.problem(
                span,
                key,
                format!(
                    "{} is {length} bytes long; a Unix socket's path may have at most {MAX_SOCKET_PATH}",
                    path.display()
                ),
            );
            return None;
        }
        Some(path)
    }

    /// An `http://host:port` URL (no path): where the application listens.
    fn upstream(&mut self, item: &Item, key: &str) -> Option<String> {
        let (value, span) = self.string(item, key)?;
        let parsed = url::Url::parse(&value);
        let valid = parsed.as_ref().is_ok_and(|u| {
            u.scheme() == "http"
                && u.host_str().is_some()
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
        });
        if valid {
            Some(value.trim_end_matches('/').to_owned())
        } else {
            self.problem(
                span,
                key,
                format!(
                    "{:?} is not an http://host:port URL",
                    super::secrets::mask_text(&value)
                ),
            );
            None
        }
    }

    fn databases(&mut self, item: Option<&Item>) -> Vec<DatabaseConfig> {
        let database_url = self.env.var("DATABASE_URL").filter(|u| !u.is_empty());
        let mut databases = Vec::new();
        let Some(item) = item else {
            // Nothing in the file: the `default` database from DATABASE_URL, else
            // Django's default SQLite file.
            let url = database_url.unwrap_or_else(|| DEFAULT_SQLITE_URL.to_owned());
            if let Some(db) = self.database_from_url(DEFAULT_DATABASE, url, None, "DATABASE_URL") {
                databases.push(db);
            }
            return databases;
        };
        let Some(table) = self.named_tables(item, "databases") else {
            return databases;
        };
        for (name, entry) in table.iter() {
            self.declared.push(("databases", name.to_owned()));
            let key = format!("databases.{name}");
            let Some(t) = self.table(entry, &key, DATABASE_KEYS) else {
                continue;
            };
            let url = self.required(t, entry.span(), &key, "url", Self::string);
            let connect_timeout = self.field(t, &key, "connect_timeout", Self::duration);
            let query_timeout = self.field(t, &key, "query_timeout", Self::duration);
            let require_primary = self.field(t, &key, "require", Self::require);
            if let Some(((url, _), span)) = url {
                match ConnectOptions::parse(&url) {
                    Ok(options) => databases.push(DatabaseConfig {
                        name: name.to_owned(),
                        url,
                        options,
                        connect_timeout: connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                        query_timeout: query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT),
                        require_primary: require_primary.unwrap_or(false),
                    }),
                    Err(e) => self.problem(
                        span,
                        &format!("{key}.url"),
                        format!("invalid database URL: {e}"),
                    ),
                }
            }
        }
        // DATABASE_URL fills the `default` alias when the file does not name it.
        if !table.contains_key(DEFAULT_DATABASE)
            && let Some(url) = database_url
            && let Some(db) = self.database_from_url(DEFAULT_DATABASE, url, None, "DATABASE_URL")
        {
            databases.insert(0, db);
        }
        databases
    }

    fn database_from_url(
        &mut self,
        name: &str,
        url: String,
        span: Option<Range<usize>>,
        key: &str,
    ) -> Option<DatabaseConfig> {
        match ConnectOptions::parse(&url) {
            Ok(options) => Some(DatabaseConfig {
                name: name.to_owned(),
                url,
                options,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                query_timeout: DEFAULT_QUERY_TIMEOUT,
                require_primary: false,
            }),
            Err(e) => {
                self.problem(span, key, format!("invalid database URL: {e}"));
                None
            }
        }
    }

    fn caches(&mut self, item: Option<&Item>) -> Vec<CacheConfig> {
        let mut caches = Vec::new();
        let Some(table) = item.and_then(|i| self.named_tables(i, "caches")) else {
            return caches;
        };
        for (name, entry) in table.iter() {
            self.declared.push(("caches", name.to_owned()));
            let key = format!("caches.{name}");
            let Some(t) = self.table(entry, &key, CACHE_KEYS) else {
                continue;
            };
            let servers = self.required(t, entry.span(), &key, "servers", Self::servers);
            let timeout = self.field(t, &key, "timeout", Self::duration);
            if let Some((servers, _)) = servers {
                caches.push(CacheConfig {
                    name: name.to_owned(),
                    servers,
                    timeout: timeout.unwrap_or(DEFAULT_CACHE_TIMEOUT),
                });
            }
        }
        caches
    }

    fn probes(
        &mut self,
        item: &Item,
        databases: &[DatabaseConfig],
        caches: &[CacheConfig],
        readiness: &ReadinessConfig,
    ) -> Vec<ProbeConfig> {
        let mut probes = Vec::new();
        let Some(table) = self.named_tables(item, "probes") else {
            return probes;
        };
        let database_names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
        let cache_names: Vec<&str> = caches.iter().map(|c| c.name.as_str()).collect();

        for (name, entry) in table.iter() {
            let key = format!("probes.{name}");
            let Some(t) = self.table(entry, &key, PROBE_KEYS) else {
                continue;
            };
            let component = self.required(t, entry.span(), &key, "component", Self::component);
            let bundled = match &component {
                Some((ComponentSource::Builtin(builtin), _)) => Some(*builtin),
                _ => None,
            };
            // A bundled probe checks everything of its kind unless its table
            // says otherwise, as the original's probes do; a user probe is
            // granted nothing it is not given.
            let granted_databases = match t.get("databases") {
                None if matches!(bundled, Some(Builtin::Database | Builtin::Migrations)) => {
                    owned(&database_names)
                }
                None => Vec::new(),
                Some(i) => {
                    self.grants(i, &format!("{key}.databases"), &database_names, "databases")
                }
            };
            let granted_caches = match t.get("caches") {
                None if bundled == Some(Builtin::Memcached) => owned(&cache_names),
                None => Vec::new(),
                Some(i) => self.grants(i, &format!("{key}.caches"), &cache_names, "caches"),
            };
            let network = self
                .field(t, &key, "network", Self::network_grants)
                .unwrap_or_default();
            let http = self
                .field(t, &key, "http", Self::http_origins)
                .unwrap_or_default();
            let timeout = self.field(t, &key, "timeout", Self::duration);
            let memory = self.field(t, &key, "memory", Self::size);
            let gate = self.field(t, &key, "gate", Self::gate);
            let config = match t.get("config") {
                None => Vec::new(),
                Some(i) => self.probe_settings(i, &format!("{key}.config")),
            };
            let Some((component, span)) = component else {
                continue;
            };
            let plan = match bundled {
                Some(Builtin::Migrations) => {
                    self.migrations_settings(t.get("config"), &key, span.clone(), &config)
                }
                _ => None,
            };
            if let Some(timeout) = timeout.filter(|t| *t > readiness.timeout) {
                self.warnings.push(format!(
                    "{key}.timeout ({}) is longer than readiness.timeout ({}); the overall deadline stops the probe first",
                    humantime::format_duration(timeout),
                    humantime::format_duration(readiness.timeout)
                ));
            }
            // A bundled probe with nothing to check would always pass: fail
            // closed instead, naming the probe.
            let nothing_to_check = match bundled {
                Some(Builtin::Database | Builtin::Migrations) if granted_databases.is_empty() => {
                    Some(("databases", "database", "[databases.NAME] table"))
                }
                Some(Builtin::Memcached) if granted_caches.is_empty() => {
                    Some(("caches", "cache", "[caches.NAME] table"))
                }
                _ => None,
            };
            // A table written but invalid is reported where it is; the probe
            // then has nothing valid to check, which needs no second report.
            let valid = |section: &str, name: &str| match section {
                "databases" => database_names.contains(&name),
                _ => cache_names.contains(&name),
            };
            let invalid_declared = |parser: &Self, grant: &str| {
                parser
                    .declared
                    .iter()
                    .any(|(s, n)| *s == grant && !valid(s, n))
            };
            if let Some((grant, what, table)) = nothing_to_check
                && !invalid_declared(self, grant)
            {
                let builtin = component.to_string();
                match t.get(grant) {
                    Some(i) => self.problem(
                        i.span(),
                        &format!("{key}.{grant}"),
                        format!(
                            "{builtin} is granted no {grant}, so it would always pass: grant at least one {what}, or remove the probe"
                        ),
                    ),
                    None => self.problem(
                        span.clone(),
                        &format!("{key}.component"),
                        format!(
                            "{builtin} has no {what} to check, so it would always pass: configure a {table}, or remove the probe"
                        ),
                    ),
                }
            }
            let primary = match bundled {
                Some(Builtin::Database) => primary_among(databases, &granted_databases),
                _ => Vec::new(),
            };
            probes.push(ProbeConfig {
                name: name.to_owned(),
                primary,
                component,
                component_location: self.location(span),
                databases: granted_databases,
                caches: granted_caches,
                network,
                http,
                timeout: timeout.unwrap_or(readiness.timeout),
                memory: memory.unwrap_or(DEFAULT_PROBE_MEMORY),
                config,
                plan,
                gate: gate.unwrap_or_default(),
            });
        }
        probes
    }

    fn jobs(&mut self, item: Option<&Item>) -> JobsConfig {
        let table = item.and_then(|i| self.table(i, "jobs", JOBS_KEYS));
        let get = |key: &str| table.and_then(|t| t.get(key));

        let migrate = get("lockedmigrate")
            .and_then(|i| self.table(i, "jobs.lockedmigrate", LOCKEDMIGRATE_KEYS));
        let lock_id = migrate
            .and_then(|t| self.field(t, "jobs.lockedmigrate", "lock_id", Self::integer))
            .unwrap_or(DEFAULT_LOCK_ID);
        let migrate_command = migrate
            .and_then(|t| self.field(t, "jobs.lockedmigrate", "command", Self::command))
            .unwrap_or_else(|| {
                DEFAULT_MIGRATE_COMMAND
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });

        let admin =
            get("ensureadmin").and_then(|i| self.table(i, "jobs.ensureadmin", ENSUREADMIN_KEYS));
        let key = "jobs.ensureadmin";
        let iterations = admin
            .and_then(|t| self.field(t, key, "iterations", Self::iterations))
            .unwrap_or(DEFAULT_PBKDF2_ITERATIONS);
        let min_length = admin
            .and_then(|t| self.field(t, key, "min_length", Self::integer))
            .map(|n| usize::try_from(n).unwrap_or(0))
            .unwrap_or(DEFAULT_MIN_PASSWORD_LENGTH);
        let common = admin.and_then(|t| t.get("common_passwords")).and_then(|i| {
            let (path, span) = self.string(i, &format!("{key}.common_passwords"))?;
            let path = self.relative(&path);
            if path.is_file() {
                Some(path)
            } else {
                let message = format!("file not found: {}", path.display());
                self.problem(span, &format!("{key}.common_passwords"), message);
                None
            }
        });
        let names: Vec<(String, Option<Range<usize>>)> =
            match admin.and_then(|t| t.get("validators")) {
                Some(i) => self
                    .strings(i, &format!("{key}.validators"))
                    .unwrap_or_default(),
                None => DEFAULT_PASSWORD_VALIDATORS
                    .iter()
                    .filter(|v| **v != "common" || common.is_some())
                    .map(|v| ((*v).to_owned(), None))
                    .collect(),
            };
        let mut validators = Vec::new();
        for (name, span) in names {
            let validator = match name.as_str() {
                "minimum_length" => Some(PasswordValidator::MinimumLength(min_length)),
                "numeric" => Some(PasswordValidator::Numeric),
                "common" => match &common {
                    Some(path) => Some(PasswordValidator::Common(path.clone())),
                    None => {
                        self.problem(
                            span,
                            &format!("{key}.validators"),
                            "`common` needs `common_passwords`, the list file to check against",
                        );
                        None
                    }
                },
                other => {
                    let message = format!(
                        "unknown validator {other:?} (known: minimum_length, common, numeric)"
                    );
                    self.problem(span, &format!("{key}.validators"), message);
                    None
                }
            };
            validators.extend(validator);
        }
        JobsConfig {
            lock_id,
            migrate_command,
            ensureadmin: EnsureAdminConfig {
                iterations,
                validators,
            },
        }
    }

    fn command(&mut self, item: &Item, key: &str) -> Option<Vec<String>> {
        let words: Vec<String> = self
            .strings(item, key)?
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        if words.is_empty() {
            self.problem(item.span(), key, "the command must name a program");
            return None;
        }
        Some(words)
    }

    fn iterations(&mut self, item: &Item, key: &str) -> Option<u32> {
        let n = self.integer(item, key)?;
        match u32::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.problem(
                    item.span(),
                    key,
                    format!("{n} is not a positive iteration count"),
                );
                None
            }
        }
    }

    fn runtime(&mut self, item: Option<&Item>) -> RuntimeConfig {
        let table = item.and_then(|i| self.table(i, "runtime", RUNTIME_KEYS));
        let enabled = table
            .and_then(|t| t.get("cache"))
            .and_then(|i| self.boolean(i, "runtime.cache"))
            .unwrap_or(true);
        let configured = table
            .and_then(|t| t.get("cache_dir"))
            .and_then(|i| self.string(i, "runtime.cache_dir"))
            .map(|(dir, _)| self.relative(&dir));
        RuntimeConfig {
            cache_dir: if enabled {
                configured.or_else(|| default_cache_dir(self.env))
            } else {
                None
            },
        }
    }

    // ----- structure -----

    /// `item` as a table whose keys must be among `allowed`; every other key is
    /// reported.
    fn table<'i>(
        &mut self,
        item: &'i Item,
        key: &str,
        allowed: &[&str],
    ) -> Option<&'i dyn TableLike> {
        let Some(table) = item.as_table_like() else {
            self.wrong_type(item, key, "a table");
            return None;
        };
        for (name, _) in table.iter() {
            if !allowed.contains(&name) {
                let span = table.key(name).and_then(|k| k.span());
                let full = if key.is_empty() {
                    name.to_owned()
                } else {
                    format!("{key}.{name}")
                };
                self.problem(
                    span,
                    &full,
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(table)
    }

    /// A table of named entries (`[databases.NAME]`), whose names are checked.
    fn named_tables<'i>(&mut self, item: &'i Item, key: &str) -> Option<&'i dyn TableLike> {
        let Some(table) = item.as_table_like() else {
            self.wrong_type(item, key, "a table");
            return None;
        };
        for (name, _) in table.iter() {
            if !is_valid_name(name) {
                let span = table.key(name).and_then(|k| k.span());
                self.problem(
                    span,
                    &format!("{key}.{name}"),
                    "names may use only letters, digits, `_`, `-` and `.`",
                );
            }
        }
        Some(table)
    }

    fn field<T>(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        field: &str,
        read: fn(&mut Self, &Item, &str) -> Option<T>,
    ) -> Option<T> {
        let item = table.get(field)?;
        read(self, item, &format!("{key}.{field}"))
    }

    /// A field that must be present; its value and span. A missing field is
    /// reported at its table (`table_span`).
    fn required<T>(
        &mut self,
        table: &dyn TableLike,
        table_span: Option<Range<usize>>,
        key: &str,
        field: &str,
        read: fn(&mut Self, &Item, &str) -> Option<T>,
    ) -> Option<(T, Option<Range<usize>>)> {
        match table.get(field) {
            Some(item) => read(self, item, &format!("{key}.{field}")).map(|v| (v, item.span())),
            None => {
                self.problem(
                    table_span,
                    &format!("{key}.{field}"),
                    "missing (it is required)",
                );
                None
            }
        }
    }

    // ----- values -----

    /// A string, with `${VAR}` references resolved; its span.
    fn string(&mut self, item: &Item, key: &str) -> Option<(String, Option<Range<usize>>)> {
        let Some(raw) = item.as_str() else {
            self.wrong_type(item, key, "a string");
            return None;
        };
        self.resolve(raw, item.span(), key)
            .map(|s| (s, item.span()))
    }

    fn resolve(&mut self, raw: &str, span: Option<Range<usize>>, key: &str) -> Option<String> {
        self.secrets.extend(secret_parts(key, raw));
        match interpolate(raw, self.env) {
            Ok(s) => {
                if s != raw {
                    self.secrets.extend(secret_parts(key, &s));
                }
                Some(s)
            }
            Err(errors) => {
                for e in errors {
                    let message = match e.points_into_value() {
                        true => format!("{e} of {:?}", mask_value(key, raw)),
                        false => e.to_string(),
                    };
                    self.problem(span.clone(), key, message);
                }
                None
            }
        }
    }

    /// An array of strings (a single string is taken as a list of one).
    fn strings(&mut self, item: &Item, key: &str) -> Option<Vec<(String, Option<Range<usize>>)>> {
        if item.is_str() {
            return self.string(item, key).map(|s| vec![s]);
        }
        let Some(array) = item.as_array() else {
            self.wrong_type(item, key, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for value in array.iter() {
            match value.as_str() {
                Some(raw) => match self.resolve(raw, value.span(), key) {
                    Some(s) => out.push((s, value.span())),
                    None => ok = false,
                },
                None => {
                    self.problem(
                        value.span(),
                        key,
                        format!(
                            "expected an array of strings, found an element that is {}",
                            article(value.type_name())
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn paths(&mut self, item: &Item, key: &str) -> Vec<String> {
        let mut paths = Vec::new();
        for (path, span) in self.strings(item, key).unwrap_or_default() {
            if !path.starts_with('/')
                || path.contains(['?', '#'])
                || path.contains(char::is_whitespace)
            {
                self.problem(
                    span,
                    key,
                    format!(
                        "{path:?} is not a URL path (it must start with `/` and have no query)"
                    ),
                );
            } else if !paths.contains(&path) {
                paths.push(path);
            }
        }
        paths
    }

    fn socket_addr(&mut self, item: &Item, key: &str) -> Option<SocketAddr> {
        let (value, span) = self.string(item, key)?;
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    span,
                    key,
                    format!("{value:?} is not an IP address and port, e.g. \"0.0.0.0:8080\""),
                );
                None
            }
        }
    }

    fn servers(&mut self, item: &Item, key: &str) -> Option<Vec<String>> {
        let servers = self.strings(item, key)?;
        if servers.is_empty() {
            self.problem(item.span(), key, "at least one server is required");
            return None;
        }
        let mut out = Vec::new();
        for (server, span) in servers {
            let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if valid {
                out.push(server);
            } else {
                self.problem(span, key, format!("{server:?} is not `host:port`"));
            }
        }
        Some(out)
    }

    fn component(&mut self, item: &Item, key: &str) -> Option<ComponentSource> {
        let (value, span) = self.string(item, key)?;
        if let Some(name) = value.strip_prefix("builtin:") {
            return match Builtin::from_name(name) {
                Some(b) => Some(ComponentSource::Builtin(b)),
                None => {
                    let known: Vec<String> = Builtin::ALL
                        .iter()
                        .map(|b| format!("builtin:{}", b.name()))
                        .collect();
                    self.problem(
                        span,
                        key,
                        format!(
                            "unknown built-in probe {value:?} (known: {})",
                            known.join(", ")
                        ),
                    );
                    None
                }
            };
        }
        let path = self.relative(&value);
        if !path.is_file() {
            self.problem(
                span,
                key,
                format!("component file not found: {}", path.display()),
            );
            return None;
        }
        Some(ComponentSource::File(path))
    }

    /// Granted names: `"*"` (everything configured) or a list of known names.
    /// A name declared in `section` but invalid is not reported again.
    fn grants(&mut self, item: &Item, key: &str, known: &[&str], section: &str) -> Vec<String> {
        let what = section.trim_end_matches('s');
        let Some(names) = self.strings(item, key) else {
            return Vec::new();
        };
        if names.iter().any(|(n, _)| n == "*") {
            return owned(known);
        }
        let mut granted = Vec::new();
        for (name, span) in names {
            let declared = self
                .declared
                .iter()
                .any(|(s, n)| *s == section && *n == name);
            if !known.contains(&name.as_str()) && !declared {
                let known = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                self.problem(
                    span,
                    key,
                    format!("no {what} named {name:?} is configured (configured: {known})"),
                );
            } else if known.contains(&name.as_str()) && !granted.contains(&name) {
                granted.push(name);
            }
        }
        granted
    }

    /// `network = ["host:port", ...]`: every entry checked, each bad one reported.
    fn network_grants(&mut self, item: &Item, key: &str) -> Option<Vec<NetworkGrant>> {
        self.parsed_list(item, key)
    }

    /// `http = ["scheme://host[:port]", ...]`.
    fn http_origins(&mut self, item: &Item, key: &str) -> Option<Vec<HttpOrigin>> {
        self.parsed_list(item, key)
    }

    fn parsed_list<T>(&mut self, item: &Item, key: &str) -> Option<Vec<T>>
    where
        T: std::str::FromStr<Err = String> + PartialEq,
    {
        let entries = self.strings(item, key)?;
        let mut out = Vec::new();
        for (text, span) in entries {
            match text.trim().parse::<T>() {
                Ok(v) if !out.contains(&v) => out.push(v),
                Ok(_) => {}
                Err(e) => self.problem(span, key, e),
            }
        }
        Some(out)
    }

    fn probe_settings(&mut self, item: &Item, key: &str) -> Vec<(String, String)> {
        let Some(table) = item.as_table_like() else {
            self.wrong_type(item, key, "a table");
            return Vec::new();
        };
        let mut settings = Vec::new();
        for (name, value) in table.iter() {
            let full = format!("{key}.{name}");
            let text = match value.as_value() {
                Some(Value::String(s)) => self.resolve(s.value(), value.span(), &full),
                Some(Value::Integer(i)) => Some(i.value().to_string()),
                Some(Value::Float(f)) => Some(f.value().to_string()),
                Some(Value::Boolean(b)) => Some(b.value().to_string()),
                _ => {
                    self.wrong_type(value, &full, "a string, number or boolean");
                    None
                }
            };
            if let Some(text) = text {
                settings.push((name.to_owned(), text));
            }
        }
        settings
    }

    /// The settings of `builtin:migrations`, checked here so that `config check`
    /// reports them; for Django, the plan file is read and checked, and its text
    /// returned (the component has no filesystem: it gets the text as `plan`).
    fn migrations_settings(
        &mut self,
        item: Option<&Item>,
        probe: &str,
        component_span: Option<Range<usize>>,
        settings: &[(String, String)],
    ) -> Option<String> {
        let key = format!("{probe}.config");
        let table = item.and_then(Item::as_table_like);
        let span_of = |name: &str| table.and_then(|t| t.get(name)).and_then(Item::span);
        let get = |name: &str| {
            settings
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        for (name, _) in settings {
            if !MIGRATIONS_SETTINGS.contains(&name.as_str()) {
                self.problem(
                    span_of(name),
                    &format!("{key}.{name}"),
                    format!(
                        "not a setting of builtin:migrations (known: {})",
                        MIGRATIONS_SETTINGS.join(", ")
                    ),
                );
            }
        }
        let tool = get("tool").unwrap_or("django");
        let misplaced = |parser: &mut Self, name: &str| {
            if get(name).is_some() {
                parser.problem(
                    span_of(name),
                    &format!("{key}.{name}"),
                    format!("not a setting of tool = {tool:?}"),
                );
            }
        };
        match tool {
            "django" => {
                misplaced(self, "head");
                misplaced(self, "table");
                let Some(path) = get("plan") else {
                    self.problem(
                        component_span,
                        &format!("{key}.plan"),
                        "builtin:migrations needs a plan: write one with `probehost migrations plan -o FILE` and set `plan = \"FILE\"` in this table",
                    );
                    return None;
                };
                let path = self.relative(path);
                match crate::migrations::read_plan(&path) {
                    Ok(text) => Some(text),
                    Err(e) => {
                        self.problem(span_of("plan"), &format!("{key}.plan"), e);
                        None
                    }
                }
            }
            "alembic" => {
                misplaced(self, "plan");
                if get("head").is_none_or(|h| h.trim().is_empty()) {
                    let span = span_of("head").or(component_span);
                    self.problem(
                        span,
                        &format!("{key}.head"),
                        "tool = \"alembic\" needs the expected `head` revision (several separated by commas)",
                    );
                }
                None
            }
            other => {
                self.problem(
                    span_of("tool"),
                    &format!("{key}.tool"),
                    format!("unknown tool {other:?} (expected \"django\" or \"alembic\")"),
                );
                None
            }
        }
    }

    /// `require = "primary"` (or `"any"`, the default): whether the database
    /// must accept writes to count as ready. Returns whether it must.
    fn require(&mut self, item: &Item, key: &str) -> Option<bool> {
        let (value, span) = self.string(item, key)?;
        match value.as_str() {
            "primary" => Some(true),
            "any" => Some(false),
            _ => {
                self.problem(
                    span,
                    key,
                    format!("unknown requirement {value:?} (expected \"primary\" or \"any\")"),
                );
                None
            }
        }
    }

    /// `gate = "always" | "startup" | "never"`.
    fn gate(&mut self, item: &Item, key: &str) -> Option<Gate> {
        let (value, span) = self.string(item, key)?;
        let gate = Gate::from_name(&value);
        if gate.is_none() {
            self.problem(
                span,
                key,
                format!(
                    "unknown gate {value:?} (expected one of: {})",
                    Gate::NAMES.join(", ")
                ),
            );
        }
        gate
    }

    /// Seconds as a number, or a string with units such as "800ms", "5s", "1m".
    fn duration(&mut self, item: &Item, key: &str) -> Option<Duration> {
        let parsed = match item.as_value() {
            Some(Value::Integer(i)) => u64::try_from(*i.value()).ok().map(Duration::from_secs),
            Some(Value::Float(f)) => Duration::try_from_secs_f64(*f.value()).ok(),
            Some(Value::String(_)) => {
                let (text, _) = self.string(item, key)?;
                humantime::parse_duration(text.trim()).ok()
            }
            _ => {
                self.wrong_type(
                    item,
                    key,
                    "a duration such as \"800ms\" or a number of seconds",
                );
                return None;
            }
        };
        match parsed {
            Some(d) if d > MAX_DURATION => {
                self.problem(item.span(), key, "must be at most 1h");
                None
            }
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                self.problem(
                    item.span(),
                    key,
                    format!(
                        "{} is not a positive duration (use e.g. \"800ms\", \"5s\" or 2.5)",
                        item.to_string().trim()
                    ),
                );
                None
            }
        }
    }

    /// Bytes as an integer, or a string such as "64MiB", "512KiB", "1GiB", "10MB".
    fn size(&mut self, item: &Item, key: &str) -> Option<usize> {
        let parsed = match item.as_value() {
            Some(Value::Integer(i)) => usize::try_from(*i.value()).ok(),
            Some(Value::String(_)) => {
                let (text, _) = self.string(item, key)?;
                parse_size(&text)
            }
            _ => {
                self.wrong_type(item, key, "a size such as \"64MiB\" or a number of bytes");
                return None;
            }
        };
        match parsed {
            Some(bytes) if bytes >= 1 << 20 => Some(bytes),
            Some(_) => {
                self.problem(item.span(), key, "must be at least 1MiB");
                None
            }
            None => {
                self.problem(
                    item.span(),
                    key,
                    format!(
                        "{} is not a size (use e.g. \"64MiB\", \"512KiB\" or a number of bytes)",
                        item.to_string().trim()
                    ),
                );
                None
            }
        }
    }

    fn integer(&mut self, item: &Item, key: &str) -> Option<i64> {
        match item.as_integer() {
            Some(i) => Some(i),
            None => {
                self.wrong_type(item, key, "an integer");
                None
            }
        }
    }

    fn boolean(&mut self, item: &Item, key: &str) -> Option<bool> {
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(item, key, "true or false");
                None
            }
        }
    }

    // ----- reporting -----

    fn wrong_type(&mut self, item: &Item, key: &str, expected: &str) {
        self.problem(
            item.span(),
            key,
            format!("expected {expected}, found {}", article(item.type_name())),
        );
    }

    fn problem(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        let location = self.location(span);
        self.problems.push(Problem {
            location,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn location(&self, span: Option<Range<usize>>) -> Option<Location> {
        let start = span?.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        Some(Location {
            file: self.file.to_path_buf(),
            line,
            column,
        })
    }

    /// A path from the file, relative to the file's directory.
    fn relative(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn article(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

/// "64MiB", "512 KiB", "1GiB", "10MB", "65536" → bytes.
pub(super) fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}
