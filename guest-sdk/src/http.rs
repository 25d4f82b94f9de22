//! Outgoing HTTP requests (wasi:http), to the origins the probe's
//! `http = [...]` grant lists.
//!
//! A request to any other origin fails with [`Error::Denied`]; so does every
//! request of a probe with no `http` grant. The host bounds each request by what
//! is left of the check's deadline, whatever timeout is asked for here.
//!
//! ```no_run
//! use probehost_sdk::{NotReady, http};
//!
//! fn check() -> Result<(), NotReady> {
//!     let response = http::get("http://127.0.0.1:8081/health")
//!         .map_err(|e| NotReady::new(format!("payments: {e}")))?;
//!     if response.status != 200 {
//!         return Err(NotReady::new(format!("payments: status {}", response.status)));
//!     }
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// Bytes of a response body kept by [`get`]; the rest is read and dropped.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// A response: status, headers and (up to a limit) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Headers as received; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// The body, cut at the request's body limit.
    pub body: Vec<u8>,
    /// Whether the body was longer than the limit.
    pub truncated: bool,
}

impl Response {
    /// The first value of a header, looked up without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::first_header(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL is not an absolute `http://` or `https://` URL.
    InvalidUrl(String),
    /// The origin is not granted to this probe.
    Denied(String),
    /// No connection could be made (refused, unreachable, DNS, TLS).
    Connection(String),
    /// The server did not answer in time.
    Timeout(String),
    /// The exchange failed in another way.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            Error::Denied(m) => write!(f, "request not granted: {m}"),
            Error::Connection(m) => write!(f, "could not connect: {m}"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::Protocol(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

fn from_code(code: ErrorCode) -> Error {
    let text = format!("{code:?}");
    match code {
        ErrorCode::HttpRequestDenied => {
            Error::Denied("the origin is not in the probe's `http` grant".into())
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::DnsTimeout => Error::Timeout(text),
        ErrorCode::ConnectionRefused
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::DnsError(_)
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_)
        | ErrorCode::ConnectionTerminated => Error::Connection(text),
        _ => Error::Protocol(text),
    }
}

/// A request to send: method, URL, headers, body, and bounds.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    max_body: usize,
}

impl Request {
    /// A request with this method (`GET`, `HEAD`, `POST`, ...) to this URL.
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Add a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Send this body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Give up after this long to connect, and this long for each read (the
    /// check's deadline applies in any case).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Keep at most this many bytes of the response body.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Request {
        self.max_body = bytes;
        self
    }

    /// Send the request and read the response.
    pub fn send(self) -> Result<Response, Error> {
        let url = Url::parse(&self.url)?;
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| Error::Protocol(format!("header {name:?}: {e:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        };
        let invalid = |what: &str| Error::InvalidUrl(format!("{}: bad {what}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(if url.https {
                &Scheme::Https
            } else {
                &Scheme::Http
            }))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(url.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&url.path))
            .map_err(|()| invalid("path"))?;

        let body = request
            .body()
            .map_err(|()| Error::Protocol("request body already taken".into()))?;
        let options = self.timeout.map(|t| {
            let options = RequestOptions::new();
            let nanos = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            // The host may refuse to set a timeout; its own bound applies then.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        let pending = outgoing_handler::handle(request, options).map_err(from_code)?;
        if !self.body.is_empty() {
            let stream = body
                .write()
                .map_err(|()| Error::Protocol("request body stream unavailable".into()))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| Error::Protocol(format!("sending the body: {e:?}")))?;
            }
            drop(stream);
        }
        OutgoingBody::finish(body, None).map_err(from_code)?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(from_code(code)),
            Some(Err(())) | None => {
                return Err(Error::Protocol("the response was not available".into()));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| Error::Protocol("response body already taken".into()))?;
        let stream = incoming
            .stream()
            .map_err(|()| Error::Protocol("response body stream unavailable".into()))?;
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            match stream.blocking_read(16 * 1024) {
                Ok(chunk) => {
                    let room = self.max_body.saturating_sub(body.len());
                    if chunk.len() > room {
                        truncated = true;
                    }
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::Protocol(format!(
                        "reading the body: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
            truncated,
        })
    }
}

/// `GET url`, keeping up to [`DEFAULT_MAX_BODY`] bytes of the body.
pub fn get(url: &str) -> Result<Response, Error> {
    Request::new("GET", url).send()
}

/// The parts of an absolute URL the request needs.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    https: bool,
    authority: &'a str,
    path: String,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Url<'a>, Error> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(Error::InvalidUrl(format!(
                "{url}: must start with http:// or https://"
            )));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = path.split('#').next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(Error::InvalidUrl(format!("{url}: bad host")));
        }
        let path = match path.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{path}"),
            Some(_) => path.to_owned(),
        };
        Ok(Url {
            https,
            authority,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            Url::parse("http://127.0.0.1:8080/health?full=1#x").unwrap(),
            Url {
                https: false,
                authority: "127.0.0.1:8080",
                path: "/health?full=1".into()
            }
        );
        assert_eq!(Url::parse("https://example.com").unwrap().path, "/");
        assert_eq!(Url::parse("https://example.com?q").unwrap().path, "/?q");
        assert!(Url::parse("ftp://example.com").is_err());
        assert!(Url::parse("http://user@example.com/").is_err());
        assert!(Url::parse("http:///x").is_err());
    }
}
