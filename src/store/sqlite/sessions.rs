//! Sessions and their refresh tokens (hashes only), and the users' global
//! logout marks, in SQLite. Writes run inside the writer's group commit
//! ([`super::writer`]); reads on the reader threads.
//!
//! A session is *active* while it has not ended and neither its newest
//! refresh token nor its maximum age has expired. Every row carries
//! `purge_after`: the moment after which no access token naming the session
//! can verify any more (its end, or its expiry, plus the access-token TTL and
//! the leeway), when the purge may delete it.
//!
//! A session ended one at a time (logout, delete, reuse detection, RFC 7009)
//! is not updated in place: updating a random row writes a random page per
//! session into the WAL. Its end is appended to the denylist's log instead,
//! under the key [`super::denylist::session_key`], in the same group commit as
//! the token's own revocation; once no access token naming the session can
//! verify, the purge deletes the session's row together with that entry. So
//! "ended" is `ended_at` set *or* that key revoked ([`Ends`]).

use rusqlite::{params, Connection, OptionalExtension};

use super::denylist::{session_key, Denylist, View};
use crate::auth::refresh::{self, Decision, RotationState, StoredToken, TokenHash};
use crate::store::{
    Lifetimes, NewSession, RefreshTokenState, Refreshed, SessionRow, SessionState, StoreError,
};

/// Sessions ended through the denylist's log (see the module comment), as
/// seen by a reader's snapshot or inside the writer's batch.
#[derive(Clone, Copy)]
pub struct Ends<'a> {
    /// The denylist (and its mirror of the log).
    pub denylist: &'a Denylist,
    /// Where the check runs.
    pub view: View<'a>,
}

impl Ends<'_> {
    /// Whether session `sid` was ended through the log.
    pub fn has(&self, conn: &Connection, sid: &str) -> Result<bool, StoreError> {
        self.denylist.is_revoked(conn, &session_key(sid), self.view)
    }
}

/// Now, and the lifetimes the session rules use.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Now, Unix milliseconds.
    pub now_ms: i64,
    /// Lifetime of a refresh token, seconds.
    pub refresh_ttl: i64,
    /// Longest life of a session after its login, seconds.
    pub max_age: i64,
    /// Access-token TTL plus leeway, seconds: how long after a session ends
    /// a token naming it may still verify.
    pub token_tail: i64,
    /// The reuse interval for a previous refresh token, milliseconds.
    pub reuse_interval_ms: i64,
}

impl Clock {
    /// The clock at `now_ms` with the configured lifetimes.
    pub fn at(now_ms: i64, lifetimes: &Lifetimes) -> Self {
        Self {
            now_ms,
            refresh_ttl: lifetimes.refresh_ttl,
            max_age: lifetimes.session_max_age,
            token_tail: lifetimes.token_tail(),
            reuse_interval_ms: lifetimes.refresh_reuse_interval * 1000,
        }
    }

    /// Now, Unix seconds.
    pub fn now_s(&self) -> i64 {
        self.now_ms.div_euclid(1000)
    }
}

/// Creates a session with its first refresh token; returns when the refresh
/// token expires (Unix s).
pub fn create(conn: &Connection, new: &NewSession, clock: &Clock) -> Result<i64, StoreError> {
    let now_s = clock.now_s();
    let max_expires_at = now_s + clock.max_age;
    let refresh_expires_at = (now_s + clock.refresh_ttl).min(max_expires_at);
    conn.prepare_cached(
        "INSERT INTO sessions (id, user_id, created_at_ms, last_used_at_ms, refresh_expires_at,
             max_expires_at, generation, rotated_at_ms, user_agent, ip, purge_after)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, 1, ?3, ?6, ?7, ?8)",
    )?
    .execute(params![
        new.sid,
        new.user_id,
        clock.now_ms,
        refresh_expires_at,
        max_expires_at,
        new.user_agent,
        new.ip,
        refresh_expires_at + clock.token_tail,
    ])?;
    insert_token(conn, &new.sid, 1, &new.refresh_hash, refresh_expires_at)?;
    Ok(refresh_expires_at)
}

fn insert_token(
    conn: &Connection,
    sid: &str,
    generation: i64,
    hash: &TokenHash,
    expires_at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (session_id, generation, hash, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![sid, generation, &hash[..], expires_at])?;
    Ok(())
}

