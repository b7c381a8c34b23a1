//! Versioned schema migrations, tracked in SQLite's `user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema one version up; they run in
//! one transaction at start. A file whose version is newer than this build
//! knows is refused rather than touched.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// The schema, one step per version (index 0 brings version 0 to 1).
const MIGRATIONS: &[&str] = &[
    // 1: users and the revocation denylist.
    "CREATE TABLE users (
         id            INTEGER PRIMARY KEY,
         name          TEXT    NOT NULL,
         email         TEXT    NOT NULL COLLATE NOCASE UNIQUE,
         password_hash TEXT    NOT NULL,
         created_at    TEXT    NOT NULL
     );
     CREATE TABLE revoked_tokens (
         jti        TEXT    PRIMARY KEY,
         expires_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);",
    // 2 (v2): sessions with refresh tokens (hashes only) and the users'
    // global-logout mark (tokens issued up to it are rejected). New
    // revocations are appended to revocation_log and merged into
    // revoked_tokens in bulk (see denylist.rs for why).
    // A revocation row records when it may go (exp plus the leeway of the
    // server that wrote it), so a purge with a smaller leeway cannot bring a
    // token back; version-1 rows get the largest leeway a server accepts (one
    // day), never less than they had. A one-row table for the writer's
    // health probe.
    "ALTER TABLE revoked_tokens RENAME COLUMN expires_at TO purge_after;
     UPDATE revoked_tokens SET purge_after = purge_after + 86400;
     DROP INDEX revoked_tokens_by_expiry;
     CREATE INDEX revoked_tokens_by_purge_after ON revoked_tokens (purge_after);
     ALTER TABLE users ADD COLUMN tokens_invalid_before_us INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE sessions (
         id                 TEXT    PRIMARY KEY,
         user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
         created_at_ms      INTEGER NOT NULL,
         last_used_at_ms    INTEGER NOT NULL,
         refresh_expires_at INTEGER NOT NULL,
         max_expires_at     INTEGER NOT NULL,
         ended_at           INTEGER,
         generation         INTEGER NOT NULL,
         rotated_at_ms      INTEGER NOT NULL,
         user_agent         TEXT,
         ip                 TEXT,
         purge_after        INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX sessions_by_user ON sessions (user_id, created_at_ms);
     CREATE INDEX sessions_by_purge_after ON sessions (purge_after);
     CREATE TABLE refresh_tokens (
         session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
         hash       BLOB    NOT NULL,
         generation INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         PRIMARY KEY (session_id, hash)
     ) WITHOUT ROWID;
     CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
     CREATE TABLE revocation_log (
         seq         INTEGER PRIMARY KEY AUTOINCREMENT,
         jti         TEXT    NOT NULL,
         purge_after INTEGER NOT NULL
     );
     CREATE VIEW revocations AS
         SELECT jti, purge_after FROM revoked_tokens
         UNION ALL SELECT jti, purge_after FROM revocation_log;
     CREATE TABLE writer_probe (
         id         INTEGER PRIMARY KEY CHECK (id = 1),
         written_at INTEGER NOT NULL
     );",
];

/// The schema version this build creates and understands.
pub const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema to [`LATEST_VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > LATEST_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: LATEST_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}
