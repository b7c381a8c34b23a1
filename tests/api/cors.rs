//! CORS for the origins in `--cors-origins`: preflight for `DELETE` with
//! `Authorization` is answered, `WWW-Authenticate` is exposed to scripts, no
//! credentials mode, and an origin not in the list gets no CORS headers (but
//! its request is still served, so same-origin Swagger UI keeps working).

use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const SPA: &str = "http://127.0.0.1:5173";
const OTHER_SPA: &str = "http://localhost:3000";
const STRANGER: &str = "http://evil.example";

async fn spa_app() -> TestApp {
    spawn_app_with(|s| s.cors_origins = vec![SPA.to_owned(), OTHER_SPA.to_owned()]).await
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url("/api/v1/logout"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "DELETE")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn preflight_for_logout_from_a_listed_origin_is_allowed() {
    let app = spa_app().await;
    for origin in [SPA, OTHER_SPA] {
        let response = preflight(&app, origin).await;
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(origin)
        );
        let methods = header(&response, "access-control-allow-methods").unwrap();
        assert!(methods.contains("DELETE"), "{methods}");
        let headers = header(&response, "access-control-allow-headers").unwrap();
        assert!(
            headers.to_ascii_lowercase().contains("authorization"),
            "{headers}"
        );
        assert_eq!(header(&response, "access-control-allow-credentials"), None);
        assert!(header(&response, "vary").unwrap().contains("Origin"));
    }
}

#[tokio::test]
async fn a_listed_origin_can_read_the_challenge_of_a_401() {
    let app = spa_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/user"))
        .header("Origin", SPA)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(SPA));
    let exposed = header(&response, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate"), "{exposed}");
    assert!(exposed.contains("retry-after"), "{exposed}");
    assert_eq!(header(&response, "access-control-allow-credentials"), None);
}

#[tokio::test]
async fn an_unlisted_origin_gets_no_cors_headers() {
    let app = spa_app().await;
    let response = preflight(&app, STRANGER).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&response, "access-control-allow-methods"), None);

    let response = app
        .client
        .get(app.url("/health"))
        .header("Origin", STRANGER)
        .send()
        .await
        .unwrap();
    // Served (a same-origin page may send Origin too), but unreadable cross-origin.
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&response, "access-control-expose-headers"), None);
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let app = spawn_app().await;
    let response = preflight(&app, SPA).await;
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = app
        .client
        .get(app.url("/health"))
        .header("Origin", SPA)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
}
