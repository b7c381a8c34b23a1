//! Storage: the one interface the routes and the token check call
//! ([`Store`]), with one folder per engine behind it. Nothing outside this
//! module knows which engine runs, or about WAL files, reader threads or
//! connection pools.
//!
//! What the routes may ask:
//! - users: [`Store::create_user`], [`Store::find_credentials`];
//! - the per-request lookup of a token's facts (its `jti` in the denylist,
//!   its session, its user and the user's global-logout mark), one job or one
//!   remembered answer: [`Store::lookup`];
//! - durable writes, each answered only once committed: revocations and
//!   logouts of every scope ([`Store::logout`], [`Store::revoke`]), sessions
//!   ([`Store::start_session`], [`Store::refresh`], [`Store::end_session`],
//!   [`Store::revoke_refresh`]), password changes and global logouts
//!   ([`Store::change_password`], [`Store::revoke_user`]);
//! - reads of sessions ([`Store::list_sessions`]) and of refresh tokens
//!   ([`Store::refresh_token_state`], for introspection), health and purging.
//!
//! Engines: [`sqlite`] (embedded, the default) and [`postgres`] (for several
//! processes sharing one database), chosen by the form of `--database` (see
//! [`crate::config::Settings::database_url`]). [`copy`] moves everything
//! from one to the other.

pub mod copy;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use crate::auth::refresh::{Presented, TokenHash};

/// A storage failure. Every variant means "the database cannot be used right
/// now"; the HTTP layer answers `503` and logs the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No pooled connection could be had in time.
    #[error("database connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// The database was written by a newer tokengate.
    #[error("the database schema version {found} is newer than this tokengate supports ({supported}); refusing to touch it")]
    NewerSchema {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The writer is gone (the service is shutting down).
    #[error("the database writer has stopped")]
    WriterStopped,
    /// The database file is missing, or was replaced, at its path.
    #[error("the database file is missing or was replaced")]
    FileGone,
    /// The database did not answer within the configured time.
    #[error("the database did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A commit could not be made durable (the sync of the write-ahead log
    /// failed, or the log is no longer the file at its path).
    #[error("the write-ahead log could not be made durable: {0}")]
    Sync(String),
    /// A blocking task could not be run to completion.
    #[error("blocking task failed: {0}")]
    Task(String),
    /// PostgreSQL reported an error, or the connection failed.
    #[error("database error: {}", postgres::connect::describe(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// PostgreSQL could not be used (pool, protocol).
    #[error("database error: {0}")]
    Postgres(String),
}

/// Runs blocking work on tokio's blocking thread pool, keeping the caller's
/// tracing span.
pub async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// A stored user, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id, the token's `sub`.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Lower-cased e-mail address.
    pub email: String,
    /// Creation time, RFC 3339 in UTC.
    pub created_at: String,
}

/// What login needs to check a password.
#[derive(Debug)]
pub struct Credentials {
    /// The user's id.
    pub id: i64,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Another user has this e-mail address (compared case-insensitively).
    #[error("e-mail address already registered")]
    EmailTaken,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stored state of a session, as the token check needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// The user the session belongs to.
    pub user_id: i64,
    /// Whether it was ended (logout, delete, reuse detection, password
    /// change, global logout).
    pub ended: bool,
    /// When it expires by itself (its refresh token or its maximum age), Unix s.
    pub expires_at: i64,
}

impl SessionState {
    /// Whether tokens naming this session are accepted at `now_s`.
    pub fn is_active(&self, now_s: i64) -> bool {
        !self.ended && now_s < self.expires_at
    }
}

/// What the token check asks storage about one token.
#[derive(Debug, Clone)]
pub struct LookupKey {
    /// The token's `jti`.
    pub jti: String,
    /// Its `sid`, if it has one.
    pub sid: Option<String>,
    /// The user its `sub` names.
    pub user_id: i64,
}

/// Everything storage knows about one token, read together (one job or one
/// remembered answer). The rules that turn it into a verdict live in
/// [`crate::auth::verdict`].
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The `jti` is in the denylist.
    pub revoked: bool,
    /// The token's session (`None`: no `sid` asked, or no such session).
    pub session: Option<SessionState>,
    /// The user, with their global-logout mark (`None`: no such user).
    pub user: Option<Arc<UserFacts>>,
}

