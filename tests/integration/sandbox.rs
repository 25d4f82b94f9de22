//! Misbehaving and over-reaching probe components are contained: each check ends
//! in time with a reason, and the host keeps serving.

use crate::harness::*;

fn server_with(probe_settings: &str, extra: &str) -> (TestDir, Server) {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[readiness]\ntimeout = \"2s\"\n{extra}\n[probes.subject]\ncomponent = {TEST_PROBE:?}\n{probe_settings}\n",
        server_section()
    ));
    let server = Server::start(&config);
    (dir, server)
}

fn assert_contained(server: &Server, expected: &str) {
    for _ in 0..2 {
        let response = server.get("/readyz");
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, expected),
            "log:\n{}",
            server.log()
        );
        let live = server.get("/livez");
        assert_eq!((live.status, live.body.as_str()), (200, "Ok"));
    }
}

#[test]
fn a_probe_that_loops_forever_times_out() {
    let (_dir, server) = server_with("timeout = \"300ms\"\nconfig = { action = \"loop\" }", "");
    let response = server.get("/readyz");
    assert!(
        response.elapsed < std::time::Duration::from_millis(300 + 500),
        "took {:?}",
        response.elapsed
    );
    assert_contained(&server, "subject: timed out after 300ms");
}

#[test]
fn looping_probes_do_not_delay_liveness() {
    let (_dir, server) = server_with("timeout = \"600ms\"\nconfig = { action = \"loop\" }", "");
    assert_not_ready_in_time_while_live(&server, 4, 600, "subject: timed out after 600ms");
}

#[test]
fn a_probe_that_grows_past_its_memory_cap_is_stopped() {
    let (_dir, server) = server_with("memory = \"16MiB\"\nconfig = { action = \"grow\" }", "");
    assert_contained(&server, "subject: exceeded its memory limit of 16 MiB");
}

#[test]
fn a_probe_that_panics_is_not_ready_with_the_panic_message() {
    let (_dir, server) = server_with("config = { action = \"panic\", message = \"boom\" }", "");
    let response = server.get("/readyz");
    assert_eq!(response.status, 503);
    assert!(
        response
            .body
            .starts_with("subject: crashed: panicked at tests/components/test-probe/src/lib.rs:")
            && response.body.ends_with(": boom"),
        "{}",
        response.body
    );
    assert_eq!(server.get("/livez").status, 200);
}

#[test]
fn a_probe_without_a_grant_cannot_query_a_database() {
    let extra = "[databases.secret]\nurl = \"sqlite::memory:\"\n";
    let (_dir, server) = server_with(
        "config = { action = \"sql\", database = \"secret\" }",
        extra,
    );
    assert_contained(
        &server,
        "not granted: database `secret` is not granted to probe `subject`",
    );

    let (_dir, server) = server_with(
        "databases = [\"secret\"]\nconfig = { action = \"sql\", database = \"secret\" }",
        extra,
    );
    assert_eq!(server.get("/readyz").body, "Ok");
}

#[test]
fn a_probe_without_a_grant_cannot_reach_a_cache() {
    require(Service::Memcached);
    let extra = "[caches.main]\nservers = [\"127.0.0.1:11211\"]\n";
    let settings =
        "config = { action = \"stats\", cache = \"main\", server = \"127.0.0.1:11211\" }";
    let (_dir, server) = server_with(settings, extra);
    assert_contained(
        &server,
        "not granted: server `127.0.0.1:11211` of cache `main` is not granted to probe `subject`",
    );
    let (_dir, server) = server_with(&format!("caches = [\"main\"]\n{settings}"), extra);
    assert_eq!(server.get("/readyz").body, "Ok");
}

#[test]
fn a_probe_sees_no_environment_files_or_network() {
    require(Service::Postgres);
    let cases = [
        (
            "config = { action = \"env\" }".to_owned(),
            "environment: []",
        ),
        (
            "config = { action = \"read-file\", path = \"/etc/passwd\" }".to_owned(),
            "read failed: NotFound",
        ),
        (
            format!(
                "config = {{ action = \"connect\", address = \"{}\" }}",
                Service::Postgres.address()
            ),
            "connect failed: PermissionDenied",
        ),
    ];
    for (settings, expected) in cases {
        let (_dir, server) = server_with(&settings, "");
        let response = server.get("/readyz");
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, expected),
            "{settings}"
        );
    }
}

#[test]
fn a_chatty_probe_is_cut_off_and_still_answers() {
    let (_dir, server) = server_with("config = { action = \"log-flood\", count = 10000 }", "");
    assert_eq!(server.get("/readyz").body, "Ok");
    let log = server.log();
    let lines = log.lines().filter(|l| l.contains("line ")).count();
    assert!(lines <= 32, "{lines} probe log lines reached the host log");
    assert!(log.contains("dropped=9968"), "{log}");
}
