//! Holding under attack: bounded password-hashing work, login throttling
//! under concurrency, bounded throttle memory, and client addresses behind
//! trusted proxies.
//!
//! These tests run the server in-process and look at its shared state
//! (hashes running, throttle sizes) through [`Application::state`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;
use tokengate::config::Settings;
use tokengate::startup::Application;
use tokengate::state::AppState;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{assert_error, test_settings, PASSWORD};

/// A server running in this test's runtime, with a handle on its state.
struct App {
    addr: SocketAddr,
    state: Arc<AppState>,
    client: reqwest::Client,
    _dir: TempDir,
    _shutdown: oneshot::Sender<()>,
}

async fn spawn(configure: impl FnOnce(&mut Settings)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    configure(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("the server starts");
    let addr = app.local_addr();
    let state = app.state();
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stop.await;
    }));
    App {
        addr,
        state,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        _dir: dir,
        _shutdown: shutdown,
    }
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Sends a login from a task of its own, so many can be in flight.
    fn spawn_login(&self, email: &str, password: &str) -> JoinHandle<reqwest::Response> {
        let request = self
            .client
            .post(self.url("/api/v1/login"))
            .json(&json!({"email": email, "password": password}));
        tokio::spawn(async move { request.send().await.unwrap() })
    }

    async fn register(&self, email: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/register"))
            .json(&json!({"name": "Ada", "email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
    }
}

/// Polls `condition` until it holds; fails the test after a minute.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A login request as raw HTTP/1.1 bytes.
fn raw_login(email: &str) -> Vec<u8> {
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: tokengate\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Asserts `503 service_unavailable` with a JSON body and a `Retry-After`
/// of a few seconds.
async fn assert_busy(response: reqwest::Response) {
    let (headers, _) = assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    let retry_after: u64 = headers
        .get(RETRY_AFTER)
        .expect("a busy 503 has Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
}

/// Occupies every hashing slot and queue place of `app` with jobs that
/// block until the returned sender is dropped.
async fn fill_the_hasher(app: &App) -> std::sync::mpsc::Sender<()> {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let hasher = &app.state.passwords;
    for _ in 0..hasher.concurrency() + hasher.queue() {
        let gate = gate.clone();
        let state = app.state.clone();
        tokio::spawn(async move {
            state
                .passwords
                .run_limited(move || {
                    // Returns once the sender is gone.
                    let _ = gate.lock().unwrap().recv();
                })
                .await
        });
    }
    wait_until("the hasher is full", || {
        hasher.running() == hasher.concurrency() && hasher.waiting() == hasher.queue()
    })
    .await;
    release
}

#[tokio::test]
async fn logins_dropped_mid_hash_keep_their_slot_until_the_hash_ends() {
    let app = spawn(|s| s.login_max_failures_per_client = 10_000).await;
    let hasher = &app.state.passwords;
    let limit = hasher.concurrency();

    // Fill every slot with logins whose clients then reset their connections
    // (as a reset HTTP/2 stream would): the server drops those requests.
    let mut gone = Vec::new();
    for i in 0..limit {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(&raw_login(&format!("gone{i}@example.com")))
            .await
            .unwrap();
        // A zero linger sends a reset on drop (and does not block).
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
        gone.push(stream);
    }
    wait_until("their hashes have started", || {
        hasher.started() >= limit as u64
    })
    .await;
    drop(gone);

    // More logins now: they must wait for those hashes, not run beside them.
    let logins: Vec<_> = (0..2 * limit)
        .map(|i| app.spawn_login(&format!("next{i}@example.com"), PASSWORD))
        .collect();
    for login in logins {
        assert_eq!(login.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    wait_until("every hash has ended", || hasher.running() == 0).await;

    assert!(
        hasher.peak_running() <= limit,
        "{} hashes ran at once with a limit of {limit}",
        hasher.peak_running()
    );
    assert_eq!(hasher.started(), 3 * limit as u64, "every hash ran");
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after_at_once_and_recovers() {
    let app = spawn(|s| {
        s.password_hash_queue = Some(2);
        s.login_max_failures_per_client = 10_000;
    })
    .await;
    assert_eq!(
        app.register("ada@example.com").await.status(),
        StatusCode::CREATED
    );
    let release = fill_the_hasher(&app).await;

    // Nothing can be hashed until `release` is dropped, so each of these
    // answers without waiting for a slot.
    let logins: Vec<_> = (0..40)
        .map(|i| app.spawn_login(&format!("burst{i}@example.com"), PASSWORD))
        .collect();
    for login in logins {
        assert_busy(login.await.unwrap()).await;
    }
    assert_busy(app.login("ada@example.com", PASSWORD).await).await;
    assert_busy(app.register("bob@example.com").await).await;
    assert_eq!(
        app.state.passwords.running(),
        app.state.passwords.concurrency()
    );

    drop(release);
    wait_until("the blocking jobs have ended", || {
        app.state.passwords.running() == 0
    })
    .await;
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.register("bob@example.com").await.status(),
        StatusCode::CREATED
    );
}

#[test]
fn document_shows_503_with_retry_after_on_login_and_register() {
    let doc: serde_json::Value = serde_json::from_str(&tokengate::api::service().spec()).unwrap();
    for path in ["/api/v1/login", "/api/v1/register"] {
        let busy = &doc["paths"][path]["post"]["responses"]["503"];
        assert!(busy.is_object(), "503 documented on {path}");
        let has_retry_after = busy["headers"]
            .as_object()
            .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("retry-after")));
        assert!(
            has_retry_after,
            "503 on {path} documents Retry-After: {busy}"
        );
    }
}

#[tokio::test]
async fn thousands_of_distinct_emails_keep_the_throttle_within_its_key_limit() {
    let app = spawn(|s| {
        s.login_throttle_keys = 100;
        s.login_max_failures_per_client = 1_000_000;
    })
    .await;
    // With the hasher full, each login is counted as a failure and refused
    // at once (503), so the flood costs no argon2 time.
    let release = fill_the_hasher(&app).await;
    let long_local = "x".repeat(50);
    for batch in 0..40 {
        let logins: Vec<_> = (0..50)
            .map(|i| {
                let email = format!("{long_local}{batch}-{i}@{}.example.com", "d".repeat(60));
                app.spawn_login(&email, PASSWORD)
            })
            .collect();
        for login in logins {
            assert_busy(login.await.unwrap()).await;
        }
        let tracked = app.state.throttle.tracked();
        assert!(tracked.emails <= 100, "after batch {batch}: {tracked:?}");
        assert_eq!(tracked.clients, 1, "{tracked:?}");
    }
    assert!(app.state.throttle.tracked().emails > 0);
    drop(release);
}

#[tokio::test]
async fn an_over_long_login_email_is_refused_before_the_throttle_and_argon2() {
    let app = spawn(|_| {}).await;
    for email in [
        format!("{}@example.com", "a".repeat(60_000)),
        format!("{}@example.com", "a".repeat(250)),
        "Anyone <ada@example.com>".to_owned(),
    ] {
        let response = app.login(&email, PASSWORD).await;
        let (_, body) = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(body["fields"]["email"].is_array(), "{body}");
    }
    let tracked = app.state.throttle.tracked();
    assert_eq!((tracked.emails, tracked.clients), (0, 0), "nothing counted");
    assert_eq!(app.state.passwords.started(), 0, "nothing hashed");
}

#[test]
fn a_bad_trusted_proxy_network_stops_the_start_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let start = |flag: Option<&str>, env: Option<&str>| {
        let mut command = crate::helpers::tokengate(dir.path());
        command.args(["serve", "--bind", "127.0.0.1:0", "--database", "t.db"]);
        if let Some(value) = flag {
            command.args(["--trusted-proxies", value]);
        }
        if let Some(value) = env {
            command.env("TOKENGATE_TRUSTED_PROXIES", value);
        }
        let child = command.spawn().unwrap();
        crate::helpers::wait_with_deadline(child, crate::helpers::PROCESS_DEADLINE)
    };
    for (flag, env, bad) in [
        (Some("10.0.0.0/33"), None, "10.0.0.0/33"),
        (Some("127.0.0.1/32,proxy.internal"), None, "proxy.internal"),
        (None, Some("::1/128, 10.0.0.0/8, ::1/200"), "::1/200"),
    ] {
        let output = start(flag, env);
        assert!(!output.status.success(), "{bad} is refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("--trusted-proxies") && first.contains(bad),
            "the first line names the flag and the value: {stderr}"
        );
    }
}

#[test]
fn trusted_proxies_are_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = crate::helpers::tokengate(dir.path());
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--database", "t.db"])
        .args(["--jwt-secret", crate::helpers::TEST_SECRET])
        .args(["--login-max-failures-per-client", "1"])
        .env("TOKENGATE_TRUSTED_PROXIES", "127.0.0.1/32, ::1/128");
    let server = crate::helpers::ServerProcess::start(command);
    let client = reqwest::Client::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses: Vec<StatusCode> = runtime.block_on(async {
        let mut statuses = Vec::new();
        for forwarded_for in ["203.0.113.1", "203.0.113.2", "203.0.113.1"] {
            let response = client
                .post(format!("{}/api/v1/login", server.url))
                .header("X-Forwarded-For", forwarded_for)
                .json(&json!({"email": "nobody@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            statuses.push(response.status());
        }
        statuses
    });
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "each forwarded client has its own count"
    );
    server.terminate();
}
