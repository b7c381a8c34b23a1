//! CORS for the SPA origins listed in `--cors-origins`.
//!
//! Written here rather than taken from `poem::middleware::Cors` because that
//! one answers `403` to *any* request whose `Origin` is not listed, including
//! the same-origin `POST`s that browsers send with an `Origin` header: it
//! would break Swagger UI on the server's own origin as soon as CORS is
//! configured. Here a listed origin gets CORS headers and an unlisted one
//! gets none (the browser then refuses the response to the script); the
//! request itself is served as usual.

use std::collections::HashSet;

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

/// Methods the API uses.
const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// Request headers a script may send.
const ALLOW_HEADERS: &str = "authorization, content-type";
/// Response headers a script may read (the 401 challenge and the 429 delay).
const EXPOSE_HEADERS: &str = "www-authenticate, retry-after";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// The CORS middleware; a no-op when no origin is configured.
#[derive(Debug, Clone, Default)]
pub struct SpaCors {
    origins: HashSet<String>,
}

impl SpaCors {
    /// Allows exactly these origins (e.g. `http://localhost:5173`); a trailing
    /// slash is ignored.
    pub fn new<'a>(origins: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            origins: origins
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }
}

impl<E: Endpoint> Middleware<E> for SpaCors {
    type Output = SpaCorsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        SpaCorsEndpoint {
            inner,
            origins: self.origins.clone(),
        }
    }
}

/// The endpoint produced by [`SpaCors`].
pub struct SpaCorsEndpoint<E> {
    inner: E,
    origins: HashSet<String>,
}

impl<E: Endpoint> Endpoint for SpaCorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        if self.origins.is_empty() {
            return Ok(self.inner.call(req).await?.into_response());
        }
        let allowed = req
            .headers()
            .get(header::ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| self.origins.contains(o)))
            .cloned();
        let Some(origin) = allowed else {
            let mut response = self.inner.call(req).await?.into_response();
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("Origin"));
            return Ok(response);
        };

        let is_preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut response = if is_preflight {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
            r
        } else {
            let mut r = self.inner.call(req).await?.into_response();
            r.headers_mut().insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
            r
        };
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        Ok(response)
    }
}
