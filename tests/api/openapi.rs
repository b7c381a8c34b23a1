//! The OpenAPI document: the committed file, the served one, the CLI's
//! output, and what the document must say.

use std::path::Path;

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, tokengate, wait_with_deadline};

const REGENERATE: &str =
    "regenerate it with `cargo run -q -- openapi --yaml > openapi/openapi.yaml`";

fn committed_yaml() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.yaml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); {REGENERATE}", path.display()))
}

/// Runs `tokengate openapi [args]` and returns its standard output.
fn cli_openapi(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let child = tokengate(dir.path())
        .arg("openapi")
        .args(args)
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, std::time::Duration::from_secs(60));
    assert!(
        output.status.success(),
        "tokengate openapi failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The document as the server serves it, in JSON.
async fn served_document() -> Value {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[test]
fn committed_openapi_yaml_is_the_output_of_tokengate_openapi_yaml() {
    let generated = cli_openapi(&["--yaml"]);
    assert!(
        generated == committed_yaml(),
        "openapi/openapi.yaml differs from `tokengate openapi --yaml`; {REGENERATE}"
    );
}

#[tokio::test]
async fn served_openapi_yaml_is_the_committed_file() {
    let app = spawn_app().await;
    let response = app.get("/openapi.yaml").await;
    assert_eq!(response.status(), StatusCode::OK);
    let served = response.text().await.unwrap();
    assert!(
        served == committed_yaml(),
        "GET /openapi.yaml differs from openapi/openapi.yaml; {REGENERATE}\n--- served:\n{served}"
    );
}

#[tokio::test]
async fn served_openapi_json_is_the_cli_json_document() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let served: Value = response.json().await.unwrap();
    let printed: Value = serde_json::from_str(&cli_openapi(&[])).unwrap();
    assert_eq!(served, printed);
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3."),
        "an OpenAPI 3 document"
    );
}

#[tokio::test]
async fn document_declares_the_bearer_jwt_security_scheme() {
    let doc = served_document().await;
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(scheme["bearerFormat"], "JWT", "{scheme}");
}

#[tokio::test]
async fn document_names_every_operation() {
    let doc = served_document().await;
    let operations = [
        ("/api/v1/register", "post", "register"),
        ("/api/v1/login", "post", "login"),
        ("/api/v1/user", "get", "currentUser"),
        ("/api/v1/logout", "delete", "logout"),
        ("/api/v1/token/refresh", "post", "refreshToken"),
        ("/api/v1/sessions", "get", "listSessions"),
        ("/api/v1/sessions/{id}", "delete", "deleteSession"),
        ("/api/v1/user/password", "put", "changePassword"),
        ("/.well-known/jwks.json", "get", "jwks"),
        ("/api/v1/token/introspect", "post", "introspectToken"),
        ("/api/v1/token/revoke", "post", "revokeToken"),
        ("/health", "get", "health"),
    ];
    for (path, method, id) in operations {
        assert_eq!(
            doc["paths"][path][method]["operationId"], id,
            "{method} {path}"
        );
    }
    let count: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(count, operations.len(), "no undocumented extra operation");
}

