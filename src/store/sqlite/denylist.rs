//! The revocation denylist: the `jti` of every logged-out token, with the
//! moment its row may be purged (the token's `exp` plus the leeway of the
//! server that revoked it, fixed at revocation).
//!
//! The interface is deliberately narrow ([`insert`], run by the
//! [`writer`](super::writer) inside its group commit, [`is_revoked`] on the
//! reader threads, and [`purge_expired`]) so that another storage engine can
//! slot in behind it without touching the routes.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::StoreError;

/// Outcome of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The `jti` was added and the commit is durable.
    Revoked,
    /// The `jti` was already in the denylist.
    AlreadyRevoked,
}

/// Adds `jti`, to be kept until `purge_after` (Unix seconds), inside the
/// caller's transaction.
pub fn insert(conn: &Connection, jti: &str, purge_after: i64) -> Result<Revocation, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO revoked_tokens (jti, purge_after) VALUES (?1, ?2) ON CONFLICT (jti) DO NOTHING",
        )?
        .execute(params![jti, purge_after])?;
    Ok(if inserted == 1 {
        Revocation::Revoked
    } else {
        Revocation::AlreadyRevoked
    })
}

/// Whether `jti` is in the denylist, on a given connection.
pub fn is_revoked(conn: &Connection, jti: &str) -> Result<bool, StoreError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM revoked_tokens WHERE jti = ?1")?
        .query_row([jti], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

/// Deletes rows whose moment to go has passed by `now` (Unix seconds).
/// Returns how many were deleted. No leeway is applied here: it was added
/// when the row was written, by the server whose checks it must outlive.
pub fn purge_expired(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM revoked_tokens WHERE purge_after < ?1")?
        .execute([now])?)
}

/// Number of rows in the denylist.
pub fn len(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM revoked_tokens", [], |row| row.get(0))?)
}
