//! Where log lines go: a buffer in memory that a background thread writes to
//! stdout every few milliseconds.
//!
//! Request threads only append to the buffer under a short lock. A channel
//! to a writer thread (tracing-appender) wakes that thread for every line,
//! and those wake-ups showed as a noticeable share of the CPU per request;
//! here the writer wakes on a timer and writes everything in one syscall.
//! If stdout stalls, at most [`MAX_BUFFERED`] bytes are kept and further
//! lines are counted and dropped, never blocking a request.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// How often buffered lines are written out.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Most bytes kept while stdout does not keep up.
const MAX_BUFFERED: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    buffer: Mutex<Buffer>,
    wake: Condvar,
}

/// The `MakeWriter` for tracing-subscriber: every event appends to the buffer.
#[derive(Clone)]
pub struct BufferedStdout(Arc<Shared>);

/// Flushes what is left and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Starts the writer thread; keep the guard alive as long as logs are written.
pub fn buffered_stdout() -> io::Result<(BufferedStdout, FlushGuard)> {
    let shared = Arc::new(Shared::default());
    let writer = shared.clone();
    let thread = thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(&writer))?;
    Ok((
        BufferedStdout(shared.clone()),
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_loop(shared: &Shared) {
    let mut out = io::stdout();
    let mut pending = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut buffer = shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
            if buffer.bytes.is_empty() && !buffer.closed {
                buffer = shared
                    .wake
                    .wait_timeout(buffer, FLUSH_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut pending, &mut buffer.bytes);
            (std::mem::take(&mut buffer.dropped), buffer.closed)
        };
        if dropped > 0 {
            let _ = writeln!(
                out,
                "tokengate: {dropped} log lines dropped (stdout too slow)"
            );
        }
        if !pending.is_empty() {
            let _ = out.write_all(&pending);
            let _ = out.flush();
            pending.clear();
        }
        if closed {
            return;
        }
        thread::sleep(FLUSH_EVERY);
    }
}

impl BufferedStdout {
    /// Appends a line, or counts it as dropped when the buffer is full.
    fn append(&self, line: &[u8]) {
        let mut buffer = self.0.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.bytes.len() + line.len() > MAX_BUFFERED {
            buffer.dropped += 1;
        } else {
            buffer.bytes.extend_from_slice(line);
        }
    }
}

impl Write for BufferedStdout {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStdout {
    type Writer = BufferedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared
            .buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The buffer the access log writes to directly, when `main` installed one
/// (see [`install_access_log`]).
static ACCESS_LOG: std::sync::OnceLock<BufferedStdout> = std::sync::OnceLock::new();

/// Lets [`access`] write its lines straight into `writer` (the buffer behind
/// the tracing subscriber) instead of formatting them through tracing: the
/// same text, at a fraction of the CPU per request. Only for output that is
/// not a terminal (a terminal gets tracing's colours).
pub fn install_access_log(writer: BufferedStdout) {
    let _ = ACCESS_LOG.set(writer);
}

/// One access-log line: method, path, status and latency; never the query
/// or headers, which may carry tokens. Same format as tracing's:
/// `2026-11-25T06:25:59.375885Z  INFO tokengate::http: request method=GET path=/health status=200 latency_us=160`.
pub fn access(method: &poem::http::Method, path: &str, status: u16, latency_us: u64) {
    let Some(writer) = ACCESS_LOG.get() else {
        tracing::info!(target: "tokengate::http", %method, path = %path, status, latency_us, "request");
        return;
    };
    if !tracing::enabled!(target: "tokengate::http", tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static LINE: std::cell::RefCell<(i64, Vec<u8>)> = const { std::cell::RefCell::new((i64::MIN, Vec::new())) };
    }
    let now = chrono::Utc::now();
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        let (second, text) = &mut *line;
        // The date and time up to the second change once a second.
        if *second != now.timestamp() || text.len() < PREFIX_LEN {
            *second = now.timestamp();
            text.clear();
            let _ = write!(text, "{}.", now.format("%Y-%m-%dT%H:%M:%S"));
        }
        text.truncate(PREFIX_LEN);
        let _ = writeln!(
            text,
            "{:06}Z  INFO tokengate::http: request method={method} path={path} status={status} latency_us={latency_us}",
            now.timestamp_subsec_micros()
        );
        writer.append(text);
    });
}

/// Length of `YYYY-MM-DDTHH:MM:SS.`.
const PREFIX_LEN: usize = 20;
