//! The PostgreSQL engine, for several tokengate processes (on one host or
//! many) sharing one database: the URL and the connection pool
//! ([`connect`]), versioned migrations under an advisory lock
//! ([`migrations`]), the tables ([`sessions`]), the batched per-request
//! lookup ([`lookup`]) and the shared login throttle ([`throttle`]).
//!
//! Consistency: every lookup reads the database (batched), so a revocation,
//! a session's end, a rotation or a password change acknowledged by any
//! process is honoured by every process from its next request. Writes run
//! in one transaction each, with the rows they depend on locked, retried a
//! few times on a serialization failure or deadlock.
//!
//! Durability: every connection runs `SET synchronous_commit = on`; a
//! success answer is sent only after COMMIT was acknowledged. A COMMIT whose
//! outcome is unknown (the connection dropped) is an error, never a 2xx.
//!
//! Failure: every wait for a connection and every statement is bounded by
//! the configured timeout (then `503`); a connection that timed out or
//! broke is thrown away, and the pool connects anew when the server is back.

/// Runs `$body` (an expression of type `Result<T, StoreError>` that may
/// `.await`, with `$tx` bound to a `&Transaction`) in a transaction on a
/// pooled connection and commits it, all within the timeout; a
/// serialization failure or deadlock runs it again (a few times). Evaluates
/// to the result only once COMMIT is acknowledged: an error there (the
/// connection dropped during COMMIT, outcome unknown) is an error, never a
/// success. A `return` inside `$body` ends the body early; what it wrote is
/// still committed. (A macro rather than a
/// function taking an async closure: the futures must be `Send` for poem.)
macro_rules! pg_write {
    ($db:expr, |$tx:ident| $body:expr) => {{
        let db: &$crate::store::postgres::Db = $db;
        let run = async {
            let mut attempt = 0usize;
            loop {
                let mut lease = db.lease().await?;
                let result = async {
                    let client = lease.client()?;
                    let transaction = client.transaction().await?;
                    let value = async {
                        // Fixes the block's error type for `?` and `return`.
                        if false {
                            return Err($crate::store::StoreError::WriterStopped);
                        }
                        let $tx = &transaction;
                        $body
                    }
                    .await?;
                    transaction.commit().await?;
                    Ok::<_, $crate::store::StoreError>(value)
                }
                .await;
                lease.settle(&result);
                match result {
                    Err(e)
                        if $crate::store::postgres::is_retryable(&e)
                            && attempt < $crate::store::postgres::MAX_RETRIES =>
                    {
                        attempt += 1
                    }
                    other => break other,
                }
            }
        };
        db.finished(
            tokio::time::timeout(db.timeout(), run)
                .await
                .unwrap_or(Err($crate::store::StoreError::Timeout(db.timeout()))),
        )
    }};
}
pub(crate) use pg_write;

/// Runs `$body` (an expression of type `Result<T, StoreError>` that may
/// `.await`, with `$client` bound to a pooled `&Object`) outside a
/// transaction, within the timeout.
macro_rules! pg_read {
    ($db:expr, |$client:ident| $body:expr) => {{
        let db: &$crate::store::postgres::Db = $db;
        let run = async {
            let mut lease = db.lease().await?;
            let result = async {
                if false {
                    return Err($crate::store::StoreError::WriterStopped);
                }
                let $client = &*lease.client()?;
                $body
            }
            .await;
            lease.settle(&result);
            result
        };
        tokio::time::timeout(db.timeout(), run)
            .await
            .unwrap_or(Err($crate::store::StoreError::Timeout(db.timeout())))
    }};
}

pub mod connect;
pub mod lookup;
pub mod migrations;
pub mod sessions;
pub mod throttle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use deadpool_postgres::{Object, Pool, Transaction};
use tokio_postgres::error::SqlState;

use self::connect::Target;
use self::lookup::Lookups;
use self::throttle::{Limits, LoginAttempt, Reserved};
use crate::auth::refresh::{self, Presented, StoredToken, TokenHash};
use crate::auth::verdict::{judge, Refusal, TokenFacts};
use crate::store::sqlite::sessions::Clock;
use crate::store::{
    Checked, CreateError, Credentials, Lifetimes, LogoutScope, Lookup, LookupKey, NewSession,
    PasswordChange, Purged, RefreshTokenState, Refreshed, SessionRow, StoreError, TokenToEnd, User,
};

/// How many times a write is retried after a serialization failure or a
/// deadlock (within the same deadline).
pub(crate) const MAX_RETRIES: usize = 5;

