//! `tokengate copy --to <url-or-path>`: everything the service keeps (users
//! with their password hashes and global-logout marks, sessions with their
//! refresh-token hashes, the denylist) copied from the configured database
//! into an empty one of either engine, in one transaction on each side. The
//! target must be empty: merging two databases could resurrect nothing, but
//! could mix up users with the same id.
//!
//! Login-throttle counts are not copied (they last minutes).

use std::path::Path;
use std::time::Duration;

use super::postgres::{pg_write, Db, PgStore};
use super::sqlite;
use super::StoreError;
use crate::config::Settings;

/// Longest a copy may take, ms.
const COPY_TIMEOUT_MS: u64 = 600_000;

/// One user row, as both engines store it.
struct UserRow {
    id: i64,
    name: String,
    email: String,
    password_hash: String,
    created_at: String,
    tokens_invalid_before_us: i64,
}

/// One session row.
struct SessionRow {
    id: String,
    user_id: i64,
    created_at_ms: i64,
    last_used_at_ms: i64,
    refresh_expires_at: i64,
    max_expires_at: i64,
    ended_at: Option<i64>,
    generation: i64,
    rotated_at_ms: i64,
    user_agent: Option<String>,
    ip: Option<String>,
    purge_after: i64,
}

/// One refresh-token hash.
struct TokenRow {
    session_id: String,
    hash: Vec<u8>,
    generation: i64,
    expires_at: i64,
}

/// Everything to copy.
#[derive(Default)]
struct Dump {
    users: Vec<UserRow>,
    sessions: Vec<SessionRow>,
    tokens: Vec<TokenRow>,
    revoked: Vec<(String, i64)>,
}

/// What was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Users (with their marks).
    pub users: usize,
    /// Sessions.
    pub sessions: usize,
    /// Refresh-token hashes.
    pub refresh_tokens: usize,
    /// Denylist rows.
    pub revocations: usize,
}

/// Where to copy from or to.
enum Place {
    Sqlite(std::path::PathBuf),
    Postgres(PgStore),
}

/// Copies the database of `from` into the empty database `to` (a path or a
/// URL). Blocking: call it on a thread of a tokio runtime
/// (`spawn_blocking`). Errors are one line, passwords redacted.
pub fn copy(from: &Settings, to: &str) -> Result<Copied, String> {
    // A large database takes longer than one request may.
    let mut from = from.clone();
    from.db_timeout_ms = from.db_timeout_ms.max(COPY_TIMEOUT_MS);
    let from = &from;
    let source = open(from, true)?;
    let mut target_settings = from.clone();
    target_settings.database = to.into();
    let shown_target = match target_settings.database_url() {
        Some(url) => super::postgres::connect::redact_url(url),
        None => to.to_owned(),
    };
    if from.database == target_settings.database {
        return Err("the target is the configured database itself".into());
    }
    let target = open(&target_settings, false)?;
    let timeout = Duration::from_millis(from.db_timeout_ms);
    let dump = match &source {
        Place::Sqlite(path) => read_sqlite(path, timeout),
        Place::Postgres(store) => block_on(read_postgres(store.db())),
    }
    .map_err(|e| format!("cannot read the configured database: {e}"))?;
    let fail = |e: StoreError| format!("cannot write to {shown_target}: {e}");
    let empty = match &target {
        Place::Sqlite(path) => write_sqlite(path, timeout, &dump).map_err(fail)?,
        Place::Postgres(store) => block_on(write_postgres(store.db(), &dump)).map_err(fail)?,
    };
    if !empty {
        return Err(format!(
            "{shown_target} is not empty; copy only into a new, empty database"
        ));
    }
    Ok(Copied {
        users: dump.users.len(),
        sessions: dump.sessions.len(),
        refresh_tokens: dump.tokens.len(),
        revocations: dump.revoked.len(),
    })
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(future)
}

fn open(settings: &Settings, must_exist: bool) -> Result<Place, String> {
    match settings.database_url() {
        Some(url) => PgStore::open(url, settings, must_exist)
            .map(Place::Postgres)
            .map_err(|e| e.to_string()),
        None => {
            let path = &settings.database;
            if must_exist {
                sqlite::pool::must_exist(path).map_err(|e| e.to_string())?;
            }
            // Creates (mode 0600) and migrates a new file.
            let timeout = Duration::from_millis(settings.db_timeout_ms);
            sqlite::pool::open(path, timeout).map_err(|e| e.to_string())?;
            Ok(Place::Sqlite(path.clone()))
        }
    }
}

