//! `POST /api/v1/register` and `GET /api/v1/user`.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Email;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::{Map, Value};

use super::body::{check_email, check_length, required_string, FromJsonObject, JsonBody};
use super::security::BearerUser;
use super::{ApiTags, UserBody};
use crate::config::Registration;
use crate::error::{ApiError, ErrorBody, FieldErrors};
use crate::state::AppState;
use crate::store::{blocking, users};

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
        let pool = state.pool.clone();
        let created = blocking(move || {
            let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
            Ok(users::create(
                &*pool.get()?,
                &request.name,
                &request.email.0,
                &hash,
                &created_at,
            ))
        })
        .await?;
        match created {
            Ok(user) => {
                tracing::info!(user_id = user.id, "user registered");
                Ok(RegisterResponse::Created(Json(user.into())))
            }
            Err(users::CreateError::EmailTaken) => Err(ApiError::EmailTaken.into()),
            Err(users::CreateError::Store(e)) => Err(ApiError::from(e).into()),
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
}
