//! `probehost probe --ready` asks a running server of the same configuration.

use super::test_probe;
use crate::harness::*;

fn probe(config: &std::path::Path, extra: &[&str]) -> Output {
    run(probehost()
        .env("PROBEHOST_LOG", "probehost=debug")
        .arg("--config")
        .arg(config)
        .args(["probe", "--ready"])
        .args(extra))
}

#[test]
fn ready_is_answered_by_the_running_server_and_falls_back_without_one() {
    let dir = TestDir::new();
    let port = closed_port().port();
    let config = dir.config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[runtime]\ncache_dir = {:?}\n{}",
        shared_cache_dir().display().to_string(),
        test_probe("never", "action = \"not-ready\", message = \"not yet\"")
    ));

    let fallback = probe(&config, &[]);
    assert_eq!((fallback.code, fallback.stdout.as_str()), (1, "not yet\n"));
    assert!(
        fallback.stderr.contains("component loaded from cache")
            || fallback.stderr.contains("component compiled")
    );

    let server = Server::start(&config);
    let asked = probe(&config, &[]);
    assert_eq!(
        (asked.code, asked.stdout.as_str()),
        (1, "not yet\n"),
        "{asked:?}"
    );
    assert!(
        asked.stderr.contains("answered by the running server"),
        "{}",
        asked.stderr
    );
    assert!(
        !asked.stderr.contains("component"),
        "a component was loaded:\n{}",
        asked.stderr
    );
    let log = server.log_when(|log| log.contains("probe is not ready"));
    assert!(log.contains("probe is not ready"), "{log}");

    let local = probe(&config, &["--local"]);
    assert_eq!((local.code, local.stdout.as_str()), (1, "not yet\n"));
    assert!(!local.stderr.contains("answered by the running server"));
}

#[test]
fn something_else_on_the_port_is_not_trusted() {
    let app = Upstream::start();
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[server]\nlisten = \"{}\"\n[runtime]\ncache_dir = {:?}\n{}",
        app.address,
        shared_cache_dir().display().to_string(),
        test_probe("fine", "action = \"ready\"")
    ));
    let output = probe(&config, &[]);
    assert_eq!((output.code, output.stdout.as_str()), (0, "Ok\n"));
    assert!(
        output.stderr.contains("something else answers"),
        "{}",
        output.stderr
    );
}
