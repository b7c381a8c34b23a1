//! `GET /api/v1/sessions` and `DELETE /api/v1/sessions/{id}`: a user's view
//! of where they are logged in, and logging one place out.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
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
    /// `User-Agent` of the login, or `null` if it sent none.
    pub user_agent: NullableString,
    /// Client address of the login, or `null` if unknown.
    pub ip: NullableString,
    /// Whether this is the session of the token making the call.
    pub current: bool,
}

/// A string that is always present in the JSON, as a string or `null`, and
/// documented so (`nullable: true`); poem-openapi's `Option<String>` would be
/// documented as a plain string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NullableString(pub Option<String>);

impl Type for NullableString {
    const IS_REQUIRED: bool = true;

    type RawValueType = String;

    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "nullable_string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            nullable: true,
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref()
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.0.iter())
    }
}

impl ParseFromJSON for NullableString {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(Self(None)),
            Some(serde_json::Value::String(s)) => Ok(Self(Some(s))),
            Some(other) => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for NullableString {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(
            self.0
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::String),
        )
    }
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
            user_agent: NullableString(row.user_agent),
            ip: NullableString(row.ip),
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
