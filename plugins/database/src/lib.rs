//! The bundled `database` readiness probe (`builtin:database`).
//!
//! Runs `SELECT 1` on every database the probe is granted, in config order, and is
//! not ready with the original's message as soon as one fails. The reason goes to
//! the log, not to the answer: the body stays `db: could not connect to database`.
//! With no database granted it is not ready either: a database probe that
//! checks nothing must never pass (the host's config check refuses that
//! configuration; this is the second lock on the same door).
//!
//! A database with `require = "primary"` (the host lists those in the
//! `primary` setting) must also accept writes. After a failover, `SELECT 1`
//! still succeeds on a standby or on a read-only server while every write
//! fails; then the answer is `db NAME: read-only (WHY)`:
//!
//! - PostgreSQL: `pg_is_in_recovery()` (a standby: `in recovery`), then
//!   `default_transaction_read_only`;
//! - MySQL/MariaDB: `read_only`, `super_read_only` (MySQL), `innodb_read_only`;
//! - SQLite: whether the file and its directory can be written (a read-only
//!   mount, a read-only file), which the host checks before each query on
//!   such a database, failing it with `read-only: ...`.
#![forbid(unsafe_code)]

use probehost_sdk::sql::{self, Backend, Database as Granted, Value};
use probehost_sdk::{NotReady, Probe, Request, config, log};

/// The answer when any database fails, as in the original.
pub const NOT_READY: &str = "db: could not connect to database";

/// Why a database is not ready.
enum Failure {
    /// It does not answer: the original's answer, the reason in the log.
    Unreachable(String),
    /// It answers, but does not accept writes: `require = "primary"`.
    ReadOnly(String),
}

struct Database;

impl Probe for Database {
    fn ready(_request: Option<&Request>) -> Result<(), NotReady> {
        let databases = sql::databases();
        if databases.is_empty() {
            log::error("no database is granted to this probe, so there is nothing to check");
            return Err(NotReady::new(NOT_READY));
        }
        let primary = config::get("primary").unwrap_or_default();
        let primary: Vec<&str> = primary.split_whitespace().collect();
        for database in databases {
            let result = match primary.contains(&database.name.as_str()) {
                true => writable(&database),
                false => select_one(&database.name),
            };
            match result {
                Ok(()) => {}
                Err(Failure::Unreachable(reason)) => {
                    log::error(&format!("database {:?}: {reason}", database.name));
                    return Err(NotReady::new(NOT_READY));
                }
                Err(Failure::ReadOnly(why)) => {
                    let message = format!("db {}: read-only ({why})", database.name);
                    log::error(&format!("database {:?}: {message}", database.name));
                    return Err(NotReady::new(message));
                }
            }
        }
        Ok(())
    }
}

fn select_one(database: &str) -> Result<(), Failure> {
    match sql::query(database, "SELECT 1", &[]) {
        Ok(rows) if rows.rows.is_empty() => {
            Err(Failure::Unreachable("SELECT 1 returned no row".to_owned()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::Unreachable(e.to_string())),
    }
}

/// Whether the server accepts writes, asked the way of each backend. Each
/// question also proves the database answers, so it replaces `SELECT 1`.
fn writable(database: &Granted) -> Result<(), Failure> {
    let name = database.name.as_str();
    let ask = |statement: &str| sql::query(name, statement, &[]).map(|rows| rows.rows);
    match database.backend {
        Backend::Postgres => {
            let rows =
                ask("SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
                    .map_err(|e| Failure::Unreachable(e.to_string()))?;
            match rows.first().map(Vec::as_slice) {
                Some([Value::Boolean(true), _]) => Err(Failure::ReadOnly("in recovery".to_owned())),
                Some([_, Value::Text(on)]) if on == "on" => Err(Failure::ReadOnly(
                    "default_transaction_read_only".to_owned(),
                )),
                Some([Value::Boolean(false), Value::Text(_)]) => Ok(()),
                other => Err(Failure::Unreachable(format!("unexpected answer {other:?}"))),
            }
        }
        Backend::Mysql => {
            let rows = ask("SHOW GLOBAL VARIABLES WHERE Variable_name IN \
                 ('read_only', 'super_read_only', 'innodb_read_only')")
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
            let on = |variable: &str| {
                rows.iter().any(|row| match row.as_slice() {
                    [Value::Text(name), Value::Text(value)] => {
                        name.eq_ignore_ascii_case(variable)
                            && (value.eq_ignore_ascii_case("ON") || value == "1")
                    }
                    _ => false,
                })
            };
            match ["read_only", "super_read_only", "innodb_read_only"]
                .into_iter()
                .find(|v| on(v))
            {
                Some(variable) => Err(Failure::ReadOnly(variable.to_owned())),
                None if rows.is_empty() => Err(Failure::Unreachable(
                    "the server reports none of read_only, super_read_only, innodb_read_only"
                        .to_owned(),
                )),
                None => Ok(()),
            }
        }
        // SQLite finds out only at the first write, so the host checks the
        // file for a database that must be a primary, and fails its queries
        // with `read-only: ...` when it cannot be written.
        Backend::Sqlite => match ask("SELECT 1") {
            Ok(_) => Ok(()),
            Err(sql::Error::Query(message)) if message.starts_with("read-only:") => {
                log::warn(&format!("database {name:?}: {message}"));
                Err(Failure::ReadOnly("file not writable".to_owned()))
            }
            Err(e) => Err(Failure::Unreachable(e.to_string())),
        },
    }
}

probehost_sdk::export_probe!(Database);
