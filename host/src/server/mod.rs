//! The HTTP side: routing, probe answers, and the serving loop.
//!
//! A request is a probe only if it is a `GET` whose path (without the query)
//! equals a configured path exactly. Health paths answer `Ok` without touching
//! anything; ready paths read an evaluation from [`Readiness`]; startup paths
//! answer 503 until readiness has passed once. In proxy mode everything else
//! goes to the application ([`Upstream`]); otherwise it is a 404.
//! [`Routes::route`] and [`answer`] are plain functions of the request,
//! testable without a socket. This module knows nothing of wasm.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

mod guard;
mod socket;

use guard::{Action, Guard, GuardedBody, GuardedIo};
pub use socket::ProbeSocket;

use crate::config::{Detail, ServerConfig};
use crate::metrics::{Metrics, RouteLabel};
use crate::plugin::ProbeRequest;
use crate::proxy::{Body, Peer, Proxy, Tunnel, Upstream, text};
use crate::readiness::{ProbeResult, Readiness, Standing, Verdict};

/// Largest request head accepted (HTTP/1 buffer); beyond it, 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How often an idle HTTP/2 client is pinged, and how long it has to answer.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Streams one HTTP/2 connection may have open at once: the parallelism of
/// HTTP/1.1. A stream whose client grants no window holds its answer and the
/// stream's state (about 8 KiB for `/metrics`); at one per connection, every
/// connection the default limits admit holding one keeps the server under
/// 64 MiB (`PROBEHOST_BENCH=h2`). Probes need one; a proxy client that wants
/// more opens another connection.
const HTTP2_MAX_STREAMS: u32 = 1;
/// What HTTP/2 buffers per stream for a client that does not take it.
const HTTP2_MAX_SEND_BUFFER: usize = 64 * 1024;
/// Connections kept for probes beyond `server.max_connections`: when every
/// slot is taken, a new connection still gets one of these, answers probe
/// paths only, one request, and must send it within [`RESERVE_IDLE`] and take
/// its answer within [`RESERVE_SEND`]. A kubelet does both at once; anything
/// else gives its reserve slot back within a second.
const PROBE_RESERVE: usize = 64;
/// How long a reserve connection may take to send its request.
const RESERVE_IDLE: Duration = Duration::from_millis(500);
/// How long a reserve connection's answer may wait for the client: a probe
/// answer is a few hundred bytes.
const RESERVE_SEND: Duration = Duration::from_millis(250);
/// How long a connection retired with nothing left to answer has to close: a
/// live HTTP/2 client acknowledges the GOAWAY's ping within a round trip.
const RETIRE_GRACE: Duration = Duration::from_millis(250);
/// How often the server checks whether to give memory back to the system.
const TRIM_CHECK: Duration = Duration::from_secs(1);
/// Closed connections (from their high) that count as a flood ended.
const TRIM_AFTER_CLOSED: usize = 64;
/// Connections accepted that count as a flood going on.
const TRIM_AFTER_ACCEPTED: usize = 1024;
/// How long a liveness check waits for the upstream port to accept.
const UPSTREAM_LIVENESS_TIMEOUT: Duration = Duration::from_millis(300);
/// How many connections the kernel may hold for us before we accept them
/// (clamped to `net.core.somaxconn`). tokio's default of 1,024 is smaller than
/// a burst of clients a server at its default `max_connections` can meet: the
/// SYNs past it are dropped, and the kubelet's probe that lands among them is
/// retried by TCP only after a second, a failed probe at the default timeout.
const LISTEN_BACKLOG: u32 = 4096;

/// Bind `address` for serving, with a backlog of 4,096 (clamped by the
/// kernel) and the address reuse a restarted server needs.
pub fn listen_tcp(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Marks probehost's own answers, so `probe --ready` can tell it is talking to
/// probehost and not to an application on the same port.
pub const ANSWERED_BY: &str = "x-probehost";

/// What a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    /// A ready path; `Some(index)` for `/readyz/NAME`.
    Ready(Option<usize>),
    Startup,
    Metrics,
    /// `/readyz/NAME` for a probe that does not exist.
    UnknownProbe(String),
    /// A probe path with a method other than GET (standalone mode).
    MethodNotAllowed,
    /// Proxy mode: for the application.
    Upstream,
    NotFound,
}

/// The probe paths.
#[derive(Debug, Clone)]
pub struct Routes {
    ready: Vec<String>,
    health: Vec<String>,
    startup: Vec<String>,
    metrics: Option<String>,
    probes: Vec<String>,
    proxy: bool,
}

