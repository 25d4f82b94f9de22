//! The migration lock `lockedmigrate` holds while the migration runs.
//!
//! - PostgreSQL: a session-level `pg_advisory_lock(id)` with the single bigint
//!   key, the same lock the original takes, so Python replicas running it and
//!   probehost exclude each other (`pg_locks`: `classid = id >> 32`,
//!   `objid = id & 0xffffffff`, `objsubid = 1`).
//! - MySQL/MariaDB: `GET_LOCK` on a name made of the database name and the id.
//! - SQLite: an exclusive `flock` on a file beside the database.
//!
//! The lock lives on a connection of its own; if that connection is lost, so is
//! the lock, which [`MigrationLock::check`] reports.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::Row as _;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;

use crate::config::DatabaseConfig;
use crate::db::{Connection, DbError};

/// How often a waiter says that it is still waiting.
pub const WAIT_REPORT: Duration = Duration::from_secs(3);
/// How often a SQLite waiter tries the file lock again.
const FILE_LOCK_POLL: Duration = Duration::from_millis(100);
/// Longest name MySQL accepts for `GET_LOCK`.
const MYSQL_LOCK_NAME_MAX: usize = 64;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("could not connect to the database: {0}")]
    Connect(DbError),
    #[error("could not acquire migration lock {id} within {waited:.1}s: {holder}")]
    Timeout {
        id: i64,
        waited: f64,
        holder: String,
    },
    #[error("could not take the migration lock: {0}")]
    Failed(String),
}

/// A held migration lock.
///
/// `sockets` are duplicates of the lock connection's socket: handed to the
/// warden ([`crate::warden`]), they keep the server's session, and with it
/// the lock, alive after probehost dies until the command's whole process
/// group is gone.
#[derive(Debug)]
pub enum MigrationLock {
    Postgres {
        conn: PgConnection,
        id: i64,
        sockets: Vec<OwnedFd>,
    },
    Mysql {
        conn: MySqlConnection,
        name: String,
        sockets: Vec<OwnedFd>,
    },
    Sqlite {
        file: File,
        path: PathBuf,
    },
}

impl MigrationLock {
    /// Wait for lock `id` on `db`, for at most `timeout` (forever without one),
    /// calling `waiting` every [`WAIT_REPORT`] with who holds it.
    pub async fn acquire(
        db: &DatabaseConfig,
        id: i64,
        timeout: Option<Duration>,
        waiting: &mut dyn FnMut(Duration, &str),
    ) -> Result<MigrationLock, LockError> {
        if let Some(path) = db.options.sqlite_file() {
            return acquire_file(&lock_file_path(path, id), id, timeout, waiting).await;
        }
        let before = open_sockets();
        let conn = db
            .options
            .connect(db.connect_timeout)
            .await
            .map_err(LockError::Connect)?;
        let sockets = duplicate_sockets_since(&before);
        match conn {
            Connection::Postgres(conn) => {
                acquire_postgres(db, conn, id, timeout, waiting, sockets).await
            }
            Connection::Mysql(conn) => acquire_mysql(db, conn, id, timeout, waiting, sockets).await,
            Connection::Sqlite(_) => Err(LockError::Failed(
                "an in-memory SQLite database cannot be locked across processes".into(),
            )),
        }
    }

    /// What keeps the lock held in another process: the lock connection's
    /// socket, or the locked file.
    pub fn held_fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            MigrationLock::Postgres { sockets, .. } | MigrationLock::Mysql { sockets, .. } => {
                sockets.iter().map(AsFd::as_fd).collect()
            }
            MigrationLock::Sqlite { file, .. } => vec![file.as_fd()],
        }
    }

    /// Whether the lock is still held: its connection still answers.
    pub async fn check(&mut self, timeout: Duration) -> Result<(), String> {
        let query = async {
            match self {
                MigrationLock::Postgres { conn, .. } => {
                    sqlx::query("SELECT 1").execute(conn).await.map(drop)
                }
                MigrationLock::Mysql { conn, .. } => {
                    sqlx::query("SELECT 1").execute(conn).await.map(drop)
                }
                // The kernel holds a file lock for as long as this process lives.
                MigrationLock::Sqlite { .. } => Ok(()),
            }
        };
        match tokio::time::timeout(timeout, query).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Release the lock and close its connection.
    pub async fn release(self) {
        use sqlx::Connection as _;
        match self {
            MigrationLock::Postgres { mut conn, id, .. } => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(id)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
            MigrationLock::Mysql { mut conn, name, .. } => {
                let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
                    .bind(&name)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
            MigrationLock::Sqlite { file, path: _ } => {
                let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock);
            }
        }
    }
}

