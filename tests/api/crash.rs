//! Crash safety with a real process, really killed: logouts stream in, the
//! server gets SIGKILL mid-stream, and after a restart on the same database
//! every token that had been answered `204` is still rejected, and the
//! database passes `PRAGMA integrity_check`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::Notify;

use crate::helpers::{forge, valid_claims, ServerProcess, PASSWORD};

/// How the server is stopped mid-stream.
#[derive(Clone, Copy)]
enum Stop {
    Kill,
    Terminate,
}

async fn register(client: &reqwest::Client, address: &str) -> i64 {
    let response = client
        .post(format!("{address}/api/v1/register"))
        .json(&serde_json::json!({"name": "Crash", "email": "crash@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// Fires logouts of distinct tokens from 16 concurrent clients and SIGKILLs
/// the server once `kill_after` of them have been answered 204. Returns the
/// acknowledged tokens and every token that was sent.
async fn logouts_until_stopped(
    server: ServerProcess,
    user_id: i64,
    kill_after: usize,
    stop: Stop,
) -> (Vec<String>, Vec<String>) {
    let tokens: Vec<String> = (0..kill_after * 4 + 64)
        .map(|_| forge(&valid_claims(user_id)))
        .collect();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(Notify::new());
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (tokens, acknowledged, count, reached, next, client, address) = (
            tokens.clone(),
            acknowledged.clone(),
            count.clone(),
            reached.clone(),
            next.clone(),
            client.clone(),
            server.url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(token) = tokens.get(i) else { return };
                let sent = client
                    .delete(format!("{address}/api/v1/logout"))
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status();
                        assert!(
                            status == StatusCode::NO_CONTENT,
                            "a fresh token's logout must be 204 while the server is up, got {status}"
                        );
                        acknowledged.lock().unwrap().push(token.clone());
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                            reached.notify_one();
                        }
                    }
                    // The server was killed under this request.
                    Err(_) => return,
                }
            }
        }));
    }
    reached.notified().await;
    match stop {
        Stop::Kill => server.kill(),
        Stop::Terminate => {
            let status = server.terminate().status;
            assert!(status.success(), "SIGTERM is a clean exit, got {status}");
        }
    }
    for worker in workers {
        worker.await.expect("worker did not panic");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    (acknowledged, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_logouts_survive_sigkill_at_several_points() {
    for kill_after in [1, 25, 150] {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::serve(dir.path());
        let client = reqwest::Client::new();
        let user_id = register(&client, &server.url).await;

        let (acknowledged, sent) =
            logouts_until_stopped(server, user_id, kill_after, Stop::Kill).await;
        assert!(acknowledged.len() >= kill_after);

        let restarted = ServerProcess::serve(dir.path());
        for token in &acknowledged {
            let response = client
                .get(format!("{}/api/v1/user", restarted.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "a token answered 204 before the kill must stay revoked (kill after {kill_after})"
            );
            let challenge = response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(challenge.contains("revoked"), "{challenge}");
        }
        // A token never sent is still good: the restart did not break the service.
        let unsent = forge(&valid_claims(user_id));
        let response = client
            .get(format!("{}/api/v1/user", restarted.url))
            .bearer_auth(&unsent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        restarted.kill();

        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM revocations WHERE jti NOT LIKE 's:%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(rows as usize >= acknowledged.len() && rows as usize <= sent.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_in_flight_logouts_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::serve(dir.path());
    let client = reqwest::Client::new();
    let user_id = register(&client, &server.url).await;

    // Workers assert every answer they get is a 204: in-flight requests are
    // finished during the graceful shutdown, later ones cannot connect.
    let (acknowledged, _) = logouts_until_stopped(server, user_id, 40, Stop::Terminate).await;

    let restarted = ServerProcess::serve(dir.path());
    for token in &acknowledged {
        let response = client
            .get(format!("{}/api/v1/user", restarted.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "acknowledged logout lost"
        );
    }
    restarted.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_through_one_process_is_honoured_by_another_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::serve(dir.path());
    let second = ServerProcess::serve(dir.path());
    let client = reqwest::Client::new();
    let user_id = register(&client, &first.url).await;
    let token = forge(&valid_claims(user_id));
    let user = |address: &str| {
        client
            .get(format!("{address}/api/v1/user"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(user(&second.url).await.unwrap().status(), StatusCode::OK);

    let response = client
        .delete(format!("{}/api/v1/logout", first.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // No cache anywhere: the very next request to the other process sees it.
    assert_eq!(
        user(&second.url).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let again = client
        .delete(format!("{}/api/v1/logout", second.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    first.kill();
    second.kill();
}

#[tokio::test]
async fn clean_shutdown_folds_the_wal_into_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::serve(dir.path());
    let client = reqwest::Client::new();
    let user_id = register(&client, &server.url).await;
    for _ in 0..20 {
        let response = client
            .delete(format!("{}/api/v1/logout", server.url))
            .bearer_auth(forge(&valid_claims(user_id)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let wal = dir.path().join("t.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the revocations went through the WAL"
    );

    // Another process keeps the database open, so SQLite's own checkpoint
    // when the last connection closes does not happen: only the writer's
    // shutdown checkpoint can fold the WAL in.
    let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    let _: i64 = other
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap();

    assert!(server.terminate().status.success());
    // A start after a clean stop has no WAL to replay.
    let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(left, 0, "WAL bytes left after a clean shutdown");
    let rows: i64 = other
        .query_row(
            "SELECT count(*) FROM revocations WHERE jti NOT LIKE 's:%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(rows, 20);
}
