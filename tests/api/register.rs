//! `POST /api/v1/register`.

use chrono::{DateTime, Utc};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokengate::config::Registration;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, PASSWORD};

/// Posts a registration body and expects `422` with problems on exactly `fields`.
async fn assert_rejected_fields(body: Value, fields: &[&str]) {
    let app = spawn_app().await;
    let response = app.post_json("/api/v1/register", &body).await;
    let (_, error) = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let reported = error["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("a 422 has `fields`: {error}"));
    let mut names: Vec<&str> = reported.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, fields, "fields of {body}: {error}");
    for (field, problems) in reported {
        let problems = problems.as_array().expect("problems are a list");
        assert!(
            !problems.is_empty() && problems.iter().all(|p| p.as_str().is_some()),
            "problems of {field} are a non-empty list of strings: {error}"
        );
    }
    // Nothing was created.
    let count: i64 = app
        .db()
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 0, "a rejected registration creates no user");
}

#[tokio::test]
async fn register_creates_a_user_and_answers_201_with_it() {
    let app = spawn_app().await;
    let before = Utc::now();

    let response = app
        .register("Ada Lovelace", "ada@example.com", PASSWORD)
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    let object = body.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "email", "id", "name"],
        "a User has exactly these fields (never the password or its hash): {body}"
    );
    assert!(body["id"].is_i64(), "id is an integer: {body}");
    assert_eq!(body["name"], "Ada Lovelace");
    assert_eq!(body["email"], "ada@example.com");
    let created_at = DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap())
        .expect("created_at is RFC 3339");
    let created_at = created_at.with_timezone(&Utc);
    assert!(
        created_at >= before - chrono::Duration::seconds(2)
            && created_at <= Utc::now() + chrono::Duration::seconds(2),
        "created_at is now: {created_at}"
    );
}

#[tokio::test]
async fn register_stores_the_email_lower_cased() {
    let app = spawn_app().await;

    let response = app
        .register("Ada", "Ada.Lovelace@Example.COM", PASSWORD)
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], "ada.lovelace@example.com");
    let stored: String = app
        .db()
        .query_row("SELECT email FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, "ada.lovelace@example.com");
}

#[tokio::test]
async fn registered_passwords_are_not_stored_in_clear() {
    let app = spawn_app().await;
    app.register_user("ada@example.com").await;

    let hash: String = app
        .db()
        .query_row("SELECT password_hash FROM users", [], |row| row.get(0))
        .unwrap();
    assert!(!hash.contains(PASSWORD), "the password is hashed");
    assert!(
        hash.starts_with("$argon2id$"),
        "argon2id PHC string: {hash}"
    );
}

#[tokio::test]
async fn register_gives_each_user_its_own_id() {
    let app = spawn_app().await;
    let first = app.register_user("one@example.com").await;
    let second = app.register_user("two@example.com").await;
    assert_ne!(first.id, second.id);
}

#[tokio::test]
async fn register_with_a_taken_email_answers_409() {
    let app = spawn_app().await;
    app.register_user("ada@example.com").await;

    let response = app
        .register("Another Ada", "ada@example.com", PASSWORD)
        .await;

    assert_error(response, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test]
async fn register_compares_emails_case_insensitively() {
    let app = spawn_app().await;
    app.register_user("ada@example.com").await;

    let response = app
        .register("Another Ada", "ADA@Example.Com", "another password")
        .await;

    assert_error(response, StatusCode::CONFLICT, "email_taken").await;
    let count: i64 = app
        .db()
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn register_accepts_a_password_of_8_unicode_characters() {
    let app = spawn_app().await;
    // 8 scalar values, 16 bytes.
    let response = app.register("Ada", "ada@example.com", "éééééééé").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app.login("ada@example.com", "éééééééé").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn register_accepts_the_longest_allowed_name_and_password() {
    let app = spawn_app().await;
    let name = "n".repeat(255);
    let password = "p".repeat(1024);
    let response = app.register(&name, "ada@example.com", &password).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], name.as_str());
}

#[tokio::test]
async fn register_rejects_a_password_of_7_unicode_characters() {
    // 7 scalar values but 14 bytes: counting bytes would accept it.
    assert_rejected_fields(
        json!({"name": "Ada", "email": "ada@example.com", "password": "ééééééé"}),
        &["password"],
    )
    .await;
}

#[tokio::test]
async fn register_rejects_a_short_password() {
    assert_rejected_fields(
        json!({"name": "Ada", "email": "ada@example.com", "password": "1234567"}),
        &["password"],
    )
    .await;
}

#[tokio::test]
async fn register_rejects_a_password_over_1024_characters() {
    assert_rejected_fields(
        json!({"name": "Ada", "email": "ada@example.com", "password": "p".repeat(1025)}),
        &["password"],
    )
    .await;
}

#[tokio::test]
async fn register_rejects_an_empty_name() {
    assert_rejected_fields(
        json!({"name": "", "email": "ada@example.com", "password": PASSWORD}),
        &["name"],
    )
    .await;
}

#[tokio::test]
async fn register_rejects_a_name_over_255_characters() {
    assert_rejected_fields(
        json!({"name": "n".repeat(256), "email": "ada@example.com", "password": PASSWORD}),
        &["name"],
    )
    .await;
}

#[tokio::test]
async fn register_rejects_an_invalid_email() {
    for email in ["not-an-email", "ada@", "@example.com", ""] {
        assert_rejected_fields(
            json!({"name": "Ada", "email": email, "password": PASSWORD}),
            &["email"],
        )
        .await;
    }
}

#[tokio::test]
async fn register_reports_every_missing_field() {
    assert_rejected_fields(json!({}), &["email", "name", "password"]).await;
}

#[tokio::test]
async fn register_reports_each_wrongly_typed_field() {
    assert_rejected_fields(
        json!({"name": 42, "email": ["ada@example.com"], "password": true}),
        &["email", "name", "password"],
    )
    .await;
}

#[tokio::test]
async fn register_reports_null_fields_as_missing() {
    assert_rejected_fields(
        json!({"name": "Ada", "email": null, "password": PASSWORD}),
        &["email"],
    )
    .await;
}

#[tokio::test]
async fn register_rejects_a_json_body_that_is_not_an_object() {
    let app = spawn_app().await;
    let response = app.post_json("/api/v1/register", &json!(["a", "b"])).await;
    let (_, body) = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["fields"].is_object(), "a 422 has `fields`: {body}");
}

