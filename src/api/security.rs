//! The `bearerAuth` security scheme and the one place where a request's
//! token is checked: signature, algorithm, claims, then what storage knows
//! (the denylist, the token's session, the user's global-logout mark; see
//! [`crate::auth::verdict`]). Every authenticated operation takes a
//! [`BearerAuth`] or [`BearerUser`] argument, both built by [`authenticate`],
//! so a new route cannot skip a check; logout takes [`BearerChecked`], whose
//! storage half runs inside logout's own write. Token introspection (RFC
//! 7662) asks [`check_token`], the same check, about a token it was sent.
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
use crate::auth::verdict;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{User, UserFacts};

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

/// The state and the Bearer token of a request.
fn bearer_token(request: &Request) -> Result<(&Arc<AppState>, &str), ApiError> {
    let state = request
        .data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    match presented(request)? {
        Presented::Nothing => Err(ApiError::Unauthenticated),
        Presented::Token("") => Err(ApiError::InvalidToken("the access token is empty")),
        Presented::Token(token) => Ok((state, token)),
    }
}

/// The first half of every check: the signature, the algorithm and the
/// claims. Storage is not asked yet.
fn verify_token(state: &AppState, token: &str) -> Result<VerifiedClaims, ApiError> {
    state
        .tokens
        .verify(token)
        .map_err(|e| ApiError::InvalidToken(e.description()))
}

/// The first half of the check of a request's token (see [`verify_token`]).
pub fn verify(request: &Request) -> Result<(&Arc<AppState>, VerifiedClaims), ApiError> {
    let (state, token) = bearer_token(request)?;
    Ok((state, verify_token(state, token)?))
}

/// Checks an access token: the only code path that accepts one, for the
/// Bearer header of every authenticated route and for token introspection.
/// What storage knows about it is one lookup (one reader job, or an answer
/// remembered while the database provably has not changed).
///
/// `Err(ApiError::InvalidToken)` is a refusal; any other error (a lookup
/// that cannot be made is [`ApiError::Unavailable`], a `503`) means the
/// token could not be judged, and must never be taken for a verdict: fail
/// closed.
pub async fn check_token(
    state: &AppState,
    token: &str,
) -> Result<(VerifiedClaims, Arc<UserFacts>), ApiError> {
    let claims = verify_token(state, token)?;
    let lookup = state.store.lookup(&claims.lookup_key()).await?;
    let now_s = chrono::Utc::now().timestamp();
    verdict::judge(claims.facts(), &lookup, now_s)
        .map_err(|refusal| ApiError::InvalidToken(refusal.description()))?;
    match lookup.user {
        Some(facts) => Ok((claims, facts)),
        None => Err(ApiError::InvalidToken(
            verdict::Refusal::UserGone.description(),
        )),
    }
}

/// Checks a request's Bearer token with [`check_token`].
pub async fn authenticate(request: &Request) -> Result<(VerifiedClaims, Arc<UserFacts>), ApiError> {
    let (state, token) = bearer_token(request)?;
    check_token(state, token).await
}

/// A token every check accepts (for routes that need only its claims).
#[derive(Debug)]
pub struct BearerAuth(pub VerifiedClaims);

/// A token whose signature and claims check out, for a route whose only
/// effect is one durable write that applies the storage half of the check
/// ([`crate::auth::verdict::judge`]) inside its own transaction (logout): the
/// verdict is then exactly as current as the write, and the request costs
/// one trip to storage instead of two. The route must answer `401` when the
/// write reports a refusal.
#[derive(Debug)]
pub struct BearerChecked(pub VerifiedClaims);

/// A token every check accepts, and the existing user it names.
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
    ($ty:ty, |$claims:ident, $user:ident| $build:expr) => {
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
                let ($claims, $user) = authenticate(request).await?;
                Ok($build)
            }
        }
    };
}

bearer_extractor!(BearerAuth, |claims, _user| BearerAuth(claims));

impl<'a> ApiExtractor<'a> for BearerChecked {
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
        Ok(BearerChecked(verify(request)?.1))
    }
}

bearer_extractor!(BearerUser, |claims, facts| BearerUser {
    claims,
    user: facts.user.clone()
});
