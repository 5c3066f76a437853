//! The HTTP/1.1 server the API runs on: what a connection may cost the gateway, whatever the
//! client on the other end does.
//!
//! - **At most `max_connections` connections.** One more is answered a short 503 envelope
//!   (`Connection: close`) and closed, rather than held or left in the listen backlog; refusals
//!   under way are bounded too, and past that bound a connection is closed unanswered.
//! - **A request head must arrive within `header_read_timeout`**, counted from its first byte
//!   (from the accept for a connection's first request), however slowly it trickles in. A
//!   connection late with its first head is answered 408 and closed; one late with a later
//!   head is closed (a 408 there could land inside an answer still being written).
//! - **A connection with no request in flight is closed after `idle_timeout`** without a byte
//!   either way: an idle keep-alive connection, or one whose client stopped reading its answer.
//!   While a request is in flight the handlers' own deadline (`REQUEST_TIMEOUT_MS`) applies.
//! - **Graceful drain:** when `drain` completes, the server lingers for `linger`: it still
//!   accepts and answers, but every answer says `Connection: close`, so a client with a
//!   keep-alive connection finishes its exchange and opens its next connection elsewhere (to
//!   another replica behind the Service) instead of having an idle connection shut under a
//!   request it is sending. Then no connection is accepted any more, idle ones are closed, and
//!   requests in flight finish before [`serve`] returns.
//!
//! Why not hyper's own `header_read_timeout`: its clock starts as soon as a connection waits
//! for a head, so it would also close every idle keep-alive connection at the header deadline,
//! leaving no room for a short header deadline beside a longer idle one; and it closes without
//! a word. Both clocks live here instead: [`ClockedStream`] tells a connection's
//! [`ConnectionClock`] when bytes come and go, the service tells it when a request starts and
//! ends, and [`ConnectionClock::expired`] runs beside the connection and ends it when its
//! deadline passes (never with a request in flight). HTTP/2 is not served: the gateway's
//! clients (browsers through a proxy, the load generator, the payment provider) speak
//! HTTP/1.1, and these guarantees are stated for it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Request};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::telemetry::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// Refusals (the 503 for a connection over the cap) answered at once; beyond them a connection
/// over the cap is closed without an answer.
const REFUSALS_AT_ONCE: usize = 256;

/// Most bytes of one request head (and of the read buffer): 64 KiB, far above any real
/// client's, so 10,000 connections hold at most 640 MiB of buffers.
const HEAD_MAX_BYTES: usize = 64 * 1024;

/// How long to wait before accepting again after the process ran out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a client that was too slow with its first request head is told, as hyper tells a
/// client whose head it cannot parse: before any request there is nothing to put an API
/// envelope on.
const REQUEST_TIMEOUT_ANSWER: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// What one connection may take of the gateway.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
}

#[derive(Clone)]
struct ConnectionMetrics {
    open: Gauge,
    refused: Counter,
    timed_out: Counter,
}

impl ConnectionMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = ConnectionMetrics {
            open: Gauge::default(),
            refused: Counter::default(),
            timed_out: Counter::default(),
        };
        metrics.register(
            "gateway_open_connections",
            "Client connections being served",
            this.open.clone(),
        );
        metrics.register(
            "gateway_connections_refused",
            "Client connections refused because MAX_CONNECTIONS were open",
            this.refused.clone(),
        );
        metrics.register(
            "gateway_connections_timed_out",
            "Client connections closed for a late request head or for idling",
            this.timed_out.clone(),
        );
        this
    }
}

