//! Proxy mode: probes are answered before the application; everything else
//! reaches it intact.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures::{SinkExt, StreamExt};

use super::{config, test_probe};
use crate::harness::django;
use crate::harness::*;

fn proxy(upstream: &str, server_extra: &str) -> (TestDir, Server) {
    let dir = TestDir::new();
    let config = config(
        &dir,
        &format!("upstream = {upstream:?}\n{server_extra}"),
        &test_probe("fine", "action = \"ready\""),
    );
    let server = Server::start(&config);
    (dir, server)
}

#[test]
fn readiness_waits_for_the_application_to_accept_connections() {
    // The application is not listening yet (it is still starting, or it has
    // stopped accepting): probehost must not send traffic its way.
    let port = closed_port();
    let (dir, server) = proxy(&format!("http://{port}"), "socket = \"probe.sock\"");
    let refused = (503, "application is not accepting connections");
    for path in ["/readyz", "/startupz", "/readyz?verbose"] {
        let response = server.get(path);
        assert_eq!((response.status, response.body.as_str()), refused, "{path}");
    }
    // One probe's own answer is that probe's alone.
    assert_eq!(server.get("/readyz/fine").status, 200);
    // Liveness is not readiness: a slow-starting application is not restarted.
    assert_eq!(server.get("/livez").status, 200);
    // Exec probes ask the server (on its socket), and hear the same.
    let exec = probehost()
        .arg("--config")
        .arg(dir.path().join("probehost.toml"))
        .args(["probe", "--ready"])
        .output()
        .unwrap();
    assert_eq!(exec.status.code(), Some(1), "{exec:?}");

    // Once the port accepts (the kernel completes the handshake even while
    // every worker is busy, so a busy application stays ready), it is ready.
    let _listening = std::net::TcpListener::bind(port).unwrap();
    let response = server.get("/readyz");
    assert_eq!((response.status, response.body.as_str()), (200, "Ok"));
}

#[test]
fn startup_waits_for_the_application_even_after_the_probes_have_passed() {
    // The probes pass (here asked one by one, as the background loop or a
    // `/readyz` the port refused would run them) while the application does
    // not listen: the startup probe must not pass, or the kubelet starts
    // sending readiness probes to a pod that cannot serve.
    let port = closed_port();
    let (_dir, server) = proxy(&format!("http://{port}"), "");
    assert_eq!(server.get("/readyz/fine").status, 200);
    let refused = (503, "application is not accepting connections");
    for path in ["/startupz", "/readyz", "/startupz"] {
        let response = server.get(path);
        assert_eq!((response.status, response.body.as_str()), refused, "{path}");
    }
    // Once it has accepted, startup is over, even if it stops accepting later
    // (liveness and readiness say that).
    let listening = std::net::TcpListener::bind(port).unwrap();
    assert_eq!(server.get("/startupz").body, "Ok");
    drop(listening);
    assert_eq!(server.get("/startupz").body, "Ok");
    assert_eq!(server.get("/readyz").status, 503);
}

#[test]
fn readiness_upstream_false_leaves_the_application_out_of_readiness() {
    let port = closed_port();
    let (_dir, server) = proxy(&format!("http://{port}"), "readiness_upstream = false");
    let response = server.get("/readyz");
    assert_eq!((response.status, response.body.as_str()), (200, "Ok"));
}

#[test]
fn probes_never_reach_the_application_and_everything_else_does_intact() {
    let app = Upstream::start();
    let (_dir, server) = proxy(&app.url(), "");
    for path in [
        "/livez",
        "/healthz",
        "/readyz",
        "/readyz?verbose",
        "/startupz",
    ] {
        let response = server.get(path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("x-app"),
            None,
            "{path} was answered by probehost"
        );
    }
    assert!(
        app.seen().is_empty(),
        "the application saw probe requests: {:?}",
        app.seen()
    );

    // Not probes: a query, custom and hop-by-hop headers, a body, another method.
    let raw = "POST /orders?id=7&x=%20y HTTP/1.1\r\nHost: shop.example\r\nX-Custom: kept\r\n\
               Connection: close, X-Secret\r\nX-Secret: dropped\r\nX-Forwarded-For: 203.0.113.9\r\n\
               Content-Length: 11\r\n\r\nhello world";
    let answer = raw_exchange(server.address, raw.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-app: yes") && answer.contains("x-body-length: 11"),
        "{answer}"
    );
    let posted = request(server.address, "POST", "/readyz");
    assert_eq!(
        posted.header("x-app"),
        Some("yes"),
        "POST /readyz is not a probe: the app's"
    );
    let metrics = server.get("/metrics");
    assert_eq!(
        metrics.header("x-app"),
        Some("yes"),
        "metrics are off by default in proxy mode"
    );

    let seen = app.seen();
    let order = seen
        .iter()
        .find(|s| s.path_and_query.starts_with("/orders"))
        .expect("the app saw the order");
    assert_eq!(order.method, "POST");
    assert_eq!(order.path_and_query, "/orders?id=7&x=%20y");
    assert_eq!(order.body, b"hello world");
    assert_eq!(order.header("host"), Some("shop.example"));
    assert_eq!(order.header("x-custom"), Some("kept"));
    assert_eq!(
        order.header("x-secret"),
        None,
        "named in Connection: hop-by-hop"
    );
    assert_eq!(
        order.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(order.header("x-forwarded-proto"), Some("http"));
    assert_eq!(order.header("forwarded"), Some("for=127.0.0.1;proto=http"));
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.path_and_query == "/readyz")
    );
}

