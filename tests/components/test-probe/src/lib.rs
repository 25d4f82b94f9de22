//! A probe for the integration tests. Its `action` config value picks what it does:
//!
//! - `ready` (default): ready;
//! - `not-ready`: not ready with `message` and `status`;
//! - `loop`: spins forever (the host's deadline must stop it);
//! - `grow`: allocates until memory runs out (the host's memory cap must stop it);
//! - `panic`: panics with `message`;
//! - `sql`: runs `SELECT 1` on `database`, not ready with the error if it fails;
//! - `stats`: asks `server` of `cache` for memcached stats, not ready with the error;
//! - `echo`: not ready with a description of the request, its grants and its config;
//! - `log-flood`: writes `count` log lines, then is ready;
//! - `env`: not ready, listing the environment variables it sees;
//! - `read-file`: not ready, saying what reading `path` gave;
//! - `connect`: not ready, saying what a TCP connection to `address` gave;
//! - `http`: not ready, saying what `GET url` gave;
//! - `abort`: traps without a panic message;
//! - `big-message`: not ready with a message of `size` bytes;
//! - `resolve`: not ready, saying what looking up `name` gave;
//! - `udp`: not ready, saying what sending a UDP datagram to `address` gave;
//! - `listen`: not ready, saying what listening on `address` gave;
//! - `stderr-flood`: writes `count` lines to stderr and stdout, then panics
//!   with `message` (so the host reports what stderr kept).
//! - `count`: not ready with `call N`, N counting the calls this instance has
//!   had (so `call 1` every time if each check has a fresh instance);
//! - `sleep`: sleeps `ms` milliseconds, then is ready.
#![forbid(unsafe_code)]

use probehost_sdk::{NotReady, Probe, Request, config, http, log, memcached, sql};

struct TestProbe;

fn setting(key: &str) -> String {
    config::get(key).unwrap_or_default()
}

impl Probe for TestProbe {
    fn ready(request: Option<&Request>) -> Result<(), NotReady> {
        match config::get("action").as_deref().unwrap_or("ready") {
            "ready" => Ok(()),
            "not-ready" => {
                let status = setting("status").parse().unwrap_or(503);
                Err(NotReady::new(setting("message")).with_status(status))
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("{}", setting("message")),
            "count" => {
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Err(NotReady::new(format!("call {n}")))
            }
            "sleep" => {
                let ms = setting("ms").parse().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(())
            }
            "sql" => sql::query(&setting("database"), "SELECT 1", &[])
                .map(drop)
                .map_err(|e| NotReady::new(e.to_string())),
            "stats" => memcached::stats(&setting("cache"), &setting("server"))
                .map(drop)
                .map_err(|e| NotReady::new(e.to_string())),
            "echo" => {
                let databases: Vec<String> = sql::databases()
                    .into_iter()
                    .map(|d| format!("{}={}", d.name, d.backend))
                    .collect();
                let caches: Vec<String> = memcached::caches()
                    .into_iter()
                    .map(|c| format!("{}={}", c.name, c.servers.join("+")))
                    .collect();
                let request = match request {
                    Some(r) => format!(
                        "{} {} query={:?} x-probe={:?}",
                        r.method,
                        r.path,
                        r.query,
                        r.header("X-Probe")
                    ),
                    None => "none".to_owned(),
                };
                Err(NotReady::new(format!(
                    "request: {request}; databases: {}; caches: {}; config: {:?}",
                    databases.join(","),
                    caches.join(","),
                    config::entries()
                ))
                .with_status(418))
            }
            "log-flood" => {
                let count: u32 = setting("count").parse().unwrap_or(10_000);
                for i in 0..count {
                    log::info(&format!("line {i} {}", "x".repeat(100)));
                }
                Ok(())
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                Err(NotReady::new(format!("environment: [{}]", vars.join(","))))
            }
            "read-file" => Err(NotReady::new(match std::fs::read(setting("path")) {
                Ok(bytes) => format!("read {} bytes", bytes.len()),
                Err(e) => format!("read failed: {:?}", e.kind()),
            })),
            "connect" => Err(NotReady::new(
                match std::net::TcpStream::connect(setting("address")) {
                    Ok(_) => "connected".to_owned(),
                    Err(e) => format!("connect failed: {:?}", e.kind()),
                },
            )),
            "http" => Err(NotReady::new(match http::get(&setting("url")) {
                Ok(response) => format!("status {}: {}", response.status, response.text()),
                Err(e) => format!("http failed: {e}"),
            })),
            "abort" => std::process::abort(),
            "big-message" => {
                let size: usize = setting("size").parse().unwrap_or(10 << 20);
                Err(NotReady::new("m".repeat(size)))
            }
            "resolve" => {
                use std::net::ToSocketAddrs;
                Err(NotReady::new(
                    match (setting("name").as_str(), 1).to_socket_addrs() {
                        Ok(found) => format!("resolved {} addresses", found.count()),
                        Err(e) => format!("resolve failed: {:?}", e.kind()),
                    },
                ))
            }
            "udp" => Err(NotReady::new(
                match std::net::UdpSocket::bind("0.0.0.0:0")
                    .and_then(|socket| socket.send_to(b"ping", setting("address")))
                {
                    Ok(_) => "udp sent".to_owned(),
                    Err(e) => format!("udp failed: {:?}", e.kind()),
                },
            )),
            "listen" => Err(NotReady::new(
                match std::net::TcpListener::bind(setting("address")) {
                    Ok(_) => "listening".to_owned(),
                    Err(e) => format!("listen failed: {:?}", e.kind()),
                },
            )),
            // Flooding stdout and stderr is the point of this action.
            #[allow(clippy::print_stdout, clippy::print_stderr)]
            "stderr-flood" => {
                let count: u32 = setting("count").parse().unwrap_or(100_000);
                for i in 0..count {
                    eprintln!("stderr line {i} {}", "e".repeat(100));
                    println!("stdout line {i} {}", "o".repeat(100));
                }
                panic!("{}", setting("message"))
            }
            other => Err(NotReady::new(format!(
                "test-probe: unknown action {other:?}"
            ))),
        }
    }
}

probehost_sdk::export_probe!(TestProbe);
