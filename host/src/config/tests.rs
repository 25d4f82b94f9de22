use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    parse(text, Path::new("probehost.toml"), &env(vars))
}

fn problems(text: &str) -> Vec<String> {
    parse_with(text, &[])
        .expect_err("config should be rejected")
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn defaults_are_the_originals() {
    let config = Config::defaults(&env(&[]));
    assert_eq!(config.source, None);
    assert_eq!(config.server.ready_paths, ["/readyz"]);
    assert_eq!(config.server.health_paths, ["/healthz", "/livez"]);
    let probes: Vec<&str> = config.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(probes, ["database", "memcached"]);
    assert_eq!(config.jobs.lock_id, 1000);
    assert!(config.readiness.timeout < Duration::from_secs(1));
    assert_eq!(config.databases.len(), 1);
    assert_eq!(config.databases[0].name, "default");
    assert_eq!(config.databases[0].url, DEFAULT_SQLITE_URL);
    assert_eq!(config.probes[0].databases, ["default"]);
}

#[test]
fn database_url_fills_the_default_database() {
    let config = Config::defaults(&env(&[("DATABASE_URL", "postgres://app@db:5432/app")]));
    assert_eq!(config.databases[0].url, "postgres://app@db:5432/app");

    // A file that names other databases but not `default` gets it from the env too.
    let config = parse_with(
        "[databases.replica]\nurl = \"postgres://r/app\"\n",
        &[("DATABASE_URL", "postgres://p/app")],
    )
    .unwrap();
    let names: Vec<&str> = config.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["default", "replica"]);

    // A file that names `default` wins over the env.
    let config = parse_with(
        "[databases.default]\nurl = \"postgres://file/app\"\n",
        &[("DATABASE_URL", "postgres://env/app")],
    )
    .unwrap();
    assert_eq!(config.databases[0].url, "postgres://file/app");
}

#[test]
fn a_full_file_is_read_in_order() {
    let text = r#"
[server]
listen = "127.0.0.1:9000"
ready_paths = ["/ready"]
health_paths = ["/live", "/health"]

[readiness]
timeout = "500ms"

[databases.default]
url = "postgres://app:${DB_PASSWORD}@127.0.0.1:5432/app"
connect_timeout = 2

[databases.other]
url = "mysql://root@127.0.0.1:3306/test"
query_timeout = "1.5s"

[caches.default]
servers = ["127.0.0.1:11211", "127.0.0.1:11212"]
timeout = "250ms"

[probes.memcached]
component = "builtin:memcached"
caches = "*"

[probes.database]
component = "builtin:database"
databases = ["other", "default"]
timeout = "300ms"
memory = "16MiB"
config = { mode = "strict", retries = 3, verbose = true }

[jobs.lockedmigrate]
lock_id = 42

[runtime]
cache = false
"#;
    let config = parse_with(text, &[("DB_PASSWORD", "hunter2")]).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(config.server.ready_paths, ["/ready"]);
    assert_eq!(config.readiness.timeout, Duration::from_millis(500));
    assert_eq!(
        config.databases[0].url,
        "postgres://app:hunter2@127.0.0.1:5432/app"
    );
    assert_eq!(config.databases[0].connect_timeout, Duration::from_secs(2));
    assert_eq!(
        config.databases[1].query_timeout,
        Duration::from_millis(1500)
    );
    assert_eq!(
        config.caches[0].servers,
        ["127.0.0.1:11211", "127.0.0.1:11212"]
    );
    let names: Vec<&str> = config.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["memcached", "database"],
        "probes keep the file's order"
    );
    assert_eq!(config.probes[0].caches, ["default"]);
    assert_eq!(
        config.probes[0].timeout,
        Duration::from_millis(500),
        "probe timeout defaults to readiness.timeout"
    );
    assert_eq!(config.probes[1].databases, ["other", "default"]);
    assert_eq!(config.probes[1].memory, 16 << 20);
    assert_eq!(
        config.probes[1].config,
        [
            ("mode".to_owned(), "strict".to_owned()),
            ("retries".to_owned(), "3".to_owned()),
            ("verbose".to_owned(), "true".to_owned())
        ]
    );
    assert_eq!(
        config.probes[1].component_location.as_ref().unwrap().line,
        27
    );
    assert_eq!(config.jobs.lock_id, 42);
    assert_eq!(config.runtime.cache_dir, None);
}