// ----- the lock connection's socket -----

/// The socket descriptors this process has open, by number.
fn open_sockets() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:["))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Duplicates of the sockets opened since `before`: the connection just made
/// (a job runs on one thread, so nothing else opens one meanwhile).
fn duplicate_sockets_since(before: &[i32]) -> Vec<OwnedFd> {
    open_sockets()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .filter_map(|fd| {
            #[allow(unsafe_code)]
            // SAFETY: `fd` was listed as open in this process a moment ago
            // and nothing on this thread closes it before the duplicate is
            // made; the borrow does not outlive this expression.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_dupfd_cloexec(borrowed, 3).ok()
        })
        .collect()
}

// ----- PostgreSQL -----

async fn acquire_postgres(
    db: &DatabaseConfig,
    mut conn: PgConnection,
    id: i64,
    timeout: Option<Duration>,
    waiting: &mut dyn FnMut(Duration, &str),
    sockets: Vec<OwnedFd>,
) -> Result<MigrationLock, LockError> {
    // Let the server give up the wait at the deadline, so no abandoned session
    // keeps queueing for the lock after this process stops waiting; and notice a
    // vanished client while waiting (PostgreSQL 14+, ignored before).
    if let Some(timeout) = timeout {
        let ms = timeout.as_millis().max(1);
        sqlx::query(&format!("SET lock_timeout = {ms}"))
            .execute(&mut conn)
            .await
            .map_err(|e| LockError::Failed(e.to_string()))?;
    }
    let _ = sqlx::query("SET client_connection_check_interval = 1000")
        .execute(&mut conn)
        .await;

    let started = Instant::now();
    let result = {
        let lock = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(id)
            .execute(&mut conn);
        tokio::pin!(lock);
        let mut report =
            tokio::time::interval_at(tokio::time::Instant::now() + WAIT_REPORT, WAIT_REPORT);
        loop {
            tokio::select! {
                result = &mut lock => break result,
                _ = report.tick() => {
                    let holder = postgres_holder(db, id).await;
                    waiting(started.elapsed(), &holder);
                }
            }
        }
    };
    match result {
        Ok(_) => {
            if timeout.is_some() {
                let _ = sqlx::query("SET lock_timeout = 0").execute(&mut conn).await;
            }
            Ok(MigrationLock::Postgres { conn, id, sockets })
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            Err(LockError::Timeout {
                id,
                waited: started.elapsed().as_secs_f64(),
                holder: postgres_holder(db, id).await,
            })
        }
        Err(e) => Err(LockError::Failed(e.to_string())),
    }
}

/// Who holds advisory lock `id` in this database, asked on a second connection.
async fn postgres_holder(db: &DatabaseConfig, id: i64) -> String {
    let Ok(Connection::Postgres(mut conn)) = db.options.connect(db.connect_timeout).await else {
        return "holder unknown (no second connection)".into();
    };
    let key = id as u64;
    let row = sqlx::query(
        "SELECT l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local') \
         FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind((key >> 32) as i64)
    .bind((key & 0xffff_ffff) as i64)
    .fetch_optional(&mut conn)
    .await;
    let _ = sqlx::Connection::close(conn).await;
    match row {
        Ok(Some(row)) => {
            let pid: i32 = row.get(0);
            let application: String = row.get(1);
            let client: String = row.get(2);
            let application = if application.is_empty() {
                String::new()
            } else {
                format!(", application {application:?}")
            };
            format!("held by PostgreSQL pid {pid} (client {client}{application})")
        }
        Ok(None) => "no holder now".into(),
        Err(e) => format!("holder unknown ({e})"),
    }
}

// ----- MySQL / MariaDB -----

/// `GET_LOCK` names are server-wide: scope them to the database.
pub fn mysql_lock_name(database: &str, id: i64) -> String {
    let name = format!("lockedmigrate:{database}:{id}");
    if name.len() <= MYSQL_LOCK_NAME_MAX {
        return name;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("lockedmigrate:{hex}:{id}")
}

async fn acquire_mysql(
    db: &DatabaseConfig,
    mut conn: MySqlConnection,
    id: i64,
    timeout: Option<Duration>,
    waiting: &mut dyn FnMut(Duration, &str),
    sockets: Vec<OwnedFd>,
) -> Result<MigrationLock, LockError> {
    let name = mysql_lock_name(db.options.database_name().unwrap_or(""), id);
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    loop {
        // Wait in slices so the waiter can report, and stop at the deadline.
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_REPORT),
            None => WAIT_REPORT,
        };
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&name)
            .bind(slice.as_secs_f64())
            .fetch_one(&mut conn)
            .await
            .map_err(|e| LockError::Failed(e.to_string()))?;
        match got {
            Some(1) => {
                return Ok(MigrationLock::Mysql {
                    conn,
                    name,
                    sockets,
                });
            }
            Some(_) => {}
            None => return Err(LockError::Failed(format!("GET_LOCK({name:?}) failed"))),
        }
        let holder = mysql_holder(&mut conn, &name).await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(LockError::Timeout {
                id,
                waited: started.elapsed().as_secs_f64(),
                holder,
            });
        }
        waiting(started.elapsed(), &holder);
    }
}

