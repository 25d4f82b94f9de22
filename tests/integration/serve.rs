//! `probehost serve`: the HTTP contract against real services.

use std::time::Duration;

use crate::harness::*;

/// A server whose `default` database is `url`, with the bundled probes.
fn with_database(dir: &TestDir, url: &str, timeout: &str) -> std::path::PathBuf {
    dir.config(&format!(
        "{}[readiness]\ntimeout = {timeout:?}\n[databases.default]\nurl = {url:?}\n",
        server_section()
    ))
}

fn database_and_memcached(database_url: &str, memcached: &[String], timeout: &str) -> String {
    let servers: Vec<String> = memcached.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "{}[readiness]\ntimeout = {timeout:?}\n\n[databases.default]\nurl = {database_url:?}\n\n\
         [caches.default]\nservers = [{}]\n",
        server_section(),
        servers.join(", ")
    )
}

#[test]
fn livez_and_healthz_answer_ok_while_dependencies_are_stopped_or_frozen() {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Freeze);
    let frozen = Memcached::start();
    frozen.freeze();
    let mut stopped = Memcached::start();
    stopped.stop();
    let dir = TestDir::new();
    let config = dir.config(&database_and_memcached(
        &postgres_url(postgres.address()),
        &[frozen.address().to_string(), stopped.address().to_string()],
        "500ms",
    ));
    let server = Server::start(&config);

    for path in ["/livez", "/healthz"] {
        let response = server.get(path);
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "Ok"),
            "{path}"
        );
        assert_eq!(response.header("content-type"), Some("text/plain"));
    }
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body, "db: could not connect to database");
    assert_eq!(ready.header("content-type"), Some("text/plain"));
    assert!(
        postgres.accepted() > 0,
        "the readiness check reached the frozen database"
    );
}

#[test]
fn readyz_is_ok_with_postgres_mariadb_sqlite_and_memcached_up() {
    require(Service::Postgres);
    require(Service::MariaDb);
    require(Service::Memcached);
    let second = Memcached::start();
    let dir = TestDir::new();
    let sqlite = dir.path().join("app.sqlite3");
    let config = dir.config(&format!(
        "{}[databases.default]\nurl = {POSTGRES_URL:?}\n[databases.maria]\nurl = {MARIADB_URL:?}\n\
         [databases.lite]\nurl = \"sqlite://{}\"\n\
         [caches.default]\nservers = [\"127.0.0.1:11211\", \"{}\"]\n",
        server_section(),
        sqlite.display(),
        second.address()
    ));
    let server = Server::start(&config);
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "Ok"),
        "log:\n{}",
        server.log()
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));
}

#[test]
fn readyz_is_503_when_a_database_alias_points_at_a_closed_port() {
    require(Service::Postgres);
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[databases.default]\nurl = {POSTGRES_URL:?}\n[databases.gone]\nurl = \"postgres://postgres@{}/test\"\n",
        server_section(),
        closed_port()
    ));
    let server = Server::start(&config);
    let response = server.get("/readyz");
    assert_eq!(response.status, 503);
    assert_eq!(response.body, "db: could not connect to database");
    let log = server.log_when(|log| log.contains("gone"));
    assert!(
        log.contains("gone"),
        "the log names the failing alias:\n{log}"
    );
}

#[test]
fn readyz_recovers_without_restart_when_the_database_comes_back() {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Refuse);
    let dir = TestDir::new();
    let config = with_database(&dir, &postgres_url(postgres.address()), "800ms");
    let server = Server::start(&config);
    assert_eq!(server.get("/readyz").status, 503);
    postgres.set_mode(Mode::Pass);
    assert!(
        eventually(Duration::from_secs(10), || server.get("/readyz").status
            == 200),
        "readiness did not recover; log:\n{}",
        server.log()
    );
    assert_eq!(server.get("/readyz").body, "Ok");
}