/// Applies the rotation rules ([`refresh::decide`]) to a presented token and
/// stores a new refresh token (`new_hash`). On [`Refreshed::Theft`] the
/// caller ends the session (through the log).
pub fn refresh(
    conn: &Connection,
    ends: Ends<'_>,
    presented: &refresh::Presented,
    new_hash: &TokenHash,
    clock: &Clock,
) -> Result<Refreshed, StoreError> {
    let now_s = clock.now_s();
    let session = conn
        .prepare_cached(
            "SELECT user_id, generation, rotated_at_ms, max_expires_at FROM sessions
             WHERE id = ?1 AND ended_at IS NULL AND refresh_expires_at > ?2 AND max_expires_at > ?2",
        )?
        .query_row(params![presented.sid, now_s], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                RotationState {
                    generation: row.get(1)?,
                    rotated_at_ms: row.get(2)?,
                },
                row.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((user_id, state, max_expires_at)) = session else {
        return Ok(Refreshed::Invalid);
    };
    if ends.has(conn, &presented.sid)? {
        return Ok(Refreshed::Invalid);
    }
    let tokens = stored_tokens(conn, &presented.sid)?;
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
        Decision::Theft => return Ok(Refreshed::Theft),
        Decision::Rotate => state.generation + 1,
        Decision::Reissue => state.generation,
    };
    let refresh_expires_at = (now_s + clock.refresh_ttl).min(max_expires_at);
    insert_token(
        conn,
        &presented.sid,
        generation,
        new_hash,
        refresh_expires_at,
    )?;
    let rotated_at_ms = if decision == Decision::Rotate {
        clock.now_ms
    } else {
        state.rotated_at_ms
    };
    conn.prepare_cached(
        "UPDATE sessions SET generation = ?2, rotated_at_ms = ?3, last_used_at_ms = ?4,
             refresh_expires_at = max(refresh_expires_at, ?5),
             purge_after = max(purge_after, ?6)
         WHERE id = ?1",
    )?
    .execute(params![
        presented.sid,
        generation,
        rotated_at_ms,
        clock.now_ms,
        refresh_expires_at,
        refresh_expires_at + clock.token_tail,
    ])?;
    Ok(Refreshed::Issued {
        user_id,
        refresh_expires_at,
    })
}

