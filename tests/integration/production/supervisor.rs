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
