//! `POST /api/v1/login`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, challenge, spawn_app, spawn_app_with, AUDIENCE, ISSUER, PASSWORD,
    PLAIN_CHALLENGE, TEST_SECRET,
};

#[tokio::test]
async fn login_answers_200_with_a_bearer_token() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;

    let response = app.login(&user.email, &user.password).await;

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_at",
            "expires_in",
            "refresh_expires_at",
            "refresh_token",
            "token_type"
        ],
        "{body}"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600, "the default TTL: {body}");
    let expires_at = DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339")
        .with_timezone(&Utc);
    let expected = Utc::now() + chrono::Duration::seconds(3600);
    assert!(
        (expires_at - expected).num_seconds().abs() <= 5,
        "expires_at is now + expires_in: {expires_at} vs {expected}"
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a compact JWS: {token}");
}

#[tokio::test]
async fn login_token_is_an_hs256_jwt_with_the_contract_claims() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;

    let token = app.login_token(&user).await;

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "sub", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(TEST_SECRET.as_bytes()),
        &validation,
    )
    .expect("the token verifies with the configured secret")
    .claims;
    assert_eq!(
        claims["sub"],
        user.id.to_string(),
        "sub is the id as a string"
    );
    let now = Utc::now().timestamp();
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now).abs() <= 5, "iat is now: {claims}");
    assert!(claims["nbf"].as_i64().unwrap() <= now + 1, "{claims}");
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 3600, "{claims}");
    let jti = claims["jti"].as_str().expect("jti is a string");
    assert!(
        jti.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "jti is URL-safe: {jti}"
    );
    // 128 bits are at least 22 base64url characters.
    assert!(jti.len() >= 22, "jti carries at least 128 bits: {jti}");
}

#[tokio::test]
async fn each_login_issues_a_different_jti() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    let first = crate::helpers::claims_of(&app.login_token(&user).await);
    let second = crate::helpers::claims_of(&app.login_token(&user).await);
    assert_ne!(first["jti"], second["jti"]);
}

#[tokio::test]
async fn login_uses_the_configured_ttl_issuer_and_audience() {
    let app = spawn_app_with(|s| {
        s.token_ttl = 120;
        s.issuer = "https://auth.example.com".into();
        s.audience = "spa".into();
    })
    .await;
    let user = app.register_user("ada@example.com").await;

    let response = app.login(&user.email, &user.password).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 120);
    let token = body["access_token"].as_str().unwrap();
    let claims = crate::helpers::claims_of(token);
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(claims["aud"], "spa");
    let response = app.current_user_with(token).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_compares_the_email_case_insensitively() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;

    let response = app.login("ADA@Example.com", &user.password).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_with_a_wrong_password_answers_401_invalid_credentials() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;

    let response = app.login(&user.email, "wrong password").await;

    let (headers, _) =
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(challenge(&headers).as_deref(), Some(PLAIN_CHALLENGE));
}

#[tokio::test]
async fn login_answers_unknown_email_and_wrong_password_identically() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;

    let wrong_password = app.login(&user.email, "wrong password").await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;

    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_email.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(wrong_password.headers()),
        challenge(unknown_email.headers())
    );
    assert_eq!(
        wrong_password.headers().get(CONTENT_TYPE),
        unknown_email.headers().get(CONTENT_TYPE)
    );
    let wrong_password = wrong_password.bytes().await.unwrap();
    let unknown_email = unknown_email.bytes().await.unwrap();
    assert_eq!(wrong_password, unknown_email, "byte-identical bodies");
    let body: Value = serde_json::from_slice(&unknown_email).unwrap();
    assert_eq!(body["error"], "invalid_credentials");
}

#[tokio::test]
async fn login_failures_take_about_as_long_for_unknown_and_known_emails() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;

    // Medians of several of each; different unknown addresses, and fewer
    // failures than the limit for the known one, so nothing is throttled.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..4 {
        let started = Instant::now();
        let response = app.login(&user.email, "wrong password").await;
        known.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        let started = Instant::now();
        let response = app.login(&format!("nobody{i}@example.com"), PASSWORD).await;
        unknown.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2], unknown[2]);
    // Skipping the hash for unknown addresses makes them orders of magnitude
    // faster; the bound is loose enough for a busy machine.
    assert!(
        unknown * 4 >= known && known * 4 >= unknown,
        "unknown e-mail took {unknown:?}, wrong password {known:?}"
    );
    assert!(
        known > Duration::from_millis(1),
        "a password hash is checked"
    );
}

#[tokio::test]
async fn login_with_invalid_fields_answers_422_per_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), vec!["email", "password"]),
        (json!({"email": "ada@example.com"}), vec!["password"]),
        (json!({"password": PASSWORD}), vec!["email"]),
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            vec!["email"],
        ),
        (
            json!({"email": "Ada <ada@example.com>", "password": PASSWORD}),
            vec!["email"],
        ),
        (
            json!({"email": "ada@[192.0.2.1]", "password": PASSWORD}),
            vec!["email"],
        ),
        (
            json!({"email": format!("{}@example.com", "a".repeat(60_000)), "password": PASSWORD}),
            vec!["email"],
        ),
        (
            json!({"email": "ada@example.com", "password": "short"}),
            vec!["password"],
        ),
        (
            json!({"email": "ada@example.com", "password": "p".repeat(1025)}),
            vec!["password"],
        ),
        (
            json!({"email": 1, "password": 2}),
            vec!["email", "password"],
        ),
    ];
    for (body, fields) in cases {
        let response = app.post_json("/api/v1/login", &body).await;
        let (_, error) = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let mut reported: Vec<&str> = error["fields"]
            .as_object()
            .unwrap_or_else(|| panic!("a 422 has fields: {error}"))
            .keys()
            .map(String::as_str)
            .collect();
        reported.sort_unstable();
        assert_eq!(reported, fields, "fields for {body}: {error}");
    }
}

#[tokio::test]
async fn login_with_malformed_json_answers_400() {
    let app = spawn_app().await;
    let response = app
        .post_raw("/api/v1/login", Some("application/json"), "{\"email\": ")
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn login_with_another_content_type_answers_415() {
    let app = spawn_app().await;
    let response = app
        .post_raw(
            "/api/v1/login",
            Some("application/x-www-form-urlencoded"),
            "email=ada%40example.com&password=secret123",
        )
        .await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}