#[test]
fn readyz_recovers_when_a_frozen_database_thaws() {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Pass);
    let dir = TestDir::new();
    let config = with_database(&dir, &postgres_url(postgres.address()), "500ms");
    let server = Server::start(&config);
    // Ready first, so the pool holds connections that the freeze then strands.
    assert_eq!(server.get("/readyz").status, 200);
    postgres.set_mode(Mode::Freeze);
    for _ in 0..3 {
        let response = server.get("/readyz");
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, "db: could not connect to database")
        );
    }
    postgres.set_mode(Mode::Pass);
    assert!(
        eventually(Duration::from_secs(5), || server.get("/readyz").status
            == 200),
        "readiness did not recover after the freeze; log:\n{}",
        server.log()
    );
}

#[test]
fn readyz_is_503_when_one_of_two_memcached_servers_is_down_and_recovers() {
    require(Service::Memcached);
    let mut second = Memcached::start();
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[databases.default]\nurl = \"sqlite://{}\"\n[caches.default]\nservers = [\"127.0.0.1:11211\", \"{}\"]\n",
        server_section(),
        dir.path().join("db.sqlite3").display(),
        second.address()
    ));
    let server = Server::start(&config);
    assert_eq!(server.get("/readyz").status, 200);

    second.stop();
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "cache: could not connect to cache")
    );
    assert!(
        response.elapsed < Duration::from_millis(400),
        "a refused server is reported at once, not at the 800ms deadline: {:?}",
        response.elapsed
    );

    second.restart();
    assert!(
        eventually(Duration::from_secs(10), || server.get("/readyz").status
            == 200),
        "readiness did not recover; log:\n{}",
        server.log()
    );
}

#[test]
fn probes_asking_one_memcached_server_at_once_are_all_ready() {
    require(Service::Memcached);
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[caches.default]\nservers = [\"127.0.0.1:11211\"]\n\
         [probes.first]\ncomponent = \"builtin:memcached\"\n\
         [probes.second]\ncomponent = \"builtin:memcached\"\n\
         [probes.third]\ncomponent = \"builtin:memcached\"\n",
        server_section(),
    ));
    let server = Server::start(&config);
    let all_ok = "[+]first ok\n[+]second ok\n[+]third ok\nreadiness check passed\n";
    for round in 0..30 {
        let answer = server.get("/readyz?verbose");
        assert_eq!(answer.body, all_ok, "round {round}; log:\n{}", server.log());
    }
}

#[test]
fn readyz_is_503_within_deadline_when_database_frozen_while_livez_answers_at_once() {
    require(Service::Postgres);
    let postgres = FaultProxy::start(Service::Postgres.address(), Mode::Freeze);
    let dir = TestDir::new();
    let config = with_database(&dir, &postgres_url(postgres.address()), "600ms");
    let server = Server::start(&config);

    assert_not_ready_in_time_while_live(&server, 1, 600, "db: could not connect to database");
}

#[test]
fn readyz_is_503_within_deadline_when_memcached_frozen() {
    let frozen = Memcached::start();
    frozen.freeze();
    let dir = TestDir::new();
    let config = dir.config(&database_and_memcached(
        &format!("sqlite://{}", dir.path().join("db.sqlite3").display()),
        &[frozen.address().to_string()],
        "600ms",
    ));
    let server = Server::start(&config);
    assert_not_ready_in_time_while_live(&server, 1, 600, "cache: could not connect to cache");
    frozen.thaw();
    assert!(
        eventually(Duration::from_secs(5), || server.get("/readyz").status
            == 200),
        "readiness did not recover after the thaw; log:\n{}",
        server.log()
    );
}

fn test_probe(name: &str, settings: &str) -> String {
    format!("[probes.{name}]\ncomponent = {TEST_PROBE:?}\nconfig = {{ {settings} }}\n")
}

