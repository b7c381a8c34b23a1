//! The SQLite engine (embedded, the default): the connection pool, its
//! pragmas and file tracking ([`pool`]), versioned schema migrations
//! ([`migrations`]), the tables ([`users`], [`denylist`], [`sessions`]), the
//! group-commit writer for every durable write ([`writer`]), and the reader
//! threads that serve the per-request lookups ([`reader`], [`lookup`]), whose
//! answers are remembered while the database provably has not changed
//! ([`changes`]).
//!
//! Everything below this module is blocking; it runs on the reader threads,
//! the writer thread or tokio's blocking pool, never on an executor thread.

pub mod changes;
pub mod denylist;
pub mod lookup;
pub mod migrations;
pub mod pool;
pub mod reader;
pub mod sessions;
pub mod users;
pub mod writer;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};

pub use pool::Pool;
pub use reader::Readers;
pub use writer::Writer;

use self::changes::Changes;
use self::denylist::{Denylist, View};
use self::lookup::LookupCache;
use crate::auth::refresh::{Presented, TokenHash};
use crate::store::{
    blocking, Checked, CreateError, Credentials, Lifetimes, LogoutScope, Lookup, LookupKey,
    NewSession, PasswordChange, Purged, RefreshTokenState, Refreshed, SessionRow, StoreError,
    TokenToEnd, User,
};

/// Threads serving the per-request database reads.
const READER_THREADS: usize = 2;

/// Most tokens whose lookup answers are remembered (a few hundred bytes each).
const LOOKUP_CACHE_TOKENS: usize = 16_384;

