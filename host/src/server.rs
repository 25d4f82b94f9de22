//! The HTTP side: routing probe requests and serving them.
//!
//! [`Routes::route`] and [`respond`] are plain functions of the request, testable without
//! a socket; [`serve`] runs them on a bound listener until a shutdown signal.
//! A request is a probe only if it is a `GET` whose path (without the query)
//! equals a configured path exactly; health paths answer `Ok` without touching
//! anything, ready paths ask the [`Evaluator`]. This module knows nothing of wasm.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::plugin::ProbeRequest;
use crate::readiness::{Evaluator, Verdict};

/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest request head accepted (HTTP/1 buffer).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    /// A probe path with a method other than GET.
    MethodNotAllowed,
    NotFound,
}

/// The probe paths. There are a handful, so a scan beats hashing the path.
#[derive(Debug, Clone)]
pub struct Routes {
    ready: Vec<String>,
    health: Vec<String>,
}

impl Routes {
    pub fn new(config: &ServerConfig) -> Routes {
        Routes {
            ready: config.ready_paths.clone(),
            health: config.health_paths.clone(),
        }
    }

    /// Route a request. A path in both lists is a health path.
    pub fn route(&self, method: &Method, path: &str) -> Route {
        let probe = if self.health.iter().any(|p| p == path) {
            Route::Health
        } else if self.ready.iter().any(|p| p == path) {
            Route::Ready
        } else {
            return Route::NotFound;
        };
        if method == Method::GET {
            probe
        } else {
            Route::MethodNotAllowed
        }
    }
}

/// What the server needs to answer.
#[derive(Debug)]
pub struct AppState {
    pub routes: Routes,
    pub evaluator: Evaluator,
}

/// Answer one request.
pub async fn respond<B>(state: &AppState, request: &Request<B>) -> Response<Full<Bytes>> {
    match state.routes.route(request.method(), request.uri().path()) {
        Route::Health => text(StatusCode::OK, "Ok"),
        Route::Ready => match state.evaluator.evaluate(Some(probe_request(request))).await {
            Verdict::Ready => text(StatusCode::OK, "Ok"),
            Verdict::NotReady {
                status, message, ..
            } => text(
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                message,
            ),
        },
        Route::MethodNotAllowed => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            response
                .headers_mut()
                .insert(ALLOW, http::HeaderValue::from_static("GET"));
            response
        }
        Route::NotFound => text(StatusCode::NOT_FOUND, "Not Found"),
    }
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

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    headers.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

/// Serve `state` on `listener` until `shutdown` completes, then stop accepting and
/// let in-flight requests finish (bounded by a grace period).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather
                    // than spin or exit.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(respond(&state, &request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended with an error: {e}");
            }
        });
    }

    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {SHUTDOWN_GRACE:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_HEALTH_PATHS, DEFAULT_READY_PATHS};

    fn routes() -> Routes {
        Routes::new(&ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ready_paths: DEFAULT_READY_PATHS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            health_paths: DEFAULT_HEALTH_PATHS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        })
    }

    #[test]
    fn only_exact_get_paths_are_probes() {
        let r = routes();
        assert_eq!(r.route(&Method::GET, "/livez"), Route::Health);
        assert_eq!(r.route(&Method::GET, "/healthz"), Route::Health);
        assert_eq!(r.route(&Method::GET, "/readyz"), Route::Ready);
        assert_eq!(r.route(&Method::GET, "/livez/"), Route::NotFound);
        assert_eq!(r.route(&Method::GET, "/LIVEZ"), Route::NotFound);
        assert_eq!(r.route(&Method::GET, "/"), Route::NotFound);
        assert_eq!(r.route(&Method::POST, "/readyz"), Route::MethodNotAllowed);
        assert_eq!(r.route(&Method::HEAD, "/livez"), Route::MethodNotAllowed);
        assert_eq!(r.route(&Method::POST, "/nope"), Route::NotFound);
    }

    #[test]
    fn a_path_in_both_lists_is_health() {
        let r = Routes::new(&ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ready_paths: vec!["/status".into()],
            health_paths: vec!["/status".into()],
        });
        assert_eq!(r.route(&Method::GET, "/status"), Route::Health);
    }
}
