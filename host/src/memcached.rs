//! memcached caches: one client per server of each `[caches.NAME]`, and the bounded
//! `stats` request the `memcached` capability makes.
//!
//! The memcache crate is blocking, so every request runs on tokio's blocking pool
//! and is bounded twice: by socket timeouts (so the blocking thread is released)
//! and by an async timeout (so the caller answers in time even if it is not).
//! Each server has at most one request outstanding: while one is stuck on a
//! silent server, the next check fails at once instead of queueing threads.
//!
//! memcache connects through an r2d2 pool, which retries a failed connect in the
//! background until its wait runs out, and connects without a timeout. So each
//! request first opens (and closes) a TCP connection with a timeout of its own:
//! a refused or unreachable server is reported at once, and as what it is.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use scheduled_thread_pool::ScheduledThreadPool;

/// Connections kept per server.
const MAX_CONNECTIONS: u32 = 2;

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

struct Server {
    address: String,
    client: memcache::Client,
    timeout: Duration,
    /// A request is outstanding.
    busy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Cache {
    /// Set up clients for `servers` (`host:port`) without connecting.
    pub fn new(name: &str, servers: &[String], timeout: Duration) -> Result<Cache, String> {
        let servers = servers
            .iter()
            .map(|address| {
                // r2d2 connects on this thread; one per server, so a server that
                // hangs on connect cannot hold up another's connections.
                let thread_pool = Arc::new(
                    ScheduledThreadPool::builder()
                        .num_threads(1)
                        .thread_name_pattern("memcached-connect")
                        .build(),
                );
                let url = memcache::Url::parse(&format!(
                    "memcache://{address}?timeout={}",
                    timeout.as_secs_f64()
                ))
                .map_err(|e| format!("server `{address}`: {e}"))?;
                let pool = r2d2::Pool::builder()
                    .max_size(MAX_CONNECTIONS)
                    .min_idle(Some(0))
                    .connection_timeout(timeout)
                    .idle_timeout(Some(Duration::from_secs(60)))
                    .thread_pool(thread_pool)
                    .error_handler(Box::new(r2d2::NopErrorHandler))
                    .build_unchecked(memcache::ConnectionManager::new(url));
                let client = memcache::Client::with_pool(pool).map_err(|e| e.to_string())?;
                Ok(Server {
                    address: address.clone(),
                    client,
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
        let client = server.client.clone();
        let address = server.address.clone();
        let connect_timeout = limit.min(server.timeout);
        let deadline = Instant::now() + limit;
        let request = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            // The thread may start late if the blocking pool is busy.
            if Instant::now() >= deadline {
                return Err(CacheError::Timeout(limit));
            }
            reachable(&address, connect_timeout)?;
            client.stats().map_err(|e| classify(e, connect_timeout))
        });
        let result = match tokio::time::timeout(limit, request).await {
            Err(_) => Err(CacheError::Timeout(limit)),
            Ok(Err(join)) => Err(CacheError::Protocol(format!(
                "stats request failed: {join}"
            ))),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(mut per_server))) => match per_server.pop() {
                Some((_, stats)) => {
                    let mut stats: Vec<(String, String)> = stats.into_iter().collect();
                    stats.sort();
                    Ok(stats)
                }
                None => Err(CacheError::Protocol("no stats in reply".into())),
            },
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

/// Open and close a TCP connection to `address` within `timeout`.
fn reachable(address: &str, timeout: Duration) -> Result<(), CacheError> {
    let addresses = address
        .to_socket_addrs()
        .map_err(|e| CacheError::Connection(format!("cannot resolve {address}: {e}")))?;
    let mut last = CacheError::Connection(format!("{address} resolves to no address"));
    for addr in addresses {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = CacheError::Timeout(timeout)
            }
            Err(e) => last = CacheError::Connection(format!("{addr}: {e}")),
        }
    }
    Err(last)
}

fn classify(e: memcache::MemcacheError, timeout: Duration) -> CacheError {
    use memcache::MemcacheError as E;
    match e {
        E::IOError(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            CacheError::Timeout(timeout)
        }
        E::IOError(io) => CacheError::Connection(io.to_string()),
        E::PoolError(pool) => CacheError::Connection(pool.to_string()),
        other => CacheError::Protocol(other.to_string()),
    }
}
