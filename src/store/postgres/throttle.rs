//! Login throttling shared by every process on one PostgreSQL database: the
//! same rules as [`crate::auth::throttle`], with the failures kept in the
//! `login_failures` table instead of one process's memory.
//!
//! A login *reserves* its attempt before the password is checked: in one
//! transaction, under transaction-level advisory locks on its e-mail
//! address and on its client address (always in that order, so two
//! reservations never wait on each other in a circle), the failures in the
//! window are counted and, below the limit, one row per key is inserted. The
//! attempt counts as a failure from then on; a login that succeeds deletes
//! the e-mail address's rows and takes its own client row back. An attempt
//! never resolved (a `503`, a dropped request) stays a failure.
//!
//! E-mail addresses are kept as SHA-256 digests (no address an attacker
//! typed is stored), client addresses as their [`ClientKey`] (an IPv4
//! address or an IPv6 /64 network), as the in-memory throttle counts them.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Db;
use crate::auth::throttle::ClientKey;
use crate::store::StoreError;

/// The limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures allowed per e-mail address within the window.
    pub per_email: u32,
    /// Failures allowed per client address within the window.
    pub per_client: u32,
    /// Length of the window, milliseconds.
    pub window_ms: i64,
}

const EMAIL: i16 = 1;
const CLIENT: i16 = 2;

/// A login attempt counted as a failure until [`Db`]'s owner reports that
/// it succeeded (see [`crate::store::Store::login_succeeded`]).
#[derive(Debug)]
pub struct LoginAttempt {
    email_key: Vec<u8>,
    client_row: Option<i64>,
}

/// What a reservation got.
#[derive(Debug)]
pub enum Reserved {
    /// The attempt is counted; check the password.
    Attempt(LoginAttempt),
    /// A limit is reached: refuse (`429`) and say to wait this long.
    Wait(Duration),
}

fn email_key(email: &str) -> Vec<u8> {
    Sha256::digest(email.as_bytes()).to_vec()
}

fn client_key(client: ClientKey) -> Vec<u8> {
    match client {
        ClientKey::V4(octets) => octets.to_vec(),
        ClientKey::V6Network(network) => network.to_be_bytes().to_vec(),
    }
}

/// The advisory-lock key of a throttle key.
fn lock_key(key: &[u8]) -> i32 {
    let digest = Sha256::digest(key);
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Reserves an attempt for `email` (lower-cased) from `client`.
pub async fn reserve(
    db: &Db,
    limits: Limits,
    email: &str,
    client: Option<ClientKey>,
) -> Result<Reserved, StoreError> {
    let email_key = email_key(email);
    let client_key = client.map(client_key);
    pg_write!(db, |tx| {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let since = now_ms - limits.window_ms;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1::INT, $2::INT)")
            .await?;
        let recent = tx
            .prepare_cached(
                "SELECT at_ms FROM login_failures WHERE kind = $1 AND key = $2 AND at_ms > $3
                 ORDER BY at_ms DESC LIMIT $4",
            )
            .await?;
        let mut keys = vec![(EMAIL, &email_key, limits.per_email)];
        if let Some(key) = &client_key {
            keys.push((CLIENT, key, limits.per_client));
        }
        let mut wait_ms = 0i64;
        for (kind, key, limit) in &keys {
            tx.execute(&lock, &[&i32::from(*kind), &lock_key(key)])
                .await?;
            let times = tx
                .query(&recent, &[kind, key, &since, &i64::from(*limit)])
                .await?;
            if times.len() >= *limit as usize {
                // The block lifts when the oldest of the newest `limit`
                // failures leaves the window.
                let lifting: i64 = times[times.len() - 1].get(0);
                wait_ms = wait_ms.max(lifting + limits.window_ms - now_ms);
            }
        }
        if wait_ms > 0 {
            return Ok(Reserved::Wait(Duration::from_millis(wait_ms as u64)));
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO login_failures (kind, key, at_ms) VALUES ($1, $2, $3) RETURNING id",
            )
            .await?;
        tx.execute(&insert, &[&EMAIL, &email_key, &now_ms]).await?;
        let client_row = match &client_key {
            Some(key) => Some(
                tx.query_one(&insert, &[&CLIENT, key, &now_ms])
                    .await?
                    .get::<_, i64>(0),
            ),
            None => None,
        };
        Ok(Reserved::Attempt(LoginAttempt {
            email_key: email_key.clone(),
            client_row,
        }))
    })
}

/// The attempt's login succeeded: the e-mail address's failures are
/// cleared and the attempt is taken back from the client's count.
pub async fn succeeded(db: &Db, attempt: LoginAttempt) -> Result<(), StoreError> {
    pg_write!(db, |tx| {
        let clear = tx
            .prepare_cached("DELETE FROM login_failures WHERE kind = $1 AND key = $2")
            .await?;
        tx.execute(&clear, &[&EMAIL, &attempt.email_key]).await?;
        if let Some(id) = attempt.client_row {
            let take_back = tx
                .prepare_cached("DELETE FROM login_failures WHERE id = $1")
                .await?;
            tx.execute(&take_back, &[&id]).await?;
        }
        Ok(())
    })
}

/// Deletes failures that have left the window.
pub async fn purge(db: &Db, limits: Limits) -> Result<usize, StoreError> {
    let before = chrono::Utc::now().timestamp_millis() - limits.window_ms;
    pg_write!(db, |tx| {
        let stmt = tx
            .prepare_cached("DELETE FROM login_failures WHERE at_ms <= $1")
            .await?;
        Ok(tx.execute(&stmt, &[&before]).await? as usize)
    })
}