/// Serves `app` on `listener` until `drain` completes, answers with `Connection: close` for
/// `linger` more, then lets the requests in flight finish. Each request carries
/// `ConnectInfo<SocketAddr>` with its peer's address.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: &Metrics,
    drain: impl Future<Output = ()>,
    linger: Duration,
) {
    let metrics = ConnectionMetrics::register(metrics);
    // A permit per open connection: when the drain has them all back, every connection ended.
    let connections = Arc::new(Semaphore::new(limits.max_connections as usize));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let (start_draining, draining) = watch::channel(false);
    let closing = Arc::new(AtomicBool::new(false));
    let mut drain = pin!(drain);
    let lingered = tokio::time::sleep(Duration::ZERO);
    let mut lingered = pin!(lingered);
    let mut lingering = false;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // The client's own failures (a reset before the accept) concern no one
                    // else; running out of descriptors passes as connections close.
                    if !matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            () = &mut drain, if !lingering => {
                lingering = true;
                closing.store(true, Ordering::Release);
                lingered.as_mut().reset(Instant::now() + linger);
                continue;
            }
            () = &mut lingered, if lingering => break,
        };
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let connection = Connection {
                    app: app.clone(),
                    peer,
                    limits,
                    metrics: metrics.clone(),
                    closing: closing.clone(),
                    _permit: permit,
                };
                tokio::spawn(connection.serve(stream, draining.clone()));
            }
            Err(_) => {
                metrics.refused.inc();
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, limits.header_read_timeout, permit));
                }
            }
        }
    }
    // Stop accepting: new connections are refused by the system from here on.
    drop(listener);
    let _ = start_draining.send(true);
    let _all_closed = connections.acquire_many(limits.max_connections).await;
}

/// One accepted connection, holding its place under the cap until it ends.
struct Connection {
    app: Router,
    peer: SocketAddr,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    /// Set when the drain begins: every answer from then on closes its connection.
    closing: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut draining: watch::Receiver<bool>) {
        self.metrics.open.inc();
        let clock = Arc::new(ConnectionClock::new(self.limits, Instant::now()));
        let io = TokioIo::new(ClockedStream {
            stream,
            clock: clock.clone(),
        });
        let (app, peer) = (self.app.clone(), self.peer);
        let request_clock = clock.clone();
        let closing = self.closing.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = request_clock.request_started();
            let answer = app.clone().oneshot(request);
            let closing = closing.clone();
            async move {
                let mut response = answer.await;
                drop(in_flight);
                // hyper ends the connection after an answer that says so.
                if closing.load(Ordering::Acquire)
                    && let Ok(response) = &mut response
                {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        });
        // The clocks are kept here; hyper's would also end idle connections early.
        let mut connection = http1::Builder::new()
            .header_read_timeout(None)
            // A request head past this is a 431: hyper's default (about 400 KiB) would let
            // every open connection hold that much.
            .max_header_size(HEAD_MAX_BYTES)
            .max_buf_size(HEAD_MAX_BYTES)
            .serve_connection(io, service);
        let mut drain_started = false;
        loop {
            tokio::select! {
                served = &mut connection => {
                    if let Err(error) = served {
                        tracing::debug!(%error, peer = %self.peer, "connection ended with an error");
                    }
                    break;
                }
                _ = draining.wait_for(|draining| *draining), if !drain_started => {
                    // Idle: closed at once; answering: closed after the answer.
                    drain_started = true;
                    Pin::new(&mut connection).graceful_shutdown();
                }
                () = clock.expired() => {
                    self.metrics.timed_out.inc();
                    if !clock.state().ever_busy {
                        // Nothing was ever written on it, so the answer cannot interleave.
                        let stream = connection.into_parts().io.into_inner().stream;
                        let _ = stream.try_write(REQUEST_TIMEOUT_ANSWER);
                    }
                    break;
                }
            }
        }
        self.metrics.open.dec();
    }
}

