//! The per-check store state and the host capabilities a probe imports.
//!
//! Every capability answers from the probe's [`Grants`]: a database or cache the
//! probe was not granted is an error value (`not-granted`), never a trap. Calls
//! that wait on the network are bounded by the check's remaining deadline, less a
//! reserve that leaves the probe time to turn the error into its own answer.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::probehost::probe::{config, log, memcached, sql, types};
use super::net::{GrantHost, HttpOrigin, NetworkGrant, SocketPolicy};
use crate::db::{self, Database, DbError};
use crate::memcached::{Cache, CacheError};

/// Longest log line a probe may write; the rest is cut.
pub(crate) const MAX_LOG_LINE: usize = 1024;
/// Log lines a probe may write per check; further lines are counted and dropped.
pub(crate) const MAX_LOG_LINES: u32 = 32;
/// Bytes of a probe's stderr kept per check (the last ones, for the reason of a
/// crash).
const MAX_STDERR: usize = 4096;
/// What a guest may hand its stderr in one write.
const MAX_WRITE: usize = 64 * 1024;
/// Linear memories and core instances a probe may create: a Rust component has
/// one memory and a few instances, an interpreter-based one a handful more.
const MAX_MEMORIES: usize = 16;
const MAX_INSTANCES: usize = 64;
/// How the SDK's panic hook starts the line it logs just before the trap.
pub(crate) const PANIC_PREFIX: &str = "panicked at ";

/// What a probe was granted by its `[probes.NAME]` table.
#[derive(Debug, Default)]
pub struct Grants {
    pub databases: Vec<Arc<Database>>,
    pub caches: Vec<Arc<Cache>>,
    /// TCP addresses it may connect to (wasi:sockets).
    pub network: Arc<[NetworkGrant]>,
    /// HTTP origins it may send requests to (wasi:http).
    pub http: Arc<[HttpOrigin]>,
    pub config: Vec<(String, String)>,
    /// Secrets of its settings and databases: redacted from everything it
    /// says (answers, log lines, crash reasons) before the host passes it on.
    pub secrets: Arc<[String]>,
}

impl Grants {
    /// `text` with this probe's secrets masked.
    pub fn redact(&self, text: &str) -> String {
        crate::config::redact(text, &self.secrets)
    }
}

/// The store data of one check.
pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
    table: ResourceTable,
    probe: Arc<str>,
    grants: Arc<Grants>,
    deadline: Instant,
    reserve: Duration,
    memory_limit: usize,
    /// Bytes of linear memory across all of the instance's memories.
    memory_used: usize,
    pub(crate) memory_exceeded: Option<usize>,
    pub(crate) log: LogBudget,
    pub(crate) stderr: Capture,
}

impl HostState {
    pub(crate) fn new(
        probe: Arc<str>,
        grants: Arc<Grants>,
        deadline: Instant,
        reserve: Duration,
        memory_limit: usize,
    ) -> HostState {
        let stderr = Capture::new(MAX_STDERR);
        // No filesystem, environment or arguments: the defaults of an empty WASI
        // context. Sockets only as far as the network grant reaches; without
        // one, none at all (not even name lookups). With one, lookups of the
        // granted names (and of IP addresses written out, which common clients
        // such as CPython's `socket.create_connection` resolve too) reach the
        // resolver, and nothing else does (see `limit_name_lookups`);
        // connections reach only the granted addresses.
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone()).allow_udp(false);
        if grants.network.is_empty() {
            wasi.allow_tcp(false).allow_ip_name_lookup(false);
        } else {
            let policy = Arc::new(SocketPolicy::new(grants.network.clone()));
            wasi.allow_tcp(true)
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, usage| {
                    let policy = policy.clone();
                    Box::pin(async move { policy.allows(addr, usage).await })
                });
        }
        let http_policy = HttpPolicy {
            probe: probe.clone(),
            origins: grants.http.clone(),
            deadline,
            reserve,
        };
        HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            http_policy,
            table: ResourceTable::new(),
            probe,
            grants,
            deadline,
            reserve,
            memory_limit,
            memory_used: 0,
            memory_exceeded: None,
            log: LogBudget::default(),
            stderr,
        }
    }

    /// Whether a name lookup for `name` may go to the resolver: an IP address
    /// written out, or a host name the `network` grant lists.
    pub(crate) fn may_resolve(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        self.grants.network.iter().any(|g| match &g.host {
            GrantHost::Name(granted) => granted.eq_ignore_ascii_case(name),
            GrantHost::Ip(_) => false,
        })
    }

    /// When the check ends.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Set when the check ends and the reserve its host calls leave: a store
    /// made ahead of its check gets them when the check starts.
    pub(crate) fn arm(&mut self, deadline: Instant, reserve: Duration) {
        self.deadline = deadline;
        self.reserve = reserve;
        self.http_policy.deadline = deadline;
        self.http_policy.reserve = reserve;
    }

    /// Time left for a host call: until the deadline, less the reserve.
    fn budget(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.reserve)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

