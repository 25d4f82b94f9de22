//! `probehost run`: liveness follows the application; its exit code is ours.

use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::{config, test_probe};
use crate::harness::*;

fn run_app(server_extra: &str, command: &[&str]) -> (TestDir, Server) {
    let dir = TestDir::new();
    let config = config(
        &dir,
        server_extra,
        &test_probe("fine", "action = \"ready\""),
    );
    let server = Server::start_with(
        probehost()
            .arg("--config")
            .arg(&config)
            .arg("run")
            .arg("--")
            .args(command),
    );
    (dir, server)
}

/// The application's pid, from probehost's log.
fn app_pid(server: &Server) -> Pid {
    assert!(eventually(Duration::from_secs(5), || server
        .log()
        .contains("application started")));
    let log = server.log();
    let pid = log
        .split("application started pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the log:\n{log}"));
    Pid::from_raw(pid).unwrap()
}

#[test]
fn killing_the_application_fails_liveness_and_exits_with_its_code() {
    let (_dir, server) = run_app("", &["sleep", "30"]);
    assert_eq!(server.get("/livez").body, "Ok");
    kill_process(app_pid(&server), Signal::KILL).unwrap();
    // Liveness fails (or nothing answers any more) and probehost exits 128 + 9.
    let address = server.address;
    let failed = eventually(Duration::from_secs(5), || {
        match try_get(address, "/livez") {
            Ok(response) => response.status == 503,
            Err(_) => true,
        }
    });

    assert!(failed, "liveness still passes");
    let status = server.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(137));
}

#[test]
fn the_applications_own_exit_code_is_passed_on() {
    let (_dir, server) = run_app("", &["sh", "-c", "sleep 1; exit 3"]);
    assert_eq!(server.get("/livez").status, 200);
    assert_eq!(server.wait(Duration::from_secs(15)).code(), Some(3));
}

#[test]
fn sigterm_reaches_the_application_after_the_drain() {
    let marker = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "trap 'echo TERM > {}; exit 0' TERM; while :; do sleep 0.05; done",
        marker.path().display()
    );
    let (_dir, server) = run_app("drain = \"1s\"", &["sh", "-c", &script]);
    assert_eq!(server.get("/readyz").status, 200);
    let sent = Instant::now();
    server.signal(Signal::TERM);
    assert!(eventually(Duration::from_secs(1), || server
        .get("/readyz")
        .status
        == 503));
    let draining = server.get("/readyz");

    assert_eq!(
        (draining.status, draining.body.as_str()),
        (503, "shutting down")
    );
    assert_eq!(
        server.get("/livez").status,
        200,
        "liveness holds during the drain"
    );
    assert_eq!(
        std::fs::read_to_string(marker.path()).unwrap(),
        "",
        "not yet forwarded"
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(marker.path()).unwrap() == "TERM\n"
    }));
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "forwarded before the drain ended"
    );
    assert_eq!(server.wait(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn liveness_can_require_the_applications_port() {
    let mut app = Upstream::start();
    let dir = TestDir::new();
    let config = config(
        &dir,
        &format!("upstream = {:?}\nliveness_upstream = true", app.url()),
        &test_probe("fine", "action = \"ready\""),
    );
    let server = Server::start_with(
        probehost()
            .arg("--config")
            .arg(&config)
            .args(["run", "--", "sleep", "30"]),
    );
    assert_eq!(server.get("/livez").status, 200);
    app.stop();
    assert!(
        eventually(Duration::from_secs(5), || server.get("/livez").body
            == "application is not accepting connections"),
        "liveness ignores the closed port"
    );
}

#[test]
fn other_signals_go_straight_to_the_application() {
    let marker = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "trap 'echo HUP >> {0}' HUP; trap 'echo USR1 >> {0}' USR1; \
         trap 'exit 0' TERM; while :; do sleep 0.05; done",
        marker.path().display()
    );
    let (_dir, server) = run_app("drain = \"1s\"", &["sh", "-c", &script]);
    app_pid(&server);
    assert_eq!(server.get("/readyz").status, 200);
    server.signal(Signal::HUP);
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(marker.path()).unwrap() == "HUP\n"
        }),
        "SIGHUP was not passed on; log:\n{}",
        server.log()
    );
    server.signal(Signal::USR1);
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(marker.path()).unwrap() == "HUP\nUSR1\n"
    }));
    // Neither stops probehost or the application, nor starts a drain.
    assert_eq!(server.get("/readyz").status, 200);
    assert_eq!(server.terminate().code(), Some(0));
}

/// A pid written by the application's script to `file`, once it is there.
fn pid_from(file: &std::path::Path) -> String {
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(file)
            .is_ok_and(|pid| pid.ends_with('\n'))),
        "{} was never written",
        file.display()
    );
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

/// SIGKILL to probehost: its warden kills the application's whole group,
/// the grandchild a wrapper started included.
#[test]
fn no_process_of_the_group_survives_probehost_being_killed() {
    let pids = TestDir::new();
    let grandchild = pids.path().join("grandchild.pid");
    let script = format!(
        "sh -c 'echo $$ > {}; exec sleep 30' & wait",
        grandchild.display()
    );
    let (_dir, server) = run_app("", &["sh", "-c", &script]);
    let app = app_pid(&server).as_raw_nonzero().to_string();
    let grandchild = pid_from(&grandchild);
    server.signal(Signal::KILL);
    assert!(
        eventually(Duration::from_secs(10), || has_ended(&grandchild)
            && has_ended(&app)),
        "still running after probehost was killed: application {:?}, grandchild {:?}",
        process_state(&app),
        process_state(&grandchild)
    );
}

