//! Starting a test server and talking to it.
//!
//! Every test gets its own server, bound to `127.0.0.1:0`, on its own
//! database in a fresh temporary directory, signing with [`TEST_SECRET`] so
//! tests can forge tokens. The server runs in the test's runtime until
//! [`TestApp::stop`] (or the end of the test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokengate::config::{JwtAlgorithm, Secret, Settings};
use tokengate::startup::Application;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The signing secret of every test server (at least 32 bytes).
pub const TEST_SECRET: &str = "tokengate-integration-tests-secret-0123456789";

/// The `iss` and `aud` of the default settings.
pub const ISSUER: &str = "tokengate";
pub const AUDIENCE: &str = "tokengate";

/// The challenge of `unauthenticated` and `invalid_credentials` answers.
pub const PLAIN_CHALLENGE: &str = "Bearer realm=\"tokengate\"";

/// The start of the challenge of `invalid_token` answers.
pub const INVALID_TOKEN_CHALLENGE_PREFIX: &str =
    "Bearer realm=\"tokengate\", error=\"invalid_token\", error_description=\"";

/// A password that satisfies the rules.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running test server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// A client with no default headers.
    pub client: reqwest::Client,
    /// The settings the server was started with.
    pub settings: Settings,
    dir: TempDir,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

/// A stopped test server whose database directory is kept, to restart on it.
pub struct StoppedApp {
    /// The settings the server ran with.
    pub settings: Settings,
    dir: TempDir,
}

/// A registered user and the password it was registered with.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub password: String,
}

/// Settings for a test server on a database inside `dir` (SQLite), or on
/// a new database of the shared PostgreSQL server for tests running on it
/// (see [`engine`]).
pub fn test_settings(dir: &Path) -> Settings {
    let database = match engine() {
        Engine::Sqlite => dir.join("tokengate.db"),
        Engine::Postgres => {
            let pg = postgres().expect("PostgreSQL is running");
            PathBuf::from(pg.url(&pg.create_database()))
        }
    };
    // With PostgreSQL there is no database file to keep keys beside.
    let keys_dir = settings_keys_dir(&database, dir);
    Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        database,
        jwt_secret: Some(Secret::new(TEST_SECRET)),
        keys_dir,
        ..Settings::default()
    }
}

fn settings_keys_dir(database: &Path, dir: &Path) -> Option<PathBuf> {
    let url = database
        .to_str()
        .is_some_and(tokengate::config::is_postgres_url);
    url.then(|| dir.join("keys"))
}

/// Starts a server with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server on `database` (a path or URL) with the test defaults
/// changed by `configure`.
pub async fn spawn_app_on(database: &str, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut settings = test_settings(dir.path());
    settings.database = PathBuf::from(database);
    configure(&mut settings);
    start(settings, dir).await
}

/// How often test servers with signing keys re-read their keys directory
/// (milliseconds), so tests see a rotation quickly.
pub const TEST_KEYS_RELOAD_MS: u64 = 50;

/// Starts a server signing with `algorithm`: with EdDSA/ES256, its keys are
/// in `<dir>/keys` (see [`TestApp::keys_dir`]), generated at start and
/// re-read every [`TEST_KEYS_RELOAD_MS`].
pub async fn spawn_app_with_algorithm(algorithm: JwtAlgorithm) -> TestApp {
    spawn_app_with(|s| {
        s.jwt_algorithm = algorithm;
        s.keys_reload_ms = TEST_KEYS_RELOAD_MS;
    })
    .await
}

/// Starts a server with the test defaults changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut settings = test_settings(dir.path());
    configure(&mut settings);
    start(settings, dir).await
}

async fn start(settings: Settings, dir: TempDir) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("the test server starts");
    let addr = app.local_addr();
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = shutdown_rx.await;
    }));
    TestApp {
        address: format!("http://{addr}"),
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        settings,
        dir,
        shutdown,
        server,
    }
}

