//! Proxy mode: every request that is not a probe goes to the application
//! (`server.upstream`), unchanged but for the usual proxy headers.
//!
//! Bodies stream both ways; hop-by-hop headers are dropped; `X-Forwarded-For`
//! and `Forwarded` gain the client, `X-Forwarded-Proto` is set unless an outer
//! proxy set it; upgrades (WebSocket) are tunnelled. An upstream that refuses is
//! a `502`; one that does not start answering within `server.upstream_timeout`
//! is a `504`. This module knows nothing of probes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The body of a response: our own text, or the upstream's stream.
pub type Body = Either<Full<Bytes>, Incoming>;

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

/// The application behind probehost.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Incoming>,
    /// `scheme://authority` of the application.
    base: Uri,
    timeout: Duration,
}

impl Upstream {
    /// `base` is an `http://host:port` URL.
    pub fn new(base: Uri, timeout: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Upstream {
            client,
            base,
            timeout,
        }
    }

    /// Forward `request` from `client` and return the application's response.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<Body> {
        let upgrade = wants_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let request = match self.outgoing(request, client) {
            Ok(request) => request,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("Bad Request: {e}")),
        };
        let mut response =
            match tokio::time::timeout(self.timeout, self.client.request(request)).await {
                Err(_) => return text(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
                Ok(Err(e)) => {
                    tracing::debug!("upstream request failed: {e}");
                    return text(StatusCode::BAD_GATEWAY, "Bad Gateway");
                }
                Ok(Ok(response)) => response,
            };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = upgrade
        {
            let upstream_side = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
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
            return response.map(Either::Right);
        }
        strip_hop_by_hop(response.headers_mut());
        response.map(Either::Right)
    }

    /// The request as the application receives it.
    fn outgoing(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Request<Incoming>, String> {
        let (mut parts, body) = request.into_parts();
        let upgrade = wants_upgrade(&parts.headers);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("{}{}", self.base.to_string().trim_end_matches('/'), path)
            .parse::<Uri>()
            .map_err(|e| e.to_string())?;
        // HTTP/2 clients send the host as the URI's authority.
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if upgrade && let Some(protocol) = upgrade_to {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
        }
        add_forwarded(&mut parts.headers, client);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// Append the client to `X-Forwarded-For` and `Forwarded`; set
/// `X-Forwarded-Proto` when no outer proxy did.
fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr) {
    let ip = client.ip();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", value);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    // RFC 7239: IPv6 addresses are quoted and bracketed.
    let node = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let forwarded = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, for={node};proto=http"),
        None => format!("for={node};proto=http"),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, value);
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
        add_forwarded(&mut headers, "10.0.0.2:5000".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 10.0.0.2");
        assert_eq!(
            headers["x-forwarded-proto"], "https",
            "an outer proxy's value is kept"
        );
        assert_eq!(headers[header::FORWARDED], "for=10.0.0.2;proto=http");

        let mut headers = HeaderMap::new();
        add_forwarded(&mut headers, "[::1]:5000".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers[header::FORWARDED], "for=\"[::1]\";proto=http");
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
