//! The `tokengate` command line: `user add`, `purge`, `serve` and start-up
//! failures, run as a child process.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use reqwest::StatusCode;

use crate::helpers::{
    now, spawn_app_with, tokengate, wait_with_deadline, ServerProcess,
    PROCESS_DEADLINE as DEADLINE, TEST_SECRET,
};

/// Runs `tokengate <args>` with `stdin` as standard input; waits for it to exit.
fn run(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = tokengate(dir)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    wait_with_deadline(child, DEADLINE)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a failed start: non-zero exit, exactly one line on standard
/// error, no panic. Returns that line.
fn assert_refused_with_one_line(output: &Output) -> String {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "exit status is non-zero; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {err:?}");
    lines[0].to_owned()
}

/// The first integer in `text`.
fn first_number(text: &str) -> i64 {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|part| !part.is_empty())
        .unwrap_or_else(|| panic!("a number in {text:?}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn user_add_reads_the_password_from_stdin_and_the_user_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let db_arg = db.to_str().unwrap();
    // The database exists (the server created it); user add never creates one.
    spawn_app_with(|s| s.database = db.clone())
        .await
        .stop()
        .await;

    let output = run(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "Admin@Example.com",
            "--name",
            "Admin",
            "--database",
            db_arg,
        ],
        "admin password 123\n",
    );
    assert!(
        output.status.success(),
        "user add failed: {}",
        stderr(&output)
    );
    assert!(
        !stdout(&output).contains("admin password 123"),
        "the password is not echoed"
    );

    let app = spawn_app_with(|s| s.database = db.clone()).await;
    let response = app.login("admin@example.com", "admin password 123").await;
    assert_eq!(response.status(), StatusCode::OK);
    let token = response.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let user: serde_json::Value = app.current_user_with(&token).await.json().await.unwrap();
    assert_eq!(user["email"], "admin@example.com", "stored lower-cased");
    assert_eq!(user["name"], "Admin");
}

#[tokio::test]
async fn user_add_refuses_a_taken_email_and_a_short_password() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let db_arg = db.to_str().unwrap();
    spawn_app_with(|s| s.database = db.clone())
        .await
        .stop()
        .await;
    let add = |email: &str, password: &str| {
        run(
            dir.path(),
            &[
                "user",
                "add",
                "--email",
                email,
                "--name",
                "Admin",
                "--database",
                db_arg,
            ],
            &format!("{password}\n"),
        )
    };

    assert!(add("admin@example.com", "long enough").status.success());
    let taken = add("ADMIN@example.com", "long enough");
    assert_refused_with_one_line(&taken);
    let short = add("other@example.com", "short");
    assert_refused_with_one_line(&short);
    let invalid = add("not-an-email", "long enough");
    assert_refused_with_one_line(&invalid);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let count: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn purge_deletes_expired_revocations_and_prints_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let app = spawn_app_with(|s| s.database = db.clone()).await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );
    let live_jti = crate::helpers::claims_of(&token)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    // Rows record when they may go (exp plus the revoking server's leeway).
    conn.execute(
        "INSERT INTO revoked_tokens (jti, purge_after) VALUES ('long-expired', ?1), ('within-leeway', ?2)",
        [now() - 86_400, now() + 25],
    )
    .unwrap();

    let output = run(
        dir.path(),
        &["purge", "--database", db.to_str().unwrap()],
        "",
    );
    assert!(output.status.success(), "purge failed: {}", stderr(&output));
    assert_eq!(first_number(&stdout(&output)), 1, "{}", stdout(&output));

    let mut remaining: Vec<String> = conn
        .prepare("SELECT jti FROM revocations ORDER BY jti")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    remaining.sort();
    let mut expected = vec![live_jti, "within-leeway".to_owned()];
    expected.sort();
    assert_eq!(remaining, expected, "only the expired row is gone");

    let again = run(
        dir.path(),
        &["purge", "--database", db.to_str().unwrap()],
        "",
    );
    assert!(again.status.success());
    assert_eq!(first_number(&stdout(&again)), 0, "{}", stdout(&again));
}

#[tokio::test]
async fn purge_reads_the_database_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env.db");
    spawn_app_with(|s| s.database = db.clone())
        .await
        .stop()
        .await;
    let mut command = tokengate(dir.path());
    command.arg("purge").env("TOKENGATE_DATABASE", &db);
    let output = wait_with_deadline(command.spawn().unwrap(), DEADLINE);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(first_number(&stdout(&output)), 0);
    // The default path (data/tokengate.db) was not used instead.
    assert!(!dir.path().join("data").exists());
}

