//! The HTTP edge under attack: the HTTP/2 stream limit, header-read and idle
//! timeouts, running out of file descriptors, the lingering close that lets
//! an oversized body still get its `413`, and the security headers.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, ORIGIN, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use reqwest::{Method, StatusCode, Version};
use tokengate::server::MAX_CONCURRENT_STREAMS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::helpers::{
    assert_error, spawn_app, spawn_app_with, tokengate, ServerProcess, TEST_SECRET,
};

/// Upper bound on waiting for something the server is expected to do.
const PATIENCE: Duration = Duration::from_secs(10);

/// The start of every HTTP/2 connection (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HTTP/2 frame types and flags used here.
const H2_SETTINGS: u8 = 0x4;
const H2_GOAWAY: u8 = 0x7;
const H2_ACK: u8 = 0x1;
/// The `SETTINGS_MAX_CONCURRENT_STREAMS` identifier.
const H2_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Opens an HTTP/2 (h2c, prior knowledge) connection: preface and empty SETTINGS.
async fn h2_connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.unwrap();
    stream
}

/// The next frame's type, flags and payload; `None` once the server closed.
async fn h2_read_frame(stream: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

/// One HTTP/1.1 answer read from a raw connection.
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one HTTP/1.1 answer (head and `Content-Length` body), leaving the
/// connection open.
async fn read_answer(stream: &mut TcpStream) -> io::Result<RawAnswer> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_len = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_len]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP answer, got {head:?}"));
    let body_len: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_len + body_len {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buffer[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_len..head_len + body_len]).into_owned();
    Ok(RawAnswer { status, head, body })
}

/// `GET /health` on an open connection, keeping it alive.
async fn get_health(stream: &mut TcpStream) -> RawAnswer {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, read_answer(stream))
        .await
        .expect("an answer in time")
        .expect("an answer")
}

/// Waits until the server closes `stream`; returns how long that took and
/// what it sent meanwhile. Fails the test if it stays open for [`PATIENCE`].
async fn wait_for_close(stream: &mut TcpStream) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server closes the connection within {PATIENCE:?}"
    );
    (started.elapsed(), received)
}

#[tokio::test]
async fn http2_settings_limit_concurrent_streams() {
    let app = spawn_app().await;
    let mut stream = h2_connect(app.addr).await;
    let settings = tokio::time::timeout(PATIENCE, async {
        loop {
            let (kind, flags, payload) = h2_read_frame(&mut stream)
                .await
                .expect("the server answers HTTP/2");
            if kind == H2_SETTINGS && flags & H2_ACK == 0 {
                break payload;
            }
        }
    })
    .await
    .expect("the server sends its SETTINGS");
    let limit = settings
        .chunks_exact(6)
        .find(|entry| u16::from_be_bytes([entry[0], entry[1]]) == H2_MAX_CONCURRENT_STREAMS)
        .map(|entry| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
    assert_eq!(
        limit,
        Some(MAX_CONCURRENT_STREAMS),
        "SETTINGS_MAX_CONCURRENT_STREAMS is advertised"
    );
    assert!(
        limit.is_some_and(|n| (1..=64).contains(&n)),
        "a small limit: {limit:?}"
    );
}

#[tokio::test]
async fn http2_client_sending_more_requests_than_the_stream_limit_gets_every_answer() {
    let app = spawn_app().await;
    let (user, token) = app.user_with_token("h2c@example.com").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut requests = JoinSet::new();
    for _ in 0..MAX_CONCURRENT_STREAMS * 3 {
        let request = client.get(app.url("/api/v1/user")).bearer_auth(&token);
        requests.spawn(async move { request.send().await.unwrap() });
    }
    // The client queues what the limit does not let through yet.
    while let Some(response) = requests.join_next().await {
        let response = response.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["email"], user.email);
    }
}

#[tokio::test]
async fn unfinished_requests_are_cut_off_after_the_header_read_timeout() {
    let app = spawn_app_with(|s| s.header_read_timeout_ms = 300).await;
    let unfinished: [&[u8]; 4] = [
        b"",
        b"P",
        b"GET /hea",
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n",
    ];
    let mut clients = JoinSet::new();
    for sent in unfinished {
        let addr = app.addr;
        clients.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(sent).await.unwrap();
            let (after, received) = wait_for_close(&mut stream).await;
            (sent, after, received)
        });
    }
    while let Some(client) = clients.join_next().await {
        let (sent, after, received) = client.unwrap();
        let sent = String::from_utf8_lossy(sent);
        assert!(
            after >= Duration::from_millis(200),
            "{sent:?}: closed by the timeout, not at once ({after:?})"
        );
        assert!(
            received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
            "{sent:?}: nothing or a 408, got {:?}",
            String::from_utf8_lossy(&received)
        );
    }
    app.assert_still_serving().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|s| s.idle_timeout_ms = 400).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(get_health(&mut stream).await.status, 200);
    let (after, received) = wait_for_close(&mut stream).await;
    assert!(received.is_empty(), "nothing more is sent");
    assert!(
        after >= Duration::from_millis(300),
        "closed when idle, not at once ({after:?})"
    );
}