/// Outgoing HTTP for one check: only to granted origins, and never past the
/// check's deadline.
struct HttpPolicy {
    probe: Arc<str>,
    origins: Arc<[HttpOrigin]>,
    deadline: Instant,
    reserve: Duration,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        if !self.origins.iter().any(|o| o.matches(request.uri())) {
            let uri = crate::config::mask_text(&request.uri().to_string());
            tracing::debug!(probe = %self.probe, %uri, "HTTP request to an origin outside the grant denied");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // Every wait is bounded by what is left of the check.
        let budget = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.reserve);
        let bounded = |asked: Option<Duration>| Some(asked.map_or(budget, |a| a.min(budget)));
        let options = options.unwrap_or_default();
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: bounded(options.connect_timeout),
            first_byte_timeout: bounded(options.first_byte_timeout),
            between_bytes_timeout: bounded(options.between_bytes_timeout),
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The cap is for the instance, whatever number of memories it has.
        let total = self.memory_used - current.min(self.memory_used) + desired;
        if total > self.memory_limit {
            // Trap rather than fail the allocation: the guest cannot recover in a
            // useful way, and the host can name the reason.
            self.memory_exceeded = Some(total);
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_limit);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl types::Host for HostState {}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.grants
            .config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.grants.config.clone()
    }
}

/// Per-check bounds on a probe's logging.
#[derive(Debug, Default)]
pub(crate) struct LogBudget {
    lines: u32,
    pub(crate) dropped: u32,
    /// The panic the SDK reported (an error-level line starting with
    /// [`PANIC_PREFIX`]) just before the trap, which then becomes the reason.
    pub(crate) panic: Option<String>,
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let message = truncate(&message, MAX_LOG_LINE);
        if level == log::Level::Error && message.starts_with(PANIC_PREFIX) {
            self.log.panic = Some(message.to_owned());
        }
        if self.log.lines >= MAX_LOG_LINES {
            self.log.dropped += 1;
            return;
        }
        self.log.lines += 1;
        let message = self.grants.redact(message);
        let probe = &*self.probe;
        match level {
            log::Level::Trace => tracing::trace!(target: "probehost::guest", probe, "{message}"),
            log::Level::Debug => tracing::debug!(target: "probehost::guest", probe, "{message}"),
            log::Level::Info => tracing::info!(target: "probehost::guest", probe, "{message}"),
            log::Level::Warn => tracing::warn!(target: "probehost::guest", probe, "{message}"),
            log::Level::Error => tracing::error!(target: "probehost::guest", probe, "{message}"),
        }
    }
}

impl sql::Host for HostState {
    fn databases(&mut self) -> Vec<sql::Database> {
        self.grants
            .databases
            .iter()
            .map(|db| sql::Database {
                name: db.name().to_owned(),
                backend: match db.backend() {
                    db::Backend::Postgres => sql::Backend::Postgres,
                    db::Backend::Mysql => sql::Backend::Mysql,
                    db::Backend::Sqlite => sql::Backend::Sqlite,
                },
            })
            .collect()
    }

    async fn query(
        &mut self,
        database: String,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<sql::Rows, sql::Error> {
        let Some(db) = self
            .grants
            .databases
            .iter()
            .find(|d| d.name() == database)
            .cloned()
        else {
            return Err(sql::Error::NotGranted(format!(
                "database `{database}` is not granted to probe `{}`",
                self.probe
            )));
        };
        let params: Vec<db::Value> = params.into_iter().map(from_wit_value).collect();
        match db.query(&statement, &params, self.budget()).await {
            Ok(rows) => Ok(sql::Rows {
                columns: rows.columns,
                rows: rows
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(to_wit_value).collect())
                    .collect(),
            }),
            Err(DbError::Connection(m)) => Err(sql::Error::Connection(m)),
            Err(e @ DbError::Timeout(_)) => Err(sql::Error::Timeout(e.to_string())),
            Err(DbError::Query(m)) => Err(sql::Error::Query(m)),
        }
    }
}