impl Routes {
    pub fn new(config: &ServerConfig, probes: Vec<String>) -> Routes {
        Routes {
            ready: config.ready_paths.clone(),
            health: config.health_paths.clone(),
            startup: config.startup_paths.clone(),
            metrics: config.metrics_path.clone(),
            probes,
            proxy: config.upstream.is_some(),
        }
    }

    /// Route a request. A path in several lists is, in this order, a health,
    /// ready, startup or metrics path. There are a handful of paths: a scan
    /// beats hashing.
    pub fn route(&self, method: &Method, path: &str) -> Route {
        let is = |paths: &[String]| paths.iter().any(|p| p == path);
        let probe = if is(&self.health) {
            Route::Health
        } else if is(&self.ready) {
            Route::Ready(None)
        } else if is(&self.startup) {
            Route::Startup
        } else if self.metrics.as_deref() == Some(path) {
            Route::Metrics
        } else if let Some(name) = self
            .ready
            .iter()
            .find_map(|p| path.strip_prefix(p.as_str())?.strip_prefix('/'))
            // A probe's name is one non-empty segment: `/readyz/` and
            // `/readyz/a/b` are paths like any other, not probes.
            .filter(|name| !name.is_empty() && !name.contains('/'))
        {
            match self.probes.iter().position(|p| p == name) {
                Some(index) => Route::Ready(Some(index)),
                None if self.proxy => return Route::Upstream,
                None => Route::UnknownProbe(name.to_owned()),
            }
        } else if self.proxy {
            return Route::Upstream;
        } else {
            return Route::NotFound;
        };
        match (method == Method::GET, self.proxy) {
            (true, _) => probe,
            // Not a probe: the application's, in proxy mode.
            (false, true) => Route::Upstream,
            (false, false) => Route::MethodNotAllowed,
        }
    }
}

/// Process state the routes read: draining, whether the application's port
/// has accepted a readiness check's connection, and in `run` mode the
/// application's life.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    app_reached: AtomicBool,
    app: Option<AppLiveness>,
}

#[derive(Debug)]
struct AppLiveness {
    alive: Arc<AtomicBool>,
    /// Also require this port to accept connections.
    port: Option<SocketAddr>,
}

impl Lifecycle {
    /// `run` mode: liveness follows `alive` (and `port`, when given).
    pub fn supervising(alive: Arc<AtomicBool>, port: Option<SocketAddr>) -> Lifecycle {
        Lifecycle {
            app: Some(AppLiveness { alive, port }),
            ..Lifecycle::default()
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Why liveness fails, if it does.
    async fn not_live(&self) -> Option<&'static str> {
        let app = self.app.as_ref()?;
        if !app.alive.load(Ordering::SeqCst) {
            return Some("application is not running");
        }
        refuses_connections(app.port?).await
    }
}

/// Why the application at `address` cannot be sent requests, if it cannot:
/// its port does not accept a connection within [`UPSTREAM_LIVENESS_TIMEOUT`].
/// The connection is closed with a reset, so a check at every request leaves
/// no TIME_WAIT behind.
async fn refuses_connections(address: impl tokio::net::ToSocketAddrs) -> Option<&'static str> {
    let connect = tokio::net::TcpStream::connect(address);
    match tokio::time::timeout(UPSTREAM_LIVENESS_TIMEOUT, connect).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_zero_linger();
            None
        }
        _ => Some("application is not accepting connections"),
    }
}

/// Proxy mode: the application's port, which readiness needs to accept
/// connections (`server.readiness_upstream`). The name is resolved at each
/// check, so an application that is not there yet is not ready, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPort {
    host: String,
    port: u16,
}

impl AppPort {
    /// The `host:port` of an upstream URL.
    pub fn of(url: &str) -> Option<AppPort> {
        let url = url::Url::parse(url).ok()?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        Some(AppPort {
            host: host.to_owned(),
            port: url.port_or_known_default()?,
        })
    }

    /// Why the application cannot be sent requests, if it cannot.
    async fn refuses(&self) -> Option<&'static str> {
        refuses_connections((self.host.as_str(), self.port)).await
    }
}

/// What the server needs to answer.
#[derive(Debug)]
pub struct AppState {
    pub routes: Routes,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    /// Proxy mode: the application. Each serving thread makes its own client.
    pub upstream: Option<Upstream>,
    /// Readiness also needs this port to accept connections.
    pub ready_upstream: Option<AppPort>,
    /// Who sees the probes' messages in verbose and JSON answers.
    pub detail: Detail,
    pub lifecycle: Lifecycle,
}

/// How a readiness answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Verbose,
    Json,
    /// The IETF draft "Health Check Response Format for HTTP APIs".
    HealthJson,
}

