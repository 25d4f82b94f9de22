//! Readiness fails closed: a bundled probe checks every database or cache the
//! configuration names unless its table says otherwise, and one left with
//! nothing to check is a configuration error, never a probe that always passes.

use crate::harness::*;

fn config_with(dir: &TestDir, body: &str) -> std::path::PathBuf {
    dir.config(&format!(
        "{}[readiness]\ntimeout = \"500ms\"\n{body}",
        server_section()
    ))
}

#[test]
fn a_database_probe_without_a_databases_key_checks_the_configured_database() {
    // The config a new user writes after reading the README, the port closed.
    let dir = TestDir::new();
    let config = config_with(
        &dir,
        &format!(
            "[databases.default]\nurl = {:?}\n[probes.database]\ncomponent = \"builtin:database\"\n",
            postgres_url(closed_port())
        ),
    );
    let server = Server::start(&config);
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "db: could not connect to database")
    );
    assert_eq!(
        server.get("/readyz?verbose").body,
        "[-]database failed: db: could not connect to database\nreadiness check failed\n"
    );
}

#[test]
fn a_database_probe_without_a_databases_key_checks_every_database() {
    require(Service::Postgres);
    let dir = TestDir::new();
    let closed = postgres_url(closed_port());
    let both = |second: &str| {
        format!(
            "[databases.default]\nurl = {POSTGRES_URL:?}\n[databases.reports]\nurl = {second:?}\n\
             [probes.database]\ncomponent = \"builtin:database\"\n"
        )
    };
    let server = Server::start(&config_with(&dir, &both(POSTGRES_URL)));
    assert_eq!(server.get("/readyz").status, 200);
    drop(server);

    let server = Server::start(&config_with(&dir, &both(&closed)));
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "db: could not connect to database")
    );
    let log = server.log_when(|log| log.contains("\\\"reports\\\"") || log.contains("\"reports\""));
    assert!(
        log.contains("reports"),
        "the failing alias is logged: {log}"
    );
}

#[test]
fn a_memcached_probe_without_a_caches_key_checks_every_cache() {
    require(Service::Memcached);
    let mut stopped = Memcached::start();
    stopped.stop();
    let dir = TestDir::new();
    let caches = |second: String| {
        format!(
            "[databases.default]\nurl = \"sqlite::memory:\"\n\
             [caches.default]\nservers = [\"127.0.0.1:11211\"]\n[caches.sessions]\nservers = [{second:?}]\n\
             [probes.memcached]\ncomponent = \"builtin:memcached\"\n"
        )
    };
    let server = Server::start(&config_with(&dir, &caches("127.0.0.1:11211".into())));
    assert_eq!(server.get("/readyz").status, 200);
    drop(server);

    let server = Server::start(&config_with(&dir, &caches(stopped.address().to_string())));
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "cache: could not connect to cache")
    );
}

#[test]
fn a_memcached_probe_without_a_caches_key_and_a_closed_cache_is_not_ready() {
    let dir = TestDir::new();
    let config = config_with(
        &dir,
        &format!(
            "[databases.default]\nurl = \"sqlite::memory:\"\n[caches.default]\nservers = [\"{}\"]\n\
             [probes.memcached]\ncomponent = \"builtin:memcached\"\n",
            closed_port()
        ),
    );
    let server = Server::start(&config);
    let response = server.get("/readyz");
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "cache: could not connect to cache")
    );
}

