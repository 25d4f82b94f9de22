//! Connection guards: a client may not hold a connection slot without using
//! it. Each connection is watched for three things:
//!
//! - **a stalled reader**: a response write that makes no progress for
//!   `send_timeout` (nginx's `send_timeout`), or, over HTTP/2, a response whose
//!   body the transport has not asked for in that time (a client that grants no
//!   flow-control window): the connection is closed;
//! - **idleness**: no request in progress for `idle_timeout` (the header read
//!   timeout: it also covers a client that connects and sends nothing, or only
//!   answers HTTP/2 pings): the connection is retired;
//! - **its allowance of requests**: a connection is retired after
//!   [`MAX_REQUESTS`] requests, so pipelined requests never queue without bound,
//!   and a connection taken from the probe reserve after one.
//!
//! [`Guard`] holds the state, shared by the connection's I/O ([`GuardedIo`]),
//! its response bodies ([`GuardedBody`]) and the task that drives it, which asks
//! [`Guard::check`] what to do. Times are milliseconds since the connection was
//! accepted, in atomics: every piece runs on the connection's one serving
//! thread, but hyper requires them to be `Send`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Requests one connection may make before it is retired (nginx's
/// `keepalive_requests` default): a client must reconnect to make more, and
/// pipelined requests beyond it are never read.
pub(super) const MAX_REQUESTS: usize = 1000;
/// How often a busy connection is looked at: a stall is caught within
/// `send_timeout` plus this, which leaves most of the promised second for a
/// loaded machine to close a thousand of them.
const TICK: Duration = Duration::from_millis(250);
/// Not set (for the millisecond clocks).
const NEVER: u64 = u64::MAX;