fn read_sqlite(path: &Path, timeout: Duration) -> Result<Dump, StoreError> {
    let mut conn = sqlite::pool::connect(path, timeout)?;
    // One read transaction: one consistent picture.
    let tx = conn.transaction()?;
    let mut dump = Dump::default();
    {
        let mut stmt = tx.prepare(
            "SELECT id, name, email, password_hash, created_at, tokens_invalid_before_us
             FROM users ORDER BY id",
        )?;
        dump.users = stmt
            .query_map([], |r| {
                Ok(UserRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    email: r.get(2)?,
                    password_hash: r.get(3)?,
                    created_at: r.get(4)?,
                    tokens_invalid_before_us: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        // A session ended one at a time may be ended only through the
        // denylist's log (key `s:<sid>`, not merged yet): the copy marks it
        // ended on its row, at the latest moment it can have ended (now), and
        // keeps it until the later of both purge moments.
        let now_s = chrono::Utc::now().timestamp();
        let mut stmt = tx.prepare(
            "SELECT s.id, s.user_id, s.created_at_ms, s.last_used_at_ms, s.refresh_expires_at,
                    s.max_expires_at,
                    COALESCE(s.ended_at, CASE WHEN e.jti IS NULL THEN NULL ELSE ?1 END),
                    s.generation, s.rotated_at_ms, s.user_agent, s.ip,
                    max(s.purge_after, COALESCE(e.purge_after, 0))
             FROM sessions s
             LEFT JOIN (SELECT jti, max(purge_after) AS purge_after FROM revocations
                        WHERE substr(jti, 1, 2) = 's:' GROUP BY jti) e
               ON e.jti = 's:' || s.id",
        )?;
        dump.sessions = stmt
            .query_map([now_s], |r| {
                Ok(SessionRow {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    created_at_ms: r.get(2)?,
                    last_used_at_ms: r.get(3)?,
                    refresh_expires_at: r.get(4)?,
                    max_expires_at: r.get(5)?,
                    ended_at: r.get(6)?,
                    generation: r.get(7)?,
                    rotated_at_ms: r.get(8)?,
                    user_agent: r.get(9)?,
                    ip: r.get(10)?,
                    purge_after: r.get(11)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt =
            tx.prepare("SELECT session_id, hash, generation, expires_at FROM refresh_tokens")?;
        dump.tokens = stmt
            .query_map([], |r| {
                Ok(TokenRow {
                    session_id: r.get(0)?,
                    hash: r.get(1)?,
                    generation: r.get(2)?,
                    expires_at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        // Both parts of the denylist (the merged table and the log), without
        // the session ends (on the sessions above).
        let mut stmt = tx.prepare(
            "SELECT jti, max(purge_after) FROM revocations
             WHERE substr(jti, 1, 2) <> 's:' GROUP BY jti",
        )?;
        dump.revoked = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
    }
    tx.commit()?;
    Ok(dump)
}

/// Writes `dump` into the database at `path` if it is empty; `false` (and
/// nothing written) if it is not.
fn write_sqlite(path: &Path, timeout: Duration, dump: &Dump) -> Result<bool, StoreError> {
    let mut conn = sqlite::pool::connect(path, timeout)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let rows: i64 = tx.query_row(
        "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM sessions)
              + (SELECT count(*) FROM revocations)",
        [],
        |r| r.get(0),
    )?;
    if rows != 0 {
        return Ok(false);
    }
    {
        let mut stmt = tx.prepare(
            "INSERT INTO users (id, name, email, password_hash, created_at, tokens_invalid_before_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for u in &dump.users {
            stmt.execute(rusqlite::params![
                u.id,
                u.name,
                u.email,
                u.password_hash,
                u.created_at,
                u.tokens_invalid_before_us
            ])?;
        }
        let mut stmt = tx.prepare(
            "INSERT INTO sessions (id, user_id, created_at_ms, last_used_at_ms,
                 refresh_expires_at, max_expires_at, ended_at, generation, rotated_at_ms,
                 user_agent, ip, purge_after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for s in &dump.sessions {
            stmt.execute(rusqlite::params![
                s.id,
                s.user_id,
                s.created_at_ms,
                s.last_used_at_ms,
                s.refresh_expires_at,
                s.max_expires_at,
                s.ended_at,
                s.generation,
                s.rotated_at_ms,
                s.user_agent,
                s.ip,
                s.purge_after
            ])?;
        }
        let mut stmt = tx.prepare(
            "INSERT INTO refresh_tokens (session_id, hash, generation, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for t in &dump.tokens {
            stmt.execute(rusqlite::params![
                t.session_id,
                t.hash,
                t.generation,
                t.expires_at
            ])?;
        }
        let mut stmt =
            tx.prepare("INSERT INTO revoked_tokens (jti, purge_after) VALUES (?1, ?2)")?;
        for (jti, purge_after) in &dump.revoked {
            stmt.execute(rusqlite::params![jti, purge_after])?;
        }
    }
    tx.commit()?;
    Ok(true)
}

async fn read_postgres(db: &Db) -> Result<Dump, StoreError> {
    pg_write!(db, |tx| {
        // One snapshot for every table.
        tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        let mut dump = Dump::default();
        for r in tx
            .query(
                "SELECT id, name, email, password_hash, created_at, tokens_invalid_before_us
                 FROM users ORDER BY id",
                &[],
            )
            .await?
        {
            dump.users.push(UserRow {
                id: r.get(0),
                name: r.get(1),
                email: r.get(2),
                password_hash: r.get(3),
                created_at: r.get(4),
                tokens_invalid_before_us: r.get(5),
            });
        }
        for r in tx
            .query(
                "SELECT id, user_id, created_at_ms, last_used_at_ms, refresh_expires_at,
                        max_expires_at, ended_at, generation, rotated_at_ms, user_agent, ip,
                        purge_after
                 FROM sessions",
                &[],
            )
            .await?
        {
            dump.sessions.push(SessionRow {
                id: r.get(0),
                user_id: r.get(1),
                created_at_ms: r.get(2),
                last_used_at_ms: r.get(3),
                refresh_expires_at: r.get(4),
                max_expires_at: r.get(5),
                ended_at: r.get(6),
                generation: r.get(7),
                rotated_at_ms: r.get(8),
                user_agent: r.get(9),
                ip: r.get(10),
                purge_after: r.get(11),
            });
        }
        for r in tx
            .query(
                "SELECT session_id, hash, generation, expires_at FROM refresh_tokens",
                &[],
            )
            .await?
        {
            dump.tokens.push(TokenRow {
                session_id: r.get(0),
                hash: r.get(1),
                generation: r.get(2),
                expires_at: r.get(3),
            });
        }
        for r in tx
            .query("SELECT jti, purge_after FROM revoked_tokens", &[])
            .await?
        {
            dump.revoked.push((r.get(0), r.get(1)));
        }
        Ok(dump)
    })
}

/// Writes `dump` into the PostgreSQL database if it is empty; `false` (and
/// nothing written) if it is not.
async fn write_postgres(db: &Db, dump: &Dump) -> Result<bool, StoreError> {
    pg_write!(db, |tx| {
        // No other writer may slip in between the emptiness check and the copy.
        tx.batch_execute("LOCK TABLE users, sessions, revoked_tokens IN EXCLUSIVE MODE")
            .await?;
        let rows: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM sessions)
                      + (SELECT count(*) FROM revoked_tokens)",
                &[],
            )
            .await?
            .get(0);
        if rows != 0 {
            return Ok(false);
        }
        let stmt = tx
            .prepare(
                "INSERT INTO users (id, name, email, password_hash, created_at,
                     tokens_invalid_before_us)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        for u in &dump.users {
            tx.execute(
                &stmt,
                &[
                    &u.id,
                    &u.name,
                    &u.email,
                    &u.password_hash,
                    &u.created_at,
                    &u.tokens_invalid_before_us,
                ],
            )
            .await?;
        }
        // New users get ids after the copied ones.
        tx.batch_execute(
            "SELECT setval(pg_get_serial_sequence('users', 'id'),
                           (SELECT COALESCE(max(id), 0) + 1 FROM users), false)",
        )
        .await?;
        let stmt = tx
            .prepare(
                "INSERT INTO sessions (id, user_id, created_at_ms, last_used_at_ms,
                     refresh_expires_at, max_expires_at, ended_at, generation, rotated_at_ms,
                     user_agent, ip, purge_after)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .await?;
        for s in &dump.sessions {
            tx.execute(
                &stmt,
                &[
                    &s.id,
                    &s.user_id,
                    &s.created_at_ms,
                    &s.last_used_at_ms,
                    &s.refresh_expires_at,
                    &s.max_expires_at,
                    &s.ended_at,
                    &s.generation,
                    &s.rotated_at_ms,
                    &s.user_agent,
                    &s.ip,
                    &s.purge_after,
                ],
            )
            .await?;
        }
        let stmt = tx
            .prepare(
                "INSERT INTO refresh_tokens (session_id, hash, generation, expires_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .await?;
        for t in &dump.tokens {
            tx.execute(
                &stmt,
                &[&t.session_id, &t.hash, &t.generation, &t.expires_at],
            )
            .await?;
        }
        let stmt = tx
            .prepare("INSERT INTO revoked_tokens (jti, purge_after) VALUES ($1, $2)")
            .await?;
        for (jti, purge_after) in &dump.revoked {
            tx.execute(&stmt, &[jti, purge_after]).await?;
        }
        Ok(true)
    })
}
