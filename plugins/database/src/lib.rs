//! The bundled `database` readiness probe (`builtin:database`).
//!
//! Runs `SELECT 1` on every database the probe is granted, in config order, and is
//! not ready with the original's message as soon as one fails. The reason goes to
//! the log, not to the answer: the body stays `db: could not connect to database`.
//! With no database granted it is not ready either: a database probe that
//! checks nothing must never pass (the host's config check refuses that
//! configuration; this is the second lock on the same door).
#![forbid(unsafe_code)]

use probehost_sdk::{NotReady, Probe, Request, log, sql};

/// The answer when any database fails, as in the original.
pub const NOT_READY: &str = "db: could not connect to database";

struct Database;

impl Probe for Database {
    fn ready(_request: Option<&Request>) -> Result<(), NotReady> {
        let databases = sql::databases();
        if databases.is_empty() {
            log::error("no database is granted to this probe, so there is nothing to check");
            return Err(NotReady::new(NOT_READY));
        }
        for database in databases {
            let result = sql::query(&database.name, "SELECT 1", &[]);
            let failure = match result {
                Ok(rows) if rows.rows.is_empty() => "SELECT 1 returned no row".to_owned(),
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            log::error(&format!("database {:?}: {failure}", database.name));
            return Err(NotReady::new(NOT_READY));
        }
        Ok(())
    }
}

probehost_sdk::export_probe!(Database);
