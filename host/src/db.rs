//! Databases: one lazily connecting sqlx pool per `[databases.NAME]`, and the
//! bounded queries the `sql` capability and the jobs run on them.
//!
//! This module owns connection handling and the mapping of rows to plain
//! [`Value`]s. It knows nothing of probes, grants or wasm.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{Column, ConnectOptions as _, Connection as _, Row, ValueRef};

/// How long an unused pooled connection is kept before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pooled connections per database. Readiness checks are short and rare; a small
/// pool keeps a probe storm from becoming a connection storm.
const MAX_CONNECTIONS: u32 = 2;

/// The kind of server behind a database alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Mysql,
    Sqlite,
}

impl Backend {
    /// The backend a URL names by its scheme.
    pub fn from_url(url: &str) -> Result<Backend, String> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::Mysql),
            "sqlite" => Ok(Backend::Sqlite),
            "" => Err("not a URL (expected postgres://, mysql://, mariadb:// or sqlite:)".into()),
            other => Err(format!(
                "unsupported scheme `{other}` (expected postgres, postgresql, mysql, mariadb or sqlite)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Connection options parsed from a URL, ready to connect.
#[derive(Debug, Clone)]
pub enum ConnectOptions {
    Postgres(PgConnectOptions),
    Mysql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

impl ConnectOptions {
    /// Parse a database URL. `mariadb://` is accepted as `mysql://`. SQLite
    /// databases are created when missing, as Django does on first connect.
    ///
    /// sqlx's statement logging is moved down to debug: a readiness query or a
    /// lock wait that takes a while is expected here, not worth a warning.
    pub fn parse(url: &str) -> Result<ConnectOptions, String> {
        let parsed = match Backend::from_url(url)? {
            Backend::Postgres => {
                PgConnectOptions::from_str(url).map(|o| ConnectOptions::Postgres(quiet_logging(o)))
            }
            Backend::Mysql => {
                let url = url
                    .strip_prefix("mariadb:")
                    .map_or_else(|| url.to_owned(), |rest| format!("mysql:{rest}"));
                MySqlConnectOptions::from_str(&url).map(|o| ConnectOptions::Mysql(quiet_logging(o)))
            }
            Backend::Sqlite => SqliteConnectOptions::from_str(url)
                .map(|o| ConnectOptions::Sqlite(quiet_logging(o.create_if_missing(true)))),
        };
        parsed.map_err(|e| e.to_string())
    }

    pub fn backend(&self) -> Backend {
        match self {
            ConnectOptions::Postgres(_) => Backend::Postgres,
            ConnectOptions::Mysql(_) => Backend::Mysql,
            ConnectOptions::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Open one connection of its own (not pooled), within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Connection, DbError> {
        let connect = async {
            Ok(match self {
                ConnectOptions::Postgres(o) => Connection::Postgres(o.connect().await?),
                ConnectOptions::Mysql(o) => Connection::Mysql(o.connect().await?),
                ConnectOptions::Sqlite(o) => Connection::Sqlite(o.connect().await?),
            })
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result.map_err(DbError::from_sqlx),
            Err(_) => Err(DbError::Timeout(timeout)),
        }
    }

    /// The SQLite database file, if this is a file-backed SQLite database.
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        match self {
            ConnectOptions::Sqlite(o) => {
                let path = o.get_filename();
                (!path.as_os_str().is_empty() && path != std::path::Path::new(":memory:"))
                    .then_some(path)
            }
            _ => None,
        }
    }

    /// The database (schema) name for PostgreSQL and MySQL.
    pub fn database_name(&self) -> Option<&str> {
        match self {
            ConnectOptions::Postgres(o) => o.get_database(),
            ConnectOptions::Mysql(o) => o.get_database(),
            ConnectOptions::Sqlite(_) => None,
        }
    }
}

fn quiet_logging<O: sqlx::ConnectOptions>(options: O) -> O {
    options
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1))
}

/// A connection of its own, for the jobs (which need session state such as
/// advisory locks, so a pool would not do).
#[derive(Debug)]
pub enum Connection {
    Postgres(PgConnection),
    Mysql(MySqlConnection),
    Sqlite(SqliteConnection),
}

impl Connection {
    pub fn backend(&self) -> Backend {
        match self {
            Connection::Postgres(_) => Backend::Postgres,
            Connection::Mysql(_) => Backend::Mysql,
            Connection::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// `SELECT 1`, within `timeout`.
    pub async fn select_one(&mut self, timeout: Duration) -> Result<(), DbError> {
        let query = async {
            match self {
                Connection::Postgres(c) => sqlx::query("SELECT 1").execute(c).await.map(drop),
                Connection::Mysql(c) => sqlx::query("SELECT 1").execute(c).await.map(drop),
                Connection::Sqlite(c) => sqlx::query("SELECT 1").execute(c).await.map(drop),
            }
        };
        match tokio::time::timeout(timeout, query).await {
            Ok(result) => result.map_err(DbError::from_sqlx),
            Err(_) => Err(DbError::Timeout(timeout)),
        }
    }

    /// Close the connection politely (errors are irrelevant at that point).
    pub async fn close(self) {
        let _ = match self {
            Connection::Postgres(c) => c.close().await,
            Connection::Mysql(c) => c.close().await,
            Connection::Sqlite(c) => c.close().await,
        };
    }
}

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Rows returned by a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("could not connect: {0}")]
    Connection(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("query failed: {0}")]
    Query(String),
}

impl DbError {
    pub(crate) fn from_sqlx(e: sqlx::Error) -> DbError {
        match e {
            sqlx::Error::Database(db) => DbError::Query(db.to_string()),
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. } => DbError::Query(e.to_string()),
            other => DbError::Connection(other.to_string()),
        }
    }
}

/// A configured database with its pool.
#[derive(Debug)]
pub struct Database {
    name: String,
    backend: Backend,
    pool: Pool,
    connect_timeout: Duration,
    query_timeout: Duration,
}

#[derive(Debug)]
enum Pool {
    Postgres(PgPool),
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
}

impl Database {
    /// Create the database's pool without connecting. Must be called inside the
    /// tokio runtime that will run its queries.
    pub fn new(
        name: &str,
        options: &ConnectOptions,
        connect_timeout: Duration,
        query_timeout: Duration,
    ) -> Database {
        macro_rules! lazy_pool {
            ($opts:ty, $o:expr) => {
                <$opts>::new()
                    .min_connections(0)
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(connect_timeout)
                    .idle_timeout(IDLE_TIMEOUT)
                    .test_before_acquire(true)
                    .connect_lazy_with($o.clone())
            };
        }
        let pool = match options {
            ConnectOptions::Postgres(o) => Pool::Postgres(lazy_pool!(PgPoolOptions, o)),
            ConnectOptions::Mysql(o) => Pool::Mysql(lazy_pool!(MySqlPoolOptions, o)),
            ConnectOptions::Sqlite(o) => Pool::Sqlite(lazy_pool!(SqlitePoolOptions, o)),
        };
        Database {
            name: name.to_owned(),
            backend: options.backend(),
            pool,
            connect_timeout,
            query_timeout,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Run `statement` with `params` and return its rows. The whole call — getting
    /// a connection and running the query — ends within `budget`, and never takes
    /// longer than the database's own connect plus query timeouts.
    pub async fn query(
        &self,
        statement: &str,
        params: &[Value],
        budget: Duration,
    ) -> Result<Rows, DbError> {
        let limit = budget.min(self.connect_timeout + self.query_timeout);
        let deadline = tokio::time::Instant::now() + limit;
        match &self.pool {
            Pool::Postgres(p) => bounded_query!(p, statement, params, deadline, limit),
            Pool::Mysql(p) => bounded_query!(p, statement, params, deadline, limit),
            Pool::Sqlite(p) => bounded_query!(p, statement, params, deadline, limit),
        }
    }

    /// Close every pooled connection.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(p) => p.close().await,
            Pool::Mysql(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

/// Take a pooled connection and run the query on it, both by `deadline`. A
/// connection whose query timed out is in an unknown state: it is detached and
/// dropped (closing its socket) rather than returned to the pool, where sqlx
/// would check it with a ping that has no timeout and could hold a pool slot
/// for as long as the server stays silent.
macro_rules! bounded_query {
    ($pool:expr, $statement:expr, $params:expr, $deadline:expr, $limit:expr) => {{
        match tokio::time::timeout_at($deadline, $pool.acquire()).await {
            Err(_) => Err(DbError::Timeout($limit)),
            Ok(Err(e)) => Err(DbError::from_sqlx(e)),
            Ok(Ok(mut conn)) => {
                match tokio::time::timeout_at($deadline, async {
                    fetch_rows!(&mut *conn, $statement, $params)
                })
                .await
                {
                    Ok(rows) => rows,
                    Err(_) => {
                        drop(conn.detach());
                        Err(DbError::Timeout($limit))
                    }
                }
            }
        }
    }};
}
use bounded_query;

/// Bind parameters, fetch every row and decode each column into a [`Value`].
macro_rules! fetch_rows {
    ($executor:expr, $statement:expr, $params:expr) => {{
        let mut query = sqlx::query($statement);
        for param in $params {
            query = match param {
                Value::Null => query.bind(None::<i64>),
                Value::Boolean(b) => query.bind(*b),
                Value::Integer(i) => query.bind(*i),
                Value::Real(r) => query.bind(*r),
                Value::Text(t) => query.bind(t.clone()),
                Value::Blob(b) => query.bind(b.clone()),
            };
        }
        let fetched = query
            .fetch_all($executor)
            .await
            .map_err(DbError::from_sqlx)?;
        let mut rows = Rows::default();
        if let Some(first) = fetched.first() {
            rows.columns = first
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect();
        }
        for row in &fetched {
            let mut values = Vec::with_capacity(row.len());
            for index in 0..row.len() {
                values.push(decode_column!(row, index)?);
            }
            rows.rows.push(values);
        }
        Ok(rows)
    }};
}
use fetch_rows;

/// Decode one column by trying the value types in turn: sqlx refuses a type that
/// is not compatible with the column, so the first that decodes is the right one.
/// Integers come before booleans because SQLite stores booleans as integers.
macro_rules! decode_column {
    ($row:expr, $index:expr) => {{
        let row = $row;
        let index = $index;
        let raw = row.try_get_raw(index).map_err(DbError::from_sqlx)?;
        if raw.is_null() {
            Ok(Value::Null)
        } else if let Ok(v) = row.try_get::<i64, _>(index) {
            Ok(Value::Integer(v))
        } else if let Ok(v) = row.try_get::<i32, _>(index) {
            Ok(Value::Integer(v.into()))
        } else if let Ok(v) = row.try_get::<i16, _>(index) {
            Ok(Value::Integer(v.into()))
        } else if let Ok(v) = row.try_get::<bool, _>(index) {
            Ok(Value::Boolean(v))
        } else if let Ok(v) = row.try_get::<f64, _>(index) {
            Ok(Value::Real(v))
        } else if let Ok(v) = row.try_get::<f32, _>(index) {
            Ok(Value::Real(v.into()))
        } else if let Ok(v) = row.try_get::<String, _>(index) {
            Ok(Value::Text(v))
        } else if let Ok(v) = row.try_get::<Vec<u8>, _>(index) {
            Ok(Value::Blob(v))
        } else {
            let column = &row.columns()[index];
            Err(DbError::Query(format!(
                "column {:?} has type {} which probes cannot read; cast it to an integer or text",
                column.name(),
                sqlx::TypeInfo::name(column.type_info())
            )))
        }
    }};
}
use decode_column;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(Backend::from_url("postgres://h/db"), Ok(Backend::Postgres));
        assert_eq!(
            Backend::from_url("postgresql://h/db"),
            Ok(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("mysql://h/db"), Ok(Backend::Mysql));
        assert_eq!(Backend::from_url("mariadb://h/db"), Ok(Backend::Mysql));
        assert_eq!(
            Backend::from_url("sqlite://db.sqlite3"),
            Ok(Backend::Sqlite)
        );
        assert!(
            Backend::from_url("redis://h")
                .unwrap_err()
                .contains("`redis`")
        );
        assert!(Backend::from_url("nonsense").is_err());
    }

    #[test]
    fn mariadb_urls_parse_as_mysql() {
        let options = ConnectOptions::parse("mariadb://root@127.0.0.1:3306/test").unwrap();
        assert_eq!(options.backend(), Backend::Mysql);
    }

    #[test]
    fn bad_urls_are_rejected_with_the_reason() {
        assert!(ConnectOptions::parse("postgres://h:notaport/db").is_err());
    }

    fn in_memory() -> Database {
        let options = ConnectOptions::parse("sqlite::memory:").unwrap();
        Database::new(
            "mem",
            &options,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn sqlite_rows_decode_into_values() {
        let db = in_memory();
        let rows = db
            .query(
                "SELECT 1 AS one, 2.5 AS half, 'x' AS t, NULL AS n, x'00ff' AS b, ? AS p",
                &[Value::Text("param".into())],
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(rows.columns, ["one", "half", "t", "n", "b", "p"]);
        assert_eq!(
            rows.rows,
            [vec![
                Value::Integer(1),
                Value::Real(2.5),
                Value::Text("x".into()),
                Value::Null,
                Value::Blob(vec![0, 255]),
                Value::Text("param".into()),
            ]]
        );
    }

    #[tokio::test]
    async fn sqlite_errors_are_query_errors() {
        let db = in_memory();
        let err = db
            .query("SELECT * FROM missing_table", &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DbError::Query(m) if m.contains("missing_table")),
            "{err}"
        );
    }
}
