//! Verbose, JSON, per-probe, startup and metrics answers.

use std::time::Duration;

use super::{config, test_probe};
use crate::harness::*;

/// A config whose `default` database (`url` of the proxy's address) is behind
/// a fault proxy that refuses connections until the test lets them pass.
fn behind_refusing_postgres(
    url: impl Fn(std::net::SocketAddr) -> String,
) -> (FaultProxy, TestDir, std::path::PathBuf) {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Refuse);
    let dir = TestDir::new();
    let config = config(
        &dir,
        "",
        &format!("[databases.default]\nurl = {:?}\n", url(postgres.address())),
    );
    (postgres, dir, config)
}

/// `alpha`, which is ready, and `beta`, which is not (`beta: down`).
fn alpha_and_beta() -> String {
    format!(
        "{}{}",
        test_probe("alpha", "action = \"ready\""),
        test_probe(
            "beta",
            "action = \"not-ready\", message = \"beta: down\", status = 503"
        )
    )
}

fn two_probes(server_extra: &str) -> (TestDir, Server) {
    let dir = TestDir::new();
    let server = Server::start(&config(&dir, server_extra, &alpha_and_beta()));
    (dir, server)
}

fn json(server: &Server, path: &str) -> (String, serde_json::Value) {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(server.address, raw.as_bytes(), Duration::from_secs(5));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), serde_json::from_str(body).unwrap())
}

#[test]
fn verbose_lists_every_probe_then_a_verdict() {
    let (_dir, server) = two_probes("");
    let response = server.get("/readyz?verbose");
    assert_eq!(response.status, 503);
    assert_eq!(
        response.body,
        "[+]alpha ok\n[-]beta failed: beta: down\nreadiness check failed\n"
    );
    let response = server.get("/readyz?verbose&exclude=beta");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        "[+]alpha ok\n[+]beta excluded: ok\nreadiness check passed\n"
    );
    // Without `verbose` the bodies stay exactly the original's.
    assert_eq!(server.get("/readyz").body, "beta: down");
    let excluded = server.get("/readyz?exclude=beta");
    assert_eq!((excluded.status, excluded.body.as_str()), (200, "Ok"));
}

#[test]
fn one_probe_has_its_own_path() {
    let (_dir, server) = two_probes("");
    let alpha = server.get("/readyz/alpha");
    assert_eq!((alpha.status, alpha.body.as_str()), (200, "Ok"));
    let beta = server.get("/readyz/beta");
    assert_eq!((beta.status, beta.body.as_str()), (503, "beta: down"));
    let verbose = server.get("/readyz/beta?verbose");
    assert_eq!(
        verbose.body,
        "[-]beta failed: beta: down\nreadiness check failed\n"
    );
    let missing = server.get("/readyz/gamma");
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "no probe named \"gamma\"")
    );
}

