//! A log sink that goes away or stops reading never crashes probehost, never
//! blocks serving and never blocks shutdown: lines are dropped and counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::config;
use crate::harness::*;

/// `GET path` over the probe socket at `socket`: the status and body.
fn ask(socket: &Path, path: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

fn wait_for(path: &Path) {
    assert!(
        eventually(Duration::from_secs(30), || path.exists()),
        "{} never appeared",
        path.display()
    );
}

/// A config with a probe socket, a short drain and a probe that fails, so
/// every readiness request logs.
fn setup(dir: &TestDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let socket = dir.path().join("probe.sock");
    let config = config(
        dir,
        &format!(
            "socket = {:?}\ndrain = \"100ms\"",
            socket.display().to_string()
        ),
        &format!(
            "[databases.default]\nurl = \"postgres://postgres@{}/test\"\n[readiness]\ntimeout = \"200ms\"\n",
            closed_port()
        ),
    );
    (config, socket)
}

fn exit_within(child: &mut Child, limit: Duration) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(child: &Child) {
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::TERM).unwrap();
}

/// Serve on, and stop on SIGTERM, with stderr already closed or closing.
fn serve_survives(close_at_start: bool) {
    let dir = TestDir::new();
    let (config, socket) = setup(&dir);
    let (reader, writer) = std::io::pipe().unwrap();
    let mut command = probehost();
    command
        .env("PROBEHOST_LOG", "debug")
        .args(["-c"])
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(writer);
    let mut child = command.spawn().unwrap();
    if close_at_start {
        drop(reader);
        wait_for(&socket);
    } else {
        let mut lines = BufReader::new(reader);
        let mut line = String::new();
        while !line.contains("listening") {
            line.clear();
            assert!(lines.read_line(&mut line).unwrap() > 0, "stderr ended");
        }
        drop(lines);
    }
    for _ in 0..20 {
        assert_eq!(ask(&socket, "/livez"), (200, "Ok".to_owned()));
        assert_eq!(ask(&socket, "/readyz").0, 503);
    }
    assert!(child.try_wait().unwrap().is_none(), "serve ended");
    terminate(&child);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), 0);
}

#[test]
fn serve_keeps_serving_and_stops_with_stderr_closed_from_the_start() {
    serve_survives(true);
}

#[test]
fn serve_keeps_serving_and_stops_when_stderr_closes_while_it_runs() {
    serve_survives(false);
}

/// `run` passes its application's exit code on with stderr closed.
fn run_survives(close_at_start: bool) {
    let dir = TestDir::new();
    let (config, socket) = setup(&dir);
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = probehost()
        .env("PROBEHOST_LOG", "debug")
        .args(["-c"])
        .arg(&config)
        .args(["run", "--", "sh", "-c", "sleep 2; exit 3"])
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    if close_at_start {
        drop(reader);
    } else {
        let mut lines = BufReader::new(reader);
        let mut line = String::new();
        while !line.contains("application started") {
            line.clear();
            assert!(lines.read_line(&mut line).unwrap() > 0, "stderr ended");
        }
        drop(lines);
    }
    wait_for(&socket);
    assert_eq!(ask(&socket, "/readyz").0, 503);
    assert_eq!(exit_within(&mut child, Duration::from_secs(15)), 3);
}

#[test]
fn run_passes_on_the_exit_code_with_stderr_closed_from_the_start() {
    run_survives(true);
}

#[test]
fn run_passes_on_the_exit_code_when_stderr_closes_while_it_runs() {
    run_survives(false);
}

/// A sink that never reads fills up: lines are dropped and counted, and
/// neither serving nor shutdown waits for it.
#[test]
fn a_full_log_sink_costs_lines_not_service() {
    let dir = TestDir::new();
    let socket = dir.path().join("probe.sock");
    // A probe that logs its 32 lines a check, every check.
    let config = config(
        &dir,
        &format!(
            "socket = {:?}\ndrain = \"100ms\"",
            socket.display().to_string()
        ),
        &super::test_probe("chatty", "action = \"log-flood\", count = 100"),
    );
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = probehost()
        .args(["--log", "info", "-c"])
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    wait_for(&socket);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut dropped = 0u64;
    while started.elapsed() < Duration::from_secs(20) {
        let asked = Instant::now();
        assert_eq!(ask(&socket, "/livez").0, 200);
        slowest = slowest.max(asked.elapsed());
        assert_eq!(ask(&socket, "/readyz").0, 200);
        let (_, metrics) = ask(&socket, "/metrics");
        dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("probehost_log_lines_dropped_total "))
            .and_then(|n| n.parse().ok())
            .unwrap();
        if dropped > 0 {
            break;
        }
    }
    assert!(dropped > 0, "the pipe never filled");
    assert!(slowest < Duration::from_secs(1), "/livez took {slowest:?}");
    terminate(&child);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), 0);
    drop(reader);
}
