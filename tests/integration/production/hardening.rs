//! HTTP hardening: oversized heads, slow clients, malformed requests and idle
//! connections are bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::config;
use crate::harness::*;

fn server(server_extra: &str) -> (TestDir, Server) {
    let dir = TestDir::new();
    let server = Server::start(&config(&dir, server_extra, ""));
    (dir, server)
}

#[test]
fn a_head_of_64_kib_is_refused_with_431() {
    let (_dir, server) = server("");
    let big = "x".repeat(64 * 1024);
    let raw = format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let answer = raw_exchange(server.address, raw.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    assert_eq!(server.get("/livez").status, 200, "the server is unharmed");
}

#[test]
fn a_client_that_sends_its_head_slowly_is_dropped() {
    let (_dir, server) = server("header_read_timeout = \"1s\"");
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "dropped after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "dropped too early: {took:?}"
    );
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
}

#[test]
fn a_malformed_request_line_is_400() {
    let (_dir, server) = server("");
    let answer = raw_exchange(server.address, b"GARBAGE\r\n\r\n", Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_exchange(
        server.address,
        b"GET /livez HTTP/9.9\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 505"),
        "{answer}"
    );
}

#[test]
fn idle_connections_are_bounded_in_time_and_cannot_starve_probes() {
    let (_dir, server) = server("max_connections = 8\nheader_read_timeout = \"1s\"");
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(server.address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Every slot is held by an idle connection: a probe is still answered at
    // once, from the probe reserve, and anything else is told the server is busy.
    let started = Instant::now();
    let response = server.get("/livez");
    assert_eq!((response.status, response.body.as_str()), (200, "Ok"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "liveness waited {:?} behind idle connections",
        started.elapsed()
    );
    let busy = server.get("/metrics");
    assert_eq!(
        (busy.status, busy.body.as_str()),
        (503, "server busy: only probe paths are answered")
    );
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 16];
        assert!(
            matches!(stream.read(&mut buffer), Ok(0)),
            "an idle connection was not closed"
        );
    }
    // Their slots are free again.
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    use std::io::Write;
    let (_dir, server) = server("header_read_timeout = \"1s\"");
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 256];
    while !answer.ends_with(b"Ok") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&buffer[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    // Kept alive, then idle: closed once the next head is overdue.
    let idle = Instant::now();
    assert!(matches!(stream.read(&mut buffer), Ok(0)), "not closed");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
}