#[tokio::test]
async fn register_when_closed_answers_403() {
    let app = spawn_app_with(|s| s.registration = Registration::Closed).await;

    let response = app.register("Ada", "ada@example.com", PASSWORD).await;

    assert_error(response, StatusCode::FORBIDDEN, "registration_closed").await;
    let count: i64 = app
        .db()
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn register_when_closed_answers_403_before_reading_a_garbage_body() {
    let app = spawn_app_with(|s| s.registration = Registration::Closed).await;

    let garbage = app
        .post_raw("/api/v1/register", Some("application/json"), "{not json")
        .await;
    assert_error(garbage, StatusCode::FORBIDDEN, "registration_closed").await;

    let invalid = app
        .post_json("/api/v1/register", &json!({"email": 3}))
        .await;
    assert_error(invalid, StatusCode::FORBIDDEN, "registration_closed").await;

    let wrong_type = app
        .post_raw("/api/v1/register", Some("text/plain"), "hello")
        .await;
    assert_error(wrong_type, StatusCode::FORBIDDEN, "registration_closed").await;
}

#[tokio::test]
async fn login_still_works_when_registration_is_closed() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    let stopped = app.stop().await;
    let mut stopped = stopped;
    stopped.settings.registration = Registration::Closed;
    let app = stopped.restart().await;

    let response = app.login(&user.email, &user.password).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// An address of exactly `len` bytes: a 64-byte local part and a domain of
/// labels of at most 63 bytes.
fn address_of_length(len: usize) -> String {
    let mut left = len - 65;
    let mut labels = Vec::new();
    while left > 63 {
        // Never leave an empty last label.
        let label = if left == 64 { 62 } else { 63 };
        labels.push("d".repeat(label));
        left -= label + 1;
    }
    labels.push("d".repeat(left));
    let address = format!("{}@{}", "l".repeat(64), labels.join("."));
    assert_eq!(address.len(), len, "{address}");
    address
}

#[tokio::test]
async fn register_rejects_an_address_with_a_display_name() {
    // Each of these once registered, so one mailbox backed many accounts.
    for email in [
        "Anyone <ada@example.com>",
        "Ada Lovelace <ada@example.com>",
        "\"Ada\" <ada@example.com>",
    ] {
        assert_rejected_fields(
            json!({"name": "Ada", "email": email, "password": PASSWORD}),
            &["email"],
        )
        .await;
    }
}

#[tokio::test]
async fn register_rejects_domain_literals_and_comments() {
    for email in [
        "ada@[192.0.2.1]",
        "ada@[IPv6:2001:db8::1]",
        "ada(comment)@example.com",
        "ada@example.com (comment)",
    ] {
        assert_rejected_fields(
            json!({"name": "Ada", "email": email, "password": PASSWORD}),
            &["email"],
        )
        .await;
    }
}

#[tokio::test]
async fn register_rejects_an_address_over_254_bytes() {
    let display_padded = format!("{} <ada@example.com>", "A".repeat(60_000));
    let literal_padded = format!("ada@[{}]", "1".repeat(60_000));
    let just_over = address_of_length(255);
    let long_local_part = format!("{}@example.com", "l".repeat(65));
    for email in [display_padded, literal_padded, just_over, long_local_part] {
        assert_rejected_fields(
            json!({"name": "Ada", "email": email, "password": PASSWORD}),
            &["email"],
        )
        .await;
    }
}

#[tokio::test]
async fn register_accepts_an_address_of_254_bytes() {
    let app = spawn_app().await;
    let email = address_of_length(254);
    let response = app.register("Ada", &email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn register_rejects_any_string_field_over_its_cap() {
    // A string far over every field's limit is refused per field (name's own
    // limit is 255, password's 1024), never stored or hashed.
    let huge = "x".repeat(20_000);
    assert_rejected_fields(
        json!({"name": huge, "email": "ada@example.com", "password": huge}),
        &["name", "password"],
    )
    .await;
}

#[test]
fn user_add_applies_the_same_address_rules() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokengate.db");
    let too_long = address_of_length(255);
    for email in [
        "Anyone <ada@example.com>",
        "ada@[192.0.2.1]",
        too_long.as_str(),
    ] {
        let mut child = crate::helpers::tokengate(dir.path())
            .args(["user", "add", "--name", "Ada", "--email", email])
            .arg("--database")
            .arg(&db)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"long enough password\n").unwrap();
        drop(stdin);
        let output = crate::helpers::wait_with_deadline(child, crate::helpers::PROCESS_DEADLINE);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{email:?} is refused");
        assert!(
            stderr.contains("email"),
            "the line names the field: {stderr}"
        );
    }
    let count: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap_or(0);
    assert_eq!(count, 0, "no user was created");
}
