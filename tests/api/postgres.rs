//! PostgreSQL only: several processes on one database, failures of the
//! server, bad URLs and rights at start, the shared login throttle, and
//! copying between engines. Each test returns at once (the suite said why,
//! once) when PostgreSQL's binaries are not installed.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokengate::auth::throttle::ClientKey;
use tokengate::config::{Secret, Settings};
use tokengate::store::{LoginReservation, Store};

use crate::helpers::{
    claims_of, forge, postgres, spawn_app, spawn_app_on, tokengate, valid_claims,
    wait_with_deadline, Pair, PgServer, ServerProcess, TestApp, PASSWORD, PG_PASSWORD,
    PROCESS_DEADLINE, TEST_SECRET,
};

/// A `tokengate serve` process seen from a client.
struct Node {
    process: ServerProcess,
    client: reqwest::Client,
}

impl Node {
    fn start(database: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            process: ServerProcess::serve_database(dir.path(), database, extra),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.url)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the node answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn register(&self, email: &str) -> i64 {
        let (status, body) = self
            .send(
                self.client
                    .post(self.url("/api/v1/register"))
                    .json(&json!({"name": "Ada", "email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    async fn login(&self, email: &str, password: &str) -> Pair {
        let (status, body) = self
            .send(
                self.client
                    .post(self.url("/api/v1/login"))
                    .json(&json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Pair::from_body(&body)
    }

    async fn user_status(&self, token: &str) -> StatusCode {
        self.send(
            self.client
                .get(self.url("/api/v1/user"))
                .header(AUTHORIZATION, format!("Bearer {token}")),
        )
        .await
        .0
    }

    async fn refresh(&self, refresh: &str) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(self.url("/api/v1/token/refresh"))
                .json(&json!({ "refresh_token": refresh })),
        )
        .await
    }

    /// RFC 7009 revocation of `token`.
    async fn revoke(&self, token: &str) -> StatusCode {
        self.send(
            self.client
                .post(self.url("/api/v1/token/revoke"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}")),
        )
        .await
        .0
    }

    async fn logout(&self, token: &str, scope: &str) -> StatusCode {
        self.send(
            self.client
                .delete(self.url(&format!("/api/v1/logout?scope={scope}")))
                .header(AUTHORIZATION, format!("Bearer {token}")),
        )
        .await
        .0
    }
}

/// The shared server, or `None` when PostgreSQL is not installed.
fn pg() -> Option<&'static PgServer> {
    postgres()
}

/// Asserts an access token is refused (`401`) by every one of `nodes`.
async fn refused_everywhere(nodes: &[&Node], token: &str, what: &str) {
    for node in nodes {
        assert_eq!(
            node.user_status(token).await,
            StatusCode::UNAUTHORIZED,
            "{what}: another node still accepts the token"
        );
    }
}

#[tokio::test]
async fn three_processes_honour_each_others_writes_on_their_very_next_request() {
    let Some(pg) = pg() else { return };
    let database = pg.url(&pg.create_database());
    // Three processes starting at once on an empty database: the schema is
    // made once, under the advisory lock, and all three start.
    let starting: Vec<_> = (0..3)
        .map(|_| {
            let database = database.clone();
            std::thread::spawn(move || Node::start(&database, &["--refresh-reuse-interval", "0"]))
        })
        .collect();
    let nodes: Vec<Node> = starting.into_iter().map(|t| t.join().unwrap()).collect();
    let email = "ada@example.com";
    let user_id = nodes[0].register(email).await;
    let mut password = PASSWORD.to_owned();

    // Revocations of tokens without a session, many times over.
    for trial in 0..60 {
        let (a, b, c) = (
            &nodes[trial % 3],
            &nodes[(trial + 1) % 3],
            &nodes[(trial + 2) % 3],
        );
        let token = forge(&valid_claims(user_id));
        assert_eq!(b.user_status(&token).await, StatusCode::OK);
        assert_eq!(a.logout(&token, "local").await, StatusCode::NO_CONTENT);
        refused_everywhere(&[b, c], &token, "logout").await;
    }

    for round in 0..3 {
        let (a, b, c) = (
            &nodes[round % 3],
            &nodes[(round + 1) % 3],
            &nodes[(round + 2) % 3],
        );

        // Local logout ends the session: its access and refresh tokens.
        let p = a.login(email, &password).await;
        assert_eq!(a.logout(&p.access, "local").await, StatusCode::NO_CONTENT);
        refused_everywhere(&[b, c], &p.access, "local logout").await;
        assert_eq!(b.refresh(&p.refresh).await.0, StatusCode::UNAUTHORIZED);

        // Deleting a session.
        let (gone, caller) = (
            b.login(email, &password).await,
            c.login(email, &password).await,
        );
        let (status, _) = a
            .send(
                a.client
                    .delete(a.url(&format!("/api/v1/sessions/{}", gone.sid())))
                    .header(AUTHORIZATION, format!("Bearer {}", caller.access)),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        refused_everywhere(&[b, c], &gone.access, "session delete").await;
        assert_eq!(c.refresh(&gone.refresh).await.0, StatusCode::UNAUTHORIZED);

        // Logout of the other sessions.
        let other = b.login(email, &password).await;
        assert_eq!(
            a.logout(&caller.access, "others").await,
            StatusCode::NO_CONTENT
        );
        refused_everywhere(&[b, c], &other.access, "logout others").await;
        assert_eq!(b.user_status(&caller.access).await, StatusCode::OK);

        // Global logout: every session and every token issued until now.
        let no_sid = forge(&valid_claims(user_id));
        assert_eq!(
            a.logout(&caller.access, "global").await,
            StatusCode::NO_CONTENT
        );
        refused_everywhere(&[b, c], &caller.access, "global logout").await;
        refused_everywhere(&[c, b], &no_sid, "global logout, token without sid").await;

        // Refresh reuse after the interval is theft: the session ends.
        let p = a.login(email, &password).await;
        let (status, body) = a.refresh(&p.refresh).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rotated = Pair::from_body(&body);
        assert_eq!(b.refresh(&p.refresh).await.0, StatusCode::UNAUTHORIZED);
        refused_everywhere(&[c, a], &rotated.access, "reuse detection").await;
        assert_eq!(
            c.refresh(&rotated.refresh).await.0,
            StatusCode::UNAUTHORIZED
        );

        // RFC 7009: revoking a refresh token ends its session; revoking an
        // access token puts it in the denylist.
        let p = a.login(email, &password).await;
        assert_eq!(a.revoke(&p.refresh).await, StatusCode::OK);
        refused_everywhere(&[b, c], &p.access, "refresh token revoked").await;
        assert_eq!(c.refresh(&p.refresh).await.0, StatusCode::UNAUTHORIZED);
        let p = b.login(email, &password).await;
        assert_eq!(a.revoke(&p.access).await, StatusCode::OK);
        refused_everywhere(&[b, c], &p.access, "access token revoked").await;

        // Password change: every other session and every older token ends.
        let (caller, other) = (
            a.login(email, &password).await,
            b.login(email, &password).await,
        );
        let new_password = format!("{PASSWORD} #{round}");
        let (status, body) = a
            .send(
                a.client
                    .put(a.url("/api/v1/user/password"))
                    .header(AUTHORIZATION, format!("Bearer {}", caller.access))
                    .json(&json!({"current_password": password, "new_password": new_password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        password = new_password;
        let fresh = Pair::from_body(&body);
        refused_everywhere(&[b, c], &caller.access, "password change (caller)").await;
        refused_everywhere(&[c, b], &other.access, "password change (other)").await;
        assert_eq!(c.user_status(&fresh.access).await, StatusCode::OK);
        assert_eq!(b.refresh(&other.refresh).await.0, StatusCode::UNAUTHORIZED);
    }
}

/// Sends a logout for each token to `node`, 32 at a time; returns a
/// receiver of (token, status or `None` if the connection failed).
fn logout_storm(
    node: &Node,
    tokens: &[String],
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Option<StatusCode>)> {
    let (results, received) = tokio::sync::mpsc::unbounded_channel();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(32));
    for token in tokens {
        let in_flight = in_flight.clone();
        let request = node
            .client
            .delete(node.url("/api/v1/logout"))
            .header(AUTHORIZATION, format!("Bearer {token}"));
        let (token, results) = (token.clone(), results.clone());
        tokio::spawn(async move {
            let _slot = in_flight.acquire().await;
            let status = request.send().await.ok().map(|r| r.status());
            let _ = results.send((token, status));
        });
    }
    received
}

#[tokio::test]
async fn a_node_killed_mid_logout_storm_loses_no_acknowledged_revocation() {
    let Some(pg) = pg() else { return };
    let database = pg.url(&pg.create_database());
    let (victim, witness) = (Node::start(&database, &[]), Node::start(&database, &[]));
    let user_id = victim.register("ada@example.com").await;
    let tokens: Vec<String> = (0..300).map(|_| forge(&valid_claims(user_id))).collect();
    let mut results = logout_storm(&victim, &tokens);
    let mut acknowledged = Vec::new();
    let mut seen = 0;
    while let Some((token, status)) = results.recv().await {
        seen += 1;
        if status == Some(StatusCode::NO_CONTENT) {
            acknowledged.push(token);
        }
        if acknowledged.len() == 20 {
            break;
        }
    }
    victim.process.kill();
    while seen < tokens.len() {
        let (token, status) = results.recv().await.unwrap();
        seen += 1;
        match status {
            Some(StatusCode::NO_CONTENT) => acknowledged.push(token),
            None => {}
            Some(other) => assert!(
                !other.is_success() && other != StatusCode::INTERNAL_SERVER_ERROR,
                "{other}"
            ),
        }
    }
    for token in &acknowledged {
        assert_eq!(
            witness.user_status(token).await,
            StatusCode::UNAUTHORIZED,
            "an acknowledged logout was lost with its node"
        );
    }
    let untouched = forge(&valid_claims(user_id));
    assert_eq!(witness.user_status(&untouched).await, StatusCode::OK);
}

#[tokio::test]
async fn postgres_stopped_mid_storm_gives_503_then_recovers_with_every_acknowledged_revocation() {
    if pg().is_none() {
        return;
    }
    let server = PgServer::start().expect("a private PostgreSQL server");
    server.psql("CREATE DATABASE storm").unwrap();
    // As a role with a password: it must never show in a log or an error.
    let database = format!(
        "postgres://pw_user:{PG_PASSWORD}@127.0.0.1:{}/storm",
        server.port
    );
    // Generous: the machine may be busy; requests that fail while the
    // server is down fail at once (connection refused) anyway.
    let timeout_ms = 3000u64;
    let timeout = ["--db-timeout-ms", "3000"];
    let (a, b) = (
        Node::start(&database, &timeout),
        Node::start(&database, &timeout),
    );
    let user_id = a.register("ada@example.com").await;
    let pair = a.login("ada@example.com", PASSWORD).await;
    let tokens: Vec<String> = (0..300).map(|_| forge(&valid_claims(user_id))).collect();

    let mut results = logout_storm(&a, &tokens);
    let mut acknowledged = Vec::new();
    let mut stopped = false;
    for _ in 0..tokens.len() {
        let (token, status) = results.recv().await.unwrap();
        match status {
            Some(StatusCode::NO_CONTENT) => acknowledged.push(token),
            Some(StatusCode::SERVICE_UNAVAILABLE) => {}
            other => panic!("a logout answered {other:?}"),
        }
        if !stopped && acknowledged.len() >= 20 {
            server.stop_immediate();
            stopped = true;
        }
    }
    assert!(acknowledged.len() >= 20);

    // While it is down: 503, within the timeout, on everything that needs it.
    let fresh = forge(&valid_claims(user_id));
    let started = Instant::now();
    let checks = [
        b.send(
            b.client
                .get(b.url("/api/v1/user"))
                .header(AUTHORIZATION, format!("Bearer {fresh}")),
        )
        .await,
        b.send(
            b.client
                .post(b.url("/api/v1/login"))
                .json(&json!({"email": "ada@example.com", "password": PASSWORD})),
        )
        .await,
        b.refresh(&pair.refresh).await,
        b.send(
            b.client
                .delete(b.url("/api/v1/logout"))
                .header(AUTHORIZATION, format!("Bearer {fresh}")),
        )
        .await,
        b.send(b.client.get(b.url("/health"))).await,
        b.send(
            b.client
                .post(b.url("/api/v1/token/revoke"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={}", pair.refresh)),
        )
        .await,
    ];
    for (status, body) in &checks {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "service_unavailable");
    }
    let per_request = started.elapsed() / checks.len() as u32;
    assert!(
        per_request < Duration::from_millis(timeout_ms + 1500),
        "a request waited {per_request:?}"
    );

    // Back up (crash recovery on the same data directory): both nodes
    // recover by themselves, with every acknowledged revocation.
    server.start_again().unwrap();
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.send(node.client.get(node.url("/health"))).await.0 != StatusCode::OK {
            assert!(Instant::now() < deadline, "the node never recovered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for token in &acknowledged {
        refused_everywhere(
            &[&a, &b],
            token,
            "an acknowledged logout was lost in the crash",
        )
        .await;
    }
    assert_eq!(b.user_status(&fresh).await, StatusCode::OK);
    assert_eq!(b.user_status(&pair.access).await, StatusCode::OK);

    for node in [a, b] {
        let (output, log) = node.process.terminate_with_log();
        let everything = format!(
            "{}{}{}",
            log.join("\n"),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            everything.contains("database"),
            "the outage was logged: {everything}"
        );
        assert!(
            !everything.contains(PG_PASSWORD),
            "the database password appeared in the log"
        );
    }
}

/// Runs `tokengate serve` with `args` and expects it to refuse to start:
/// a non-zero exit and one line on stderr, without `secret`.
fn refuses_to_start(args: &[&str], secret: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let child = tokengate(dir.path())
        .arg("serve")
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .spawn()
        .unwrap();
    let output: Output = wait_with_deadline(child, PROCESS_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{args:?} started: {stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("tokengate: "), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    assert!(
        !stderr.contains(secret) && !stdout.contains(secret),
        "the password leaked: {stderr}"
    );
    stderr
}

#[test]
fn bad_urls_credentials_rights_and_settings_stop_the_start_with_one_clear_line() {
    let Some(pg) = pg() else { return };
    let port = pg.port;
    let secret = ["--jwt-secret", TEST_SECRET];
    let with = |database: &str| {
        let mut args = vec!["--database", database, "--db-timeout-ms", "2000"];
        args.extend(secret);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, secret: &str| {
        refuses_to_start(&args.iter().map(String::as_str).collect::<Vec<_>>(), secret)
    };

    let line = run(
        with("postgres://pw_user:Hunter-77-secret@127.0.0.1:notaport/x"),
        "Hunter-77-secret",
    );
    assert!(line.contains("not a valid PostgreSQL URL"), "{line}");

    let line = run(
        with(&format!(
            "postgres://pw_user:Wrong-Pass-99@127.0.0.1:{port}/postgres"
        )),
        "Wrong-Pass-99",
    );
    assert!(line.contains("password authentication failed"), "{line}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let line = run(
        with(&format!(
            "postgres://pw_user:Unreach-42@127.0.0.1:{closed}/postgres"
        )),
        "Unreach-42",
    );
    assert!(
        line.contains("cannot open database postgres://pw_user:***@"),
        "{line}"
    );

    let weak_db = pg.create_database();
    let line = run(
        with(&format!("postgres://weak@127.0.0.1:{port}/{weak_db}")),
        PG_PASSWORD,
    );
    assert!(line.contains("permission denied"), "{line}");

    let good = format!("postgres://pw_user:{PG_PASSWORD}@127.0.0.1:{port}/postgres");
    let line = refuses_to_start(&["--database", &good], PG_PASSWORD);
    assert!(
        line.contains("--jwt-secret") && line.contains("required"),
        "{line}"
    );
    let line = refuses_to_start(
        &["--database", &good, "--jwt-algorithm", "EdDSA"],
        PG_PASSWORD,
    );
    assert!(line.contains("--keys-dir"), "{line}");

    // A database from a newer tokengate is refused and left as it is.
    let newer = pg.create_database();
    pg.psql_in(
        &newer,
        "CREATE TABLE tokengate_schema (version BIGINT NOT NULL);
         INSERT INTO tokengate_schema VALUES (99);",
    )
    .unwrap();
    let line = run(with(&pg.url(&newer)), PG_PASSWORD);
    assert!(line.contains("newer"), "{line}");
    assert_eq!(
        pg.psql_in(&newer, "SELECT version FROM tokengate_schema")
            .unwrap(),
        "99"
    );
}

/// Opens a store on `database` the way `serve` does (off the executor).
async fn open_store(database: &str, configure: impl FnOnce(&mut Settings)) -> Arc<Store> {
    let mut settings = Settings {
        database: database.into(),
        jwt_secret: Some(Secret::new(TEST_SECRET)),
        ..Settings::default()
    };
    configure(&mut settings);
    let (store, _running) = tokio::task::spawn_blocking(move || Store::open(&settings, false))
        .await
        .unwrap()
        .expect("the store opens");
    Arc::new(store)
}

#[tokio::test]
async fn login_throttling_counts_are_shared_by_every_process() {
    let Some(pg) = pg() else { return };
    let database = pg.url(&pg.create_database());
    let limits = |s: &mut Settings| {
        s.login_max_failures = 3;
        s.login_max_failures_per_client = 10;
    };
    let (a, b) = (
        open_store(&database, limits).await,
        open_store(&database, limits).await,
    );
    let client = Some(ClientKey::from(
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap(),
    ));
    let counted = |r: &LoginReservation| matches!(r, LoginReservation::Counted(_));

    // Three failures, made on two processes, block the address on both.
    for store in [&a, &b, &a] {
        assert!(counted(
            &store.reserve_login("x@example.com", client).await.unwrap()
        ));
    }
    for store in [&a, &b] {
        match store.reserve_login("x@example.com", client).await.unwrap() {
            LoginReservation::Refused(wait) => {
                assert!(wait > Duration::from_secs(800) && wait <= Duration::from_secs(900))
            }
            other => panic!("not refused: {other:?}"),
        }
    }
    // Another address is not affected; a success clears its own count.
    for _ in 0..2 {
        assert!(counted(
            &a.reserve_login("y@example.com", client).await.unwrap()
        ));
    }
    match b.reserve_login("y@example.com", client).await.unwrap() {
        LoginReservation::Counted(attempt) => b.login_succeeded(attempt).await.unwrap(),
        other => panic!("not counted: {other:?}"),
    }
    for _ in 0..3 {
        assert!(counted(
            &a.reserve_login("y@example.com", client).await.unwrap()
        ));
    }

    // Concurrent attempts on both processes: exactly the limit gets through.
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.reserve_login("z@example.com", None).await })
        })
        .collect();
    let mut through = 0;
    for attempt in attempts {
        if counted(&attempt.await.unwrap().unwrap()) {
            through += 1;
        }
    }
    assert_eq!(through, 3);

    // The client address: 10 failures in total over many e-mail addresses
    // (x 3, y 2 + 1 - 1 taken back + 3, z none: 8 so far).
    for i in 0..2 {
        let email = format!("w{i}@example.com");
        assert!(counted(&b.reserve_login(&email, client).await.unwrap()));
    }
    assert!(matches!(
        a.reserve_login("v@example.com", client).await.unwrap(),
        LoginReservation::Refused(_)
    ));
}

/// Runs `tokengate copy` from `from` to `to`.
fn run_copy(dir: &Path, from: &str, to: &str) -> Output {
    let child = tokengate(dir)
        .args(["copy", "--database", from, "--to", to])
        .spawn()
        .unwrap();
    wait_with_deadline(child, PROCESS_DEADLINE)
}

/// What a set of tokens gets from a server.
async fn access_verdicts(app: &TestApp, tokens: &[String]) -> Vec<StatusCode> {
    let mut verdicts = Vec::new();
    for token in tokens {
        verdicts.push(app.current_user_with(token).await.status());
    }
    verdicts
}

#[tokio::test]
async fn copy_moves_everything_sqlite_to_postgres_and_back_with_every_verdict_unchanged() {
    let Some(pg) = pg() else { return };
    // A SQLite database with users, sessions, rotations, revocations and marks.
    let app = spawn_app().await;
    assert!(app.settings.database_url().is_none());
    let ada = app.register_user("ada@example.com").await;
    let bob = app.register_user("bob@example.com").await;
    let active = app.login_pair(&ada).await;
    let logged_out = app.login_pair(&ada).await;
    assert_eq!(
        app.logout_with(&logged_out.access).await.status(),
        StatusCode::NO_CONTENT
    );
    let rotated_from = app.login_pair(&ada).await;
    let rotated = app.refresh_pair(&rotated_from.refresh).await;
    let revoked_no_sid = forge(&valid_claims(ada.id));
    assert_eq!(
        app.logout_with(&revoked_no_sid).await.status(),
        StatusCode::NO_CONTENT
    );
    let valid_no_sid = forge(&valid_claims(ada.id));
    let bob_before = app.login_pair(&bob).await;
    assert_eq!(
        app.logout_query(&bob_before.access, "scope=global")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let mut bob_old_claims = valid_claims(bob.id);
    bob_old_claims["iat"] = json!(claims_of(&bob_before.access)["iat"].as_i64().unwrap() - 5);
    let bob_old = forge(&bob_old_claims);
    let bob_after = app.login_pair(&bob).await;

    let tokens: Vec<String> = [
        &active.access,
        &logged_out.access,
        &rotated_from.access,
        &rotated.access,
        &revoked_no_sid,
        &valid_no_sid,
        &bob_before.access,
        &bob_old,
        &bob_after.access,
    ]
    .into_iter()
    .cloned()
    .collect();
    let expected = access_verdicts(&app, &tokens).await;
    use StatusCode as S;
    assert_eq!(
        expected,
        [
            S::OK,
            S::UNAUTHORIZED,
            S::OK,
            S::OK,
            S::UNAUTHORIZED,
            S::OK,
            S::UNAUTHORIZED,
            S::UNAUTHORIZED,
            S::OK
        ]
    );
    let stopped = app.stop().await;
    let sqlite_path = stopped.settings.database.display().to_string();

    // SQLite -> PostgreSQL -> SQLite, before any server touches the copies.
    let work = tempfile::tempdir().unwrap();
    let pg_url = pg.url(&pg.create_database());
    let output = run_copy(work.path(), &sqlite_path, &pg_url);
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("copied 2 users, 5 sessions") && said.contains("2 revocations"),
        "{said}"
    );
    let back = work.path().join("back.db").display().to_string();
    let output = run_copy(work.path(), &pg_url, &back);
    assert!(output.status.success(), "{output:?}");

    // A target that is not empty is refused with one line.
    let output = run_copy(work.path(), &sqlite_path, &pg_url);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    for database in [&pg_url, &back] {
        let copy = spawn_app_on(database, |_| {}).await;
        assert_eq!(
            access_verdicts(&copy, &tokens).await,
            expected,
            "on {database}"
        );
        // Refresh tokens: ended sessions stay ended, live ones work.
        for ended in [&logged_out.refresh, &bob_before.refresh] {
            copy.assert_grant_refused(ended).await;
        }
        copy.refresh_pair(&active.refresh).await;
        copy.refresh_pair(&rotated.refresh).await;
        let fresh = copy.refresh_pair(&bob_after.refresh).await;
        copy.assert_accepted(&fresh.access).await;
        // Users log in with their passwords; new users get new ids.
        copy.login_pair(&ada).await;
        let carol = copy.register_user("carol@example.com").await;
        assert!(carol.id > bob.id);
        copy.stop().await;
    }
}

/// Runs `tokengate <args>` with `stdin` as standard input.
fn run_cli(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokengate(dir.path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    wait_with_deadline(child, PROCESS_DEADLINE)
}

#[tokio::test]
async fn user_add_user_revoke_and_purge_work_on_postgres() {
    let Some(pg) = pg() else { return };
    // A maintenance command does not create a schema where there is none.
    let empty = pg.url(&pg.create_database());
    let output = run_cli(&["purge", "--database", &empty], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no tokengate database there"), "{stderr}");

    let app = spawn_app_on(&empty, |_| {}).await;
    let database = app.settings.database_url().unwrap().to_owned();
    let output = run_cli(
        &[
            "user",
            "add",
            "--email",
            "Ada@Example.com",
            "--name",
            "Ada",
            "--database",
            &database,
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(output.status.success(), "{output:?}");
    let ada = crate::helpers::TestUser {
        id: 1,
        name: "Ada".into(),
        email: "ada@example.com".into(),
        password: PASSWORD.into(),
    };
    let pair = app.login_pair(&ada).await;
    app.assert_accepted(&pair.access).await;

    // A revocation whose moment has passed is purged; a live one stays.
    let live = forge(&valid_claims(ada.id));
    assert_eq!(
        app.logout_with(&live).await.status(),
        StatusCode::NO_CONTENT
    );
    app.db()
        .execute(
            "INSERT INTO revoked_tokens (jti, purge_after) VALUES ('long-gone', ?1)",
            [crate::helpers::now() - 10],
        )
        .unwrap();
    // A session that ended, and that no access token can name any more, is
    // purged with its refresh tokens; the live one stays.
    let ended = app.login_pair(&ada).await;
    assert_eq!(
        app.logout_with(&ended.access).await.status(),
        StatusCode::NO_CONTENT
    );
    app.db()
        .execute(
            "UPDATE sessions SET purge_after = ?1 WHERE id = ?2",
            rusqlite::params![crate::helpers::now() - 10, ended.sid()],
        )
        .unwrap();
    let output = run_cli(&["purge", "--database", &database], "");
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("purged 1 expired revocations, 1 sessions"),
        "{said}"
    );
    let sessions: i64 = app
        .db()
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 1);
    app.assert_accepted(&pair.access).await;
    let kept: i64 = app
        .db()
        .query_row("SELECT count(*) FROM revoked_tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 2, "the live revocations stay");
    app.assert_refused(&live).await;
    let output = run_cli(
        &[
            "user",
            "revoke",
            "--email",
            "ada@example.com",
            "--database",
            &database,
        ],
        "",
    );
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 sessions ended"));
    app.assert_refused(&pair.access).await;
    app.assert_grant_refused(&pair.refresh).await;
}

#[tokio::test]
async fn health_is_503_when_reads_work_but_commits_fail() {
    let Some(pg) = pg() else { return };
    let name = pg.create_database();
    let app = spawn_app_on(&pg.url(&name), |_| {}).await;
    // Every write of the probe row now fails; reads still work. A commit
    // within the last second (the purge at start) is trusted for that
    // second; after it, the probe decides.
    pg.psql_in(
        &name,
        "ALTER TABLE writer_probe ADD CONSTRAINT never CHECK (written_at < 0) NOT VALID",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.get("/health").await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            crate::helpers::assert_error(
                response,
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
            )
            .await;
            break;
        }
        assert!(Instant::now() < deadline, "health never noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.psql_in(&name, "ALTER TABLE writer_probe DROP CONSTRAINT never")
        .unwrap();
    app.assert_still_serving().await;
}

#[tokio::test]
async fn failed_logins_on_two_nodes_count_together_over_http() {
    // Five failures for one address, made on two nodes, block it on both;
    // so does a wrong current password in a password change.
    let Some(pg) = pg() else { return };
    let database = pg.url(&pg.create_database());
    let a = crate::helpers::spawn_app_on(&database, |_| {}).await;
    let b = crate::helpers::spawn_app_on(&database, |_| {}).await;
    let user = a.register_user("shared@example.com").await;
    let pair = b.login_pair(&user).await;
    for node in [&a, &b, &a, &b] {
        assert_eq!(
            node.login(&user.email, "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let response = b
        .change_password(&pair.access, "also wrong", "a new passphrase")
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for node in [&a, &b] {
        let response = node.login(&user.email, &user.password).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
    }
}
