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

/// `/readyz` answers `expected` each of `times` times, `pause` apart.
fn answers_each_time(server: &Server, times: usize, pause_ms: u64, expected: (u16, &str)) {
    for _ in 0..times {
        assert_answer(server, expected);
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
    }
}

#[test]
fn every_check_has_an_instance_of_its_own() {
    // After each evaluation, the next check's instance is made ahead of it: it
    // still serves that one check, so a guest's state never carries over.
    let (_dir, server) = server_with("config = { action = \"count\" }", "");
    answers_each_time(&server, 4, 50, (503, "call 1"));
}

#[test]
fn an_instance_made_ahead_has_the_whole_timeout_from_its_check() {
    // Each check but the first runs in an instance made when the one before it
    // ended, here 800 ms earlier: its 500 ms still count from the check.
    let (_dir, server) = server_with(
        "timeout = \"500ms\"\nconfig = { action = \"sleep\", ms = \"150\" }",
        "",
    );
    answers_each_time(&server, 3, 800, (200, "Ok"));
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
    let log = server.log_when(|log| log.contains("dropped="));
    let lines = log.lines().filter(|l| l.contains("line ")).count();
    assert!(lines <= 32, "{lines} probe log lines reached the host log");
    assert!(log.contains("dropped=9968"), "{log}");
}

#[test]
fn a_probe_that_aborts_is_reported_as_a_trap() {
    let (_dir, server) = server_with("config = { action = \"abort\" }", "");
    let response = server.get("/readyz");
    assert_eq!(response.status, 503);
    assert!(
        response.body.starts_with("subject: crashed: wasm trap:")
            && response.body.contains("unreachable"),
        "{}",
        response.body
    );
    assert_eq!(server.get("/livez").status, 200);
}

#[test]
fn an_enormous_not_ready_message_is_cut() {
    let (_dir, server) = server_with("config = { action = \"big-message\", size = 8000000 }", "");
    let response = server.get("/readyz");
    assert_eq!(response.status, 503);
    assert!(
        response.body.len() <= 4096 + "subject: ".len() && response.body.starts_with("mmmm"),
        "a body of {} bytes",
        response.body.len()
    );
    let json = server.get("/readyz?verbose");
    assert!(json.body.len() < 16 * 1024, "{} bytes", json.body.len());
}

#[test]
fn sockets_reach_only_the_granted_address() {
    require(Service::Postgres);
    require(Service::Redis);
    let connect = |grant: &str, address: &str| {
        let (_dir, server) = server_with(
            &format!("{grant}\nconfig = {{ action = \"connect\", address = \"{address}\" }}"),
            "",
        );
        server.get("/readyz").body
    };
    let postgres = Service::Postgres.address().to_string();
    let redis = Service::Redis.address().to_string();
    assert_eq!(
        connect(&format!("network = [\"{redis}\"]"), &redis),
        "connected"
    );
    assert_eq!(
        connect(&format!("network = [\"{redis}\"]"), &postgres),
        "connect failed: PermissionDenied"
    );
    assert_eq!(connect("", &redis), "connect failed: PermissionDenied");
}

#[test]
fn http_requests_reach_only_granted_origins() {
    let app = Upstream::start();
    let get = |grant: &str| {
        let (_dir, server) = server_with(
            &format!(
                "{grant}\nconfig = {{ action = \"http\", url = \"{}/x\" }}",
                app.url()
            ),
            "",
        );
        server.get("/readyz").body
    };
    assert_eq!(
        get(&format!("http = [\"{}\"]", app.url())),
        "status 200: app"
    );
    let denied = "http failed: request not granted: the origin is not in the probe's `http` grant";
    assert_eq!(get("http = [\"http://127.0.0.1:1\"]"), denied);
    assert_eq!(get(""), denied);
    assert_eq!(app.seen().len(), 1, "only the granted request arrived");
}

