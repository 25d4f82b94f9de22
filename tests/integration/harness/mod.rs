//! What the integration tests share: the services they need, the probehost
//! processes they start, a small HTTP client, a fault-injecting TCP proxy and
//! private memcached and Redis servers.
//!
//! Everything talks to loopback only, and every wait is bounded.

#![allow(dead_code, unreachable_pub, unused_imports)]

mod databases;
pub mod django;
mod fault;
mod http;
mod private;
mod private_db;
mod process;
mod python;
mod upstream;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

pub use databases::{FreshDatabase, Kind, PgSession, settle};
pub use fault::{FaultProxy, Mode};
pub use http::{Response, get, get_over_socket, get_with, request, try_get};
pub use private::{Memcached, PrivateServer};
pub use private_db::{PostgresPair, ReadOnlyMariaDb};
pub use process::{
    Background, Output, Server, has_ended, probehost, process_state, run, zombies_of,
};
pub use python::python_redis_probe;
pub use upstream::Upstream;

/// The `probehost` binary under test.
pub const PROBEHOST: &str = env!("CARGO_BIN_EXE_probehost");
/// The configurable test probe component (see `tests/components/test-probe`).
pub const TEST_PROBE: &str = env!("PROBEHOST_TEST_PROBE");
/// A WASI command component that is not a probe.
pub const NOT_A_PROBE: &str = env!("PROBEHOST_TEST_NOT_A_PROBE");
/// The Redis probe of `plugins/redis`.
pub const REDIS_PROBE: &str = env!("PROBEHOST_PLUGIN_REDIS");
/// The HTTP-dependency probe of `plugins/http`.
pub const HTTP_PROBE: &str = env!("PROBEHOST_PLUGIN_HTTP");

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A service the tests need, and how to start it when it is not running.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    Postgres,
    MariaDb,
    Memcached,
    Redis,
}

impl Service {
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Service::Postgres => (
                "PostgreSQL",
                "127.0.0.1:5432",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            ),
            Service::MariaDb => (
                "MariaDB",
                "127.0.0.1:3306",
                "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
            ),
            Service::Memcached => (
                "memcached",
                "127.0.0.1:11211",
                "scripts/setup.sh (or: memcached -d -u nobody -l 127.0.0.1 -p 11211)",
            ),
            Service::Redis => (
                "Redis",
                "127.0.0.1:6379",
                "scripts/setup.sh (or: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '')",
            ),
        }
    }

    pub fn address(self) -> SocketAddr {
        self.describe().1.parse().expect("valid service address")
    }
}

/// Fail the test, naming the service, if it is not reachable. Tests never skip.
pub fn require(service: Service) {
    let (name, address, start) = service.describe();
    let reachable =
        TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(2)).is_ok();
    assert!(
        reachable,
        "{name} is not reachable at {address}; this test needs it. Start it with: {start}"
    );
}

/// The test database on PostgreSQL at `address` (the server itself or a proxy).
pub fn postgres_url(address: SocketAddr) -> String {
    format!("postgres://postgres@{address}/test")
}

/// `/readyz` of `server` answers `expected` (status, body); the answer, for
/// more checks. On a mismatch, the server's log is shown.
pub fn assert_answer(server: &Server, expected: (u16, &str)) -> Response {
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        expected,
        "log:\n{}",
        server.log()
    );
    response
}

/// A loopback port nothing listens on.
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A temporary directory with a config file, removed when dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `probehost.toml` with `text` and return its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("probehost.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The compiled-component cache shared by the tests (so each component is
/// compiled once per run, not once per test).
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache")
}

/// TOML for a server on a free loopback port with the shared component cache.
pub fn server_section() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\ncache_dir = {:?}\n\n",
        shared_cache_dir().display().to_string()
    )
}

/// Wait until `check` holds, polling every 20 ms, for at most `limit`.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `concurrent` readiness checks in the background, calling `/livez` while
/// they run: each check must fail with `body` within `timeout_ms` plus a margin for a shared
/// machine, and every `/livez` must answer at once.
pub fn assert_not_ready_in_time_while_live(
    server: &Server,
    concurrent: usize,
    timeout_ms: u64,
    body: &str,
) {
    let address = server.address;
    let checks: Vec<_> = (0..concurrent)
        .map(|_| thread::spawn(move || get(address, "/readyz")))
        .collect();
    let mut livez = Vec::new();
    thread::sleep(Duration::from_millis(50));
    while !checks.iter().all(|c| c.is_finished()) && livez.len() < 50 {
        let response = server.get("/livez");
        assert_eq!((response.status, response.body.as_str()), (200, "Ok"));
        livez.push(response.elapsed);
        thread::sleep(Duration::from_millis(20));
    }
    let limit = Duration::from_millis(timeout_ms + 400);
    for check in checks {
        let ready = check.join().unwrap();
        assert_eq!((ready.status, ready.body.as_str()), (503, body));
        assert!(ready.elapsed < limit, "readyz took {:?}", ready.elapsed);
    }
    assert!(
        !livez.is_empty(),
        "no /livez request ran during the readiness check"
    );
    let slowest = livez.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_millis(200),
        "a /livez answer took {slowest:?} during readiness"
    );
}

/// Send `raw` bytes on a new connection and read until the server closes it or
/// `limit` passes; returns what was read (lossy UTF-8).
pub fn raw_exchange(address: SocketAddr, raw: &[u8], limit: Duration) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `probehost` in a mount namespace of its own where `dir` is mounted
/// read-only (root writes a file whatever its mode; a read-only mount it may
/// not). Arguments follow.
pub fn probehost_with_read_only(dir: &Path) -> std::process::Command {
    let dir = dir.display().to_string();
    let script =
        format!("mount --bind {dir} {dir} && mount -o remount,ro,bind {dir} {dir} && exec \"$@\"");
    let mut command = std::process::Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(PROBEHOST)
        .env_remove("PROBEHOST_CONFIG");
    command
}
