//! A refusal is an answer, not a timeout: a database that refuses the
//! connection makes readiness fail at once, with `connection refused` as the
//! reason, while one that accepts and never answers still ends at the deadline.

use std::time::Duration;

use crate::harness::*;

/// A server with one `builtin:database` probe on `url` and a readiness deadline
/// far longer than any refusal takes, so an answer that waited for it shows.
fn database_server(dir: &TestDir, url: &str) -> Server {
    Server::start(&dir.config(&format!(
        "{}[readiness]\ntimeout = \"20s\"\n[databases.default]\nurl = {url:?}\nconnect_timeout = \"20s\"\n\
         [probes.database]\ncomponent = \"builtin:database\"\n",
        server_section()
    )))
}

#[test]
fn a_refused_database_is_not_ready_at_once_with_the_refusal_as_reason() {
    let closed = closed_port();
    for url in [postgres_url(closed), format!("mysql://root@{closed}/test")] {
        let dir = TestDir::new();
        let server = database_server(&dir, &url);
        let response = server.get("/readyz");
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, "db: could not connect to database"),
            "{url}"
        );
        // 20 s was allowed; a refusal takes milliseconds. The margin is for a
        // loaded machine, not a measure of speed.
        assert!(
            response.elapsed < Duration::from_secs(5),
            "{url}: answered after {:?}, as if the refusal were retried",
            response.elapsed
        );
        let log = server.log_when(|log| log.contains("connection refused"));
        assert!(
            log.contains("connection failed: connection refused"),
            "{url}: {log}"
        );
        assert!(!log.contains("timed out"), "{url}: {log}");
    }
}

#[test]
fn a_frozen_database_is_not_ready_at_the_deadline_with_a_timeout_as_reason() {
    require(Service::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Freeze);
    let dir = TestDir::new();
    let server = Server::start(&dir.config(&format!(
        "{}[readiness]\ntimeout = \"700ms\"\n[databases.default]\nurl = {:?}\n\
         [probes.database]\ncomponent = \"builtin:database\"\n",
        server_section(),
        postgres_url(proxy.address())
    )));
    let response = server.get("/readyz");
    assert_eq!(response.status, 503);
    assert!(
        response.elapsed >= Duration::from_millis(600),
        "a frozen server cannot be judged before the deadline: {:?}",
        response.elapsed
    );
    let log = server.log_when(|log| log.contains("timed out"));
    assert!(log.contains("timed out after"), "{log}");
}

#[test]
fn the_databases_own_refusal_is_reported_as_what_it_is() {
    require(Service::MariaDb);
    let dir = TestDir::new();
    let server = database_server(&dir, "mysql://root:wrong@127.0.0.1:3306/test");
    assert_eq!(server.get("/readyz").status, 503);
    let log = server.log_when(|log| log.contains("Access denied"));
    assert!(log.contains("connection failed: Access denied"), "{log}");

    require(Service::Postgres);
    let dir = TestDir::new();
    let server = database_server(
        &dir,
        "postgres://postgres@127.0.0.1:5432/probehost_no_such_database",
    );
    assert_eq!(server.get("/readyz").status, 503);
    let log = server.log_when(|log| log.contains("does not exist"));
    assert!(
        log.contains("connection failed: database \"probehost_no_such_database\" does not exist")
            || log.contains(
                "connection failed: database \\\"probehost_no_such_database\\\" does not exist"
            ),
        "{log}"
    );
}
