//! Sessions, refresh-token hashes, the denylist and the users' global-logout
//! marks in PostgreSQL: the same statements and rules as the SQLite engine
//! ([`crate::store::sqlite::sessions`]), each run inside the caller's
//! transaction. Rows that a write depends on are locked first (`FOR UPDATE`
//! on the session, `FOR NO KEY UPDATE` on the user), so two writes about one
//! session or one user run one after the other, and each sees what the
//! other committed.

use deadpool_postgres::Transaction;

use crate::auth::refresh::{self, Decision, RotationState, StoredToken, TokenHash};
use crate::store::sqlite::sessions::Clock;
use crate::store::{NewSession, Refreshed, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// Creates a session with its first refresh token; returns when the refresh
/// token expires (Unix s).
pub async fn create(tx: &Transaction<'_>, new: &NewSession, clock: &Clock) -> Result<i64> {
    let now_s = clock.now_s();
    let max_expires_at = now_s + clock.max_age;
    let refresh_expires_at = (now_s + clock.refresh_ttl).min(max_expires_at);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sessions (id, user_id, created_at_ms, last_used_at_ms, refresh_expires_at,
                 max_expires_at, generation, rotated_at_ms, user_agent, ip, purge_after)
             VALUES ($1, $2, $3, $3, $4, $5, 1, $3, $6, $7, $8)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &new.sid,
            &new.user_id,
            &clock.now_ms,
            &refresh_expires_at,
            &max_expires_at,
            &new.user_agent,
            &new.ip,
            &(refresh_expires_at + clock.token_tail),
        ],
    )
    .await?;
    insert_token(tx, &new.sid, 1, &new.refresh_hash, refresh_expires_at).await?;
    Ok(refresh_expires_at)
}

async fn insert_token(
    tx: &Transaction<'_>,
    sid: &str,
    generation: i64,
    hash: &TokenHash,
    expires_at: i64,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO refresh_tokens (session_id, generation, hash, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .await?;
    tx.execute(&stmt, &[&sid, &generation, &&hash[..], &expires_at])
        .await?;
    Ok(())
}

/// Applies the rotation rules ([`refresh::decide`]) to a presented token,
/// with the session row locked for the rest of the transaction: concurrent
/// refreshes of one session see each other's rotation, never fork it.
pub async fn refresh(
    tx: &Transaction<'_>,
    presented: &refresh::Presented,
    new_hash: &TokenHash,
    clock: &Clock,
) -> Result<Refreshed> {
    let now_s = clock.now_s();
    let stmt = tx
        .prepare_cached(
            "SELECT user_id, generation, rotated_at_ms, max_expires_at FROM sessions
             WHERE id = $1 AND ended_at IS NULL AND refresh_expires_at > $2
               AND max_expires_at > $2
             FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&presented.sid, &now_s]).await? else {
        return Ok(Refreshed::Invalid);
    };
    let user_id: i64 = row.get(0);
    let state = RotationState {
        generation: row.get(1),
        rotated_at_ms: row.get(2),
    };
    let max_expires_at: i64 = row.get(3);
    let stmt = tx
        .prepare_cached(
            "SELECT hash, generation, expires_at FROM refresh_tokens WHERE session_id = $1",
        )
        .await?;
    let tokens: Vec<StoredToken> = tx
        .query(&stmt, &[&presented.sid])
        .await?
        .iter()
        .map(|row| StoredToken {
            hash: row.get(0),
            generation: row.get(1),
            expires_at: row.get(2),
        })
        .collect();
    let decision = refresh::decide(
        &presented.hash,
        &tokens,
        state,
        now_s,
        clock.now_ms,
        clock.reuse_interval_ms,
    );
    let generation = match decision {
        Decision::Invalid => return Ok(Refreshed::Invalid),
        Decision::Theft => {
            end(tx, &presented.sid, None, clock).await?;
            return Ok(Refreshed::Theft);
        }
        Decision::Rotate => state.generation + 1,
        Decision::Reissue => state.generation,
    };
    let refresh_expires_at = (now_s + clock.refresh_ttl).min(max_expires_at);
    insert_token(tx, &presented.sid, generation, new_hash, refresh_expires_at).await?;
    let rotated_at_ms = if decision == Decision::Rotate {
        clock.now_ms
    } else {
        state.rotated_at_ms
    };
    advance(
        tx,
        &presented.sid,
        generation,
        rotated_at_ms,
        refresh_expires_at,
        clock,
    )
    .await?;
    Ok(Refreshed::Issued {
        user_id,
        refresh_expires_at,
    })
}

/// Rotates the refresh token of session `sid` of `user_id` outright (a
/// password change); `None` if the session is not active.
pub async fn rotate(
    tx: &Transaction<'_>,
    sid: &str,
    user_id: i64,
    new_hash: &TokenHash,
    clock: &Clock,
) -> Result<Option<i64>> {
    let now_s = clock.now_s();
    let stmt = tx
        .prepare_cached(
            "SELECT generation, max_expires_at FROM sessions
             WHERE id = $1 AND user_id = $2 AND ended_at IS NULL
               AND refresh_expires_at > $3 AND max_expires_at > $3
             FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&sid, &user_id, &now_s]).await? else {
        return Ok(None);
    };
    let generation: i64 = row.get(0);
    let max_expires_at: i64 = row.get(1);
    let refresh_expires_at = (now_s + clock.refresh_ttl).min(max_expires_at);
    insert_token(tx, sid, generation + 1, new_hash, refresh_expires_at).await?;
    advance(
        tx,
        sid,
        generation + 1,
        clock.now_ms,
        refresh_expires_at,
        clock,
    )
    .await?;
    Ok(Some(refresh_expires_at))
}

