//! Versioned schema migrations, tracked in SQLite's `user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema one version up; they run in
//! one transaction at start. A file whose version is newer than this build
//! knows is refused rather than touched.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

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