#[test]
fn bodies_stream_both_ways() {
    let app = Upstream::start();
    let (_dir, server) = proxy(&app.url(), "");

    // Upload: the application gets the first chunk before the second is sent.
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || app
            .upload_frames()
            .iter()
            .any(|f| f == b"hello")),
        "the first chunk did not reach the application before the body ended"
    );
    write!(stream, "6\r\n world\r\n0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("received 11 bytes"), "{answer}");

    // Download: the client gets the first part while the application still holds
    // the second.
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains("first") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "closed before the first part");
        received.extend_from_slice(&buffer[..n]);
    }
    assert!(!String::from_utf8_lossy(&received).contains("second"));
    app.release_download();
    stream.read_to_end(&mut received).unwrap();
    assert!(String::from_utf8_lossy(&received).contains("second"));
}

#[test]
fn keep_alive_serves_probes_and_the_application_on_one_connection() {
    let app = Upstream::start();
    let (_dir, server) = proxy(&app.url(), "");
    let raw = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /page HTTP/1.1\r\nHost: x\r\n\r\n\
               GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(server.address, raw.as_bytes(), Duration::from_secs(10));
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    assert_eq!(app.seen().len(), 1);
}

#[test]
fn http2_clients_are_served() {
    let app = Upstream::start();
    let (_dir, server) = proxy(&app.url(), "");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for path in ["/readyz", "/page"] {
            let request = http::Request::get(format!("http://{}{path}", server.address))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            answers.push((
                response.status().as_u16(),
                response.headers().contains_key("x-app"),
            ));
        }
        answers
    });
    assert_eq!(statuses, [(200, false), (200, true)]);
    assert_eq!(
        app.seen()[0].header("host"),
        Some(server.address.to_string().as_str())
    );
}

#[test]
fn websocket_upgrades_are_tunnelled() {
    let app = Upstream::start();
    let (_dir, server) = proxy(&app.url(), "");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let echoed = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        let url = format!("ws://{}/ws", server.address);
        let (mut ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        assert_eq!(response.status(), 101);
        let mut echoed = Vec::new();
        for text in ["hello", "again"] {
            ws.send(tokio_tungstenite::tungstenite::Message::text(text))
                .await
                .unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            echoed.push(reply.into_text().unwrap().to_string());
        }
        echoed
    });
    assert_eq!(echoed, ["hello", "again"]);
    assert_eq!(app.seen()[0].header("upgrade"), Some("websocket"));
}

#[test]
fn an_unreachable_application_is_502_and_a_slow_one_504() {
    let (_dir, server) = proxy(&format!("http://{}", closed_port()), "");
    let response = server.get("/page");
    assert_eq!(
        (response.status, response.body.as_str()),
        (502, "Bad Gateway")
    );
    assert_eq!(
        server.get("/livez").status,
        200,
        "probes do not depend on the application"
    );

    let app = Upstream::start();
    let (_dir, server) = proxy(&app.url(), "upstream_timeout = \"500ms\"");
    let response = server.get("/slow?ms=3000");
    assert_eq!(
        (response.status, response.body.as_str()),
        (504, "Gateway Timeout")
    );
    assert!(
        response.elapsed < Duration::from_millis(1500),
        "{:?}",
        response.elapsed
    );
    assert_eq!(server.get("/slow?ms=10").body, "slow");
}

