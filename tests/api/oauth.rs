//! RFC 7662 token introspection and RFC 7009 token revocation: who may ask,
//! what each kind of token is said to be (and that the answer agrees with
//! the authenticated routes), that asking never counts as a use, what
//! revocation ends (everywhere, durably, also after a restart), the form
//! bodies and their errors, the `--introspection-clients` configuration and
//! the OpenAPI document.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokengate::config::{ClientCredentials, JwtAlgorithm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    assert_error, assert_invalid_grant, b64, challenge, claims_of, forge, forge_with, now,
    spawn_app_with, tokengate, valid_claims, wait_with_deadline, Pair, ServerProcess, TestApp,
    TestUser, PROCESS_DEADLINE, TEST_KEYS_RELOAD_MS, TEST_SECRET,
};

/// The resource server of every test server here.
const CLIENT_ID: &str = "orders-api";
/// Its secret (at least 32 bytes).
const CLIENT_SECRET: &str = "orders-api-introspection-secret-0123456789";
/// The challenge of `401 invalid_client`.
const BASIC_CHALLENGE: &str = "Basic realm=\"tokengate\"";
const INTROSPECT: &str = "/api/v1/token/introspect";
const REVOKE: &str = "/api/v1/token/revoke";
const FORM: &str = "application/x-www-form-urlencoded";

fn resource_server() -> ClientCredentials {
    ClientCredentials::new(CLIENT_ID, CLIENT_SECRET)
}

/// A test server with [`CLIENT_ID`] as introspection client.
async fn oauth_app() -> TestApp {
    spawn_app_with(|s| s.introspection_clients = vec![resource_server()]).await
}

async fn oauth_app_with_user() -> (TestApp, TestUser) {
    let app = oauth_app().await;
    let user = app.register_user("ada@example.com").await;
    (app, user)
}

/// `a=1&b=2`, form-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `Basic base64(id:secret)`.
fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// `POST path` with a form body and the given `Authorization` header.
async fn post_form(
    app: &TestApp,
    path: &str,
    authorization: Option<&str>,
    pairs: &[(&str, &str)],
) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header(CONTENT_TYPE, FORM)
        .body(form(pairs));
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    request.send().await.unwrap()
}

/// Introspection as the configured resource server.
async fn introspect_with(app: &TestApp, pairs: &[(&str, &str)]) -> Response {
    post_form(
        app,
        INTROSPECT,
        Some(&basic(CLIENT_ID, CLIENT_SECRET)),
        pairs,
    )
    .await
}

/// Asserts an introspection answer (200, JSON, `no-store`) and returns it.
async fn introspection_answer(response: Response) -> Value {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "introspection: {text}");
    assert_eq!(headers[CACHE_CONTROL], "no-store");
    assert!(headers[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    serde_json::from_str(&text).unwrap()
}

/// What introspection says about `token` (no hint).
async fn introspect(app: &TestApp, token: &str) -> Value {
    introspection_answer(introspect_with(app, &[("token", token)]).await).await
}

/// What introspection says about `token` with `token_type_hint=hint`.
async fn introspect_hinted(app: &TestApp, token: &str, hint: &str) -> Value {
    introspection_answer(introspect_with(app, &[("token", token), ("token_type_hint", hint)]).await)
        .await
}

/// Asserts introspection answers exactly `{"active": false}`, with every hint.
async fn assert_inactive(app: &TestApp, token: &str) {
    assert_eq!(introspect(app, token).await, json!({"active": false}));
    for hint in ["access_token", "refresh_token"] {
        assert_eq!(
            introspect_hinted(app, token, hint).await,
            json!({"active": false}),
            "hint {hint}"
        );
    }
}

/// The field names of an object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// Asserts introspection calls `token` an active access token whose fields
/// are its claims, `iss`/`aud` as configured.
async fn assert_active_access_token(app: &TestApp, token: &str, user_id: i64) {
    let claims = claims_of(token);
    for answer in [
        introspect(app, token).await,
        introspect_hinted(app, token, "access_token").await,
        introspect_hinted(app, token, "refresh_token").await,
    ] {
        assert_eq!(
            answer,
            json!({
                "active": true,
                "token_type": "access_token",
                "sub": user_id.to_string(),
                "exp": claims["exp"],
                "iat": claims["iat"],
                "nbf": claims["nbf"],
                "jti": claims["jti"],
                "sid": claims["sid"],
                "iss": "tokengate",
                "aud": "tokengate",
            })
        );
    }
}

/// Asserts introspection calls `refresh` the active refresh token of session
/// `sid` of user `user_id`, expiring a refresh TTL (the default) from now.
async fn assert_active_refresh_token(app: &TestApp, refresh: &str, sid: &str, user_id: i64) {
    for answer in [
        introspect(app, refresh).await,
        introspect_hinted(app, refresh, "refresh_token").await,
        introspect_hinted(app, refresh, "access_token").await,
    ] {
        assert_eq!(
            keys(&answer),
            ["active", "exp", "sid", "sub", "token_type"],
            "{answer}"
        );
        assert_eq!(answer["active"], true);
        assert_eq!(answer["token_type"], "refresh_token");
        assert_eq!(answer["sub"], user_id.to_string());
        assert_eq!(answer["sid"], sid);
        let exp = answer["exp"].as_i64().unwrap();
        let expected = now() + 1_209_600;
        assert!((exp - expected).abs() <= 5, "exp {exp} vs {expected}");
    }
}

/// `POST /api/v1/token/revoke` without credentials.
async fn revoke(app: &TestApp, pairs: &[(&str, &str)]) -> Response {
    post_form(app, REVOKE, None, pairs).await
}

/// Asserts the revocation answer: `200` with an empty body.
async fn assert_revoked_answer(response: Response) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(body.is_empty(), "an empty body: {body:?}");
    assert!(headers.get(CONTENT_TYPE).is_none(), "{headers:?}");
}

