//! Databases: one lazily connecting sqlx pool per `[databases.NAME]`, and the
//! bounded queries the `sql` capability and the jobs run on them.
//!
//! This module owns connection handling and the mapping of rows to plain
//! [`Value`]s. It knows nothing of probes, grants or wasm.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Column, ConnectOptions as _, Connection as _, Row, ValueRef};
use tokio::time::Instant;

/// How long an unused pooled connection is kept: one older than this is closed
/// instead of used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections per database, in use or idle. Readiness checks are short and
/// rare; a small pool keeps a probe storm from becoming a connection storm.
const MAX_CONNECTIONS: usize = 2;

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
        match tokio::time::timeout(timeout, self.open()).await {
            Ok(result) => result.map_err(DbError::connecting),
            Err(_) => Err(DbError::Timeout(timeout)),
        }
    }

    /// Connect once: no retry, no deadline of its own.
    async fn open(&self) -> Result<Connection, sqlx::Error> {
        Ok(match self {
            ConnectOptions::Postgres(o) => Connection::Postgres(o.connect().await?),
            ConnectOptions::Mysql(o) => Connection::Mysql(o.connect().await?),
            ConnectOptions::Sqlite(o) => Connection::Sqlite(o.connect().await?),
        })
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

    /// Run `statement` with `params` and return its rows (no deadline of its own).
    async fn fetch(&mut self, statement: &str, params: &[Value]) -> Result<Rows, DbError> {
        match self {
            Connection::Postgres(c) => fetch_rows!(&mut *c, statement, params),
            Connection::Mysql(c) => fetch_rows!(&mut *c, statement, params),
            Connection::Sqlite(c) => fetch_rows!(&mut *c, statement, params),
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
    /// An error while connecting, whatever its kind: a refusal, a reset, a name
    /// that does not resolve, or the server's own answer (authentication, an
    /// unknown database, TLS required). A refusal is named as such, not as the
    /// I/O error sqlx wraps it in.
    pub(crate) fn connecting(e: sqlx::Error) -> DbError {
        use std::io::ErrorKind;
        let reason = match &e {
            sqlx::Error::Io(io) => match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                ErrorKind::ConnectionReset => "connection reset".to_owned(),
                ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
                ErrorKind::UnexpectedEof => "connection closed by the server".to_owned(),
                _ => io.to_string(),
            },
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        DbError::Connection(reason)
    }

    /// Whether the connection that returned this error is still usable: the
    /// server answered the query with an error of its own.
    fn leaves_connection_usable(&self) -> bool {
        matches!(self, DbError::Query(_))
    }

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

/// A configured database with its pool of idle connections.
///
/// The pool is probehost's own rather than sqlx's: sqlx's pool retries a
/// refused connect until its acquire timeout, so a database that is down would
/// look like one that hangs (`timed out` after the whole deadline, where the
/// truth is `connection refused` at once), and it pings every connection before
/// lending it, a round trip per check. Here a check takes the newest idle
/// connection; if that one fails without an answer from the server (it was
/// closed while idle), the check carries on with the next, then with a fresh
/// connection whose failure is reported as it is.
#[derive(Debug)]
pub struct Database {
    name: String,
    options: ConnectOptions,
    idle: Mutex<Vec<Idle>>,
    /// One per connection a query may hold: a check beyond them waits its turn
    /// within its own deadline.
    permits: tokio::sync::Semaphore,
    connect_timeout: Duration,
    query_timeout: Duration,
    /// SQLite with `require = "primary"`: every query first checks that the
    /// file and its directory can be written, which SQLite itself only finds
    /// out at the first write.
    writable_file: bool,
}

#[derive(Debug)]
struct Idle {
    connection: Connection,
    since: Instant,
}

impl Database {
    /// A database whose connections are opened when a query first needs one.
    pub fn new(
        name: &str,
        options: &ConnectOptions,
        connect_timeout: Duration,
        query_timeout: Duration,
    ) -> Database {
        Database {
            name: name.to_owned(),
            options: options.clone(),
            idle: Mutex::new(Vec::with_capacity(MAX_CONNECTIONS)),
            permits: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
            connect_timeout,
            query_timeout,
            writable_file: false,
        }
    }

    /// For `require = "primary"` on SQLite: a file that cannot be written (a
    /// read-only mount, a read-only file) fails every query with a
    /// `read-only:` error, so `builtin:database` can say so.
    pub fn requiring_writable_file(mut self) -> Database {
        self.writable_file = self.options.sqlite_file().is_some();
        self
    }

    /// Why the SQLite file cannot be written, if it cannot.
    fn unwritable(&self) -> Option<String> {
        use rustix::fs::{Access, access};
        let file = self.options.sqlite_file()?;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        // The directory too: SQLite writes its journal beside the file.
        let checks = [Some(file).filter(|f| f.exists()), Some(dir)];
        checks.into_iter().flatten().find_map(|path| {
            access(path, Access::WRITE_OK)
                .err()
                .map(|e| format!("read-only: {} is not writable ({e})", path.display()))
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backend(&self) -> Backend {
        self.options.backend()
    }

    /// Run `statement` with `params` and return its rows. The whole call — getting
    /// a connection and running the query — ends within `budget`, and never takes
    /// longer than the database's own connect plus query timeouts. A connection
    /// that cannot be made fails at once with the reason (`connection refused`),
    /// not at the deadline.
    pub async fn query(
        &self,
        statement: &str,
        params: &[Value],
        budget: Duration,
    ) -> Result<Rows, DbError> {
        if self.writable_file
            && let Some(reason) = self.unwritable()
        {
            return Err(DbError::Query(reason));
        }
        let limit = budget.min(self.connect_timeout + self.query_timeout);
        let deadline = Instant::now() + limit;
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, self.permits.acquire()).await
        else {
            return Err(DbError::Timeout(limit));
        };
        while let Some(connection) = self.take_idle() {
            match self
                .run(connection, statement, params, deadline, limit)
                .await
            {
                // Closed while idle (a restarted server, a proxy's idle cut):
                // nothing was answered, so the next connection may try.
                Err(DbError::Connection(_)) => continue,
                result => return result,
            }
        }
        // Connecting ends at the connect timeout or the deadline, whichever
        // comes first, and says which it was.
        let (connect_deadline, connect_limit) =
            match Instant::now().checked_add(self.connect_timeout) {
                Some(at) if at < deadline => (at, self.connect_timeout),
                _ => (deadline, limit),
            };
        let connection = match tokio::time::timeout_at(connect_deadline, self.options.open()).await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(DbError::connecting(e)),
            Err(_) => return Err(DbError::Timeout(connect_limit)),
        };
        self.run(connection, statement, params, deadline, limit)
            .await
    }

    /// Run the query on `connection` by `deadline`, and keep the connection if
    /// it is known to be in a good state afterwards. One whose query timed out
    /// is in an unknown state and is dropped, closing its socket.
    async fn run(
        &self,
        mut connection: Connection,
        statement: &str,
        params: &[Value],
        deadline: Instant,
        limit: Duration,
    ) -> Result<Rows, DbError> {
        match tokio::time::timeout_at(deadline, connection.fetch(statement, params)).await {
            Err(_) => Err(DbError::Timeout(limit)),
            Ok(result) => {
                if result
                    .as_ref()
                    .map_or_else(DbError::leaves_connection_usable, |_| true)
                {
                    self.put_idle(connection);
                }
                result
            }
        }
    }

    /// The most recently used idle connection that is not too old.
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.connection);
            }
        }
        None
    }

    fn put_idle(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_CONNECTIONS {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Close every idle connection.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for entry in idle {
            entry.connection.close().await;
        }
    }
}

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
        database("sqlite::memory:")
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

    /// A loopback port with nothing listening on it.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    fn database(url: &str) -> Database {
        let options = ConnectOptions::parse(url).unwrap();
        Database::new(
            "db",
            &options,
            Duration::from_secs(3),
            Duration::from_secs(5),
        )
    }

    /// A server that accepts and never answers: its port, how many
    /// connections it accepted, and the task holding them.
    async fn silent_server() -> (
        u16,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        (port, accepted, held)
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_at_once_as_refused() {
        let port = closed_port();
        for url in [
            format!("postgres://postgres@127.0.0.1:{port}/test"),
            format!("mysql://root@127.0.0.1:{port}/test"),
        ] {
            // A budget far beyond what the answer takes: a retrying pool would
            // spend all of it and report a timeout.
            let err = database(&url)
                .query("SELECT 1", &[], Duration::from_secs(30))
                .await
                .unwrap_err();
            assert_eq!(
                err,
                DbError::Connection("connection refused".into()),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_times_out_at_the_budget() {
        let (port, _, held) = silent_server().await;
        for url in [
            format!("postgres://postgres@127.0.0.1:{port}/test"),
            format!("mysql://root@127.0.0.1:{port}/test"),
        ] {
            let err = database(&url)
                .query("SELECT 1", &[], Duration::from_millis(300))
                .await
                .unwrap_err();
            assert_eq!(err, DbError::Timeout(Duration::from_millis(300)), "{url}");
        }
        held.abort();
    }

    #[tokio::test]
    async fn a_storm_of_checks_opens_no_more_than_the_pools_connections() {
        let (port, accepted, held) = silent_server().await;
        let db = std::sync::Arc::new(database(&format!(
            "postgres://postgres@127.0.0.1:{port}/test"
        )));
        let check = |budget| {
            let db = db.clone();
            tokio::spawn(async move { db.query("SELECT 1", &[], budget).await })
        };
        // The pool's connections, held by checks stuck on the silent server...
        let holding: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| check(Duration::from_secs(3)))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...and a storm that ends, within its deadline, without connecting.
        let storm: Vec<_> = (0..6).map(|_| check(Duration::from_millis(300))).collect();
        for check in storm {
            assert!(matches!(check.await.unwrap(), Err(DbError::Timeout(_))));
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            MAX_CONNECTIONS
        );
        for check in holding {
            assert!(matches!(check.await.unwrap(), Err(DbError::Timeout(_))));
        }
        held.abort();
    }

    #[tokio::test]
    async fn a_connection_is_reused_and_a_query_error_keeps_it() {
        // An in-memory SQLite database lives as long as its connection: the
        // table is only there again if the same connection is lent again.
        let db = in_memory();
        db.query("CREATE TABLE t (x INTEGER)", &[], Duration::from_secs(1))
            .await
            .unwrap();
        let err = db
            .query("SELECT * FROM missing_table", &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::Query(_)), "{err}");
        let rows = db
            .query("SELECT count(*) FROM t", &[], Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(rows.rows, [vec![Value::Integer(0)]]);
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
