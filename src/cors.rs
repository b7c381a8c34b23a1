//! CORS for the SPA origins listed in `--cors-origins`.
//!
//! Written here rather than taken from `poem::middleware::Cors` because that
//! one answers `403` to *any* request whose `Origin` is not listed, including
//! the same-origin `POST`s that browsers send with an `Origin` header: it
//! would break Swagger UI on the server's own origin as soon as CORS is
//! configured. Here a listed origin gets CORS headers and an unlisted one
//! gets none (the browser then refuses the response to the script); the
//! request itself is served as usual. Applied by [`crate::middleware`].

use std::collections::HashSet;

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{IntoResponse, Request, Response};

/// Methods the API uses.
const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE";
/// Request headers a script may send.
const ALLOW_HEADERS: &str = "authorization, content-type";
/// Response headers a script may read (the 401 challenge and the 429 delay).
const EXPOSE_HEADERS: &str = "www-authenticate, retry-after";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// The configured origins; with none, CORS is off and nothing is added.
#[derive(Debug, Clone, Default)]
pub struct SpaCors {
    origins: HashSet<String>,
}

/// What CORS decided for one request.
pub enum Verdict {
    /// CORS is off: leave the response alone.
    Off,
    /// Not a listed origin (or no `Origin`): serve it, add only `Vary`.
    Unlisted,
    /// A listed origin: add the CORS headers for it.
    Listed(HeaderValue),
    /// A preflight from a listed origin: answer it without routing.
    Preflight(HeaderValue),
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

    /// Classifies a request.
    pub fn verdict(&self, req: &Request) -> Verdict {
        if self.origins.is_empty() {
            return Verdict::Off;
        }
        let listed = req
            .headers()
            .get(header::ORIGIN)
            .filter(|o| o.to_str().is_ok_and(|o| self.origins.contains(o)))
            .cloned();
        match listed {
            None => Verdict::Unlisted,
            Some(origin)
                if req.method() == Method::OPTIONS
                    && req
                        .headers()
                        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) =>
            {
                Verdict::Preflight(origin)
            }
            Some(origin) => Verdict::Listed(origin),
        }
    }
}

impl Verdict {
    /// The answer to a preflight, if this is one.
    pub fn preflight_response(&self) -> Option<Response> {
        let Verdict::Preflight(_) = self else {
            return None;
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
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
        Some(response)
    }

    /// Adds the CORS headers this verdict calls for.
    pub fn decorate(self, response: &mut Response) {
        let h = response.headers_mut();
        match self {
            Verdict::Off => return,
            Verdict::Unlisted => {}
            Verdict::Listed(origin) => {
                h.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(EXPOSE_HEADERS),
                );
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            }
            Verdict::Preflight(origin) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            }
        }
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}