impl StoppedApp {
    /// Starts a new server on the same database and settings (new port).
    pub async fn restart(self) -> TestApp {
        start(self.settings, self.dir).await
    }
}

impl TestApp {
    /// Stops the server and waits until it has finished.
    pub async fn stop(self) -> StoppedApp {
        drop(self.client);
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(60), self.server)
            .await
            .expect("the server stops within a minute")
            .expect("the server task does not panic")
            .expect("the server stops without an I/O error");
        StoppedApp {
            settings: self.settings,
            dir: self.dir,
        }
    }

    /// The temporary directory holding the database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The signing keys directory (used with EdDSA/ES256).
    pub fn keys_dir(&self) -> PathBuf {
        self.settings.keys_dir_path()
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.settings.database.clone()
    }

    /// A direct connection to the server's database (either engine).
    pub fn db(&self) -> TestDb {
        if let Some(url) = self.settings.database_url() {
            return TestDb::Postgres(url.to_owned());
        }
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        TestDb::Sqlite(conn)
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST` with a raw body and the given content type (none if `None`).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request.send().await.unwrap()
    }

    pub async fn register(&self, name: &str, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/register",
            &json!({"name": name, "email": email, "password": password}),
        )
        .await
    }

    /// Registers `email` with [`PASSWORD`] and checks it worked.
    pub async fn register_user(&self, email: &str) -> TestUser {
        let name = "Test User";
        let response = self.register(name, email, PASSWORD).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "registering {email}"
        );
        let body: Value = response.json().await.unwrap();
        TestUser {
            id: body["id"].as_i64().expect("id is an integer"),
            name: name.to_owned(),
            email: email.to_lowercase(),
            password: PASSWORD.to_owned(),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Logs `user` in and returns the access token.
    pub async fn login_token(&self, user: &TestUser) -> String {
        let response = self.login(&user.email, &user.password).await;
        assert_eq!(response.status(), StatusCode::OK, "logging in {user:?}");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Registers `email` and logs it in.
    pub async fn user_with_token(&self, email: &str) -> (TestUser, String) {
        let user = self.register_user(email).await;
        let token = self.login_token(&user).await;
        (user, token)
    }

    /// `GET /api/v1/user` with the given `Authorization` header (none if `None`).
    pub async fn current_user(&self, authorization: Option<&str>) -> Response {
        let mut request = self.client.get(self.url("/api/v1/user"));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request.send().await.unwrap()
    }

    /// `GET /api/v1/user` with `Bearer <token>`.
    pub async fn current_user_with(&self, token: &str) -> Response {
        self.current_user(Some(&format!("Bearer {token}"))).await
    }

    /// `DELETE /api/v1/logout` with the given `Authorization` header.
    pub async fn logout(&self, authorization: Option<&str>) -> Response {
        let mut request = self.client.delete(self.url("/api/v1/logout"));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request.send().await.unwrap()
    }

    /// `DELETE /api/v1/logout` with `Bearer <token>`.
    pub async fn logout_with(&self, token: &str) -> Response {
        self.logout(Some(&format!("Bearer {token}"))).await
    }

    /// Asserts that the server still answers `/health` with 200.
    pub async fn assert_still_serving(&self) {
        let response = self.get("/health").await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the server keeps serving"
        );
    }
}

/// Asserts an error answer: status, JSON content type, `error` code and a
/// non-empty `message`. Returns the headers and the body.
pub async fn assert_error(
    response: Response,
    status: StatusCode,
    code: &str,
) -> (reqwest::header::HeaderMap, Value) {
    let headers = response.headers().clone();
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "status; body: {text}");
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "an error has a JSON content type, got {content_type:?}; body: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("an error body is JSON ({e}): {text}"));
    assert_eq!(body["error"], code, "error code; body: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error has a message; body: {body}");
    (headers, body)
}

/// Asserts `401 unauthenticated` with the plain challenge.
pub async fn assert_unauthenticated(response: Response) -> Value {
    let (headers, body) = assert_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(
        challenge(&headers).as_deref(),
        Some(PLAIN_CHALLENGE),
        "WWW-Authenticate of an unauthenticated request"
    );
    body
}

/// Asserts `401 invalid_token` with the invalid_token challenge. Returns the
/// challenge's `error_description`.
pub async fn assert_invalid_token(response: Response) -> String {
    let (headers, _) = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let challenge = challenge(&headers).expect("a 401 has a WWW-Authenticate header");
    let description = challenge
        .strip_prefix(INVALID_TOKEN_CHALLENGE_PREFIX)
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("invalid_token challenge, got {challenge:?}"));
    assert!(
        !description.is_empty() && !description.contains('"'),
        "error_description is a non-empty quoted string: {challenge:?}"
    );
    description.to_owned()
}

/// The `WWW-Authenticate` header, if any.
pub fn challenge(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Unix time now, in seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a token tokengate would accept for user `sub`.
pub fn valid_claims(sub: i64) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub.to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": format!("forged-{}", rand_suffix()),
    })
}

/// Signs `claims` with `algorithm` (an HMAC one) and `secret`.
pub fn forge_with(algorithm: Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Signs `claims` with HS256 and the test secret, as the server would.
pub fn forge(claims: &Value) -> String {
    forge_with(Algorithm::HS256, TEST_SECRET.as_bytes(), claims)
}

/// Base64url without padding, as in JWTs.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

/// The claims of a compact JWT, without checking anything.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&unb64(payload)).unwrap()
}

/// A JWT with this raw header JSON and claims, signed with HS256 and the
/// test secret whatever the header says.
pub fn forge_raw_header(header: &Value, claims: &Value) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

fn rand_suffix() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    b64(&bytes)
}

/// The `tokengate` binary, with no `TOKENGATE_*` variable inherited and
/// `dir` as working directory.
pub fn tokengate(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOKENGATE_") {
            command.env_remove(name);
        }
    }
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for a child process to exit, at most `limit`; kills it and fails
/// the test if it does not.
pub fn wait_with_deadline(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the process did not exit within {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a child process may take to start or to stop.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// A `tokengate` server running as a child process, its log drained.
pub struct ServerProcess {
    /// `None` once stopped; a server still running when this is dropped (a
    /// failing test) is killed, so no test leaves servers behind.
    child: Option<std::process::Child>,
    /// `http://ADDR`, read from its "listening on" log line.
    pub url: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl ServerProcess {
    /// `tokengate serve` on `dir/t.db`, port 0, with the test secret.
    pub fn serve(dir: &Path) -> Self {
        let mut command = tokengate(dir);
        command
            .args(["serve", "--database", "t.db", "--bind", "127.0.0.1:0"])
            .args(["--jwt-secret", TEST_SECRET]);
        Self::start(command)
    }

    /// `tokengate serve` on `database` (a path or URL), port 0, with the
    /// test secret and `extra` arguments.
    pub fn serve_database(dir: &Path, database: &str, extra: &[&str]) -> Self {
        let mut command = tokengate(dir);
        command
            .args(["serve", "--database", database, "--bind", "127.0.0.1:0"])
            .args(["--jwt-secret", TEST_SECRET])
            .args(extra);
        Self::start(command)
    }

    /// Starts `command` and waits (boundedly) for its "listening on" line.
    pub fn start(mut command: Command) -> Self {
        use std::io::BufRead;
        let mut child = command.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (lines_tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the start so the server never blocks on logging.
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + PROCESS_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match log.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, rest)) = line.split_once("listening on http://") {
                        let address = rest.split_whitespace().next().unwrap();
                        return Self {
                            url: format!("http://{address}"),
                            child: Some(child),
                            log,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let output = child.wait_with_output().unwrap();
                    panic!(
                        "the server did not start: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
    }

    /// Waits (at most `limit`) for a log line containing `needle` and returns
    /// it; lines before it are consumed. Fails the test if none comes.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?} within {limit:?}"),
            }
        }
    }

    /// The process id, e.g. to read `/proc/<pid>/stat`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and returns how the process ended.
    pub fn terminate(self) -> std::process::Output {
        self.terminate_with_log().0
    }

    /// Sends SIGTERM; returns how the process ended and every log line it
    /// wrote after its "listening on" line.
    pub fn terminate_with_log(mut self) -> (std::process::Output, Vec<String>) {
        let child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let output = wait_with_deadline(child, PROCESS_DEADLINE);
        // The drain thread ends with stdout; collect what it forwarded.
        (output, self.log.iter().collect())
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An access token and the refresh token of its session.
#[derive(Debug, Clone)]
pub struct Pair {
    pub access: String,
    pub refresh: String,
}

impl Pair {
    /// Reads a `Token` body, asserting both tokens are there.
    pub fn from_body(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }

    /// The `sid` of the access token.
    pub fn sid(&self) -> String {
        claims_of(&self.access)["sid"]
            .as_str()
            .expect("a sid")
            .to_owned()
    }
}

impl TestApp {
    /// Logs `user` in and returns the pair.
    pub async fn login_pair(&self, user: &TestUser) -> Pair {
        let response = self.login(&user.email, &user.password).await;
        assert_eq!(response.status(), StatusCode::OK, "logging in {user:?}");
        Pair::from_body(&response.json().await.unwrap())
    }

    /// `POST /api/v1/token/refresh` with `{"refresh_token": token}`.
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json(
            "/api/v1/token/refresh",
            &json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Refreshes and asserts `200`; returns the new pair.
    pub async fn refresh_pair(&self, refresh_token: &str) -> Pair {
        let response = self.refresh(refresh_token).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "refresh: {body}");
        Pair::from_body(&body)
    }

    /// `DELETE /api/v1/logout?<query>` with `Bearer <token>`.
    pub async fn logout_query(&self, token: &str, query: &str) -> Response {
        self.client
            .delete(self.url(&format!("/api/v1/logout?{query}")))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }

    /// `GET /api/v1/sessions` with `Bearer <token>`.
    pub async fn sessions(&self, token: &str) -> Response {
        self.client
            .get(self.url("/api/v1/sessions"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }

    /// `DELETE /api/v1/sessions/{id}` with `Bearer <token>` (`id` is put in
    /// the path as given, percent-encoded).
    pub async fn delete_session(&self, token: &str, id: &str) -> Response {
        let encoded: String = id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        self.client
            .delete(self.url(&format!("/api/v1/sessions/{encoded}")))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }

    /// `PUT /api/v1/user/password` with `Bearer <token>`.
    pub async fn change_password(&self, token: &str, current: &str, new: &str) -> Response {
        self.client
            .put(self.url("/api/v1/user/password"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
            .await
            .unwrap()
    }

    /// Asserts the access token is accepted (`GET /api/v1/user` is 200).
    pub async fn assert_accepted(&self, token: &str) {
        let response = self.current_user_with(token).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "token should be accepted: {text}");
    }

    /// Asserts the access token is refused with `401 invalid_token`.
    pub async fn assert_refused(&self, token: &str) {
        assert_invalid_token(self.current_user_with(token).await).await;
    }

    /// Asserts the refresh token is refused with `401 invalid_grant`.
    pub async fn assert_grant_refused(&self, refresh_token: &str) {
        assert_invalid_grant(self.refresh(refresh_token).await).await;
    }
}

/// Asserts `401 invalid_grant` with the plain challenge.
pub async fn assert_invalid_grant(response: Response) {
    let (headers, _) = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_grant").await;
    assert_eq!(challenge(&headers).as_deref(), Some(PLAIN_CHALLENGE));
}

// ---------------------------------------------------------------------------
// Engines: every test module included under `on_postgres` (see `main.rs`)
// runs its tests against PostgreSQL; everything else against SQLite.

/// Which storage engine a test's servers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The engine of the running test: PostgreSQL for tests under the
/// `on_postgres` module (libtest names each test's thread after its path),
/// when PostgreSQL's binaries are installed.
pub fn engine() -> Engine {
    let on_postgres = std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with("on_postgres::"));
    if on_postgres && postgres().is_some() {
        Engine::Postgres
    } else {
        Engine::Sqlite
    }
}

/// Whether a test of SQLite's own layout (the denylist's log and merges),
/// included with its module under `on_postgres`, runs on PostgreSQL now and
/// should return at once.
pub fn on_postgres_skip_sqlite_layout() -> bool {
    engine() == Engine::Postgres
}

/// A PostgreSQL server of the test run: `initdb` into a temporary directory
/// (as the `postgres` user when running as root), `pg_ctl start` on a free
/// port. `fsync` stays on: the durability tests need it. Stopped when
/// dropped, at exit (the shared one) and, should the test process die, by a
/// watchdog that waits for it.
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    dir: Option<TempDir>,
}

/// The password of the `pw_user` role (scram-sha-256 over TCP).
pub const PG_PASSWORD: &str = "pw-Secret-4711-do-not-log";

static SHARED_PG: std::sync::OnceLock<Option<PgServer>> = std::sync::OnceLock::new();
static SHARED_PG_DATA: std::sync::OnceLock<(PathBuf, PathBuf, PathBuf)> =
    std::sync::OnceLock::new();
static DATABASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Debian's PostgreSQL binaries (the newest installed version), if any.
pub fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The shared server of this test run, started on first use; `None` (said
/// once, in one line) when PostgreSQL is not installed.
pub fn postgres() -> Option<&'static PgServer> {
    SHARED_PG
        .get_or_init(|| match PgServer::start() {
            Ok(server) => {
                let _ = SHARED_PG_DATA.set((
                    server.bin.clone(),
                    server.data.clone(),
                    server.dir.as_ref().unwrap().path().to_owned(),
                ));
                // SAFETY: registers a plain function to run at exit.
                unsafe { libc::atexit(stop_shared_pg) };
                Some(server)
            }
            Err(why) => {
                eprintln!("PostgreSQL half skipped (its tests run on SQLite instead): {why}");
                None
            }
        })
        .as_ref()
}

extern "C" fn stop_shared_pg() {
    if let Some((bin, data, dir)) = SHARED_PG_DATA.get() {
        let _ = pg_ctl_stop(bin, data);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn pg_ctl_stop(bin: &Path, data: &Path) -> std::io::Result<std::process::Output> {
    as_postgres(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(data)
        .args(["stop", "-m", "immediate", "-w"])
        .stdin(Stdio::null())
        .output()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// A new server of its own (about 2 s), for tests that stop it.
    pub fn start() -> Result<Self, String> {
        let bin = pg_bin().ok_or("no PostgreSQL binaries in /usr/lib/postgresql/*/bin")?;
        let dir = tempfile::Builder::new()
            .prefix("tokengate-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let owned = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !owned.success() {
                return Err("cannot give the data directory to the postgres user".into());
            }
        }
        let data = dir.path().join("data");
        let output = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        // The password role logs in with scram over TCP; everyone else is trusted.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all pw_user 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n",
        )
        .map_err(|e| e.to_string())?;
        let server = Self {
            bin,
            data,
            port: free_port(),
            dir: Some(dir),
        };
        server.start_again()?;
        // Watchdog: stop the server if this process dies without its exit handlers.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
                 {stop} -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
                pid = std::process::id(),
                stop = if unsafe { libc::geteuid() } == 0 {
                    format!(
                        "runuser -u postgres -- {}",
                        server.bin.join("pg_ctl").display()
                    )
                } else {
                    server.bin.join("pg_ctl").display().to_string()
                },
                data = server.data.display(),
                dir = server.dir.as_ref().unwrap().path().display(),
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        server.psql(&format!(
            "CREATE ROLE pw_user LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}'; \
             CREATE ROLE weak LOGIN;"
        ))?;
        Ok(server)
    }

    /// Starts the server (again) on its data directory and port.
    pub fn start_again(&self) -> Result<(), String> {
        let socket_dir = self.data.parent().unwrap();
        let output = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(socket_dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 \
                 -c fsync=on -c shared_buffers=32MB",
                self.port,
                socket_dir.display()
            ))
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// `pg_ctl stop -m immediate`: the server dies as in a crash.
    pub fn stop_immediate(&self) {
        let output = pg_ctl_stop(&self.bin, &self.data).unwrap();
        assert!(output.status.success(), "pg_ctl stop: {output:?}");
    }

    /// Runs SQL with psql over the unix socket, as the `postgres` user.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        self.psql_in("postgres", sql)
    }

    /// Runs SQL with psql in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let output = as_postgres(&self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.data.parent().unwrap())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// The URL of database `db`, as the trusted `postgres` user.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; returns its name.
    pub fn create_database(&self) -> String {
        let n = DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        self.psql(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        name
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = pg_ctl_stop(&self.bin, &self.data);
    }
}

/// A direct connection to a test server's database, for tests that look
/// at or change rows behind the server's back. SQL is written for SQLite
/// (`?1` placeholders); on PostgreSQL it is translated (`$1`, `DROP TABLE`
/// with `CASCADE`) and the parameters and result row pass through an
/// in-memory SQLite statement, so the same closures read them.
pub enum TestDb {
    Sqlite(rusqlite::Connection),
    Postgres(String),
}

impl TestDb {
    /// Like `rusqlite::Connection::query_row` (the first row).
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        match self {
            TestDb::Sqlite(conn) => conn.query_row(sql, params, f),
            TestDb::Postgres(url) => {
                let values = bridge_params(sql, params)?;
                let row = pg_run(url, &pg_sql(sql), values, true)
                    .map_err(rusqlite::Error::InvalidParameterName)?
                    .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                let memory = rusqlite::Connection::open_in_memory()?;
                let select = format!(
                    "SELECT {}",
                    (1..=row.len().max(1))
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                memory.query_row(&select, rusqlite::params_from_iter(row), f)
            }
        }
    }

    /// Like `rusqlite::Connection::execute`.
    pub fn execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        match self {
            TestDb::Sqlite(conn) => conn.execute(sql, params),
            TestDb::Postgres(url) => {
                let values = bridge_params(sql, params)?;
                pg_run(url, &pg_sql(sql), values, false)
                    .map(|_| 1)
                    .map_err(rusqlite::Error::InvalidParameterName)
            }
        }
    }

    /// Like `rusqlite::Connection::execute_batch`.
    pub fn execute_batch(&self, sql: &str) -> rusqlite::Result<()> {
        match self {
            TestDb::Sqlite(conn) => conn.execute_batch(sql),
            TestDb::Postgres(url) => pg_run(url, &pg_sql(sql), Vec::new(), false)
                .map(|_| ())
                .map_err(rusqlite::Error::InvalidParameterName),
        }
    }
}

/// The values of `params`, read back through an in-memory SQLite `SELECT`.
fn bridge_params<P: rusqlite::Params>(
    sql: &str,
    params: P,
) -> rusqlite::Result<Vec<rusqlite::types::Value>> {
    let count = (1..=32)
        .rev()
        .find(|i| sql.contains(&format!("?{i}")))
        .unwrap_or(0);
    if count == 0 {
        return Ok(Vec::new());
    }
    let memory = rusqlite::Connection::open_in_memory()?;
    let select = format!(
        "SELECT {}",
        (1..=count)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    memory.query_row(&select, params, |row| {
        (0..count)
            .map(|i| row.get::<_, rusqlite::types::Value>(i))
            .collect()
    })
}

/// SQLite's SQL as PostgreSQL wants it. PostgreSQL keeps the denylist in
/// one table: SQLite's two parts (`revocations` is both, `revocation_log`
/// the unmerged part) read as that table, and as an empty log.
fn pg_sql(sql: &str) -> String {
    let mut out = sql.to_owned();
    if has_word(&out, "revocation_log") {
        let log = if out.trim_start().to_ascii_uppercase().starts_with("INSERT") {
            "revoked_tokens"
        } else {
            "(SELECT jti, purge_after FROM revoked_tokens WHERE false) AS revocation_log"
        };
        out = out.replace("revocation_log", log);
    }
    if has_word(&out, "revocations") {
        out = out.replace("revocations", "revoked_tokens");
    }
    for i in (1..=32).rev() {
        out = out.replace(&format!("?{i}"), &format!("${i}"));
    }
    let trimmed = out.trim().trim_end_matches(';');
    if trimmed.to_ascii_uppercase().starts_with("DROP TABLE") {
        return format!("{trimmed} CASCADE");
    }
    out
}

/// Whether `name` occurs in `sql` as a whole word.
fn has_word(sql: &str, name: &str) -> bool {
    let bytes = sql.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    sql.match_indices(name).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + name.len()).copied();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Runs one statement on PostgreSQL on a thread of its own (the caller may
/// be an async test); returns the first row when `want_row`.
fn pg_run(
    url: &str,
    sql: &str,
    values: Vec<rusqlite::types::Value>,
    want_row: bool,
) -> Result<Option<Vec<rusqlite::types::Value>>, String> {
    let url = url.to_owned();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(pg_run_async(&url, &sql, values, want_row))
    })
    .join()
    .unwrap()
}

async fn pg_run_async(
    url: &str,
    sql: &str,
    values: Vec<rusqlite::types::Value>,
    want_row: bool,
) -> Result<Option<Vec<rusqlite::types::Value>>, String> {
    use rusqlite::types::Value as V;
    use tokio_postgres::types::{ToSql, Type};
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    if values.is_empty() && !want_row {
        client.batch_execute(sql).await.map_err(|e| e.to_string())?;
        return Ok(None);
    }
    let stmt = client.prepare(sql).await.map_err(|e| e.to_string())?;
    let mut boxed: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    for (value, ty) in values.iter().zip(stmt.params()) {
        boxed.push(match (value, ty) {
            (V::Null, _) => Box::new(None::<i64>),
            (V::Integer(i), &Type::INT4) => Box::new(*i as i32),
            (V::Integer(i), &Type::INT2) => Box::new(*i as i16),
            (V::Integer(i), &Type::BOOL) => Box::new(*i != 0),
            (V::Integer(i), _) => Box::new(*i),
            (V::Real(f), _) => Box::new(*f),
            (V::Text(t), _) => Box::new(t.clone()),
            (V::Blob(b), _) => Box::new(b.clone()),
        });
    }
    let refs: Vec<&(dyn ToSql + Sync)> =
        boxed.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect();
    let rows = client
        .query(&stmt, &refs)
        .await
        .map_err(|e| e.to_string())?;
    if !want_row {
        return Ok(None);
    }
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        out.push(if *ty == Type::INT8 {
            row.get::<_, Option<i64>>(i).map_or(V::Null, V::Integer)
        } else if *ty == Type::INT4 {
            row.get::<_, Option<i32>>(i)
                .map_or(V::Null, |v| V::Integer(v.into()))
        } else if *ty == Type::INT2 {
            row.get::<_, Option<i16>>(i)
                .map_or(V::Null, |v| V::Integer(v.into()))
        } else if *ty == Type::BOOL {
            row.get::<_, Option<bool>>(i)
                .map_or(V::Null, |v| V::Integer(v.into()))
        } else if *ty == Type::BYTEA {
            row.get::<_, Option<Vec<u8>>>(i).map_or(V::Null, V::Blob)
        } else if *ty == Type::FLOAT8 {
            row.get::<_, Option<f64>>(i).map_or(V::Null, V::Real)
        } else {
            row.get::<_, Option<String>>(i).map_or(V::Null, V::Text)
        });
    }
    Ok(Some(out))
}