/// Moves session `sid` to refresh-token `generation` (rotated at
/// `rotated_at_ms`), used now, its refresh and purge moments pushed out to
/// `refresh_expires_at` (never pulled in).
async fn advance(
    tx: &Transaction<'_>,
    sid: &str,
    generation: i64,
    rotated_at_ms: i64,
    refresh_expires_at: i64,
    clock: &Clock,
) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE sessions SET generation = $2, rotated_at_ms = $3, last_used_at_ms = $4,
                 refresh_expires_at = GREATEST(refresh_expires_at, $5),
                 purge_after = GREATEST(purge_after, $6)
             WHERE id = $1",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &sid,
            &generation,
            &rotated_at_ms,
            &clock.now_ms,
            &refresh_expires_at,
            &(refresh_expires_at + clock.token_tail),
        ],
    )
    .await?;
    Ok(())
}

/// Ends session `sid` (of `user_id`, when given). Returns whether an active
/// session was ended.
pub async fn end(
    tx: &Transaction<'_>,
    sid: &str,
    user_id: Option<i64>,
    clock: &Clock,
) -> Result<bool> {
    let now_s = clock.now_s();
    let stmt = tx
        .prepare_cached(
            "UPDATE sessions SET ended_at = $2, purge_after = $3
             WHERE id = $1 AND ($4::BIGINT IS NULL OR user_id = $4) AND ended_at IS NULL
               AND refresh_expires_at > $2 AND max_expires_at > $2",
        )
        .await?;
    let ended = tx
        .execute(
            &stmt,
            &[&sid, &now_s, &(now_s + clock.token_tail), &user_id],
        )
        .await?;
    Ok(ended == 1)
}

/// Ends every active session of `user_id` except `keep`; returns how many.
pub async fn end_all(
    tx: &Transaction<'_>,
    user_id: i64,
    keep: Option<&str>,
    clock: &Clock,
) -> Result<usize> {
    let now_s = clock.now_s();
    let stmt = tx
        .prepare_cached(
            "UPDATE sessions SET ended_at = $2, purge_after = $3
             WHERE user_id = $1 AND ended_at IS NULL
               AND refresh_expires_at > $2 AND max_expires_at > $2
               AND ($4::TEXT IS NULL OR id <> $4)",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[&user_id, &now_s, &(now_s + clock.token_tail), &keep],
        )
        .await? as usize)
}

/// Locks the user row until the end of the transaction, so writes that
/// depend on one user's tokens (logout, password change, global logout) run
/// one after the other. `false` if there is no such user.
pub async fn lock_user(tx: &Transaction<'_>, user_id: i64) -> Result<bool> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
        .await?;
    Ok(tx.query_opt(&stmt, &[&user_id]).await?.is_some())
}

/// Records that every token of `user_id` issued up to `at_us` is rejected.
/// Never moves the mark backwards.
pub async fn mark_tokens_invalid(tx: &Transaction<'_>, user_id: i64, at_us: i64) -> Result<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE users SET tokens_invalid_before_us = GREATEST(tokens_invalid_before_us, $2)
             WHERE id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&user_id, &at_us]).await?;
    Ok(())
}

/// Stores a new password hash.
pub async fn set_password(tx: &Transaction<'_>, user_id: i64, hash: &str) -> Result<()> {
    let stmt = tx
        .prepare_cached("UPDATE users SET password_hash = $2 WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&user_id, &hash]).await?;
    Ok(())
}

/// Adds `jti` to the denylist until `purge_after`; `false` if it was there.
pub async fn revoke(tx: &Transaction<'_>, jti: &str, purge_after: i64) -> Result<bool> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO revoked_tokens (jti, purge_after) VALUES ($1, $2)
             ON CONFLICT (jti) DO NOTHING",
        )
        .await?;
    Ok(tx.execute(&stmt, &[&jti, &purge_after]).await? == 1)
}

/// The user and current generation of session `sid` if it is active at
/// `now_s`, the row locked until the end of the transaction.
async fn lock_active_session(
    tx: &Transaction<'_>,
    sid: &str,
    now_s: i64,
) -> Result<Option<(i64, i64)>> {
    let stmt = tx
        .prepare_cached(
            "SELECT user_id, generation FROM sessions
             WHERE id = $1 AND ended_at IS NULL AND refresh_expires_at > $2
               AND max_expires_at > $2
             FOR UPDATE",
        )
        .await?;
    Ok(tx
        .query_opt(&stmt, &[&sid, &now_s])
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

async fn stored_tokens(tx: &Transaction<'_>, sid: &str) -> Result<Vec<StoredToken>> {
    let stmt = tx
        .prepare_cached(
            "SELECT hash, generation, expires_at FROM refresh_tokens WHERE session_id = $1",
        )
        .await?;
    Ok(tx
        .query(&stmt, &[&sid])
        .await?
        .iter()
        .map(|row| StoredToken {
            hash: row.get(0),
            generation: row.get(1),
            expires_at: row.get(2),
        })
        .collect())
}

/// Ends the session of `presented` if it is a stored refresh token of it,
/// of any generation (RFC 7009 revocation), with the session row locked.
/// Returns whether a session ended.
pub async fn revoke_token(
    tx: &Transaction<'_>,
    presented: &refresh::Presented,
    clock: &Clock,
) -> Result<bool> {
    if lock_active_session(tx, &presented.sid, clock.now_s())
        .await?
        .is_none()
    {
        return Ok(false);
    }
    if !refresh::is_any(&presented.hash, &stored_tokens(tx, &presented.sid).await?) {
        return Ok(false);
    }
    end(tx, &presented.sid, None, clock).await
}