/// Whether this request may see the probes' messages. With [`Detail::Local`],
/// only on the probe socket (`peer` is `None`) and from loopback, and not for a
/// request a proxy forwarded (a sidecar such as Envoy connects from loopback on
/// behalf of anyone).
fn shows_detail<B>(detail: Detail, peer: Option<&Peer>, request: &Request<B>) -> bool {
    match detail {
        Detail::Everywhere => true,
        Detail::Nowhere => false,
        Detail::Local => {
            let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
                .iter()
                .any(|h| request.headers().contains_key(*h));
            peer.is_none_or(|p| p.loopback) && !forwarded
        }
    }
}

/// Answer a request that is not for the application; `detail` says whether it
/// may see the probes' messages.
pub async fn answer<B>(
    state: &AppState,
    request: &Request<B>,
    route: &Route,
    detail: bool,
) -> Response<Body> {
    let mut response = match route {
        Route::Health => match state.lifecycle.not_live().await {
            None => text(StatusCode::OK, "Ok"),
            Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        },
        Route::Ready(probe) => ready(state, request, *probe, detail).await,
        Route::Startup => {
            // Started once the probes have passed and (in proxy mode) the
            // application's port has accepted, not necessarily at once: a
            // check of the probes alone (`/readyz/NAME`, the background loop,
            // a `/readyz` the port refused) does not start an application
            // that is not listening.
            let app_reached = state.ready_upstream.is_none()
                || state.lifecycle.app_reached.load(Ordering::Relaxed);
            if state.readiness.has_passed() && app_reached {
                text(StatusCode::OK, "Ok")
            } else {
                ready(state, request, None, detail).await
            }
        }
        Route::Metrics => {
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return response;
        }
        Route::UnknownProbe(name) => {
            text(StatusCode::NOT_FOUND, format!("no probe named {name:?}"))
        }
        Route::MethodNotAllowed => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        Route::Upstream | Route::NotFound => return text(StatusCode::NOT_FOUND, "Not Found"),
    };
    response.headers_mut().insert(
        ANSWERED_BY,
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    response
}

async fn ready<B>(
    state: &AppState,
    request: &Request<B>,
    probe: Option<usize>,
    detail: bool,
) -> Response<Body> {
    if state.lifecycle.is_draining() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let query = Query::parse(request.uri().query());
    let format = if accepts(request, HEALTH_JSON) {
        Format::HealthJson
    } else if accepts(request, "application/json") {
        Format::Json
    } else if query.verbose {
        Format::Verbose
    } else {
        Format::Plain
    };
    let evaluation = state.readiness.evaluation(|| Some(probe_request(request)));
    // The whole answer (not one probe's) also needs the application's port;
    // the evaluation goes on meanwhile.
    if probe.is_none()
        && let Some(port) = &state.ready_upstream
    {
        if let Some(reason) = port.refuses().await {
            return text(StatusCode::SERVICE_UNAVAILABLE, reason);
        }
        state.lifecycle.app_reached.store(true, Ordering::Relaxed);
    }
    let age = evaluation.age();
    match (format, probe) {
        (Format::Plain, None) => match evaluation.verdict(&query.exclude).await {
            Verdict::Ready => text(StatusCode::OK, "Ok"),
            Verdict::NotReady {
                status, message, ..
            } => text(status_code(status), message),
        },
        (Format::Plain, Some(index)) => match evaluation.result(index).await {
            Some(result) => match &result.failure {
                None => text(StatusCode::OK, "Ok"),
                Some((status, message)) => text(status_code(*status), message.clone()),
            },
            None => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        },
        (format, probe) => {
            let results = match probe {
                None => evaluation.results().await,
                Some(index) => match evaluation.result(index).await {
                    Some(result) => vec![result],
                    None => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
                },
            };
            let failed = results
                .iter()
                .find(|r| r.blocks() && !query.exclude.contains(&r.name))
                .and_then(|r| r.failure.as_ref());
            let status = failed.map_or(StatusCode::OK, |(status, _)| status_code(*status));
            let (body, content_type) = match format {
                Format::Json => (
                    json(&results, &query.exclude, age, detail),
                    Some("application/json"),
                ),
                Format::HealthJson => (
                    health_json(&results, &query.exclude, detail),
                    Some(HEALTH_JSON),
                ),
                _ => (verbose(&results, &query.exclude, detail), None),
            };
            let mut response = text(status, body);
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            }
            response
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// The media type of the IETF draft "Health Check Response Format for HTTP
/// APIs" (draft-inadarei-api-health-check).
const HEALTH_JSON: &str = "application/health+json";

/// Whether the request's `Accept` names `media_type`.
fn accepts<B>(request: &Request<B>, media_type: &str) -> bool {
    request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type))
        })
}

