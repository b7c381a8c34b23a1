//! `POST /api/v1/login`, `POST /api/v1/token/refresh` and
//! `DELETE /api/v1/logout`: starting, continuing and ending sessions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::{Data, RemoteAddr};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::types::Email;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::{Map, Value};

use super::attempts;
use super::body::{check_email, check_length, required_string, FromJsonObject, JsonBody};
use super::client_address::client_ip;
use super::security::BearerChecked;
use super::ApiTags;
use crate::auth::refresh;
use crate::auth::throttle::ClientKey;
use crate::auth::tokens::VerifiedClaims;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::state::AppState;
use crate::store::{Checked, LogoutScope, NewSession, Refreshed, TokenToEnd};

/// A login request.
#[derive(Debug, Object)]
pub struct LoginRequest {
    /// E-mail address (case-insensitive): a bare address (`local@domain`) of
    /// at most 254 bytes.
    #[oai(validator(max_length = 254))]
    pub email: Email,
    /// Password, 8 to 1024 characters.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub password: String,
}

impl FromJsonObject for LoginRequest {
    fn from_json_object(object: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let email = required_string(object, "email", &mut errors)
            .filter(|v| check_email(v, "email", &mut errors));
        let password = required_string(object, "password", &mut errors)
            .filter(|v| check_length(v, "password", 8, 1024, &mut errors));
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => Ok(Self {
                email: Email(email.to_lowercase()),
                password,
            }),
            _ => Err(errors),
        }
    }
}

/// A new pair of tokens: an access token and the session's refresh token.
#[derive(Debug, Object)]
#[oai(rename = "Token")]
pub struct TokenBody {
    /// The JWT, to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// When the access token expires (RFC 3339, UTC).
    pub expires_at: DateTime<Utc>,
    /// Opaque refresh token: `POST /api/v1/token/refresh` exchanges it for a
    /// new pair (and it then stops being current). Keep it out of reach of
    /// scripts you do not trust; never send it anywhere else.
    pub refresh_token: String,
    /// When the refresh token expires (RFC 3339, UTC).
    pub refresh_expires_at: DateTime<Utc>,
}

/// Signs an access token for `user_id` in session `sid` and pairs it with the
/// session's new refresh token. `not_before_us`: a moment (Unix µs) the
/// access token must be issued after (a password change's mark), or 0.
pub(crate) fn token_pair(
    state: &AppState,
    user_id: i64,
    sid: &str,
    refresh_token: String,
    refresh_expires_at: i64,
    not_before_us: i64,
) -> Result<TokenBody, ApiError> {
    let issued = state
        .tokens
        .issue(user_id, Some(sid), not_before_us)
        .map_err(|e| ApiError::Internal(format!("signing a token failed: {e}")))?;
    Ok(TokenBody {
        access_token: issued.token,
        token_type: "Bearer".to_owned(),
        expires_in: issued.expires_in,
        expires_at: issued.expires_at,
        refresh_token,
        refresh_expires_at: DateTime::from_timestamp(refresh_expires_at, 0).unwrap_or_default(),
    })
}

/// Longest `User-Agent` kept with a session, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;

/// The `User-Agent` of a request, cut to a bounded length.
pub(crate) fn user_agent(request: &Request) -> Option<String> {
    let text = request.headers().get("user-agent")?.to_str().ok()?;
    Some(text.chars().take(MAX_USER_AGENT_CHARS).collect())
}

/// A refresh request.
#[derive(Debug, Object)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

impl FromJsonObject for RefreshRequest {
    fn from_json_object(object: &Map<String, Value>) -> Result<Self, FieldErrors> {
        // Any string is taken as presented, however long: a refresh token of
        // the wrong shape is `invalid_grant` like any other bad one.
        if let Some(Value::String(refresh_token)) = object.get("refresh_token") {
            return Ok(Self {
                refresh_token: refresh_token.clone(),
            });
        }
        let mut errors = FieldErrors::new();
        required_string(object, "refresh_token", &mut errors);
        Err(errors)
    }
}

/// What else `DELETE /api/v1/logout` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "LogoutScope")]
pub enum ScopeParam {
    /// This token and its session (the session's refresh token and every
    /// other access token of it stop working).
    #[oai(rename = "local")]
    Local,
    /// Every other session of the user; this token and its session stay.
    #[oai(rename = "others")]
    Others,
    /// Every session of the user and every access token issued up to now.
    #[oai(rename = "global")]
    Global,
}

