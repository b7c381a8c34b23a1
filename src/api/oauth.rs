//! `POST /api/v1/token/introspect` (RFC 7662) and `POST /api/v1/token/revoke`
//! (RFC 7009): what resource servers ask about a token, and how anyone
//! holding a token ends it. Both take form-encoded bodies, as those RFCs
//! require ([`FormBody`]).
//!
//! Introspection is for the resource servers of `--introspection-clients`,
//! authenticated with HTTP Basic (the `basicAuth` scheme, [`ResourceServer`]).
//! An access token is judged by [`check_token`], the very check of every
//! authenticated route, so introspection never calls active a token that a
//! route would refuse (or the other way round). A refresh token is active
//! while it is the current one of an active session; asking never counts as
//! using it. Storage that cannot answer is a `503`, never a guess.
//!
//! Revocation needs no credentials (the token is the credential), but
//! credentials that are sent must be right (RFC 7009 section 2.1: the server
//! first validates the client credentials; RFC 6749 section 5.2:
//! `invalid_client`). A `Bearer` header is not a client credential and is
//! ignored here. The answer is `200` whether or not the token was valid, so
//! it says nothing about the token; an invalid token is simply ignored.

use std::sync::Arc;

use base64::Engine;
use poem::http::header;
use poem::web::Data;
use poem::{Request, RequestBody};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, Enum, ExtractParamOptions, Object, OpenApi,
};

use super::body::{FormBody, FormFields, FromForm};
use super::security::check_token;
use super::ApiTags;
use crate::auth::refresh;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Name of the HTTP Basic security scheme in the OpenAPI document.
pub const BASIC_SCHEME_NAME: &str = "basicAuth";

/// `Cache-Control` of every introspection answer (RFC 7662 section 2.2
/// answers are about one moment; RFC 6749 section 5.1).
const NO_STORE: &str = "no-store";

/// HTTP Basic credentials as sent.
enum Basic {
    /// No `Authorization` header, or another scheme.
    Absent,
    /// `Basic` with a value that is not base64 of `id:secret`.
    Malformed,
    /// The id and secret.
    Given { id: Vec<u8>, secret: Vec<u8> },
}

fn basic_credentials(request: &Request) -> Basic {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Basic::Absent;
    };
    let bytes = value.as_bytes();
    let scheme_end = bytes
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(bytes.len());
    if !bytes[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return Basic::Absent;
    }
    let encoded = bytes[scheme_end..].trim_ascii();
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let Ok(decoded) = lenient.decode(encoded) else {
        return Basic::Malformed;
    };
    match decoded.iter().position(|b| *b == b':') {
        Some(colon) => Basic::Given {
            id: decoded[..colon].to_vec(),
            secret: decoded[colon + 1..].to_vec(),
        },
        None => Basic::Malformed,
    }
}