#[tokio::test]
async fn purge_with_a_smaller_leeway_keeps_a_revocation_the_server_still_needs() {
    // A token past its exp but within the server's (larger) leeway is still
    // accepted by the server, so its revocation must stay whatever leeway
    // `tokengate purge` is given.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let app = spawn_app_with(|s| {
        s.database = db.clone();
        s.leeway = 600;
    })
    .await;
    let user = app.register_user("ada@example.com").await;
    let mut claims = crate::helpers::valid_claims(user.id);
    claims["exp"] = serde_json::json!(now() - 60);
    let token = crate::helpers::forge(&claims);
    assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);
    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );

    let output = run(
        dir.path(),
        &["purge", "--leeway", "0", "--database", db.to_str().unwrap()],
        "",
    );
    assert!(output.status.success(), "purge failed: {}", stderr(&output));
    assert_eq!(first_number(&stdout(&output)), 0, "{}", stdout(&output));
    crate::helpers::assert_invalid_token(app.current_user_with(&token).await).await;
}

#[test]
fn purge_and_user_add_refuse_a_database_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let purge = run(
        dir.path(),
        &["purge", "--database", missing.to_str().unwrap()],
        "",
    );
    let line = assert_refused_with_one_line(&purge);
    assert!(line.contains("typo.db"), "{line}");
    let add = run(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "a@example.com",
            "--name",
            "A",
            "--database",
            missing.to_str().unwrap(),
        ],
        "correct horse battery staple\n",
    );
    let line = assert_refused_with_one_line(&add);
    assert!(line.contains("typo.db"), "{line}");
    assert!(!missing.exists(), "no database was created");
    let default = run(dir.path(), &["purge"], "");
    assert_refused_with_one_line(&default);
    assert!(
        !dir.path().join("data").exists(),
        "nothing created by default either"
    );
}

#[tokio::test]
async fn user_add_on_a_terminal_does_not_echo_the_password() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    spawn_app_with(|s| s.database = db.clone())
        .await
        .stop()
        .await;

    // A pseudo-terminal: the command gets the slave side as its terminal.
    let (mut master, slave) = unsafe {
        let (mut m, mut s) = (0, 0);
        assert_eq!(
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null()
            ),
            0
        );
        (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s))
    };
    let mut child = tokengate(dir.path())
        .args(["user", "add", "--email", "tty@example.com", "--name", "T"])
        .args(["--database", db.to_str().unwrap()])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // Wait for the prompt (echo is turned off before it is printed), then type.
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Enter:") {
        let n = master.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the prompt appears: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    master.write_all(b"typed-secret-password\n").unwrap();
    let status = wait_with_deadline_status(&mut child);
    // Read what the terminal showed after the prompt (the slave is closed
    // once the child exits, so this ends with EIO or 0).
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let shown = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{shown}");
    assert!(shown.contains("created user"), "{shown}");
    assert!(
        !shown.contains("typed-secret-password"),
        "the password was echoed: {shown}"
    );
}

fn wait_with_deadline_status(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "user add did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn short_jwt_secret_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let secret_31 = "x".repeat(31);
    for secret in ["short", secret_31.as_str()] {
        let child = tokengate(dir.path())
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--jwt-secret",
                secret,
                "--database",
            ])
            .arg(&db)
            .spawn()
            .unwrap();
        let output = wait_with_deadline(child, DEADLINE);
        let line = assert_refused_with_one_line(&output);
        assert!(line.contains("32"), "the line says what is needed: {line}");
        assert!(!line.contains(secret), "the secret is not printed: {line}");
    }
}

#[test]
fn short_jwt_secret_from_the_environment_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let child = tokengate(dir.path())
        .args(["--bind", "127.0.0.1:0", "--database"])
        .arg(dir.path().join("tokengate.db"))
        .env("TOKENGATE_JWT_SECRET", "too-short-secret")
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, DEADLINE);
    assert_refused_with_one_line(&output);
}

#[test]
fn port_in_use_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let child = tokengate(dir.path())
        .args([
            "serve",
            "--bind",
            &address,
            "--jwt-secret",
            TEST_SECRET,
            "--database",
        ])
        .arg(dir.path().join("tokengate.db"))
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, DEADLINE);
    let line = assert_refused_with_one_line(&output);
    assert!(
        line.contains(&address),
        "the line names the address: {line}"
    );
    drop(taken);
}

#[test]
fn help_mentions_every_configuration_flag() {
    let dir = tempfile::tempdir().unwrap();
    let child = tokengate(dir.path()).arg("--help").spawn().unwrap();
    let output = wait_with_deadline(child, DEADLINE);
    assert!(output.status.success());
    let help = stdout(&output);
    for flag in [
        "--bind",
        "--database",
        "--jwt-secret",
        "--issuer",
        "--audience",
        "--token-ttl",
        "--leeway",
        "--registration",
        "--cors-origins",
        "--login-max-failures",
        "--login-max-failures-per-client",
        "--login-window",
        "--purge-interval",
        "--jwt-algorithm",
        "--keys-dir",
    ] {
        assert!(
            help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
                .any(|word| word == flag),
            "--help mentions {flag}:\n{help}"
        );
    }
    for command in ["serve", "user", "purge", "openapi", "keys"] {
        assert!(help.contains(command), "--help lists `{command}`:\n{help}");
    }
}

