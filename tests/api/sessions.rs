//! Sessions (v2): refresh-token rotation with reuse detection, logout
//! scopes, the session list and delete, password change, global logout and
//! what survives a restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, assert_invalid_grant, claims_of, forge, now, spawn_app, spawn_app_with,
    valid_claims, Pair, TestApp, TestUser, PASSWORD,
};

async fn app_with_user() -> (TestApp, TestUser) {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    (app, user)
}

async fn session_ids(app: &TestApp, token: &str) -> Vec<String> {
    let response = app.sessions(token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn login_starts_a_session_with_a_refresh_token_and_sid() {
    let (app, user) = app_with_user().await;
    let response = app.login(&user.email, &user.password).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap_or(""),
        "no-store"
    );
    let body: Value = response.json().await.unwrap();
    let pair = Pair::from_body(&body);
    assert!(pair.refresh.len() >= 43, "256 random bits at least");
    let refresh_expires =
        chrono::DateTime::parse_from_rfc3339(body["refresh_expires_at"].as_str().unwrap()).unwrap();
    let expected = chrono::Utc::now() + chrono::Duration::seconds(1_209_600);
    assert!((refresh_expires.timestamp() - expected.timestamp()).abs() <= 5);
    let claims = claims_of(&pair.access);
    let sid = claims["sid"].as_str().unwrap();
    assert!(sid.len() >= 22, "a sid of 128+ bits: {sid}");
    assert_eq!(session_ids(&app, &pair.access).await, vec![sid.to_owned()]);
    // The refresh token is never stored in the clear.
    let stored: Vec<u8> = app
        .db()
        .query_row("SELECT hash FROM refresh_tokens", [], |row| row.get(0))
        .unwrap();
    let secret = pair.refresh.split_once('.').unwrap().1.as_bytes();
    assert_eq!(stored.len(), 32, "a SHA-256 digest");
    assert!(!stored.windows(8).any(|w| secret.windows(8).any(|s| s == w)));
}

#[tokio::test]
async fn refresh_rotates_and_keeps_the_session() {
    let (app, user) = app_with_user().await;
    let first = app.login_pair(&user).await;
    let second = app.refresh_pair(&first.refresh).await;
    assert_ne!(second.access, first.access);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.sid(), first.sid(), "the same session");
    // Access tokens issued earlier in the session stay valid until their exp.
    app.assert_accepted(&first.access).await;
    app.assert_accepted(&second.access).await;
    let third = app.refresh_pair(&second.refresh).await;
    app.assert_accepted(&third.access).await;
    assert_eq!(session_ids(&app, &third.access).await.len(), 1);
}

#[tokio::test]
async fn previous_refresh_token_within_the_reuse_interval_gets_a_working_pair() {
    let (app, user) = app_with_user().await;
    let first = app.login_pair(&user).await;
    let tab_a = app.refresh_pair(&first.refresh).await;
    // A second tab presents the same (now previous) token: a working pair.
    let tab_b = app.refresh_pair(&first.refresh).await;
    assert_eq!(tab_b.sid(), tab_a.sid());
    for pair in [&tab_a, &tab_b] {
        app.assert_accepted(&pair.access).await;
    }
    // Both tabs' refresh tokens keep working (each once more, as current).
    let a2 = app.refresh_pair(&tab_a.refresh).await;
    app.assert_accepted(&a2.access).await;
}

#[tokio::test]
async fn previous_refresh_token_after_the_reuse_interval_is_theft_and_ends_the_session() {
    let app = spawn_app_with(|s| s.refresh_reuse_interval = 0).await;
    let user = app.register_user("ada@example.com").await;
    let other = app.login_pair(&user).await; // another session, unaffected
    let first = app.login_pair(&user).await;
    let second = app.refresh_pair(&first.refresh).await;

    assert_invalid_grant(app.refresh(&first.refresh).await).await;
    // The session is over: its current refresh token and every access token.
    app.assert_grant_refused(&second.refresh).await;
    app.assert_refused(&second.access).await;
    app.assert_refused(&first.access).await;
    app.assert_accepted(&other.access).await;
    assert_eq!(session_ids(&app, &other.access).await, vec![other.sid()]);
}

#[tokio::test]
async fn an_older_refresh_token_is_theft_even_within_the_reuse_interval() {
    let (app, user) = app_with_user().await;
    let first = app.login_pair(&user).await;
    let second = app.refresh_pair(&first.refresh).await;
    let third = app.refresh_pair(&second.refresh).await;
    assert_invalid_grant(app.refresh(&first.refresh).await).await;
    app.assert_refused(&third.access).await;
    app.assert_grant_refused(&third.refresh).await;
}