#[tokio::test]
async fn idle_http1_connection_is_closed_after_the_header_read_timeout() {
    // hyper times the wait for the next request's headers too.
    let app = spawn_app_with(|s| s.header_read_timeout_ms = 400).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(get_health(&mut stream).await.status, 200);
    let (after, received) = wait_for_close(&mut stream).await;
    assert!(received.is_empty(), "nothing more is sent");
    assert!(
        after >= Duration::from_millis(300),
        "closed when idle, not at once ({after:?})"
    );
}

#[tokio::test]
async fn idle_http2_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|s| s.idle_timeout_ms = 400).await;
    let mut stream = h2_connect(app.addr).await;
    let started = Instant::now();
    let mut goaway = false;
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some((kind, _, _)) = h2_read_frame(&mut stream).await {
            goaway |= kind == H2_GOAWAY;
        }
    })
    .await;
    assert!(ended.is_ok(), "the server closes the connection");
    assert!(goaway, "with a GOAWAY first");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed when idle, not at once"
    );
}

#[tokio::test]
async fn connection_in_use_stays_open_past_the_idle_timeout() {
    let app = spawn_app_with(|s| s.idle_timeout_ms = 400).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // Eight requests 100 ms apart: 800 ms in all, never 400 ms quiet.
    for _ in 0..8 {
        assert_eq!(get_health(&mut stream).await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get_health(&mut stream).await.status, 200);
}

/// `tokengate serve` as a child process whose file limit is `limit`.
fn serve_with_fd_limit(dir: &Path, limit: u64) -> ServerProcess {
    let mut command = tokengate(dir);
    command
        .args(["serve", "--database", "t.db", "--bind", "127.0.0.1:0"])
        .args(["--jwt-secret", TEST_SECRET]);
    // SAFETY: only setrlimit runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ServerProcess::start(command)
}

/// CPU time (user + system) the process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After "pid (name) ": state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// Opens `count` connections that each send an unfinished request and hold it.
async fn hold_unfinished_requests(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    held
}

/// Asserts that the server's CPU use stays low for a second and a half:
/// it waits for connections instead of retrying `accept` in a loop.
async fn assert_not_spinning(pid: u32) {
    let window = Duration::from_millis(1500);
    let before = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    let used = cpu_seconds(pid) - before;
    assert!(
        used < window.as_secs_f64() / 4.0,
        "the server used {used:.2} s of CPU in {window:?} while out of connections"
    );
}

/// The flood from `held` is over: a new connection is served again.
async fn assert_serves_again(url: &str, held: Vec<TcpStream>) {
    drop(held);
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let mut stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connects in time")
        .unwrap();
    assert_eq!(get_health(&mut stream).await.status, 200);
}

#[tokio::test]
async fn flood_of_connections_under_a_low_file_limit_neither_spins_nor_stops_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_fd_limit(dir.path(), 64);
    let addr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut open_before = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_health(&mut open_before).await.status, 200);

    // More connections than the process has file descriptors.
    let held = hold_unfinished_requests(addr, 100).await;
    assert_not_spinning(server.pid()).await;
    assert_eq!(
        get_health(&mut open_before).await.status,
        200,
        "a connection opened before the flood is still served"
    );
    assert_serves_again(&server.url, held).await;
    drop(open_before);
    let (output, log) = server.terminate_with_log();
    assert!(output.status.success());
    assert!(
        !log.iter()
            .any(|line| line.contains("cannot accept connections")),
        "the connection cap kept descriptors free, so accept never failed: {log:?}"
    );
}

