//! `wait4db`: wait until `SELECT 1` has kept succeeding for a stability window
//! (and, with `--migrated` or `--primary`, those checks with it).
//!
//! The original's messages and exit codes, without its flaws: a connection that
//! drops is replaced on the next attempt (and the window starts again), and no
//! attempt can run past the overall timeout, so the command ends at most one
//! interval after it.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::DatabaseConfig;
use crate::db::Connection;
use crate::readiness::{Evaluator, Verdict};

/// Validated `wait4db` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wait4db {
    pub timeout: Duration,
    pub stable: Duration,
    pub interval: Duration,
}

impl Wait4db {
    /// The original's checks, in its order and with its messages.
    pub fn new(timeout: f64, stable: f64, interval: f64) -> Result<Wait4db, &'static str> {
        let positive = |secs: f64, message| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or(message)
        };
        Ok(Wait4db {
            timeout: positive(timeout, "Timeout must be greater than 0 seconds.")?,
            stable: positive(stable, "Stability timeout must be greater than 0 seconds.")?,
            interval: positive(interval, "Interval must be greater than 0 seconds.")?,
        })
    }
}

/// Why `wait4db` gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The database never answered for long enough.
    Database,
    /// It answered, but the last of the further checks (`--migrated`,
    /// `--primary`) did not pass, for this reason.
    Checks(String),
}

/// One failed attempt.
enum Failure {
    /// The connection or `SELECT 1` failed: reconnect next time.
    Database(String),
    /// The database answered, a further check did not pass.
    Checks(String),
}

/// Wait for `db`, and with `checks` (the probes of `--migrated` and
/// `--primary`) for them to pass too.
/// Progress goes to `out` (successes) and `err` (failures).
pub async fn wait4db(
    db: &DatabaseConfig,
    settings: Wait4db,
    checks: Option<&Arc<Evaluator>>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), NotReady> {
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let mut connection: Option<Connection> = None;
    let mut alive_since: Option<Instant> = None;
    let mut last_failure = NotReady::Database;
    loop {
        let attempt_started = Instant::now();
        let remaining = deadline.saturating_duration_since(attempt_started);
        if remaining.is_zero() {
            return Err(last_failure);
        }
        // Bounded by the connect timeout and by what is left of the overall timeout.
        let budget = db.connect_timeout.min(remaining);
        let result = match attempt(db, &mut connection, budget).await {
            Ok(()) => match checks {
                Some(evaluator) => match evaluator.evaluate(None).await {
                    Verdict::Ready => Ok(()),
                    Verdict::NotReady { message, .. } => Err(Failure::Checks(message)),
                },
                None => Ok(()),
            },
            Err(cause) => Err(Failure::Database(cause)),
        };
        match result {
            Ok(()) => {
                let since = *alive_since.get_or_insert(attempt_started);
                let alive = since.elapsed();
                let _ = writeln!(out, "Connection alive for > {}s", alive.as_secs());
                let _ = out.flush();
                if alive >= settings.stable {
                    if let Some(c) = connection.take() {
                        c.close().await;
                    }
                    return Ok(());
                }
            }
            Err(failure) => {
                // Whatever failed, the window starts again; a failed
                // connection is replaced.
                alive_since = None;
                let cause = match failure {
                    Failure::Database(cause) => {
                        connection = None;
                        last_failure = NotReady::Database;
                        cause
                    }
                    Failure::Checks(cause) => {
                        last_failure = NotReady::Checks(cause.clone());
                        cause
                    }
                };
                let elapsed = started.elapsed().as_secs_f64();
                let _ = writeln!(
                    err,
                    "Database not ready: (cause: {cause}, elapsed: {elapsed:.1}s"
                );
                let _ = err.flush();
            }
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// `SELECT 1` on the kept connection, connecting first if there is none.
async fn attempt(
    db: &DatabaseConfig,
    connection: &mut Option<Connection>,
    budget: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    if connection.is_none() {
        *connection = Some(
            db.options
                .connect(budget)
                .await
                .map_err(|e| one_line(&e.to_string()))?,
        );
    }
    let left = budget
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let conn = connection.as_mut().expect("connected above");
    conn.select_one(left.min(db.query_timeout))
        .await
        .map_err(|e| one_line(&e.to_string()))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_positive_values_are_refused_with_the_originals_messages() {
        assert_eq!(
            Wait4db::new(0.0, 5.0, 1.0),
            Err("Timeout must be greater than 0 seconds.")
        );
        assert_eq!(
            Wait4db::new(180.0, -1.0, 1.0),
            Err("Stability timeout must be greater than 0 seconds.")
        );
        assert_eq!(
            Wait4db::new(180.0, 5.0, 0.0),
            Err("Interval must be greater than 0 seconds.")
        );
        assert_eq!(
            Wait4db::new(-1.0, -1.0, -1.0),
            Err("Timeout must be greater than 0 seconds.")
        );
        assert_eq!(
            Wait4db::new(f64::NAN, 5.0, 1.0),
            Err("Timeout must be greater than 0 seconds.")
        );
        let ok = Wait4db::new(180.0, 5.0, 0.5).unwrap();
        assert_eq!(ok.interval, Duration::from_millis(500));
    }
}
