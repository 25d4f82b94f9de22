//! memcached caches: the servers of each `[caches.NAME]`, and the bounded
//! `stats` request the `memcached` capability makes.
//!
//! Each request is one `stats` exchange on a fresh TCP connection, spoken
//! here rather than through a client library: memcache 0.21's `stats` returns
//! after the first line of whatever comes back, so a reply cut in the middle,
//! a `SERVER_ERROR` or another service's answer all read as a healthy
//! memcached. Here the reply counts only when it is whole: `STAT` lines, then
//! `END`. A readiness check is rare and a connect on a healthy server costs
//! one round trip, so there is no connection to keep alive and none that a
//! cut could leave half-read.
//!
//! The exchange is blocking, so it runs on tokio's blocking pool and is
//! bounded twice: by socket timeouts (so the blocking thread is released) and
//! by an async timeout (so the caller answers in time even if it is not).
//! Each server has at most one request outstanding: while one is stuck on a
//! silent server, the next check fails at once instead of queueing threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The most a `stats` reply may hold (memcached's is about 3 KiB).
const MAX_REPLY: u64 = 256 * 1024;

/// Why a `stats` request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("could not connect: {0}")]
    Connection(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("bad reply: {0}")]
    Protocol(String),
}

/// A configured memcached cache.
#[derive(Debug)]
pub struct Cache {
    name: String,
    servers: Vec<Server>,
}

#[derive(Debug)]
struct Server {
    address: String,
    timeout: Duration,
    /// A request is outstanding.
    busy: Arc<AtomicBool>,
}

impl Cache {
    /// The cache named `name` on `servers` (`host:port`), each request to one
    /// bounded by `timeout` (to connect, and for each read and write).
    pub fn new(name: &str, servers: &[String], timeout: Duration) -> Result<Cache, String> {
        let servers = servers
            .iter()
            .map(|address| {
                if address
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
                {
                    return Err(format!("server `{address}` is not HOST:PORT"));
                }
                Ok(Server {
                    address: address.clone(),
                    timeout,
                    busy: Arc::new(AtomicBool::new(false)),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Cache {
            name: name.to_owned(),
            servers,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The servers, as `host:port`, in config order.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| s.address.as_str())
    }

    /// Ask `server` for its stats, within `budget`. `None` if `server` is not one
    /// of this cache's servers.
    pub async fn stats(
        &self,
        server: &str,
        budget: Duration,
    ) -> Option<Result<Vec<(String, String)>, CacheError>> {
        let server = self.servers.iter().find(|s| s.address == server)?;
        let limit = budget.min(server.timeout * 2);
        if server.busy.swap(true, Ordering::AcqRel) {
            return Some(Err(CacheError::Timeout(server.timeout)));
        }
        let busy = BusyGuard(server.busy.clone());
        let address = server.address.clone();
        let timeout = limit.min(server.timeout);
        let deadline = Instant::now() + limit;
        let request = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            // The thread may start late if the blocking pool is busy.
            if Instant::now() >= deadline {
                return Err(CacheError::Timeout(limit));
            }
            stats_exchange(&address, timeout, deadline)
        });
        let result = match tokio::time::timeout(limit, request).await {
            Err(_) => Err(CacheError::Timeout(limit)),
            Ok(Err(join)) => Err(CacheError::Protocol(format!(
                "stats request failed: {join}"
            ))),
            Ok(Ok(answer)) => answer,
        };
        Some(result)
    }
}

/// Clears a server's `busy` flag when the request ends, however it ends.
struct BusyGuard(Arc<AtomicBool>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Connect to `address` within `timeout`: the first of its addresses that
/// accepts.
fn connect(address: &str, timeout: Duration) -> Result<TcpStream, CacheError> {
    let addresses = address
        .to_socket_addrs()
        .map_err(|e| CacheError::Connection(format!("cannot resolve {address}: {e}")))?;
    let mut last = CacheError::Connection(format!("{address} resolves to no address"));
    for addr in addresses {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = CacheError::Timeout(timeout)
            }
            Err(e) => last = CacheError::Connection(format!("{addr}: {e}")),
        }
    }
    Err(last)
}

/// One `stats` exchange on a fresh connection: every `STAT name value` line
/// up to `END`, sorted, or why there is no such reply. Each step is bounded
/// by `timeout`, and all of them by `deadline`.
fn stats_exchange(
    address: &str,
    timeout: Duration,
    deadline: Instant,
) -> Result<Vec<(String, String)>, CacheError> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            CacheError::Timeout(timeout)
        }
        _ => CacheError::Connection(e.to_string()),
    };
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(CacheError::Timeout(timeout))
        } else {
            Ok(left.min(timeout))
        }
    };
    let mut stream = connect(address, left()?)?;
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(b"stats\r\n").map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?.take(MAX_REPLY));
    let mut stats = Vec::new();
    let mut line = Vec::new();
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        line.clear();
        reader.read_until(b'\n', &mut line).map_err(io)?;
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(match (line.is_empty(), stats.is_empty()) {
                (true, true) => CacheError::Connection("closed without answering".into()),
                _ if reader.get_ref().limit() == 0 => {
                    CacheError::Protocol(format!("reply longer than {MAX_REPLY} bytes"))
                }
                _ => CacheError::Protocol("the reply ended before END".into()),
            });
        };
        let text = String::from_utf8_lossy(text.strip_suffix(b"\r").unwrap_or(text));
        if text == "END" {
            stats.sort();
            return Ok(stats);
        }
        match text
            .strip_prefix("STAT ")
            .and_then(|stat| stat.split_once(' '))
        {
            Some((name, value)) if !name.is_empty() => {
                stats.push((name.to_owned(), value.to_owned()));
            }
            _ => {
                let shown: String = text.chars().take(80).collect();
                return Err(CacheError::Protocol(format!(
                    "not a stats reply: {shown:?}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_must_be_host_and_port() {
        for bad in ["localhost", ":11211", "cache:port", "cache:70000"] {
            assert!(
                Cache::new("default", &[bad.to_owned()], Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
        assert!(
            Cache::new(
                "default",
                &["[::1]:11211".to_owned()],
                Duration::from_secs(1)
            )
            .is_ok()
        );
    }
}
