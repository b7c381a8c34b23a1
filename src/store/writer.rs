//! The group-commit writer: every write whose success answer promises
//! durability (a revocation, and the probe behind `/health`) goes through one
//! thread that owns its own connection.
//!
//! It takes every write queued while the previous commit was running, applies
//! them in one transaction, commits (WAL + `synchronous=FULL`, so the commit
//! is on disk when it returns) and only then answers each caller. One client
//! gets its own commit immediately (no waiting window); many concurrent
//! clients share the cost of one fsync.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::denylist::{self, Revocation};
use super::pool::LiveConnection;
use super::StoreError;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 4096;

/// How recent a successful commit must be for `/health` to trust it without
/// a probe of its own.
const TRUSTED_COMMIT_AGE: Duration = Duration::from_secs(1);

/// One durable write.
enum Write {
    /// Add a `jti` to the denylist, to be kept until `purge_after`.
    Revoke { jti: String, purge_after: i64 },
    /// Write one row, to learn whether commits succeed (for `/health`).
    Probe,
}

/// What a write did.
enum Outcome {
    Revocation(Revocation),
    Probed,
}

struct Request {
    write: Write,
    reply: oneshot::Sender<Result<Outcome, String>>,
}

/// When commits last succeeded and failed, in ms since the writer started
/// (0: never).
#[derive(Default)]
struct Status {
    last_ok_ms: AtomicU64,
    last_failed_ms: AtomicU64,
}

/// Handle on the writer thread.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Request>,
    timeout: Duration,
    leeway: i64,
    status: Arc<Status>,
    started: Instant,
}

impl Writer {
    /// Starts the writer thread on its own connection to `path`. A write not
    /// committed within `timeout` is answered as a failure (`503`); it may
    /// still commit later, which only errs on the side of revoking. `leeway`
    /// is the clock leeway of token checks: a revoked token can verify until
    /// its `exp` plus that, so its row is kept until then.
    ///
    /// The returned handle finishes when every clone of the `Writer` is gone:
    /// the writer then commits what is queued, checkpoints the WAL into the
    /// database file (so the next start does not have to replay it) and stops.
    pub fn start(
        path: &Path,
        timeout: Duration,
        leeway: u64,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let conn = LiveConnection::open(path, timeout)?;
        let (queue, requests) = mpsc::unbounded_channel();
        let status = Arc::new(Status::default());
        let started = Instant::now();
        let thread_status = status.clone();
        let thread = thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || write_loop(conn, requests, &thread_status, started))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok((
            Self {
                queue,
                timeout,
                leeway: leeway as i64,
                status,
                started,
            },
            thread,
        ))
    }

    /// Adds `jti` (of a token expiring at `exp`, Unix seconds) to the
    /// denylist and returns once the commit is durable. The row is kept
    /// until `exp` plus this server's leeway: the moment it may go is fixed
    /// now, so a purge run with another leeway cannot bring the token back.
    pub async fn revoke(&self, jti: &str, exp: i64) -> Result<Revocation, StoreError> {
        let write = Write::Revoke {
            jti: jti.to_owned(),
            purge_after: exp.saturating_add(self.leeway),
        };
        match self.submit(write).await? {
            Outcome::Revocation(revocation) => Ok(revocation),
            Outcome::Probed => Err(StoreError::Task("unexpected writer answer".into())),
        }
    }

    /// Whether a write would be durable now: trusts a commit that succeeded
    /// within the last second (and has not failed since), otherwise commits a
    /// probe row and reports how that went.
    pub async fn check(&self) -> Result<(), StoreError> {
        let ok = self.status.last_ok_ms.load(Ordering::Acquire);
        let failed = self.status.last_failed_ms.load(Ordering::Acquire);
        let now = self.started.elapsed().as_millis() as u64;
        if ok != 0 && ok >= failed && now.saturating_sub(ok) < TRUSTED_COMMIT_AGE.as_millis() as u64
        {
            return Ok(());
        }
        self.submit(Write::Probe).await.map(|_| ())
    }

    async fn submit(&self, write: Write) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { write, reply })
            .map_err(|_| StoreError::WriterStopped)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(message))) => Err(StoreError::Task(message)),
            Ok(Err(_)) => Err(StoreError::WriterStopped),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

fn write_loop(
    mut live: LiveConnection,
    mut queue: mpsc::UnboundedReceiver<Request>,
    status: &Status,
    started: Instant,
) {
    let stamp = |at: &AtomicU64| {
        at.store(
            (started.elapsed().as_millis() as u64).max(1),
            Ordering::Release,
        )
    };
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
                stamp(&status.last_ok_ms);
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                stamp(&status.last_failed_ms);
                tracing::error!(error = %e, writes = batch.len(), "write batch failed");
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

fn write_batch(conn: &mut Connection, batch: &[Request]) -> Result<Vec<Outcome>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        outcomes.push(match &request.write {
            Write::Revoke { jti, purge_after } => {
                Outcome::Revocation(denylist::insert(&tx, jti, *purge_after)?)
            }
            Write::Probe => {
                tx.prepare_cached(
                    "INSERT INTO writer_probe (id, written_at) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                )?
                .execute([chrono::Utc::now().timestamp()])?;
                Outcome::Probed
            }
        });
    }
    tx.commit()?;
    Ok(outcomes)
}
