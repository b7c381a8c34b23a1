//! `POST /api/v1/register`, `GET /api/v1/user` and
//! `PUT /api/v1/user/password`.

use std::sync::Arc;

use poem::web::{Data, RemoteAddr};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::Email;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::{Map, Value};

use super::attempts;
use super::auth::{token_pair, user_agent, TokenBody};
use super::body::{check_email, check_length, required_string, FromJsonObject, JsonBody};
use super::client_address::client_ip;
use super::security::{self, BearerUser};
use super::{ApiTags, UserBody};
use crate::auth::refresh;
use crate::auth::throttle::ClientKey;
use crate::config::Registration;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::state::AppState;
use crate::store::{Checked, CreateError, NewSession, PasswordChange, TokenToEnd};

/// A registration request.
#[derive(Debug, Object)]
pub struct RegisterRequest {
    /// Display name, 1 to 255 characters.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub name: String,
    /// E-mail address; unique, compared case-insensitively, stored
    /// lower-cased. A bare address (`local@domain`) of at most 254 bytes: no
    /// display name, no domain literal.
    #[oai(validator(max_length = 254))]
    pub email: Email,
    /// Password, 8 to 1024 characters.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub password: String,
}

impl FromJsonObject for RegisterRequest {
    fn from_json_object(object: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = required_string(object, "name", &mut errors)
            .filter(|v| check_length(v, "name", 1, 255, &mut errors));
        let email = required_string(object, "email", &mut errors)
            .filter(|v| check_email(v, "email", &mut errors));
        let password = required_string(object, "password", &mut errors)
            .filter(|v| check_length(v, "password", 8, 1024, &mut errors));
        match (name, email, password) {
            (Some(name), Some(email), Some(password)) if errors.is_empty() => Ok(Self {
                name,
                email: Email(email.to_lowercase()),
                password,
            }),
            _ => Err(errors),
        }
    }
}