#[tokio::test]
async fn twenty_concurrent_refreshes_of_one_token_all_succeed_in_one_session() {
    let (app, user) = app_with_user().await;
    let first = app.login_pair(&user).await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = app.client.clone();
        let url = app.url("/api/v1/token/refresh");
        let body = json!({ "refresh_token": first.refresh });
        attempts.spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        });
    }
    let mut pairs = Vec::new();
    while let Some(done) = attempts.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        pairs.push(Pair::from_body(&body));
    }
    for pair in &pairs {
        assert_eq!(pair.sid(), first.sid());
        app.assert_accepted(&pair.access).await;
    }
    assert_eq!(session_ids(&app, &pairs[0].access).await.len(), 1);
    // The session goes on: the newest pair refreshes.
    let last = pairs.last().unwrap();
    app.refresh_pair(&last.refresh).await;
}

#[tokio::test]
async fn bad_refresh_requests_get_clear_errors_and_change_nothing() {
    let (app, user) = app_with_user().await;
    let pair = app.login_pair(&user).await;
    let truncated = &pair.refresh[..pair.refresh.len() - 1];
    let other_sid = format!("{}{}", "A".repeat(24), &pair.refresh[24..]);
    for bad in [
        "",
        "garbage",
        truncated,
        &format!("{}x", pair.refresh),
        &other_sid,
        &"x".repeat(10_000),
        "' OR 1=1 --",
        &pair.access,
    ] {
        assert_invalid_grant(app.refresh(bad).await).await;
    }
    // A garbage secret for the real session id is not theft.
    let same_sid = format!("{}.{}", pair.sid(), "B".repeat(43));
    assert_invalid_grant(app.refresh(&same_sid).await).await;
    // The wrong field, the wrong type, the wrong media type.
    let response = app
        .post_json("/api/v1/token/refresh", &json!({"token": pair.refresh}))
        .await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let response = app
        .post_json("/api/v1/token/refresh", &json!({"refresh_token": 42}))
        .await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let form = format!("refresh_token={}", pair.refresh);
    let response = app
        .post_raw(
            "/api/v1/token/refresh",
            Some("application/x-www-form-urlencoded"),
            form,
        )
        .await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let response = app
        .post_raw("/api/v1/token/refresh", Some("application/json"), "{")
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    // Nothing was lost: the session and its refresh token still work.
    app.assert_accepted(&pair.access).await;
    app.refresh_pair(&pair.refresh).await;
}

#[tokio::test]
async fn logout_local_ends_the_token_and_its_session_only() {
    let (app, user) = app_with_user().await;
    let other = app.login_pair(&user).await;
    let pair = app.login_pair(&user).await;
    let sibling = app.refresh_pair(&pair.refresh).await; // same session
    let response = app.logout_query(&pair.access, "scope=local").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    app.assert_refused(&pair.access).await;
    app.assert_refused(&sibling.access).await;
    app.assert_grant_refused(&sibling.refresh).await;
    app.assert_accepted(&other.access).await;
    app.refresh_pair(&other.refresh).await;
}

#[tokio::test]
async fn logout_without_scope_is_local() {
    let (app, user) = app_with_user().await;
    let pair = app.login_pair(&user).await;
    let sibling = app.refresh_pair(&pair.refresh).await;
    assert_eq!(
        app.logout_with(&pair.access).await.status(),
        StatusCode::NO_CONTENT
    );
    app.assert_refused(&sibling.access).await;
    app.assert_grant_refused(&sibling.refresh).await;
}

#[tokio::test]
async fn logout_others_ends_every_other_session_and_keeps_this_one() {
    let (app, user) = app_with_user().await;
    let a = app.login_pair(&user).await;
    let b = app.login_pair(&user).await;
    let me = app.login_pair(&user).await;
    let response = app.logout_query(&me.access, "scope=others").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for other in [&a, &b] {
        app.assert_refused(&other.access).await;
        app.assert_grant_refused(&other.refresh).await;
    }
    app.assert_accepted(&me.access).await;
    assert_eq!(session_ids(&app, &me.access).await, vec![me.sid()]);
    app.refresh_pair(&me.refresh).await;
}