/// Asserts `401 invalid_client` with the Basic challenge.
async fn assert_invalid_client(response: Response) {
    let (headers, _) = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    assert_eq!(challenge(&headers).as_deref(), Some(BASIC_CHALLENGE));
}

fn revoked_rows(app: &TestApp) -> i64 {
    app.db()
        .query_row(
            "SELECT count(*) FROM revocations WHERE jti NOT LIKE 's:%'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

// --- introspection of access tokens -------------------------------------------

#[tokio::test]
async fn a_valid_access_token_is_active_with_its_claims() {
    let (app, user) = oauth_app_with_user().await;
    let pair = app.login_pair(&user).await;
    assert_active_access_token(&app, &pair.access, user.id).await;
    // Asking changed nothing: the token still works.
    app.assert_accepted(&pair.access).await;
}

#[tokio::test]
async fn a_v1_token_without_sid_is_active_without_sid() {
    let (app, user) = oauth_app_with_user().await;
    let token = forge(&valid_claims(user.id));
    let answer = introspect(&app, &token).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(
        keys(&answer),
        [
            "active",
            "aud",
            "exp",
            "iat",
            "iss",
            "jti",
            "nbf",
            "sub",
            "token_type"
        ]
    );
}

#[tokio::test]
async fn a_logged_out_access_token_is_inactive() {
    let (app, user) = oauth_app_with_user().await;
    let pair = app.login_pair(&user).await;
    assert_eq!(
        app.logout_with(&pair.access).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_inactive(&app, &pair.access).await;
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_access_token_is_inactive() {
    let (app, user) = oauth_app_with_user().await;
    let mut expired = valid_claims(user.id);
    expired["exp"] = json!(now() - 120);
    expired["iat"] = json!(now() - 720);
    expired["nbf"] = json!(now() - 720);
    assert_inactive(&app, &forge(&expired)).await;
    let mut early = valid_claims(user.id);
    early["nbf"] = json!(now() + 300);
    assert_inactive(&app, &forge(&early)).await;
}

#[tokio::test]
async fn an_access_token_of_an_ended_session_is_inactive() {
    let (app, user) = oauth_app_with_user().await;
    let first = app.login_pair(&user).await;
    let second = app.refresh_pair(&first.refresh).await;
    // Logging out with the second token ends the session of both.
    assert_eq!(
        app.logout_with(&second.access).await.status(),
        StatusCode::NO_CONTENT
    );
    app.assert_refused(&first.access).await;
    assert_inactive(&app, &first.access).await;

    // Deleting a session from another one ends it too.
    let doomed = app.login_pair(&user).await;
    let other = app.login_pair(&user).await;
    assert_eq!(
        app.delete_session(&other.access, &doomed.sid())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_inactive(&app, &doomed.access).await;
    assert_active_access_token(&app, &other.access, user.id).await;
}

#[tokio::test]
async fn access_tokens_issued_before_a_global_logout_are_inactive() {
    let (app, user) = oauth_app_with_user().await;
    let elsewhere = app.login_pair(&user).await;
    let v1 = forge(&valid_claims(user.id));
    let here = app.login_pair(&user).await;
    assert_eq!(
        app.logout_query(&here.access, "scope=global")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    for token in [&elsewhere.access, &v1, &here.access] {
        assert_inactive(&app, token).await;
    }
    // A login after it is active.
    let after = app.login_pair(&user).await;
    assert_active_access_token(&app, &after.access, user.id).await;
}

#[tokio::test]
async fn garbage_forged_and_foreign_tokens_are_inactive() {
    let (app, user) = oauth_app_with_user().await;
    let pair = app.login_pair(&user).await;
    let unknown_user = valid_claims(999_999);
    let mut other_audience = valid_claims(user.id);
    other_audience["aud"] = json!("someone-else");
    let tampered = {
        let mut parts: Vec<String> = pair.access.split('.').map(str::to_owned).collect();
        let mut claims = claims_of(&pair.access);
        claims["sub"] = json!("2");
        parts[1] = b64(claims.to_string().as_bytes());
        parts.join(".")
    };
    for token in [
        "not-a-token".to_owned(),
        "a.b.c".to_owned(),
        " ".to_owned(),
        "x".repeat(10_000),
        forge(&unknown_user),
        forge(&other_audience),
        forge_with(
            jsonwebtoken::Algorithm::HS256,
            b"another-secret-of-at-least-32-bytes!!",
            &valid_claims(user.id),
        ),
        tampered,
        format!("{}.{}", pair.sid(), "A".repeat(43)),
    ] {
        assert_inactive(&app, &token).await;
    }
}

#[tokio::test]
async fn eddsa_and_es256_access_tokens_are_introspected_like_hs256_ones() {
    for algorithm in [JwtAlgorithm::EdDsa, JwtAlgorithm::Es256] {
        let app = spawn_app_with(|s| {
            s.jwt_algorithm = algorithm;
            s.keys_reload_ms = TEST_KEYS_RELOAD_MS;
            s.introspection_clients = vec![resource_server()];
        })
        .await;
        let user = app.register_user("ada@example.com").await;
        let pair = app.login_pair(&user).await;
        assert_active_access_token(&app, &pair.access, user.id).await;
        assert_active_refresh_token(&app, &pair.refresh, &pair.sid(), user.id).await;
        // An HS256 token made with the old shared secret is nothing here.
        assert_inactive(&app, &forge(&valid_claims(user.id))).await;
        assert_eq!(
            app.logout_with(&pair.access).await.status(),
            StatusCode::NO_CONTENT
        );
        assert_inactive(&app, &pair.access).await;
        assert_inactive(&app, &pair.refresh).await;
    }
}

// --- introspection of refresh tokens ------------------------------------------

#[tokio::test]
async fn only_the_current_refresh_token_is_active() {
    let (app, user) = oauth_app_with_user().await;
    let first = app.login_pair(&user).await;
    assert_active_refresh_token(&app, &first.refresh, &first.sid(), user.id).await;
    let second = app.refresh_pair(&first.refresh).await;
    assert_active_refresh_token(&app, &second.refresh, &first.sid(), user.id).await;
    assert_inactive(&app, &first.refresh).await; // previous
    let third = app.refresh_pair(&second.refresh).await;
    assert_inactive(&app, &first.refresh).await; // older
    assert_inactive(&app, &second.refresh).await; // previous
    assert_active_refresh_token(&app, &third.refresh, &first.sid(), user.id).await;
    // A refresh token is not an access token, nor the other way round.
    assert_ne!(
        introspect(&app, &third.access).await["token_type"],
        "refresh_token"
    );
}

#[tokio::test]
async fn introspecting_previous_and_older_refresh_tokens_never_counts_as_reuse() {
    // With no reuse interval, presenting a previous token to refresh would
    // end the session at once; introspecting it must not.
    let app = spawn_app_with(|s| {
        s.introspection_clients = vec![resource_server()];
        s.refresh_reuse_interval = 0;
    })
    .await;
    let user = app.register_user("ada@example.com").await;
    let first = app.login_pair(&user).await;
    let second = app.refresh_pair(&first.refresh).await;
    let third = app.refresh_pair(&second.refresh).await;
    for _ in 0..3 {
        assert_inactive(&app, &second.refresh).await;
        assert_inactive(&app, &first.refresh).await;
        assert_active_refresh_token(&app, &third.refresh, &first.sid(), user.id).await;
    }
    // The session is intact: its tokens work and its refresh token rotates.
    app.assert_accepted(&third.access).await;
    app.assert_accepted(&first.access).await;
    let fourth = app.refresh_pair(&third.refresh).await;
    app.assert_accepted(&fourth.access).await;
    // Introspection wrote nothing: no session row changed since that refresh.
    let last_used: i64 = app
        .db()
        .query_row(
            "SELECT last_used_at_ms FROM sessions WHERE id = ?1",
            [first.sid()],
            |r| r.get(0),
        )
        .unwrap();
    introspect(&app, &fourth.refresh).await;
    introspect(&app, &third.refresh).await;
    let after: i64 = app
        .db()
        .query_row(
            "SELECT last_used_at_ms FROM sessions WHERE id = ?1",
            [first.sid()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(after, last_used);
}

#[tokio::test]
async fn refresh_tokens_of_ended_or_expired_sessions_are_inactive() {
    let (app, user) = oauth_app_with_user().await;
    let logged_out = app.login_pair(&user).await;
    assert_eq!(
        app.logout_with(&logged_out.access).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_inactive(&app, &logged_out.refresh).await;

    let expired = app.login_pair(&user).await;
    app.db()
        .execute(
            "UPDATE sessions SET refresh_expires_at = ?1 WHERE id = ?2",
            rusqlite::params![now() - 1, expired.sid()],
        )
        .unwrap();
    assert_inactive(&app, &expired.refresh).await;

    let too_old = app.login_pair(&user).await;
    app.db()
        .execute(
            "UPDATE sessions SET max_expires_at = ?1 WHERE id = ?2",
            rusqlite::params![now() - 1, too_old.sid()],
        )
        .unwrap();
    assert_inactive(&app, &too_old.refresh).await;

    let kept = app.login_pair(&user).await;
    let global = app.login_pair(&user).await;
    assert_eq!(
        app.logout_query(&global.access, "scope=global")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_inactive(&app, &kept.refresh).await;
}

#[tokio::test]
async fn any_hint_only_changes_the_order_of_the_checks() {
    let (app, user) = oauth_app_with_user().await;
    let pair = app.login_pair(&user).await;
    for hint in ["access_token", "refresh_token", "something_else", ""] {
        let access = introspect_hinted(&app, &pair.access, hint).await;
        assert_eq!(access["token_type"], "access_token", "hint {hint:?}");
        let refresh = introspect_hinted(&app, &pair.refresh, hint).await;
        assert_eq!(refresh["token_type"], "refresh_token", "hint {hint:?}");
    }
}

// --- who may introspect -------------------------------------------------------

#[tokio::test]
async fn introspection_without_the_right_basic_credentials_is_401() {
    let (app, user) = oauth_app_with_user().await;
    let pair = app.login_pair(&user).await;
    let body = [("token", pair.access.as_str())];
    let wrong = [
        None,
        Some(format!("Bearer {}", pair.access)),
        Some(basic(CLIENT_ID, "wrong-secret-wrong-secret-wrong-secret")),
        Some(basic(CLIENT_ID, &CLIENT_SECRET[..CLIENT_SECRET.len() - 1])),
        Some(basic(CLIENT_ID, &format!("{CLIENT_SECRET}x"))),
        Some(basic(CLIENT_ID, "")),
        Some(basic("unknown-client", CLIENT_SECRET)),
        Some(basic("", CLIENT_SECRET)),
        Some(basic(&CLIENT_ID.to_uppercase(), CLIENT_SECRET)),
        Some("Basic".to_owned()),
        Some("Basic !!!not-base64!!!".to_owned()),
        Some(format!("Basic {}", b64(b"no-colon-at-all"))),
        Some(format!("Basic {}", "A".repeat(20_000))),
    ];
    for authorization in &wrong {
        let response = post_form(&app, INTROSPECT, authorization.as_deref(), &body).await;
        assert_invalid_client(response).await;
    }
    // The scheme is case-insensitive, padding optional.
    let right = basic(CLIENT_ID, CLIENT_SECRET);
    let lower = right.replacen("Basic", "basic", 1);
    let unpadded = right.trim_end_matches('=').to_owned();
    for authorization in [right, lower, unpadded] {
        let response = post_form(&app, INTROSPECT, Some(&authorization), &body).await;
        assert_eq!(introspection_answer(response).await["active"], true);
    }
    app.assert_still_serving().await;
}

#[tokio::test]
async fn client_credentials_may_be_form_encoded_as_rfc_6749_says() {
    let secret = "a+b/c=d:e%f-0123456789-0123456789-0123456789";
    let app = spawn_app_with(|s| {
        s.introspection_clients = vec![ClientCredentials::new("rs.1", secret)];
    })
    .await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    let body = [("token", token.as_str())];
    let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    assert_ne!(encoded, secret);
    for sent in [secret, encoded.as_str()] {
        let response = post_form(&app, INTROSPECT, Some(&basic("rs.1", sent)), &body).await;
        assert_eq!(
            introspection_answer(response).await["active"],
            true,
            "{sent}"
        );
    }
    let response = post_form(&app, INTROSPECT, Some(&basic("rs.1", "a")), &body).await;
    assert_invalid_client(response).await;
}

#[tokio::test]
async fn every_configured_client_may_introspect() {
    let other_secret = "billing-api-introspection-secret-9876543210";
    let app = spawn_app_with(|s| {
        s.introspection_clients = vec![
            resource_server(),
            ClientCredentials::new("billing-api", other_secret),
        ];
    })
    .await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    let body = [("token", token.as_str())];
    for (id, secret) in [(CLIENT_ID, CLIENT_SECRET), ("billing-api", other_secret)] {
        let response = post_form(&app, INTROSPECT, Some(&basic(id, secret)), &body).await;
        assert_eq!(introspection_answer(response).await["active"], true);
    }
    // One client's secret is not another's.
    let response = post_form(
        &app,
        INTROSPECT,
        Some(&basic("billing-api", CLIENT_SECRET)),
        &body,
    )
    .await;
    assert_invalid_client(response).await;
}

#[tokio::test]
async fn without_configured_clients_introspection_is_401_for_everyone() {
    let app = spawn_app_with(|_| {}).await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    for authorization in [
        None,
        Some(basic(CLIENT_ID, CLIENT_SECRET)),
        Some(basic("", "")),
    ] {
        let response = post_form(
            &app,
            INTROSPECT,
            authorization.as_deref(),
            &[("token", &token)],
        )
        .await;
        assert_invalid_client(response).await;
    }
}

// --- introspection requests ---------------------------------------------------

#[tokio::test]
async fn bad_introspection_requests_get_clear_errors() {
    let (app, user) = oauth_app_with_user().await;
    let token = app.login_token(&user).await;
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    for pairs in [
        &[][..],
        &[("token", "")][..],
        &[("token_type_hint", "access_token")][..],
        &[("tok", token.as_str())][..],
        &[("token", token.as_str()), ("token", token.as_str())][..],
        &[
            ("token", token.as_str()),
            ("token_type_hint", "access_token"),
            ("token_type_hint", "refresh_token"),
        ][..],
    ] {
        let response = post_form(&app, INTROSPECT, Some(&auth), pairs).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    // Unknown parameters are ignored (RFC 6749 section 3.2).
    let response = post_form(
        &app,
        INTROSPECT,
        Some(&auth),
        &[("token", &token), ("scope", "x"), ("client_id", "y")],
    )
    .await;
    assert_eq!(introspection_answer(response).await["active"], true);

    // Only form bodies; a charset parameter is fine.
    let json_body = json!({ "token": token }).to_string();
    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let mut request = app
            .client
            .post(app.url(INTROSPECT))
            .header(AUTHORIZATION, &auth)
            .body(json_body.clone());
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap();
        assert_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    let response = app
        .client
        .post(app.url(INTROSPECT))
        .header(AUTHORIZATION, &auth)
        .header(
            CONTENT_TYPE,
            "Application/X-WWW-Form-URLEncoded; charset=UTF-8",
        )
        .body(form(&[("token", &token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(introspection_answer(response).await["active"], true);

    // The client is authenticated before the body is looked at.
    let response = app
        .client
        .post(app.url(INTROSPECT))
        .header(CONTENT_TYPE, "application/json")
        .body(json_body)
        .send()
        .await
        .unwrap();
    assert_invalid_client(response).await;

    // Over 64 KiB: 413, with a length or chunked.
    let big = form(&[("token", &"x".repeat(70_000))]);
    let response = post_form_raw(&app, INTROSPECT, &auth, big.clone()).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        chunked_form_status(&app, INTROSPECT, &auth, &big).await,
        413
    );
    app.assert_still_serving().await;
}

async fn post_form_raw(app: &TestApp, path: &str, authorization: &str, body: String) -> Response {
    app.client
        .post(app.url(path))
        .header(AUTHORIZATION, authorization)
        .header(CONTENT_TYPE, FORM)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Sends `body` chunked (no length), and returns the answer's status.
async fn chunked_form_status(app: &TestApp, path: &str, authorization: &str, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {authorization}\r\n\
         Content-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(read > 0, "the connection closed without an answer");
        answer.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn introspection_fails_closed_when_the_database_is_unusable() {
    if crate::helpers::on_postgres_skip_sqlite_layout() {
        return; // it moves the SQLite file away (postgres.rs stops a server instead)
    }
    let (app, user) = oauth_app_with_user().await;
    // Tokens never asked about yet, so no remembered answer can stand in.
    let pair = app.login_pair(&user).await;
    let db = app.db_path();
    let moved = db.with_extension("moved");
    std::fs::rename(&db, &moved).unwrap();
    for (token, hint) in [
        (&pair.access, "access_token"),
        (&pair.refresh, "refresh_token"),
        (&pair.refresh, "access_token"),
    ] {
        let response = introspect_with(&app, &[("token", token), ("token_type_hint", hint)]).await;
        assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        )
        .await;
    }
    for pairs in [
        [("token", pair.access.as_str())],
        [("token", pair.refresh.as_str())],
    ] {
        assert_error(
            revoke(&app, &pairs).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        )
        .await;
    }
    std::fs::rename(&moved, &db).unwrap();
    assert_active_access_token(&app, &pair.access, user.id).await;
    assert_active_refresh_token(&app, &pair.refresh, &pair.sid(), user.id).await;
}

// --- revocation ---------------------------------------------------------------

#[tokio::test]
async fn revoking_an_access_token_refuses_it_everywhere_also_after_a_restart() {
    let (app, user) = oauth_app_with_user().await;
    let first = app.login_pair(&user).await;
    let sibling = app.refresh_pair(&first.refresh).await; // same session
    assert_revoked_answer(revoke(&app, &[("token", &first.access)]).await).await;

    app.assert_refused(&first.access).await;
    assert_inactive(&app, &first.access).await;
    assert_eq!(
        app.logout_with(&first.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Only that token: its session and the session's other tokens go on.
    app.assert_accepted(&sibling.access).await;
    let next = app.refresh_pair(&sibling.refresh).await;
    // Revoking again, or with a hint, is fine and changes nothing more.
    assert_revoked_answer(
        revoke(
            &app,
            &[
                ("token", &first.access),
                ("token_type_hint", "access_token"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(revoked_rows(&app), 1);

    let app = app.stop().await.restart().await;
    app.assert_refused(&first.access).await;
    assert_inactive(&app, &first.access).await;
    app.assert_accepted(&next.access).await;
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_its_session_also_after_a_restart() {
    let (app, user) = oauth_app_with_user().await;
    let other = app.login_pair(&user).await;
    let first = app.login_pair(&user).await;
    let second = app.refresh_pair(&first.refresh).await;
    assert_revoked_answer(
        revoke(
            &app,
            &[
                ("token", &second.refresh),
                ("token_type_hint", "refresh_token"),
            ],
        )
        .await,
    )
    .await;
    assert_session_ended(&app, &[&first, &second]).await;
    // Another session of the user is untouched.
    app.assert_accepted(&other.access).await;

    let app = app.stop().await.restart().await;
    assert_session_ended(&app, &[&first, &second]).await;
    app.assert_accepted(&other.access).await;
}

/// Asserts the session of `pairs` has ended: every token of it is refused
/// and inactive.
async fn assert_session_ended(app: &TestApp, pairs: &[&Pair]) {
    for pair in pairs {
        app.assert_grant_refused(&pair.refresh).await;
        app.assert_refused(&pair.access).await;
        assert_inactive(app, &pair.refresh).await;
        assert_inactive(app, &pair.access).await;
    }
}

#[tokio::test]
async fn revoking_a_previous_or_older_refresh_token_ends_its_session_too() {
    let (app, user) = oauth_app_with_user().await;
    for generations_back in [1, 2] {
        let first = app.login_pair(&user).await;
        let mut pairs: Vec<Pair> = vec![first];
        for _ in 0..2 {
            let next = app.refresh_pair(&pairs.last().unwrap().refresh).await;
            pairs.push(next);
        }
        let presented = &pairs[pairs.len() - 1 - generations_back];
        // The hint is wrong: it changes nothing.
        assert_revoked_answer(
            revoke(
                &app,
                &[
                    ("token", &presented.refresh),
                    ("token_type_hint", "access_token"),
                ],
            )
            .await,
        )
        .await;
        let current = pairs.last().unwrap();
        app.assert_refused(&current.access).await;
        assert_invalid_grant(app.refresh(&current.refresh).await).await;
    }
}

#[tokio::test]
async fn revoking_an_invalid_token_is_200_and_changes_nothing() {
    let (app, user) = oauth_app_with_user().await;
    let pair = app.login_pair(&user).await;
    let mut expired = valid_claims(user.id);
    expired["exp"] = json!(now() - 120);
    let foreign = forge_with(
        jsonwebtoken::Algorithm::HS256,
        b"another-secret-of-at-least-32-bytes!!",
        &valid_claims(user.id),
    );
    for token in [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        "x".repeat(20_000),
        forge(&expired),
        foreign,
        // Our shape, our session, not its secret.
        format!("{}.{}", pair.sid(), "A".repeat(43)),
        format!("{}.{}", "B".repeat(24), "A".repeat(43)),
    ] {
        for hint in [None, Some("access_token"), Some("refresh_token")] {
            let mut pairs = vec![("token", token.as_str())];
            if let Some(hint) = hint {
                pairs.push(("token_type_hint", hint));
            }
            assert_revoked_answer(revoke(&app, &pairs).await).await;
        }
    }
    assert_eq!(revoked_rows(&app), 0, "no row for a token we did not sign");
    app.assert_accepted(&pair.access).await;
    app.refresh_pair(&pair.refresh).await;
}

#[tokio::test]
async fn bad_revocation_requests_get_clear_errors() {
    let (app, user) = oauth_app_with_user().await;
    let pair = app.login_pair(&user).await;
    for hint in ["id_token", "ACCESS_TOKEN", "", "refresh_token "] {
        let response = revoke(&app, &[("token", &pair.access), ("token_type_hint", hint)]).await;
        assert_error(response, StatusCode::BAD_REQUEST, "unsupported_token_type").await;
    }
    for pairs in [
        &[][..],
        &[("token", "")][..],
        &[("token_type_hint", "access_token")][..],
        &[("token", pair.access.as_str()), ("token", "other")][..],
    ] {
        assert_error(
            revoke(&app, pairs).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    let response = app
        .post_json(REVOKE, &json!({ "token": pair.access }))
        .await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let big = form(&[("token", &"x".repeat(70_000))]);
    let response = post_form_raw(&app, REVOKE, "Bearer x", big.clone()).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        chunked_form_status(&app, REVOKE, "Bearer x", &big).await,
        413
    );
    // None of these revoked anything.
    app.assert_accepted(&pair.access).await;
}

#[tokio::test]
async fn revocation_basic_credentials_are_optional_but_must_be_right_when_sent() {
    let (app, user) = oauth_app_with_user().await;
    let mut pairs: Vec<Pair> = Vec::new();
    for _ in 0..3 {
        pairs.push(app.login_pair(&user).await);
    }
    // Wrong credentials: 401 invalid_client, and nothing is revoked.
    for authorization in [
        basic(CLIENT_ID, "wrong-secret-wrong-secret-wrong-secret"),
        basic("unknown-client", CLIENT_SECRET),
        "Basic !!!".to_owned(),
    ] {
        let response = post_form(
            &app,
            REVOKE,
            Some(&authorization),
            &[("token", &pairs[0].access)],
        )
        .await;
        assert_invalid_client(response).await;
    }
    app.assert_accepted(&pairs[0].access).await;
    // Right ones, none, or a Bearer header (not a client credential): done.
    let right = basic(CLIENT_ID, CLIENT_SECRET);
    let bearer = format!("Bearer {}", pairs[2].access);
    for (authorization, pair) in [
        (Some(right.as_str()), &pairs[0]),
        (None, &pairs[1]),
        (Some(bearer.as_str()), &pairs[2]),
    ] {
        let response = post_form(&app, REVOKE, authorization, &[("token", &pair.access)]).await;
        assert_revoked_answer(response).await;
        app.assert_refused(&pair.access).await;
    }
}

// --- configuration ------------------------------------------------------------

#[test]
fn a_short_or_malformed_client_secret_stops_the_start_with_one_line() {
    let short_secret = "too-short-secret-31-bytes-long!";
    assert_eq!(short_secret.len(), 31);
    for (value, expected) in [
        (format!("{CLIENT_ID}:{short_secret}"), "at least 32 bytes"),
        (format!("no-colon-{short_secret}-and-more-bytes"), "entry 1"),
        (
            format!("{CLIENT_ID}:{CLIENT_SECRET},{CLIENT_ID}:{CLIENT_SECRET}"),
            "more than once",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let child = tokengate(dir.path())
            .args(["serve", "--database", "t.db", "--bind", "127.0.0.1:0"])
            .args(["--jwt-secret", TEST_SECRET])
            .args(["--introspection-clients", &value])
            .spawn()
            .unwrap();
        let output = wait_with_deadline(child, PROCESS_DEADLINE);
        assert!(!output.status.success(), "{value} is refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !stderr.contains(short_secret) && !stderr.contains(CLIENT_SECRET),
            "the secret is never shown: {stderr}"
        );
        assert!(
            !dir.path().join("t.db").exists(),
            "refused before anything is created"
        );
    }
}

#[tokio::test]
async fn clients_come_from_the_environment_too_and_their_secrets_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokengate(dir.path());
    command
        .args(["serve", "--database", "t.db", "--bind", "127.0.0.1:0"])
        .args(["--jwt-secret", TEST_SECRET])
        .env(
            "TOKENGATE_INTROSPECTION_CLIENTS",
            format!("{CLIENT_ID}:{CLIENT_SECRET},"),
        );
    let server = ServerProcess::start(command);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}{INTROSPECT}", server.url))
        .header(AUTHORIZATION, basic(CLIENT_ID, CLIENT_SECRET))
        .header(CONTENT_TYPE, FORM)
        .body(form(&[("token", "nothing")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        introspection_answer(response).await,
        json!({"active": false})
    );
    let (output, log) = server.terminate_with_log();
    assert!(output.status.success());
    assert!(
        !log.iter().any(|line| line.contains(CLIENT_SECRET)),
        "{log:?}"
    );

    // Not in --help either (it shows environment values otherwise).
    let help = tokengate(dir.path())
        .arg("--help")
        .env(
            "TOKENGATE_INTROSPECTION_CLIENTS",
            format!("{CLIENT_ID}:{CLIENT_SECRET}"),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--introspection-clients"), "{text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");

    // Nor in the settings' debug form.
    let app = oauth_app().await;
    assert!(!format!("{:?}", app.settings).contains(CLIENT_SECRET));
}

// --- the document -------------------------------------------------------------

#[tokio::test]
async fn document_describes_introspection_and_revocation() {
    let app = oauth_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let scheme = &doc["components"]["securitySchemes"]["basicAuth"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "basic", "{scheme}");
    let introspect = &doc["paths"][INTROSPECT]["post"];
    let revoke = &doc["paths"][REVOKE]["post"];
    assert_eq!(introspect["operationId"], "introspectToken");
    assert_eq!(revoke["operationId"], "revokeToken");
    assert_eq!(introspect["security"], json!([{"basicAuth": []}]));
    assert_eq!(revoke["security"], json!([{"basicAuth": []}, {}]));
    for (operation, schema) in [
        (introspect, "IntrospectionRequest"),
        (revoke, "RevocationRequest"),
    ] {
        assert_eq!(operation["tags"], json!(["oauth"]));
        let content = operation["requestBody"]["content"].as_object().unwrap();
        assert_eq!(content.keys().collect::<Vec<_>>(), [FORM], "{operation}");
        assert_eq!(
            content[FORM]["schema"]["$ref"],
            format!("#/components/schemas/{schema}")
        );
        for status in ["200", "400", "401", "413", "415", "503"] {
            assert!(
                operation["responses"][status].is_object(),
                "{status} documented: {operation}"
            );
        }
    }
    assert!(revoke["responses"]["200"].get("content").is_none());
    assert_eq!(
        doc["components"]["schemas"]["TokenTypeHint"]["enum"],
        json!(["access_token", "refresh_token"])
    );
    let answer = &doc["components"]["schemas"]["Introspection"];
    assert_eq!(answer["required"], json!(["active"]));
    for field in [
        "active",
        "token_type",
        "sub",
        "exp",
        "iat",
        "nbf",
        "jti",
        "sid",
        "iss",
        "aud",
    ] {
        assert!(answer["properties"][field].is_object(), "{field}");
    }
}
