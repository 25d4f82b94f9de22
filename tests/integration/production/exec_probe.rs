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

/// `server.socket`: the probe paths answer on a Unix socket too, which
/// `probe --ready` asks first; it never reaches the application in proxy
/// mode; the file is replaced when stale, refused when live or not a socket,
/// and removed at exit.
#[test]
fn ready_is_answered_over_the_probe_socket() {
    let app = Upstream::start();
    let dir = TestDir::new();
    let socket = dir.path().join("probe.sock");
    let config_on = |port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{}\"\nsocket = \"probe.sock\"\n\
             [runtime]\ncache_dir = {:?}\n{}",
            app.url(),
            shared_cache_dir().display().to_string(),
            test_probe("fine", "action = \"ready\"")
        )
    };
    // A socket file left behind by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    // The TCP port is closed, so only the socket can answer.
    let config = dir.config(&config_on(closed_port().port()));
    let server = Server::start(&config);

    let asked = probe(&config, &[]);
    assert_eq!(
        (asked.code, asked.stdout.as_str()),
        (0, "Ok\n"),
        "{asked:?}"
    );
    assert!(
        asked.stderr.contains("answered by the running server")
            && asked.stderr.contains("probe.sock"),
        "{}",
        asked.stderr
    );
    assert!(!asked.stderr.contains("component"), "{}", asked.stderr);

    assert_eq!(
        get_over_socket(&socket, "/readyz", &[]),
        ("HTTP/1.1 200 OK".to_owned(), "Ok".to_owned())
    );
    assert_eq!(get_over_socket(&socket, "/livez", &[]).1, "Ok");
    // The socket is for probes: nothing on it reaches the application.
    let (status, _) = get_over_socket(&socket, "/page", &[]);
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(app.seen().is_empty(), "{:?}", app.seen());
    // Over TCP the same path is the application's.
    assert_eq!(server.get("/page").status, 200);
    assert_eq!(app.seen().len(), 1);

    // A second server on another port cannot take a live socket.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, config_on(closed_port().port())).unwrap();
    let refused = run(probehost().arg("--config").arg(&other).arg("serve"));
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("probe.sock: another process is listening on it"),
        "{}",
        refused.stderr
    );

    assert!(server.terminate().success());
    assert!(!socket.exists(), "the socket file outlived the server");

    // Nor a path that holds something else.
    std::fs::write(&socket, "not a socket").unwrap();
    let refused = run(probehost().arg("--config").arg(&other).arg("serve"));
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("probe.sock: a file that is not a socket is in the way"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "not a socket");
}
