//! `DELETE /api/v1/logout` and the durable denylist.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;

use serde_json::json;

use crate::helpers::{
    assert_invalid_token, assert_unauthenticated, claims_of, forge, now, spawn_app, spawn_app_with,
    valid_claims,
};

#[tokio::test]
async fn logout_answers_204_with_no_body_and_no_content_type() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;

    let response = app.logout_with(&token).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        response.headers().get(CONTENT_TYPE).is_none(),
        "a 204 has no Content-Type: {:?}",
        response.headers()
    );
    if let Some(length) = response.headers().get(CONTENT_LENGTH) {
        assert_eq!(length, "0");
    }
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "a 204 has no body"
    );
}

#[tokio::test]
async fn logged_out_token_is_rejected_by_current_user() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);

    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );

    assert_invalid_token(app.current_user_with(&token).await).await;
}

#[tokio::test]
async fn second_logout_with_the_same_token_answers_401_invalid_token() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );

    let response = app.logout_with(&token).await;

    assert_invalid_token(response).await;
}

#[tokio::test]
async fn logout_revokes_only_the_presented_token() {
    let app = spawn_app().await;
    let (user, first) = app.user_with_token("ada@example.com").await;
    let second = app.login_token(&user).await;

    assert_eq!(
        app.logout_with(&first).await.status(),
        StatusCode::NO_CONTENT
    );

    assert_invalid_token(app.current_user_with(&first).await).await;
    assert_eq!(
        app.current_user_with(&second).await.status(),
        StatusCode::OK,
        "another token of the same user stays valid"
    );
}

#[tokio::test]
async fn logout_without_authorization_answers_401_unauthenticated() {
    let app = spawn_app().await;
    assert_unauthenticated(app.logout(None).await).await;
    assert_unauthenticated(app.logout(Some("Basic YTpi")).await).await;
}

#[tokio::test]
async fn logout_with_an_invalid_token_answers_401_invalid_token() {
    let app = spawn_app().await;
    assert_invalid_token(app.logout(Some("Bearer ")).await).await;
    assert_invalid_token(app.logout_with("garbage").await).await;
}

#[tokio::test]
async fn logout_accepts_a_lower_case_bearer_scheme() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;

    let response = app.logout(Some(&format!("bearer {token}"))).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(app.current_user_with(&token).await).await;
}

#[tokio::test]
async fn logout_stores_the_jti_until_its_expiry_plus_the_leeway() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    let claims = claims_of(&token);

    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );

    // The 204 comes after the commit: a fresh connection sees the row now,
    // kept until the token's exp plus the server's leeway.
    let purge_after: i64 = app
        .db()
        .query_row(
            "SELECT purge_after FROM revocations WHERE jti = ?1",
            [claims["jti"].as_str().unwrap()],
            |row| row.get(0),
        )
        .expect("the jti is in the denylist");
    assert_eq!(
        purge_after,
        claims["exp"].as_i64().unwrap() + app.settings.leeway as i64
    );
}

#[tokio::test]
async fn revoked_token_is_rejected_after_restart() {
    let app = spawn_app().await;
    let (user, revoked) = app.user_with_token("ada@example.com").await;
    let kept = app.login_token(&user).await;
    assert_eq!(
        app.logout_with(&revoked).await.status(),
        StatusCode::NO_CONTENT
    );

    let app = app.stop().await.restart().await;

    assert_invalid_token(app.current_user_with(&revoked).await).await;
    assert_invalid_token(app.logout_with(&revoked).await).await;
    assert_eq!(
        app.current_user_with(&kept).await.status(),
        StatusCode::OK,
        "an unrevoked token still works after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logouts_of_one_token_revoke_it_exactly_once() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;

    let mut tasks = Vec::new();
    for _ in 0..50 {
        // A client each, so that the requests really run side by side.
        let client = reqwest::Client::new();
        let url = app.url("/api/v1/logout");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let response = client.delete(url).bearer_auth(token).send().await.unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            (status, text)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }

    let no_content = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::NO_CONTENT)
        .count();
    let unauthorized: Vec<&String> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::UNAUTHORIZED)
        .map(|(_, text)| text)
        .collect();
    assert_eq!(no_content, 1, "exactly one 204: {answers:?}");
    assert_eq!(unauthorized.len(), 49, "the rest are 401: {answers:?}");
    for text in unauthorized {
        let body: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(body["error"], "invalid_token", "{body}");
    }
    assert_invalid_token(app.current_user_with(&token).await).await;
}