/// How recent a successful commit must be for `/health` to trust it without
/// a probe of its own.
const TRUSTED_COMMIT_AGE: Duration = Duration::from_secs(1);

/// When commits last succeeded and failed, in ms since start (0: never).
#[derive(Default)]
struct Status {
    last_ok_ms: AtomicU64,
    last_failed_ms: AtomicU64,
}

/// The connection pool with the rules every use of it follows: bounded
/// waits, broken connections thrown away, commits recorded for `/health`.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    timeout: Duration,
    status: Arc<Status>,
    started: Instant,
}

/// A pooled connection that goes back to the pool only if it was used to
/// the end without a connection-level error; otherwise (a timeout dropped
/// the work half-way, the server went away) it is closed.
pub(crate) struct Lease {
    client: Option<Object>,
    healthy: bool,
}

impl Lease {
    /// The connection.
    pub(crate) fn client(&mut self) -> Result<&mut Object, StoreError> {
        self.client.as_mut().ok_or(StoreError::WriterStopped)
    }

    /// Returns the connection to the pool after `result` only if the
    /// server answered (even with an error); otherwise it is closed.
    pub(crate) fn settle<T>(&mut self, result: &Result<T, StoreError>) {
        self.healthy = keeps_connection(result);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !self.healthy {
                drop(Object::take(client));
            }
        }
    }
}

impl Db {
    fn new(pool: Pool, timeout: Duration) -> Self {
        Self {
            pool,
            timeout,
            status: Arc::new(Status::default()),
            started: Instant::now(),
        }
    }

    /// A pooled connection, waiting at most the timeout.
    pub(crate) async fn lease(&self) -> Result<Lease, StoreError> {
        let client = self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Timeout(_) => StoreError::Timeout(self.timeout),
            deadpool_postgres::PoolError::Backend(e) => StoreError::Pg(e),
            other => StoreError::Postgres(other.to_string()),
        })?;
        Ok(Lease {
            client: Some(client),
            healthy: false,
        })
    }

    /// The result of a write, recorded for `/health`.
    pub(crate) fn finished<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.stamp(if result.is_ok() {
            &self.status.last_ok_ms
        } else {
            &self.status.last_failed_ms
        });
        result
    }

    /// The timeout of every wait for the database.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn stamp(&self, at: &AtomicU64) {
        at.store(
            (self.started.elapsed().as_millis() as u64).max(1),
            Ordering::Release,
        );
    }

    /// Whether a commit succeeded within the last second, with no failure since.
    fn recently_committed(&self) -> bool {
        let ok = self.status.last_ok_ms.load(Ordering::Acquire);
        let failed = self.status.last_failed_ms.load(Ordering::Acquire);
        let now = self.started.elapsed().as_millis() as u64;
        ok != 0 && ok >= failed && now.saturating_sub(ok) < TRUSTED_COMMIT_AGE.as_millis() as u64
    }
}

/// Whether the connection can be reused after this result: any answer from
/// the server (even an error) leaves it usable; a broken connection does not.
pub(crate) fn keeps_connection<T>(result: &Result<T, StoreError>) -> bool {
    match result {
        Ok(_) => true,
        Err(StoreError::Pg(e)) => e.as_db_error().is_some() && !e.is_closed(),
        Err(_) => false,
    }
}

/// A serialization failure or a deadlock: worth running the transaction again.
pub(crate) fn is_retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Pg(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
}

/// The PostgreSQL engine, open and running.
pub struct PgStore {
    db: Db,
    lookups: Lookups,
    lifetimes: Lifetimes,
    limits: Limits,
    timeout: Duration,
}

/// Why the database could not be opened at start: one line, password
/// never included.
pub fn open_error(target: &str, reason: &str) -> super::OpenError {
    super::OpenError::new(std::path::Path::new(target), reason)
}

