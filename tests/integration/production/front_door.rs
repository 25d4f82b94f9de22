//! The front door holds: clients that never read their answers, HTTP/2 clients
//! that grant no window or only keep the connection open, and floods of idle
//! connections cannot starve liveness, on the port and on the probe socket.
//! Every such connection is closed within `server.send_timeout` (or the header
//! read timeout, for idle ones) plus a second.
//!
//! Everything is on loopback and bounded: a fixed number of connections, and a
//! liveness watcher that asks for `/livez` on a fresh connection every 100 ms
//! for a fixed time.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config;
use crate::harness::*;

const SEND_TIMEOUT: Duration = Duration::from_secs(2);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);

fn server(dir: &TestDir, server_extra: &str) -> Server {
    let extra = format!(
        "send_timeout = \"{}s\"\nheader_read_timeout = \"{}s\"\n{server_extra}",
        SEND_TIMEOUT.as_secs(),
        HEADER_READ_TIMEOUT.as_secs()
    );
    let sqlite = dir.path().join("app.sqlite3");
    Server::start(&config(
        dir,
        &extra,
        &format!(
            "[databases.default]\nurl = \"sqlite://{}?mode=rwc\"\n",
            sqlite.display()
        ),
    ))
}

/// A socket with a 4 KiB receive buffer (set before connecting, so the window
/// the server sees is small), connected to `connect`'s address.
fn small_buffer_socket(family: rustix::net::AddressFamily) -> OwnedFd {
    let fd = rustix::net::socket(family, rustix::net::SocketType::STREAM, None).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
    fd
}

fn stalled_tcp(address: SocketAddr, payload: &[u8]) -> TcpStream {
    let fd = small_buffer_socket(rustix::net::AddressFamily::INET);
    rustix::net::connect(&fd, &address).unwrap();
    let stream = TcpStream::from(fd);
    send_what_fits(&stream, payload);
    stream
}

fn stalled_unix(path: &Path, payload: &[u8]) -> UnixStream {
    let fd = small_buffer_socket(rustix::net::AddressFamily::UNIX);
    let address = rustix::net::SocketAddrUnix::new(path).unwrap();
    rustix::net::connect(&fd, &address).unwrap();
    let stream = UnixStream::from(fd);
    send_what_fits(&stream, payload);
    stream
}

/// One write of `payload`, without waiting for the server to take it all.
fn send_what_fits(stream: impl std::os::fd::AsFd, payload: &[u8]) {
    let fd = stream.as_fd();
    let _ = rustix::net::send(fd, payload, rustix::net::SendFlags::DONTWAIT);
}

/// `count` HTTP/1.1 requests for `path`, pipelined.
fn pipelined(path: &str, count: usize) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
        .repeat(count)
        .into_bytes()
}

/// Whether the server has closed (or reset) `stream`, asked without reading
/// from it: a read would let a stalled server write again.
fn is_closed(stream: &impl std::os::fd::AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let hung_up = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
    let mut fds = [PollFd::new(stream, hung_up)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero)).unwrap();
    fds[0].revents().intersects(hung_up)
}

/// Asks for `/livez` on a fresh connection every 100 ms until stopped;
/// returns the failures (a non-200, or an answer slower than a second).
struct LivenessWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(usize, Vec<String>)>,
}

impl LivenessWatch {
    fn tcp(address: SocketAddr) -> LivenessWatch {
        Self::start(move || {
            let started = Instant::now();
            let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
                .map_err(|e| format!("connecting: {e}"))?;
            let connected = started.elapsed();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            exchange(stream, started)
                .map_err(|e| format!("{e} (connected in {connected:?})"))
                .and_then(|(status, took)| {
                    if took >= Duration::from_secs(1) {
                        Err(format!(
                            "{status} after {took:?}, connected in {connected:?}"
                        ))
                    } else {
                        Ok((status, took))
                    }
                })
        })
    }

