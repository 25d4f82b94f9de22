//! User-style probes from `plugins/`: the Redis probe against real Redis servers
//! and the HTTP-dependency probe against a local HTTP application, each reaching
//! only what its `network` or `http` grant allows.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;

/// A server with one probe, `subject`, from `component` with `table` (the rest
/// of its `[probes.subject]` table).
fn server_with(component: &str, table: &str) -> (TestDir, Server) {
    server_with_env(component, table, &[])
}

fn server_with_env(component: &str, table: &str, env: &[(&str, &str)]) -> (TestDir, Server) {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[readiness]\ntimeout = \"2s\"\n[probes.subject]\ncomponent = {component:?}\n{table}\n",
        server_section()
    ));
    let mut command = probehost();
    command.arg("--config").arg(&config).arg("serve");
    for (k, v) in env {
        command.env(k, v);
    }
    let server = Server::start_with(&mut command);
    (dir, server)
}

/// Send each command to the Redis at `address` on one connection, expecting
/// `+OK` for each.
fn redis_command(address: SocketAddr, commands: &[&[&str]]) {
    use std::io::{BufRead, Write};
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    for command in commands {
        let mut encoded = format!("*{}\r\n", command.len());
        for arg in *command {
            encoded.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        (&stream).write_all(encoded.as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert_eq!(reply, "+OK\r\n", "{command:?}");
    }
}

fn redis_table(address: SocketAddr, grant: Option<SocketAddr>, extra: &str) -> String {
    let grant = grant.map_or(String::new(), |g| format!("network = [\"{g}\"]\n"));
    format!("{grant}config = {{ address = \"{address}\"{extra} }}")
}

/// The same Redis probe, written in Rust (`plugins/redis`) and in Python (the
/// Python SDK's port of the original's documented example).
#[derive(Clone, Copy)]
enum Redis {
    Rust,
    Python,
}

impl Redis {
    fn component(self) -> String {
        match self {
            Redis::Rust => REDIS_PROBE.to_owned(),
            Redis::Python => python_redis_probe().display().to_string(),
        }
    }

    fn ready_against_the_running_redis(self) {
        require(Service::Redis);
        let redis = Service::Redis.address();
        let (_dir, server) = server_with(&self.component(), &redis_table(redis, Some(redis), ""));
        assert_answer(&server, (200, "Ok"));
    }

    fn not_ready_against_a_closed_port(self) {
        let closed = closed_port();
        let (_dir, server) = server_with(&self.component(), &redis_table(closed, Some(closed), ""));
        assert_answer(&server, (503, "redis: could not connect"));
        let log = server.log_when(|log| {
            log.contains("redis probe failed") && log.to_lowercase().contains("refused")
        });
        assert!(
            log.contains("redis probe failed") && log.to_lowercase().contains("refused"),
            "the reason is logged:\n{log}"
        );
    }

    fn not_ready_in_time_against_a_frozen_redis(self) {
        let redis = PrivateServer::redis(None);
        let (_dir, server) = server_with(
            &self.component(),
            &redis_table(
                redis.address(),
                Some(redis.address()),
                ", timeout = \"300ms\"",
            ),
        );
        assert_answer(&server, (200, "Ok"));
        redis.freeze();
        let response = assert_answer(&server, (503, "redis: could not connect"));
        assert!(
            response.elapsed < Duration::from_millis(300 + 700),
            "answered after {:?}, past the probe's 300ms timeout",
            response.elapsed
        );
        assert_eq!(server.get("/livez").status, 200);
        redis.thaw();
        assert!(
            eventually(Duration::from_secs(5), || server.get("/readyz").status
                == 200),
            "ready again after the thaw; log:\n{}",
            server.log()
        );
    }

    fn authenticates_with_a_password_from_the_environment(self) {
        let redis = PrivateServer::redis(Some("s3cret-pass"));
        let table = redis_table(
            redis.address(),
            Some(redis.address()),
            ", password = \"${REDIS_PASSWORD}\"",
        );

        let (_dir, server) = server_with_env(
            &self.component(),
            &table,
            &[("REDIS_PASSWORD", "wrong-pass")],
        );
        assert_answer(&server, (503, "redis: could not connect"));
        let log = server.log_when(|log| log.contains("WRONGPASS"));
        assert!(log.contains("WRONGPASS"), "{log}");
        assert!(
            !log.contains("wrong-pass"),
            "the password is never logged:\n{log}"
        );

        let (_dir, server) = server_with_env(
            &self.component(),
            &table,
            &[("REDIS_PASSWORD", "s3cret-pass")],
        );
        assert_answer(&server, (200, "Ok"));

        // An ACL user of its own (`username`), as Redis 6 has them.
        redis_command(
            redis.address(),
            &[
                &["AUTH", "s3cret-pass"],
                &[
                    "ACL",
                    "SETUSER",
                    "probe",
                    "on",
                    ">probe-pass",
                    "+ping",
                    "+role",
                ],
            ],
        );
        let user_table = |password: &str| {
            redis_table(
                redis.address(),
                Some(redis.address()),
                &format!(", username = \"probe\", password = \"{password}\""),
            )
        };
        let (_dir, server) = server_with(&self.component(), &user_table("probe-pass"));
        assert_answer(&server, (200, "Ok"));
        let (_dir, server) = server_with(&self.component(), &user_table("s3cret-pass"));
        assert_answer(&server, (503, "redis: could not connect"));
        let log = server.log_when(|log| log.contains("WRONGPASS"));
        assert!(log.contains("WRONGPASS"), "{log}");

        // Without a password the server refuses PING.
        let (_dir, server) = server_with(
            &self.component(),
            &redis_table(redis.address(), Some(redis.address()), ""),
        );
        assert_answer(&server, (503, "redis: could not connect"));
        let log = server.log_when(|log| log.contains("NOAUTH"));
        assert!(log.contains("NOAUTH"), "{log}");
    }

    fn cannot_connect_without_a_network_grant(self) {
        require(Service::Redis);
        let redis = Service::Redis.address();
        let (_dir, server) = server_with(&self.component(), &redis_table(redis, None, ""));
        assert_answer(&server, (503, "redis: could not connect"));
        let log = server.log_when(|log| log.to_lowercase().contains("permission denied"));
        assert!(log.to_lowercase().contains("permission denied"), "{log}");

        // A grant for another port does not reach this one.
        let other: SocketAddr = "127.0.0.1:6380".parse().unwrap();
        let (_dir, server) = server_with(&self.component(), &redis_table(redis, Some(other), ""));
        assert_answer(&server, (503, "redis: could not connect"));
    }
}

#[test]
fn the_rust_redis_probe_is_ready_against_the_running_redis() {
    Redis::Rust.ready_against_the_running_redis();
}

#[test]
fn the_rust_redis_probe_is_not_ready_against_a_closed_port() {
    Redis::Rust.not_ready_against_a_closed_port();
}

#[test]
fn the_rust_redis_probe_is_not_ready_within_its_deadline_against_a_frozen_redis() {
    Redis::Rust.not_ready_in_time_against_a_frozen_redis();
}

#[test]
fn the_rust_redis_probe_authenticates_with_a_password_from_the_environment() {
    Redis::Rust.authenticates_with_a_password_from_the_environment();
}

#[test]
fn the_rust_redis_probe_cannot_connect_without_a_network_grant() {
    Redis::Rust.cannot_connect_without_a_network_grant();
}

#[test]
fn the_python_redis_probe_is_ready_against_the_running_redis() {
    Redis::Python.ready_against_the_running_redis();
}

#[test]
fn the_python_redis_probe_is_not_ready_against_a_closed_port() {
    Redis::Python.not_ready_against_a_closed_port();
}

#[test]
fn the_python_redis_probe_is_not_ready_within_its_deadline_against_a_frozen_redis() {
    Redis::Python.not_ready_in_time_against_a_frozen_redis();
}

#[test]
fn the_python_redis_probe_authenticates_with_a_password_from_the_environment() {
    Redis::Python.authenticates_with_a_password_from_the_environment();
}

#[test]
fn the_python_redis_probe_cannot_connect_without_a_network_grant() {
    Redis::Python.cannot_connect_without_a_network_grant();
}

#[test]
fn the_rust_redis_probe_resolves_a_granted_host_name() {
    require(Service::Redis);
    let table = "network = [\"localhost:6379\"]\nconfig = { address = \"localhost:6379\" }";
    let (_dir, server) = server_with(REDIS_PROBE, table);
    assert_answer(&server, (200, "Ok"));
}

#[test]
fn the_rust_redis_probe_can_require_a_master() {
    let primary = PrivateServer::redis(None);
    let replica = PrivateServer::redis_replica_of(primary.address());
    let role = ", role = \"master\"";

    let (_dir, server) = server_with(
        REDIS_PROBE,
        &redis_table(primary.address(), Some(primary.address()), role),
    );
    assert_answer(&server, (200, "Ok"));

    let (_dir, server) = server_with(
        REDIS_PROBE,
        &redis_table(replica.address(), Some(replica.address()), role),
    );
    assert_answer(&server, (503, "redis: not a master"));

    // `role = "any"` (the default) accepts the replica.
    let (_dir, server) = server_with(
        REDIS_PROBE,
        &redis_table(replica.address(), Some(replica.address()), ""),
    );
    assert_answer(&server, (200, "Ok"));
}

/// `protocol = "3"`: the probe opens with `HELLO 3`, authenticating in it,
/// and reads RESP3 replies from then on (ROLE included).
#[test]
fn the_rust_redis_probe_speaks_resp3_with_hello() {
    let redis = PrivateServer::redis(Some("s3cret-pass"));
    let table = |extra: &str| {
        redis_table(
            redis.address(),
            Some(redis.address()),
            &format!(", protocol = \"3\"{extra}"),
        )
    };

    let (_dir, server) = server_with(
        REDIS_PROBE,
        &table(", password = \"s3cret-pass\", role = \"master\""),
    );
    assert_answer(&server, (200, "Ok"));

    let (_dir, server) = server_with(REDIS_PROBE, &table(", password = \"wrong-pass\""));
    assert_answer(&server, (503, "redis: could not connect"));
    let log = server.log_when(|log| log.contains("HELLO 3 refused"));
    assert!(
        log.contains("HELLO 3 refused: WRONGPASS"),
        "the reason is logged:\n{log}"
    );
    assert!(
        !log.contains("wrong-pass"),
        "the password is never logged:\n{log}"
    );

    // Without credentials HELLO itself is refused.
    let (_dir, server) = server_with(REDIS_PROBE, &table(""));
    assert_answer(&server, (503, "redis: could not connect"));
    let log = server.log_when(|log| log.contains("HELLO 3 refused"));
    assert!(log.contains("HELLO 3 refused: NOAUTH"), "{log}");

    let (_dir, server) = server_with(
        REDIS_PROBE,
        &redis_table(redis.address(), Some(redis.address()), ", protocol = \"4\""),
    );
    assert_answer(&server, (503, "redis: protocol must be 2 or 3, not \"4\""));
}

fn http_table(app: &Upstream, path: &str, extra: &str) -> String {
    format!(
        "http = [\"{}\"]\nconfig = {{ url = \"{}{path}\"{extra} }}",
        app.url(),
        app.url()
    )
}

#[test]
fn the_http_probe_is_ready_on_200_and_not_ready_on_500_with_the_status() {
    let app = Upstream::start();
    let (_dir, server) = server_with(HTTP_PROBE, &http_table(&app, "/", ", contains = \"app\""));
    assert_answer(&server, (200, "Ok"));

    let (_dir, server) = server_with(HTTP_PROBE, &http_table(&app, "/status?code=500", ""));
    let expected = format!(
        "http: status 500 from {}/status?code=500 (expected 200-399)",
        app.url()
    );
    assert_answer(&server, (503, &expected));
    assert!(
        app.seen()
            .iter()
            .any(|r| r.path_and_query == "/status?code=500"),
        "the application received the probe's request"
    );
}

#[test]
fn the_http_probe_checks_the_body_and_the_status_range() {
    let app = Upstream::start();
    let (_dir, server) = server_with(
        HTTP_PROBE,
        &http_table(&app, "/", ", contains = \"healthy\""),
    );
    assert_answer(
        &server,
        (
            503,
            &format!(
                "http: the answer of {}/ does not contain \"healthy\"",
                app.url()
            ),
        ),
    );
    let (_dir, server) = server_with(
        HTTP_PROBE,
        &http_table(&app, "/status?code=404", ", status = \"200-299,404\""),
    );
    assert_answer(&server, (200, "Ok"));
}

#[test]
fn the_http_probe_cannot_reach_an_origin_outside_its_grant() {
    let app = Upstream::start();
    let other = Upstream::start();
    // Granted `other`, asked for `app`.
    let table = format!(
        "http = [\"{}\"]\nconfig = {{ url = \"{}/\" }}",
        other.url(),
        app.url()
    );
    let (_dir, server) = server_with(HTTP_PROBE, &table);
    let response = server.get("/readyz");
    assert_eq!(response.status, 503);
    assert!(
        response.body.contains("request not granted"),
        "{}",
        response.body
    );
    assert!(app.seen().is_empty(), "no request reached the application");

    // No grant at all.
    let (_dir, server) = server_with(
        HTTP_PROBE,
        &format!("config = {{ url = \"{}/\" }}", app.url()),
    );
    assert!(server.get("/readyz").body.contains("request not granted"));
    assert!(app.seen().is_empty());
}

/// A redirect is an answer, not an instruction: the probe never follows it,
/// so a granted origin cannot send it to one outside the grant.
#[test]
fn the_http_probe_does_not_follow_redirects() {
    let app = Upstream::start();
    let elsewhere = Upstream::start();
    let path = format!("/redirect?to={}/secret", elsewhere.url());
    // Like Kubernetes' httpGet, the default range counts a 3xx as ready.
    let (_dir, server) = server_with(HTTP_PROBE, &http_table(&app, &path, ""));
    assert_answer(&server, (200, "Ok"));
    let (_dir, server) = server_with(HTTP_PROBE, &http_table(&app, &path, ", status = \"200\""));
    assert_answer(
        &server,
        (
            503,
            &format!("http: status 302 from {}{path} (expected 200)", app.url()),
        ),
    );
    assert_eq!(app.seen().len(), 2);
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
}

#[test]
fn the_http_probe_times_out_on_a_slow_dependency() {
    let app = Upstream::start();
    let (_dir, server) = server_with(
        HTTP_PROBE,
        &http_table(&app, "/slow?ms=5000", ", timeout = \"300ms\""),
    );
    let response = server.get("/readyz");
    assert_eq!(response.status, 503, "{}", response.body);
    assert!(response.body.contains("timed out"), "{}", response.body);
    assert!(
        response.elapsed < Duration::from_millis(1500),
        "{:?}",
        response.elapsed
    );
}

#[test]
fn the_http_probe_is_not_ready_at_once_against_a_closed_port() {
    let closed = closed_port();
    let (_dir, server) = server_with(
        HTTP_PROBE,
        &format!(
            "http = [\"http://{closed}\"]\nconfig = {{ url = \"http://{closed}/\", timeout = \"10s\" }}"
        ),
    );
    let response = server.get("/readyz");
    assert_eq!(response.status, 503, "{}", response.body);
    // A refusal is an answer: 10 s were allowed, milliseconds are needed (the
    // margin is for a loaded machine).
    assert!(
        response.elapsed < Duration::from_secs(5),
        "{:?}: {}",
        response.elapsed,
        response.body
    );
    let log = server.log();
    assert!(
        response.body.to_lowercase().contains("refused") || log.to_lowercase().contains("refused"),
        "the refusal is named: {}\n{log}",
        response.body
    );
    assert!(!response.body.contains("timed out"), "{}", response.body);
}

/// `plugin check` on every component the project ships.
#[test]
fn plugin_check_describes_the_probe_components() {
    for (file, grants) in [
        ("builtin:database", "databases = ["),
        ("builtin:memcached", "caches = ["),
        (REDIS_PROBE, "network = ["),
        (HTTP_PROBE, "http = ["),
        (TEST_PROBE, "databases = ["),
    ] {
        let output = run(probehost().args(["plugin", "check", file]));
        assert_eq!(output.code, 0, "{file}: {}", output.stderr);
        assert!(
            output
                .stdout
                .contains("a probe component (probehost:probe/probe@0.1.0)"),
            "{}",
            output.stdout
        );
        assert!(output.stdout.contains(grants), "{file}:\n{}", output.stdout);
    }
    let output = run(probehost().args(["plugin", "check", REDIS_PROBE]));
    assert!(
        output.stdout.contains("wasi:sockets/tcp@")
            && output
                .stdout
                .contains("TCP connections to granted addresses"),
        "{}",
        output.stdout
    );
}

#[test]
fn plugin_check_rejects_what_is_not_a_probe() {
    let output = run(probehost().args(["plugin", "check", NOT_A_PROBE]));
    assert_eq!(output.code, 1);
    assert!(
        output.stdout.contains("not a probe component") && output.stdout.contains("wasi:cli/run"),
        "{}",
        output.stdout
    );

    let dir = TestDir::new();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "just text").unwrap();
    let output = run(probehost().args(["plugin", "check"]).arg(&text));
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("is not a WebAssembly file"),
        "{}",
        output.stderr
    );

    let output = run(probehost().args(["plugin", "check", "/nonexistent/probe.wasm"]));
    assert_eq!(output.code, 1);
    assert!(output.stderr.contains("cannot read"), "{}", output.stderr);

    let output = run(probehost().args(["plugin", "check"]));
    assert_eq!(output.code, 2, "a missing argument is a usage error");

    let output = run(probehost().args(["plugin", "check", "builtin:redis"]));
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("unknown built-in probe \"redis\""),
        "{}",
        output.stderr
    );
}