/// When the application exits on its own, what it left in its group gets
/// SIGTERM, and SIGKILL after `server.grace`; its exit code is still ours.
#[test]
fn what_the_application_leaves_behind_is_stopped_when_it_exits() {
    let pids = TestDir::new();
    let (polite, stubborn) = (pids.path().join("polite"), pids.path().join("stubborn"));
    let script = format!(
        "sh -c 'echo $$ > {polite}; exec sleep 30' & \
         sh -c 'trap \"\" TERM; echo $$ > {stubborn}; exec sleep 30' & \
         while [ ! -s {polite} ] || [ ! -s {stubborn} ]; do sleep 0.05; done; exit 3",
        polite = polite.display(),
        stubborn = stubborn.display()
    );
    let started = Instant::now();
    let (_dir, server) = run_app("grace = \"2s\"", &["sh", "-c", &script]);
    let (polite, stubborn) = (pid_from(&polite), pid_from(&stubborn));
    assert!(
        eventually(Duration::from_secs(10), || has_ended(&polite)),
        "SIGTERM did not reach the leftover that stops on it"
    );
    assert!(
        !has_ended(&stubborn),
        "the leftover that ignores SIGTERM was killed before the grace"
    );
    let log = server.log_when(|log| log.contains("killing what the command left behind"));
    assert_eq!(server.wait(Duration::from_secs(20)).code(), Some(3));
    assert!(
        has_ended(&stubborn),
        "the stubborn leftover outlived probehost"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "probehost exited before the grace was over"
    );
    assert!(
        log.contains("stopping the processes the command left behind"),
        "{log}"
    );
}

/// The application's exit code is ours, a death by signal as 128 + its number.
#[test]
fn exit_codes_and_deaths_by_signal_are_passed_on() {
    for (script, code) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -TERM $$", 143),
        ("kill -KILL $$", 137),
    ] {
        let (_dir, server) = run_app("", &["sh", "-c", &format!("sleep 0.2; {script}")]);
        assert_eq!(
            server.wait(Duration::from_secs(15)).code(),
            Some(code),
            "{script}"
        );
    }
}

#[test]
fn a_command_that_cannot_run_is_127_and_a_missing_one_is_a_usage_error() {
    let dir = TestDir::new();
    let config = config(&dir, "", &test_probe("fine", "action = \"ready\""));
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    for program in [
        "no-such-program-anywhere".to_owned(),
        script.display().to_string(),
    ] {
        let output = run(probehost()
            .arg("--config")
            .arg(&config)
            .args(["run", "--", &program]));
        assert_eq!(output.code, 127, "{program}: {output:?}");
        assert!(
            output.stderr.contains(&format!("cannot run {program}")),
            "{program}: {}",
            output.stderr
        );
    }
    let output = run(probehost().arg("--config").arg(&config).args(["run", "--"]));
    assert_eq!(output.code, 2, "{output:?}");
    assert!(output.stderr.contains("Usage:"), "{}", output.stderr);
}

/// A port already taken stops `run` before the application starts.
#[test]
fn a_port_in_use_exits_1_before_the_application_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = TestDir::new();
    let config = config(&dir, "", &test_probe("fine", "action = \"ready\""));
    let marker = dir.path().join("started");
    let output = run(probehost()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string())
        .args(["--", "touch"])
        .arg(&marker));
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output.stderr.contains("cannot listen on"),
        "{}",
        output.stderr
    );
    assert!(!marker.exists(), "the application was started");
}

/// On SIGTERM, after the drain and `server.grace`, the whole group is
/// killed: a grandchild that ignores SIGTERM included.
#[test]
fn sigterm_ends_with_the_whole_group_killed_after_the_grace() {
    let pids = TestDir::new();
    let grandchild = pids.path().join("grandchild.pid");
    let script = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {}; exec sleep 30' & trap '' TERM; wait",
        grandchild.display()
    );
    let (_dir, server) = run_app("drain = \"100ms\"\ngrace = \"1s\"", &["sh", "-c", &script]);
    let app = app_pid(&server).as_raw_nonzero().to_string();
    let grandchild = pid_from(&grandchild);
    let sent = Instant::now();
    server.signal(Signal::TERM);
    let status = server.wait(Duration::from_secs(15));
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "the group was killed before the grace"
    );
    assert!(has_ended(&grandchild), "the grandchild outlived probehost");
    assert!(has_ended(&app), "the application outlived probehost");
    assert_eq!(status.code(), Some(137));
}

/// A very long argument list reaches the application whole.
#[test]
fn a_very_long_argument_reaches_the_application() {
    let long = "x".repeat(100_000);
    let (_dir, server) = run_app(
        "",
        &[
            "sh",
            "-c",
            "[ ${#1} -eq 100000 ] && [ \"$2\" = last ] && exit 5; exit 1",
            "sh",
            &long,
            "last",
        ],
    );
    assert_eq!(server.wait(Duration::from_secs(15)).code(), Some(5));
}
