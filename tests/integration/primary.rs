//! `require = "primary"`: after a failover `SELECT 1` still succeeds on a
//! standby or a read-only server while every write fails. Such a database is
//! not ready, and `wait4db --primary` waits for a writable one. Real servers:
//! a streaming standby, a MariaDB started read-only, a SQLite file on a
//! read-only mount.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// A config whose `default` database is `url`, with `require` if given.
fn config(dir: &TestDir, url: &str, require: Option<&str>) -> PathBuf {
    let require = require.map_or(String::new(), |r| format!("require = {r:?}\n"));
    dir.config(&format!(
        "[runtime]\ncache_dir = {:?}\n\n[databases.default]\nurl = {url:?}\n{require}",
        shared_cache_dir()
    ))
}

/// `probe --ready --local` (one evaluation, the default probes): (code, answer).
fn ready(config: &Path) -> (i32, String) {
    let output = run(probehost()
        .arg("-c")
        .arg(config)
        .args(["probe", "--ready", "--local"]));
    (output.code, output.stdout.trim().to_owned())
}

fn wait4db_primary(config: &Path, timeout: &str) -> Command {
    let mut command = probehost();
    command.arg("-c").arg(config).args([
        "wait4db",
        "--primary",
        "-s",
        "0.5",
        "-i",
        "0.2",
        "-t",
        timeout,
    ]);
    command
}

#[test]
fn a_postgres_standby_is_not_ready_when_a_primary_is_required() {
    let pair = PostgresPair::start();
    let dir = TestDir::new();
    let standby = PostgresPair::url(pair.standby);

    let required = config(&dir, &standby, Some("primary"));
    assert_eq!(
        ready(&required),
        (1, "db default: read-only (in recovery)".to_owned())
    );
    let output = run(&mut wait4db_primary(&required, "1"));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output
            .stderr
            .contains("cause: db default: read-only (in recovery)")
            && output
                .stderr
                .ends_with("Database did not become ready: db default: read-only (in recovery)\n"),
        "{output:?}"
    );

    // Without the requirement it answers SELECT 1, as the original's probe.
    let plain = TestDir::new();
    assert_eq!(ready(&config(&plain, &standby, None)), (0, "Ok".to_owned()));
    // The primary itself passes.
    let primary = TestDir::new();
    let on_primary = config(&primary, &PostgresPair::url(pair.primary), Some("primary"));
    assert_eq!(ready(&on_primary), (0, "Ok".to_owned()));

    // A failover: wait4db --primary on the standby ends once it is promoted.
    let mut waiting = Background::spawn(&mut wait4db_primary(&required, "60"));
    assert!(waiting.wait_for("read-only (in recovery)", Duration::from_secs(20)));
    assert!(waiting.is_running());
    pair.promote_standby();
    let output = waiting.finish(Duration::from_secs(60));
    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(ready(&required), (0, "Ok".to_owned()));
}

#[test]
fn a_postgres_primary_with_read_only_transactions_is_not_ready() {
    let pair = PostgresPair::start();
    let url = PostgresPair::url(pair.primary);
    PgSession::connect(&url)
        .execute("ALTER DATABASE postgres SET default_transaction_read_only = on");
    let dir = TestDir::new();
    assert_eq!(
        ready(&config(&dir, &url, Some("primary"))),
        (
            1,
            "db default: read-only (default_transaction_read_only)".to_owned()
        )
    );
}

#[test]
fn a_read_only_mariadb_is_not_ready_when_a_primary_is_required() {
    let server = ReadOnlyMariaDb::start();
    let dir = TestDir::new();
    assert_eq!(
        ready(&config(&dir, &server.url(), Some("primary"))),
        (1, "db default: read-only (read_only)".to_owned())
    );
    let plain = TestDir::new();
    assert_eq!(
        ready(&config(&plain, &server.url(), None)),
        (0, "Ok".to_owned())
    );
    // The shared, writable server passes.
    require(Service::MariaDb);
    let writable = TestDir::new();
    assert_eq!(
        ready(&config(&writable, MARIADB_URL, Some("primary"))),
        (0, "Ok".to_owned())
    );
}

#[test]
fn a_sqlite_file_on_a_read_only_mount_is_not_ready_when_a_primary_is_required() {
    let data = TestDir::new();
    let file = data.path().join("db.sqlite3");
    let url = format!("sqlite://{}", file.display());
    let dir = TestDir::new();
    let required = config(&dir, &url, Some("primary"));
    // Writable: ready (and the file is created).
    assert_eq!(ready(&required), (0, "Ok".to_owned()));

    // The same directory mounted read-only, for the probe alone.
    let in_mount = |config: &Path, args: &[&str]| {
        run(probehost_with_read_only(data.path())
            .arg("-c")
            .arg(config)
            .args(args))
    };
    let probe = |config: &Path| {
        let output = in_mount(config, &["probe", "--ready", "--local"]);
        (output.code, output.stdout.trim().to_owned(), output.stderr)
    };
    let (code, answer, stderr) = probe(&required);
    assert_eq!(
        (code, answer.as_str()),
        (1, "db default: read-only (file not writable)"),
        "{stderr}"
    );
    let plain = TestDir::new();
    let plain = config(&plain, &url, None);
    let (code, answer, stderr) = probe(&plain);
    assert_eq!((code, answer.as_str()), (0, "Ok"), "{stderr}");
    // wait4db --primary asks for a writable file whatever the config says.
    let waited = in_mount(
        &plain,
        &["wait4db", "--primary", "-s", "0.2", "-i", "0.2", "-t", "1"],
    );
    assert_eq!(waited.code, 1, "{waited:?}");
    assert!(
        waited.stderr.ends_with(
            "Database did not become ready: db default: read-only (file not writable)\n"
        ),
        "{waited:?}"
    );
}

#[test]
fn an_unknown_requirement_is_a_config_error() {
    let dir = TestDir::new();
    let config =
        dir.config("[databases.default]\nurl = \"sqlite::memory:\"\nrequire = \"replica\"\n");
    let output = run(probehost().arg("-c").arg(&config).args(["config", "check"]));
    assert_eq!(output.code, 2, "{output:?}");
    assert!(
        output
            .stderr
            .contains("databases.default.require: unknown requirement \"replica\" (expected \"primary\" or \"any\")"),
        "{output:?}"
    );
}
