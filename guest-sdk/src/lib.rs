//! Write probehost readiness probes in Rust.
//!
//! A probe is a WebAssembly component that probehost loads from its config file and
//! calls on every readiness check. It implements [`Probe`]: return `Ok(())` when the
//! thing it checks is ready, or a [`NotReady`] whose message becomes the body of the
//! `503` answer (and the output of `probehost probe --ready`). The probe reaches the
//! outside world only through the host capabilities it was granted in the config
//! file: [`sql`] for databases, [`memcached`] for caches, [`net`] for TCP
//! connections, [`http`] for HTTP requests, its own [`config`] values, and
//! [`log`].
//!
//! # A complete probe
//!
//! This probe is ready once every migration of the `default` database is applied,
//! counted against a number given in its configuration:
//!
//! ```no_run
//! use probehost_sdk::{NotReady, Probe, Request, config, log, sql};
//!
//! struct Migrations;
//!
//! impl Probe for Migrations {
//!     fn ready(_request: Option<&Request>) -> Result<(), NotReady> {
//!         let expected: i64 = config::get("expected")
//!             .and_then(|v| v.parse().ok())
//!             .ok_or_else(|| NotReady::new("migrations: `expected` is not configured"))?;
//!         let rows = sql::query("default", "SELECT COUNT(*) FROM django_migrations", &[])
//!             .map_err(|e| {
//!                 log::warn(&format!("migrations: {e}"));
//!                 NotReady::new("migrations: could not read django_migrations")
//!             })?;
//!         match rows.scalar() {
//!             Some(sql::Value::Integer(applied)) if *applied >= expected => Ok(()),
//!             _ => Err(NotReady::new("migrations: not applied yet")),
//!         }
//!     }
//! }
//!
//! probehost_sdk::export_probe!(Migrations);
//! # fn main() {}
//! ```
//!
//! Its crate is a `cdylib` built for the `wasm32-wasip2` target:
//!
//! ```toml
//! [package]
//! name = "migrations-probe"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! probehost-sdk = { path = "path/to/probehost/guest-sdk" }
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` writes
//! `target/wasm32-wasip2/release/migrations_probe.wasm`, which the config file names:
//!
//! ```toml
//! [probes.migrations]
//! component = "migrations_probe.wasm"
//! databases = ["default"]
//! config = { expected = "42" }
//! ```
//!
//! # What a probe can and cannot do
//!
//! Each check runs in a fresh instance: nothing survives from one check to the next.
//! The probe has no files and no environment variables. It reaches databases and
//! caches only through [`sql`] and [`memcached`], TCP addresses only through
//! [`net`] (or `std::net`) and HTTP origins only through [`http`], and only those
//! its `[probes.NAME]` table grants (`databases`, `caches`, `network`, `http`).
//! It has a deadline (`timeout`) after which it is stopped, and a memory cap
//! (`memory`). A probe that panics, loops or runs out of memory is reported not
//! ready with the reason; the host keeps serving.

#![deny(missing_docs)]

#[doc(hidden)]
pub mod __bindings {
    pub use crate::bindings::*;
}
mod bindings;
pub mod http;
pub mod net;

use std::fmt;

use bindings::probehost::probe::types as wit;

/// The HTTP status of a [`NotReady`] answer unless the probe chooses another.
pub const SERVICE_UNAVAILABLE: u16 = 503;

/// A readiness probe.
///
/// Implement it on a type of your own and export that type with
/// [`export_probe!`]. The host calls [`ready`](Probe::ready) once per check, in a
/// fresh instance.
pub trait Probe {
    /// Check readiness.
    ///
    /// `request` is the HTTP request that asked for the check, or `None` when the
    /// check comes from `probehost probe --ready`.
    fn ready(request: Option<&Request>) -> Result<(), NotReady>;
}

/// The HTTP request that asked for a readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request path without the query string, e.g. `/readyz`.
    pub path: String,
    /// Raw query string without the leading `?`, if any.
    pub query: Option<String>,
    /// Headers in the order they arrived; names are lower-case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of a header, looked up without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
}

/// The first value of header `name` in `headers`, without regard to case.
fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl From<wit::Request> for Request {
    fn from(r: wit::Request) -> Self {
        Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
        }
    }
}