/// A user and their global-logout mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    /// The user.
    pub user: User,
    /// Access tokens issued at or before this moment (Unix µs) are rejected
    /// (the last global logout or password change; 0: never).
    pub tokens_invalid_before_us: i64,
    /// The API's JSON rendering of `user`, made once for as long as this
    /// answer is remembered (see `crate::api::users`); storage never reads it.
    pub rendered: std::sync::OnceLock<bytes::Bytes>,
}

impl UserFacts {
    /// A user and their mark, not rendered yet.
    pub fn new(user: User, tokens_invalid_before_us: i64) -> Self {
        Self {
            user,
            tokens_invalid_before_us,
            rendered: std::sync::OnceLock::new(),
        }
    }
}

/// What `DELETE /api/v1/logout` ends besides the presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// This token and its session.
    Local,
    /// Every other session of the user.
    Others,
    /// Every session and every access token of the user issued up to now.
    Global,
}

/// The facts of the token being logged out, re-checked inside the write.
#[derive(Debug, Clone)]
pub struct TokenToEnd {
    /// What to look up.
    pub key: LookupKey,
    /// The token's `exp`, Unix s (its revocation is kept until then plus leeway).
    pub exp: i64,
    /// Its issue time, for the global-logout mark.
    pub issued: crate::auth::verdict::Issued,
}

/// How a write that depends on the caller's token went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked<T> {
    /// The token was still valid inside the write, and the write is durable.
    Done(T),
    /// The token was no longer valid when the write ran: nothing was written.
    Refused(crate::auth::verdict::Refusal),
}

/// A new session's first refresh token, and who asked.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The new session's id.
    pub sid: String,
    /// Its user.
    pub user_id: i64,
    /// Hash of its first refresh token.
    pub refresh_hash: TokenHash,
    /// `User-Agent` of the login, if any (capped in length).
    pub user_agent: Option<String>,
    /// Client address of the login.
    pub ip: Option<String>,
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The new refresh token was stored.
    Issued {
        /// The session's user.
        user_id: i64,
        /// When the new refresh token expires, Unix s.
        refresh_expires_at: i64,
    },
    /// Unknown, malformed, expired or ended: nothing changed.
    Invalid,
    /// Reuse outside the rules: the session was ended (durably).
    Theft,
}

/// A current refresh token, as introspection (RFC 7662) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenState {
    /// The session's user.
    pub user_id: i64,
    /// The session.
    pub sid: String,
    /// When the token expires, Unix s.
    pub expires_at: i64,
}

/// A password change, committed together with its consequences.
#[derive(Debug, Clone)]
pub struct PasswordChange {
    /// The caller's token (still checked inside the write).
    pub token: TokenToEnd,
    /// The new argon2id hash.
    pub password_hash: String,
    /// The caller's session gets this new refresh token (or, for a token
    /// without `sid`, a new session is started with it).
    pub session: NewSession,
    /// The moment of the change (Unix µs): tokens issued up to it are rejected.
    pub at_us: i64,
}

/// An active session as `GET /api/v1/sessions` shows it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The session id.
    pub id: String,
    /// Login time, Unix ms.
    pub created_at_ms: i64,
    /// Last login or refresh, Unix ms.
    pub last_used_at_ms: i64,
    /// When it ends by itself (its refresh token or maximum age), Unix s.
    pub expires_at: i64,
    /// `User-Agent` at login.
    pub user_agent: Option<String>,
    /// Client address at login.
    pub ip: Option<String>,
}

/// What a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Denylist rows.
    pub revocations: usize,
    /// Sessions no access token can name any more.
    pub sessions: usize,
    /// Expired refresh tokens.
    pub refresh_tokens: usize,
}

/// Lifetimes of the session rules, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Access-token TTL, seconds.
    pub token_ttl: i64,
    /// Clock leeway of token checks, seconds.
    pub leeway: i64,
    /// Lifetime of a refresh token, seconds.
    pub refresh_ttl: i64,
    /// Reuse interval of a previous refresh token, seconds.
    pub refresh_reuse_interval: i64,
    /// Longest life of a session after its login, seconds.
    pub session_max_age: i64,
}

impl Lifetimes {
    /// How long after a session ends (or a token is revoked) a token naming
    /// it may still verify: the TTL plus the leeway.
    pub fn token_tail(&self) -> i64 {
        self.token_ttl + self.leeway
    }
}

/// The storage engine in use.
// One per process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    /// Embedded SQLite (the default).
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL, shared by several processes.
    Postgres(postgres::PgStore),
}