/// What the driving task should do with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing yet: look again at this instant.
    WaitUntil(Instant),
    /// Stop taking requests and close once the open ones are answered
    /// (HTTP/2: GOAWAY).
    Retire(&'static str),
    /// Close at once: the client is not reading.
    Close(&'static str),
}

/// One connection's state.
#[derive(Debug)]
pub(super) struct Guard {
    accepted: Instant,
    send_timeout: u64,
    idle_timeout: u64,
    max_requests: usize,
    /// Requests whose answers are not finished (being answered, or a body not
    /// yet at its end).
    open: AtomicUsize,
    /// Response bodies that wait for the transport to ask for their next frame.
    owed: AtomicUsize,
    /// When a body was last created or asked for a frame.
    body_progress: AtomicU64,
    /// Since when a write has been waiting for the socket ([`NEVER`]: none is).
    write_blocked: AtomicU64,
    /// Since when no request has been open.
    idle_since: AtomicU64,
    /// Requests started on this connection.
    requests: AtomicUsize,
    /// Whether the client speaks HTTP/2 (known from its first request).
    http2: AtomicBool,
}

impl Guard {
    /// A guard for a connection accepted now. `max_requests` is
    /// [`MAX_REQUESTS`], or 1 for a connection from the probe reserve.
    pub(super) fn new(
        send_timeout: Duration,
        idle_timeout: Duration,
        max_requests: usize,
    ) -> Guard {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NEVER);
        Guard {
            accepted: Instant::now(),
            send_timeout: millis(send_timeout),
            idle_timeout: millis(idle_timeout),
            max_requests,
            open: AtomicUsize::new(0),
            owed: AtomicUsize::new(0),
            body_progress: AtomicU64::new(0),
            write_blocked: AtomicU64::new(NEVER),
            idle_since: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn instant(&self, millis: u64) -> Instant {
        self.accepted + Duration::from_millis(millis)
    }

    /// A request has started: the returned token keeps it open until the
    /// answer is finished (moved into the response body) or dropped.
    pub(super) fn start(self: &Arc<Self>) -> OpenRequest {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenRequest {
            guard: self.clone(),
        }
    }

    /// The client speaks HTTP/2. Its answers can then wait in flow control
    /// after their bodies are done, out of this guard's sight, so the
    /// connection counts as idle (and is retired) after `send_timeout` when
    /// that is shorter.
    pub(super) fn speaks_http2(&self) {
        if !self.http2.load(Ordering::Relaxed) {
            self.http2.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the request just started is the last this connection takes.
    pub(super) fn is_last_request(&self) -> bool {
        self.requests.load(Ordering::Relaxed) >= self.max_requests
    }

    /// What to do now.
    pub(super) fn check(&self) -> Action {
        let now = self.now();
        let mut next = now.saturating_add(TICK.as_millis() as u64);
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != NEVER {
            let due = blocked.saturating_add(self.send_timeout);
            if now >= due {
                return Action::Close("the client read nothing within the send timeout");
            }
            next = next.min(due);
        }
        if self.owed.load(Ordering::Relaxed) > 0 {
            let due = self
                .body_progress
                .load(Ordering::Relaxed)
                .saturating_add(self.send_timeout);
            if now >= due {
                return Action::Close("the client took no response data within the send timeout");
            }
            next = next.min(due);
        }
        if self.open.load(Ordering::Relaxed) == 0 {
            if self.requests.load(Ordering::Relaxed) >= self.max_requests {
                return Action::Retire("the connection has made its requests");
            }
            let idle_timeout = match self.http2.load(Ordering::Relaxed) {
                true => self.idle_timeout.min(self.send_timeout),
                false => self.idle_timeout,
            };
            let due = self
                .idle_since
                .load(Ordering::Relaxed)
                .saturating_add(idle_timeout);
            if now >= due {
                // Nothing was ever asked: nothing to say goodbye to either
                // (an HTTP/2 client would be owed a GOAWAY it may never
                // acknowledge).
                if self.requests.load(Ordering::Relaxed) == 0 {
                    return Action::Close("no request within the idle timeout");
                }
                return Action::Retire("idle");
            }
            next = next.min(due);
        }
        Action::WaitUntil(self.instant(next))
    }

    fn body_created(&self) {
        self.body_progress.store(self.now(), Ordering::Relaxed);
        self.owed.fetch_add(1, Ordering::Relaxed);
    }

    fn body_asked(&self) {
        self.body_progress.store(self.now(), Ordering::Relaxed);
        self.owed.fetch_sub(1, Ordering::Relaxed);
    }

    fn write_pending(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == NEVER {
            self.write_blocked.store(self.now(), Ordering::Relaxed);
        }
    }

    fn write_progressed(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != NEVER {
            self.write_blocked.store(NEVER, Ordering::Relaxed);
        }
    }
}

/// A request in progress (see [`Guard::start`]).
#[derive(Debug)]
pub(super) struct OpenRequest {
    guard: Arc<Guard>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        if self.guard.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.guard
                .idle_since
                .store(self.guard.now(), Ordering::Relaxed);
        }
    }
}

/// A response body that tells its guard whether the transport keeps asking
/// for it. Until the transport asks for the next frame, the body is owed; a
/// body waiting on its own source (the application, in proxy mode) is not.
#[derive(Debug)]
pub(super) struct GuardedBody<B> {
    inner: B,
    /// `None` once the body is at its end.
    open: Option<OpenRequest>,
    owed: bool,
}

impl<B: Body> GuardedBody<B> {
    pub(super) fn new(inner: B, open: OpenRequest) -> GuardedBody<B> {
        open.guard.body_created();
        GuardedBody {
            inner,
            open: Some(open),
            owed: true,
        }
    }

    fn finish(&mut self) {
        if let Some(open) = self.open.take()
            && self.owed
        {
            open.guard.body_asked();
            self.owed = false;
        }
    }
}

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.owed
            && let Some(open) = &this.open
        {
            open.guard.body_asked();
            this.owed = false;
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) if !this.inner.is_end_stream() => {
                if let Some(open) = &this.open {
                    open.guard.body_created();
                    this.owed = true;
                }
            }
            Poll::Ready(_) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for GuardedBody<B> {
    fn drop(&mut self) {
        if let Some(open) = self.open.take()
            && self.owed
        {
            open.guard.body_asked();
        }
    }
}

/// A connection's stream, telling its guard when writes wait for the client.
#[derive(Debug)]
pub(super) struct GuardedIo<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> GuardedIo<S> {
    pub(super) fn new(inner: S, guard: Arc<Guard>) -> GuardedIo<S> {
        GuardedIo { inner, guard }
    }

    /// A write that waits starts the clock; only bytes taken stop it (a
    /// flush of an empty buffer, always ready, is no progress).
    fn track(&self, polled: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match &polled {
            Poll::Pending => self.guard.write_pending(),
            Poll::Ready(Ok(0)) => {}
            Poll::Ready(_) => self.guard.write_progressed(),
        }
        polled
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    const SEND: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(10);

    fn guard(max_requests: usize) -> Arc<Guard> {
        Arc::new(Guard::new(SEND, IDLE, max_requests))
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_retired_after_the_idle_timeout() {
        let guard = guard(MAX_REQUESTS);
        assert_eq!(
            guard.check(),
            Action::WaitUntil(guard.accepted + TICK),
            "looked at again soon"
        );
        tokio::time::advance(IDLE).await;
        assert_eq!(
            guard.check(),
            Action::Close("no request within the idle timeout"),
            "never used: closed"
        );
        drop(guard.start());
        tokio::time::advance(IDLE).await;
        assert_eq!(guard.check(), Action::Retire("idle"), "used: retired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_the_transport_never_asks_for_closes_the_connection() {
        let guard = guard(MAX_REQUESTS);
        let body = GuardedBody::new(Full::new(Bytes::from_static(b"Ok")), guard.start());
        tokio::time::advance(SEND - Duration::from_millis(1)).await;
        assert!(matches!(guard.check(), Action::WaitUntil(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(guard.check(), Action::Close(_)));
        drop(body);
        assert!(matches!(guard.check(), Action::WaitUntil(_)), "released");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_to_its_end_leaves_the_connection_idle() {
        let guard = guard(MAX_REQUESTS);
        let body = GuardedBody::new(Full::new(Bytes::from_static(b"Ok")), guard.start());
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "Ok");
        assert_eq!(guard.open.load(Ordering::Relaxed), 0);
        assert_eq!(guard.owed.load(Ordering::Relaxed), 0);
        tokio::time::advance(SEND * 2).await;
        assert_eq!(guard.check(), Action::Retire("idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_idle_after_the_send_timeout() {
        let guard = guard(MAX_REQUESTS);
        guard.speaks_http2();
        drop(guard.start());
        tokio::time::advance(SEND).await;
        assert_eq!(guard.check(), Action::Retire("idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_idle() {
        // Proxy mode: the application takes its time; nothing is owed.
        let guard = guard(MAX_REQUESTS);
        let open = guard.start();
        tokio::time::advance(IDLE * 3).await;
        assert!(matches!(guard.check(), Action::WaitUntil(_)));
        drop(open);
        tokio::time::advance(IDLE).await;
        assert_eq!(guard.check(), Action::Retire("idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_send_timeout_closes_the_connection() {
        let guard = guard(MAX_REQUESTS);
        let open = guard.start();
        let io = GuardedIo::new((), guard.clone());
        assert!(io.track(Poll::Pending).is_pending());
        tokio::time::advance(Duration::from_secs(3)).await;
        // Waiting again, or writing nothing, is no progress.
        let _ = io.track(Poll::Pending);
        let _ = io.track(Poll::Ready(Ok(0)));
        assert!(matches!(guard.check(), Action::WaitUntil(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(guard.check(), Action::Close(_)));
        let _ = io.track(Poll::Ready(Ok(1)));
        assert!(matches!(guard.check(), Action::WaitUntil(_)));
        drop(open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_retired_after_its_requests() {
        let guard = guard(2);
        drop(guard.start());
        assert!(!guard.is_last_request());
        let open = guard.start();
        assert!(guard.is_last_request());
        assert!(
            matches!(guard.check(), Action::WaitUntil(_)),
            "answer first"
        );
        drop(open);
        assert_eq!(
            guard.check(),
            Action::Retire("the connection has made its requests")
        );
    }
}