    fn unix(path: PathBuf) -> LivenessWatch {
        Self::start(move || unix_livez(&path))
    }

    fn start(ask: impl Fn() -> Result<(u16, Duration), String> + Send + 'static) -> LivenessWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut asked = 0;
            let mut failures = Vec::new();
            // Bounded: at most two minutes whatever happens.
            while !stopping.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
                let at = started.elapsed();
                asked += 1;
                match ask() {
                    Ok((200, took)) if took < Duration::from_secs(1) => {}
                    Ok((status, took)) => {
                        failures.push(format!("at {at:?}: {status} after {took:?}"))
                    }
                    Err(e) => failures.push(format!("at {at:?}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (asked, failures)
        });
        LivenessWatch { stop, thread }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let (asked, failures) = self.thread.join().unwrap();
        assert!(asked >= 10, "liveness was asked only {asked} times");
        assert!(
            failures.is_empty(),
            "/livez failed {} of {asked} times: {failures:#?}",
            failures.len()
        );
    }
}

fn unix_livez(path: &Path) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let stream = UnixStream::connect(path).map_err(|e| format!("connecting: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    exchange(stream, started)
}

/// `GET /livez` on `stream`: the status, and the time since `started`.
fn exchange(mut stream: impl Read + Write, started: Instant) -> Result<(u16, Duration), String> {
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("sending: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an answer: {text:?}"))?;
    Ok((status, started.elapsed()))
}

/// Open `count` stalled connections with `open`, watch liveness meanwhile, and
/// check that every one is closed within `limit` and a second of stalling:
/// of the moment the server stops sending to them (their receive buffers
/// stop filling), which comes once it has written all it can.
fn flood_and_check<S: std::os::fd::AsFd>(
    count: usize,
    port: Option<u16>,
    watch: LivenessWatch,
    limit: Duration,
    mut open: impl FnMut() -> S,
) {
    // One flood at a time: each is sized to fill a server, not the machine.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let streams: Vec<S> = (0..count).map(|_| open()).collect();
    let stalled = stalled_at(&streams, port);
    std::thread::sleep(
        (stalled + limit + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    );
    let still_open = streams.iter().filter(|s| !is_closed(*s)).count();
    watch.finish();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {count} stalled connections were still open {:?} after the server stopped sending to them",
        limit + Duration::from_secs(1)
    );
}

/// When the bytes in flight to `streams` stopped changing: what waits unread
/// at the clients, and for TCP what waits in the server's socket queues
/// (`/proc/net/tcp`, the server's side of every connection to `port`).
/// Unchanged for a second counts (a shorter quiet spell can be a server that
/// a loaded machine has not scheduled yet); at most 60 s of looking.
fn stalled_at<S: std::os::fd::AsFd>(streams: &[S], port: Option<u16>) -> Instant {
    let in_flight = || -> u64 {
        let unread: u64 = streams
            .iter()
            .map(|s| rustix::io::ioctl_fionread(s).unwrap_or(0))
            .sum();
        unread + port.map_or(0, server_queues)
    };
    let started = Instant::now();
    let (mut last, mut since) = (in_flight(), Instant::now());
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
        let now = in_flight();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    since
}

/// The bytes queued (to send and to read) on the loopback sockets whose local
/// port is `port`.
fn server_queues(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, queues) = (fields.get(1)?, fields.get(4)?);
            if !address.ends_with(&local) {
                return None;
            }
            let (tx, rx) = queues.split_once(':')?;
            Some(u64::from_str_radix(tx, 16).ok()? + u64::from_str_radix(rx, 16).ok()?)
        })
        .sum()
}