/// Answers a connection over the cap with a 503 and closes it, giving the client as long as
/// any to send its request head.
async fn refuse(stream: TcpStream, patience: Duration, _permit: OwnedSemaphorePermit) {
    let service = service_fn(|_: Request<Incoming>| async {
        let busy = AppError::new(
            ErrorCode::ServiceUnavailable,
            "the gateway has too many connections open; try again shortly",
        );
        Ok::<_, Infallible>(busy.into_response())
    });
    let connection = http1::Builder::new()
        .keep_alive(false)
        .header_read_timeout(None)
        .max_header_size(HEAD_MAX_BYTES)
        .max_buf_size(HEAD_MAX_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(patience, connection).await;
}

/// The deadlines of one connection.
struct ConnectionClock {
    limits: ConnectionLimits,
    state: Mutex<ClockState>,
    /// Told when the deadline may have come nearer (or appeared).
    changed: Notify,
}

struct ClockState {
    /// Requests handed to the app and not answered yet (one at most, over HTTP/1.1).
    in_flight: usize,
    /// When the first byte of the next request head came, while none is in flight.
    head_started: Option<Instant>,
    /// When the connection was last seen doing something: an answer, or bytes written.
    active_at: Instant,
    /// Whether a request ever reached the app (and so something may have been written).
    ever_busy: bool,
}

impl ConnectionClock {
    fn new(limits: ConnectionLimits, accepted_at: Instant) -> Self {
        ConnectionClock {
            limits,
            state: Mutex::new(ClockState {
                in_flight: 0,
                // A new connection is there to send a request: its head is due at once.
                head_started: Some(accepted_at),
                active_at: accepted_at,
                ever_busy: false,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the connection is to be closed if it is still waiting; none while a request is in
    /// flight.
    fn deadline(&self) -> Option<Instant> {
        let state = self.state();
        match (state.in_flight, state.head_started) {
            (0, Some(started)) => Some(started + self.limits.header_read_timeout),
            (0, None) => Some(state.active_at + self.limits.idle_timeout),
            _ => None,
        }
    }

    /// Completes when the deadline passes.
    async fn expired(&self) {
        loop {
            match self.deadline() {
                Some(deadline) if deadline <= Instant::now() => return,
                // A change wakes the wait early (`notify_one` keeps it for a wait yet to come).
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }

    fn bytes_read(&self, now: Instant) {
        let mut state = self.state();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(now);
            drop(state);
            self.changed.notify_one();
        }
    }

    fn bytes_written(&self, now: Instant) {
        // The deadline only moves later: the clock finds out when it wakes.
        self.state().active_at = now;
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.ever_busy = true;
        state.head_started = None;
        InFlight(self.clone())
    }
}

/// A request being answered; the idle clock starts again when it is dropped.
struct InFlight(Arc<ConnectionClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight -= 1;
        state.active_at = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// The socket of a connection, telling its clock when bytes come and go.
struct ClockedStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
}

impl AsyncRead for ClockedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.bytes_read(Instant::now());
        }
        read
    }
}

impl ClockedStream {
    fn count_written(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(count)) if count > 0) {
            self.clock.bytes_written(Instant::now());
        }
        written
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.count_written(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.count_written(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1,
        }
    }

    #[test]
    fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let start = Instant::now();
        let clock = ConnectionClock::new(limits(), start);
        assert_eq!(clock.deadline(), Some(start + Duration::from_secs(10)));
        // Bytes trickling in do not move the deadline.
        clock.bytes_read(start + Duration::from_secs(9));
        assert_eq!(clock.deadline(), Some(start + Duration::from_secs(10)));
    }

    #[test]
    fn between_requests_the_idle_clock_runs_until_the_next_head_begins() {
        let start = Instant::now();
        let clock = Arc::new(ConnectionClock::new(limits(), start));
        let in_flight = clock.request_started();
        assert_eq!(
            clock.deadline(),
            None,
            "no deadline while a request is answered"
        );
        // Body bytes read while it is in flight start no head.
        clock.bytes_read(Instant::now());
        drop(in_flight);
        let answered = clock.state().active_at;
        assert_eq!(clock.deadline(), Some(answered + Duration::from_secs(60)));
        let written = answered + Duration::from_secs(5);
        clock.bytes_written(written);
        assert_eq!(clock.deadline(), Some(written + Duration::from_secs(60)));
        let head = written + Duration::from_secs(30);
        clock.bytes_read(head);
        assert_eq!(clock.deadline(), Some(head + Duration::from_secs(10)));
    }
}