/// The stored refresh tokens of session `sid`, every generation.
fn stored_tokens(conn: &Connection, sid: &str) -> Result<Vec<StoredToken>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT hash, generation, expires_at FROM refresh_tokens WHERE session_id = ?1",
        )?
        .query_map([sid], |row| {
            Ok(StoredToken {
                hash: row.get(0)?,
                generation: row.get(1)?,
                expires_at: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?)
}

/// The user, current generation and expiry (the sooner of its refresh
/// token's and its maximum age) of session `sid` if it is active at `now_s`.
pub fn active_session(
    conn: &Connection,
    ends: Ends<'_>,
    sid: &str,
    now_s: i64,
) -> Result<Option<(i64, i64, i64)>, StoreError> {
    let found = conn
        .prepare_cached(
            "SELECT user_id, generation, min(refresh_expires_at, max_expires_at) FROM sessions
             WHERE id = ?1 AND ended_at IS NULL AND refresh_expires_at > ?2 AND max_expires_at > ?2",
        )?
        .query_row(params![sid, now_s], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    match found {
        Some(session) if !ends.has(conn, sid)? => Ok(Some(session)),
        _ => Ok(None),
    }
}

/// What `presented` is, if it is a current refresh token of an active
/// session at `now_s` ([`refresh::find_current`]). Reads only.
pub fn current_token(
    conn: &Connection,
    ends: Ends<'_>,
    presented: &refresh::Presented,
    now_s: i64,
) -> Result<Option<RefreshTokenState>, StoreError> {
    let Some((user_id, generation, _)) = active_session(conn, ends, &presented.sid, now_s)? else {
        return Ok(None);
    };
    let tokens = stored_tokens(conn, &presented.sid)?;
    Ok(
        refresh::find_current(&presented.hash, &tokens, generation, now_s).map(|token| {
            RefreshTokenState {
                user_id,
                sid: presented.sid.clone(),
                expires_at: token.expires_at,
            }
        }),
    )
}

/// Whether `presented` is a stored refresh token, of any generation, of a
/// session active at `now_s` ([`refresh::is_any`]). Reads only.
pub fn is_known_token(
    conn: &Connection,
    ends: Ends<'_>,
    presented: &refresh::Presented,
    now_s: i64,
) -> Result<bool, StoreError> {
    if active_session(conn, ends, &presented.sid, now_s)?.is_none() {
        return Ok(false);
    }
    Ok(refresh::is_any(
        &presented.hash,
        &stored_tokens(conn, &presented.sid)?,
    ))
}

/// Rotates the refresh token of session `sid` of `user_id` outright (a
/// password change hands the caller a new pair): the new token is current,
/// every earlier one previous or older. `None` if the session is not active.
pub fn rotate(
    conn: &Connection,
    ends: Ends<'_>,
    sid: &str,
    user_id: i64,
    new_hash: &TokenHash,
    clock: &Clock,
) -> Result<Option<i64>, StoreError> {
    let now_s = clock.now_s();
    let session = conn
        .prepare_cached(
            "SELECT generation, max_expires_at FROM sessions
             WHERE id = ?1 AND user_id = ?2 AND ended_at IS NULL
               AND refresh_expires_at > ?3 AND max_expires_at > ?3",
        )?
        .query_row(params![sid, user_id, now_s], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?;
    let Some((generation, max_expires_at)) = session else {
        return Ok(None);
    };
    if ends.has(conn, sid)? {
        return Ok(None);
    }
    let refresh_expires_at = (now_s + clock.refresh_ttl).min(max_expires_at);
    insert_token(conn, sid, generation + 1, new_hash, refresh_expires_at)?;
    conn.prepare_cached(
        "UPDATE sessions SET generation = ?2, rotated_at_ms = ?3, last_used_at_ms = ?3,
             refresh_expires_at = max(refresh_expires_at, ?4),
             purge_after = max(purge_after, ?5)
         WHERE id = ?1",
    )?
    .execute(params![
        sid,
        generation + 1,
        clock.now_ms,
        refresh_expires_at,
        refresh_expires_at + clock.token_tail,
    ])?;
    Ok(Some(refresh_expires_at))
}

/// Ends every active session of `user_id` except `keep`, in place (these
/// ends are rare and per user); returns how many were active.
pub fn end_all(
    conn: &Connection,
    ends: Ends<'_>,
    user_id: i64,
    keep: Option<&str>,
    clock: &Clock,
) -> Result<usize, StoreError> {
    let now_s = clock.now_s();
    let candidates = conn
        .prepare_cached(
            "SELECT id FROM sessions
             WHERE user_id = ?1 AND ended_at IS NULL
               AND refresh_expires_at > ?2 AND max_expires_at > ?2
               AND (?3 IS NULL OR id <> ?3)",
        )?
        .query_map(params![user_id, now_s, keep], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut active = 0;
    let mut update =
        conn.prepare_cached("UPDATE sessions SET ended_at = ?2, purge_after = ?3 WHERE id = ?1")?;
    for sid in &candidates {
        if !ends.has(conn, sid)? {
            active += 1;
        }
        update.execute(params![sid, now_s, now_s + clock.token_tail])?;
    }
    Ok(active)
}

/// The state of session `sid`, for the per-request lookup.
pub fn state(
    conn: &Connection,
    ends: Ends<'_>,
    sid: &str,
) -> Result<Option<SessionState>, StoreError> {
    let found = conn
        .prepare_cached(
            "SELECT user_id, ended_at IS NOT NULL, min(refresh_expires_at, max_expires_at)
             FROM sessions WHERE id = ?1",
        )?
        .query_row([sid], |row| {
            Ok(SessionState {
                user_id: row.get(0)?,
                ended: row.get(1)?,
                expires_at: row.get(2)?,
            })
        })
        .optional()?;
    match found {
        Some(state) if !state.ended && ends.has(conn, sid)? => Ok(Some(SessionState {
            ended: true,
            ..state
        })),
        other => Ok(other),
    }
}

/// The active sessions of `user_id`, newest first.
pub fn list_active(
    conn: &Connection,
    ends: Ends<'_>,
    user_id: i64,
    now_s: i64,
) -> Result<Vec<SessionRow>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT id, created_at_ms, last_used_at_ms, min(refresh_expires_at, max_expires_at),
                    user_agent, ip
             FROM sessions
             WHERE user_id = ?1 AND ended_at IS NULL
               AND refresh_expires_at > ?2 AND max_expires_at > ?2
             ORDER BY created_at_ms DESC, id DESC",
        )?
        .query_map(params![user_id, now_s], |row| {
            Ok(SessionRow {
                id: row.get(0)?,
                created_at_ms: row.get(1)?,
                last_used_at_ms: row.get(2)?,
                expires_at: row.get(3)?,
                user_agent: row.get(4)?,
                ip: row.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let snapshot;
    let ends = match ends.view {
        View::Committed => {
            snapshot = ends.denylist.snapshot(conn)?;
            Ends {
                view: View::Snapshot(&snapshot),
                ..ends
            }
        }
        _ => ends,
    };
    let mut active = Vec::with_capacity(rows.len());
    for row in rows {
        if !ends.has(conn, &row.id)? {
            active.push(row);
        }
    }
    Ok(active)
}

/// Deletes sessions no access token can name any more, and refresh tokens
/// that have expired. Returns (sessions, refresh tokens) deleted.
pub fn purge(conn: &Connection, now_s: i64) -> Result<(usize, usize), StoreError> {
    let tokens = conn
        .prepare_cached("DELETE FROM refresh_tokens WHERE expires_at < ?1")?
        .execute([now_s])?;
    let sessions = conn
        .prepare_cached("DELETE FROM sessions WHERE purge_after < ?1")?
        .execute([now_s])?;
    Ok((sessions, tokens))
}