/// Connections to the application are kept alive and reused once a response
/// has been read to its end; one dropped mid-body is not reused.
#[test]
fn upstream_connections_are_reused() {
    let app = Upstream::start();
    // One serving thread, so every request shares one connection pool.
    let (_dir, server) = proxy(&app.url(), "threads = 1");
    for i in 0..20 {
        let response = server.get(&format!("/page?n={i}"));
        assert_eq!((response.status, response.body.as_str()), (200, "app"));
    }
    assert_eq!(
        app.connections(),
        1,
        "one connection for 20 requests in a row"
    );
    // An empty answer (204 has no body) frees its connection at once.
    for _ in 0..3 {
        assert_eq!(server.get("/status?code=204").status, 204);
    }
    assert_eq!(app.connections(), 1);
    // The application closes a connection: the next request gets a new one.
    assert_eq!(server.get("/close").body, "closing");
    for _ in 0..3 {
        assert_eq!(server.get("/page").body, "app");
    }
    assert_eq!(app.connections(), 2);
    assert_eq!(app.seen().len(), 27);
}

/// A request with both Content-Length and chunked framing is one request, and
/// it reaches the application with one framing: nothing hidden in its body is
/// smuggled through as a second request. An unknown transfer coding is 400.
#[test]
fn ambiguous_framing_cannot_smuggle_a_request() {
    let app = Upstream::start();
    let (_dir, server) = proxy(&app.url(), "");
    let smuggling = b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw_exchange(server.address, smuggling, Duration::from_secs(10));
    assert!(!answer.is_empty(), "no answer");
    std::thread::sleep(Duration::from_millis(200));
    let seen = app.seen();
    assert!(
        seen.iter().all(|r| r.path_and_query != "/smuggled"),
        "a request was smuggled: {:?}",
        seen.iter().map(|r| &r.path_and_query).collect::<Vec<_>>()
    );
    for request in seen.iter().filter(|r| r.path_and_query == "/submit") {
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            !(names.contains(&"content-length") && names.contains(&"transfer-encoding")),
            "both framings reached the application: {names:?}"
        );
        assert!(request.body.is_empty(), "{:?}", request.body);
    }
    let answer = raw_exchange(
        server.address,
        b"POST /submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// gunicorn serving the Django fixture with 2 sync workers on a free loopback
/// port, its access log in `dir`.
struct Gunicorn {
    child: std::process::Child,
    address: std::net::SocketAddr,
    access_log: std::path::PathBuf,
}

impl Gunicorn {
    fn start(dir: &TestDir) -> Gunicorn {
        let address = closed_port();
        let access_log = dir.path().join("access.log");
        let child = std::process::Command::new(django::venv_bin().join("gunicorn"))
            .args([
                "--workers",
                "2",
                "--worker-class",
                "sync",
                "--timeout",
                "120",
            ])
            .arg("--bind")
            .arg(address.to_string())
            .arg("--access-logfile")
            .arg(&access_log)
            .arg("fixture.wsgi")
            .current_dir(django::project())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("db.sqlite3").display()),
            )
            .env_remove("DJANGO_SETTINGS_MODULE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gunicorn in .venv (scripts/setup.sh installs it)");
        assert!(
            eventually(Duration::from_secs(30), || TcpStream::connect(address)
                .is_ok()),
            "gunicorn did not start listening on {address}"
        );
        Gunicorn {
            child,
            address,
            access_log,
        }
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn probes_are_answered_while_every_application_worker_is_busy() {
    let dir = TestDir::new();
    let gunicorn = Gunicorn::start(&dir);
    let (_config_dir, server) = proxy(&format!("http://{}", gunicorn.address), "");
    // The application answers, and logs what it sees.
    let home = server.get("/");
    assert_eq!(home.status, 200, "{home:?}");
    assert!(home.body.contains("home\n"), "{home:?}");

    // Both workers asleep for 20 s, and more requests queued behind them.
    let slow: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut stream = TcpStream::connect(server.address).unwrap();
            stream
                .write_all(
                    b"GET /slow/?seconds=20 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    for _ in 0..20 {
        for path in ["/livez", "/readyz", "/startupz"] {
            let response = server.get(path);
            assert_eq!(
                (response.status, response.body.as_str()),
                (200, "Ok"),
                "{path}"
            );
        }
    }
    // Every probe was answered while no application request had been: none of
    // the slow requests has an answer yet.
    for mut stream in slow {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let pending = matches!(
            stream.read(&mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        assert!(
            pending,
            "a slow request was answered: the test did not keep the workers busy"
        );
    }
    // The application never saw a probe: its access log has the page, no probe.
    let log = std::fs::read_to_string(&gunicorn.access_log).unwrap();
    assert!(log.contains("\"GET / HTTP/1.1\" 200"), "{log}");
    for probe in ["/livez", "/readyz", "/startupz"] {
        assert!(
            !log.contains(probe),
            "the application logged {probe}:\n{log}"
        );
    }
}