/// The query parameters a readiness request understands.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    verbose: bool,
    exclude: Vec<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let mut parsed = Query::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "verbose" => parsed.verbose = true,
                "exclude" => parsed.exclude.push(percent_decode(value)),
                _ => {}
            }
        }
        parsed
    }
}

fn percent_decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The Kubernetes API server's verbose format: a line per probe, then a verdict.
fn verbose(results: &[Arc<ProbeResult>], exclude: &[String], detail: bool) -> String {
    let mut body = String::new();
    let mut failed = false;
    for result in results {
        let name = &result.name;
        let reason = match &result.failure {
            Some((_, message)) if detail => message.as_str(),
            _ => "reason withheld",
        };
        if exclude.contains(name) {
            body.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match result.standing() {
            Standing::Ready => body.push_str(&format!("[+]{name} ok\n")),
            Standing::NotReady => {
                failed = true;
                body.push_str(&format!("[-]{name} failed: {reason}\n"));
            }
            // Failing without gating readiness: its own mark, so that neither a
            // reader nor a parser of `[+]`/`[-]` takes it for either.
            Standing::Degraded => body.push_str(&format!("[!]{name} degraded: {reason}\n")),
        }
    }
    body.push_str(if failed {
        "readiness check failed\n"
    } else {
        "readiness check passed\n"
    });
    body
}

fn json(results: &[Arc<ProbeResult>], exclude: &[String], age: Duration, detail: bool) -> String {
    let probes: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let status = match r.standing() {
                _ if exclude.contains(&r.name) => "excluded",
                Standing::Ready => "ok",
                Standing::NotReady => "failed",
                Standing::Degraded => "degraded",
            };
            let mut probe = serde_json::json!({
                "name": r.name,
                "status": status,
                "duration_ms": r.duration.as_secs_f64() * 1000.0,
            });
            if let Some((code, message)) = &r.failure
                && detail
            {
                probe["message"] = message.as_str().into();
                probe["http_status"] = (*code).into();
            }
            probe
        })
        .collect();
    let counted = || results.iter().filter(|r| !exclude.contains(&r.name));
    let status = if counted().any(|r| r.blocks()) {
        "not ready"
    } else if counted().any(|r| r.standing() == Standing::Degraded) {
        // Ready (200), with a failing probe whose gate lets it pass.
        "degraded"
    } else {
        "ready"
    };
    serde_json::json!({
        "status": status,
        "probes": probes,
        "age_ms": age.as_secs_f64() * 1000.0,
    })
    .to_string()
}

/// `application/health+json`: `pass`, `warn` (a degraded probe) or `fail`,
/// with a check per probe keyed `NAME:responseTime` (the draft's
/// `component:measurement`). Excluded probes are left out.
fn health_json(results: &[Arc<ProbeResult>], exclude: &[String], detail: bool) -> String {
    let counted: Vec<&Arc<ProbeResult>> = results
        .iter()
        .filter(|r| !exclude.contains(&r.name))
        .collect();
    let word = |standing: Standing| match standing {
        Standing::Ready => "pass",
        Standing::Degraded => "warn",
        Standing::NotReady => "fail",
    };
    let mut checks = serde_json::Map::new();
    for r in &counted {
        let mut check = serde_json::json!({
            "componentType": "component",
            "observedValue": r.duration.as_secs_f64() * 1000.0,
            "observedUnit": "ms",
            "status": word(r.standing()),
        });
        if let Some((_, message)) = &r.failure
            && detail
        {
            check["output"] = message.as_str().into();
        }
        checks.insert(
            format!("{}:responseTime", r.name),
            serde_json::json!([check]),
        );
    }
    let status = counted
        .iter()
        .map(|r| r.standing())
        .max_by_key(|s| match s {
            Standing::Ready => 0,
            Standing::Degraded => 1,
            Standing::NotReady => 2,
        })
        .unwrap_or(Standing::Ready);
    serde_json::json!({
        "status": word(status),
        "checks": checks,
    })
    .to_string()
}

fn probe_request<B>(request: &Request<B>) -> ProbeRequest {
    ProbeRequest {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    }
}

fn route_label(route: &Route) -> RouteLabel {
    match route {
        Route::Health => RouteLabel::Health,
        Route::Ready(_) => RouteLabel::Ready,
        Route::Startup => RouteLabel::Startup,
        Route::Metrics => RouteLabel::Metrics,
        Route::Upstream => RouteLabel::Upstream,
        Route::UnknownProbe(_) | Route::MethodNotAllowed | Route::NotFound => RouteLabel::Other,
    }
}

/// What the connections of one serving thread share.
struct Worker {
    state: Arc<AppState>,
    /// Proxy mode: this thread's client of the application.
    proxy: Option<Proxy>,
    /// Upgraded connections (WebSocket) still running.
    tunnels: TaskTracker,
}

