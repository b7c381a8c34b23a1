//! The engine-neutral HTTP contract tests again, on PostgreSQL: the same
//! files, included a second time under this module, whose path makes
//! [`crate::helpers::spawn_app`] give their servers a PostgreSQL database
//! (see [`crate::helpers::engine`]). The SQLite-file-specific tests (faults,
//! crash, migrations, the CLI on files) are not here; `postgres.rs` has the
//! PostgreSQL-only ones.

// Loading each file twice is the point: one body of tests, two engines.
#![allow(clippy::duplicate_mod)]

#[path = "cors.rs"]
mod cors;
#[path = "current_user.rs"]
mod current_user;
#[path = "errors.rs"]
mod errors;
#[path = "health.rs"]
mod health;
#[path = "login.rs"]
mod login;
#[path = "logout.rs"]
mod logout;
#[path = "oauth.rs"]
mod oauth;
#[path = "register.rs"]
mod register;
#[path = "sessions.rs"]
mod sessions;
#[path = "throttling.rs"]
mod throttling;
#[path = "token_attacks.rs"]
mod token_attacks;
