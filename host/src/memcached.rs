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
//! The exchange runs on the caller's runtime (no blocking thread, no hop to
//! another one): connecting and each read are bounded by the cache's
//! `timeout`, the whole request by the caller's budget. A request that is
//! dropped (its check ended) closes its connection.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
        let step = limit.min(server.timeout);
        Some(
            match tokio::time::timeout(limit, stats_exchange(&server.address, step)).await {
                Err(_) => Err(CacheError::Timeout(limit)),
                Ok(answer) => answer,
            },
        )
    }
}

/// Connect to `address` within `timeout`: the first of its addresses that
/// accepts.
async fn connect(address: &str, timeout: Duration) -> Result<TcpStream, CacheError> {
    let addresses = tokio::net::lookup_host(address)
        .await
        .map_err(|e| CacheError::Connection(format!("cannot resolve {address}: {e}")))?;
    let mut last = CacheError::Connection(format!("{address} resolves to no address"));
    for addr in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = CacheError::Connection(format!("{addr}: {e}")),
            Err(_) => last = CacheError::Timeout(timeout),
        }
    }
    Err(last)
}

/// One step of the exchange, within `timeout`.
async fn within<T>(
    timeout: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> Result<T, CacheError> {
    match tokio::time::timeout(timeout, io).await {
        Ok(result) => result.map_err(|e| CacheError::Connection(e.to_string())),
        Err(_) => Err(CacheError::Timeout(timeout)),
    }
}

/// One `stats` exchange on a fresh connection: every `STAT name value` line
/// up to `END`, sorted, or why there is no such reply. Connecting, the
/// request and each read are bounded by `timeout`.
async fn stats_exchange(
    address: &str,
    timeout: Duration,
) -> Result<Vec<(String, String)>, CacheError> {
    let mut stream = connect(address, timeout).await?;
    let _ = stream.set_nodelay(true);
    within(timeout, stream.write_all(b"stats\r\n")).await?;
    let mut reader = BufReader::new(stream.take(MAX_REPLY));
    let mut stats = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        within(timeout, reader.read_until(b'\n', &mut line)).await?;
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
