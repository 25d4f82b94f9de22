//! A minimal HTTP/1.1 client over a plain socket: it sends exactly what a test
//! writes and reads the whole answer, so tests see the bytes probehost sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Time from connect to the last byte.
    pub elapsed: Duration,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path`.
pub fn get(address: SocketAddr, path: &str) -> Response {
    request(address, "GET", path)
}

/// `METHOD path` with no body; the connection is closed after the answer.
pub fn request(address: SocketAddr, method: &str, path: &str) -> Response {
    try_request(address, method, path)
        .unwrap_or_else(|e| panic!("{method} {path} at {address}: {e}"))
}

/// `GET path` with extra header lines (`"Accept: application/json"`).
pub fn get_with(address: SocketAddr, path: &str, headers: &[&str]) -> Response {
    try_request_with(address, "GET", path, headers)
        .unwrap_or_else(|e| panic!("GET {path} at {address}: {e}"))
}

/// `GET path`, or why there was no answer (refused, reset, not HTTP).
pub fn try_get(address: SocketAddr, path: &str) -> Result<Response, String> {
    try_request(address, "GET", path)
}

fn try_request(address: SocketAddr, method: &str, path: &str) -> Result<Response, String> {
    try_request_with(address, method, path, &[])
}

fn try_request_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Result<Response, String> {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("connecting: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nX-Probe: test\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("sending: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let elapsed = started.elapsed();
    parse(&raw, elapsed)
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&raw)))
}

fn parse(raw: &[u8], elapsed: Duration) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Response {
        status,
        headers,
        body: body.to_owned(),
        elapsed,
    })
}

/// A raw `GET path` over the Unix socket at `socket`, with extra header lines:
/// status line and body.
pub fn get_over_socket(socket: &std::path::Path, path: &str, headers: &[&str]) -> (String, String) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}