impl PgStore {
    /// Connects to the database at `url`, checks the server's version,
    /// migrates the schema (unless `must_exist` and there is none: then it
    /// refuses) and starts the lookup collector. Blocking: call it off the
    /// executor, on a thread of a tokio runtime (`spawn_blocking`).
    pub fn open(
        url: &str,
        settings: &crate::config::Settings,
        must_exist: bool,
    ) -> Result<Self, super::OpenError> {
        let timeout = Duration::from_millis(settings.db_timeout_ms);
        let shown = connect::redact_url(url);
        let target = Target::parse(url, timeout).map_err(|e| open_error(&shown, &e))?;
        let fail = |reason: String| open_error(&target.shown, &target.scrub(&reason));
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| fail("no async runtime to connect on".into()))?;
        let lifetimes = settings.lifetimes();
        let limits = Limits {
            per_email: settings.login_max_failures,
            per_client: settings.login_max_failures_per_client,
            window_ms: settings.login_window as i64 * 1000,
        };
        handle.block_on(async {
            prepare(&target, timeout, must_exist).await.map_err(fail)?;
            let pool = connect::pool(&target, timeout).map_err(|e| fail(e.to_string()))?;
            let db = Db::new(pool, timeout);
            let lookups = Lookups::start(db.clone());
            Ok(Self {
                db,
                lookups,
                lifetimes,
                limits,
                timeout,
            })
        })
    }

    /// The pool, for the copy command.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) async fn create_user(
        &self,
        name: String,
        email: String,
        password_hash: String,
    ) -> Result<User, CreateError> {
        let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let result = pg_write!(&self.db, |tx| {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO users (name, email, password_hash, created_at)
                         VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .await?;
            let row = tx
                .query_one(&stmt, &[&name, &email, &password_hash, &created_at])
                .await?;
            Ok(row.get::<_, i64>(0))
        });
        match result {
            Ok(id) => Ok(User {
                id,
                name,
                email,
                created_at,
            }),
            Err(StoreError::Pg(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(CreateError::EmailTaken)
            }
            Err(e) => Err(CreateError::Store(e)),
        }
    }

    pub(crate) async fn find_credentials(
        &self,
        email: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        pg_read!(&self.db, |client| {
            let stmt = client
                .prepare_cached("SELECT id, password_hash FROM users WHERE email = $1")
                .await?;
            Ok(client
                .query_opt(&stmt, &[&email])
                .await?
                .map(|row| Credentials {
                    id: row.get(0),
                    password_hash: row.get(1),
                }))
        })
    }

    pub(crate) async fn lookup(&self, key: &LookupKey) -> Result<Lookup, StoreError> {
        self.lookups
            .lookup(key, Utc::now().timestamp(), self.timeout)
            .await
    }

    pub(crate) async fn logout(
        &self,
        token: TokenToEnd,
        scope: LogoutScope,
    ) -> Result<Checked<()>, StoreError> {
        let leeway = self.lifetimes.leeway;
        let lifetimes = self.lifetimes;
        pg_write!(&self.db, |tx| {
            let clock = Clock::at(Utc::now().timestamp_millis(), &lifetimes);
            // A local logout touches only this token and its session:
            // no lock on the user, so logouts of one user's many tokens
            // commit side by side. Two logouts of one token meet on the
            // denylist's key: the second inserts nothing and is refused.
            let lock_user = scope != LogoutScope::Local;
            if let Some(refusal) = recheck(tx, &token, &clock, lock_user).await? {
                return Ok(Checked::Refused(refusal));
            }
            let user_id = token.key.user_id;
            let sid = token.key.sid.as_deref();
            match scope {
                LogoutScope::Local => {
                    let purge_after = token.exp.saturating_add(leeway);
                    if !sessions::revoke(tx, &token.key.jti, purge_after).await? {
                        return Ok(Checked::Refused(Refusal::Revoked));
                    }
                    if let Some(sid) = sid {
                        sessions::end(tx, sid, Some(user_id), &clock).await?;
                    }
                }
                LogoutScope::Others => {
                    sessions::end_all(tx, user_id, sid, &clock).await?;
                }
                LogoutScope::Global => {
                    sessions::end_all(tx, user_id, None, &clock).await?;
                    let at_us = clock.now_ms.saturating_mul(1000);
                    sessions::mark_tokens_invalid(tx, user_id, at_us).await?;
                }
            }
            Ok(Checked::Done(()))
        })
    }

    pub(crate) async fn revoke(&self, jti: &str, exp: i64) -> Result<bool, StoreError> {
        let purge_after = exp.saturating_add(self.lifetimes.leeway);
        pg_write!(&self.db, |tx| sessions::revoke(tx, jti, purge_after).await)
    }

    pub(crate) async fn start_session(&self, session: NewSession) -> Result<i64, StoreError> {
        let lifetimes = self.lifetimes;
        pg_write!(&self.db, |tx| {
            let clock = Clock::at(Utc::now().timestamp_millis(), &lifetimes);
            sessions::create(tx, &session, &clock).await
        })
    }

    pub(crate) async fn refresh(
        &self,
        presented: Presented,
        new_hash: TokenHash,
    ) -> Result<Refreshed, StoreError> {
        let lifetimes = self.lifetimes;
        pg_write!(&self.db, |tx| {
            let clock = Clock::at(Utc::now().timestamp_millis(), &lifetimes);
            sessions::refresh(tx, &presented, &new_hash, &clock).await
        })
    }

    /// One statement (one snapshot for the session and its tokens); a read,
    /// never counted as a use.
    pub(crate) async fn refresh_token_state(
        &self,
        presented: &Presented,
    ) -> Result<Option<RefreshTokenState>, StoreError> {
        let now_s = Utc::now().timestamp();
        pg_read!(&self.db, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT s.user_id, s.generation, t.hash, t.generation, t.expires_at
                     FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id
                     WHERE s.id = $1 AND s.ended_at IS NULL
                       AND s.refresh_expires_at > $2 AND s.max_expires_at > $2",
                )
                .await?;
            let rows = client.query(&stmt, &[&presented.sid, &now_s]).await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let (user_id, generation): (i64, i64) = (first.get(0), first.get(1));
            let tokens: Vec<StoredToken> = rows
                .iter()
                .map(|row| StoredToken {
                    hash: row.get(2),
                    generation: row.get(3),
                    expires_at: row.get(4),
                })
                .collect();
            Ok(
                refresh::find_current(&presented.hash, &tokens, generation, now_s).map(|token| {
                    RefreshTokenState {
                        user_id,
                        sid: presented.sid.clone(),
                        expires_at: token.expires_at,
                    }
                }),
            )
        })
    }

    pub(crate) async fn revoke_refresh(&self, presented: Presented) -> Result<bool, StoreError> {
        let lifetimes = self.lifetimes;
        pg_write!(&self.db, |tx| {
            let clock = Clock::at(Utc::now().timestamp_millis(), &lifetimes);
            sessions::revoke_token(tx, &presented, &clock).await
        })
    }

    pub(crate) async fn list_sessions(&self, user_id: i64) -> Result<Vec<SessionRow>, StoreError> {
        let now_s = Utc::now().timestamp();
        pg_read!(&self.db, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT id, created_at_ms, last_used_at_ms,
                                LEAST(refresh_expires_at, max_expires_at), user_agent, ip
                         FROM sessions
                         WHERE user_id = $1 AND ended_at IS NULL
                           AND refresh_expires_at > $2 AND max_expires_at > $2
                         ORDER BY created_at_ms DESC, id DESC",
                )
                .await?;
            Ok(client
                .query(&stmt, &[&user_id, &now_s])
                .await?
                .iter()
                .map(|row| SessionRow {
                    id: row.get(0),
                    created_at_ms: row.get(1),
                    last_used_at_ms: row.get(2),
                    expires_at: row.get(3),
                    user_agent: row.get(4),
                    ip: row.get(5),
                })
                .collect())
        })
    }

    pub(crate) async fn end_session(&self, user_id: i64, sid: &str) -> Result<bool, StoreError> {
        let lifetimes = self.lifetimes;
        pg_write!(&self.db, |tx| {
            let clock = Clock::at(Utc::now().timestamp_millis(), &lifetimes);
            sessions::end(tx, sid, Some(user_id), &clock).await
        })
    }

    pub(crate) async fn change_password(
        &self,
        change: PasswordChange,
    ) -> Result<Checked<i64>, StoreError> {
        let lifetimes = self.lifetimes;
        pg_write!(&self.db, |tx| {
            let clock = Clock::at(Utc::now().timestamp_millis(), &lifetimes);
            if let Some(refusal) = recheck(tx, &change.token, &clock, true).await? {
                return Ok(Checked::Refused(refusal));
            }
            let user_id = change.token.key.user_id;
            let keep = change.token.key.sid.as_deref();
            sessions::set_password(tx, user_id, &change.password_hash).await?;
            sessions::mark_tokens_invalid(tx, user_id, change.at_us).await?;
            sessions::end_all(tx, user_id, keep, &clock).await?;
            let expires_at = match keep {
                Some(sid) => {
                    sessions::rotate(tx, sid, user_id, &change.session.refresh_hash, &clock).await?
                }
                None => Some(sessions::create(tx, &change.session, &clock).await?),
            };
            Ok(match expires_at {
                Some(expires_at) => Checked::Done(expires_at),
                None => Checked::Refused(Refusal::SessionEnded),
            })
        })
    }

    pub(crate) async fn revoke_user(
        &self,
        email: &str,
        at_us: i64,
    ) -> Result<Option<usize>, StoreError> {
        let lifetimes = self.lifetimes;
        pg_write!(&self.db, |tx| {
            let clock = Clock::at(Utc::now().timestamp_millis(), &lifetimes);
            let stmt = tx
                .prepare_cached("SELECT id FROM users WHERE email = $1 FOR NO KEY UPDATE")
                .await?;
            let Some(row) = tx.query_opt(&stmt, &[&email]).await? else {
                return Ok(None);
            };
            let user_id: i64 = row.get(0);
            sessions::mark_tokens_invalid(tx, user_id, at_us).await?;
            Ok(Some(sessions::end_all(tx, user_id, None, &clock).await?))
        })
    }

    /// A real read of the schema, and a write that commits (or a commit
    /// within the last second).
    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        pg_read!(&self.db, |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1) AS u),
                                (SELECT count(*) FROM revoked_tokens WHERE jti = '')",
                )
                .await?;
            client.query_one(&stmt, &[]).await?;
            Ok(())
        })?;
        if self.db.recently_committed() {
            return Ok(());
        }
        let now_s = Utc::now().timestamp();
        pg_write!(&self.db, |tx| {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO writer_probe (id, written_at) VALUES (1, $1)
                         ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                )
                .await?;
            tx.execute(&stmt, &[&now_s]).await?;
            Ok(())
        })
    }

    pub(crate) async fn purge(&self) -> Result<Purged, StoreError> {
        let now_s = Utc::now().timestamp();
        let purged = pg_write!(&self.db, |tx| {
            let mut counts = [0usize; 3];
            for (i, sql) in [
                "DELETE FROM revoked_tokens WHERE purge_after < $1",
                "DELETE FROM refresh_tokens WHERE expires_at < $1",
                "DELETE FROM sessions WHERE purge_after < $1",
            ]
            .into_iter()
            .enumerate()
            {
                let stmt = tx.prepare_cached(sql).await?;
                counts[i] = tx.execute(&stmt, &[&now_s]).await? as usize;
            }
            Ok(Purged {
                revocations: counts[0],
                refresh_tokens: counts[1],
                sessions: counts[2],
            })
        })?;
        throttle::purge(&self.db, self.limits).await?;
        Ok(purged)
    }

    pub(crate) async fn reserve_login(
        &self,
        email: &str,
        client: Option<crate::auth::throttle::ClientKey>,
    ) -> Result<Reserved, StoreError> {
        throttle::reserve(&self.db, self.limits, email, client).await
    }

    pub(crate) async fn login_succeeded(&self, attempt: LoginAttempt) -> Result<(), StoreError> {
        throttle::succeeded(&self.db, attempt).await
    }
}