/// Where a connection's slot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capacity {
    /// One of `server.max_connections`.
    General,
    /// The probe reserve: probe paths only, one request.
    Reserve,
}

/// Handle one request: answer it or forward it.
///
/// `peer` is `None` on the probe socket, which answers probes and nothing else.
async fn handle(
    worker: &Worker,
    request: Request<Incoming>,
    peer: Option<&Peer>,
    slot: &Arc<OwnedSemaphorePermit>,
    capacity: Capacity,
) -> Response<Body> {
    // Take turns: a connection answers one request per turn on its thread, so
    // a client pipelining thousands of requests (or thousands of such
    // clients) delays a fresh connection's probe by one short round, not by
    // every answer they have queued.
    tokio::task::yield_now().await;
    let state = &worker.state;
    let mut route = state.routes.route(request.method(), request.uri().path());
    if peer.is_none() && route == Route::Upstream {
        route = Route::NotFound;
    }
    let response = match (&route, &worker.proxy, peer) {
        _ if capacity == Capacity::Reserve && !route.is_kubelet_probe() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy: only probe paths are answered",
        ),
        (Route::Upstream, Some(proxy), Some(peer)) => {
            let tunnel = Tunnel {
                tracker: &worker.tunnels,
                slot: slot.clone(),
            };
            proxy.forward(request, peer, tunnel).await
        }
        _ => {
            let detail = shows_detail(state.detail, peer, &request);
            answer(state, &request, &route, detail).await
        }
    };
    state
        .metrics
        .record_request(route_label(&route), response.status().as_u16());
    response
}

impl Route {
    /// The paths Kubernetes probes: what a reserve connection may ask.
    fn is_kubelet_probe(&self) -> bool {
        matches!(self, Route::Health | Route::Ready(_) | Route::Startup)
    }
}

/// How the serving loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: answer readiness with 503 for `drain`, then close the listener
    /// and let in-flight requests finish.
    Drain,
    /// Stop accepting at once (the supervised application is gone).
    Now,
}

/// Timing and limits of the serving loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub drain: Duration,
    pub grace: Duration,
    pub header_read_timeout: Duration,
    pub send_timeout: Duration,
    pub max_connections: usize,
    /// Threads serving connections.
    pub threads: usize,
}

impl ServeOptions {
    pub fn new(config: &ServerConfig) -> ServeOptions {
        ServeOptions {
            drain: config.drain,
            grace: config.grace,
            header_read_timeout: config.header_read_timeout,
            send_timeout: config.send_timeout,
            max_connections: config.max_connections,
            threads: config.threads,
        }
    }
}

/// The connection slots every serving thread takes from.
struct Slots {
    general: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// `server.max_connections`: the general slots there are.
    limit: usize,
    /// The most connections open at once since memory was last given back.
    high: AtomicUsize,
    /// Connections accepted since memory was last given back.
    accepted: AtomicUsize,
}

impl Slots {
    fn new(limit: usize) -> Slots {
        Slots {
            general: Arc::new(Semaphore::new(limit)),
            reserve: Arc::new(Semaphore::new(PROBE_RESERVE)),
            limit,
            high: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        }
    }

    /// Connections open now.
    fn open(&self) -> usize {
        (self.limit - self.general.available_permits())
            + (PROBE_RESERVE - self.reserve.available_permits())
    }

