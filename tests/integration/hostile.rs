//! Hostile environments: a read-only filesystem, a config of hundreds of
//! probes, a flood of connections that open and drop, and file descriptors and
//! address space at their limits. probehost serves, correctly or visibly degraded, and never
//! panics.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// One `builtin:database` probe on an in-memory SQLite database.
fn sqlite_probe() -> &'static str {
    "[databases.default]\nurl = \"sqlite::memory:\"\n\n\
     [probes.database]\ncomponent = \"builtin:database\"\n"
}

#[test]
fn serve_on_a_read_only_filesystem_compiles_in_memory_and_serves() {
    // The cache directory and TMPDIR on a read-only mount, as with a read-only
    // root filesystem in Kubernetes.
    let read_only = TestDir::new();
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\ncache_dir = {:?}\n\n{}",
        read_only.path().join("cache"),
        sqlite_probe()
    ));
    let server = Server::start_with(
        probehost_with_read_only(read_only.path())
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("TMPDIR", read_only.path()),
    );
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "Ok"),
        "log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("Read-only file system"),
        "the unusable cache is not reported:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
// The start-up time is reported (run with --nocapture), not asserted.
#[allow(clippy::print_stderr)]
fn two_hundred_probes_on_fifty_databases_start_and_answer() {
    let dir = TestDir::new();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\ncache_dir = {:?}\n\n\
         [readiness]\ntimeout = \"10s\"\n\n",
        shared_cache_dir()
    );
    for d in 0..50 {
        let file = dir.path().join(format!("db{d}.sqlite3"));
        text.push_str(&format!(
            "[databases.db{d}]\nurl = \"sqlite://{}\"\n",
            file.display()
        ));
    }
    for p in 0..200 {
        text.push_str(&format!(
            "[probes.p{p}]\ncomponent = \"builtin:database\"\ndatabases = [\"db{}\"]\n",
            p % 50
        ));
    }
    let config = dir.config(&text);
    let started = Instant::now();
    let server = Server::start(&config);
    let listening = started.elapsed();
    let response = server.get("/readyz?verbose");
    let first_answer = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body.matches(" ok\n").count(),
        200,
        "{}",
        response.body
    );
    // Reported, not asserted: these machines are shared.
    eprintln!(
        "200 probes, 50 databases: listening after {listening:?}, first readiness answer \
         after {first_answer:?} (the answer itself {:?})",
        response.elapsed
    );
}

#[test]
fn ten_thousand_connections_opened_and_dropped_leave_liveness_answering() {
    let dir = TestDir::new();
    let config = dir.config(&format!("{}{}", server_section(), sqlite_probe()));
    let server = Server::start(&config);
    // 10,000 connections, 100 open at a time, each dropped without a word.
    for _ in 0..100 {
        let open: Vec<TcpStream> = (0..100)
            .map(|_| TcpStream::connect(server.address).unwrap())
            .collect();
        drop(open);
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            try_get(server.address, "/livez").is_ok_and(|r| r.status == 200)
        }),
        "liveness does not answer after the flood; log:\n{}",
        server.log()
    );
    assert_eq!(server.get("/readyz").status, 200);
    assert!(!server.log().contains("panicked"));
}

#[test]
fn with_its_address_space_limited_serve_allocates_instances_on_demand() {
    let dir = TestDir::new();
    let config: PathBuf = dir.config(&format!("{}{}", server_section(), sqlite_probe()));
    // `ulimit -v` of 6 GiB: room for one instance allocated on demand (a
    // 4 GiB reservation), not for the pool's slots.
    let server = Server::start_with(
        Command::new("prlimit")
            .arg(format!("--as={}", 6u64 << 30))
            .arg(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .arg("serve"),
    );
    for _ in 0..3 {
        let response = server.get("/readyz?verbose");
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "[+]database ok\nreadiness check passed\n"),
            "log:\n{}",
            server.log()
        );
    }
    let log = server.log();
    assert!(
        log.contains("no instance pool, so instances are allocated on demand"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn at_the_descriptor_limit_serve_waits_and_recovers_without_panicking() {
    let dir = TestDir::new();
    let config: PathBuf = dir.config(&format!("{}{}", server_section(), sqlite_probe()));
    // `ulimit -n 256`.
    let server = Server::start_with(
        Command::new("prlimit")
            .arg("--nofile=256:256")
            .arg(PROBEHOST)
            .arg("--config")
            .arg(&config)
            .arg("serve"),
    );
    assert_eq!(server.get("/readyz").status, 200);
    // More connections than it has descriptors: the kernel completes them, and
    // probehost cannot accept them all.
    let held: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect_timeout(&server.address, Duration::from_secs(2)).ok())
        .collect();
    let log = server.log_when(|log| log.contains("Too many open files"));
    assert!(
        log.contains("accept failed: Too many open files"),
        "the limit was not reached or not reported ({} connections held):\n{log}",
        held.len()
    );
    drop(held);
    // Once they go, it serves again: liveness and a readiness check that needs
    // descriptors of its own (the database, the component).
    assert!(
        eventually(Duration::from_secs(20), || {
            try_get(server.address, "/readyz").is_ok_and(|r| r.status == 200)
        }),
        "serve did not recover; log:\n{}",
        server.log()
    );
    assert_eq!(server.get("/livez").status, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