#[test]
fn json_gives_each_probes_status_message_and_duration() {
    let (_dir, server) = two_probes("");
    let (head, document) = json(&server, "/readyz");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(document["status"], "not ready");
    assert_eq!(document["probes"][0]["name"], "alpha");
    assert_eq!(document["probes"][0]["status"], "ok");
    assert_eq!(document["probes"][1]["status"], "failed");
    assert_eq!(document["probes"][1]["message"], "beta: down");
    assert!(document["probes"][1]["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(document["age_ms"].as_f64().is_some());
}

#[test]
fn verbose_detail_can_be_withheld() {
    let (_dir, server) = two_probes("verbose = false");
    assert_eq!(
        server.get("/readyz?verbose").body,
        "[+]alpha ok\n[-]beta failed: reason withheld\nreadiness check failed\n"
    );
    let (_, document) = json(&server, "/readyz");
    assert_eq!(document["probes"][1].get("message"), None);
}

#[test]
fn startup_fails_until_ready_once_then_passes_for_good() {
    let (postgres, _dir, config) = behind_refusing_postgres(postgres_url);
    let server = Server::start(&config);
    let startup = server.get("/startupz");
    assert_eq!(
        (startup.status, startup.body.as_str()),
        (503, "db: could not connect to database")
    );
    postgres.set_mode(Mode::Pass);
    assert!(eventually(Duration::from_secs(10), || server
        .get("/startupz")
        .status
        == 200));
    postgres.set_mode(Mode::Refuse);
    postgres.cut();
    assert!(eventually(Duration::from_secs(10), || server
        .get("/readyz")
        .status
        == 503));
    assert_eq!(
        server.get("/startupz").status,
        200,
        "passed once, passes for good"
    );
}

#[test]
fn metrics_follow_a_failure_and_a_recovery() {
    let (postgres, _dir, config) = behind_refusing_postgres(postgres_url);
    let server = Server::start(&config);
    // Three failing evaluations: one state change.
    for _ in 0..3 {
        assert_eq!(server.get("/readyz").status, 503);
    }
    let down = server.get("/metrics");
    assert_eq!(
        down.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in [
        "probehost_ready 0",
        "probehost_probe_up{probe=\"database\"} 0",
        "probehost_probe_checks_total{probe=\"database\",result=\"not_ready\"} 3",
        "probehost_probe_up{probe=\"memcached\"} 1",
        "probehost_http_requests_total{route=\"ready\",status=\"5xx\"} 3",
    ] {
        assert!(
            down.body.lines().any(|l| l == line),
            "missing {line:?}:\n{}",
            down.body
        );
    }
    postgres.set_mode(Mode::Pass);
    assert!(eventually(Duration::from_secs(10), || server
        .get("/readyz")
        .status
        == 200));
    for _ in 0..2 {
        assert_eq!(server.get("/readyz").status, 200);
    }
    let up = server.get("/metrics").body;
    for line in [
        "probehost_ready 1",
        "probehost_probe_up{probe=\"database\"} 1",
        "probehost_probe_checks_total{probe=\"database\",result=\"ready\"} 3",
        "probehost_probe_duration_seconds_count{probe=\"database\"} 6",
        "probehost_http_requests_total{route=\"ready\",status=\"2xx\"} 3",
    ] {
        assert!(up.lines().any(|l| l == line), "missing {line:?}:\n{up}");
    }
    // Six evaluations, two changes of the database probe's state (and the
    // memcached probe's first answer): a line for each change, none per request.
    let log = server.log_when(|log| {
        log.lines()
            .any(|l| l.contains("probe=database") && l.contains("probe is ready"))
    });
    let lines = |probe: &str, what: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("probe={probe}")) && l.contains(what))
            .count()
    };
    assert_eq!(lines("database", "probe is not ready"), 1, "{log}");
    assert_eq!(lines("database", "probe is ready"), 1, "{log}");
    assert_eq!(lines("memcached", "probe is ready"), 1, "{log}");
    assert!(
        log.lines().any(|l| l.contains("probe is not ready")
            && l.contains("reason=db: could not connect to database")),
        "the reason is logged:\n{log}"
    );
}

/// `--log-format json`: every line is one JSON object; a probe's change of
/// state names the probe and the reason; no password is written.
#[test]
fn json_logs_name_each_change_and_no_secret() {
    let (postgres, _dir, config) = behind_refusing_postgres(|address| {
        format!("postgres://postgres:hunter2-secret@{address}/test")
    });
    let server = Server::start_with(
        probehost()
            .args(["--log-format", "json", "--config"])
            .arg(&config)
            .arg("serve"),
    );
    assert_eq!(server.get("/readyz").status, 503);
    postgres.set_mode(Mode::Pass);
    assert!(eventually(Duration::from_secs(10), || server
        .get("/readyz")
        .status
        == 200));
    let log = server.log_when(|log| {
        log.lines()
            .any(|l| l.contains("\"probe\":\"database\"") && l.contains("probe is ready"))
    });
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let changes: Vec<(&str, &str, Option<&str>)> = lines
        .iter()
        .filter(|l| l["fields"]["probe"] == "database")
        .filter_map(|l| {
            Some((
                l["level"].as_str()?,
                l["fields"]["message"].as_str()?,
                l["fields"]["reason"].as_str(),
            ))
        })
        .filter(|(_, message, _)| message.starts_with("probe is"))
        .collect();
    assert_eq!(
        changes,
        [
            (
                "WARN",
                "probe is not ready",
                Some("db: could not connect to database")
            ),
            ("INFO", "probe is ready", None),
        ],
        "{log}"
    );
    assert!(!log.contains("hunter2"), "a password is in the log:\n{log}");
}

/// Two probes (one failing) in proxy mode, with a probe socket.
fn proxied(dir: &TestDir, upstream: &Upstream, server_extra: &str) -> Server {
    let extra = format!(
        "upstream = {:?}\nsocket = {:?}\n{server_extra}",
        upstream.url(),
        dir.path().join("probe.sock")
    );
    Server::start(&config(dir, &extra, &alpha_and_beta()))
}