    /// Give memory back to the system once a flood of connections is over
    /// (open connections fell by [`TRIM_AFTER_CLOSED`] from their high), or
    /// after every [`TRIM_AFTER_ACCEPTED`] connections while one goes on.
    async fn give_back_memory(self: Arc<Self>) {
        let mut check = tokio::time::interval(TRIM_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            check.tick().await;
            let open = self.open();
            let high = self.high.load(Ordering::Relaxed);
            let accepted = self.accepted.load(Ordering::Relaxed);
            if high.saturating_sub(open) >= TRIM_AFTER_CLOSED || accepted >= TRIM_AFTER_ACCEPTED {
                self.high.store(open, Ordering::Relaxed);
                self.accepted.store(0, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
            }
        }
    }

    /// A slot for a connection just accepted: a general one if any is free,
    /// else one of the probe reserve, else (every slot taken) the first to
    /// come free.
    async fn take(&self) -> (OwnedSemaphorePermit, Capacity) {
        let taken = self.take_one().await;
        self.high.fetch_max(self.open(), Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        taken
    }

    async fn take_one(&self) -> (OwnedSemaphorePermit, Capacity) {
        if let Ok(slot) = self.general.clone().try_acquire_owned() {
            return (slot, Capacity::General);
        }
        if let Ok(slot) = self.reserve.clone().try_acquire_owned() {
            return (slot, Capacity::Reserve);
        }
        let never_closed = "the semaphores are never closed";
        tokio::select! {
            slot = self.general.clone().acquire_owned() => (slot.expect(never_closed), Capacity::General),
            slot = self.reserve.clone().acquire_owned() => (slot.expect(never_closed), Capacity::Reserve),
        }
    }
}

/// Serve `state` on `listener` until `stops` says how to stop; then drain if
/// asked (another word from `stops` during the drain cuts it short), close the
/// listener, and let in-flight requests finish within the grace period. A
/// closed `stops` is [`Stop::Now`].
///
/// Connections are served by `options.threads` threads, each with a
/// single-threaded runtime of its own that accepts from the shared listener, as
/// nginx's workers do: a connection, its requests, its upstream connection and
/// the response never change threads, which costs a fifth less CPU per proxied
/// request than a work-stealing runtime does. Probes never run on these
/// threads (they have a runtime of their own), so a liveness answer never
/// waits behind one.
pub async fn serve(
    listeners: Listeners,
    state: Arc<AppState>,
    options: ServeOptions,
    mut stops: mpsc::UnboundedReceiver<Stop>,
) -> std::io::Result<()> {
    let listener = listeners.tcp.into_std()?;
    // The first serving thread accepts on the probe socket too; its file is
    // removed once every thread is done.
    let (mut unix, _socket_file) = match listeners.unix {
        Some(socket) => (Some(socket.listener), Some(socket.file)),
        None => (None, None),
    };
    let slots = Arc::new(Slots::new(options.max_connections));
    let giving_back = tokio::spawn(slots.clone().give_back_memory());
    let (close, closed) = watch::channel(false);
    let mut workers = Vec::new();
    for index in 0..options.threads.max(1) {
        let listener = listener.try_clone()?;
        let unix = unix.take();
        let (state, slots, closed) = (state.clone(), slots.clone(), closed.clone());
        let (done, finished) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("probehost-http-{index}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(accept_loop(listener, unix, state, options, slots, closed))
                    });
                // Tunnels still open past the grace end with the runtime.
                let _ = done.send(served);
            })?;
        workers.push(finished);
    }
    // The threads hold the listening socket now; it closes when they drop it.
    drop(listener);

    if stops.recv().await == Some(Stop::Drain) {
        tracing::info!(drain = ?options.drain, "draining: readiness answers 503 until the listener closes");
        state.lifecycle.start_draining();
        tokio::select! {
            () = tokio::time::sleep(options.drain) => {}
            Some(_) = stops.recv() => tracing::info!("drain cut short"),
        }
    }
    let _ = close.send(true);
    giving_back.abort();
    let mut result = Ok(());
    for finished in workers {
        match finished.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(std::io::Error::other("a serving thread panicked")),
        }
    }
    result
}

/// One serving thread: accept until `closed`, then stop accepting and give the
/// connections (and tunnels) in flight `options.grace` to finish.
async fn accept_loop(
    listener: std::net::TcpListener,
    unix: Option<std::os::unix::net::UnixListener>,
    state: Arc<AppState>,
    options: ServeOptions,
    slots: Arc<Slots>,
    mut closed: watch::Receiver<bool>,
) -> std::io::Result<()> {
    state
        .metrics
        .watch_runtime("http", tokio::runtime::Handle::current());
    let listener = TcpListener::from_std(listener)?;
    let unix = unix.map(tokio::net::UnixListener::from_std).transpose()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Find dead HTTP/2 peers; idle live ones are retired by their guard.
        .keep_alive_interval(Some(HTTP2_KEEP_ALIVE))
        .keep_alive_timeout(HTTP2_KEEP_ALIVE)
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_send_buf_size(HTTP2_MAX_SEND_BUFFER)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let worker = Arc::new(Worker {
        proxy: state.upstream.as_ref().map(Upstream::client),
        state,
        tunnels: TaskTracker::new(),
    });
    let connections = TaskTracker::new();
    loop {
        let accept = async {
            let accepted = match &unix {
                Some(unix) => tokio::select! {
                    accepted = listener.accept() => accepted.map(|(s, peer)| Accepted::Tcp(s, peer)),
                    accepted = unix.accept() => accepted.map(|(s, _)| Accepted::Unix(s)),
                },
                None => listener
                    .accept()
                    .await
                    .map(|(s, peer)| Accepted::Tcp(s, peer)),
            };
            match accepted {
                Ok(accepted) => Ok((accepted, slots.take().await)),
                Err(e) => Err(e),
            }
        };
        let accepted = tokio::select! {
            accepted = accept => accepted,
            _ = closed.wait_for(|closed| *closed) => break,
        };
        let (accepted, (slot, capacity)) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather
                // than spin or exit.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let connection = Connection {
            // Held by the connection, and by its tunnel if it is upgraded.
            slot: Arc::new(slot),
            capacity,
            closed: closed.clone(),
        };
        match accepted {
            Accepted::Tcp(stream, peer) => {
                let _ = stream.set_nodelay(true);
                let peer = Some(Peer::new(peer));
                connection.serve(&builder, &connections, &worker, stream, peer, options);
            }
            Accepted::Unix(stream) => {
                connection.serve(&builder, &connections, &worker, stream, None, options);
            }
        }
    }

    drop(listener);
    connections.close();
    worker.tunnels.close();
    let finished = async {
        connections.wait().await;
        worker.tunnels.wait().await;
    };
    if tokio::time::timeout(options.grace, finished).await.is_err() {
        tracing::warn!("some connections did not finish within {:?}", options.grace);
    }
    Ok(())
}

