//! Database servers of a test's own, on free loopback ports, removed when
//! dropped: a PostgreSQL primary with a streaming standby (`pg_basebackup -R`),
//! and a MariaDB server started read-only. The servers run as their system
//! users (`postgres`, `mysql`), which refuse to run as root.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::eventually;

/// A loopback port free right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory the system user `user` owns.
fn owned_dir(user: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("chown")
        .arg(user)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "chown {user} {}", dir.path().display());
    dir
}

/// Run `program args` as `user`, which must succeed (`what` names it).
fn run_as(user: &str, program: &Path, args: &[&str], what: &str) {
    let output = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn listening(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

/// PostgreSQL's server programs (`initdb`, `pg_ctl`, `pg_basebackup`).
fn postgres_bin() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            versions
                .filter_map(|v| Some(v.ok()?.path().join("bin")))
                .filter(|bin| bin.join("pg_ctl").is_file())
                .max()
        });
    found.expect(
        "PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup) are not installed \
         under /usr/lib/postgresql/*/bin; install the postgresql package",
    )
}

/// A PostgreSQL primary and its streaming standby.
pub struct PostgresPair {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub primary: u16,
    pub standby: u16,
}

impl PostgresPair {
    pub fn start() -> PostgresPair {
        let bin = postgres_bin();
        let dir = owned_dir("postgres");
        let root = dir.path().to_str().unwrap().to_owned();
        let (primary, standby) = (free_port(), free_port());
        let pair = PostgresPair {
            dir,
            bin,
            primary,
            standby,
        };
        let primary_dir = format!("{root}/primary");
        let standby_dir = format!("{root}/standby");
        // Trust on loopback, replication included: a test server only.
        pair.run(
            "initdb",
            &["-D", &primary_dir, "-U", "postgres", "--auth=trust", "-N"],
        );
        pair.start_server(&primary_dir, primary, "primary");
        pair.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.to_string(),
                "-U",
                "postgres",
                "-D",
                &standby_dir,
                "-R",
                "-X",
                "stream",
            ],
        );
        pair.start_server(&standby_dir, standby, "standby");
        pair
    }

    fn run(&self, program: &str, args: &[&str]) {
        run_as("postgres", &self.bin.join(program), args, program);
    }

    fn start_server(&self, data: &str, port: u16, name: &str) {
        let root = self.dir.path().to_str().unwrap();
        let options = format!("-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off");
        let log = format!("{root}/{name}.log");
        self.run(
            "pg_ctl",
            &[
                "-D", data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        );
        assert!(
            listening(port),
            "the {name} PostgreSQL does not listen on {port}"
        );
    }

    /// Make the standby a primary (`pg_ctl promote`), as a failover does.
    pub fn promote_standby(&self) {
        let data = self.dir.path().join("standby");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-w", "promote"]);
    }

    pub fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }
}

impl Drop for PostgresPair {
    fn drop(&mut self) {
        let root = self.dir.path().to_str().unwrap().to_owned();
        for data in ["standby", "primary"] {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &format!("{root}/{data}"), "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A MariaDB server of its own, started with `--read-only`.
pub struct ReadOnlyMariaDb {
    dir: tempfile::TempDir,
    child: std::process::Child,
    pub port: u16,
}

impl ReadOnlyMariaDb {
    pub fn start() -> ReadOnlyMariaDb {
        let dir = owned_dir("mysql");
        let root = dir.path().to_str().unwrap().to_owned();
        let data = format!("{root}/data");
        let output = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--datadir={data}"),
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db (the mariadb-server package) is needed");
        assert!(
            output.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                &format!("--datadir={data}"),
                "--user=mysql",
                &format!("--port={port}"),
                "--bind-address=127.0.0.1",
                &format!("--socket={root}/mariadb.sock"),
                &format!("--pid-file={root}/mariadb.pid"),
                "--skip-log-bin",
                "--read-only=1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (the mariadb-server package) is needed");
        let server = ReadOnlyMariaDb { dir, child, port };
        assert!(
            eventually(Duration::from_secs(30), || listening(port)),
            "the private MariaDB does not listen on {port}"
        );
        server
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }
}

impl Drop for ReadOnlyMariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
