//! Graceful drain: on SIGTERM readiness fails at once, liveness holds, nothing
//! in flight is lost, and the process exits 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{config, test_probe};
use crate::harness::*;

#[test]
fn sigterm_under_load_drains_without_failing_a_request() {
    let app = Upstream::start();
    let dir = TestDir::new();
    let config = config(
        &dir,
        &format!("upstream = {:?}\ndrain = \"2s\"\ngrace = \"5s\"", app.url()),
        &test_probe("fine", "action = \"ready\""),
    );
    let server = Server::start(&config);
    let address = server.address;

    // A bounded load: 8 clients for about 2 s, against probes and the application.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
            thread::spawn(move || {
                let path = ["/livez", "/page", "/page?x=1", "/healthz"][i % 4];
                while !stop.load(Ordering::Relaxed) {
                    let ok = std::panic::catch_unwind(|| get(address, path).status == 200)
                        .unwrap_or(false);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(server.get("/readyz").status, 200);
    server.signal(rustix::process::Signal::TERM);
    let signalled = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || server.get("/readyz").body
            == "shutting down"),
        "readiness does not fail at once"
    );
    let ready = server.get("/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (503, "shutting down"));

    assert_eq!(server.get("/livez").status, 200);

    // Requests in flight when the listener closes (2 s after the signal) still
    // complete: one on a connection of its own, one on a keep-alive connection
    // that then gets `Connection: close` rather than a reset.
    let in_flight = thread::spawn(move || get(address, "/slow?ms=3500"));
    let mut kept = KeptAlive::connect(address);
    assert_eq!(kept.get("/page").0, 200);
    let kept_slow = thread::spawn(move || {
        let answer = kept.get("/slow?ms=3000");
        (answer, kept.closed_by_server())
    });

    // The load stops just before the listener closes, as Kubernetes stops
    // sending once readiness fails.
    let until = signalled + Duration::from_millis(1700);
    thread::sleep(until.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {} requests",
        done.load(Ordering::Relaxed)
    );
    assert!(done.load(Ordering::Relaxed) > 100, "the load ran");

    // After the drain the listener is closed while those two are still running.
    let closed = signalled + Duration::from_millis(2400);
    thread::sleep(closed.saturating_duration_since(Instant::now()));
    assert!(
        try_get(address, "/livez").is_err(),
        "the listener is still open after the drain"
    );
    assert!(!in_flight.is_finished() && !kept_slow.is_finished());

    let slow = in_flight.join().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, "slow"));
    let ((status, headers, body), closed_by_server) = kept_slow.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "slow"));
    assert!(
        headers.to_ascii_lowercase().contains("connection: close"),
        "the keep-alive connection is told it closes:\n{headers}"
    );
    assert!(closed_by_server, "then closed cleanly");

    let status = server.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(3000),
        "exited before the requests in flight ended"
    );
}

/// One keep-alive HTTP/1.1 connection, for answers that are not `Connection:
/// close` of their own.
struct KeptAlive {
    stream: std::net::TcpStream,
    address: std::net::SocketAddr,
}

impl KeptAlive {
    fn connect(address: std::net::SocketAddr) -> KeptAlive {
        let stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        KeptAlive { stream, address }
    }

    /// `GET path`: status, head and body (the body has a content-length).
    fn get(&mut self, path: &str) -> (u16, String, String) {
        use std::io::{Read, Write};
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            assert_eq!(self.stream.read(&mut byte).unwrap(), 1, "reset mid-answer");
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a content-length");
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head, String::from_utf8(body).unwrap())
    }

    /// Whether the server closed the connection (end of stream, not a reset).
    fn closed_by_server(&mut self) -> bool {
        use std::io::Read;
        matches!(self.stream.read(&mut [0u8; 1]), Ok(0))
    }
}

#[test]
fn a_second_sigterm_cuts_the_drain_short() {
    let dir = TestDir::new();
    let config = config(
        &dir,
        "drain = \"60s\"",
        &test_probe("fine", "action = \"ready\""),
    );
    let server = Server::start(&config);
    server.signal(rustix::process::Signal::TERM);
    assert!(eventually(Duration::from_secs(2), || server
        .get("/readyz")
        .status
        == 503));
    server.signal(rustix::process::Signal::TERM);
    assert!(
        eventually(Duration::from_secs(5), || server
            .log()
            .contains("drain cut short")),
        "{}",
        server.log()
    );
    // Well before the 60 s drain would have ended.
    assert_eq!(server.wait(Duration::from_secs(10)).code(), Some(0));
}
