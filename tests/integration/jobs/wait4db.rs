//! `probehost wait4db`.

use std::thread;
use std::time::{Duration, Instant};

use crate::harness::*;

fn wait4db(database_url: &str, args: &[&str]) -> std::process::Command {
    let mut command = probehost();
    command
        .env("DATABASE_URL", database_url)
        .arg("wait4db")
        .args(args);
    command
}

fn alive_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("Connection alive for > "))
        .collect()
}

#[test]
fn exits_0_after_the_stability_window_with_the_database_up() {
    require(Service::Postgres);
    let output = run(&mut wait4db(POSTGRES_URL, &["-s", "2", "-i", "0.5"]));
    assert_eq!(output.code, 0, "{output:?}");
    let alive = alive_lines(&output.stdout);
    assert_eq!(alive.first(), Some(&"Connection alive for > 0s"));
    assert_eq!(alive.last(), Some(&"Connection alive for > 2s"));
    assert!(output.stderr.is_empty(), "{}", output.stderr);
    assert!(
        output.elapsed >= Duration::from_secs(2),
        "{:?}",
        output.elapsed
    );
    assert!(
        output.elapsed < Duration::from_millis(2000 + 500 + 1000),
        "{:?}",
        output.elapsed
    );
}

#[test]
fn waits_for_an_unreachable_database_then_exits_0_once_it_is_stable() {
    require(Service::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Refuse);
    let job = Background::spawn(&mut wait4db(
        &postgres_url(proxy.address()),
        &["-t", "30", "-s", "1", "-i", "0.5"],
    ));
    assert!(job.wait_for("Database not ready: (cause: ", Duration::from_secs(10)));
    thread::sleep(Duration::from_secs(1));
    proxy.set_mode(Mode::Pass);
    let reachable = Instant::now();
    let output = job.finish(Duration::from_secs(30));
    assert_eq!(output.code, 0, "{output:?}");
    // Stability window + one interval, plus a margin for a shared machine.
    let took = reachable.elapsed();
    assert!(
        took < Duration::from_millis(1000 + 500 + 700),
        "exited {took:?} after the database came up"
    );
    let cause = output.stderr.lines().next().unwrap();
    assert!(
        cause.starts_with("Database not ready: (cause: ")
            && cause.contains(", elapsed: ")
            && cause.ends_with('s'),
        "{cause}"
    );
}

#[test]
fn starts_the_window_over_after_a_drop_and_still_exits_0() {
    require(Service::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Pass);
    // One-second intervals, so each "alive" line names a different second.
    let job = Background::spawn(&mut wait4db(
        &postgres_url(proxy.address()),
        &["-t", "30", "-s", "3", "-i", "1"],
    ));

    assert!(job.wait_for("Connection alive for > 1s", Duration::from_secs(10)));
    // Drop the connection and keep the database away for a moment.
    proxy.set_mode(Mode::Refuse);
    proxy.cut();
    assert!(job.wait_for("Database not ready", Duration::from_secs(5)));
    thread::sleep(Duration::from_millis(700));
    proxy.set_mode(Mode::Pass);
    let output = job.finish(Duration::from_secs(30));
    assert_eq!(output.code, 0, "{output:?}");
    let restarts = alive_lines(&output.stdout)
        .iter()
        .filter(|l| **l == "Connection alive for > 0s")
        .count();
    assert_eq!(
        restarts, 2,
        "the window starts over after the drop:\n{}",
        output.stdout
    );
    assert_eq!(
        alive_lines(&output.stdout).last(),
        Some(&"Connection alive for > 3s")
    );
}

#[test]
fn exits_1_within_timeout_plus_interval_when_unreachable_throughout() {
    let output = run(&mut wait4db(
        &postgres_url(closed_port()),
        &["-t", "2", "-i", "0.5"],
    ));
    assert_eq!(output.code, 1);
    assert!(
        output
            .stderr
            .ends_with("Could not establish database connection\n"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains(
            "Database not ready: (cause: could not connect: connection refused, elapsed: "
        ),
        "a refusal is named as one: {}",
        output.stderr
    );
    assert!(output.stdout.is_empty());
    assert!(
        output.elapsed < Duration::from_millis(2000 + 500 + 700),
        "{:?}",
        output.elapsed
    );
}

#[test]
fn a_hanging_attempt_does_not_overshoot_the_timeout() {
    require(Service::Postgres);
    // Accepts and never answers: each attempt would wait the 3s connect timeout.
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Freeze);
    let output = run(&mut wait4db(
        &postgres_url(proxy.address()),
        &["-t", "2", "-i", "1"],
    ));
    assert_eq!(output.code, 1);
    assert!(
        output
            .stderr
            .ends_with("Could not establish database connection\n"),
        "{}",
        output.stderr
    );
    assert!(
        output.elapsed < Duration::from_millis(2000 + 1000 + 700),
        "{:?}",
        output.elapsed
    );
}

#[test]
fn a_wrong_password_is_not_ready_until_the_timeout() {
    require(Service::MariaDb);
    let output = run(&mut wait4db(
        "mysql://root:wrong@127.0.0.1:3306/test",
        &["-t", "2", "-i", "0.5"],
    ));
    assert_eq!(output.code, 1, "{output:?}");
    // Labelled as the connection failure it is, not as a failed query.
    assert!(
        output
            .stderr
            .contains("Database not ready: (cause: could not connect: Access denied"),
        "{}",
        output.stderr
    );
    let attempts = output
        .stderr
        .matches("Database not ready: (cause: ")
        .count();
    assert!(attempts >= 3, "retried every interval: {}", output.stderr);
    assert!(output.elapsed >= Duration::from_secs(2));
}

#[test]
fn non_positive_values_are_refused_with_the_originals_messages() {
    for (args, message) in [
        (
            &["-t", "0"][..],
            "Timeout must be greater than 0 seconds.\n",
        ),
        (
            &["--stable", "-1"],
            "Stability timeout must be greater than 0 seconds.\n",
        ),
        (&["-i", "0"], "Interval must be greater than 0 seconds.\n"),
    ] {
        let output = run(&mut wait4db(POSTGRES_URL, args));
        assert_eq!(
            (output.code, output.stderr.as_str()),
            (1, message),
            "{args:?}"
        );
    }
}

#[test]
fn an_unknown_alias_exits_2() {
    let output = run(&mut wait4db(POSTGRES_URL, &["-d", "replica"]));
    assert_eq!(output.code, 2);
    assert_eq!(
        output.stderr,
        "unknown database \"replica\" (configured: default)\n"
    );
}