#[tokio::test]
async fn serve_is_the_default_command_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokengate(dir.path());
    command
        .args(["--bind", "127.0.0.1:0", "--jwt-secret", TEST_SECRET])
        .arg("--database")
        .arg(dir.path().join("tokengate.db"));
    let server = ServerProcess::start(command);

    let health = reqwest::get(format!("{}/health", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(health, r#"{"status":"ok"}"#);

    let output = server.terminate();
    assert!(
        output.status.success(),
        "a SIGTERM stops the server with exit 0: {:?} {}",
        output.status,
        stderr(&output)
    );
    assert!(
        !dir.path().join("jwt-secret").exists(),
        "a configured secret writes no file"
    );
}

#[tokio::test]
async fn serve_reads_its_settings_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env.db");
    let mut command = tokengate(dir.path());
    command
        .env("TOKENGATE_BIND", "127.0.0.1:0")
        .env("TOKENGATE_DATABASE", &db)
        .env("TOKENGATE_JWT_SECRET", TEST_SECRET)
        .env("TOKENGATE_REGISTRATION", "closed");
    let server = ServerProcess::start(command);

    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/register", server.url))
        .json(&serde_json::json!({"name": "Ada", "email": "ada@example.com", "password": "long enough"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();

    let output = server.terminate();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "registration_closed");
    assert!(
        db.exists(),
        "the database named by TOKENGATE_DATABASE is used"
    );
}

#[tokio::test]
async fn every_request_gets_one_log_line_without_tokens_or_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::serve(dir.path());
    let client = reqwest::Client::new();
    let password = "a password that must never be logged";
    let created = client
        .post(format!("{}/api/v1/register", server.url))
        .json(&serde_json::json!({"name": "Log", "email": "log@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let login: serde_json::Value = client
        .post(format!("{}/api/v1/login", server.url))
        .json(&serde_json::json!({"email": "log@example.com", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let user = client
        .get(format!("{}/api/v1/user?token={token}", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), StatusCode::OK);

    let (output, log) = server.terminate_with_log();
    assert!(output.status.success());
    let requests: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("tokengate::http"))
        .collect();
    assert_eq!(requests.len(), 3, "one line per request: {requests:#?}");
    for (line, (method, path, status)) in requests.iter().zip([
        ("POST", "/api/v1/register", "201"),
        ("POST", "/api/v1/login", "200"),
        ("GET", "/api/v1/user", "200"),
    ]) {
        for part in [
            format!("method={method}"),
            format!("path={path} "),
            format!("status={status}"),
            "latency_us=".to_owned(),
        ] {
            assert!(line.contains(&part), "{part} in {line}");
        }
    }
    let signature = token.rsplit('.').next().unwrap();
    for line in &log {
        assert!(!line.contains(password), "a password was logged: {line}");
        assert!(!line.contains(signature), "a token was logged: {line}");
        assert!(!line.contains(TEST_SECRET), "the secret was logged: {line}");
    }
}

#[test]
fn database_from_a_newer_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("future.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let child = tokengate(dir.path())
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--jwt-secret",
            TEST_SECRET,
            "--database",
        ])
        .arg(&db)
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, DEADLINE);
    let line = assert_refused_with_one_line(&output);
    assert!(line.contains("newer"), "the line says why: {line}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 99);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tables, ["future"], "no migration ran on it");
}

#[tokio::test]
async fn user_revoke_logs_a_user_out_everywhere_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let app = spawn_app_with(|s| s.database = db.clone()).await;
    let user = app.register_user("ada@example.com").await;
    let bystander = app.register_user("grace@example.com").await;
    let a = app.login_pair(&user).await;
    let b = app.login_pair(&user).await;
    let theirs = app.login_pair(&bystander).await;

    let output = run(
        dir.path(),
        &[
            "user",
            "revoke",
            "--email",
            "ADA@example.com",
            "--database",
            db.to_str().unwrap(),
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(first_number(&stdout(&output)), 2, "{}", stdout(&output));
    for pair in [&a, &b] {
        app.assert_refused(&pair.access).await;
        app.assert_grant_refused(&pair.refresh).await;
    }
    app.assert_accepted(&theirs.access).await;
    // A login afterwards works.
    let fresh = app.login_pair(&user).await;
    app.assert_accepted(&fresh.access).await;

    let unknown = run(
        dir.path(),
        &[
            "user",
            "revoke",
            "--email",
            "nobody@example.com",
            "--database",
            db.to_str().unwrap(),
        ],
        "",
    );
    let line = assert_refused_with_one_line(&unknown);
    assert!(line.contains("nobody@example.com"), "{line}");
}
