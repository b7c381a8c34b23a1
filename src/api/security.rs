//! The `bearerAuth` security scheme and the one place where a request's
//! token is checked: signature, algorithm, claims, then the denylist. Every
//! authenticated operation takes a [`BearerAuth`] argument, so a new route
//! cannot skip the denylist.
//!
//! It is written by hand rather than derived because poem-openapi's derived
//! bearer scheme rejects a missing or non-Bearer header (and an empty token)
//! before any checker runs, with a plain-text 401 and no challenge.

use std::sync::Arc;

use poem::http::header;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::auth::tokens::{TokenError, VerifiedClaims};
use crate::error::ApiError;
use crate::state::AppState;

/// Name of the security scheme in the OpenAPI document.
pub const SCHEME_NAME: &str = "bearerAuth";

/// The claims of a request's valid, unrevoked bearer token.
#[derive(Debug)]
pub struct BearerAuth(pub VerifiedClaims);

/// Where the token came from, for the right kind of 401.
enum Presented<'a> {
    /// No header, or another scheme: `unauthenticated`.
    Nothing,
    /// A Bearer header; the token may still be empty or garbage.
    Token(&'a str),
}

fn presented(request: &Request) -> Result<Presented<'_>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(Presented::Nothing);
    };
    let bytes = value.as_bytes();
    let scheme_end = bytes
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(bytes.len());
    if !bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Ok(Presented::Nothing);
    }
    let rest = std::str::from_utf8(&bytes[scheme_end..])
        .map_err(|_| ApiError::InvalidToken("the access token is malformed"))?;
    Ok(Presented::Token(
        rest.trim_matches(|c| c == ' ' || c == '\t'),
    ))
}

impl BearerAuth {
    /// Authenticates a request: the only code path that accepts a token.
    pub async fn authenticate(request: &Request, state: &AppState) -> Result<Self, ApiError> {
        let token = match presented(request)? {
            Presented::Nothing => return Err(ApiError::Unauthenticated),
            Presented::Token("") => {
                return Err(ApiError::InvalidToken("the access token is empty"))
            }
            Presented::Token(token) => token,
        };
        let claims = state.tokens.verify(token).map_err(|e| {
            ApiError::InvalidToken(match e {
                TokenError::Expired => "the access token has expired",
                TokenError::NotYetValid => "the access token is not valid yet",
                TokenError::Invalid => "the access token is invalid",
            })
        })?;
        // Fail closed: a denylist that cannot be read is a 503, never a pass.
        if state.denylist.is_revoked(&claims.jti).await? {
            return Err(ApiError::InvalidToken("the access token has been revoked"));
        }
        Ok(BearerAuth(claims))
    }
}

impl<'a> ApiExtractor<'a> for BearerAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME_NAME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "An access token from `POST /api/v1/login`, sent as `Authorization: Bearer <token>`.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME_NAME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = request
            .data::<Arc<AppState>>()
            .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
        Ok(Self::authenticate(request, state).await?)
    }
}