/// The reproduction: 1,100 connections with 4 KiB receive buffers, each
/// sending 3,000 pipelined `GET /metrics` in one write and never reading.
fn readers_that_never_read(server_extra: &str) {
    let dir = TestDir::new();
    let server = server(&dir, server_extra);
    let payload = pipelined("/metrics", 3000);
    let watch = LivenessWatch::tcp(server.address);
    flood_and_check(
        1100,
        Some(server.address.port()),
        watch,
        SEND_TIMEOUT,
        || stalled_tcp(server.address, &payload),
    );
    // The server is whole again.
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn readers_that_never_read_cannot_starve_liveness_at_the_default_limit() {
    readers_that_never_read("");
}

#[test]
fn readers_that_never_read_cannot_starve_liveness_at_eight_connections() {
    readers_that_never_read("max_connections = 8");
}

#[test]
fn readers_that_never_read_cannot_starve_liveness_on_the_probe_socket() {
    let dir = TestDir::new();
    let socket = dir.path().join("probe.sock");
    let server = server(
        &dir,
        &format!(
            "socket = {:?}\nmax_connections = 8",
            socket.display().to_string()
        ),
    );
    let payload = pipelined("/livez", 3000);
    let watch = LivenessWatch::unix(socket.clone());
    flood_and_check(300, None, watch, SEND_TIMEOUT, || {
        stalled_unix(&socket, &payload)
    });
    assert_eq!(server.get("/livez").status, 200);
}

// --- HTTP/2 --------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// SETTINGS with these (identifier, value) pairs.
fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, value)| {
            let mut setting = id.to_be_bytes().to_vec();
            setting.extend_from_slice(&value.to_be_bytes());
            setting
        })
        .collect();
    frame(0x4, 0, 0, &payload)
}

/// A GET for `path` on `stream`, HPACK-encoded with the static table only.
fn get_headers(stream: u32, path: &str) -> Vec<u8> {
    // :method GET, :scheme http, :path (literal, indexed name), :authority x.
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b'x']);
    // END_STREAM | END_HEADERS
    frame(0x1, 0x5, stream, &block)
}

/// An HTTP/2 client that opens `streams` streams for `path` with an initial
/// window of zero, so no answer can ever be sent, and never reads.
fn zero_window_h2(address: SocketAddr, streams: u32, path: &str) -> TcpStream {
    let mut payload = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 0
    payload.extend(settings(&[(0x4, 0)]));
    for i in 0..streams {
        payload.extend(get_headers(2 * i + 1, path));
    }
    stalled_tcp(address, &payload)
}

/// An HTTP/2 client that sends the preface and an empty SETTINGS frame, and
/// nothing more.
fn silent_h2(address: SocketAddr) -> TcpStream {
    let mut payload = PREFACE.to_vec();
    payload.extend(settings(&[]));
    stalled_tcp(address, &payload)
}

