//! `POST /api/v1/login` and `DELETE /api/v1/logout`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::http::HeaderMap;
use poem::web::{Data, RemoteAddr};
use poem_openapi::payload::Json;
use poem_openapi::types::Email;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::{Map, Value};

use super::body::{check_email, check_length, required_string, FromJsonObject, JsonBody};
use super::client_address::client_ip;
use super::security::BearerAuth;
use super::ApiTags;
use crate::auth::throttle::ClientKey;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::state::AppState;
use crate::store::denylist::Revocation;
use crate::store::{blocking, users};

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

/// An access token.
#[derive(Debug, Object)]
#[oai(rename = "Token")]
pub struct TokenBody {
    /// The JWT, to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// When the token expires (RFC 3339, UTC).
    pub expires_at: DateTime<Utc>,
}

/// Answers of `login`.
#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Logged in: a fresh access token.
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

/// Answers of `logout`.
#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// The token is revoked, durably: it is rejected from now on, also after a restart.
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
    /// The revocation could not be stored (`service_unavailable`); the token is not revoked.
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// Logging in and out.
pub struct AuthApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Log in
    ///
    /// Exchanges an e-mail address and password for a signed access token
    /// (HS256 JWT). Unknown addresses and wrong passwords get the same answer
    /// in about the same time. After repeated failures for one address or from
    /// one client, logins are refused with `429` for a while.
    #[oai(path = "/api/v1/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&Arc<AppState>>,
        remote: &RemoteAddr,
        headers: &HeaderMap,
        body: JsonBody<LoginRequest>,
    ) -> poem::Result<LoginResponse> {
        let request = body.parse().await?;
        let email = request.email.0;
        let client = remote
            .as_socket_addr()
            .map(|peer| client_ip(peer.ip(), headers, &state.trusted_proxies))
            .map(ClientKey::from);
        // Counted before the password is checked: concurrent attempts cannot
        // all pass a check made before any of them failed. Every way out of
        // this function but `succeeded` leaves the attempt counted as failed.
        let attempt = state.throttle.reserve(&email, client).map_err(|wait| {
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::TooManyRequests {
                retry_after: retry_after.max(1),
            }
        })?;

        let pool = state.pool.clone();
        let lookup = email.clone();
        let found = blocking(move || users::find_credentials(&*pool.get()?, &lookup)).await?;
        let (user_id, hash) = match found {
            Some(c) => (Some(c.id), Some(c.password_hash)),
            None => (None, None),
        };
        // An unknown address is verified against a dummy hash anyway, so both
        // failures cost the same time.
        let matches = state
            .passwords
            .verify(request.password, hash)
            .await
            .map_err(ApiError::from)?;
        let user_id = user_id.filter(|_| matches);

        let Some(user_id) = user_id else {
            attempt.failed();
            return Err(ApiError::InvalidCredentials.into());
        };
        attempt.succeeded();
        let issued = state
            .tokens
            .issue(user_id)
            .map_err(|e| ApiError::Internal(format!("signing a token failed: {e}")))?;
        tracing::info!(user_id, "user logged in");
        Ok(LoginResponse::Ok(Json(TokenBody {
            access_token: issued.token,
            token_type: "Bearer".to_owned(),
            expires_in: issued.expires_in,
            expires_at: issued.expires_at,
        })))
    }

    /// Log out
    ///
    /// Revokes the bearer token: its `jti` is added to the denylist, and the
    /// `204` is sent only once that is committed to disk. From then on every
    /// authenticated route rejects the token, also after a restart. Logging
    /// out twice with the same token gets `401` the second time.
    #[oai(path = "/api/v1/logout", method = "delete", operation_id = "logout")]
    async fn logout(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> poem::Result<LogoutResponse> {
        match state.denylist.revoke(&auth.0.jti, auth.0.exp).await? {
            Revocation::Revoked => Ok(LogoutResponse::NoContent),
            // Another request revoked it between our check and our insert.
            Revocation::AlreadyRevoked => {
                Err(ApiError::InvalidToken("the access token has been revoked").into())
            }
        }
    }
}
