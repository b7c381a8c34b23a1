//! Reader threads: where the per-request lookups (denylist, current user,
//! health) run, off the async executor.
//!
//! A handful of threads, each with its own connection, take jobs from one
//! queue. A thread takes every job waiting in the queue and runs them inside a
//! single read transaction, so under load one wake-up and one snapshot serve
//! many requests (tokio's general blocking pool would wake a thread per job).
//! A job queued after a revocation was committed always runs in a later
//! snapshot than that commit, because the batch is taken from the queue
//! before its transaction starts.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::pool::LiveConnection;
use crate::store::StoreError;

/// Most jobs run in one read transaction.
const MAX_BATCH: usize = 64;

/// A job gets the connection, or `None` while the database file is gone.
type Job = Box<dyn FnOnce(Option<&Connection>) + Send>;

/// Handle on the reader threads.
#[derive(Clone)]
pub struct Readers {
    queue: Sender<Job>,
    timeout: Duration,
}

impl Readers {
    /// Starts `threads` reader threads on their own connections to `path`.
    /// A job not answered within `timeout` (queued behind a stuck read, or
    /// waiting for a lock) fails instead of hanging its request.
    pub fn start(path: &Path, threads: usize, timeout: Duration) -> Result<Self, StoreError> {
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        for index in 0..threads.max(1) {
            let conn = LiveConnection::open(path, timeout)?;
            let jobs = jobs.clone();
            thread::Builder::new()
                .name(format!("db-reader-{index}"))
                .spawn(move || read_loop(conn, jobs))
                .map_err(|e| StoreError::Task(e.to_string()))?;
        }
        Ok(Self { queue, timeout })
    }

    /// Runs `work` on a reader thread and returns its result.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => span.in_scope(|| work(conn)),
                None => Err(StoreError::FileGone),
            };
            let _ = reply.send(result);
        });
        self.queue
            .send(job)
            .map_err(|_| StoreError::Task("the reader threads have stopped".into()))?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Task("a database read was abandoned".into())),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

fn read_loop(mut live: LiveConnection, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::with_capacity(8);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // One stat of the path per batch: a deleted or replaced file fails
        // the batch (503) rather than being read through a stale handle.
        let conn = match live.get() {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "database unavailable to readers");
                None
            }
        };
        let shared = batch.len() > 1 && conn.is_some_and(|c| statement(c, "BEGIN").is_ok());
        for job in batch {
            // A panicking job loses only its own answer (its caller gets an
            // error, i.e. 503), not the thread.
            let _ = catch_unwind(AssertUnwindSafe(|| job(conn)));
        }
        if let Some(conn) = conn.filter(|_| shared) {
            if statement(conn, "COMMIT").is_err() {
                let _ = statement(conn, "ROLLBACK");
            }
        }
    }
}

fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::pool;

    #[tokio::test]
    async fn a_read_queued_behind_a_stuck_one_fails_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let timeout = Duration::from_millis(200);
        drop(pool::open(&path, timeout).unwrap());
        let readers = Readers::start(&path, 1, timeout).unwrap();

        // Occupy the only reader thread with a read stuck for a second.
        let stuck = readers.clone();
        let (started, running) = oneshot::channel();
        let blocker = tokio::spawn(async move {
            stuck
                .run(move |_| {
                    let _ = started.send(());
                    std::thread::sleep(Duration::from_secs(1));
                    Ok(())
                })
                .await
        });
        running.await.unwrap();

        let started = std::time::Instant::now();
        let queued = readers.run(crate::store::sqlite::denylist::check).await;
        assert!(matches!(queued, Err(StoreError::Timeout(_))), "{queued:?}");
        assert!(started.elapsed() < Duration::from_millis(800));
        // The stuck read itself also gave up instead of hanging its caller.
        assert!(matches!(
            blocker.await.unwrap(),
            Err(StoreError::Timeout(_))
        ));
    }
}
