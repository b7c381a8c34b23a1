//! `GET /health`.

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn health_answers_ok_as_json() {
    let app = spawn_app().await;

    let response = app.get("/health").await;

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn health_reports_503_when_the_schema_cannot_be_read() {
    let app = spawn_app().await;
    app.assert_still_serving().await;

    // Break the schema behind the server's back: a constant answer would
    // still say ok.
    app.db()
        .execute_batch("DROP TABLE users;")
        .expect("drop the users table");

    let response = app.get("/health").await;
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
}