/// Answers of `login`.
#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Logged in: a new session, its first access token and refresh token.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<TokenBody>),
    /// The body is not valid JSON (`bad_request`).
    #[oai(status = 400, content_type = "application/json")]
    BadRequest(Json<ErrorBody>),
    /// Unknown e-mail address or wrong password, indistinguishably (`invalid_credentials`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer realm="tokengate"`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413, content_type = "application/json")]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json` (`unsupported_media_type`).
    #[oai(status = 415, content_type = "application/json")]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A field is missing or breaks the rules (`validation_failed`, with `fields`).
    #[oai(status = 422, content_type = "application/json")]
    ValidationFailed(Json<ErrorBody>),
    /// Too many failed logins for this e-mail address or from this client
    /// (`too_many_requests`); retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/json")]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until logins for this address or client are accepted again.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// The database cannot be used right now, or too many password hashes
    /// are queued (`service_unavailable`); retry after `Retry-After` seconds
    /// when given.
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying (sent when the server is busy).
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
}

/// Answers of `refreshToken`.
#[derive(ApiResponse)]
pub enum RefreshResponse {
    /// A new pair for the same session; the presented refresh token is now
    /// the previous one.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<TokenBody>),
    /// The body is not valid JSON (`bad_request`).
    #[oai(status = 400, content_type = "application/json")]
    BadRequest(Json<ErrorBody>),
    /// The refresh token is unknown, malformed, expired, reused or its
    /// session has ended (`invalid_grant`); log in again.
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer realm="tokengate"`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413, content_type = "application/json")]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json` (`unsupported_media_type`).
    #[oai(status = 415, content_type = "application/json")]
    UnsupportedMediaType(Json<ErrorBody>),
    /// `refresh_token` is missing or not a string (`validation_failed`).
    #[oai(status = 422, content_type = "application/json")]
    ValidationFailed(Json<ErrorBody>),
    /// The database cannot be used right now (`service_unavailable`); nothing changed.
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// Answers of `logout`.
#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// Logged out, durably: what the scope ends is rejected from now on,
    /// also after a restart.
    #[oai(status = 204)]
    NoContent,
    /// No token (`unauthenticated`), or a token that is malformed, expired or
    /// already revoked (`invalid_token`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// RFC 6750 challenge, e.g. `Bearer realm="tokengate", error="invalid_token", error_description="..."`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `scope` is not one of `local`, `others`, `global`, or is given more
    /// than once (`validation_failed`).
    #[oai(status = 422, content_type = "application/json")]
    ValidationFailed(Json<ErrorBody>),
    /// The logout could not be stored (`service_unavailable`); nothing ended.
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// A `422` for a query parameter given more than once (the value would be
/// ambiguous).
fn refuse_repeated_parameter(request: &Request, name: &str) -> Result<(), ApiError> {
    let repeated = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| pair.split('=').next() == Some(name))
        .count()
        > 1;
    if repeated {
        return Err(ApiError::Validation(FieldErrors::from([(
            name.to_owned(),
            vec!["must be given at most once".to_owned()],
        )])));
    }
    Ok(())
}