#[test]
fn http2_clients_that_grant_no_window_cannot_starve_liveness() {
    let dir = TestDir::new();
    let server = server(&dir, "");
    let watch = LivenessWatch::tcp(server.address);
    flood_and_check(
        1100,
        Some(server.address.port()),
        watch,
        SEND_TIMEOUT,
        || zero_window_h2(server.address, 16, "/livez"),
    );
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn http2_clients_that_only_open_the_connection_cannot_hold_it() {
    let dir = TestDir::new();
    let server = server(&dir, "");
    let watch = LivenessWatch::tcp(server.address);
    flood_and_check(
        1100,
        Some(server.address.port()),
        watch,
        HEADER_READ_TIMEOUT,
        || silent_h2(server.address),
    );
}

#[test]
fn an_http2_client_that_answers_pings_but_asks_nothing_is_retired() {
    let dir = TestDir::new();
    let server = server(&dir, "");
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.write_all(PREFACE).unwrap();
    stream.write_all(&settings(&[])).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut pending = Vec::new();
    let closed_after = loop {
        assert!(
            started.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(10),
            "the connection was kept open"
        );
        let mut buffer = [0u8; 4096];
        match stream.read(&mut buffer) {
            Ok(0) => break started.elapsed(),
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break started.elapsed(),
        }
        // Answer everything as a live client would: ack SETTINGS and PINGs.
        while pending.len() >= 9 {
            let length = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
            if pending.len() < 9 + length {
                break;
            }
            let (kind, flags) = (pending[3], pending[4]);
            let payload = pending[9..9 + length].to_vec();
            pending.drain(..9 + length);
            let reply = match (kind, flags & 1) {
                (0x4, 0) => Some(frame(0x4, 1, 0, &[])),
                (0x6, 0) => Some(frame(0x6, 1, 0, &payload)),
                _ => None,
            };
            if let Some(reply) = reply {
                let _ = stream.write_all(&reply);
            }
        }
    };
    assert!(
        closed_after < HEADER_READ_TIMEOUT + Duration::from_secs(1),
        "closed after {closed_after:?}"
    );
}

/// An HTTP/2 frame as read: (type, flags, stream, payload).
type Frame = (u8, u8, u32, Vec<u8>);

/// Reads frames from `stream` until it ends or `limit` passes, and whether it
/// ended.
fn read_frames(stream: &mut TcpStream, limit: Duration) -> (Vec<Frame>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut bytes = Vec::new();
    let ended = loop {
        if started.elapsed() > limit {
            break false;
        }
        let mut buffer = [0u8; 65536];
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
    };
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let length = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let end = (at + 9 + length).min(bytes.len());
        let id = u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
        frames.push((
            bytes[at + 3],
            bytes[at + 4],
            id & 0x7fff_ffff,
            bytes[at + 9..end].to_vec(),
        ));
        at = end;
    }
    (frames, ended)
}

/// HEADERS then RST_STREAM(CANCEL), 5,000 times in one write: the connection
/// is ended with GOAWAY ENHANCE_YOUR_CALM long before the last pair, and
/// liveness never notices.
#[test]
fn an_http2_rapid_reset_flood_is_told_to_calm_down() {
    let dir = TestDir::new();
    let server = server(&dir, "");
    let mut payload = PREFACE.to_vec();
    payload.extend(settings(&[]));
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        payload.extend(get_headers(id, "/livez"));
        payload.extend(frame(0x3, 0, id, &0x8u32.to_be_bytes()));
    }
    let mut stream = TcpStream::connect(server.address).unwrap();
    // The server may close while the flood is still being written.
    let _ = stream.write_all(&payload);
    let (frames, ended) = read_frames(&mut stream, Duration::from_secs(10));
    assert!(ended, "the connection was kept open");
    let goaway = frames
        .iter()
        .find(|(kind, ..)| *kind == 0x7)
        .expect("a GOAWAY frame");
    let last_stream = u32::from_be_bytes(goaway.3[0..4].try_into().unwrap()) & 0x7fff_ffff;
    let code = u32::from_be_bytes(goaway.3[4..8].try_into().unwrap());
    assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM");
    assert!(
        last_stream < 2 * 1000,
        "ended only after stream {last_stream}"
    );
    assert_eq!(server.get("/livez").status, 200);
}

/// 20,000 PINGs in one write: they are answered, a connection that asks
/// nothing else is still retired, and liveness holds.
#[test]
fn an_http2_ping_flood_cannot_hold_the_connection() {
    let dir = TestDir::new();
    let server = server(&dir, "");
    let mut payload = PREFACE.to_vec();
    payload.extend(settings(&[]));
    for i in 0..20_000u64 {
        payload.extend(frame(0x6, 0, 0, &i.to_be_bytes()));
    }
    let mut stream = TcpStream::connect(server.address).unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = stream.write_all(&payload);
        })
    };
    let (frames, ended) = read_frames(&mut stream, HEADER_READ_TIMEOUT + Duration::from_secs(10));
    writer.join().unwrap();
    assert!(ended, "the connection was kept open");
    let acks = frames
        .iter()
        .filter(|(kind, flags, ..)| *kind == 0x6 && flags & 1 == 1)
        .count();
    assert!(acks > 0, "the pings were answered, not ignored");
    assert_eq!(server.get("/livez").status, 200);
}