#[test]
fn every_problem_is_reported_with_its_place() {
    let text = r#"
[server]
listen = "nowhere"
ready_paths = "readyz"
bogus = 1

[databases.default]
url = "redis://x"
connect_timeout = "soon"

[probes.db]
component = "builtin:nope"
databases = ["missing"]
memory = "lots"
timeout = 0
"#;
    assert_eq!(
        problems(text),
        [
            r#"probehost.toml:3:10: server.listen: "nowhere" is not an IP address and port, e.g. "0.0.0.0:8080""#,
            r#"probehost.toml:4:15: server.ready_paths: "readyz" is not a URL path (it must start with `/` and have no query)"#,
            r#"probehost.toml:5:1: server.bogus: unknown key (expected one of: listen, socket, ready_paths, health_paths, startup_paths, metrics_path, upstream, upstream_timeout, drain, grace, header_read_timeout, send_timeout, max_connections, threads, verbose, liveness_upstream, readiness_upstream)"#,
            r#"probehost.toml:8:7: databases.default.url: invalid database URL: unsupported scheme `redis` (expected postgres, postgresql, mysql, mariadb or sqlite)"#,
            r#"probehost.toml:9:19: databases.default.connect_timeout: "soon" is not a positive duration (use e.g. "800ms", "5s" or 2.5)"#,
            r#"probehost.toml:12:13: probes.db.component: unknown built-in probe "builtin:nope" (known: builtin:database, builtin:memcached, builtin:migrations)"#,
            r#"probehost.toml:13:14: probes.db.databases: no database named "missing" is configured (configured: none)"#,
            r#"probehost.toml:14:10: probes.db.memory: "lots" is not a size (use e.g. "64MiB", "512KiB" or a number of bytes)"#,
            r#"probehost.toml:15:11: probes.db.timeout: 0 is not a positive duration (use e.g. "800ms", "5s" or 2.5)"#,
        ],
        "every problem, in file order"
    );
}

#[test]
fn wrong_types_and_missing_fields_are_named() {
    let text = r#"
readiness = 5
[caches.main]
timeout = "1s"
[probes.p]
databases = [1]
config = { nested = { a = 1 } }
"#;
    assert_eq!(
        problems(text),
        [
            "probehost.toml:2:13: readiness: expected a table, found an integer",
            "probehost.toml:3:1: caches.main.servers: missing (it is required)",
            "probehost.toml:5:1: probes.p.component: missing (it is required)",
            "probehost.toml:6:14: probes.p.databases: expected an array of strings, found an element that is an integer",
            "probehost.toml:7:21: probes.p.config.nested: expected a string, number or boolean, found an inline table",
        ]
    );
}

#[test]
fn unset_variables_are_errors_at_their_place() {
    let text = "[databases.default]\nurl = \"postgres://app:${DB_PASSWORD}@db/app\"\n";
    assert_eq!(
        problems(text),
        ["probehost.toml:2:7: databases.default.url: environment variable DB_PASSWORD is not set"]
    );
}

#[test]
fn syntax_errors_name_the_place() {
    let found = problems("[server\nlisten = 1\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("probehost.toml:1:"), "{}", found[0]);
    assert!(found[0].contains("invalid TOML"), "{}", found[0]);
}

#[test]
fn component_files_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.wasm"), b"").unwrap();
    let file = dir.path().join("probehost.toml");
    let text =
        "[probes.mine]\ncomponent = \"probe.wasm\"\n[probes.gone]\ncomponent = \"gone.wasm\"\n";
    let err = parse(text, &file, &env(&[])).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].key, "probes.gone.component");
    assert!(
        err.problems[0]
            .message
            .starts_with("component file not found")
    );
}

#[test]
fn empty_lists_fail_start_up_with_the_originals_messages() {
    let config = parse_with(
        "probes = {}\n[server]\nready_paths = []\nhealth_paths = []\n",
        &[],
    )
    .unwrap();
    let messages: Vec<String> = config
        .check_serve()
        .unwrap_err()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        messages,
        [
            "no ready or health paths configured",
            "no readiness probes configured"
        ]
    );
    assert_eq!(
        config.check_ready().unwrap_err().to_string(),
        "no readiness probes configured"
    );
}