/// The SQLite engine, open and running.
pub struct SqliteStore {
    pool: Pool,
    denylist: Arc<Denylist>,
    readers: Readers,
    writer: Writer,
    changes: Option<Changes>,
    lookups: LookupCache,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path` and starts the
    /// reader and writer threads. The returned handle finishes when the
    /// store is dropped and the writer has committed what was queued and
    /// checkpointed the WAL.
    pub fn open(
        path: &Path,
        timeout: Duration,
        lifetimes: Lifetimes,
        merge_rows: usize,
    ) -> Result<(Self, JoinHandle<()>), pool::OpenError> {
        let pool = pool::open(path, timeout)?;
        let fail = |e: StoreError| pool::OpenError::new(path, e.to_string());
        let denylist = Arc::new(Denylist::new(merge_rows));
        let (writer, handle) =
            Writer::start(path, timeout, lifetimes, denylist.clone()).map_err(fail)?;
        let readers = Readers::start(path, READER_THREADS, timeout).map_err(fail)?;
        let changes = Changes::open(path);
        if changes.is_none() {
            tracing::warn!("cannot map the WAL index; every request will query the database");
        }
        Ok((
            Self {
                pool,
                denylist,
                readers,
                writer,
                changes,
                lookups: LookupCache::new(LOOKUP_CACHE_TOKENS),
            },
            handle,
        ))
    }

    pub(crate) async fn create_user(
        &self,
        name: String,
        email: String,
        password_hash: String,
    ) -> Result<User, CreateError> {
        let pool = self.pool.clone();
        blocking(move || {
            let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
            Ok(users::create(
                &*pool.get()?,
                &name,
                &email,
                &password_hash,
                &created_at,
            ))
        })
        .await?
    }

    pub(crate) async fn find_credentials(
        &self,
        email: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let pool = self.pool.clone();
        let email = email.to_owned();
        blocking(move || users::find_credentials(&*pool.get()?, &email)).await
    }

    /// One job on a reader thread, unless the same lookup was answered at
    /// the database's current version.
    pub(crate) async fn lookup(&self, key: &LookupKey) -> Result<Lookup, StoreError> {
        // The version is read before the lookup runs: if anything commits in
        // between, the answer is remembered under an already-stale version.
        let version = self.changes.as_ref().and_then(Changes::version);
        if let Some(found) = version.and_then(|v| self.lookups.get(v, &key.jti)) {
            return Ok(found);
        }
        let job_key = key.clone();
        let denylist = self.denylist.clone();
        // A failed read: nothing remembered before it counts any more.
        let found = self
            .readers
            .run(move |conn| lookup::facts(conn, &job_key, &denylist, View::Committed))
            .await
            .inspect_err(|_| self.lookups.clear())?;
        if let Some(v) = version {
            self.lookups.put(v, &key.jti, &found);
        }
        Ok(found)
    }

    pub(crate) async fn logout(
        &self,
        token: TokenToEnd,
        scope: LogoutScope,
    ) -> Result<Checked<()>, StoreError> {
        self.writer.logout(token, scope).await
    }

    pub(crate) async fn revoke(&self, jti: &str, exp: i64) -> Result<bool, StoreError> {
        Ok(self.writer.revoke(jti, exp).await? == denylist::Revocation::Revoked)
    }

    pub(crate) async fn start_session(&self, session: NewSession) -> Result<i64, StoreError> {
        self.writer.start_session(session).await
    }

    pub(crate) async fn refresh(
        &self,
        presented: Presented,
        new_hash: TokenHash,
    ) -> Result<Refreshed, StoreError> {
        self.writer.refresh(presented, new_hash).await
    }

    /// On a reader thread: a read that never counts as a use of the token.
    pub(crate) async fn refresh_token_state(
        &self,
        presented: &Presented,
    ) -> Result<Option<RefreshTokenState>, StoreError> {
        let presented = presented.clone();
        let now_s = Utc::now().timestamp();
        let denylist = self.denylist.clone();
        self.readers
            .run(move |conn| sessions::current_token(conn, committed(&denylist), &presented, now_s))
            .await
    }

    /// Asks a reader first, so that the writer (and its commits) is used
    /// only for tokens that really end a session, never for guessed ones;
    /// the writer checks again inside its transaction.
    pub(crate) async fn revoke_refresh(&self, presented: Presented) -> Result<bool, StoreError> {
        let now_s = Utc::now().timestamp();
        let asked = presented.clone();
        let denylist = self.denylist.clone();
        let known = self
            .readers
            .run(move |conn| sessions::is_known_token(conn, committed(&denylist), &asked, now_s))
            .await?;
        if !known {
            return Ok(false);
        }
        self.writer.revoke_refresh(presented).await
    }

    pub(crate) async fn list_sessions(&self, user_id: i64) -> Result<Vec<SessionRow>, StoreError> {
        let now_s = Utc::now().timestamp();
        let denylist = self.denylist.clone();
        self.readers
            .run(move |conn| sessions::list_active(conn, committed(&denylist), user_id, now_s))
            .await
    }

    pub(crate) async fn end_session(&self, user_id: i64, sid: &str) -> Result<bool, StoreError> {
        self.writer.end_session(user_id, sid.to_owned()).await
    }

    pub(crate) async fn change_password(
        &self,
        change: PasswordChange,
    ) -> Result<Checked<i64>, StoreError> {
        self.writer.change_password(change).await
    }

    pub(crate) async fn revoke_user(
        &self,
        email: &str,
        at_us: i64,
    ) -> Result<Option<usize>, StoreError> {
        self.writer.revoke_user(email.to_owned(), at_us).await
    }

    /// A real read of the schema, and a write that commits (or a commit
    /// within the last second): a logout's `204` needs both.
    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        self.readers
            .run(|conn| {
                users::check(conn)?;
                denylist::check(conn)?;
                Ok(())
            })
            .await?;
        self.writer.check().await
    }

    pub(crate) async fn purge(&self) -> Result<Purged, StoreError> {
        let pool = self.pool.clone();
        blocking(move || purge(&*pool.get()?, Utc::now().timestamp())).await
    }
}

/// Sessions ended through the log, as a reader's committed snapshot sees them.
fn committed(denylist: &Denylist) -> sessions::Ends<'_> {
    sessions::Ends {
        denylist,
        view: View::Committed,
    }
}

/// Deletes what no token can need any more, as of `now_s`.
pub fn purge(conn: &rusqlite::Connection, now_s: i64) -> Result<Purged, StoreError> {
    // One transaction: a logged session end goes only with its session.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let purged = (|| {
        let ended = denylist::purge_ended_sessions(conn, now_s)?;
        let revocations = denylist::purge_expired(conn, now_s)?;
        let (sessions, refresh_tokens) = sessions::purge(conn, now_s)?;
        Ok(Purged {
            revocations,
            sessions: ended + sessions,
            refresh_tokens,
        })
    })();
    match purged {
        Ok(purged) => {
            conn.execute_batch("COMMIT")?;
            Ok(purged)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
