//! Proxy mode: every request that is not a probe goes to the application
//! (`server.upstream`), unchanged but for the usual proxy headers.
//!
//! Bodies stream both ways; hop-by-hop headers are dropped; `X-Forwarded-For`
//! and `Forwarded` gain the client, `X-Forwarded-Proto` is set unless an outer
//! proxy set it; upgrades (WebSocket) are tunnelled. An upstream that refuses is
//! a `502`; one that does not start answering within `server.upstream_timeout`
//! is a `504`. This module knows nothing of probes.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;

/// The body of a response: our own text, or the upstream's stream.
pub type Body = Either<Full<Bytes>, Pooled>;

/// An upstream response body that gives its connection back to the idle
/// pool once it has been read to its end (a body dropped before its end
/// closes the connection instead, since the rest of it is still on the wire).
#[derive(Debug)]
pub struct Pooled {
    body: Incoming,
    connection: Option<SendRequest<Incoming>>,
    idle: Idle,
}

impl Pooled {
    fn new(body: Incoming, connection: Option<SendRequest<Incoming>>, idle: &Idle) -> Pooled {
        let mut pooled = Pooled {
            body,
            connection,
            idle: idle.clone(),
        };
        if pooled.body.is_end_stream() {
            pooled.release();
        }
        pooled
    }

    fn release(&mut self) {
        if let Some(connection) = self.connection.take() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
    }
}

impl hyper::body::Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.body.is_end_stream() {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The application behind probehost: where it is and how long it may take.
#[derive(Debug, Clone)]
pub struct Upstream {
    authority: Authority,
    /// `host:port` to connect to (port 80 when the URL has none).
    address: String,
    timeout: Duration,
}

impl Upstream {
    /// `base` is an `http://host:port` URL.
    pub fn new(base: &Uri, timeout: Duration) -> Result<Upstream, String> {
        if base.scheme_str() != Some("http") {
            return Err("needs an http:// URL, as in http://127.0.0.1:8000".into());
        }
        let Some(authority) = base.authority() else {
            return Err("needs a host, as in http://127.0.0.1:8000".into());
        };
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        Ok(Upstream {
            address,
            authority: authority.clone(),
            timeout,
        })
    }

    /// A client with a connection pool of its own. Each serving thread has
    /// one, so a request, its upstream connection and its response stay on
    /// one thread.
    pub fn client(&self) -> Proxy {
        Proxy {
            upstream: self.clone(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// `request` as the application receives it: origin-form URI, HTTP/1.1,
    /// no hop-by-hop headers (nor those its `Connection` names) but an
    /// accepted upgrade's, a `Host`, and `peer` appended to the forwarding
    /// headers. Public for the fuzz targets (`fuzz/`).
    pub fn rewrite<B>(&self, request: Request<B>, peer: &Peer, upgrade: bool) -> Request<B> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // Origin form, as HTTP/1.1 servers expect it.
        let uri = Uri::from(path);
        let headers = &mut parts.headers;
        if parts.version == Version::HTTP_2 {
            // HTTP/2 clients send the host as the URI's authority, and may
            // split cookies into several fields (RFC 9113 §8.3.1, §8.2.3).
            if !headers.contains_key(header::HOST)
                && let Some(authority) = parts.uri.authority()
                && let Ok(host) = HeaderValue::from_str(authority.as_str())
            {
                headers.insert(header::HOST, host);
            }
            if let Some(cookie) = joined(headers, &header::COOKIE, "; ") {
                headers.insert(header::COOKIE, cookie);
            }
        }
        let upgrade_to = if upgrade {
            headers.get(header::UPGRADE).cloned()
        } else {
            None
        };
        strip_hop_by_hop(headers);
        if let Some(protocol) = upgrade_to {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
        if !headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(self.authority.as_str())
        {
            // An HTTP/1.0 client may send none; HTTP/1.1 requires one.
            headers.insert(header::HOST, host);
        }
        add_forwarded(headers, peer);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        Request::from_parts(parts, body)
    }
}

/// One downstream client, as the forwarding headers name it: worked out once
/// per connection, not per request.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Whether the client is on this machine (or in this pod).
    pub loopback: bool,
    /// `X-Forwarded-For` when the request brings none.
    forwarded_for: HeaderValue,
    /// `Forwarded` when the request brings none.
    forwarded: HeaderValue,
}

impl Peer {
    pub fn new(address: SocketAddr) -> Peer {
        let ip = address.ip().to_canonical();
        Peer {
            loopback: ip.is_loopback(),
            forwarded_for: header_value(ip.to_string()),
            forwarded: header_value(format!("for={};proto=http", forwarded_node(ip))),
        }
    }
}

/// A text we built from an address: always a valid header value.
fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(text)).expect("an address is a valid header value")
}

/// RFC 7239: IPv6 addresses are quoted and bracketed.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// Where an upgraded connection (WebSocket) runs once the application has
/// accepted it: tracked, so shutdown waits for it within the grace period, and
/// holding its connection slot, so it counts against `max_connections`.
#[derive(Debug)]
pub struct Tunnel<'a> {
    pub tracker: &'a TaskTracker,
    pub slot: Arc<OwnedSemaphorePermit>,
}