/// Every kind of misbehaviour at once, beside a good probe: each hostile probe
/// is reported with its reason, the good one is unaffected, and liveness answers
/// at once throughout.
#[test]
fn hostile_probes_together_leave_the_host_and_the_other_probes_unaffected() {
    let probe = |name: &str, settings: &str| {
        format!(
            "[probes.{name}]\ncomponent = {TEST_PROBE:?}\ntimeout = \"1s\"\nmemory = \"16MiB\"\n{settings}\n"
        )
    };
    let probes = [
        probe("good", "config = { action = \"ready\" }"),
        probe("looper", "config = { action = \"loop\" }"),
        probe("grower", "config = { action = \"grow\" }"),
        probe(
            "panicker",
            "config = { action = \"panic\", message = \"boom\" }",
        ),
        probe("aborter", "config = { action = \"abort\" }"),
        probe(
            "flooder",
            "config = { action = \"log-flood\", count = 20000 }",
        ),
        probe(
            "shouter",
            "config = { action = \"big-message\", size = 4000000 }",
        ),
        probe(
            "reader",
            "config = { action = \"read-file\", path = \"/etc/passwd\" }",
        ),
        probe("snooper", "config = { action = \"env\" }"),
        probe(
            "dialer",
            "config = { action = \"connect\", address = \"127.0.0.1:22\" }",
        ),
        probe(
            "fetcher",
            "config = { action = \"http\", url = \"http://127.0.0.1:1/\" }",
        ),
        // Granted one address or origin, reaching for another.
        probe(
            "strayer",
            "network = [\"127.0.0.1:6379\"]\nconfig = { action = \"connect\", address = \"127.0.0.1:5432\" }",
        ),
        probe(
            "wanderer",
            "http = [\"http://127.0.0.1:9\"]\nconfig = { action = \"http\", url = \"http://127.0.0.1:1/\" }",
        ),
        probe(
            "broadcaster",
            "network = [\"127.0.0.1:6379\"]\nconfig = { action = \"udp\", address = \"127.0.0.1:6379\" }",
        ),
        probe(
            "listener",
            "network = [\"127.0.0.1:6379\"]\nconfig = { action = \"listen\", address = \"127.0.0.1:0\" }",
        ),
        probe(
            "screamer",
            "config = { action = \"stderr-flood\", count = 500, message = \"hoarse\" }",
        ),
    ]
    .concat();
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[readiness]\ntimeout = \"2s\"\n{probes}",
        server_section()
    ));
    let server = Server::start(&config);
    let address = server.address;
    let live = std::thread::spawn(move || {
        let mut slowest = std::time::Duration::ZERO;
        for _ in 0..40 {
            let response = get(address, "/livez");
            assert_eq!(response.status, 200);
            slowest = slowest.max(response.elapsed);
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        slowest
    });
    let response = server.get("/readyz?verbose");
    let slowest_live = live.join().unwrap();
    assert_eq!(response.status, 503);
    let body = &response.body;
    for expected in [
        "[+]good ok",
        "[-]looper failed: looper: timed out after 1000ms",
        "[-]grower failed: grower: exceeded its memory limit of 16 MiB",
        "[-]panicker failed: panicker: crashed: panicked at",
        "[-]aborter failed: aborter: crashed: wasm trap:",
        "[+]flooder ok",
        "[-]shouter failed: mmm",
        "[-]reader failed: read failed: NotFound",
        "[-]snooper failed: environment: []",
        "[-]dialer failed: connect failed: PermissionDenied",
        "[-]fetcher failed: http failed: request not granted",
        "[-]strayer failed: connect failed: PermissionDenied",
        "[-]wanderer failed: http failed: request not granted",
        "[-]broadcaster failed: udp failed: PermissionDenied",
        "[-]listener failed: listen failed: PermissionDenied",
        "[-]screamer failed: screamer: crashed: panicked at",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(expected)),
            "missing {expected:?} in:\n{body}"
        );
    }
    assert!(
        body.len() < 16 * 1024,
        "verbose body of {} bytes",
        body.len()
    );
    assert!(
        response.elapsed < std::time::Duration::from_millis(2500),
        "{:?}",
        response.elapsed
    );
    assert!(
        slowest_live < std::time::Duration::from_millis(200),
        "a liveness answer took {slowest_live:?}"
    );
    // The host is still whole: the good probe alone is ready.
    assert_eq!(server.get("/readyz/good").status, 200);
}

#[test]
fn name_lookups_reach_the_resolver_only_for_granted_names() {
    let resolve = |grant: &str, name: &str| {
        let (_dir, server) = server_with(
            &format!("{grant}\nconfig = {{ action = \"resolve\", name = \"{name}\" }}"),
            "",
        );
        let body = server.get("/readyz").body;
        assert_eq!(server.get("/livez").status, 200);
        body
    };
    // `localhost` resolves here, so only the grant makes the difference.
    assert!(
        resolve("network = [\"localhost:6379\"]", "localhost").starts_with("resolved "),
        "a granted name resolves"
    );
    for grant in ["network = [\"127.0.0.1:6379\"]", ""] {
        let answer = resolve(grant, "localhost");
        assert!(
            answer.starts_with("resolve failed"),
            "{grant:?}: a name outside the grant reached the resolver: {answer}"
        );
    }
}

#[test]
fn udp_and_listening_are_never_allowed() {
    for (action, expected) in [
        ("udp", "udp failed: PermissionDenied"),
        ("listen", "listen failed: PermissionDenied"),
    ] {
        let (_dir, server) = server_with(
            &format!(
                "network = [\"127.0.0.1:6379\"]\nconfig = {{ action = \"{action}\", address = \"127.0.0.1:6379\" }}"
            ),
            "",
        );
        assert_contained(&server, expected);
    }
}

#[test]
fn a_probe_that_floods_stderr_and_stdout_is_bounded() {
    // 1,000 lines of 110 bytes to each stream: fifty times what the host
    // keeps of stderr.
    let (_dir, server) = server_with(
        "config = { action = \"stderr-flood\", count = 1000, message = \"hoarse\" }",
        "",
    );
    let response = server.get("/readyz");
    assert_eq!(response.status, 503);
    assert!(
        response.body.starts_with("subject: crashed: panicked at")
            && response.body.ends_with(": hoarse"),
        "{}",
        response.body
    );
    let log = server.log();
    assert!(
        !log.contains("stderr line") && !log.contains("stdout line"),
        "the flood reached the host log"
    );
    assert_eq!(server.get("/livez").status, 200);
}