/// RFC 6749 section 2.3.1: clients form-encode the id and secret before
/// Basic encodes them. `None` when that changes nothing.
fn form_decoded(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.iter().any(|b| *b == b'%' || *b == b'+') {
        return None;
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// The configured client these credentials belong to: as sent, or
/// form-decoded (RFC 6749 section 2.3.1).
fn client_id(state: &AppState, id: &[u8], secret: &[u8]) -> Option<String> {
    let clients = &state.introspection_clients;
    if let Some(found) = clients.authenticate(id, secret) {
        return Some(found.to_owned());
    }
    let (decoded_id, decoded_secret) = (form_decoded(id), form_decoded(secret));
    if decoded_id.is_none() && decoded_secret.is_none() {
        return None;
    }
    clients
        .authenticate(
            decoded_id.as_deref().unwrap_or(id),
            decoded_secret.as_deref().unwrap_or(secret),
        )
        .map(str::to_owned)
}

fn app_state(request: &Request) -> Result<&Arc<AppState>, ApiError> {
    request
        .data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

fn register_basic_scheme(registry: &mut Registry) {
    registry.create_security_scheme(
        BASIC_SCHEME_NAME,
        MetaSecurityScheme {
            ty: "http",
            description: Some(
                "A resource server's id and secret from `--introspection-clients`, sent as \
                 `Authorization: Basic base64(id:secret)`.",
            ),
            name: None,
            key_in: None,
            scheme: Some("basic"),
            bearer_format: None,
            flows: None,
            openid_connect_url: None,
        },
    );
}

/// A resource server of `--introspection-clients`, authenticated with HTTP
/// Basic; anything else is `401 invalid_client` with
/// `WWW-Authenticate: Basic realm="tokengate"`.
#[derive(Debug)]
pub struct ResourceServer(pub String);

impl<'a> ApiExtractor<'a> for ResourceServer {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_basic_scheme(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BASIC_SCHEME_NAME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = app_state(request)?;
        match basic_credentials(request) {
            Basic::Given { id, secret } => client_id(state, &id, &secret)
                .map(ResourceServer)
                .ok_or_else(|| ApiError::InvalidClient.into()),
            Basic::Absent | Basic::Malformed => Err(ApiError::InvalidClient.into()),
        }
    }
}

/// HTTP Basic credentials of a resource server, if any were sent: none is
/// fine, wrong ones are `401 invalid_client`.
#[derive(Debug)]
pub struct OptionalResourceServer(pub Option<String>);

impl<'a> ApiExtractor<'a> for OptionalResourceServer {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_basic_scheme(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BASIC_SCHEME_NAME]
    }

    fn has_security_fallback() -> bool {
        true
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = app_state(request)?;
        match basic_credentials(request) {
            Basic::Absent => Ok(OptionalResourceServer(None)),
            Basic::Given { id, secret } => client_id(state, &id, &secret)
                .map(|id| OptionalResourceServer(Some(id)))
                .ok_or_else(|| ApiError::InvalidClient.into()),
            Basic::Malformed => Err(ApiError::InvalidClient.into()),
        }
    }
}

/// The required `token` of an OAuth form: present, once, not empty.
fn required_token(fields: &FormFields) -> Result<String, ApiError> {
    match fields.at_most_once("token")? {
        Some(token) if !token.is_empty() => Ok(token.to_owned()),
        _ => Err(ApiError::InvalidRequest(
            "the parameter `token` is required".to_owned(),
        )),
    }
}

/// An introspection request (RFC 7662 section 2.1), form-encoded.
#[derive(Debug, Object)]
#[oai(rename = "IntrospectionRequest")]
pub struct IntrospectionForm {
    /// The token to ask about: an access token or a refresh token.
    #[oai(validator(min_length = 1))]
    pub token: String,
    /// `access_token` or `refresh_token`: which kind to look for first.
    /// Only an ordering: the other kind is looked for too, and any other
    /// value is ignored (RFC 7662 section 2.1).
    pub token_type_hint: Option<String>,
}

impl FromForm for IntrospectionForm {
    fn from_form(fields: &FormFields) -> Result<Self, ApiError> {
        let token = required_token(fields)?;
        let token_type_hint = fields.at_most_once("token_type_hint")?.map(str::to_owned);
        Ok(Self {
            token,
            token_type_hint,
        })
    }
}

/// The kinds of token a revocation may name in `token_type_hint` (which
/// only changes the order of the checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "TokenTypeHint")]
pub enum TokenTypeHint {
    /// A JWT access token.
    #[oai(rename = "access_token")]
    AccessToken,
    /// A refresh token.
    #[oai(rename = "refresh_token")]
    RefreshToken,
}

/// A revocation request (RFC 7009 section 2.1), form-encoded. A
/// `token_type_hint` other than `access_token` or `refresh_token` is
/// `400 unsupported_token_type`.
#[derive(Debug, Object)]
#[oai(rename = "RevocationRequest")]
pub struct RevocationForm {
    /// The token to revoke: an access token or a refresh token.
    #[oai(validator(min_length = 1))]
    pub token: String,
    // No doc comment: it would make the schema an `allOf` around the enum's
    // reference, which some client generators cannot read (see the type's).
    pub token_type_hint: Option<TokenTypeHint>,
}

impl FromForm for RevocationForm {
    fn from_form(fields: &FormFields) -> Result<Self, ApiError> {
        let token = required_token(fields)?;
        let token_type_hint = match fields.at_most_once("token_type_hint")? {
            None => None,
            Some("access_token") => Some(TokenTypeHint::AccessToken),
            Some("refresh_token") => Some(TokenTypeHint::RefreshToken),
            Some(_) => return Err(ApiError::UnsupportedTokenType),
        };
        Ok(Self {
            token,
            token_type_hint,
        })
    }
}

/// An introspection answer (RFC 7662 section 2.2): `{"active": false}`
/// alone, or `active: true` with what the token is.
#[derive(Debug, Default, Object)]
#[oai(rename = "Introspection")]
pub struct IntrospectionBody {
    /// Whether the token is valid now: an access token every authenticated
    /// route would accept, or the current refresh token of an active session.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
    /// The user id.
    #[oai(skip_serializing_if_is_none)]
    pub sub: Option<String>,
    /// When the token expires, Unix seconds.
    #[oai(skip_serializing_if_is_none)]
    pub exp: Option<i64>,
    /// When the access token was issued, Unix seconds.
    #[oai(skip_serializing_if_is_none)]
    pub iat: Option<i64>,
    /// When the access token became valid, Unix seconds.
    #[oai(skip_serializing_if_is_none)]
    pub nbf: Option<i64>,
    /// The access token's unique id.
    #[oai(skip_serializing_if_is_none)]
    pub jti: Option<String>,
    /// The session the token belongs to.
    #[oai(skip_serializing_if_is_none)]
    pub sid: Option<String>,
    /// The access token's issuer.
    #[oai(skip_serializing_if_is_none)]
    pub iss: Option<String>,
    /// The access token's audience.
    #[oai(skip_serializing_if_is_none)]
    pub aud: Option<String>,
}

/// Answers of `introspectToken`.
#[derive(ApiResponse)]
pub enum IntrospectResponse {
    /// What the token is: `{"active": false}` for anything not valid now.
    #[oai(status = 200, content_type = "application/json")]
    Ok(
        Json<IntrospectionBody>,
        /// `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `token` missing, or a parameter given twice (`invalid_request`); an
    /// unreadable body (`bad_request`).
    #[oai(status = 400, content_type = "application/json")]
    BadRequest(Json<ErrorBody>),
    /// No, malformed or wrong HTTP Basic credentials (`invalid_client`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// `Basic realm="tokengate"`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413, content_type = "application/json")]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/x-www-form-urlencoded` (`unsupported_media_type`).
    #[oai(status = 415, content_type = "application/json")]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The database cannot be used right now (`service_unavailable`): the
    /// token could not be judged.
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// Answers of `revokeToken`.
#[derive(ApiResponse)]
pub enum RevokeResponse {
    /// Done, durably, or the token was not valid (nothing to do): the
    /// answer does not say which. Empty body.
    #[oai(status = 200)]
    Ok,
    /// `token` missing, or a parameter given twice (`invalid_request`);
    /// `token_type_hint` not `access_token` or `refresh_token`
    /// (`unsupported_token_type`); an unreadable body (`bad_request`).
    #[oai(status = 400, content_type = "application/json")]
    BadRequest(Json<ErrorBody>),
    /// HTTP Basic credentials were sent and are wrong (`invalid_client`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// `Basic realm="tokengate"`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413, content_type = "application/json")]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/x-www-form-urlencoded` (`unsupported_media_type`).
    #[oai(status = 415, content_type = "application/json")]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The revocation could not be stored (`service_unavailable`).
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// The two kinds of token, in the order to look for them.
#[derive(Clone, Copy)]
enum Kind {
    Access,
    Refresh,
}

/// An access token every authenticated route would accept, as
/// introspection shows it; `None` if a route would refuse it.
async fn active_access_token(
    state: &AppState,
    token: &str,
) -> Result<Option<IntrospectionBody>, ApiError> {
    let claims = match check_token(state, token).await {
        Ok((claims, _user)) => claims,
        Err(ApiError::InvalidToken(_)) => return Ok(None),
        // Not judged (storage failed): never an answer about the token.
        Err(other) => return Err(other),
    };
    Ok(Some(IntrospectionBody {
        active: true,
        token_type: Some("access_token".to_owned()),
        sub: Some(claims.sub),
        exp: Some(claims.exp),
        iat: claims.iat,
        nbf: claims.nbf,
        jti: Some(claims.jti),
        sid: claims.sid,
        iss: Some(state.tokens.issuer().to_owned()),
        aud: Some(state.tokens.audience().to_owned()),
    }))
}

/// A current refresh token of an active session, as introspection shows
/// it; `None` for anything else. Reads only: never a use of the token.
async fn active_refresh_token(
    state: &AppState,
    token: &str,
) -> Result<Option<IntrospectionBody>, ApiError> {
    let Some(presented) = refresh::parse(token) else {
        return Ok(None);
    };
    Ok(state
        .store
        .refresh_token_state(&presented)
        .await?
        .map(|current| IntrospectionBody {
            active: true,
            token_type: Some("refresh_token".to_owned()),
            sub: Some(current.user_id.to_string()),
            exp: Some(current.expires_at),
            sid: Some(current.sid),
            ..IntrospectionBody::default()
        }))
}

/// Token introspection and revocation, for resource servers and token holders.
pub struct OAuthApi;

#[OpenApi(tag = "ApiTags::OAuth")]
impl OAuthApi {
    /// Introspect a token
    ///
    /// RFC 7662 token introspection, for resource servers: tells whether a
    /// token is valid *now*, which a resource server verifying JWTs with
    /// the JWKS alone cannot know (logout, ended sessions, global logout,
    /// password change). An access token is active when every authenticated
    /// route would accept it (the same check); a refresh token when it is
    /// the current one of an active session (asking never counts as using
    /// it). Anything else is exactly `{"active": false}`. The caller
    /// authenticates with HTTP Basic as one of `--introspection-clients`.
    #[oai(
        path = "/api/v1/token/introspect",
        method = "post",
        operation_id = "introspectToken"
    )]
    async fn introspect(
        &self,
        state: Data<&Arc<AppState>>,
        _client: ResourceServer,
        body: FormBody<IntrospectionForm>,
    ) -> poem::Result<IntrospectResponse> {
        let form = body.parse().await?;
        let order = match form.token_type_hint.as_deref() {
            Some("refresh_token") => [Kind::Refresh, Kind::Access],
            _ => [Kind::Access, Kind::Refresh],
        };
        for kind in order {
            let found = match kind {
                Kind::Access => active_access_token(&state, &form.token).await?,
                Kind::Refresh => active_refresh_token(&state, &form.token).await?,
            };
            if let Some(answer) = found {
                return Ok(IntrospectResponse::Ok(Json(answer), NO_STORE.to_owned()));
            }
        }
        Ok(IntrospectResponse::Ok(
            Json(IntrospectionBody::default()),
            NO_STORE.to_owned(),
        ))
    }

    /// Revoke a token
    ///
    /// RFC 7009 token revocation: a refresh token ends its session (its
    /// refresh token and every access token of it stop working); an access
    /// token is put into the denylist until it expires. Durable before the
    /// `200`. The answer is `200` with an empty body whether or not the
    /// token was valid. No credentials are needed (the token is one); HTTP
    /// Basic credentials, if sent, must be those of a configured resource
    /// server.
    #[oai(
        path = "/api/v1/token/revoke",
        method = "post",
        operation_id = "revokeToken"
    )]
    async fn revoke(
        &self,
        state: Data<&Arc<AppState>>,
        _client: OptionalResourceServer,
        body: FormBody<RevocationForm>,
    ) -> poem::Result<RevokeResponse> {
        let form = body.parse().await?;
        // A refresh token (`<sid>.<secret>`) and a JWT (three parts) cannot
        // be mistaken for each other, so the hint changes nothing here.
        if let Some(presented) = refresh::parse(&form.token) {
            if state.store.revoke_refresh(presented).await? {
                tracing::info!("refresh token revoked; session ended");
            }
        } else if let Ok(claims) = state.tokens.verify(&form.token) {
            // Only a token we signed, still unexpired, takes a denylist row.
            if state.store.revoke(&claims.jti, claims.exp).await? {
                tracing::info!(user_id = claims.user_id, "access token revoked");
            }
        }
        Ok(RevokeResponse::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_of_basic_credentials() {
        assert_eq!(form_decoded(b"plain-id"), None);
        assert_eq!(form_decoded(b"a+b%2Bc%3A").as_deref(), Some(&b"a b+c:"[..]));
        assert_eq!(form_decoded(b"100%").as_deref(), Some(&b"100%"[..]));
        assert_eq!(form_decoded(b"%zz%4").as_deref(), Some(&b"%zz%4"[..]));
    }
}