/// Idle HTTP/1.1 connections to the application kept per serving thread;
/// more are closed when they become idle.
const MAX_IDLE: usize = 256;

/// Idle connections to the application, newest last.
type Idle = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

/// A [`Upstream`] client of one serving thread: HTTP/1.1 keep-alive
/// connections, each driven by a task on this thread, reused once their last
/// response body has been read to its end.
#[derive(Debug)]
pub struct Proxy {
    upstream: Upstream,
    idle: Idle,
}

impl Proxy {
    /// Forward `request` from `peer` and return the application's response.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        peer: &Peer,
        tunnel: Tunnel<'_>,
    ) -> Response<Body> {
        let upgrade = wants_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let request = self.upstream.rewrite(request, peer, upgrade.is_some());
        let timeout = self.upstream.timeout;
        let (mut response, connection) =
            match tokio::time::timeout(timeout, self.send(request)).await {
                Err(_) => return text(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
                Ok(Err(e)) => {
                    tracing::debug!("upstream request failed: {e}");
                    return text(StatusCode::BAD_GATEWAY, "Bad Gateway");
                }
                Ok(Ok(answer)) => answer,
            };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection is the tunnel's now, never reused.
            drop(connection);
            let Some(client_side) = upgrade else {
                return text(StatusCode::BAD_GATEWAY, "Bad Gateway");
            };
            let upstream_side = hyper::upgrade::on(&mut response);
            let slot = tunnel.slot;
            tunnel.tracker.spawn(async move {
                let _slot = slot;
                match tokio::try_join!(client_side, upstream_side) {
                    Ok((client_io, upstream_io)) => {
                        let mut client_io = TokioIo::new(client_io);
                        let mut upstream_io = TokioIo::new(upstream_io);
                        let _ =
                            tokio::io::copy_bidirectional(&mut client_io, &mut upstream_io).await;
                    }
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
            // Keep `Connection: upgrade` and `Upgrade` on a 101.
            return response.map(|body| Either::Right(Pooled::new(body, None, &self.idle)));
        }
        strip_hop_by_hop(response.headers_mut());
        response.map(|body| Either::Right(Pooled::new(body, Some(connection), &self.idle)))
    }

    /// Send `request` on an idle connection, or a new one when none is (or
    /// the idle ones turn out closed). A request that an idle connection
    /// refused before sending anything is sent again on another.
    async fn send(
        &self,
        mut request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, SendRequest<Incoming>), String> {
        loop {
            let (mut connection, reused) = match self.checkout() {
                Some(connection) => (connection, true),
                None => (self.connect().await?, false),
            };
            // A reused connection may still be finishing its last exchange.
            if connection.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err("the connection closed at once".into());
            }
            match connection.try_send_request(request).await {
                Ok(response) => return Ok((response, connection)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(e.into_error().to_string()),
                },
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(connection) = idle.pop() {
            if !connection.is_closed() {
                return Some(connection);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, String> {
        let address = self.upstream.address.as_str();
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// Every value of `name` joined by `separator`, when there are several.
fn joined(headers: &HeaderMap, name: &HeaderName, separator: &str) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut rest = values.peekable();
    rest.peek()?;
    let mut text = first.as_bytes().to_vec();
    for value in rest {
        text.extend_from_slice(separator.as_bytes());
        text.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
}

/// Whether the client asks to switch protocols (`Connection: upgrade` with
/// an `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Drop hop-by-hop headers, including those named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Append the client to `X-Forwarded-For` and `Forwarded` (every line of
/// them an outer proxy sent is kept); set `X-Forwarded-Proto` when no outer
/// proxy did.
fn add_forwarded(headers: &mut HeaderMap, peer: &Peer) {
    append_hop(headers, X_FORWARDED_FOR, &peer.forwarded_for);
    append_hop(headers, header::FORWARDED, &peer.forwarded);
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
}

/// `name` becomes `ours` when the request has none, else every value it has
/// joined with `, ` and then ours.
fn append_hop(headers: &mut HeaderMap, name: HeaderName, ours: &HeaderValue) {
    let existing: Vec<&[u8]> = headers
        .get_all(&name)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if existing.is_empty() {
        headers.insert(name, ours.clone());
        return;
    }
    let mut text = existing.join(&b", "[..]);
    text.extend_from_slice(b", ");
    text.extend_from_slice(ours.as_bytes());
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(text)) {
        headers.insert(name, value);
    }
}

/// A plain-text response of our own.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body.into())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        add_forwarded(&mut headers, &Peer::new("10.0.0.2:5000".parse().unwrap()));
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 10.0.0.2");
        assert_eq!(
            headers["x-forwarded-proto"], "https",
            "an outer proxy's value is kept"
        );
        assert_eq!(headers[header::FORWARDED], "for=10.0.0.2;proto=http");

        let mut headers = HeaderMap::new();
        add_forwarded(&mut headers, &Peer::new("[::1]:5000".parse().unwrap()));
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers[header::FORWARDED], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn every_line_an_outer_proxy_sent_is_kept() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.2"));
        headers.append(
            header::FORWARDED,
            HeaderValue::from_static("for=203.0.113.7"),
        );
        headers.append(
            header::FORWARDED,
            HeaderValue::from_static("for=198.51.100.2"),
        );
        add_forwarded(&mut headers, &Peer::new("10.0.0.2:5000".parse().unwrap()));
        let all = |name| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(
            all("x-forwarded-for"),
            ["203.0.113.7, 198.51.100.2, 10.0.0.2"]
        );
        assert_eq!(
            all("forwarded"),
            ["for=203.0.113.7, for=198.51.100.2, for=10.0.0.2;proto=http"]
        );
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_socket_is_named_as_ipv4() {
        let peer = Peer::new("[::ffff:10.0.0.2]:5000".parse().unwrap());
        assert_eq!(peer.forwarded_for, "10.0.0.2");
        assert_eq!(peer.forwarded, "for=10.0.0.2;proto=http");
    }

    #[test]
    fn split_cookies_are_joined_with_semicolons() {
        let mut headers = HeaderMap::new();
        assert_eq!(joined(&headers, &header::COOKIE, "; "), None);
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        assert_eq!(
            joined(&headers, &header::COOKIE, "; "),
            None,
            "one field stays as it is"
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(joined(&headers, &header::COOKIE, "; ").unwrap(), "a=1; b=2");
    }

    #[test]
    fn upgrades_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&headers));
        headers.remove(header::UPGRADE);
        assert!(!wants_upgrade(&headers));
    }
}