#[test]
fn rendering_masks_secrets() {
    let text = r#"
[databases.default]
url = "postgres://app:hunter2@db:5432/app"
[databases.other]
url = "postgres://app@db:5432/app?sslmode=require&password=hunter2"
[probes.custom]
component = "builtin:database"
databases = "*"
config = { password = "hunter2", region = "eu" }
"#;
    let rendered = parse_with(text, &[]).unwrap().render();
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(
        rendered.contains("postgres://app:****@db:5432/app"),
        "{rendered}"
    );
    assert!(rendered.contains(r#"password = "****""#), "{rendered}");
    assert!(rendered.contains(r#"region = "eu""#), "{rendered}");
    // What was rendered is itself a valid configuration.
    parse_with(&rendered, &[]).unwrap();
}

#[test]
fn durations_are_bounded() {
    assert_eq!(
        problems("[readiness]\ntimeout = 9223372036854775807\n"),
        ["probehost.toml:2:11: readiness.timeout: must be at most 1h"]
    );
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse::parse_size("64MiB"), Some(64 << 20));
    assert_eq!(parse::parse_size("512 KiB"), Some(512 << 10));
    assert_eq!(parse::parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse::parse_size("10MB"), Some(10_000_000));
    assert_eq!(parse::parse_size("65536"), Some(65536));
    assert_eq!(parse::parse_size("lots"), None);
}

#[test]
fn cache_dir_follows_the_environment() {
    let config = Config::defaults(&env(&[("HOME", "/home/app")]));
    assert_eq!(
        config.runtime.cache_dir.as_deref(),
        Some(Path::new("/home/app/.cache/probehost"))
    );
    let config = Config::defaults(&env(&[
        ("HOME", "/home/app"),
        ("PROBEHOST_CACHE_DIR", "/var/cache/ph"),
    ]));
    assert_eq!(
        config.runtime.cache_dir.as_deref(),
        Some(Path::new("/var/cache/ph"))
    );
    assert_eq!(Config::defaults(&env(&[])).runtime.cache_dir, None);
}

#[test]
fn network_and_http_grants_are_checked_entry_by_entry() {
    let text = r#"
[probes.p]
component = "builtin:database"
network = ["127.0.0.1:6379", "redis", "::1:6379", "cache.svc:6380"]
http = ["http://127.0.0.1:8080", "https://api.example.com/v1", "ftp://x"]
"#;
    assert_eq!(
        problems(text),
        [
            r#"probehost.toml:4:30: probes.p.network: "redis" has no port: write HOST:PORT, e.g. "127.0.0.1:6379""#,
            r#"probehost.toml:4:39: probes.p.network: write an IPv6 address in brackets, e.g. [::1]:6379"#,
            r#"probehost.toml:5:34: probes.p.http: "https://api.example.com/v1": an origin has no path, query or fragment; the grant covers every path of it"#,
            r#"probehost.toml:5:64: probes.p.http: "ftp://x": the scheme must be http or https, not "ftp""#,
        ]
    );
    let config = parse_with(
        "[probes.p]\ncomponent = \"builtin:database\"\nnetwork = [\"${REDIS_HOST}:6379\"]\nhttp = [\"https://API.example.com:443\"]\n",
        &[("REDIS_HOST", "redis.default.svc")],
    )
    .unwrap();
    let probe = &config.probes[0];
    assert_eq!(probe.network.len(), 1);
    assert_eq!(probe.network[0].to_string(), "redis.default.svc:6379");
    assert_eq!(probe.http[0].to_string(), "https://api.example.com");
}

#[test]
fn serving_threads_default_to_the_cpus_and_are_bounded() {
    let config = parse_with("", &[]).unwrap();
    assert_eq!(config.server.threads, super::default_threads());
    assert!(config.server.threads >= 1);
    let config = parse_with("[server]\nthreads = 3\n", &[]).unwrap();
    assert_eq!(config.server.threads, 3);
    assert_eq!(
        problems("[server]\nthreads = 0\n"),
        ["probehost.toml:2:11: server.threads: 0 is not between 1 and 64"]
    );
}

#[test]
fn the_probe_socket_is_relative_to_the_file_and_fits_sun_path() {
    let config = parse("", Path::new("/etc/probehost/probehost.toml"), &env(&[])).unwrap();
    assert_eq!(config.server.socket, None);
    let config = parse(
        "[server]\nsocket = \"run/probe.sock\"\n",
        Path::new("/etc/probehost/probehost.toml"),
        &env(&[]),
    )
    .unwrap();
    assert_eq!(
        config.server.socket.as_deref(),
        Some(Path::new("/etc/probehost/run/probe.sock"))
    );
    let long = format!("/run/{}.sock", "x".repeat(100));
    assert_eq!(
        problems(&format!("[server]\nsocket = {long:?}\n")),
        [format!(
            "probehost.toml:2:10: server.socket: {long} is 110 bytes long; a Unix socket's path may have at most 107"
        )]
    );
    assert_eq!(
        problems("[server]\nsocket = \"\"\n"),
        ["probehost.toml:2:10: server.socket: is empty (leave it out for no socket)"]
    );
}

#[test]
fn bundled_probes_check_everything_of_their_kind_unless_told_otherwise() {
    let config = parse_with(
        "[databases.default]\nurl = \"postgres://a/app\"\n[databases.replica]\nurl = \"postgres://b/app\"\n\
         [caches.default]\nservers = [\"m0:11211\"]\n[caches.sessions]\nservers = [\"m1:11211\"]\n\
         [probes.database]\ncomponent = \"builtin:database\"\n\
         [probes.memcached]\ncomponent = \"builtin:memcached\"\n\
         [probes.primary]\ncomponent = \"builtin:database\"\ndatabases = [\"default\"]\n",
        &[],
    )
    .unwrap();
    let grants: Vec<(&str, &[String], &[String])> = config
        .probes
        .iter()
        .map(|p| (p.name.as_str(), &p.databases[..], &p.caches[..]))
        .collect();
    let s = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        grants[0],
        ("database", &s(&["default", "replica"])[..], &[][..])
    );
    assert_eq!(
        grants[1],
        ("memcached", &[][..], &s(&["default", "sessions"])[..])
    );
    assert_eq!(grants[2], ("primary", &s(&["default"])[..], &[][..]));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // A user probe is granted nothing it is not given.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.wasm"), b"").unwrap();
    let config = parse(
        "[databases.default]\nurl = \"postgres://a/app\"\n[caches.default]\nservers = [\"m0:11211\"]\n\
         [probes.mine]\ncomponent = \"mine.wasm\"\n",
        &dir.path().join("probehost.toml"),
        &env(&[]),
    )
    .unwrap();
    assert!(config.probes[0].databases.is_empty());
    assert!(config.probes[0].caches.is_empty());
}

#[test]
fn a_bundled_probe_with_nothing_to_check_is_an_error_naming_it() {
    let found = problems(
        "[databases.default]\nurl = \"postgres://a/app\"\n[caches.default]\nservers = [\"m0:11211\"]\n\
         [probes.database]\ncomponent = \"builtin:database\"\ndatabases = []\n\
         [probes.memcached]\ncomponent = \"builtin:memcached\"\ncaches = []\n",
    );
    assert_eq!(
        found,
        [
            "probehost.toml:7:13: probes.database.databases: builtin:database is granted no databases, so it would always pass: grant at least one database, or remove the probe",
            "probehost.toml:10:10: probes.memcached.caches: builtin:memcached is granted no caches, so it would always pass: grant at least one cache, or remove the probe",
        ]
    );

    // Nothing of the kind is configured at all.
    let found = problems(
        "[databases]\n[probes.database]\ncomponent = \"builtin:database\"\n\
         [probes.cache]\ncomponent = \"builtin:memcached\"\ncaches = \"*\"\n",
    );
    assert_eq!(
        found,
        [
            "probehost.toml:3:13: probes.database.component: builtin:database has no database to check, so it would always pass: configure a [databases.NAME] table, or remove the probe",
            "probehost.toml:6:10: probes.cache.caches: builtin:memcached is granted no caches, so it would always pass: grant at least one cache, or remove the probe",
        ]
    );

    // A table written but invalid is reported once, where it is.
    let found = problems(
        "[caches.default]\nservers = []\n[probes.memcached]\ncomponent = \"builtin:memcached\"\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("caches.default.servers"), "{found:?}");
}

#[test]
fn the_default_probe_list_keeps_the_originals_cacheless_memcached_probe() {
    // As the original's: with no cache configured, its memcached probe passes.
    for config in [
        Config::defaults(&env(&[])),
        parse_with("[server]\nlisten = \"127.0.0.1:9000\"\n", &[]).unwrap(),
    ] {
        let memcached = &config.probes[1];
        assert_eq!(memcached.name, "memcached");
        assert!(memcached.caches.is_empty());
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }
}

#[test]
fn the_migrations_probe_gets_the_plans_text_and_every_database() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("migrations.plan");
    let text = format!("{}\nshop.0001_initial\n", crate::migrations::HEADER);
    std::fs::write(&plan, &text).unwrap();
    let config = parse(
        "[databases.default]\nurl = \"postgres://a/app\"\n[databases.other]\nurl = \"sqlite::memory:\"\n\
         [probes.migrations]\ncomponent = \"builtin:migrations\"\n\
         [probes.migrations.config]\nplan = \"migrations.plan\"\n\
         [probes.alembic]\ncomponent = \"builtin:migrations\"\ndatabases = [\"other\"]\n\
         [probes.alembic.config]\ntool = \"alembic\"\nhead = \"ae10\"\n",
        &dir.path().join("probehost.toml"),
        &env(&[]),
    )
    .unwrap();
    let django = &config.probes[0];
    assert_eq!(django.databases, ["default", "other"]);
    // The path stays in the config (and in `config check`); the component
    // sees the text, since it has no filesystem.
    assert_eq!(
        django.config,
        [("plan".to_owned(), "migrations.plan".to_owned())]
    );
    assert_eq!(django.component_settings(), [("plan".to_owned(), text)]);
    let alembic = &config.probes[1];
    assert_eq!(alembic.databases, ["other"]);
    assert_eq!(alembic.plan, None);
    assert_eq!(alembic.component_settings(), alembic.config);

    assert_eq!(
        problems(
            "[databases.default]\nurl = \"sqlite::memory:\"\n\
             [probes.m]\ncomponent = \"builtin:migrations\"\ndatabases = []\n\
             [probes.m.config]\ntool = \"flyway\"\n"
        ),
        [
            "probehost.toml:5:13: probes.m.databases: builtin:migrations is granted no databases, so it would always pass: grant at least one database, or remove the probe",
            "probehost.toml:7:8: probes.m.config.tool: unknown tool \"flyway\" (expected \"django\" or \"alembic\")",
        ]
    );
}

#[test]
fn upstream_checks_need_an_upstream_and_readiness_follows_it_by_default() {
    assert_eq!(
        problems("[server]\nliveness_upstream = true\nreadiness_upstream = true\n"),
        [
            "probehost.toml:2:21: server.liveness_upstream: needs `server.upstream`, the port to check",
            "probehost.toml:3:22: server.readiness_upstream: needs `server.upstream`, the port to check",
        ]
    );
    let proxy = |extra: &str| {
        let text = format!("[server]\nupstream = \"http://127.0.0.1:8000\"\n{extra}");
        parse_with(&text, &[]).unwrap().server
    };
    assert!(proxy("").readiness_upstream);
    assert!(!proxy("readiness_upstream = false").readiness_upstream);
    let standalone = Config::defaults(&env(&[])).server;
    assert!(!standalone.readiness_upstream);

    // `--upstream` gives what the file left unset its proxy-mode default...
    let mut server = standalone.clone();
    server.set_upstream("http://127.0.0.1:8000".into());
    assert!(server.readiness_upstream);
    assert_eq!(server.verbose, Detail::Local);
    // ...and keeps what the file set.
    let mut server = parse_with(
        "[server]\nverbose = true\nreadiness_upstream = false\n",
        &[],
    )
    .unwrap()
    .server;
    server.set_upstream("http://127.0.0.1:8000".into());
    assert!(!server.readiness_upstream);
    assert_eq!(server.verbose, Detail::Everywhere);
}
