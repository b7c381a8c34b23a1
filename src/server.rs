//! The HTTP server loop: accepting TCP connections and serving HTTP/1.1 and
//! HTTP/2 (h2c) on them with hyper, with the limits that hold under attack.
//!
//! Written here instead of using `poem::Server`, which builds hyper without a
//! timer (so no header-read timeout), advertises no HTTP/2 stream limit, and
//! retries a failed `accept` at once (so running out of file descriptors
//! spins a core while nobody is served). What this loop adds:
//!
//! - a cap on open connections, below the file-descriptor limit: at the cap,
//!   new connections wait in the kernel's backlog while the open ones are
//!   served; and when `accept` fails for lack of resources anyway, a growing
//!   back-off (10 ms to 100 ms) instead of a spin;
//! - HTTP/1.1 header-read timeout (hyper's: it also bounds the wait for the
//!   next request on a keep-alive connection), and a watchdog per connection
//!   that closes one on which no request started within the header-read
//!   timeout of the accept, or none for the idle timeout, or on which nothing
//!   moved for the idle timeout while it is closing;
//! - HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`, hyper's protections against
//!   reset floods, and a 16 KiB header-list limit (poem's);
//! - a lingering close: before a connection the server ends is closed, its
//!   write side is shut and what the client still sends is read and dropped
//!   (at most [`LINGER_BYTES`] for [`LINGER_TIME`]), so a client that sends a
//!   whole oversized body before reading gets its `413`, not a reset;
//! - graceful shutdown: stop accepting, let requests in flight finish (up to
//!   a grace period), close idle connections.
//!
//! Requests and responses are converted with poem's own conversions, and the
//! app is called directly (no boxed endpoint future per request).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Most HTTP/2 streams a client may have open at once on one connection;
/// further requests wait in the client (RFC 9113 section 5.1.2).
pub const MAX_CONCURRENT_STREAMS: u32 = 32;

/// Streams a client may reset before the server has accepted them, before
/// it gets a GOAWAY (the "rapid reset" attack; h2's and poem's default).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the server may reset for a client's protocol errors before it
/// gets a GOAWAY (hyper's default, kept explicit).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Largest HTTP/2 header list accepted (poem's default).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Most bytes read and dropped after the server ended a connection.
pub const LINGER_BYTES: usize = 1024 * 1024;

/// Longest time spent reading and dropping after the server ended a connection.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// First and longest pause after `accept` failed for lack of resources.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// File descriptors kept free for what the service opens after the start
/// (database connections, the secret file, ...), plus one per 16 of the limit.
const SPARE_FDS: usize = 16;

/// Upper bound of the connection cap, whatever the file limit.
const MAX_CONNECTIONS: usize = 1 << 20;

/// How long a connection may stay quiet.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the accept to the first request, and (HTTP/1.1) from the moment
    /// a connection is ready for a request to the end of its headers.
    pub header_read: Duration,
    /// No request started for this long: the connection is closed (after
    /// the requests in flight). While closing, nothing sent or received for
    /// this long: it is dropped.
    pub idle: Duration,
}

/// Where the server is in its life; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Shutting down: finish what is in flight, then close.
    Draining,
    /// The grace period is over: drop every connection now.
    Abort,
}

/// What every connection shares.
struct Shared<E> {
    app: E,
    local_addr: LocalAddr,
    http: auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish for at most `grace`, and returns.
pub async fn serve<E>(
    listener: TcpListener,
    app: E,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let shared = Arc::new(Shared {
        app,
        local_addr: LocalAddr(listener.local_addr()?.into()),
        http: http_builder(timeouts),
        timeouts,
    });
    let max_connections = connection_cap();
    tracing::debug!(max_connections, "connection cap");
    let slots = Arc::new(Semaphore::new(max_connections));
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failing = false;
    tokio::pin!(shutdown);

    loop {
        // A free slot first: at the cap, connections wait in the backlog.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if failing {
                    tracing::info!("accepting connections again");
                    failing = false;
                    backoff = ACCEPT_BACKOFF_MIN;
                }
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    slot,
                    shared.clone(),
                    phase_rx.clone(),
                ));
            }
            // The client gave up before we took its connection: nothing to wait for.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors or memory: retrying at once would
                // spin. Pause, serving the open connections meanwhile.
                if !failing {
                    tracing::warn!(error = %e, "cannot accept connections; backing off");
                    failing = true;
                }
                drop(slot);
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }

    drop(listener);
    let _ = phase.send(Phase::Draining);
    // Every slot back means every connection has closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; dropping them");
        let _ = phase.send(Phase::Abort);
    }
    Ok(())
}

/// hyper, configured once for every connection.
fn http_builder(timeouts: Timeouts) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    builder
}

/// Errors of one connection that went away before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// How many connections may be open at once: the file-descriptor limit,
/// minus the descriptors open now, minus a reserve.
fn connection_cap() -> usize {
    let limit = fd_limit();
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, |dir| dir.count());
    let reserve = SPARE_FDS + limit / 16;
    limit
        .saturating_sub(open)
        .saturating_sub(reserve)
        .clamp(1, MAX_CONNECTIONS)
}

