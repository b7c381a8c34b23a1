//! The revocation denylist: the `jti` of every logged-out token, with the
//! token's expiry so the row can be purged once the token is dead anyway.
//!
//! The interface is deliberately narrow ([`Denylist::revoke`],
//! [`is_revoked`], [`purge_expired`]) so that another storage
//! engine can slot in behind it without touching the routes.
//!
//! Revocations go through one writer thread that owns its own connection. It
//! takes every revocation queued while the previous commit was running, writes
//! them in one transaction, commits (WAL + `synchronous=FULL`, so the commit is
//! on disk when it returns) and only then answers each caller. One client gets
//! its own commit immediately (no waiting window); many concurrent clients
//! share the cost of one fsync.

use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::pool::LiveConnection;
use super::StoreError;

/// Most revocations written in one transaction.
const MAX_BATCH: usize = 4096;

/// Outcome of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The `jti` was added and the commit is durable.
    Revoked,
    /// The `jti` was already in the denylist.
    AlreadyRevoked,
}

struct Request {
    jti: String,
    expires_at: i64,
    reply: oneshot::Sender<Result<Revocation, String>>,
}

/// Handle on the denylist writer. Lookups are plain functions ([`is_revoked`])
/// run on the reader threads, next to the other per-request reads.
#[derive(Clone)]
pub struct Denylist {
    writer: mpsc::UnboundedSender<Request>,
    timeout: Duration,
}

impl Denylist {
    /// Starts the writer thread on its own connection to `path`. A revocation
    /// not committed within `timeout` is answered as a failure (`503`); it may
    /// still commit later, which only errs on the side of revoking.
    ///
    /// The returned handle finishes when every clone of the `Denylist` is
    /// gone: the writer then commits what is queued, checkpoints the WAL into
    /// the database file (so the next start does not have to replay it) and
    /// stops.
    pub fn start(path: &Path, timeout: Duration) -> Result<(Self, JoinHandle<()>), StoreError> {
        let conn = LiveConnection::open(path, timeout)?;
        let (writer, queue) = mpsc::unbounded_channel();
        let thread = thread::Builder::new()
            .name("denylist-writer".into())
            .spawn(move || write_loop(conn, queue))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok((Self { writer, timeout }, thread))
    }

    /// Adds `jti` (expiring at `expires_at`, Unix seconds) to the denylist and
    /// returns once the commit is durable.
    pub async fn revoke(&self, jti: &str, expires_at: i64) -> Result<Revocation, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Request {
                jti: jti.to_owned(),
                expires_at,
                reply,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(message))) => Err(StoreError::Task(message)),
            Ok(Err(_)) => Err(StoreError::WriterStopped),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

/// Whether `jti` is in the denylist, on a given connection.
pub fn is_revoked(conn: &Connection, jti: &str) -> Result<bool, StoreError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM revoked_tokens WHERE jti = ?1")?
        .query_row([jti], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

/// Deletes rows whose token expired before `cutoff` (Unix seconds; callers
/// pass now minus the clock leeway). Returns how many were deleted.
pub fn purge_expired(conn: &Connection, cutoff: i64) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM revoked_tokens WHERE expires_at < ?1")?
        .execute([cutoff])?)
}

/// Number of rows in the denylist.
pub fn len(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM revoked_tokens", [], |row| row.get(0))?)
}

fn write_loop(mut live: LiveConnection, mut queue: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // The path must still name the file we write to (see `pool`).
        match live.get_mut().and_then(|conn| write_batch(conn, &batch)) {
            Ok(outcomes) => {
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "revocation batch failed");
                for request in batch {
                    let _ = request.reply.send(Err(e.to_string()));
                }
                // The connection may be broken (I/O error, disk full): start
                // the next batch on a fresh one.
                live.reset();
            }
        }
    }
    // Shutting down: fold the WAL into the database file.
    if let Ok(conn) = live.get() {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[Request]) -> Result<Vec<Revocation>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2) ON CONFLICT (jti) DO NOTHING",
        )?;
        for request in batch {
            let inserted = insert.execute(params![request.jti, request.expires_at])?;
            outcomes.push(if inserted == 1 {
                Revocation::Revoked
            } else {
                Revocation::AlreadyRevoked
            });
        }
    }
    tx.commit()?;
    Ok(outcomes)
}
