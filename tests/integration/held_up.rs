//! What adversarial passes tried and found holding, pinned so it stays so:
//! exact-match routing, malformed requests refused, and the sandbox refusing
//! every other spelling of an address it was not granted.

use std::time::Duration;

use crate::harness::*;

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or(answer)
}

fn server() -> (TestDir, Server) {
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "{}[databases.default]\nurl = \"sqlite::memory:\"\n",
        server_section()
    ));
    let server = Server::start(&config);
    (dir, server)
}

#[test]
fn only_the_exact_probe_paths_are_probes() {
    let (_dir, server) = server();
    for path in [
        "//readyz",
        "/readyz/",
        "/READYZ",
        "/%72eadyz",
        "%2Freadyz",
        "/readyz%2F",
        "/x/../readyz",
        "/./livez",
        "/livez;x",
        "/readyz;/",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(server.address, request.as_bytes(), Duration::from_secs(10));
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{path}: {answer}"
        );
    }
    // An ordinary 404, not a probe with an empty or a nested name.
    for path in ["/readyz/", "/readyz/a/b"] {
        let response = request(server.address, "GET", path);
        assert_eq!(
            (response.status, response.body.as_str()),
            (404, "Not Found"),
            "{path}"
        );
    }
    for method in ["HEAD", "OPTIONS", "POST", "DELETE"] {
        let response = request(server.address, method, "/livez");
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET"), "{method}");
    }
}

#[test]
fn malformed_requests_are_refused() {
    let (_dir, server) = server();
    let cases: [(&str, &[u8]); 7] = [
        ("HTTP/0.9", b"GET /livez\r\n\r\n"),
        (
            "duplicate Content-Length",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            "negative Content-Length",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ),
        (
            "NUL in the path",
            b"GET /li\0vez HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        ),
        (
            "an unknown transfer coding",
            b"POST /livez HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        ),
        (
            "a header without a name",
            b"GET /livez HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n",
        ),
    ];
    for (what, raw) in cases {
        let answer = raw_exchange(server.address, raw, Duration::from_secs(10));
        assert!(
            answer.is_empty() || status_of(&answer) == "400",
            "{what}: {answer:?}"
        );
        assert!(!answer.contains("200 OK"), "{what}: {answer:?}");
    }
    // And the server is unharmed.
    assert_eq!(server.get("/livez").status, 200);
}

#[test]
fn the_sandbox_refuses_every_other_spelling_of_an_address_not_granted() {
    require(Service::Redis);
    let port = Service::Redis.address().port();
    let dir = TestDir::new();
    let spellings = [
        format!("127.0.0.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        format!("127.1:{port}"),
        format!("2130706433:{port}"),
        format!("0x7f000001:{port}"),
    ];
    for address in spellings {
        // Granted another port of the same host.
        let config = dir.config(&format!(
            "{}[readiness]\ntimeout = \"2s\"\n[probes.subject]\ncomponent = {TEST_PROBE:?}\n\
             network = [\"127.0.0.1:1\"]\nconfig = {{ action = \"connect\", address = \"{address}\" }}\n",
            server_section()
        ));
        let server = Server::start(&config);
        let body = server.get("/readyz").body;
        assert!(
            body.starts_with("connect failed") && !body.contains("connected"),
            "{address} reached a port it was not granted: {body}"
        );
    }
}
