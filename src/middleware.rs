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

use poem::endpoint::BoxEndpoint;
use poem::error::ResponseError;
use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response, Result, Route};

use crate::api::body::MAX_BODY_BYTES;
use crate::cors::SpaCors;
use crate::error::{into_json_response, ApiError};
use crate::state::AppState;

/// The routes, wrapped. The API is called directly, not through an outer
/// router: every router layer moves the request into another boxed future,
/// which showed up in the profile of the authenticated read.
pub struct Edge {
    api: BoxEndpoint<'static, Response>,
    docs: Route,
    state: Arc<AppState>,
    cors: SpaCors,
    allow: HashMap<String, HeaderValue>,
}

impl Edge {
    /// Wraps the API endpoint and the documentation routes (`/docs`,
    /// `/openapi.json`, `/openapi.yaml`). `allow` maps each path to the
    /// methods it accepts, for the `Allow` header every `405` must carry
    /// (RFC 9110).
    pub fn new(
        api: BoxEndpoint<'static, Response>,
        docs: Route,
        state: Arc<AppState>,
        cors: SpaCors,
        allow: HashMap<String, HeaderValue>,
    ) -> Self {
        Self {
            api,
            docs,
            state,
            cors,
            allow,
        }
    }
}

/// Paths served by the documentation routes rather than the API.
fn is_docs(path: &str) -> bool {
    path == "/openapi.json"
        || path == "/openapi.yaml"
        || path == "/docs"
        || path.starts_with("/docs/")
}

impl Endpoint for Edge {
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
            // The hottest routes go straight to their handlers (see there).
            let answered = if method == Method::GET && path == "/api/v1/user" {
                Ok(crate::api::users::current_user_direct(&req).await)
            } else if method == Method::DELETE && path == "/api/v1/logout" {
                Ok(crate::api::auth::logout_direct(&req).await)
            } else if is_docs(&path) {
                self.docs.call(req).await.map(IntoResponse::into_response)
            } else {
                self.api.call(req).await
            };
            match answered {
                Ok(response) => response,
                Err(err) => into_json_response(err),
            }
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            if let Some(methods) = allowed_methods_for(&self.allow, &path) {
                response
                    .headers_mut()
                    .insert(header::ALLOW, methods.clone());
            }
        }
        cors.decorate(&mut response);
        add_security_headers(&path, &mut response);

        // Method and path only: never the query or headers, which may carry tokens.
        crate::logging::access(
            &method,
            &path,
            response.status().as_u16(),
            started.elapsed().as_micros() as u64,
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

/// The methods of the document path that `path` is: its own entry, or a
/// template such as `/api/v1/sessions/{id}` whose `{parameter}` segments
/// match any one non-empty segment.
fn allowed_methods_for<'a>(
    allow: &'a HashMap<String, HeaderValue>,
    path: &str,
) -> Option<&'a HeaderValue> {
    allow.get(path).or_else(|| {
        allow
            .iter()
            .find(|(template, _)| template.contains('{') && matches_template(template, path))
            .map(|(_, methods)| methods)
    })
}

fn matches_template(template: &str, path: &str) -> bool {
    let mut templates = template.split('/');
    let mut segments = path.split('/');
    loop {
        match (templates.next(), segments.next()) {
            (None, None) => return true,
            (Some(t), Some(s)) if t.starts_with('{') && t.ends_with('}') && !s.is_empty() => {}
            (Some(t), Some(s)) if t == s => {}
            _ => return false,
        }
    }
}