fn from_wit_value(v: sql::Value) -> db::Value {
    match v {
        sql::Value::Null => db::Value::Null,
        sql::Value::Boolean(b) => db::Value::Boolean(b),
        sql::Value::Integer(i) => db::Value::Integer(i),
        sql::Value::Real(r) => db::Value::Real(r),
        sql::Value::Text(t) => db::Value::Text(t),
        sql::Value::Blob(b) => db::Value::Blob(b),
    }
}

fn to_wit_value(v: db::Value) -> sql::Value {
    match v {
        db::Value::Null => sql::Value::Null,
        db::Value::Boolean(b) => sql::Value::Boolean(b),
        db::Value::Integer(i) => sql::Value::Integer(i),
        db::Value::Real(r) => sql::Value::Real(r),
        db::Value::Text(t) => sql::Value::Text(t),
        db::Value::Blob(b) => sql::Value::Blob(b),
    }
}

impl memcached::Host for HostState {
    fn caches(&mut self) -> Vec<memcached::Cache> {
        self.grants
            .caches
            .iter()
            .map(|c| memcached::Cache {
                name: c.name().to_owned(),
                servers: c.servers().map(str::to_owned).collect(),
            })
            .collect()
    }

    async fn stats(
        &mut self,
        cache: String,
        server: String,
    ) -> Result<Vec<(String, String)>, memcached::Error> {
        let not_granted = || {
            memcached::Error::NotGranted(format!(
                "server `{server}` of cache `{cache}` is not granted to probe `{}`",
                self.probe
            ))
        };
        let Some(granted) = self
            .grants
            .caches
            .iter()
            .find(|c| c.name() == cache)
            .cloned()
        else {
            return Err(not_granted());
        };
        match granted.stats(&server, self.budget()).await {
            None => Err(not_granted()),
            Some(Ok(stats)) => Ok(stats),
            Some(Err(CacheError::Connection(m))) => Err(memcached::Error::Connection(m)),
            Some(Err(e @ CacheError::Timeout(_))) => Err(memcached::Error::Timeout(e.to_string())),
            Some(Err(CacheError::Protocol(m))) => Err(memcached::Error::Protocol(m)),
        }
    }
}

/// The longest prefix of `s` that fits in `max` bytes and ends on a character
/// boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A bounded in-memory stream for a guest's stderr: keeps the last `capacity`
/// bytes (where a crash is described) and accepts everything, so a chatty guest
/// neither fails its writes nor grows the host's memory.
#[derive(Clone)]
pub(crate) struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    capacity: usize,
}

impl Capture {
    fn new(capacity: usize) -> Capture {
        Capture {
            buffer: Arc::new(Mutex::new(Vec::new())),
            capacity,
        }
    }

    /// The last non-empty line written, if any.
    pub(crate) fn last_line(&self) -> Option<String> {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buffer)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl Capture {
    fn keep(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let keep = bytes.len().min(self.capacity);
        buffer.extend_from_slice(&bytes[bytes.len() - keep..]);
        let excess = buffer.len().saturating_sub(self.capacity);
        buffer.drain(..excess);
    }
}

impl StdoutStream for Capture {
    /// The guest's writes land in the buffer at once. (The default adapter
    /// hands each write to a task of its own and makes the guest wait for
    /// that task's flush: a guest printing line by line then spends most of
    /// its deadline waiting on the scheduler.)
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always room: what does not fit pushes the oldest bytes out.
        Ok(MAX_WRITE)
    }
}

impl Pollable for Capture {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::{Capture, truncate};

    #[tokio::test]
    async fn captured_stderr_keeps_only_its_last_bytes() {
        use tokio::io::AsyncWriteExt;
        let capture = Capture::new(64);
        let mut writer = capture.clone();
        for i in 0..10_000 {
            writer
                .write_all(format!("line {i} {}\n", "x".repeat(50)).as_bytes())
                .await
                .unwrap();
        }
        writer.write_all(b"the end\n").await.unwrap();
        assert!(capture.buffer.lock().unwrap().len() <= 64);
        assert_eq!(capture.last_line().as_deref(), Some("the end"));
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
