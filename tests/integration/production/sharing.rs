//! Shared evaluations: a probe storm is one evaluation, not a database storm.

use std::time::Duration;

use super::config;
use crate::harness::*;

async fn concurrent_readyz(address: std::net::SocketAddr, n: usize) -> Vec<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let requests = (0..n).map(|_| async move {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw)[9..12].parse::<u16>().unwrap()
    });
    futures::future::join_all(requests).await
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = server.get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn five_hundred_concurrent_readiness_requests_make_a_few_database_checks() {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Pass);
    let dir = TestDir::new();
    let config = config(
        &dir,
        "",
        &format!(
            "[readiness]\ntimeout = \"2s\"\n[databases.default]\nurl = {:?}\n",
            postgres_url(postgres.address())
        ),
    );
    let server = Server::start(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = postgres.messages();
    let statuses = runtime.block_on(concurrent_readyz(server.address, 500));
    assert_eq!(statuses.len(), 500);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request answered ready"
    );
    let evaluations = metric(&server, "probehost_evaluations_total");
    let shared = metric(&server, "probehost_evaluations_shared_total");
    assert_eq!(
        evaluations + shared,
        500.0,
        "every request read one evaluation"
    );
    assert!(
        evaluations <= 10.0,
        "{evaluations} evaluations for 500 requests"
    );
    // What the database saw: a message or two per check, not one per request.
    let messages = postgres.messages() - before;
    assert!(
        messages <= 4 * evaluations as usize + 10,
        "{messages} messages to the database"
    );
}

#[test]
fn a_cache_ttl_reuses_a_finished_evaluation() {
    let dir = TestDir::new();
    let config = config(&dir, "", "[readiness]\ncache_ttl = \"30s\"\n");
    let server = Server::start(&config);
    for _ in 0..5 {
        assert_eq!(server.get("/readyz").status, 200);
    }
    assert_eq!(metric(&server, "probehost_evaluations_total"), 1.0);
    assert_eq!(metric(&server, "probehost_evaluations_shared_total"), 4.0);
}

#[test]
fn an_interval_answers_from_the_latest_background_result_and_shows_its_age() {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Pass);
    let dir = TestDir::new();
    let config = config(
        &dir,
        "",
        &format!(
            "[readiness]\ninterval = \"300ms\"\ntimeout = \"500ms\"\n\
             [databases.default]\nurl = {:?}\n",
            postgres_url(postgres.address())
        ),
    );
    let server = Server::start(&config);
    assert!(eventually(Duration::from_secs(5), || server
        .get("/readyz")
        .status
        == 200));
    let answer = server.get("/readyz");
    assert_eq!(answer.status, 200);
    assert!(
        answer.elapsed < Duration::from_millis(100),
        "answered from the latest result: {:?}",
        answer.elapsed
    );

    // The database goes away: the background loop notices within an interval
    // and an evaluation, and requests answer from that at once.
    let before = metric(&server, "probehost_evaluations_total");
    postgres.set_mode(Mode::Refuse);
    postgres.cut();
    let changed = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || server.get("/readyz").body
            == "db: could not connect to database"),
        "the background result does not follow the database"
    );
    assert!(changed.elapsed() < Duration::from_secs(2));
    let after = metric(&server, "probehost_evaluations_total");
    assert!(
        after > before,
        "the background loop runs: {before} → {after}"
    );

    // How old the answer is, bounded by the interval plus an evaluation's
    // deadline (with room for a busy machine), and shown in JSON.
    for _ in 0..8 {
        let json = request_json(&server, "/readyz");
        assert_eq!(json["status"], "not ready");
        let age = json["age_ms"].as_f64().unwrap();
        assert!(
            age <= 300.0 + 500.0 + 500.0,
            "staleness is bounded by the interval and the deadline: {age} ms"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn request_json(server: &Server, path: &str) -> serde_json::Value {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(server.address, raw.as_bytes(), Duration::from_secs(5));
    serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[test]
fn live_tasks_fall_back_once_a_storm_is_over() {
    require(Service::Postgres);
    let dir = TestDir::new();
    let config = config(
        &dir,
        "",
        &format!("[databases.default]\nurl = {POSTGRES_URL:?}\n"),
    );
    let server = Server::start(&config);
    let tasks = |runtime: &str| {
        metric(
            &server,
            &format!("probehost_tasks{{runtime=\"{runtime}\"}}"),
        )
    };
    assert_eq!(server.get("/readyz").status, 200);
    // Each `/metrics` request is a connection's task itself.
    let idle_http = tasks("http");
    assert!(
        idle_http >= 1.0,
        "the asking connection counts: {idle_http}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = runtime.block_on(concurrent_readyz(server.address, 500));
    assert!(statuses.iter().all(|s| *s == 200));
    assert!(
        eventually(Duration::from_secs(10), || tasks("http") <= idle_http
            && tasks("probes") == 0.0),
        "tasks left after the storm: http {}, probes {}",
        tasks("http"),
        tasks("probes")
    );
}