/// The soft `RLIMIT_NOFILE`.
fn fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Serves one connection until it ends, the watchdog closes it, or the
/// server shuts down.
async fn serve_connection<E>(
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    shared: Arc<Shared<E>>,
    mut phase: watch::Receiver<Phase>,
) where
    E: Endpoint<Output = Response> + 'static,
{
    // Small writes (HTTP/2 frames) must not wait for the client's delayed ACK.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let io = Monitored {
        stream: Some(stream),
        slot: Some(slot),
        activity: activity.clone(),
        read_closed: false,
    };
    let service = {
        let shared = shared.clone();
        let activity = activity.clone();
        let remote_addr = RemoteAddr(peer.into());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            activity.request.store(true, Relaxed);
            let shared = shared.clone();
            let remote_addr = remote_addr.clone();
            async move {
                let req =
                    Request::from((req, shared.local_addr.clone(), remote_addr, Scheme::HTTP));
                let response = match shared.app.call(req).await {
                    Ok(response) => response,
                    Err(err) => err.into_response(),
                };
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        })
    };
    let conn = shared.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);

    let mut watchdog = Watchdog::new(shared.timeouts, activity);
    let wake = tokio::time::sleep(watchdog.period());
    tokio::pin!(wake);
    loop {
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            () = wake.as_mut() => {
                let now = Instant::now();
                match watchdog.check(now) {
                    Verdict::Open => {}
                    Verdict::Finish => conn.as_mut().graceful_shutdown(),
                    Verdict::Drop => return,
                }
                wake.as_mut().reset(now + watchdog.period());
            }
            changed = phase.changed() => match changed.map(|()| *phase.borrow_and_update()) {
                Ok(Phase::Serving) => {}
                Ok(Phase::Draining) => {
                    if watchdog.begin_closing() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                Ok(Phase::Abort) | Err(_) => return,
            },
        }
    }
}

/// Signs of life of one connection since the watchdog last looked: set by
/// the socket wrapper and the service, taken by the watchdog (all in the
/// connection's task, so relaxed stores suffice).
#[derive(Default)]
struct Activity {
    /// Bytes were read or written.
    io: AtomicBool,
    /// A request started (its headers were read).
    request: AtomicBool,
}

/// What the watchdog decided.
enum Verdict {
    /// Nothing to do.
    Open,
    /// Finish what is in flight, then close.
    Finish,
    /// Close now.
    Drop,
}

/// Closes connections that hold a slot without using it (see [`Timeouts`]).
/// It looks a few times per timeout instead of timing every read and write,
/// so a connection is closed between one and 1.5 timeouts after it went quiet.
struct Watchdog {
    timeouts: Timeouts,
    activity: Arc<Activity>,
    accepted: Instant,
    any_request: bool,
    last_request: Instant,
    last_io: Instant,
    closing: bool,
}

impl Watchdog {
    fn new(timeouts: Timeouts, activity: Arc<Activity>) -> Self {
        let now = Instant::now();
        Self {
            timeouts,
            activity,
            accepted: now,
            any_request: false,
            last_request: now,
            last_io: now,
            closing: false,
        }
    }

    /// Time until the next look.
    fn period(&self) -> Duration {
        let shortest = if self.any_request {
            self.timeouts.idle
        } else {
            self.timeouts.idle.min(self.timeouts.header_read)
        };
        (shortest / 4).max(Duration::from_millis(1))
    }

    fn check(&mut self, now: Instant) -> Verdict {
        if self.activity.request.swap(false, Relaxed) {
            self.any_request = true;
            self.last_request = now;
        }
        if self.activity.io.swap(false, Relaxed) {
            self.last_io = now;
        }
        if !self.any_request && now - self.accepted >= self.timeouts.header_read {
            // Not even one request: nothing to finish.
            return Verdict::Drop;
        }
        if self.closing {
            if now - self.last_io >= self.timeouts.idle {
                return Verdict::Drop;
            }
            return Verdict::Open;
        }
        if now - self.last_request >= self.timeouts.idle {
            self.begin_closing();
            return Verdict::Finish;
        }
        Verdict::Open
    }

    /// Marks the connection as closing; false if it already was.
    fn begin_closing(&mut self) -> bool {
        if self.closing {
            return false;
        }
        self.closing = true;
        self.last_io = Instant::now();
        true
    }
}

/// The client's socket as hyper sees it: reports activity to the watchdog,
/// holds the connection's slot, and lingers when dropped (see the module
/// documentation).
struct Monitored {
    /// `None` only while being dropped.
    stream: Option<TcpStream>,
    slot: Option<OwnedSemaphorePermit>,
    activity: Arc<Activity>,
    /// The client closed its side: nothing more will come.
    read_closed: bool,
}

impl Monitored {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("present until dropped"))
    }
}

impl AsyncRead for Monitored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = self.stream().poll_read(cx, buf);
        match result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.activity.io.store(true, Relaxed);
            }
            Poll::Ready(Ok(())) if buf.remaining() > 0 => self.read_closed = true,
            Poll::Ready(Err(_)) => self.read_closed = true,
            _ => {}
        }
        result
    }
}

impl AsyncWrite for Monitored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.stream().poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            if written > 0 {
                self.activity.io.store(true, Relaxed);
            }
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = self.stream().poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = result {
            if written > 0 {
                self.activity.io.store(true, Relaxed);
            }
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for Monitored {
    fn drop(&mut self) {
        let (Some(stream), slot) = (self.stream.take(), self.slot.take()) else {
            return;
        };
        if self.read_closed {
            return;
        }
        // Closing a socket with unread data makes the kernel send a reset,
        // which can destroy the answer before the client has read it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, slot));
        }
    }
}

/// Shuts the write side (the client sees the end of the answer), then reads
/// and drops what the client still sends, boundedly, before closing.
async fn linger(mut stream: TcpStream, slot: Option<OwnedSemaphorePermit>) {
    let _ = stream.shutdown().await;
    let mut buffer = [0u8; 8 * 1024];
    let mut dropped = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while dropped < LINGER_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
    drop(stream);
    drop(slot);
}