/// Re-checks the caller's token inside the write; with `lock_user`, after
/// locking its user: writes about one user's tokens (global logout,
/// password change) then run one after the other, and this read (a new
/// snapshot, taken after the lock) sees everything committed before.
async fn recheck(
    tx: &Transaction<'_>,
    token: &TokenToEnd,
    clock: &Clock,
    lock_user: bool,
) -> Result<Option<Refusal>, StoreError> {
    if lock_user {
        sessions::lock_user(tx, token.key.user_id).await?;
    }
    let (jtis, sids, uids) = lookup::facts_params(&[&token.key]);
    let stmt = tx.prepare_cached(lookup::FACTS_SQL).await?;
    let rows = tx.query(&stmt, &[&jtis, &sids, &uids]).await?;
    let (facts, _) = lookup::facts_from_rows(&rows, 1)?
        .pop()
        .ok_or_else(|| StoreError::Postgres("a lookup row is missing".into()))?;
    let token_facts = TokenFacts {
        user_id: token.key.user_id,
        sid: token.key.sid.as_deref(),
        issued: token.issued,
    };
    Ok(judge(token_facts, &facts, clock.now_s()).err())
}

/// Connects once, checks the server and migrates (or, with `must_exist`,
/// refuses a database without our schema).
async fn prepare(target: &Target, timeout: Duration, must_exist: bool) -> Result<(), String> {
    let connecting = async {
        let (mut client, connection) = target
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| connect::describe(&e))?;
        let task = tokio::spawn(connection);
        if must_exist {
            let found: bool = client
                .query_one("SELECT to_regclass('tokengate_schema') IS NOT NULL", &[])
                .await
                .map_err(|e| connect::describe(&e))?
                .get(0);
            if !found {
                return Err("there is no tokengate database there (check --database or \
                     TOKENGATE_DATABASE; `tokengate serve` creates the schema)"
                    .to_owned());
            }
        }
        let result = migrations::migrate(&mut client)
            .await
            .map_err(|e| e.to_string());
        drop(client);
        let _ = task.await;
        result
    };
    // Migrations may wait for another process's; allow them more time.
    let limit = timeout.max(Duration::from_secs(30));
    tokio::time::timeout(limit, connecting)
        .await
        .unwrap_or_else(|_| Err(format!("the database did not answer within {limit:?}")))
}