#[test]
fn only_exact_get_requests_on_probe_paths_are_probes() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}{}",
        server_section(),
        test_probe("ok", "action = \"ready\"")
    ));
    let server = Server::start(&config);
    assert_eq!(server.get("/livez?x=1").status, 200);
    assert_eq!(server.get("/readyz?x=1&y").body, "Ok");
    assert_eq!(server.get("/livez/").status, 404);
    assert_eq!(server.get("/LIVEZ").status, 404);
    assert_eq!(server.get("/").status, 404);
    let post = request(server.address, "POST", "/readyz");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
}

#[test]
fn custom_paths_replace_the_defaults_and_a_path_in_both_lists_is_health() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}{}",
        server_section().replace(
            "[server]\n",
            "[server]\nready_paths = [\"/ready\", \"/status\"]\nhealth_paths = [\"/alive\", \"/status\"]\n"
        ),
        test_probe("never", "action = \"not-ready\", message = \"never ready\"")
    ));
    let server = Server::start(&config);
    assert_eq!(server.get("/alive").status, 200);
    assert_eq!(server.get("/ready").body, "never ready");
    let both = server.get("/status");
    assert_eq!(
        (both.status, both.body.as_str()),
        (200, "Ok"),
        "a path in both lists is a health path"
    );
    assert_eq!(server.get("/livez").status, 404);
    assert_eq!(server.get("/readyz").status, 404);
}

#[test]
fn the_first_failing_probe_in_configured_order_answers() {
    let dir = TestDir::new();
    let probes = [
        test_probe("fine", "action = \"ready\""),
        test_probe("slow_failure", "action = \"loop\""),
        test_probe(
            "teapot",
            "action = \"not-ready\", message = \"second\", status = 418",
        ),
    ];
    let config = dir.config(&format!(
        "{}[readiness]\ntimeout = \"400ms\"\n{}{}{}",
        server_section(),
        probes[0],
        probes[1],
        probes[2]
    ));
    let server = Server::start(&config);
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "slow_failure: timed out after 400ms"),
        "the earlier probe wins even though it fails last"
    );

    // A failure first in order answers at once, without waiting for a slow probe
    // after it.
    let config = dir.config(&format!("{}{}{}", server_section(), probes[2], probes[1]));
    let server = Server::start(&config);
    let response = server.get("/readyz");
    assert_eq!((response.status, response.body.as_str()), (418, "second"));
    assert!(
        response.elapsed < Duration::from_millis(300),
        "answered after {:?}, not at once",
        response.elapsed
    );
}

#[test]
fn probes_see_the_http_request() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}{}",
        server_section(),
        test_probe("echo", "action = \"echo\"")
    ));
    let server = Server::start(&config);
    let response = server.get("/readyz?a=1");
    assert_eq!(response.status, 418);
    assert!(
        response
            .body
            .starts_with(r#"request: GET /readyz query=Some("a=1") x-probe=Some("test");"#),
        "{}",
        response.body
    );
}

#[test]
fn empty_path_and_probe_lists_fail_start_up() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "probes = {{}}\n{}",
        server_section().replace(
            "[server]\n",
            "[server]\nready_paths = []\nhealth_paths = []\n"
        )
    ));
    let output = run(probehost().arg("--config").arg(&config).arg("serve"));
    assert_eq!(output.code, 2, "{output:?}");
    assert_eq!(
        output.stderr,
        "2 problems in the configuration:\n  no ready or health paths configured\n  no readiness probes configured\n"
    );

    let config = dir.config(&format!("probes = {{}}\n{}", server_section()));
    let output = run(probehost().arg("--config").arg(&config).arg("serve"));
    assert_eq!(
        (output.code, output.stderr.as_str()),
        (2, "no readiness probes configured\n")
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}{}",
        server_section(),
        test_probe("ok", "action = \"ready\"")
    ));
    let server = Server::start(&config);
    assert_eq!(server.get("/livez").status, 200);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}
