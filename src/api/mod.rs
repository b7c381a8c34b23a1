//! The HTTP API, described with poem-openapi: one file per area.
//!
//! - [`users`]: `register`, `currentUser`, `changePassword`
//! - [`auth`]: `login`, `refreshToken`, `logout`
//! - [`sessions`]: `listSessions`, `deleteSession`
//! - [`jwks`]: `jwks`, the public signing keys
//! - [`oauth`]: `introspectToken` (RFC 7662) and `revokeToken` (RFC 7009),
//!   for resource servers and token holders
//! - [`health`]: the `health` operation
//! - [`security`]: the `bearerAuth` scheme, where every token is checked
//! - [`body`]: the JSON and form request-body extractors
//! - [`client_address`]: who a request comes from, behind trusted proxies
//!
//! Handlers return `poem::Result<...Response>`. Each response enum lists the
//! success and every error the operation can answer, so the OpenAPI document
//! tells the truth; the error variants themselves are produced by
//! [`crate::error::ApiError`], which builds every error body in one place.

pub mod attempts;
pub mod auth;
pub mod body;
pub mod client_address;
pub mod health;
pub mod jwks;
pub mod oauth;
pub mod security;
pub mod sessions;
pub mod users;

use chrono::{DateTime, Utc};
use poem_openapi::{Object, OpenApiService, Tags};

use crate::store::User;

/// Tags grouping the operations in the document and Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Logging in, refreshing and logging out.
    #[oai(rename = "auth")]
    Auth,
    /// Where a user is logged in.
    #[oai(rename = "sessions")]
    Sessions,
    /// Registering and reading users.
    #[oai(rename = "users")]
    Users,
    /// Public signing keys, for resource servers.
    #[oai(rename = "keys")]
    Keys,
    /// Token introspection and revocation (RFC 7662, RFC 7009).
    #[oai(rename = "oauth")]
    OAuth,
    /// Service health.
    #[oai(rename = "system")]
    System,
}

/// A user account.
#[derive(Debug, Clone, Object)]
#[oai(rename = "User")]
pub struct UserBody {
    /// Unique id (the `sub` of the user's tokens).
    pub id: i64,
    /// Display name.
    pub name: String,
    /// E-mail address, lower-cased.
    pub email: String,
    /// When the account was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            name: user.name,
            email: user.email,
            created_at: DateTime::parse_from_rfc3339(&user.created_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }
}

/// The API's OpenAPI service: every operation, with the document's metadata.
/// It needs no state, so `tokengate openapi` can print the document offline.
pub fn service() -> OpenApiService<
    (
        users::UsersApi,
        auth::AuthApi,
        sessions::SessionsApi,
        jwks::JwksApi,
        oauth::OAuthApi,
        health::HealthApi,
    ),
    (),
> {
    OpenApiService::new(
        (
            users::UsersApi,
            auth::AuthApi,
            sessions::SessionsApi,
            jwks::JwksApi,
            oauth::OAuthApi,
            health::HealthApi,
        ),
        "tokengate",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "JWT authentication with real logout.\n\n\
         Register, log in to get a signed JWT, call authenticated routes with \
         `Authorization: Bearer <token>`, and log out with `DELETE /api/v1/logout`, \
         which revokes the token for good: its `jti` is stored durably in a denylist \
         that every authenticated route checks.\n\n\
         Tokens are HS256 by default; with EdDSA or ES256 keys, resource servers can \
         verify them with the public keys at `/.well-known/jwks.json`, and ask \
         `POST /api/v1/token/introspect` (RFC 7662) whether one is still valid; \
         `POST /api/v1/token/revoke` (RFC 7009) ends a token.\n\n\
         Every error is a JSON object `{\"error\": \"<code>\", \"message\": \"...\"}`; \
         `401` answers carry an RFC 6750 `WWW-Authenticate` challenge.",
    )
}
