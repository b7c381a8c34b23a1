//! The "framework ceiling" for the load benchmark (`bench/run`): a bare poem
//! server that only verifies the HS256 JWT on `GET /api/v1/user` (no
//! database, no denylist) and answers `GET /health` with a constant. tokengate's
//! authenticated read is measured against it in the same run.
//!
//! Run: `cargo run --release --example jwt_ceiling -- 127.0.0.1:9090 <secret>`

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::Json;
use poem::{get, handler, EndpointExt, Request, Response, Route, Server};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[allow(dead_code)]
    jti: String,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

#[handler]
fn user(req: &Request, verifier: poem::web::Data<&std::sync::Arc<Verifier>>) -> Response {
    let token = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    match jsonwebtoken::decode::<Claims>(token, &verifier.key, &verifier.validation) {
        Ok(data) => Json(json!({
            "id": data.claims.sub.parse::<i64>().unwrap_or(0),
            "name": "Bench",
            "email": "bench@example.com",
            "created_at": "2026-01-01T00:00:00Z"
        }))
        .into_response(),
        Err(_) => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[handler]
fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

use poem::IntoResponse;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:9090".into());
    let secret = args.next().unwrap_or_default();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["tokengate"]);
    validation.set_audience(&["tokengate"]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    let verifier = std::sync::Arc::new(Verifier {
        key: DecodingKey::from_secret(secret.as_bytes()),
        validation,
    });
    let app = Route::new()
        .at("/api/v1/user", get(user))
        .at("/health", get(health))
        .data(verifier);
    println!("listening on http://{bind}");
    Server::new(TcpListener::bind(bind)).run(app).await
}
