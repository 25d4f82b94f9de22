//! `probehost probe`: the exec-probe contract of the original, row by row.

use std::time::Duration;

use crate::harness::*;

fn probe(config: Option<&std::path::Path>, args: &[&str]) -> Output {
    let mut command = probehost();
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    run(command.arg("probe").args(args))
}

fn sqlite_config(dir: &TestDir) -> std::path::PathBuf {
    dir.config(&format!(
        "{}[databases.default]\nurl = \"sqlite://{}\"\n",
        server_section(),
        dir.path().join("db.sqlite3").display()
    ))
}

#[test]
fn live_and_health_print_ok_and_exit_0() {
    for flags in [
        &["--live"][..],
        &["-L"],
        &["--health"],
        &["-H"],
        &["-L", "-H"],
    ] {
        let output = probe(None, flags);
        assert_eq!(
            (output.code, output.stdout.as_str(), output.stderr.as_str()),
            (0, "Ok\n", ""),
            "{flags:?}"
        );
    }
}

#[test]
fn quiet_silences_stdout() {
    let output = probe(None, &["--live", "-q"]);
    assert_eq!((output.code, output.stdout.as_str()), (0, ""));
    let dir = TestDir::new();
    let config = sqlite_config(&dir);
    let output = probe(Some(&config), &["--ready", "--quiet"]);
    assert_eq!((output.code, output.stdout.as_str()), (0, ""), "{output:?}");
}

#[test]
fn live_touches_neither_config_nor_dependencies() {
    let dir = TestDir::new();
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Freeze);
    let config = dir.config(&format!(
        "[databases.default]\nurl = {:?}\n",
        postgres_url(postgres.address())
    ));
    let output = probe(Some(&config), &["--live"]);
    assert_eq!((output.code, output.stdout.as_str()), (0, "Ok\n"));
    assert_eq!(postgres.accepted(), 0, "--live connected to the database");

    let missing = dir.path().join("missing.toml");
    let output = probe(Some(&missing), &["--health"]);
    assert_eq!((output.code, output.stdout.as_str()), (0, "Ok\n"));
}

#[test]
fn ready_prints_ok_and_exits_0_when_ready() {
    let dir = TestDir::new();
    let config = sqlite_config(&dir);
    for flag in ["--ready", "-R"] {
        let output = probe(Some(&config), &[flag]);
        assert_eq!(
            (output.code, output.stdout.as_str()),
            (0, "Ok\n"),
            "{output:?}"
        );
    }
}

#[test]
fn ready_prints_the_failure_and_exits_1_when_not_ready() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[databases.default]\nurl = {:?}\n",
        server_section(),
        postgres_url(closed_port())
    ));
    let output = probe(Some(&config), &["--ready"]);
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (1, "db: could not connect to database\n"),
        "{output:?}"
    );
    let output = probe(Some(&config), &["-R", "-q"]);
    assert_eq!((output.code, output.stdout.as_str()), (1, ""));
}

#[test]
fn ready_uses_the_config_from_the_environment() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[probes.never]\ncomponent = {TEST_PROBE:?}\nconfig = {{ action = \"not-ready\", message = \"from env config\" }}\n",
        server_section()
    ));
    let output = run(probehost()
        .env("PROBEHOST_CONFIG", &config)
        .args(["probe", "--ready"]));
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (1, "from env config\n")
    );
}

#[test]
fn no_mode_is_a_usage_error_with_exit_1() {
    let output = probe(None, &[]);
    assert_eq!(
        (output.code, output.stdout.as_str(), output.stderr.as_str()),
        (1, "", "specify one of --live, --health, or --ready\n")
    );
    let output = probe(None, &["-q"]);
    assert_eq!(output.code, 1);
}

#[test]
fn live_or_health_with_ready_is_a_usage_error_with_exit_1() {
    for flags in [
        &["--live", "--ready"][..],
        &["-H", "-R"],
        &["-L", "-H", "-R", "-q"],
    ] {
        let output = probe(None, flags);
        assert_eq!(
            (output.code, output.stdout.as_str(), output.stderr.as_str()),
            (
                1,
                "",
                "cannot specify both a live/health and readiness check\n"
            ),
            "{flags:?}"
        );
    }
}

#[test]
fn an_unknown_flag_exits_2_with_usage() {
    let output = probe(None, &["--bogus"]);
    assert_eq!(output.code, 2);
    assert!(
        output.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("Usage: probehost probe"),
        "{}",
        output.stderr
    );
}

#[test]
fn ready_with_a_frozen_database_exits_1_within_the_deadline() {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Freeze);
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[readiness]\ntimeout = \"500ms\"\n[databases.default]\nurl = {:?}\n",
        server_section(),
        postgres_url(postgres.address())
    ));
    let output = probe(Some(&config), &["--ready"]);
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (1, "db: could not connect to database\n")
    );
    // The deadline, plus process start and exit on a shared machine.
    assert!(
        output.elapsed < Duration::from_millis(500 + 1000),
        "took {:?}",
        output.elapsed
    );
    assert!(postgres.accepted() > 0);
}

#[test]
fn ready_with_a_bad_config_exits_2() {
    let dir = TestDir::new();
    let config = dir.config("[server]\nlisten = 5\n");
    let output = probe(Some(&config), &["--ready"]);
    assert_eq!(output.code, 2);
    assert!(
        output
            .stderr
            .contains("server.listen: expected a string, found an integer"),
        "{}",
        output.stderr
    );
}
