//! What every request goes through around routing, in one layer: the shared
//! state, the body-size limit, CORS, JSON errors, security headers and the
//! access-log line.
//!
//! One hand-written layer instead of a stack of poem middlewares: each poem
//! layer wraps the request future in another state machine that is moved and
//! boxed per request, which showed up as a measurable share of the CPU spent
//! on the authenticated read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use poem::error::ResponseError;
use poem::http::{header, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response, Result};

use crate::api::body::MAX_BODY_BYTES;
use crate::cors::SpaCors;
use crate::error::{into_json_response, ApiError};
use crate::state::AppState;

/// The routes, wrapped.
pub struct Edge<E> {
    inner: E,
    state: Arc<AppState>,
    cors: SpaCors,
    allow: HashMap<String, HeaderValue>,
}

impl<E> Edge<E> {
    /// Wraps `inner` (the route tree). `allow` maps each path to the methods
    /// it accepts, for the `Allow` header every `405` must carry (RFC 9110).
    pub fn new(
        inner: E,
        state: Arc<AppState>,
        cors: SpaCors,
        allow: HashMap<String, HeaderValue>,
    ) -> Self {
        Self {
            inner,
            state,
            cors,
            allow,
        }
    }
}

impl<E: Endpoint> Endpoint for Edge<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let cors = self.cors.verdict(&req);

        let mut response = if let Some(preflight) = cors.preflight_response() {
            preflight
        } else if declared_length(&req).is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            // Chunked bodies are cut off while read (see `crate::api::body`).
            ApiError::PayloadTooLarge.as_response()
        } else {
            req.extensions_mut().insert(self.state.clone());
            match self.inner.call(req).await {
                Ok(response) => response.into_response(),
                Err(err) => into_json_response(err),
            }
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            if let Some(methods) = self.allow.get(&path) {
                response
                    .headers_mut()
                    .insert(header::ALLOW, methods.clone());
            }
        }
        cors.decorate(&mut response);
        add_security_headers(&path, &mut response);

        // Method and path only: never the query or headers, which may carry tokens.
        tracing::info!(
            target: "tokengate::http",
            %method,
            path = %path,
            status = response.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "request"
        );
        Ok(response)
    }
}

/// The policy of the Swagger UI page: poem-openapi inlines its scripts,
/// styles and images (`data:`), and the page calls only this server.
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
    script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Headers every answer gets: no MIME sniffing; no caching of anything but
/// the documentation (token answers must not be stored, RFC 6749 5.1); and
/// the documentation page may not be framed (clickjacking).
fn add_security_headers(path: &str, response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "/docs" || path.starts_with("/docs/") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CONTENT_SECURITY_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    } else if path != "/openapi.json" && path != "/openapi.yaml" {
        // A route that sets its own caching (say a public key set) keeps it.
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
