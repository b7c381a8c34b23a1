//! tokengate: a small JWT authentication API with real logout.
//!
//! SPA clients register, log in to get a signed JWT (HS256, or EdDSA/ES256
//! with keys that resource servers fetch from the JWKS), call
//! authenticated routes with `Authorization: Bearer <token>`, and log out with
//! `DELETE /api/v1/logout`, which puts the token's `jti` into a durable SQLite
//! denylist that every authenticated route checks.
//!
//! Layout:
//! - [`config`]: flags and environment variables; the signing secret.
//! - [`startup`]: building the app and running it until shutdown.
//! - [`server`]: the accept loop and hyper connections, with the timeouts and
//!   limits that hold under attack.
//! - [`api`]: the HTTP operations (poem-openapi), one file per area, and the
//!   `bearerAuth` scheme where every token is checked ([`api::security`]).
//! - [`auth`]: JWT issue/verify, the EdDSA/ES256 signing keys and their
//!   rotation, argon2id passwords, login throttling.
//! - [`store`]: SQLite pool, migrations, users and the denylist.
//! - [`error`]: every error answer, built in one place.
//! - [`middleware`]: state, body limit, CORS, JSON errors, security headers
//!   and the access log, around every request; [`cors`]: CORS for the
//!   configured SPA origins.
//! - [`state`]: the context shared by requests.
//! - [`logging`]: the buffered log writer.

pub mod api;
pub mod auth;
pub mod config;
pub mod cors;
pub mod error;
pub mod logging;
pub mod middleware;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