#[tokio::test]
async fn accept_failing_for_lack_of_file_descriptors_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_fd_limit(dir.path(), 64);
    let pid = server.pid();
    let addr = server.url.trim_start_matches("http://").parse().unwrap();
    let mut open_before = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_health(&mut open_before).await.status, 200);

    // Lower the running server's limit to just above what it has open, so
    // `accept` itself fails (EMFILE) well below the connection cap.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let lowered = libc::rlimit {
        rlim_cur: open + 2,
        rlim_max: 64,
    };
    // SAFETY: prlimit reads `lowered` and writes nothing (old limit: null).
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lowered,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", io::Error::last_os_error());

    let held = hold_unfinished_requests(addr, 30).await;
    assert_not_spinning(pid).await;
    assert_eq!(
        get_health(&mut open_before).await.status,
        200,
        "a connection opened before the failures is still served"
    );
    assert_serves_again(&server.url, held).await;
    drop(open_before);
    let (output, log) = server.terminate_with_log();
    assert!(output.status.success());
    assert!(
        log.iter()
            .any(|line| line.contains("cannot accept connections")),
        "accept did fail (EMFILE) and the failure was logged: {log:?}"
    );
}

/// The head of a `POST` of JSON to `path` with the given framing header.
fn post_head(path: &str, framing: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         {framing}\r\n\r\n"
    )
    .into_bytes()
}

/// A request with a 100 KiB body, as the pieces a client writes one after
/// the other (the head, then 4 KiB blocks), split where the server has
/// enough to answer `413`: with `Content-Length` after the head, chunked
/// after 68 KiB of chunks.
struct Oversized {
    framing: &'static str,
    before_answer: Vec<Vec<u8>>,
    after_answer: Vec<Vec<u8>>,
}

fn oversized_requests(path: &str) -> [Oversized; 2] {
    let block = vec![b'x'; 4096];
    let mut chunk = b"1000\r\n".to_vec();
    chunk.extend_from_slice(&block);
    chunk.extend_from_slice(b"\r\n");
    let mut chunked_before = vec![post_head(path, "Transfer-Encoding: chunked")];
    chunked_before.extend((0..17).map(|_| chunk.clone()));
    let mut chunked_after: Vec<Vec<u8>> = (17..25).map(|_| chunk.clone()).collect();
    chunked_after.push(b"0\r\n\r\n".to_vec());
    [
        Oversized {
            framing: "Content-Length",
            before_answer: vec![post_head(path, "Content-Length: 102400")],
            after_answer: (0..25).map(|_| block.clone()).collect(),
        },
        Oversized {
            framing: "chunked",
            before_answer: chunked_before,
            after_answer: chunked_after,
        },
    ]
}

/// Sends `pieces` in order; a reset on the way fails the test, since such a
/// client never reads the answer.
async fn send_pieces(stream: &mut TcpStream, pieces: &[Vec<u8>], what: &str) {
    for piece in pieces {
        stream
            .write_all(piece)
            .await
            .unwrap_or_else(|e| panic!("{what}: the request was cut off: {e}"));
    }
}

// Several threads, so the server answers while the client is still sending,
// as it does over a network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_sent_in_full_before_reading_always_gets_its_413() {
    let app = spawn_app().await;
    for round in 0..20 {
        for request in oversized_requests("/api/v1/register") {
            for answer_first in [false, true] {
                let what = format!(
                    "{}, round {round}, {}",
                    request.framing,
                    if answer_first {
                        "rest sent after the answer came"
                    } else {
                        "sent at once"
                    }
                );
                let mut stream = TcpStream::connect(app.addr).await.unwrap();
                // The whole request first, as a simple client does; then the answer.
                send_pieces(&mut stream, &request.before_answer, &what).await;
                if answer_first {
                    // A client on a slow link: the server has answered (and,
                    // without lingering, closed) before the rest goes out.
                    tokio::time::timeout(PATIENCE, stream.readable())
                        .await
                        .expect("an answer in time")
                        .unwrap();
                }
                send_pieces(&mut stream, &request.after_answer, &what).await;
                let answer = tokio::time::timeout(PATIENCE, read_answer(&mut stream))
                    .await
                    .expect("an answer in time")
                    .unwrap_or_else(|e| panic!("{what}: the 413 was lost: {e}"));
                assert_eq!(answer.status, 413, "{what}: {}", answer.head);
                let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
                assert_eq!(body["error"], "payload_too_large");
            }
        }
    }
    app.assert_still_serving().await;
}