#[tokio::test]
async fn logout_global_ends_every_session_and_every_token_issued_until_now() {
    let (app, user) = app_with_user().await;
    let a = app.login_pair(&user).await;
    let me = app.login_pair(&user).await;
    // A token issued before v2 (no sid), forged as the v1 server made them.
    let mut v1 = valid_claims(user.id);
    v1["iat"] = json!(now() - 5);
    let v1 = forge(&v1);
    app.assert_accepted(&v1).await;

    let response = app.logout_query(&me.access, "scope=global").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for pair in [&a, &me] {
        app.assert_refused(&pair.access).await;
        app.assert_grant_refused(&pair.refresh).await;
    }
    app.assert_refused(&v1).await;
    // Logging in again afterwards works.
    let fresh = app.login_pair(&user).await;
    app.assert_accepted(&fresh.access).await;
    assert_eq!(session_ids(&app, &fresh.access).await, vec![fresh.sid()]);
}

#[tokio::test]
async fn a_token_issued_in_the_same_second_as_a_global_logout_is_judged_by_its_order() {
    // Tokens with a sid carry their issue time in microseconds: one issued
    // just before the logout (even in the same second) is rejected, one
    // issued just after is accepted. Repeat until all three steps fell into
    // one second (a second boundary in between proves nothing).
    let (app, user) = app_with_user().await;
    for _ in 0..50 {
        // Set-up outside the timed steps: a session to refresh, and a caller
        // (a token without sid, dated ahead so earlier rounds' marks spare it).
        let session = app.login_pair(&user).await;
        let mut caller = valid_claims(user.id);
        caller["iat"] = json!(now() + 5);
        let caller = forge(&caller);
        // The timed steps: a token issued (by a refresh, no password hash),
        // the global logout, a token issued after it (a login).
        let before = app.refresh_pair(&session.refresh).await;
        let response = app.logout_query(&caller, "scope=global").await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let after = app.login_pair(&user).await;
        let second = |p: &Pair| claims_of(&p.access)["iat"].as_i64().unwrap();
        app.assert_refused(&before.access).await;
        app.assert_accepted(&after.access).await;
        if second(&before) == second(&after) {
            // A token without sid whose iat is that second counts as before.
            let mut v1 = valid_claims(user.id);
            v1["iat"] = json!(second(&after));
            app.assert_refused(&forge(&v1)).await;
            return;
        }
    }
    panic!("never managed three steps within one second");
}

