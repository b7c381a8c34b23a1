//! The shape of errors that the framework raises (404, 405, 413, 415, 400)
//! and requests that are too big.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_error, assert_invalid_token, spawn_app, TestApp, PASSWORD};

/// The largest body the contract accepts.
const MAX_BODY: usize = 64 * 1024;

/// A raw HTTP/1.1 answer: status and full text (headers and body).
struct RawResponse {
    status: u16,
    text: String,
}

/// Sends `request` as is on a new connection and reads until the server closes it.
async fn send_raw(app: &TestApp, request: &[u8]) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // The server may answer and close before reading all of a large body.
    let _ = stream.write_all(request).await;
    let _ = stream.flush().await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server answers and closes the connection");
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response, got {text:?}"));
    RawResponse { status, text }
}

/// A chunked `POST` of `body` to `path`, in chunks of 4 KiB.
fn chunked_post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// A valid registration body padded with an ignored field to exactly `len` bytes.
fn registration_of_length(len: usize) -> Vec<u8> {
    let body = |pad: &str| {
        format!(
            r#"{{"name":"Ada","email":"ada@example.com","password":"{PASSWORD}","pad":"{pad}"}}"#
        )
    };
    let padding = len - body("").len();
    let body = body(&"x".repeat(padding)).into_bytes();
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn unknown_route_answers_404_json() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::GET, "/api/v1/nope"),
        (Method::POST, "/api/v2/login"),
        (Method::GET, "/api/v1/users"),
    ] {
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn wrong_method_answers_405_json() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::GET, "/api/v1/login", "POST"),
        (Method::GET, "/api/v1/register", "POST"),
        (Method::POST, "/api/v1/user", "GET"),
        (Method::PUT, "/api/v1/user", "GET"),
        (Method::GET, "/api/v1/logout", "DELETE"),
        (Method::POST, "/api/v1/logout", "DELETE"),
        (Method::DELETE, "/health", "GET"),
        (Method::TRACE, "/health", "GET"),
        // A path with a parameter: the document's template must match it.
        (
            Method::GET,
            "/api/v1/sessions/AAAAAAAAAAAAAAAAAAAAAAAA",
            "DELETE",
        ),
        (Method::POST, "/api/v1/sessions/1", "DELETE"),
        (Method::PUT, "/api/v1/sessions", "GET"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        // RFC 9110: a 405 lists the methods the resource does accept.
        assert_eq!(
            response.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn body_over_64_kib_answers_413() {
    let app = spawn_app().await;
    for path in ["/api/v1/register", "/api/v1/login"] {
        let body = registration_of_length(MAX_BODY + 1);
        let response = app.post_raw(path, Some("application/json"), body).await;
        assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
    let huge = vec![b' '; 256 * 1024];
    let response = app
        .post_raw("/api/v1/register", Some("application/json"), huge)
        .await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    app.assert_still_serving().await;
}

#[tokio::test]
async fn body_of_exactly_64_kib_is_accepted() {
    let app = spawn_app().await;
    let body = registration_of_length(MAX_BODY);
    let response = app
        .post_raw("/api/v1/register", Some("application/json"), body)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn chunked_body_over_64_kib_answers_413() {
    let app = spawn_app().await;
    let body = registration_of_length(MAX_BODY + 4096);
    let response = send_raw(&app, &chunked_post("/api/v1/register", &body)).await;
    assert_eq!(response.status, 413, "{}", response.text);
    assert!(
        response.text.contains("\"payload_too_large\""),
        "{}",
        response.text
    );
    let count: i64 = app
        .db()
        .query_row("SELECT count(*) FROM users", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 0, "the oversized registration created no user");
    app.assert_still_serving().await;
}

#[tokio::test]
async fn chunked_body_within_the_limit_is_accepted() {
    let app = spawn_app().await;
    let body = registration_of_length(MAX_BODY - 100);
    let response = send_raw(&app, &chunked_post("/api/v1/register", &body)).await;
    assert_eq!(response.status, 201, "{}", response.text);
}

#[tokio::test]
async fn content_type_other_than_json_answers_415() {
    let app = spawn_app().await;
    let body = json!({"name": "Ada", "email": "ada@example.com", "password": PASSWORD}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        Some("application/vnd.api+json"),
        Some("application/jsonx"),
        None,
    ] {
        let response = app
            .post_raw("/api/v1/register", content_type, body.clone())
            .await;
        assert_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
}

#[tokio::test]
async fn json_content_type_with_parameters_is_accepted() {
    let app = spawn_app().await;
    let body = json!({"name": "Ada", "email": "ada@example.com", "password": PASSWORD}).to_string();
    let response = app
        .post_raw(
            "/api/v1/register",
            Some("application/json; charset=utf-8"),
            body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = json!({"email": "ada@example.com", "password": PASSWORD}).to_string();
    let response = app
        .post_raw(
            "/api/v1/login",
            Some("Application/JSON;charset=UTF-8"),
            body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_answers_400_json() {
    let app = spawn_app().await;
    for body in ["{not json", "", "{\"name\": \"Ada\",}", "\u{feff}{}x"] {
        let response = app
            .post_raw("/api/v1/register", Some("application/json"), body)
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn validation_errors_answer_422_with_fields() {
    let app = spawn_app().await;
    let response = app
        .post_json("/api/v1/register", &json!({"name": "Ada"}))
        .await;
    let (_, body) = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: &serde_json::Map<String, Value> = body["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("email") && fields.contains_key("password"),
        "{body}"
    );
    assert!(!fields.contains_key("name"), "{body}");
}

#[tokio::test]
async fn non_422_errors_have_no_fields() {
    let app = spawn_app().await;
    let (_, body) = assert_error(app.get("/nope").await, StatusCode::NOT_FOUND, "not_found").await;
    assert!(body.get("fields").is_none(), "{body}");
}

#[tokio::test]
async fn authorization_header_of_10_kb_gets_a_4xx_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let token = "a".repeat(10 * 1000);
    let response = app.current_user_with(&token).await;
    assert_invalid_token(response).await;
    app.assert_still_serving().await;
}

#[tokio::test]
async fn authorization_header_of_64_kib_gets_a_4xx_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    // A real token padded inside its signature part, and plain garbage.
    for value in [
        format!("Bearer {token}{}", "A".repeat(64 * 1024)),
        format!("Bearer {}", "x.".repeat(32 * 1024)),
    ] {
        let result = app
            .client
            .get(app.url("/api/v1/user"))
            .header(AUTHORIZATION, value)
            .send()
            .await;
        let response = result.expect("the server answers (not a reset connection)");
        let status = response.status();
        assert!(
            status == StatusCode::UNAUTHORIZED
                || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "a 64 KiB Authorization header gets 401 or 431, got {status}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert_invalid_token(response).await;
        }
    }
    app.assert_still_serving().await;
    assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn deeply_nested_json_answers_400_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    for depth in [200, 20_000] {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let response = app
            .post_raw("/api/v1/login", Some("application/json"), body)
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    app.assert_still_serving().await;
}

#[tokio::test]
async fn headers_far_over_the_limit_get_a_4xx_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let result = app
        .client
        .get(app.url("/api/v1/user"))
        .header(AUTHORIZATION, format!("Bearer {}", "a".repeat(1024 * 1024)))
        .send()
        .await;
    // hyper answers 431 (or closes the connection) before any handler runs.
    if let Ok(response) = result {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    app.assert_still_serving().await;
}