/// "Not ready", with the message and HTTP status of the answer.
///
/// The message is what Kubernetes (and a person running `probehost probe --ready`)
/// sees; keep it short and free of secrets, in the style `db: could not connect to
/// database`. Log details with [`log`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    message: String,
    status: u16,
}

impl NotReady {
    /// Not ready with this message and status 503.
    pub fn new(message: impl Into<String>) -> Self {
        NotReady {
            message: message.into(),
            status: SERVICE_UNAVAILABLE,
        }
    }

    /// The same answer with another HTTP status. The host accepts 400–599 and
    /// answers 503 for anything else.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
}

impl Default for NotReady {
    /// `Not ready`, status 503: the original's default.
    fn default() -> Self {
        NotReady::new("Not ready")
    }
}

impl From<&str> for NotReady {
    fn from(message: &str) -> Self {
        NotReady::new(message)
    }
}

impl From<String> for NotReady {
    fn from(message: String) -> Self {
        NotReady::new(message)
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NotReady {}

/// The probe's own settings, from the `[probes.NAME.config]` table of the config file.
pub mod config {
    use crate::bindings::probehost::probe::config as host;

    /// The value of `key`, if the config sets it.
    pub fn get(key: &str) -> Option<String> {
        host::get(key)
    }

    /// Every key and value, in the order of the config file.
    pub fn entries() -> Vec<(String, String)> {
        host::entries()
    }

    /// The duration `key` sets (`"500ms"`, `"2s"`, or a bare number of
    /// milliseconds), or `default` when it is unset or empty.
    pub fn duration(key: &str, default: Duration) -> Result<Duration, String> {
        match get(key).filter(|v| !v.trim().is_empty()) {
            None => Ok(default),
            Some(text) => parse_duration(&text).ok_or_else(|| {
                format!("{key} {text:?} is not a duration such as \"500ms\" or \"2s\"")
            }),
        }
    }

    use std::time::Duration;

    fn parse_duration(text: &str) -> Option<Duration> {
        let text = text.trim();
        let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => text.split_at(i),
            None => (text, "ms"),
        };
        let n: u64 = number.parse().ok()?;
        match unit.trim() {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn durations_read_milliseconds_and_seconds() {
            assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
            assert_eq!(parse_duration(" 2 s"), Some(Duration::from_secs(2)));
            assert_eq!(parse_duration("300"), Some(Duration::from_millis(300)));
            assert_eq!(parse_duration("fast"), None);
            assert_eq!(parse_duration("1h"), None);
            assert_eq!(parse_duration("ms"), None);
        }
    }
}

/// Log lines, written by the host under the probe's name.
///
/// The host keeps the first part of long lines and the first lines of a chatty
/// check; the rest is dropped and counted.
pub mod log {
    use crate::bindings::probehost::probe::log as host;
    pub use host::Level;

    /// Log `message` at `level`.
    pub fn log(level: Level, message: &str) {
        host::log(level, message);
    }

    /// Log at trace level.
    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }

    /// Log at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// SQL on the databases granted to the probe (`databases = [...]`).
pub mod sql {
    use std::fmt;

    use crate::bindings::probehost::probe::sql as host;
    pub use host::{Backend, Database, Rows, Value};

    /// Why a query failed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Error {
        /// The probe was not granted this database, or no such database exists.
        NotGranted(String),
        /// No connection could be made.
        Connection(String),
        /// The connection or the query did not finish in time.
        Timeout(String),
        /// The server rejected or failed the query.
        Query(String),
    }

    impl From<host::Error> for Error {
        fn from(e: host::Error) -> Self {
            match e {
                host::Error::NotGranted(m) => Error::NotGranted(m),
                host::Error::Connection(m) => Error::Connection(m),
                host::Error::Timeout(m) => Error::Timeout(m),
                host::Error::Query(m) => Error::Query(m),
            }
        }
    }

    /// The databases this probe was granted, in the order of the config file.
    pub fn databases() -> Vec<Database> {
        host::databases()
    }

    /// Run one statement on the database `database` with positional parameters
    /// (`$1`, `$2` on PostgreSQL; `?` on MySQL/MariaDB and SQLite) and return its rows.
    ///
    /// The host bounds the connection and the query by the database's timeouts and
    /// the probe's remaining deadline.
    pub fn query(database: &str, statement: &str, params: &[Value]) -> Result<Rows, Error> {
        host::query(database, statement, params).map_err(Error::from)
    }

    impl Rows {
        /// The first column of the first row, if there is one.
        pub fn scalar(&self) -> Option<&Value> {
            self.rows.first().and_then(|row| row.first())
        }
    }

    impl fmt::Display for Backend {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Backend::Postgres => "postgres",
                Backend::Mysql => "mysql",
                Backend::Sqlite => "sqlite",
            })
        }
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Error::NotGranted(m) => write!(f, "not granted: {m}"),
                Error::Connection(m) => write!(f, "connection failed: {m}"),
                Error::Timeout(m) => write!(f, "timed out: {m}"),
                Error::Query(m) => write!(f, "query failed: {m}"),
            }
        }
    }

    impl std::error::Error for Error {}
}

