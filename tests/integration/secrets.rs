//! Secrets are never echoed: not by `config check` (valid or not), not by
//! `serve` at trace level, not by the jobs. Each hostile value below carries a
//! marker that must appear nowhere in what probehost prints.

use std::time::Duration;

use crate::harness::*;

/// A config body and the secrets in it.
struct Case {
    name: &'static str,
    toml: String,
    env: Vec<(&'static str, &'static str)>,
    secrets: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let closed = closed_port();
    vec![
        Case {
            name: "an unterminated reference in a database password",
            toml: format!("[databases.default]\nurl = \"postgres://u:SECRETA${{x@{closed}/db\"\n"),
            env: vec![],
            secrets: &["SECRETA"],
        },
        Case {
            name: "an unterminated reference in a probe password",
            toml: format!(
                "[probes.redis]\ncomponent = {REDIS_PROBE:?}\nconfig = {{ password = \"S3CRETB${{abc\" }}\n"
            ),
            env: vec![],
            secrets: &["S3CRETB"],
        },
        Case {
            name: "an invalid reference inside a probe token",
            toml: format!(
                "[probes.redis]\ncomponent = {REDIS_PROBE:?}\nconfig = {{ token = \"TOK${{SECRET-C}}EN\" }}\n"
            ),
            env: vec![],
            secrets: &["SECRET-C", "TOK"],
        },
        Case {
            name: "URL user-info and secret-looking keys in probe settings",
            toml: format!(
                "[probes.http]\ncomponent = {HTTP_PROBE:?}\nhttp = [\"http://{closed}\"]\n\
                 config = {{ url = \"http://admin:HTTPSECRETD@{closed}/health\", pwd = \"PWDSECRETD\", dsn = \"redis://:DSNSECRETD@x\" }}\n"
            ),
            env: vec![],
            secrets: &["HTTPSECRETD", "PWDSECRETD", "DSNSECRETD"],
        },
        Case {
            name: "database passwords plain, percent-encoded, in the query and from the environment",
            toml: format!(
                "[databases.default]\nurl = \"postgres://app:DBSECRETE@{closed}/test\"\n\
                 [databases.encoded]\nurl = \"postgres://app:p%40SECRETE2@{closed}/test\"\n\
                 [databases.query]\nurl = \"postgres://app@{closed}/test?password=QSECRETE3\"\n\
                 [databases.env]\nurl = \"mysql://root:${{DB_PASSWORD}}@{closed}/test\"\n"
            ),
            env: vec![("DB_PASSWORD", "ENVSECRETE4")],
            secrets: &[
                "DBSECRETE",
                "p@SECRETE2",
                "SECRETE2",
                "QSECRETE3",
                "ENVSECRETE4",
            ],
        },
        Case {
            name: "a bad upstream URL with user-info",
            toml: "[server]\nupstream = \"http://u:UPSECRETF@127.0.0.1:8000/path\"\n".to_owned(),
            env: vec![],
            secrets: &["UPSECRETF"],
        },
        Case {
            name: "an invalid database URL with a password",
            toml: "[databases.default]\nurl = \"postgres://u:BADSECRETG@[::1/db\"\n".to_owned(),
            env: vec![],
            secrets: &["BADSECRETG"],
        },
    ]
}

fn assert_hidden(case: &Case, what: &str, output: &str) {
    for secret in case.secrets {
        assert!(
            !output.contains(secret),
            "{}: {what} shows {secret:?}:\n{output}",
            case.name
        );
    }
}

fn command(dir: &TestDir, case: &Case) -> std::process::Command {
    let config = dir.config(&format!(
        "{}{}",
        case.toml,
        if case.toml.contains("[runtime]") {
            String::new()
        } else {
            format!(
                "\n[runtime]\ncache_dir = {:?}\n",
                shared_cache_dir().display().to_string()
            )
        }
    ));
    let mut command = probehost();
    command.envs(case.env.iter().copied()).arg("-c").arg(config);
    command
}

#[test]
fn config_check_never_shows_a_secret() {
    for case in cases() {
        let dir = TestDir::new();
        let output = run(command(&dir, &case).args(["config", "check"]));
        assert_hidden(
            &case,
            "config check",
            &format!("{}{}", output.stdout, output.stderr),
        );
        // It still says where the problem is.
        if output.code != 0 {
            assert!(
                output.stderr.contains("probehost.toml:"),
                "{}",
                output.stderr
            );
        }
    }
}

#[test]
fn an_interpolation_error_points_at_the_place_with_the_value_masked() {
    let case = &cases()[0];
    let dir = TestDir::new();
    let output = run(command(&dir, case).args(["config", "check"]));
    assert_eq!(output.code, 2);
    let closed = output.stderr.split('@').nth(1).unwrap_or_default();
    assert!(
        output.stderr.contains(
            "databases.default.url: unterminated `${` at character 21 of \"postgres://u:****@"
        ),
        "{}{closed}",
        output.stderr
    );
}

#[test]
fn serve_at_trace_level_never_logs_a_secret() {
    for case in cases() {
        let dir = TestDir::new();
        let mut serve = command(&dir, &case);
        serve.args(["--log", "trace", "serve", "--listen", "127.0.0.1:0"]);
        let check = run(command(&dir, &case).args(["config", "check"]));
        if check.code != 0 {
            // Refused at start-up: what it prints is what config check printed.
            let output = run(&mut serve);
            assert_eq!(output.code, 2, "{}: {output:?}", case.name);
            assert_hidden(
                &case,
                "serve",
                &format!("{}{}", output.stdout, output.stderr),
            );
            continue;
        }
        let server = Server::start_with(&mut serve);
        let mut answers = String::new();
        for path in ["/readyz", "/readyz?verbose", "/metrics"] {
            answers.push_str(&server.get(path).body);
        }
        let json = request_json(server.address);
        answers.push_str(&json);
        std::thread::sleep(Duration::from_millis(200));
        assert_hidden(&case, "an answer", &answers);
        let log = server.log();
        drop(server);
        assert_hidden(&case, "the trace log", &log);
    }
}

fn request_json(address: std::net::SocketAddr) -> String {
    raw_exchange(
        address,
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
}

#[test]
fn the_jobs_never_print_a_secret() {
    let case = cases().remove(4);
    for alias in ["default", "encoded", "query", "env"] {
        let dir = TestDir::new();
        let outputs = [
            run(command(&dir, &case).args(["wait4db", "-t", "1", "-i", "0.2", "-d", alias])),
            run(command(&dir, &case)
                .env("DJANGO_ADMIN_USERNAME", "admin")
                .env("DJANGO_ADMIN_PASSWORD", "ADMINSECRETH")
                .args(["ensureadmin", "-d", alias])),
            run(command(&dir, &case).args([
                "lockedmigrate",
                "--lock-timeout",
                "1",
                "--database",
                alias,
                "--",
                "true",
            ])),
        ];
        for output in outputs {
            assert_ne!(
                output.code, 0,
                "{alias}: the database is closed: {output:?}"
            );
            let printed = format!("{}{}", output.stdout, output.stderr);
            assert_hidden(&case, alias, &printed);
            assert!(!printed.contains("ADMINSECRETH"), "{printed}");
        }
    }
}