/// Logging in, refreshing and logging out.
pub struct AuthApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Log in
    ///
    /// Exchanges an e-mail address and password for a new session: a signed
    /// access token (a JWT carrying the session id as `sid`; HS256, or
    /// EdDSA/ES256 with a `kid` when the service signs with keys published at
    /// `/.well-known/jwks.json`) and the session's refresh token. Unknown
    /// addresses and wrong passwords get the same answer in about the same
    /// time. After repeated failures for one address or from one client,
    /// logins are refused with `429` for a while.
    #[oai(path = "/api/v1/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&Arc<AppState>>,
        remote: &RemoteAddr,
        request: &Request,
        body: JsonBody<LoginRequest>,
    ) -> poem::Result<LoginResponse> {
        let login = body.parse().await?;
        let email = login.email.0;
        let client_address = remote
            .as_socket_addr()
            .map(|peer| client_ip(peer.ip(), request.headers(), &state.trusted_proxies));
        let client = client_address.map(ClientKey::from);
        // Counted before the password is checked: concurrent attempts cannot
        // all pass a check made before any of them failed. Every way out of
        // this function but `succeeded` leaves the attempt counted as failed.
        let attempt = attempts::reserve(&state, &email, client).await?;

        let found = state.store.find_credentials(&email).await?;
        let (user_id, hash) = match found {
            Some(c) => (Some(c.id), Some(c.password_hash)),
            None => (None, None),
        };
        // An unknown address is verified against a dummy hash anyway, so both
        // failures cost the same time.
        let matches = state
            .passwords
            .verify(login.password, hash)
            .await
            .map_err(ApiError::from)?;
        let user_id = user_id.filter(|_| matches);

        let Some(user_id) = user_id else {
            attempt.failed();
            return Err(ApiError::InvalidCredentials.into());
        };
        attempt.succeeded(&state).await?;

        // A session starts, durably, before any token of it is handed out.
        let sid = refresh::new_session_id();
        let first = refresh::new_token(&sid);
        let refresh_expires_at = state
            .store
            .start_session(NewSession {
                sid: sid.clone(),
                user_id,
                refresh_hash: first.hash,
                user_agent: user_agent(request),
                ip: client_address.map(|ip| ip.to_string()),
            })
            .await?;
        let pair = token_pair(&state, user_id, &sid, first.token, refresh_expires_at, 0)?;
        tracing::info!(user_id, "user logged in");
        Ok(LoginResponse::Ok(Json(pair)))
    }

    /// Refresh the tokens
    ///
    /// Exchanges the session's current refresh token for a new pair (an
    /// access token and a new refresh token); the presented one becomes the
    /// previous one. Presenting the previous one again within the reuse
    /// interval (two tabs refreshing at once) also gets a working pair of the
    /// same session; presenting it later, or any older one, is treated as
    /// theft: the session ends and the answer is `401 invalid_grant`.
    #[oai(
        path = "/api/v1/token/refresh",
        method = "post",
        operation_id = "refreshToken"
    )]
    async fn refresh_token(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<RefreshRequest>,
    ) -> poem::Result<RefreshResponse> {
        let request = body.parse().await?;
        let Some(presented) = refresh::parse(&request.refresh_token) else {
            return Err(ApiError::InvalidGrant.into());
        };
        let sid = presented.sid.clone();
        let next = refresh::new_token(&sid);
        match state.store.refresh(presented, next.hash).await? {
            Refreshed::Issued {
                user_id,
                refresh_expires_at,
            } => {
                let pair = token_pair(&state, user_id, &sid, next.token, refresh_expires_at, 0)?;
                Ok(RefreshResponse::Ok(Json(pair)))
            }
            Refreshed::Theft => {
                tracing::warn!("refresh token reused outside the rules; session ended");
                Err(ApiError::InvalidGrant.into())
            }
            Refreshed::Invalid => Err(ApiError::InvalidGrant.into()),
        }
    }

    /// Log out
    ///
    /// Ends the bearer token, and with `scope` more, durably: the `204` is
    /// sent only once that is committed. `local` (the default): this token
    /// (its `jti` goes into the denylist) and its session, so the session's
    /// refresh token and every other access token of it stop working.
    /// `others`: every other session of the user; this token and its session
    /// stay valid. `global`: every session of the user and every access token
    /// of the user issued up to now. Logging out twice with the same token
    /// gets `401` the second time.
    #[oai(path = "/api/v1/logout", method = "delete", operation_id = "logout")]
    async fn logout(
        &self,
        state: Data<&Arc<AppState>>,
        request: &Request,
        auth: BearerChecked,
        /// What else to end: `local` (default), `others` or `global`.
        scope: Query<Option<ScopeParam>>,
    ) -> poem::Result<LogoutResponse> {
        refuse_repeated_parameter(request, "scope")?;
        let scope = match scope.0.unwrap_or(ScopeParam::Local) {
            ScopeParam::Local => LogoutScope::Local,
            ScopeParam::Others => LogoutScope::Others,
            ScopeParam::Global => LogoutScope::Global,
        };
        end(&state, auth.0, scope).await?;
        Ok(LogoutResponse::NoContent)
    }
}

/// Ends `claims`' token and what `scope` says, durably.
async fn end(state: &AppState, claims: VerifiedClaims, scope: LogoutScope) -> Result<(), ApiError> {
    let token = TokenToEnd {
        key: claims.lookup_key(),
        exp: claims.exp,
        issued: claims.issued,
    };
    match state.store.logout(token, scope).await? {
        Checked::Done(()) => Ok(()),
        // The storage half of the token check, applied inside the write.
        Checked::Refused(refusal) => Err(ApiError::InvalidToken(refusal.description())),
    }
}

/// `DELETE /api/v1/logout` answered straight from [`crate::middleware`],
/// without poem-openapi's router (see `crate::api::users::current_user_direct`
/// for why): the same checks in the same order as [`AuthApi::logout`] (the
/// token, then `scope`), the same answers.
pub async fn logout_direct(request: &Request) -> poem::Response {
    let ended = async {
        let (state, claims) = super::security::verify(request)?;
        let query = request.uri().query().unwrap_or("");
        let scope = form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "scope")
            .map(|(_, value)| value);
        let scope = match scope.as_deref() {
            None => LogoutScope::Local,
            Some("local") => LogoutScope::Local,
            Some("others") => LogoutScope::Others,
            Some("global") => LogoutScope::Global,
            Some(_) => {
                return Err(ApiError::Validation(FieldErrors::from([(
                    "scope".to_owned(),
                    vec!["is invalid: must be one of local, others, global".to_owned()],
                )])))
            }
        };
        refuse_repeated_parameter(request, "scope")?;
        end(state, claims, scope).await
    }
    .await;
    match ended {
        Ok(()) => poem::Response::builder()
            .status(poem::http::StatusCode::NO_CONTENT)
            .finish(),
        Err(error) => poem::error::ResponseError::as_response(&error),
    }
}