#[tokio::test]
async fn expired_revocations_are_purged_periodically() {
    let app = spawn_app_with(|s| s.purge_interval = 1).await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );
    let db = app.db();
    db.execute(
        "INSERT INTO revoked_tokens (jti, purge_after) VALUES ('long-expired', ?1)",
        [now() - 86_400],
    )
    .unwrap();
    let count = |jti: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM revocations WHERE jti = ?1",
            [jti],
            |row| row.get(0),
        )
        .unwrap()
    };

    // Poll, boundedly, for the next purge (every second here).
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("long-expired") != 0 {
        assert!(
            Instant::now() < deadline,
            "the expired row was never purged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    assert_eq!(count(&live), 1, "an unexpired revocation is kept");
    assert_invalid_token(app.current_user_with(&token).await).await;
}

#[tokio::test]
async fn a_token_used_just_before_it_is_revoked_elsewhere_is_rejected_right_after() {
    // Reads of a token may be answered from the lookup cache; a revocation
    // committed by anyone (here: another connection, as another tokengate
    // process would) must make the very next read miss it.
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("cached@example.com").await;
    for _ in 0..3 {
        assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);
    }
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    app.db()
        .execute(
            "INSERT INTO revoked_tokens (jti, purge_after) VALUES (?1, ?2)",
            rusqlite::params![jti, now() + 3600],
        )
        .unwrap();
    assert_invalid_token(app.current_user_with(&token).await).await;
    assert_invalid_token(app.logout_with(&token).await).await;
}

#[tokio::test]
async fn revocations_stay_rejected_through_merges_of_the_log_and_a_restart() {
    if crate::helpers::on_postgres_skip_sqlite_layout() {
        return;
    }
    // New revocations are appended to a log and merged into the table keyed
    // by jti every few rows (here 3): a token must be refused at every stage.
    let app = spawn_app_with(|s| s.denylist_merge_rows = 3).await;
    let user = app.register_user("merge@example.com").await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        let token = app.login_token(&user).await;
        assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);
        assert_eq!(
            app.logout_with(&token).await.status(),
            StatusCode::NO_CONTENT
        );
        tokens.push(token);
        for token in &tokens {
            assert_invalid_token(app.current_user_with(token).await).await;
        }
    }
    // Each logout logged two rows (the jti, and the end of its session), and
    // merges moved them into revoked_tokens.
    let (merged, logged): (i64, i64) = app
        .db()
        .query_row(
            "SELECT (SELECT count(*) FROM revoked_tokens), (SELECT count(*) FROM revocation_log)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(merged + logged, 20);
    assert!(
        merged >= 18 && logged <= 2,
        "merged {merged}, in the log {logged}"
    );
    let app = app.stop().await.restart().await;
    for token in &tokens {
        assert_invalid_token(app.current_user_with(token).await).await;
    }
}

#[tokio::test]
async fn a_long_log_is_merged_in_steps_between_commits_and_every_revocation_holds() {
    if crate::helpers::on_postgres_skip_sqlite_layout() {
        return;
    }
    // 10,000 revocations appended to the log by another process. The writer
    // merges a long log a few thousand rows per step, one step after each
    // group commit (no batch waits for a whole merge): at every stage each
    // of them, and each token logged out meanwhile, must be refused.
    let app = spawn_app_with(|s| s.denylist_merge_rows = 1000).await;
    let user = app.register_user("steps@example.com").await;
    let forged = |i: usize| {
        let mut claims = valid_claims(user.id);
        claims["jti"] = json!(format!("bulk-{i:05}"));
        forge(&claims)
    };
    let sample: Vec<String> = [0, 4095, 4096, 7777, 9999].map(forged).to_vec();
    assert_eq!(
        app.current_user_with(&sample[0]).await.status(),
        StatusCode::OK
    );
    app.db()
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
             INSERT INTO revocation_log (jti, purge_after)
             SELECT printf('bulk-%05d', i), ?1 FROM n",
            rusqlite::params![now() + 3600],
        )
        .unwrap();
    let bulk_rows = |app: &crate::helpers::TestApp| -> (i64, i64) {
        app.db()
            .query_row(
                "SELECT (SELECT count(*) FROM revoked_tokens WHERE jti LIKE 'bulk-%'),
                        (SELECT count(*) FROM revocation_log WHERE jti LIKE 'bulk-%')",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap()
    };
    let mut logged_out = Vec::new();
    for round in 0..8 {
        // A login and a logout: two commits, two merge steps.
        let token = app.login_token(&user).await;
        assert_eq!(
            app.logout_with(&token).await.status(),
            StatusCode::NO_CONTENT
        );
        logged_out.push(token);
        for token in sample.iter().chain(&logged_out) {
            assert_invalid_token(app.current_user_with(token).await).await;
        }
        let (merged, logged) = bulk_rows(&app);
        assert!(
            merged + logged >= 10_000,
            "{merged} merged, {logged} logged"
        );
        if round == 0 {
            assert!(
                logged == 10_000 && merged < 10_000,
                "in one piece: {merged}"
            );
        }
    }
    assert_eq!(bulk_rows(&app), (10_000, 0));
    let app = app.stop().await.restart().await;
    for token in sample.iter().chain(&logged_out) {
        assert_invalid_token(app.current_user_with(token).await).await;
    }
}

#[tokio::test]
async fn a_revocation_appended_to_the_log_by_another_process_is_seen_at_once() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("log@example.com").await;
    for _ in 0..3 {
        assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);
    }
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    app.db()
        .execute(
            "INSERT INTO revocation_log (jti, purge_after) VALUES (?1, ?2)",
            rusqlite::params![jti, now() + 3600],
        )
        .unwrap();
    assert_invalid_token(app.current_user_with(&token).await).await;
    assert_invalid_token(app.logout_with(&token).await).await;
}