async fn mysql_holder(conn: &mut MySqlConnection, name: &str) -> String {
    let holder: Result<Option<i64>, _> = sqlx::query_scalar("SELECT IS_USED_LOCK(?)")
        .bind(name)
        .fetch_one(&mut *conn)
        .await;
    let Ok(Some(connection)) = holder else {
        return "no holder now".into();
    };
    let who: Option<(String, String)> =
        sqlx::query_as("SELECT USER, HOST FROM information_schema.PROCESSLIST WHERE ID = ?")
            .bind(connection)
            .fetch_optional(&mut *conn)
            .await
            .ok()
            .flatten();
    match who {
        Some((user, host)) => format!("held by MySQL connection {connection} ({user}@{host})"),
        None => format!("held by MySQL connection {connection}"),
    }
}

// ----- SQLite -----

/// `<database file>.migrate-<id>.lock`, beside the database.
pub fn lock_file_path(database: &Path, id: i64) -> PathBuf {
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".migrate-{id}.lock"));
    database.with_file_name(name)
}

async fn acquire_file(
    path: &Path,
    id: i64,
    timeout: Option<Duration>,
    waiting: &mut dyn FnMut(Duration, &str),
) -> Result<MigrationLock, LockError> {
    use rustix::fs::{FlockOperation, flock};
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| LockError::Failed(format!("{}: {e}", path.display())))?;
    let started = Instant::now();
    let mut next_report = started + WAIT_REPORT;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(e) => return Err(LockError::Failed(format!("{}: {e}", path.display()))),
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            return Err(LockError::Timeout {
                id,
                waited: started.elapsed().as_secs_f64(),
                holder: file_holder(&mut file, path),
            });
        }
        if Instant::now() >= next_report {
            waiting(started.elapsed(), &file_holder(&mut file, path));
            next_report += WAIT_REPORT;
        }
        tokio::time::sleep(FILE_LOCK_POLL).await;
    }
    // Say who holds it, for waiters' messages.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.flush();
    Ok(MigrationLock::Sqlite {
        file,
        path: path.to_path_buf(),
    })
}

fn file_holder(file: &mut File, path: &Path) -> String {
    let mut pid = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut pid);
    match pid.trim() {
        "" => format!("held through {}", path.display()),
        pid => format!("held by process {pid} through {}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_lock_names_fit_and_stay_distinct() {
        assert_eq!(mysql_lock_name("app", 1000), "lockedmigrate:app:1000");
        let long = mysql_lock_name(&"d".repeat(80), 1000);
        assert!(long.len() <= MYSQL_LOCK_NAME_MAX, "{long}");
        assert_ne!(long, mysql_lock_name(&"e".repeat(80), 1000));
    }

    #[test]
    fn the_lock_file_sits_beside_the_database() {
        assert_eq!(
            lock_file_path(Path::new("/data/db.sqlite3"), 1000),
            Path::new("/data/db.sqlite3.migrate-1000.lock")
        );
    }
}
