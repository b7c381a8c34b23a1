//! Every failure the HTTP layer can answer, and the one place where each
//! becomes a status, a JSON body `{"error", "message"[, "fields"]}` and, on
//! `401`, a `WWW-Authenticate` challenge (RFC 6750 Bearer; RFC 7617 Basic for
//! the resource servers of token introspection).
//!
//! Errors raised by poem and poem-openapi themselves (unknown route, wrong
//! method, unreadable body, ...) are turned into the same shape by
//! [`into_json_response`], called by the one layer around routing
//! ([`crate::middleware`]).

use std::collections::BTreeMap;

use poem::error::{MethodNotAllowedError, NotFoundError, ResponseError};
use poem::http::{header, HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseParamError, ParseRequestPayloadError,
};
use poem_openapi::Object;
use serde::Serialize;

use crate::auth::password::HashError;
use crate::store::StoreError;

/// The realm of every challenge.
pub const REALM: &str = "tokengate";

/// Field name -> problems, for `422 validation_failed`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, Object)]
#[oai(rename = "Error")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_token`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
    /// On `422 validation_failed`: the problems of each offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[oai(skip_serializing_if_is_none)]
    pub fields: Option<FieldErrors>,
}

/// A failure answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization` header, or not the Bearer scheme.
    #[error("an access token is required: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    /// A Bearer token that is empty, malformed, unverifiable, expired or revoked.
    #[error("the access token was rejected: {0}")]
    InvalidToken(&'static str),
    /// Unknown e-mail or wrong password (deliberately indistinguishable).
    #[error("the e-mail address or password is incorrect")]
    InvalidCredentials,
    /// A refresh token that is unknown, malformed, expired, reused or ended
    /// (deliberately indistinguishable).
    #[error("the refresh token is invalid, expired or revoked; log in again")]
    InvalidGrant,
    /// A password change with a wrong current password.
    #[error("the current password is incorrect")]
    WrongPassword,
    /// Token introspection or revocation without valid HTTP Basic
    /// credentials of a configured resource server (RFC 6749 section 5.2).
    #[error("the client credentials are missing or wrong: send `Authorization: Basic` with the id and secret of a configured resource server")]
    InvalidClient,
    /// An OAuth request (RFC 7662/7009) without its `token`, or with a
    /// parameter given twice.
    #[error("{0}")]
    InvalidRequest(String),
    /// A revocation whose `token_type_hint` is neither `access_token` nor
    /// `refresh_token`.
    #[error("`token_type_hint` must be `access_token` or `refresh_token`")]
    UnsupportedTokenType,
    /// No such active session of the caller.
    #[error("there is no such active session")]
    SessionNotFound,
    /// Registration is closed by configuration.
    #[error("registration is closed on this server")]
    RegistrationClosed,
    /// No such route.
    #[error("there is no such route")]
    NotFound,
    /// The route exists but not with this method.
    #[error("this method is not allowed on this route")]
    MethodNotAllowed,
    /// The e-mail address is already registered.
    #[error("a user with this e-mail address already exists")]
    EmailTaken,
    /// The request body is over the limit.
    #[error(
        "the request body is larger than {} bytes",
        crate::api::body::MAX_BODY_BYTES
    )]
    PayloadTooLarge,
    /// Not `application/json`.
    #[error("the request body must be sent as `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// Not `application/x-www-form-urlencoded` (the OAuth endpoints).
    #[error("the request body must be sent as `Content-Type: application/x-www-form-urlencoded`")]
    FormMediaTypeRequired,
    /// The body is not JSON, or another malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// The body is JSON but breaks the rules.
    #[error("the request body is invalid")]
    Validation(FieldErrors),
    /// Too many failed logins; retry after that many seconds.
    #[error("too many failed logins; try again in {retry_after} seconds")]
    TooManyRequests {
        /// Seconds until the block lifts.
        retry_after: u64,
    },
    /// The database cannot be used right now.
    #[error("the service cannot reach its database right now; try again shortly")]
    Unavailable(#[source] StoreError),
    /// Too much work is queued (password hashing); retry after that many seconds.
    #[error("the service is busy; try again in {retry_after} seconds")]
    Busy {
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// A bug or an unexpected failure; details are logged, never sent.
    #[error("an internal error occurred")]
    Internal(String),
    /// Any other HTTP-level refusal from the framework.
    #[error("{1}")]
    Http(StatusCode, String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e)
    }
}