#[tokio::test]
async fn logout_scope_must_be_one_of_the_three_and_given_once() {
    let (app, user) = app_with_user().await;
    let pair = app.login_pair(&user).await;
    for query in [
        "scope=GLOBAL",
        "scope=Local",
        "scope=everything",
        "scope=",
        "scope=local&scope=global",
        "scope=global&scope=global",
    ] {
        let response = app.logout_query(&pair.access, query).await;
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    // Nothing ended.
    app.assert_accepted(&pair.access).await;
    app.refresh_pair(&pair.refresh).await;
}

#[tokio::test]
async fn sessions_list_the_callers_active_sessions_newest_first() {
    let (app, user) = app_with_user().await;
    let other_user = app.register_user("grace@example.com").await;
    let theirs = app.login_pair(&other_user).await;
    let old = app
        .client
        .post(app.url("/api/v1/login"))
        .header("user-agent", "Old Browser/1.0")
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    let old = Pair::from_body(&old.json().await.unwrap());
    let ended = app.login_pair(&user).await;
    assert_eq!(
        app.logout_with(&ended.access).await.status(),
        StatusCode::NO_CONTENT
    );
    let new = app.login_pair(&user).await;

    let response = app.sessions(&new.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let list = body.as_array().unwrap();
    assert_eq!(list.len(), 2, "only the caller's active sessions: {body}");
    assert_eq!(list[0]["id"], new.sid());
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[1]["id"], old.sid());
    assert_eq!(list[1]["current"], false);
    assert_eq!(list[1]["user_agent"], "Old Browser/1.0");
    assert_eq!(list[1]["ip"], "127.0.0.1");
    for session in list {
        for field in ["created_at", "last_used_at", "expires_at"] {
            chrono::DateTime::parse_from_rfc3339(session[field].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{field}: {e}"));
        }
        assert_ne!(session["id"], theirs.sid());
    }
}

#[tokio::test]
async fn reading_routes_never_writes_last_used_at_changes_on_refresh_only() {
    let (app, user) = app_with_user().await;
    let pair = app.login_pair(&user).await;
    let row = |app: &TestApp| -> (i64, i64) {
        app.db()
            .query_row(
                "SELECT last_used_at_ms, (SELECT count(*) FROM refresh_tokens) FROM sessions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let before = row(&app);
    for _ in 0..5 {
        app.assert_accepted(&pair.access).await;
        assert_eq!(app.sessions(&pair.access).await.status(), StatusCode::OK);
    }
    assert_eq!(row(&app), before, "reads wrote nothing");
    tokio::time::sleep(Duration::from_millis(5)).await; // let the clock move on
    app.refresh_pair(&pair.refresh).await;
    assert!(row(&app).0 > before.0, "a refresh updates last_used_at");
}

#[tokio::test]
async fn deleting_a_session_ends_it_and_other_ids_are_404() {
    let (app, user) = app_with_user().await;
    let other_user = app.register_user("grace@example.com").await;
    let theirs = app.login_pair(&other_user).await;
    let me = app.login_pair(&user).await;
    let laptop = app.login_pair(&user).await;

    let response = app.delete_session(&me.access, &laptop.sid()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("content-type").is_none());
    app.assert_refused(&laptop.access).await;
    app.assert_grant_refused(&laptop.refresh).await;
    app.assert_accepted(&me.access).await;

    let long = "a".repeat(10_000);
    for id in [
        laptop.sid(), // already ended
        theirs.sid(), // another user's
        "garbage".to_owned(),
        "1' OR '1'='1".to_owned(),
        "x'; DROP TABLE sessions; --".to_owned(),
        long,
    ] {
        let response = app.delete_session(&me.access, &id).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    app.assert_accepted(&theirs.access).await;

    // Deleting the current session is allowed, and ends it.
    let response = app.delete_session(&me.access, &me.sid()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    app.assert_refused(&me.access).await;
}

#[tokio::test]
async fn password_change_returns_a_new_pair_and_ends_everything_else() {
    let (app, user) = app_with_user().await;
    let other = app.login_pair(&user).await;
    let me = app.login_pair(&user).await;
    let new_password = "a brand new passphrase";
    let response = app
        .change_password(&me.access, PASSWORD, new_password)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap_or(""),
        "no-store"
    );
    let fresh = Pair::from_body(&response.json().await.unwrap());
    assert_eq!(fresh.sid(), me.sid(), "a new pair for the current session");
    // Every token issued before the change is rejected, the caller's too.
    app.assert_refused(&me.access).await;
    app.assert_refused(&other.access).await;
    app.assert_grant_refused(&other.refresh).await;
    app.assert_accepted(&fresh.access).await;
    app.refresh_pair(&fresh.refresh).await;
    assert_eq!(
        app.login(&user.email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&user.email, new_password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn password_change_to_the_same_password_is_allowed_and_still_ends_other_sessions() {
    let (app, user) = app_with_user().await;
    let other = app.login_pair(&user).await;
    let me = app.login_pair(&user).await;
    let response = app.change_password(&me.access, PASSWORD, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = Pair::from_body(&response.json().await.unwrap());
    app.assert_refused(&other.access).await;
    app.assert_accepted(&fresh.access).await;
}

#[tokio::test]
async fn wrong_current_password_is_403_and_counts_as_a_failed_login() {
    let (app, user) = app_with_user().await;
    let me = app.login_pair(&user).await;
    for _ in 0..5 {
        let response = app
            .change_password(&me.access, "not my password", "whatever new one")
            .await;
        assert_error(response, StatusCode::FORBIDDEN, "invalid_credentials").await;
    }
    let response = app
        .change_password(&me.access, PASSWORD, "whatever new one")
        .await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let response = app.login(&user.email, PASSWORD).await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // Nothing changed: the token still works.
    app.assert_accepted(&me.access).await;
}

#[tokio::test]
async fn password_change_validates_its_fields() {
    let (app, user) = app_with_user().await;
    let me = app.login_pair(&user).await;
    let response = app.change_password(&me.access, PASSWORD, "short").await;
    let (_, body) = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["fields"]["new_password"].is_array(), "{body}");
    let response = app
        .client
        .put(app.url("/api/v1/user/password"))
        .header("authorization", format!("Bearer {}", me.access))
        .json(&json!({"new_password": "long enough password"}))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let response = app
        .change_password("garbage", PASSWORD, "long enough")
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.assert_accepted(&me.access).await;
}

#[tokio::test]
async fn a_v1_token_can_change_the_password_and_gets_a_new_session() {
    let (app, user) = app_with_user().await;
    let v1 = forge(&valid_claims(user.id));
    let response = app
        .change_password(&v1, PASSWORD, "a new passphrase!")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = Pair::from_body(&response.json().await.unwrap());
    app.assert_refused(&v1).await;
    app.assert_accepted(&fresh.access).await;
    assert_eq!(session_ids(&app, &fresh.access).await, vec![fresh.sid()]);
}

#[tokio::test]
async fn ended_sessions_and_scopes_survive_a_restart() {
    let (app, user) = app_with_user().await;
    let local = app.login_pair(&user).await;
    let deleted = app.login_pair(&user).await;
    let kept = app.login_pair(&user).await;
    let sibling = app.refresh_pair(&kept.refresh).await;
    assert_eq!(
        app.logout_with(&local.access).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete_session(&kept.access, &deleted.sid())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let app = app.stop().await.restart().await;
    for pair in [&local, &deleted] {
        app.assert_refused(&pair.access).await;
        app.assert_grant_refused(&pair.refresh).await;
    }
    app.assert_accepted(&kept.access).await;
    app.refresh_pair(&sibling.refresh).await;
}

#[tokio::test]
async fn an_expired_session_rejects_its_tokens_before_their_exp() {
    let (app, user) = app_with_user().await;
    let pair = app.login_pair(&user).await;
    app.assert_accepted(&pair.access).await;
    // Its refresh token expired (as if 14 days had passed): the session is over.
    app.db()
        .execute(
            "UPDATE sessions SET refresh_expires_at = ?1 WHERE id = ?2",
            rusqlite::params![now() - 1, pair.sid()],
        )
        .unwrap();
    app.assert_refused(&pair.access).await;
    app.assert_grant_refused(&pair.refresh).await;
    let pair = app.login_pair(&user).await;
    // Its maximum age reached: likewise.
    app.db()
        .execute(
            "UPDATE sessions SET max_expires_at = ?1 WHERE id = ?2",
            rusqlite::params![now() - 1, pair.sid()],
        )
        .unwrap();
    app.assert_refused(&pair.access).await;
    app.assert_grant_refused(&pair.refresh).await;
}

#[tokio::test]
async fn purge_deletes_sessions_no_token_can_name_and_keeps_the_rest() {
    if crate::helpers::on_postgres_skip_sqlite_layout() {
        return;
    }
    let app = spawn_app_with(|s| s.purge_interval = 1).await;
    let user = app.register_user("ada@example.com").await;
    let ended = app.login_pair(&user).await;
    let live = app.login_pair(&user).await;
    app.refresh_pair(&live.refresh).await;
    assert_eq!(
        app.logout_with(&ended.access).await.status(),
        StatusCode::NO_CONTENT
    );
    // The ended session's access tokens have (as if) all expired: its logged
    // end is due, and the purge takes the session with it.
    app.db()
        .execute(
            "UPDATE revocation_log SET purge_after = ?1 WHERE jti = 's:' || ?2",
            rusqlite::params![now() - 1, ended.sid()],
        )
        .unwrap();
    let count = |sql: &str| -> i64 { app.db().query_row(sql, [], |r| r.get(0)).unwrap() };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count("SELECT count(*) FROM sessions") != 1 {
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(
            "SELECT count(*) FROM refresh_tokens WHERE session_id NOT IN (SELECT id FROM sessions)"
        ),
        0,
        "its refresh tokens went with it"
    );
    app.assert_accepted(&live.access).await;
}

#[tokio::test]
async fn session_ends_hold_before_and_after_the_log_is_merged() {
    if crate::helpers::on_postgres_skip_sqlite_layout() {
        return;
    }
    // A session ended one at a time is logged with the denylist (a few pages
    // per group commit), and the log is merged into the keyed table: here
    // after every write.
    let app = spawn_app_with(|s| s.denylist_merge_rows = 1).await;
    let user = app.register_user("ada@example.com").await;
    let kept = app.login_pair(&user).await;
    let logged_out = app.login_pair(&user).await;
    let deleted = app.login_pair(&user).await;
    assert_eq!(
        app.logout_with(&logged_out.access).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete_session(&kept.access, &deleted.sid())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // The writer merges after answering a batch and before taking the next:
    // the first end is in revoked_tokens now, the second may still be logged.
    let (merged, logged): (i64, i64) = app
        .db()
        .query_row(
            "SELECT (SELECT count(*) FROM revoked_tokens WHERE jti LIKE 's:%'),
                    (SELECT count(*) FROM revocation_log WHERE jti LIKE 's:%')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        merged >= 1 && merged + logged == 2,
        "{merged} merged, {logged} logged"
    );
    for pair in [&logged_out, &deleted] {
        app.assert_refused(&pair.access).await;
        app.assert_grant_refused(&pair.refresh).await;
    }
    assert_eq!(session_ids(&app, &kept.access).await, vec![kept.sid()]);
    let app = app.stop().await.restart().await;
    for pair in [&logged_out, &deleted] {
        app.assert_refused(&pair.access).await;
        app.assert_grant_refused(&pair.refresh).await;
    }
    app.refresh_pair(&kept.refresh).await;
}