const FORWARDED: &str = "X-Forwarded-For: 203.0.113.7";

#[test]
fn in_proxy_mode_probe_messages_are_shown_only_to_local_clients() {
    let upstream = Upstream::start();
    let dir = TestDir::new();
    let server = proxied(&dir, &upstream, "");
    let shown = "[+]alpha ok\n[-]beta failed: beta: down\nreadiness check failed\n";
    let withheld = "[+]alpha ok\n[-]beta failed: reason withheld\nreadiness check failed\n";

    // On loopback, and on the probe socket: shown.
    assert_eq!(server.get("/readyz?verbose").body, shown);
    let socket = dir.path().join("probe.sock");
    assert_eq!(get_over_socket(&socket, "/readyz?verbose", &[]).1, shown);
    // Through the ingress (a proxy says whom it forwards for): withheld, in
    // verbose and in JSON alike.
    let response = get_with(server.address, "/readyz?verbose", &[FORWARDED]);
    assert_eq!((response.status, response.body.as_str()), (503, withheld));
    let json = get_with(
        server.address,
        "/readyz",
        &["Accept: application/json", FORWARDED],
    );
    let document: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(document["probes"][1]["status"], "failed");
    assert_eq!(document["probes"][1].get("message"), None, "{document}");
    // The plain answer is the original's contract, for everyone.
    let plain = get_with(server.address, "/readyz", &[FORWARDED]);
    assert_eq!((plain.status, plain.body.as_str()), (503, "beta: down"));
    // None of this reached the application.
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[test]
fn an_upstream_given_on_the_command_line_withholds_messages_as_one_in_the_file_does() {
    // `serve --upstream` with a file that names no upstream: the proxy-mode
    // default applies all the same.
    let upstream = Upstream::start();
    let dir = TestDir::new();
    let config = config(&dir, "", &alpha_and_beta());
    let server = Server::start_with(probehost().arg("--config").arg(&config).args([
        "serve",
        "--upstream",
        &upstream.url(),
    ]));
    let response = get_with(server.address, "/readyz?verbose", &[FORWARDED]);
    assert_eq!(
        (response.status, response.body.as_str()),
        (
            503,
            "[+]alpha ok\n[-]beta failed: reason withheld\nreadiness check failed\n"
        )
    );
    assert_eq!(
        server.get("/readyz?verbose").body,
        "[+]alpha ok\n[-]beta failed: beta: down\nreadiness check failed\n"
    );
}

#[test]
fn server_verbose_true_shows_probe_messages_to_everyone() {
    let upstream = Upstream::start();
    let dir = TestDir::new();
    let server = proxied(&dir, &upstream, "verbose = true");
    let response = get_with(server.address, "/readyz?verbose", &[FORWARDED]);
    assert_eq!(
        response.body,
        "[+]alpha ok\n[-]beta failed: beta: down\nreadiness check failed\n"
    );
}

#[test]
fn health_json_follows_the_ietf_draft() {
    let (_dir, server) = two_probes("");
    let response = get_with(
        server.address,
        "/readyz",
        &["Accept: application/health+json"],
    );
    assert_eq!(response.status, 503);
    assert_eq!(
        response.header("content-type"),
        Some("application/health+json")
    );
    let document: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(document["status"], "fail", "{document}");
    let alpha = &document["checks"]["alpha:responseTime"][0];
    assert_eq!(alpha["status"], "pass", "{document}");
    assert_eq!(alpha["observedUnit"], "ms");
    assert!(alpha["observedValue"].as_f64().is_some_and(|v| v >= 0.0));
    let beta = &document["checks"]["beta:responseTime"][0];
    assert_eq!(
        (&beta["status"], &beta["output"]),
        (&"fail".into(), &"beta: down".into())
    );

    let response = get_with(
        server.address,
        "/readyz?exclude=beta",
        &["Accept: application/health+json"],
    );
    assert_eq!(response.status, 200);
    let document: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(document["status"], "pass", "{document}");
    assert_eq!(document["checks"].get("beta:responseTime"), None);
    // The existing JSON is unchanged.
    let (_, json) = json(&server, "/readyz");
    assert_eq!(json["status"], "not ready");
}