#[tokio::test]
async fn document_requires_bearer_auth_exactly_on_authenticated_routes() {
    let doc = served_document().await;
    for (path, method) in [
        ("/api/v1/user", "get"),
        ("/api/v1/logout", "delete"),
        ("/api/v1/sessions", "get"),
        ("/api/v1/sessions/{id}", "delete"),
        ("/api/v1/user/password", "put"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["security"],
            json!([{"bearerAuth": []}]),
            "{method} {path}"
        );
        assert!(
            doc["paths"][path][method]["responses"]["401"].is_object(),
            "401 documented on {method} {path}"
        );
    }
    for (path, method) in [
        ("/api/v1/register", "post"),
        ("/api/v1/login", "post"),
        ("/api/v1/token/refresh", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/health", "get"),
    ] {
        let security = &doc["paths"][path][method]["security"];
        assert!(
            security.is_null() || security == &json!([]),
            "{method} {path} needs no auth: {security}"
        );
    }
}

#[tokio::test]
async fn document_shows_logout_204_without_content() {
    let doc = served_document().await;
    let responses = &doc["paths"]["/api/v1/logout"]["delete"]["responses"];
    let no_content = &responses["204"];
    assert!(no_content.is_object(), "204 documented: {responses}");
    assert!(
        no_content.get("content").is_none(),
        "204 has no content: {no_content}"
    );
    assert!(
        responses.get("200").is_none(),
        "no 200 on logout: {responses}"
    );
}

#[tokio::test]
async fn document_shows_429_with_retry_after_on_login() {
    let doc = served_document().await;
    let responses = &doc["paths"]["/api/v1/login"]["post"]["responses"];
    let too_many = &responses["429"];
    assert!(too_many.is_object(), "429 documented on login: {responses}");
    let has_retry_after = too_many["headers"]
        .as_object()
        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("retry-after")));
    assert!(has_retry_after, "429 documents Retry-After: {too_many}");
    for status in ["200", "401", "422"] {
        assert!(
            responses[status].is_object(),
            "{status} documented on login"
        );
    }
}

#[tokio::test]
async fn document_lists_every_contract_error_status() {
    let doc = served_document().await;
    let expected = [
        (
            "/api/v1/register",
            "post",
            &["201", "403", "409", "422"][..],
        ),
        ("/api/v1/login", "post", &["200", "401", "422", "429"][..]),
        ("/api/v1/user", "get", &["200", "401"][..]),
        ("/api/v1/logout", "delete", &["204", "401"][..]),
        ("/health", "get", &["200", "503"][..]),
    ];
    for (path, method, statuses) in expected {
        let responses = &doc["paths"][path][method]["responses"];
        for status in statuses {
            assert!(
                responses[*status].is_object(),
                "{status} documented on {method} {path}: {responses}"
            );
        }
    }
}

#[tokio::test]
async fn document_has_no_server_pointing_elsewhere() {
    // Swagger UI's try-it-out must call the server that serves it.
    let doc = served_document().await;
    let servers = doc["servers"].as_array().cloned().unwrap_or_default();
    for server in servers {
        let url = server["url"].as_str().unwrap_or_default();
        assert!(url.starts_with('/'), "a relative server URL, got {url}");
    }
}

#[tokio::test]
async fn docs_serves_swagger_ui_html() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    assert!(
        html.contains("/api/v1/login"),
        "the page carries the document"
    );
}

#[tokio::test]
async fn document_describes_sessions_and_refresh() {
    let doc = served_document().await;
    let scope = doc["paths"]["/api/v1/logout"]["delete"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "scope")
        .cloned()
        .expect("logout documents scope");
    assert_eq!(scope["in"], "query");
    let schema = &scope["schema"];
    let reference = schema["$ref"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let enumeration = if reference.is_empty() {
        schema["enum"].clone()
    } else {
        doc["components"]["schemas"][&reference]["enum"].clone()
    };
    assert_eq!(enumeration, json!(["local", "others", "global"]), "{scope}");

    let token = &doc["components"]["schemas"]["Token"];
    for field in [
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "refresh_token",
        "refresh_expires_at",
    ] {
        assert!(token["properties"][field].is_object(), "Token.{field}");
    }
    let session = &doc["components"]["schemas"]["Session"];
    for field in [
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "current",
    ] {
        assert!(session["properties"][field].is_object(), "Session.{field}");
    }
    let refresh = &doc["paths"]["/api/v1/token/refresh"]["post"]["responses"];
    assert!(
        refresh["200"].is_object() && refresh["401"].is_object(),
        "{refresh}"
    );
    let password = &doc["paths"]["/api/v1/user/password"]["put"]["responses"];
    for status in ["200", "401", "403", "422", "429"] {
        assert!(password[status].is_object(), "changePassword {status}");
    }
}