/// A login attempt counted by the shared (PostgreSQL) throttle; a failure
/// unless [`Store::login_succeeded`] is called with it.
pub use postgres::throttle::LoginAttempt;

/// What [`Store::reserve_login`] got.
#[derive(Debug)]
pub enum LoginReservation {
    /// The attempt is counted (as a failure until the login succeeds):
    /// check the password, then call [`Store::login_succeeded`] on success.
    Counted(LoginAttempt),
    /// A limit is reached: answer `429` with `Retry-After` of this wait.
    Refused(std::time::Duration),
    /// This engine keeps no shared counts (SQLite, one process): use the
    /// process's own [`crate::auth::throttle`].
    NotShared,
}

/// Why the database could not be opened.
pub type OpenError = sqlite::pool::OpenError;

/// Background work of an open store that must finish before the process
/// exits (the SQLite writer's last commit and WAL checkpoint).
pub struct Running {
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits, at most `limit`, for the background work to finish; call after
    /// every handle on the [`Store`] is gone.
    pub async fn finish(self, limit: std::time::Duration) {
        if let Some(writer) = self.writer {
            let joined = tokio::task::spawn_blocking(move || writer.join());
            if tokio::time::timeout(limit, joined).await.is_err() {
                tracing::warn!("the database writer did not stop in time");
            }
        }
    }
}

impl Store {
    /// Opens the configured database (creating and migrating it, unless
    /// `must_exist`, for the maintenance commands: a mistyped `--database`
    /// must not create an empty database and report success on it).
    /// Blocking: call it off the executor.
    pub fn open(
        settings: &crate::config::Settings,
        must_exist: bool,
    ) -> Result<(Self, Running), OpenError> {
        if let Some(url) = settings.database_url() {
            if !must_exist {
                // The server needs its signing material configured: say so
                // before connecting (and creating tables).
                settings.check_signing_for_postgres().map_err(|e| {
                    postgres::open_error(&postgres::connect::redact_url(url), &e.to_string())
                })?;
            }
            let store = postgres::PgStore::open(url, settings, must_exist)?;
            return Ok((Store::Postgres(store), Running { writer: None }));
        }
        let path = &settings.database;
        if must_exist {
            sqlite::pool::must_exist(path)?;
        }
        let timeout = std::time::Duration::from_millis(settings.db_timeout_ms);
        let (store, writer) = sqlite::SqliteStore::open(
            path,
            timeout,
            settings.lifetimes(),
            settings.denylist_merge_rows,
        )?;
        Ok((
            Store::Sqlite(store),
            Running {
                writer: Some(writer),
            },
        ))
    }

    /// Creates a user; `email` must already be lower-cased.
    pub async fn create_user(
        &self,
        name: String,
        email: String,
        password_hash: String,
    ) -> Result<User, CreateError> {
        match self {
            Store::Sqlite(s) => s.create_user(name, email, password_hash).await,
            Store::Postgres(s) => s.create_user(name, email, password_hash).await,
        }
    }

    /// The password hash of the user with this (lower-cased) e-mail address.
    pub async fn find_credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError> {
        match self {
            Store::Sqlite(s) => s.find_credentials(email).await,
            Store::Postgres(s) => s.find_credentials(email).await,
        }
    }

    /// Everything storage knows about a token, for the token check.
    pub async fn lookup(&self, key: &LookupKey) -> Result<Lookup, StoreError> {
        match self {
            Store::Sqlite(s) => s.lookup(key).await,
            Store::Postgres(s) => s.lookup(key).await,
        }
    }

    /// Logs the token out with `scope`, durably; the token is re-checked
    /// inside the write, so two logouts of one token never both succeed.
    pub async fn logout(
        &self,
        token: TokenToEnd,
        scope: LogoutScope,
    ) -> Result<Checked<()>, StoreError> {
        match self {
            Store::Sqlite(s) => s.logout(token, scope).await,
            Store::Postgres(s) => s.logout(token, scope).await,
        }
    }