#[test]
fn an_empty_grant_on_a_bundled_probe_stops_start_up_naming_the_probe() {
    let dir = TestDir::new();
    let cases = [
        (
            format!(
                "[databases.default]\nurl = {:?}\n[probes.database]\ncomponent = \"builtin:database\"\ndatabases = []\n",
                postgres_url(closed_port())
            ),
            "probes.database.databases: builtin:database is granted no databases",
        ),
        (
            "[databases.default]\nurl = \"sqlite::memory:\"\n[caches.default]\nservers = [\"127.0.0.1:11211\"]\n\
             [probes.memcached]\ncomponent = \"builtin:memcached\"\ncaches = []\n"
                .to_owned(),
            "probes.memcached.caches: builtin:memcached is granted no caches",
        ),
        (
            "[databases.default]\nurl = \"sqlite::memory:\"\n[probes.memcached]\ncomponent = \"builtin:memcached\"\n"
                .to_owned(),
            "probes.memcached.component: builtin:memcached has no cache to check",
        ),
    ];
    for (body, expected) in cases {
        let config = config_with(&dir, &body);
        for command in [&["serve"][..], &["probe", "--ready"], &["config", "check"]] {
            let output = run(probehost().arg("-c").arg(&config).args(command));
            assert_eq!(output.code, 2, "{command:?} {body}: {output:?}");
            assert!(
                output.stderr.contains(expected),
                "{command:?}: {}",
                output.stderr
            );
            assert!(output.stdout.is_empty(), "{command:?}: {}", output.stdout);
        }
    }
}

#[test]
fn config_check_prints_the_grants_each_probe_resolves_to() {
    let dir = TestDir::new();
    let config = config_with(
        &dir,
        &format!(
            "[databases.default]\nurl = \"sqlite::memory:\"\n[databases.reports]\nurl = \"sqlite::memory:\"\n\
             [caches.default]\nservers = [\"127.0.0.1:11211\"]\n\
             [probes.database]\ncomponent = \"builtin:database\"\n\
             [probes.memcached]\ncomponent = \"builtin:memcached\"\n\
             [probes.redis]\ncomponent = {REDIS_PROBE:?}\n"
        ),
    );
    let output = run(probehost().arg("-c").arg(&config).args(["config", "check"]));
    assert_eq!(output.code, 0, "{output:?}");
    let table = |name: &str| {
        let start = output
            .stdout
            .find(&format!("[probes.{name}]\n"))
            .unwrap_or_else(|| panic!("no [probes.{name}] in {}", output.stdout));
        let rest = &output.stdout[start..];
        rest[..rest[1..].find("\n[").map_or(rest.len(), |e| e + 1)].to_owned()
    };
    let database = table("database");
    assert!(
        database.contains("databases = [\"default\", \"reports\"]"),
        "{database}"
    );
    let memcached = table("memcached");
    assert!(memcached.contains("caches = [\"default\"]"), "{memcached}");
    // A user probe: nothing implied.
    let redis = table("redis");
    assert!(
        redis.contains("databases = []") && redis.contains("caches = []"),
        "{redis}"
    );
    assert!(!redis.contains("network"), "{redis}");
}

/// A loopback server that reads one request line from each connection and
/// answers with `reply`, then closes.
fn answering(reply: &'static [u8]) -> std::net::SocketAddr {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let _ = (&stream).write_all(reply);
                }
            });
        }
    });
    address
}

#[test]
fn a_memcached_probe_is_ready_only_on_a_whole_stats_reply() {
    let cases: [(&[u8], bool); 5] = [
        (b"STAT pid 1\r\nSTAT uptime 5\r\nEND\r\n", true),
        // Cut in the middle of the reply, as a server dying or a proxy
        // cutting would.
        (b"STAT pid 1\r\nSTAT upt", false),
        (b"STAT pid 1\r\nSTAT uptime 5\r\n", false),
        (b"SERVER_ERROR out of memory\r\n", false),
        // Something that is not memcached at all.
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", false),
    ];
    for (reply, ready) in cases {
        let address = answering(reply);
        let dir = TestDir::new();
        let config = config_with(
            &dir,
            &format!(
                "[caches.default]\nservers = [\"{address}\"]\n\
                 [probes.cache]\ncomponent = \"builtin:memcached\"\n"
            ),
        );
        let server = Server::start(&config);
        let response = server.get("/readyz");
        let reply = String::from_utf8_lossy(reply);
        if ready {
            assert_eq!(
                (response.status, response.body.as_str()),
                (200, "Ok"),
                "{reply:?}"
            );
        } else {
            assert_eq!(
                (response.status, response.body.as_str()),
                (503, "cache: could not connect to cache"),
                "{reply:?}"
            );
        }
    }
}