/// A connection accepted from the TCP listener or the probe socket.
enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

/// An accepted connection with its slot.
struct Connection {
    slot: Arc<OwnedSemaphorePermit>,
    capacity: Capacity,
    /// Becomes true when the server stops accepting.
    closed: watch::Receiver<bool>,
}

impl Connection {
    /// Serve the connection on a task of this thread, tracked by
    /// `connections`, under its [`Guard`]. `peer` is `None` on the probe
    /// socket.
    fn serve<S>(
        self,
        builder: &auto::Builder<TokioExecutor>,
        connections: &TaskTracker,
        worker: &Arc<Worker>,
        stream: S,
        peer: Option<Peer>,
        options: ServeOptions,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            slot,
            capacity,
            mut closed,
        } = self;
        let guard = Arc::new(match capacity {
            Capacity::General => Guard::new(
                options.send_timeout,
                options.header_read_timeout,
                guard::MAX_REQUESTS,
            ),
            Capacity::Reserve => {
                Guard::new(options.send_timeout.min(RESERVE_SEND), RESERVE_IDLE, 1)
            }
        });
        let stream = GuardedIo::new(stream, guard.clone());
        let worker = worker.clone();
        let requests = guard.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let (worker, peer, slot) = (worker.clone(), peer.clone(), slot.clone());
            let open = requests.start();
            let last = requests.is_last_request();
            let http1 = request.version() < http::Version::HTTP_2;
            if !http1 {
                requests.speaks_http2();
            }
            // Boxed: hyper keeps an HTTP/2 stream's task, sized for its
            // largest state, until the answer is sent; boxed, a stream whose
            // client grants no window holds a pointer and the answer, not
            // the space of a proxied request.
            Box::pin(async move {
                let mut response = handle(&worker, request, peer.as_ref(), &slot, capacity).await;
                if last && http1 {
                    // Read no further pipelined request: close after this one.
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| GuardedBody::new(body, open)))
            })
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut retired = false;
            let mut retired_at = tokio::time::Instant::now();
            loop {
                let wake = match guard.check() {
                    Action::WaitUntil(at) => at,
                    Action::Close(why) => {
                        tracing::debug!("closing a connection: {why}");
                        return;
                    }
                    Action::Retire(why) if !retired => {
                        tracing::trace!("retiring a connection: {why}");
                        connection.as_mut().graceful_shutdown();
                        retired = true;
                        retired_at = tokio::time::Instant::now();
                        continue;
                    }
                    // Retired with nothing left to answer, and the client
                    // has not let the connection end (an HTTP/2 client that
                    // does not acknowledge the GOAWAY's ping): close it.
                    Action::Retire(why) if retired_at.elapsed() >= RETIRE_GRACE => {
                        tracing::debug!("closing a retired connection: {why}");
                        return;
                    }
                    Action::Retire(_) => retired_at + RETIRE_GRACE,
                };
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!("connection ended with an error: {e}");
                        }
                        return;
                    }
                    () = tokio::time::sleep_until(wake) => {}
                    _ = closed.wait_for(|closed| *closed), if !retired => {
                        connection.as_mut().graceful_shutdown();
                        retired = true;
                        retired_at = tokio::time::Instant::now();
                    }
                }
            }
        });
    }
}