    /// Puts an access token's `jti` into the denylist, durably (RFC 7009);
    /// `false` if it already was.
    pub async fn revoke(&self, jti: &str, exp: i64) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.revoke(jti, exp).await,
            Store::Postgres(s) => s.revoke(jti, exp).await,
        }
    }

    /// Starts a session (login), durably; returns its refresh token's expiry.
    pub async fn start_session(&self, session: NewSession) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.start_session(session).await,
            Store::Postgres(s) => s.start_session(session).await,
        }
    }

    /// Applies the rotation rules to a presented refresh token and stores
    /// `new_hash` as the next one (or ends the session on theft), durably.
    pub async fn refresh(
        &self,
        presented: Presented,
        new_hash: TokenHash,
    ) -> Result<Refreshed, StoreError> {
        match self {
            Store::Sqlite(s) => s.refresh(presented, new_hash).await,
            Store::Postgres(s) => s.refresh(presented, new_hash).await,
        }
    }

    /// What a presented refresh token is, if it is *current* (of the current
    /// generation of an active session, unexpired). A read: it never counts
    /// as a use, let alone a reuse, and writes nothing.
    pub async fn refresh_token_state(
        &self,
        presented: &Presented,
    ) -> Result<Option<RefreshTokenState>, StoreError> {
        match self {
            Store::Sqlite(s) => s.refresh_token_state(presented).await,
            Store::Postgres(s) => s.refresh_token_state(presented).await,
        }
    }

    /// Ends the session of a presented refresh token of any generation
    /// (RFC 7009), durably; `false` if it matches no stored token of a
    /// session still active (nothing is written then).
    pub async fn revoke_refresh(&self, presented: Presented) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.revoke_refresh(presented).await,
            Store::Postgres(s) => s.revoke_refresh(presented).await,
        }
    }

    /// The active sessions of a user, newest first.
    pub async fn list_sessions(&self, user_id: i64) -> Result<Vec<SessionRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_sessions(user_id).await,
            Store::Postgres(s) => s.list_sessions(user_id).await,
        }
    }

    /// Ends one active session of `user_id`, durably; `false` if there is no
    /// such active session of that user.
    pub async fn end_session(&self, user_id: i64, sid: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.end_session(user_id, sid).await,
            Store::Postgres(s) => s.end_session(user_id, sid).await,
        }
    }

    /// Stores a new password hash, ends every other session, rejects every
    /// token issued up to the change and gives the caller's session its new
    /// refresh token, all in one durable write. Returns that token's expiry.
    pub async fn change_password(
        &self,
        change: PasswordChange,
    ) -> Result<Checked<i64>, StoreError> {
        match self {
            Store::Sqlite(s) => s.change_password(change).await,
            Store::Postgres(s) => s.change_password(change).await,
        }
    }

    /// A global logout of the user with this e-mail address: every session
    /// ends and every token issued up to `at_us` is rejected. Returns how many
    /// sessions ended, or `None` if there is no such user.
    pub async fn revoke_user(&self, email: &str, at_us: i64) -> Result<Option<usize>, StoreError> {
        match self {
            Store::Sqlite(s) => s.revoke_user(email, at_us).await,
            Store::Postgres(s) => s.revoke_user(email, at_us).await,
        }
    }

    /// Whether the database can be read and written now.
    pub async fn health(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.health().await,
            Store::Postgres(s) => s.health().await,
        }
    }

    /// Deletes what no token can need any more.
    pub async fn purge(&self) -> Result<Purged, StoreError> {
        match self {
            Store::Sqlite(s) => s.purge().await,
            Store::Postgres(s) => s.purge().await,
        }
    }

    /// Reserves a login attempt for `email` (lower-cased) from `client` in
    /// the throttle shared by every process (PostgreSQL): in one
    /// transaction, refused if the e-mail address or the client is at its
    /// limit within the window, else counted as a failure at once.
    /// [`LoginReservation::NotShared`] on SQLite.
    pub async fn reserve_login(
        &self,
        email: &str,
        client: Option<crate::auth::throttle::ClientKey>,
    ) -> Result<LoginReservation, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(LoginReservation::NotShared),
            Store::Postgres(s) => Ok(match s.reserve_login(email, client).await? {
                postgres::throttle::Reserved::Attempt(attempt) => {
                    LoginReservation::Counted(attempt)
                }
                postgres::throttle::Reserved::Wait(wait) => LoginReservation::Refused(wait),
            }),
        }
    }

    /// The login of a reserved attempt succeeded: clears the e-mail
    /// address's failures and takes the attempt back from the client's.
    /// (A failed login needs no call: the attempt stays counted.)
    pub async fn login_succeeded(&self, attempt: LoginAttempt) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.login_succeeded(attempt).await,
        }
    }
}
