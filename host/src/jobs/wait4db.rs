//! `wait4db`: wait until `SELECT 1` has kept succeeding for a stability window.
//!
//! The original's messages and exit codes, without its flaws: a connection that
//! drops is replaced on the next attempt (and the window starts again), and no
//! attempt can run past the overall timeout, so the command ends at most one
//! interval after it.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::config::DatabaseConfig;
use crate::db::Connection;

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

/// Wait for `db`. Progress goes to `out` (successes) and `err` (failures).
/// Returns whether the database became stable before the timeout.
pub async fn wait4db(
    db: &DatabaseConfig,
    settings: Wait4db,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> bool {
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let mut connection: Option<Connection> = None;
    let mut alive_since: Option<Instant> = None;
    loop {
        let attempt_started = Instant::now();
        let remaining = deadline.saturating_duration_since(attempt_started);
        if remaining.is_zero() {
            return false;
        }
        // Bounded by the connect timeout and by what is left of the overall timeout.
        let budget = db.connect_timeout.min(remaining);
        match attempt(db, &mut connection, budget).await {
            Ok(()) => {
                let since = *alive_since.get_or_insert(attempt_started);
                let alive = since.elapsed();
                let _ = writeln!(out, "Connection alive for > {}s", alive.as_secs());
                let _ = out.flush();
                if alive >= settings.stable {
                    if let Some(c) = connection.take() {
                        c.close().await;
                    }
                    return true;
                }
            }
            Err(cause) => {
                // Whatever failed, start over with a fresh connection and window.
                connection = None;
                alive_since = None;
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