/// Where the server accepts connections: its TCP listener, and the probe
/// socket when `server.socket` is set.
#[derive(Debug)]
pub struct Listeners {
    pub tcp: TcpListener,
    pub unix: Option<ProbeSocket>,
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn local_detail_is_for_the_socket_and_unforwarded_loopback_only() {
        let request = |headers: &[(&str, &str)]| {
            let mut builder = Request::builder().uri("/readyz?verbose");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).unwrap()
        };
        let peer = |address: &str| Peer::new(address.parse().unwrap());
        let plain = request(&[]);
        let local = |p: Option<&Peer>, r: &Request<()>| shows_detail(Detail::Local, p, r);
        assert!(local(None, &plain), "the probe socket");
        assert!(local(Some(&peer("127.0.0.1:5000")), &plain));
        assert!(local(Some(&peer("[::1]:5000")), &plain));
        assert!(local(Some(&peer("[::ffff:127.0.0.1]:5000")), &plain));
        assert!(
            !local(Some(&peer("10.1.2.3:5000")), &plain),
            "the pod network"
        );
        assert!(!local(Some(&peer("[2001:db8::1]:5000")), &plain));
        for header in ["forwarded", "x-forwarded-for", "x-real-ip"] {
            let forwarded = request(&[(header, "for=203.0.113.7")]);
            assert!(
                !local(Some(&peer("127.0.0.1:5000")), &forwarded),
                "{header}"
            );
        }
        let remote = Some(peer("10.1.2.3:5000"));
        assert!(shows_detail(Detail::Everywhere, remote.as_ref(), &plain));
        assert!(!shows_detail(Detail::Nowhere, None, &plain));
    }

    fn config(proxy: bool) -> ServerConfig {
        let env = std::collections::HashMap::new();
        let mut server = crate::config::Config::defaults(&env).server;
        if proxy {
            server.upstream = Some("http://127.0.0.1:8000".into());
            server.metrics_path = None;
        }
        server
    }

    fn routes(proxy: bool) -> Routes {
        Routes::new(&config(proxy), vec!["database".into(), "memcached".into()])
    }

    #[test]
    fn only_exact_get_paths_are_probes() {
        let r = routes(false);
        assert_eq!(r.route(&Method::GET, "/livez"), Route::Health);
        assert_eq!(r.route(&Method::GET, "/healthz"), Route::Health);
        assert_eq!(r.route(&Method::GET, "/readyz"), Route::Ready(None));
        assert_eq!(r.route(&Method::GET, "/startupz"), Route::Startup);
        assert_eq!(r.route(&Method::GET, "/metrics"), Route::Metrics);
        assert_eq!(r.route(&Method::GET, "/livez/"), Route::NotFound);
        assert_eq!(r.route(&Method::GET, "/LIVEZ"), Route::NotFound);
        assert_eq!(r.route(&Method::GET, "/"), Route::NotFound);
        assert_eq!(r.route(&Method::POST, "/readyz"), Route::MethodNotAllowed);
        assert_eq!(r.route(&Method::HEAD, "/livez"), Route::MethodNotAllowed);
        assert_eq!(r.route(&Method::POST, "/nope"), Route::NotFound);
    }

    #[test]
    fn single_probes_have_their_own_path() {
        let r = routes(false);
        assert_eq!(
            r.route(&Method::GET, "/readyz/memcached"),
            Route::Ready(Some(1))
        );
        assert_eq!(
            r.route(&Method::GET, "/readyz/redis"),
            Route::UnknownProbe("redis".into())
        );
        assert_eq!(r.route(&Method::GET, "/readyz/"), Route::NotFound);
        assert_eq!(r.route(&Method::GET, "/readyz/a/b"), Route::NotFound);
    }

    #[test]
    fn in_proxy_mode_everything_else_is_the_applications() {
        let r = routes(true);
        assert_eq!(r.route(&Method::GET, "/readyz"), Route::Ready(None));
        assert_eq!(
            r.route(&Method::POST, "/readyz"),
            Route::Upstream,
            "not a probe"
        );
        assert_eq!(
            r.route(&Method::GET, "/metrics"),
            Route::Upstream,
            "off in proxy mode"
        );
        assert_eq!(r.route(&Method::GET, "/readyz/redis"), Route::Upstream);
        assert_eq!(r.route(&Method::GET, "/admin/"), Route::Upstream);
    }

    #[test]
    fn a_path_in_several_lists_is_health_first() {
        let mut server = config(false);
        server.ready_paths = vec!["/status".into()];
        server.health_paths = vec!["/status".into()];
        let r = Routes::new(&server, vec![]);
        assert_eq!(r.route(&Method::GET, "/status"), Route::Health);
    }

    #[test]
    fn queries_name_verbosity_and_exclusions() {
        assert_eq!(Query::parse(None), Query::default());
        assert_eq!(
            Query::parse(Some("verbose&exclude=memcached&exclude=re%64is&x=1")),
            Query {
                verbose: true,
                exclude: vec!["memcached".into(), "redis".into()]
            }
        );
    }
}
