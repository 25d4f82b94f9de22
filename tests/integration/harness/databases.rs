//! Databases of their own for tests that change schemas: a fresh database on the
//! shared PostgreSQL or MariaDB server (dropped afterwards), or a SQLite file.

use std::time::Duration;

use sqlx::Connection as _;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::{Service, require};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
    Sqlite,
}

pub struct FreshDatabase {
    pub kind: Kind,
    pub url: String,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Evaluate `$body` with `$c` a fresh connection to `$db`, whatever its kind.
macro_rules! on_connection {
    ($db:expr, $c:ident => $body:expr) => {
        block_on(async {
            match $db.kind {
                Kind::Postgres => {
                    let mut $c = PgConnection::connect(&$db.url).await.unwrap();
                    $body
                }
                Kind::MariaDb => {
                    let mut $c = MySqlConnection::connect(&$db.url).await.unwrap();
                    $body
                }
                Kind::Sqlite => {
                    let mut $c = SqliteConnection::connect(&$db.url).await.unwrap();
                    $body
                }
            }
        })
    };
}

const POSTGRES_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MARIADB_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

impl FreshDatabase {
    pub fn new(kind: Kind) -> FreshDatabase {
        let name = format!("probehost_test_{:016x}", rand::random::<u64>());
        match kind {
            Kind::Postgres => {
                require(Service::Postgres);
                block_on(async {
                    let mut admin = PgConnection::connect(POSTGRES_ADMIN).await.unwrap();
                    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                });
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                FreshDatabase {
                    kind,
                    url,
                    name,
                    _dir: None,
                }
            }
            Kind::MariaDb => {
                require(Service::MariaDb);
                block_on(async {
                    let mut admin = MySqlConnection::connect(MARIADB_ADMIN).await.unwrap();
                    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                });
                let url = format!("mysql://root@127.0.0.1:3306/{name}");
                FreshDatabase {
                    kind,
                    url,
                    name,
                    _dir: None,
                }
            }
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("db.sqlite3").display());
                FreshDatabase {
                    kind,
                    url,
                    name,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// The first column of the first row of `sql`, as an integer.
    pub fn scalar(&self, sql: &str) -> i64 {
        on_connection!(self, c => sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut c).await.unwrap())
    }

    /// Run `sql` (one or more statements), which must succeed.
    pub fn execute(&self, sql: &str) {
        on_connection!(self, c => {
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let name = &self.name;
        let _ = std::panic::catch_unwind(|| match self.kind {
            Kind::Postgres => block_on(async {
                let mut admin = PgConnection::connect(POSTGRES_ADMIN).await.unwrap();
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }),
            Kind::MariaDb => block_on(async {
                let mut admin = MySqlConnection::connect(MARIADB_ADMIN).await.unwrap();
                let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut admin)
                    .await;
            }),
            Kind::Sqlite => {}
        });
    }
}

/// A PostgreSQL session of the test's own (to hold advisory locks).
pub struct PgSession {
    runtime: tokio::runtime::Runtime,
    conn: PgConnection,
}

impl PgSession {
    pub fn connect(url: &str) -> PgSession {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = runtime.block_on(PgConnection::connect(url)).unwrap();
        PgSession { runtime, conn }
    }

    pub fn scalar(&mut self, sql: &str) -> i64 {
        let conn = &mut self.conn;
        self.runtime
            .block_on(async { sqlx::query_scalar::<_, i64>(sql).fetch_one(conn).await })
            .unwrap()
    }

    pub fn execute(&mut self, sql: &str) {
        let conn = &mut self.conn;
        self.runtime
            .block_on(async { sqlx::raw_sql(sql).execute(conn).await })
            .unwrap();
    }

    /// Advisory locks with `objid` held by anyone in this database, as
    /// `(classid, objid, objsubid)`.
    pub fn advisory_locks(&mut self, objid: i64) -> Vec<(i64, i64, i64)> {
        let conn = &mut self.conn;
        self.runtime
            .block_on(async {
                sqlx::query_as::<_, (i64, i64, i64)>(
                    "SELECT classid::bigint, objid::bigint, objsubid::bigint FROM pg_locks \
                     WHERE locktype = 'advisory' AND granted AND objid::bigint = $1 \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .bind(objid)
                .fetch_all(conn)
                .await
            })
            .unwrap()
    }
}

/// Wait a moment for the server to notice closed sessions.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}
