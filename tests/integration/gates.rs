//! `probes.NAME.gate`: a shared dependency that blips does not take every
//! replica out of the Service at once. PostgreSQL behind a fault proxy.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::*;

/// A server whose one probe is `builtin:database` on PostgreSQL through
/// `proxy`, with `gate` (none: the default).
fn server(dir: &TestDir, proxy: &FaultProxy, gate: Option<&str>) -> (Server, PathBuf) {
    let gate = gate.map_or(String::new(), |g| format!("gate = {g:?}\n"));
    // The probe socket lets `probe --ready` find this server.
    let config = dir.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nsocket = {:?}\n\n\
         [runtime]\ncache_dir = {:?}\n\n\
         [databases.default]\nurl = {:?}\nconnect_timeout = \"300ms\"\n\n\
         [probes.database]\ncomponent = \"builtin:database\"\n{gate}",
        dir.path().join("probe.sock"),
        shared_cache_dir(),
        postgres_url(proxy.address())
    ));
    (Server::start(&config), config)
}

fn json(server: &Server) -> serde_json::Value {
    let response = get_with(server.address, "/readyz", &["Accept: application/json"]);
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
}

fn metric(server: &Server, name: &str) -> String {
    let metrics = server.get("/metrics").body;
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .to_owned()
}

/// Down, then up until readiness has passed once, then down again.
fn boot_down_then_pass_then_fail(proxy: &FaultProxy, server: &Server) {
    for _ in 0..3 {
        let response = server.get("/readyz");
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, "db: could not connect to database"),
            "a probe that never passed gates readiness"
        );
    }
    proxy.set_mode(Mode::Pass);
    assert!(
        eventually(Duration::from_secs(10), || server.get("/readyz").status
            == 200),
        "readiness never passed; log:\n{}",
        server.log()
    );
    proxy.set_mode(Mode::Refuse);
    proxy.cut();
}

#[test]
fn a_startup_gate_holds_new_pods_back_and_keeps_serving_pods_in_rotation() {
    require(Service::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Refuse);
    let dir = TestDir::new();
    let (server, config) = server(&dir, &proxy, Some("startup"));
    boot_down_then_pass_then_fail(&proxy, &server);

    // The database is gone again: still ready, and every view says degraded.
    let response = server.get("/readyz");
    assert_eq!((response.status, response.body.as_str()), (200, "Ok"));
    let verbose = server.get("/readyz?verbose");
    assert_eq!(verbose.status, 200);
    assert_eq!(
        verbose.body,
        "[!]database degraded: db: could not connect to database\nreadiness check passed\n"
    );
    let answer = json(&server);
    assert_eq!(answer["status"], "degraded", "{answer}");
    assert_eq!(answer["probes"][0]["status"], "degraded", "{answer}");
    assert_eq!(
        metric(&server, "probehost_probe_degraded{"),
        "probehost_probe_degraded{probe=\"database\"} 1"
    );
    assert_eq!(
        metric(&server, "probehost_probe_up{"),
        "probehost_probe_up{probe=\"database\"} 0"
    );
    assert_eq!(metric(&server, "probehost_ready "), "probehost_ready 1");
    let log = server.log_when(|l| l.contains("probe is degraded"));
    assert!(log.contains("probe is degraded"), "{log}");
    // The exec probe asks the running server, so it follows the same rules.
    let exec = run(probehost()
        .arg("-c")
        .arg(&config)
        .args(["probe", "--ready"]));
    assert_eq!((exec.code, exec.stdout.as_str()), (0, "Ok\n"), "{exec:?}");

    // Back: no longer degraded.
    proxy.set_mode(Mode::Pass);
    assert!(eventually(Duration::from_secs(10), || {
        server.get("/readyz?verbose").body == "[+]database ok\nreadiness check passed\n"
    }));
    assert_eq!(
        metric(&server, "probehost_probe_degraded{"),
        "probehost_probe_degraded{probe=\"database\"} 0"
    );
    assert_eq!(json(&server)["status"], "ready");
}

#[test]
fn the_default_gate_always_fails_readiness_when_the_database_goes() {
    require(Service::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Refuse);
    let dir = TestDir::new();
    let (server, _) = server(&dir, &proxy, Some("always"));
    boot_down_then_pass_then_fail(&proxy, &server);

    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "db: could not connect to database")
    );
    let verbose = server.get("/readyz?verbose");
    assert_eq!(
        (verbose.status, verbose.body.as_str()),
        (
            503,
            "[-]database failed: db: could not connect to database\nreadiness check failed\n"
        )
    );
    assert_eq!(json(&server)["status"], "not ready");
    assert_eq!(
        metric(&server, "probehost_probe_degraded{"),
        "probehost_probe_degraded{probe=\"database\"} 0"
    );
    assert_eq!(metric(&server, "probehost_ready "), "probehost_ready 0");
}

#[test]
fn a_never_gate_reports_without_gating_even_at_boot() {
    require(Service::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Refuse);
    let dir = TestDir::new();
    let (server, config) = server(&dir, &proxy, Some("never"));
    let verbose = server.get("/readyz?verbose");
    assert_eq!(
        (verbose.status, verbose.body.as_str()),
        (
            200,
            "[!]database degraded: db: could not connect to database\nreadiness check passed\n"
        )
    );
    drop(server);
    // One evaluation in the exec probe's own process: the same rules.
    let exec = run(probehost()
        .arg("-c")
        .arg(&config)
        .args(["probe", "--ready"]));
    assert_eq!((exec.code, exec.stdout.as_str()), (0, "Ok\n"), "{exec:?}");
}

#[test]
fn an_exec_probe_on_its_own_has_never_passed_so_a_startup_gate_holds() {
    require(Service::Postgres);
    let proxy = FaultProxy::start(Service::Postgres.address(), Mode::Refuse);
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[databases.default]\nurl = {:?}\n\n\
         [probes.database]\ncomponent = \"builtin:database\"\ngate = \"startup\"\n",
        postgres_url(proxy.address())
    ));
    let exec = run(probehost()
        .arg("-c")
        .arg(&config)
        .args(["probe", "--ready", "--local"]));
    assert_eq!(
        (exec.code, exec.stdout.as_str()),
        (1, "db: could not connect to database\n"),
        "{exec:?}"
    );
}

#[test]
fn an_unknown_gate_is_a_config_error() {
    let dir = TestDir::new();
    let config =
        dir.config("[probes.database]\ncomponent = \"builtin:database\"\ngate = \"sometimes\"\n");
    let output = run(probehost().arg("-c").arg(&config).args(["config", "check"]));
    assert_eq!(output.code, 2, "{output:?}");
    assert!(
        output.stderr.contains(
            "probes.database.gate: unknown gate \"sometimes\" (expected one of: always, startup, never)"
        ),
        "{output:?}"
    );
}
