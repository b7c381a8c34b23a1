//! `GET /api/v1/user`, and how every authenticated route reads the
//! `Authorization` header.

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_invalid_token, assert_unauthenticated, spawn_app, TestUser};

async fn assert_is_user(response: reqwest::Response, user: &TestUser) {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], user.id);
    assert_eq!(body["name"], user.name.as_str());
    assert_eq!(body["email"], user.email.as_str());
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).is_ok(),
        "created_at is RFC 3339: {body}"
    );
}

#[tokio::test]
async fn current_user_answers_the_tokens_user() {
    let app = spawn_app().await;
    let (user, token) = app.user_with_token("ada@example.com").await;
    app.register_user("other@example.com").await;

    let response = app.current_user_with(&token).await;

    assert_is_user(response, &user).await;
}

#[tokio::test]
async fn current_user_returns_the_same_user_as_register() {
    let app = spawn_app().await;
    let registered: Value = app
        .register("Ada", "Ada@Example.com", crate::helpers::PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let token = app
        .login_token(&TestUser {
            id: registered["id"].as_i64().unwrap(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            password: crate::helpers::PASSWORD.into(),
        })
        .await;

    let current: Value = app.current_user_with(&token).await.json().await.unwrap();

    assert_eq!(current, registered);
}

#[tokio::test]
async fn bearer_scheme_name_is_case_insensitive() {
    let app = spawn_app().await;
    let (user, token) = app.user_with_token("ada@example.com").await;

    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let response = app.current_user(Some(&format!("{scheme} {token}"))).await;
        assert_is_user(response, &user).await;
    }
}

#[tokio::test]
async fn current_user_without_authorization_answers_401_unauthenticated() {
    let app = spawn_app().await;
    let response = app.current_user(None).await;
    assert_unauthenticated(response).await;
}

#[tokio::test]
async fn current_user_with_basic_auth_answers_401_unauthenticated() {
    let app = spawn_app().await;
    let response = app
        .current_user(Some("Basic YWRhQGV4YW1wbGUuY29tOnNlY3JldDEyMw=="))
        .await;
    assert_unauthenticated(response).await;
}

#[tokio::test]
async fn current_user_with_another_scheme_and_a_valid_token_answers_401_unauthenticated() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    for value in [
        format!("Token {token}"),
        format!("Bearerx {token}"),
        token.clone(),
    ] {
        let response = app.current_user(Some(&value)).await;
        assert_unauthenticated(response).await;
    }
}

#[tokio::test]
async fn current_user_with_an_empty_bearer_token_answers_401_invalid_token() {
    let app = spawn_app().await;
    for value in ["Bearer ", "Bearer", "Bearer    "] {
        let response = app.current_user(Some(value)).await;
        assert_invalid_token(response).await;
    }
}

#[tokio::test]
async fn current_user_with_a_garbage_token_answers_401_invalid_token() {
    let app = spawn_app().await;
    for token in [
        "garbage",
        "a.b.c",
        "...",
        "eyJhbGciOiJIUzI1NiJ9",
        "Bearer x",
    ] {
        let response = app.current_user_with(token).await;
        assert_invalid_token(response).await;
    }
}

#[tokio::test]
async fn current_user_with_a_non_utf8_token_answers_401_invalid_token() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/user"))
        .header(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe.\xe9").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_invalid_token(response).await;
    app.assert_still_serving().await;
}

#[tokio::test]
async fn current_user_whose_account_was_deleted_answers_401_invalid_token() {
    let app = spawn_app().await;
    let (user, token) = app.user_with_token("ada@example.com").await;
    app.db()
        .execute("DELETE FROM users WHERE id = ?1", [user.id])
        .unwrap();

    let response = app.current_user_with(&token).await;

    assert_invalid_token(response).await;
}

#[tokio::test]
async fn unreadable_denylist_fails_closed_with_503() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    app.db()
        .execute_batch("DROP TABLE revoked_tokens;")
        .unwrap();

    for response in [
        app.current_user_with(&token).await,
        app.logout_with(&token).await,
    ] {
        crate::helpers::assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        )
        .await;
    }
}
