//! `GET /api/v1/sessions` and `DELETE /api/v1/sessions/{id}`: a user's view
//! of where they are logged in, and logging one place out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::security::BearerAuth;
use super::ApiTags;
use crate::auth::refresh;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::store::SessionRow;

/// One active session of the user.
#[derive(Debug, Object)]
#[oai(rename = "Session")]
pub struct SessionBody {
    /// The session id (the `sid` of its access tokens).
    pub id: String,
    /// When it started (the login; RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// The last login or refresh (reading a route does not change it).
    pub last_used_at: DateTime<Utc>,
    /// When it ends by itself: its refresh token expires (or its maximum age
    /// is reached, if sooner).
    pub expires_at: DateTime<Utc>,
    /// `User-Agent` of the login, if it sent one.
    pub user_agent: Option<String>,
    /// Client address of the login, if known.
    pub ip: Option<String>,
    /// Whether this is the session of the token making the call.
    pub current: bool,
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl SessionBody {
    fn new(row: SessionRow, current_sid: Option<&str>) -> Self {
        Self {
            current: current_sid == Some(row.id.as_str()),
            id: row.id,
            created_at: from_ms(row.created_at_ms),
            last_used_at: from_ms(row.last_used_at_ms),
            expires_at: DateTime::from_timestamp(row.expires_at, 0).unwrap_or_default(),
            user_agent: row.user_agent,
            ip: row.ip,
        }
    }
}

/// Answers of `listSessions`.
#[derive(ApiResponse)]
pub enum ListSessionsResponse {
    /// The caller's active sessions, newest first.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<Vec<SessionBody>>),
    /// No token (`unauthenticated`), or a token that is not accepted (`invalid_token`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// RFC 6750 challenge.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The database cannot be read right now (`service_unavailable`).
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// Answers of `deleteSession`.
#[derive(ApiResponse)]
pub enum DeleteSessionResponse {
    /// The session ended, durably: its refresh token and every access token
    /// of it are rejected from now on.
    #[oai(status = 204)]
    NoContent,
    /// No token (`unauthenticated`), or a token that is not accepted (`invalid_token`).
    #[oai(status = 401, content_type = "application/json")]
    Unauthorized(
        Json<ErrorBody>,
        /// RFC 6750 challenge.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// No such active session of the caller (`not_found`): another user's, an
    /// ended one, and garbage all look the same.
    #[oai(status = 404, content_type = "application/json")]
    NotFound(Json<ErrorBody>),
    /// The session could not be ended right now (`service_unavailable`).
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// Sessions: where a user is logged in.
pub struct SessionsApi;

#[OpenApi(tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// List my sessions
    ///
    /// The caller's active sessions (not ended, not expired), newest first;
    /// `current` marks the one of the token making the call.
    #[oai(
        path = "/api/v1/sessions",
        method = "get",
        operation_id = "listSessions"
    )]
    async fn list_sessions(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> poem::Result<ListSessionsResponse> {
        let claims = auth.0;
        let rows = state.store.list_sessions(claims.user_id).await?;
        let current = claims.sid.as_deref();
        Ok(ListSessionsResponse::Ok(Json(
            rows.into_iter()
                .map(|row| SessionBody::new(row, current))
                .collect(),
        )))
    }

    /// End one of my sessions
    ///
    /// Ends one of the caller's sessions (the current one too), durably: its
    /// refresh token and every access token of it stop working on every route.
    #[oai(
        path = "/api/v1/sessions/:id",
        method = "delete",
        operation_id = "deleteSession"
    )]
    async fn delete_session(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The session id, from `GET /api/v1/sessions`.
        id: Path<String>,
    ) -> poem::Result<DeleteSessionResponse> {
        if !refresh::is_session_id(&id.0) {
            return Err(ApiError::SessionNotFound.into());
        }
        if state.store.end_session(auth.0.user_id, &id.0).await? {
            Ok(DeleteSessionResponse::NoContent)
        } else {
            Err(ApiError::SessionNotFound.into())
        }
    }
}
