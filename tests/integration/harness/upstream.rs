//! An application for proxy-mode tests: it records every request it receives and
//! answers by path.
//!
//! - `/slow?ms=N`: answers after N milliseconds;
//! - `/upload`: reads the body frame by frame (recording each frame as it comes)
//!   and answers with the total it read;
//! - `/download`: sends `first`, waits until the test calls
//!   [`Upstream::release_download`], then sends `second`;
//! - `/ws`: a WebSocket echo;
//! - `/status?code=N`: answers status N with the body `status N`;
//! - `/redirect?to=URL`: answers `302 Found` with `Location: URL`;
//! - `/close`: answers `200 closing` and closes the connection;
//! - anything else: `200 app`, with the request's body echoed in `x-body-length`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A request as the application saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    connections: std::sync::atomic::AtomicUsize,
    upload_frames: Mutex<Vec<Vec<u8>>>,
    release: Notify,
}

pub struct Upstream {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(text: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(text.into()).boxed()
}

impl Upstream {
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                serving
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(shared.clone(), request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            address,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The frames of `/upload` bodies received so far.
    pub fn upload_frames(&self) -> Vec<Vec<u8>> {
        self.shared.upload_frames.lock().unwrap().clone()
    }

    /// Let a waiting `/download` send its second part.
    pub fn release_download(&self) {
        self.shared.release.notify_one();
    }

    /// Stop accepting and answering.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    shared: Arc<Shared>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let mut seen = Seen {
        method: request.method().to_string(),
        path_and_query: request
            .uri()
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: Vec::new(),
    };
    if path == "/ws" {
        shared.seen.lock().unwrap().push(seen);
        return Ok(websocket(&mut request));
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    let body = request.into_body();
    match path.as_str() {
        "/upload" => {
            let mut body = body;
            let mut total = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    shared.upload_frames.lock().unwrap().push(data.to_vec());
                    seen.body.extend_from_slice(&data);
                }
            }
            shared.seen.lock().unwrap().push(seen);
            Ok(Response::new(full(format!("received {total} bytes"))))
        }
        "/download" => {
            shared.seen.lock().unwrap().push(seen);
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first\n"))))
                    .await;
                shared.release.notified().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"second\n"))))
                    .await;
            });
            let stream = tokio_stream_from(rx);
            Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
        }
        "/status" => {
            shared.seen.lock().unwrap().push(seen);
            let code: u16 = query
                .strip_prefix("code=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            let mut response = Response::new(full(format!("status {code}")));
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            Ok(response)
        }
        "/close" => {
            shared.seen.lock().unwrap().push(seen);
            let mut response = Response::new(full("closing"));
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            Ok(response)
        }
        "/redirect" => {
            shared.seen.lock().unwrap().push(seen);
            let to = query.strip_prefix("to=").unwrap_or("/");
            let mut response = Response::new(full("moved"));
            *response.status_mut() = StatusCode::FOUND;
            if let Ok(location) = http::HeaderValue::from_str(to) {
                response
                    .headers_mut()
                    .insert(http::header::LOCATION, location);
            }
            Ok(response)
        }
        "/slow" => {
            shared.seen.lock().unwrap().push(seen);
            let ms: u64 = query
                .strip_prefix("ms=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Response::new(full("slow")))
        }
        _ => {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            seen.body = bytes.to_vec();
            let length = bytes.len();
            shared.seen.lock().unwrap().push(seen);
            let mut response = Response::new(full("app"));
            response
                .headers_mut()
                .insert("x-body-length", length.into());
            response
                .headers_mut()
                .insert("x-app", "yes".parse().unwrap());
            Ok(response)
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Accept a WebSocket upgrade and echo every text message back.
fn websocket(request: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        let mut response = Response::new(full("not a websocket request"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(""))
        .unwrap()
}