/// How long a client refused for a full hashing queue should wait: the
/// queue drains in well under a second.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError::Busy {
                retry_after: BUSY_RETRY_AFTER_SECS,
            },
            HashError::Failed(cause) => ApiError::Internal(cause),
        }
    }
}

impl ApiError {
    /// The stable machine code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InvalidCredentials | ApiError::WrongPassword => "invalid_credentials",
            ApiError::InvalidGrant => "invalid_grant",
            ApiError::InvalidClient => "invalid_client",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::UnsupportedTokenType => "unsupported_token_type",
            ApiError::SessionNotFound => "not_found",
            ApiError::RegistrationClosed => "registration_closed",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::EmailTaken => "email_taken",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType | ApiError::FormMediaTypeRequired => {
                "unsupported_media_type"
            }
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Validation(_) => "validation_failed",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Unavailable(_) | ApiError::Busy { .. } => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
            ApiError::Http(status, _) => http_code(*status),
        }
    }

    fn challenge(&self) -> Option<String> {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidCredentials | ApiError::InvalidGrant => {
                Some(format!("Bearer realm=\"{REALM}\""))
            }
            ApiError::InvalidToken(description) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{description}\""
            )),
            // RFC 7617: the client authenticates with HTTP Basic.
            ApiError::InvalidClient => Some(format!("Basic realm=\"{REALM}\"")),
            _ => None,
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_owned(),
            message: capitalise(&self.to_string()),
            fields: match self {
                ApiError::Validation(fields) => Some(fields.clone()),
                _ => None,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated
            | ApiError::InvalidToken(_)
            | ApiError::InvalidCredentials
            | ApiError::InvalidGrant
            | ApiError::InvalidClient => StatusCode::UNAUTHORIZED,
            ApiError::RegistrationClosed | ApiError::WrongPassword => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::SessionNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::EmailTaken => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::FormMediaTypeRequired => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::BadRequest(_)
            | ApiError::InvalidRequest(_)
            | ApiError::UnsupportedTokenType => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Http(status, _) => *status,
        }
    }

    fn as_response(&self) -> Response {
        match self {
            ApiError::Unavailable(cause) => tracing::error!(error = %cause, "database unavailable"),
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            _ => {}
        }
        let mut response = poem::web::Json(self.body())
            .with_status(self.status())
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(challenge) = self.challenge() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if let ApiError::TooManyRequests { retry_after } | ApiError::Busy { retry_after } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        response
    }
}

/// Turns any error reaching the top of the app into the JSON error shape.
pub fn into_json_response(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.as_response();
    }
    let api = if err.is::<NotFoundError>() {
        ApiError::NotFound
    } else if err.is::<MethodNotAllowedError>() {
        ApiError::MethodNotAllowed
    } else if err.is::<ContentTypeError>() {
        ApiError::UnsupportedMediaType
    } else if err.is::<AuthorizationError>() {
        ApiError::Unauthenticated
    } else if let Some(param) = err.downcast_ref::<ParseParamError>() {
        // A query or path parameter that is not one of its allowed values.
        ApiError::Validation(FieldErrors::from([(
            param.name.to_owned(),
            vec![format!("is invalid: {}", param.reason)],
        )]))
    } else if let Some(parse) = err.downcast_ref::<ParseRequestPayloadError>() {
        ApiError::BadRequest(format!("the request body is invalid: {}", parse.reason))
    } else {
        match err.status() {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => ApiError::Unauthenticated,
            status if status.is_server_error() => ApiError::Internal(err.to_string()),
            status => ApiError::Http(
                status,
                status
                    .canonical_reason()
                    .unwrap_or("request refused")
                    .to_owned(),
            ),
        }
    };
    api.as_response()
}

fn http_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        403 => "forbidden",
        406 => "not_acceptable",
        408 => "request_timeout",
        411 => "length_required",
        414 => "uri_too_long",
        431 => "request_header_fields_too_large",
        _ if status.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>() + ".",
        None => String::new(),
    }
}

impl From<StoreError> for poem::Error {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}