/// memcached servers of the caches granted to the probe (`caches = [...]`).
pub mod memcached {
    use std::fmt;

    use crate::bindings::probehost::probe::memcached as host;
    pub use host::Cache;

    /// Why a `stats` request failed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Error {
        /// The probe was not granted this cache, or the server is not one of its servers.
        NotGranted(String),
        /// No connection could be made.
        Connection(String),
        /// The server did not answer in time.
        Timeout(String),
        /// The server answered something that is not a valid reply.
        Protocol(String),
    }

    impl From<host::Error> for Error {
        fn from(e: host::Error) -> Self {
            match e {
                host::Error::NotGranted(m) => Error::NotGranted(m),
                host::Error::Connection(m) => Error::Connection(m),
                host::Error::Timeout(m) => Error::Timeout(m),
                host::Error::Protocol(m) => Error::Protocol(m),
            }
        }
    }

    /// The caches this probe was granted and their servers, in the order of the
    /// config file.
    pub fn caches() -> Vec<Cache> {
        host::caches()
    }

    /// Ask `server` (one of `cache`'s servers, as `host:port`) for its `stats`.
    pub fn stats(cache: &str, server: &str) -> Result<Vec<(String, String)>, Error> {
        host::stats(cache, server).map_err(Error::from)
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Error::NotGranted(m) => write!(f, "not granted: {m}"),
                Error::Connection(m) => write!(f, "connection failed: {m}"),
                Error::Timeout(m) => write!(f, "timed out: {m}"),
                Error::Protocol(m) => write!(f, "protocol error: {m}"),
            }
        }
    }

    impl std::error::Error for Error {}
}

/// Export a [`Probe`] implementation as the component's `ready` function.
///
/// Use it once per probe crate, at the crate's top level:
///
/// ```no_run
/// struct AlwaysReady;
///
/// impl probehost_sdk::Probe for AlwaysReady {
///     fn ready(_: Option<&probehost_sdk::Request>) -> Result<(), probehost_sdk::NotReady> {
///         Ok(())
///     }
/// }
///
/// probehost_sdk::export_probe!(AlwaysReady);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_probe {
    ($probe:ty) => {
        const _: () = {
            struct __ProbehostExport;

            impl $crate::__bindings::Guest for __ProbehostExport {
                fn ready(
                    request: ::core::option::Option<$crate::__private::WitRequest>,
                ) -> ::core::result::Result<(), $crate::__private::WitNotReady> {
                    $crate::__private::call::<$probe>(request)
                }
            }

            $crate::__bindings::__export_probe_world!(
                __ProbehostExport with_types_in $crate::__bindings
            );
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use std::sync::Once;

    use super::{Probe, Request, wit};
    pub use wit::{NotReady as WitNotReady, Request as WitRequest};

    static PANIC_HOOK: Once = Once::new();

    /// Runs the probe. Panics are reported through the log capability before the
    /// component traps, so the host can name the panic as the reason.
    pub fn call<P: Probe>(request: Option<WitRequest>) -> Result<(), WitNotReady> {
        PANIC_HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                // One line: "panicked at src/lib.rs:3:5: message". The host takes
                // an error line with this prefix as the reason of the trap.
                crate::log::error(&info.to_string().replace('\n', " "));
            }));
        });
        let request = request.map(Request::from);
        P::ready(request.as_ref()).map_err(|e| WitNotReady {
            message: e.message,
            status: e.status,
        })
    }
}