#[test]
fn precompile_then_serve_compiles_nothing_at_start() {
    let dir = TestDir::new();
    let cache = dir.path().join("cache");
    let config = dir.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[runtime]\ncache_dir = {:?}\n\
         [databases.default]\nurl = \"sqlite://{}\"\n[probes.redis]\ncomponent = {REDIS_PROBE:?}\n",
        cache.display().to_string(),
        dir.path().join("db.sqlite3").display()
    ));
    let output = run(probehost().arg("--config").arg(&config).arg("precompile"));
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(
        output.stdout.contains("redis: ") && output.stdout.contains(" compiled"),
        "{}",
        output.stdout
    );
    let again = run(probehost().arg("--config").arg(&config).arg("precompile"));
    assert!(again.stdout.contains("already cached"), "{}", again.stdout);

    let server = Server::start(&config);
    let log = server.log();
    assert!(!log.contains("component compiled"), "{log}");
    assert!(log.contains("component loaded from cache"), "{log}");
}

#[test]
fn precompile_without_a_cache_directory_is_an_error() {
    let dir = TestDir::new();
    let config = dir.config("[runtime]\ncache = false\n");
    let output = run(probehost()
        .arg("--config")
        .arg(&config)
        .arg("precompile")
        .env_remove("PROBEHOST_CACHE_DIR"));
    assert_eq!(output.code, 1);
    assert!(
        output.stderr.contains("no compiled-component cache"),
        "{}",
        output.stderr
    );
}

