//! `GET /health`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Service health.
#[derive(Debug, Object)]
#[oai(rename = "Health")]
pub struct HealthBody {
    /// `ok` when the database answers.
    pub status: String,
}

/// Answers of `health`.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The service and its database work.
    #[oai(status = 200, content_type = "application/json")]
    Ok(Json<HealthBody>),
    /// The database cannot be read, or writes to it do not commit
    /// (`service_unavailable`): logouts could not be made durable.
    #[oai(status = 503, content_type = "application/json")]
    ServiceUnavailable(Json<ErrorBody>),
}

/// Service health.
pub struct HealthApi;

#[OpenApi(tag = "ApiTags::System")]
impl HealthApi {
    /// Check service health
    ///
    /// Runs a real query on the users table and the denylist, and makes sure
    /// writes commit (a commit within the last second, or a probe row
    /// committed now); `503` when the database cannot be read or written, for
    /// then a logout could not be made durable.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self, state: Data<&Arc<AppState>>) -> poem::Result<HealthResponse> {
        state.store.health().await.map_err(ApiError::from)?;
        Ok(HealthResponse::Ok(Json(HealthBody {
            status: "ok".to_owned(),
        })))
    }
}