#[tokio::test]
async fn token_and_user_answers_must_not_be_stored() {
    let app = spawn_app().await;
    let no_store = |response: &reqwest::Response, what: &str| {
        assert_eq!(
            response
                .headers()
                .get(CACHE_CONTROL)
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "Cache-Control of {what}"
        );
    };
    let response = app
        .register("Ada", "ada@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    no_store(&response, "register");

    let response = app.login("ada@example.com", crate::helpers::PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    no_store(&response, "a successful login");
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();

    let response = app.login("ada@example.com", "a wrong password").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    no_store(&response, "a failed login");

    let response = app.current_user_with(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    no_store(&response, "GET /api/v1/user");
}

#[tokio::test]
async fn every_answer_forbids_content_sniffing() {
    const SPA: &str = "http://localhost:5173";
    let app = spawn_app_with(|s| s.cors_origins = vec![SPA.to_owned()]).await;
    let answers = [
        ("/health", StatusCode::OK, app.get("/health").await),
        ("404", StatusCode::NOT_FOUND, app.get("/nope").await),
        (
            "405",
            StatusCode::METHOD_NOT_ALLOWED,
            app.get("/api/v1/login").await,
        ),
        (
            "413",
            StatusCode::PAYLOAD_TOO_LARGE,
            app.post_raw(
                "/api/v1/login",
                Some("application/json"),
                vec![b' '; 70 * 1024],
            )
            .await,
        ),
        (
            "401",
            StatusCode::UNAUTHORIZED,
            app.current_user(None).await,
        ),
        ("/docs", StatusCode::OK, app.get("/docs").await),
        (
            "/openapi.json",
            StatusCode::OK,
            app.get("/openapi.json").await,
        ),
        (
            "preflight",
            StatusCode::NO_CONTENT,
            app.client
                .request(Method::OPTIONS, app.url("/api/v1/logout"))
                .header(ORIGIN, SPA)
                .header("Access-Control-Request-Method", "DELETE")
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (what, status, response) in answers {
        assert_eq!(response.status(), status, "{what}");
        assert_eq!(
            response
                .headers()
                .get(X_CONTENT_TYPE_OPTIONS)
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "X-Content-Type-Options of {what}"
        );
    }
}

#[tokio::test]
async fn error_answers_are_not_stored_either() {
    let app = spawn_app().await;
    let response = app.get("/nope").await;
    assert_eq!(
        response
            .headers()
            .get(CACHE_CONTROL)
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

/// The `(tag, attributes)` of every `<script>`, `<style>` and `<link>` of a
/// page, skipping the contents of scripts and styles.
fn resource_tags(html: &str) -> Vec<(&str, &str)> {
    let mut tags = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '>')
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let Some(tag_end) = rest.find('>') else { break };
        let attributes = &rest[name_end..tag_end];
        rest = &rest[tag_end + 1..];
        match name.to_ascii_lowercase().as_str() {
            tag @ ("script" | "style") => {
                tags.push((if tag == "script" { "script" } else { "style" }, attributes));
                let close = format!("</{tag}>");
                let end = rest.find(&close).unwrap_or(rest.len());
                rest = &rest[end..];
            }
            "link" => tags.push(("link", attributes)),
            _ => {}
        }
    }
    tags
}

#[tokio::test]
async fn docs_page_may_not_be_framed_and_runs_only_its_own_code() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(
        headers.get(X_FRAME_OPTIONS).map(|v| v.to_str().unwrap()),
        Some("DENY")
    );
    let policy = headers
        .get(CONTENT_SECURITY_POLICY)
        .expect("a Content-Security-Policy")
        .to_str()
        .unwrap()
        .to_owned();
    let directive = |name: &str| -> Vec<String> {
        policy
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(name).filter(|v| v.starts_with(' ')))
            .unwrap_or_else(|| panic!("{name} in {policy:?}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(directive("frame-ancestors"), ["'none'"]);
    assert_eq!(directive("default-src"), ["'self'"]);
    // Swagger UI is served inline by poem-openapi: allowed, and nothing else.
    assert_eq!(directive("script-src"), ["'self'", "'unsafe-inline'"]);
    assert_eq!(directive("style-src"), ["'self'", "'unsafe-inline'"]);

    let html = response.text().await.unwrap();
    let tags = resource_tags(&html);
    assert!(
        tags.iter().filter(|(tag, _)| *tag == "script").count() >= 2
            && tags.iter().any(|(tag, _)| *tag == "style"),
        "the page has its scripts and styles: {tags:?}"
    );
    for (tag, attributes) in tags {
        for attribute in ["src=", "href="] {
            if let Some(at) = attributes.find(attribute) {
                let value = attributes[at + attribute.len()..].trim_start_matches(['"', '\'']);
                assert!(
                    value.starts_with('/') && !value.starts_with("//"),
                    "<{tag}{attributes}> loads from this origin only"
                );
            }
        }
    }
}