/// `plugin new` writes a crate that builds for wasm32-wasip2 as it is, and the
/// component it builds is a working probe.
#[test]
fn plugin_new_creates_a_probe_crate_that_builds_and_runs() {
    let dir = TestDir::new();
    let crate_dir = dir.path().join("demo");
    let output = run(probehost()
        .args(["plugin", "new", "demo-probe", "--dir"])
        .arg(&crate_dir));
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(
        output.stdout.contains("cargo build --release"),
        "{}",
        output.stdout
    );

    let again = run(probehost()
        .args(["plugin", "new", "demo-probe", "--dir"])
        .arg(&crate_dir));
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    // Its own build, as a user would run it (the registry cache is shared; the
    // target directory persists between test runs to keep this warm).
    let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-new");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = std::process::Command::new(cargo)
        .current_dir(&crate_dir)
        .args(["build", "--release", "--offline"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("running cargo");
    assert!(
        build.status.success(),
        "the new crate does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/demo_probe.wasm");
    let check = run(probehost().args(["plugin", "check"]).arg(&wasm));
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);

    let component = wasm.display().to_string();
    let (_dir, server) = server_with(&component, "");
    assert_answer(&server, (200, "Ok"));
    let (_dir, server) = server_with(&component, "config = { fail = \"true\" }");
    assert_answer(&server, (503, "demo-probe: not ready"));
}