/// Answers of `register`.
#[derive(ApiResponse)]
pub enum RegisterResponse {
    /// The user was created.
    #[oai(status = 201, content_type = "application/json")]
    Created(Json<UserBody>),
    /// The body is not valid JSON (`bad_request`).
    #[oai(status = 400, content_type = "application/json")]
    BadRequest(Json<ErrorBody>),
    /// Registration is closed on this server (`registration_closed`).
    #[oai(status = 403, content_type = "application/json")]
    RegistrationClosed(Json<ErrorBody>),
    /// The e-mail address is already registered (`email_taken`).
    #[oai(status = 409, content_type = "application/json")]
    EmailTaken(Json<ErrorBody>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413, content_type = "application/json")]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json` (`unsupported_media_type`).
    #[oai(status = 415, content_type = "application/json")]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A field is missing or breaks the rules (`validation_failed`, with `fields`).
    #[oai(status = 422, content_type = "application/json")]
    ValidationFailed(Json<ErrorBody>),
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

/// Answers of `currentUser`.
#[derive(ApiResponse)]
pub enum CurrentUserResponse {
    /// The user the token belongs to.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<UserBody>),
    /// No token (`unauthenticated`), or a token that is malformed, expired,
    /// revoked or whose user no longer exists (`invalid_token`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// RFC 6750 challenge, e.g. `Bearer realm="tokengate", error="invalid_token", error_description="..."`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The denylist or user table cannot be read (`service_unavailable`).
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// Registering and reading users.
pub struct UsersApi;

#[OpenApi(tag = "ApiTags::Users")]
impl UsersApi {
    /// Register a new user
    ///
    /// Creates an account. The e-mail address is compared case-insensitively
    /// and stored lower-cased; the password is stored as an argon2id hash.
    /// With registration closed, answers `403` without reading the body.
    #[oai(path = "/api/v1/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        state: Data<&Arc<AppState>>,
        body: JsonBody<RegisterRequest>,
    ) -> poem::Result<RegisterResponse> {
        if state.registration == Registration::Closed {
            return Err(ApiError::RegistrationClosed.into());
        }
        let request = body.parse().await?;
        let hash = state
            .passwords
            .hash(request.password)
            .await
            .map_err(ApiError::from)?;
        let created = state
            .store
            .create_user(request.name, request.email.0, hash)
            .await;
        match created {
            Ok(user) => {
                tracing::info!(user_id = user.id, "user registered");
                Ok(RegisterResponse::Created(Json(user.into())))
            }
            Err(CreateError::EmailTaken) => Err(ApiError::EmailTaken.into()),
            Err(CreateError::Store(e)) => Err(ApiError::from(e).into()),
        }
    }

    /// Get the current user
    ///
    /// Returns the user the bearer token belongs to. The token must be valid
    /// and not revoked, and its user must still exist.
    #[oai(path = "/api/v1/user", method = "get", operation_id = "currentUser")]
    async fn current_user(&self, auth: BearerUser) -> CurrentUserResponse {
        CurrentUserResponse::Ok(Json(auth.user.into()))
    }

    /// Change the password
    ///
    /// Checks `current_password`, stores `new_password` (the register rules
    /// apply; it may equal the old one) and answers a new pair for the
    /// current session. Every other session of the user ends, and every access
    /// token of the user issued before the change is rejected from now on,
    /// including the one that made this call. A wrong `current_password` is
    /// `403` and counts as a failed login for the user's e-mail address.
    #[oai(
        path = "/api/v1/user/password",
        method = "put",
        operation_id = "changePassword"
    )]
    async fn change_password(
        &self,
        state: Data<&Arc<AppState>>,
        remote: &RemoteAddr,
        request: &Request,
        auth: BearerUser,
        body: JsonBody<ChangePasswordRequest>,
    ) -> poem::Result<ChangePasswordResponse> {
        let change = body.parse().await?;
        let email = auth.user.email.clone();
        let client_address = remote
            .as_socket_addr()
            .map(|peer| client_ip(peer.ip(), request.headers(), &state.trusted_proxies));
        // A wrong current password counts as a failed login for the user's
        // address, reserved before the check like a login.
        let attempt =
            attempts::reserve(&state, &email, client_address.map(ClientKey::from)).await?;
        let hash = state
            .store
            .find_credentials(&email)
            .await?
            .map(|c| c.password_hash);
        let matches = state
            .passwords
            .verify(change.current_password, hash)
            .await
            .map_err(ApiError::from)?;
        if !matches {
            attempt.failed();
            return Err(ApiError::WrongPassword.into());
        }
        attempt.succeeded(&state).await?;
        let password_hash = state
            .passwords
            .hash(change.new_password)
            .await
            .map_err(ApiError::from)?;

        let claims = auth.claims;
        let user_id = claims.user_id;
        // A token without a session (issued before v2) gets a new session.
        let sid = claims.sid.clone().unwrap_or_else(refresh::new_session_id);
        let next = refresh::new_token(&sid);
        let at_us = chrono::Utc::now().timestamp_micros();
        let outcome = state
            .store
            .change_password(PasswordChange {
                token: TokenToEnd {
                    key: claims.lookup_key(),
                    exp: claims.exp,
                    issued: claims.issued,
                },
                password_hash,
                session: NewSession {
                    sid: sid.clone(),
                    user_id,
                    refresh_hash: next.hash,
                    user_agent: user_agent(request),
                    ip: client_address.map(|ip| ip.to_string()),
                },
                at_us,
            })
            .await?;
        match outcome {
            Checked::Done(refresh_expires_at) => {
                tracing::info!(user_id, "password changed");
                let pair =
                    token_pair(&state, user_id, &sid, next.token, refresh_expires_at, at_us)?;
                Ok(ChangePasswordResponse::Ok(Json(pair)))
            }
            Checked::Refused(refusal) => Err(ApiError::InvalidToken(refusal.description()).into()),
        }
    }
}

/// A password change.
#[derive(Debug, Object)]
pub struct ChangePasswordRequest {
    /// The password now.
    #[oai(validator(min_length = 1, max_length = 1024))]
    pub current_password: String,
    /// The new password, 8 to 1024 characters.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub new_password: String,
}

impl FromJsonObject for ChangePasswordRequest {
    fn from_json_object(object: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let current = required_string(object, "current_password", &mut errors)
            .filter(|v| check_length(v, "current_password", 1, 1024, &mut errors));
        let new = required_string(object, "new_password", &mut errors)
            .filter(|v| check_length(v, "new_password", 8, 1024, &mut errors));
        match (current, new) {
            (Some(current_password), Some(new_password)) if errors.is_empty() => Ok(Self {
                current_password,
                new_password,
            }),
            _ => Err(errors),
        }
    }
}

/// Answers of `changePassword`.
#[derive(ApiResponse)]
pub enum ChangePasswordResponse {
    /// Changed: a new pair for the current session.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<TokenBody>),
    /// The body is not valid JSON (`bad_request`).
    #[oai(status = 400, content_type = "application/json")]
    BadRequest(Json<ErrorBody>),
    /// No token (`unauthenticated`), or a token that is not accepted (`invalid_token`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// RFC 6750 challenge.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// `current_password` is wrong (`invalid_credentials`); counts as a failed login.
    #[oai(status = 403, content_type = "application/json")]
    Forbidden(Json<ErrorBody>),
    /// The body is over 64 KiB (`payload_too_large`).
    #[oai(status = 413, content_type = "application/json")]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json` (`unsupported_media_type`).
    #[oai(status = 415, content_type = "application/json")]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A field is missing or breaks the rules (`validation_failed`, with `fields`).
    #[oai(status = 422, content_type = "application/json")]
    ValidationFailed(Json<ErrorBody>),
    /// Too many failed attempts for this e-mail address or client
    /// (`too_many_requests`); retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/json")]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds until attempts are accepted again.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// The database cannot be used right now (`service_unavailable`); nothing changed.
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// `GET /api/v1/user` answered straight from [`crate::middleware`], without
/// poem-openapi's router: its layers of boxed futures moved the request
/// several times per call, a measurable share of the authenticated read. The
/// token goes through the same check ([`security::authenticate`]) and the
/// body is the one [`UsersApi::current_user`] sends, rendered once per
/// remembered lookup. The OpenAPI operation stays the documented one (and
/// serves `HEAD`).
pub async fn current_user_direct(request: &Request) -> poem::Response {
    match security::authenticate(request).await {
        Ok((_, facts)) => {
            let body = facts
                .rendered
                .get_or_init(|| {
                    let json = UserBody::from(facts.user.clone()).to_json();
                    bytes::Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
                })
                .clone();
            poem::Response::builder()
                .header(poem::http::header::CONTENT_TYPE, "application/json")
                .body(body)
        }
        Err(error) => poem::error::ResponseError::as_response(&error),
    }
}
