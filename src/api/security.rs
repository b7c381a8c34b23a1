//! The `bearerAuth` security scheme and the one place where a request's
//! token is checked: signature, algorithm, claims, then the denylist. Every
//! authenticated operation takes a [`BearerAuth`] or [`BearerUser`] argument,
//! both built by [`authenticate`], so a new route cannot skip the denylist.
//!
//! It is written by hand rather than derived because poem-openapi's derived
//! bearer scheme rejects a missing or non-Bearer header (and an empty token)
//! before any checker runs, with a plain-text 401 and no challenge.

use std::sync::Arc;

use poem::http::header;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::auth::tokens::VerifiedClaims;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::changes::{Changes, Lookup};
use crate::store::denylist;
use crate::store::users::{self, User};

/// Name of the security scheme in the OpenAPI document.
pub const SCHEME_NAME: &str = "bearerAuth";

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

/// What an authenticated route needs besides a valid, unrevoked token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Only the token (logout).
    Token,
    /// The token's user too (`currentUser`): 401 if it no longer exists.
    User,
}

/// Checks a request's token: the only code path that accepts one. The
/// denylist lookup (and the user, when needed) is one job on a reader thread,
/// unless the same lookup was answered at the database's current version
/// (see [`crate::store::changes`]).
async fn authenticate(
    request: &Request,
    need: Need,
) -> Result<(VerifiedClaims, Option<User>), ApiError> {
    let state = request
        .data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let token = match presented(request)? {
        Presented::Nothing => return Err(ApiError::Unauthenticated),
        Presented::Token("") => return Err(ApiError::InvalidToken("the access token is empty")),
        Presented::Token(token) => token,
    };
    let claims = state
        .tokens
        .verify(token)
        .map_err(|e| ApiError::InvalidToken(e.description()))?;
    let user_id = match need {
        Need::Token => None,
        Need::User => Some(claims.user_id),
    };
    // The version is read before the lookup runs: if anything commits in
    // between, the answer is remembered under an already-stale version.
    let version = state.changes.as_ref().and_then(Changes::version);
    let cached = version.and_then(|v| state.lookups.get(v, &claims.jti, user_id));
    let lookup = match cached {
        Some(lookup) => lookup,
        None => {
            let jti = claims.jti.clone();
            // Fail closed: a denylist that cannot be read is a 503 (via `?`),
            // and nothing remembered before the failure counts any more.
            let lookup = state
                .readers
                .run(move |conn| {
                    if denylist::is_revoked(conn, &jti)? {
                        return Ok(Lookup::Revoked);
                    }
                    match user_id {
                        Some(id) => Ok(Lookup::Valid(users::find_by_id(conn, id)?)),
                        None => Ok(Lookup::Valid(None)),
                    }
                })
                .await
                .inspect_err(|_| state.lookups.clear())?;
            // Only reads are worth remembering: a token checked for logout is
            // about to be revoked anyway.
            if let Some(v) = version.filter(|_| need == Need::User) {
                state
                    .lookups
                    .put(v, claims.jti.clone(), user_id, lookup.clone());
            }
            lookup
        }
    };
    match lookup {
        Lookup::Revoked => Err(ApiError::InvalidToken("the access token has been revoked")),
        Lookup::Valid(None) if need == Need::User => {
            Err(ApiError::InvalidToken("the token's user no longer exists"))
        }
        Lookup::Valid(user) => Ok((claims, user)),
    }
}

/// A valid, unrevoked bearer token (for routes that do not load the user).
#[derive(Debug)]
pub struct BearerAuth(pub VerifiedClaims);

/// A valid, unrevoked bearer token and the existing user it names.
#[derive(Debug)]
pub struct BearerUser {
    /// The token's claims.
    pub claims: VerifiedClaims,
    /// The user named by `sub`.
    pub user: User,
}

fn register_scheme(registry: &mut Registry) {
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

/// Implements poem-openapi's extractor for a type built from [`authenticate`]:
/// both types are the `bearerAuth` scheme in the document.
macro_rules! bearer_extractor {
    ($ty:ty, $need:expr, |$claims:ident, $user:ident| $build:expr) => {
        impl<'a> ApiExtractor<'a> for $ty {
            const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

            type ParamType = ();
            type ParamRawType = ();

            fn register(registry: &mut Registry) {
                register_scheme(registry);
            }

            fn security_schemes() -> Vec<&'static str> {
                vec![SCHEME_NAME]
            }

            async fn from_request(
                request: &'a Request,
                _body: &mut RequestBody,
                _param_opts: ExtractParamOptions<Self::ParamType>,
            ) -> poem::Result<Self> {
                let ($claims, $user) = authenticate(request, $need).await?;
                $build
            }
        }
    };
}

bearer_extractor!(BearerAuth, Need::Token, |claims, _user| Ok(BearerAuth(
    claims
)));

bearer_extractor!(BearerUser, Need::User, |claims, user| match user {
    Some(user) => Ok(BearerUser { claims, user }),
    None => Err(ApiError::InvalidToken("the token's user no longer exists").into()),
});
