//! The per-request lookup of a token's facts on PostgreSQL: the denylist
//! row, the session and the user with their global-logout mark, read by one
//! statement (so from one snapshot).
//!
//! Every lookup asks the database: a verdict must reflect everything any
//! process acknowledged before the request arrived, and only the database
//! knows that. To keep that affordable, lookups are batched: a collector
//! task takes every lookup queued while the previous queries ran and asks
//! for all of them in one round trip (`unnest` of arrays). Each batch's
//! statement starts after each of its requests was queued, so it sees every
//! commit acknowledged before them.
//!
//! The one thing remembered is a revocation: a `jti` in the denylist stays
//! there until its row's `purge_after`, after which no token carrying it
//! can verify. Nothing that says "not revoked" is ever reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::Row;

use super::Db;
use crate::store::{Lookup, LookupKey, SessionState, StoreError, User, UserFacts};

/// The lookup of many tokens at once: row `i` answers key `i`.
pub const FACTS_SQL: &str = "
    SELECT k.i,
           r.purge_after,
           s.user_id, s.ended_at IS NOT NULL, LEAST(s.refresh_expires_at, s.max_expires_at),
           u.id, u.name, u.email, u.created_at, u.tokens_invalid_before_us
    FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) WITH ORDINALITY AS k (jti, sid, uid, i)
    LEFT JOIN revoked_tokens r ON r.jti = k.jti
    LEFT JOIN sessions s ON s.id = k.sid
    LEFT JOIN users u ON u.id = k.uid";

/// The parameters of [`FACTS_SQL`] for `keys`.
pub fn facts_params(keys: &[&LookupKey]) -> (Vec<String>, Vec<Option<String>>, Vec<i64>) {
    (
        keys.iter().map(|k| k.jti.clone()).collect(),
        keys.iter().map(|k| k.sid.clone()).collect(),
        keys.iter().map(|k| k.user_id).collect(),
    )
}

/// The answers of [`FACTS_SQL`] in key order, with each revocation's
/// `purge_after`.
pub fn facts_from_rows(rows: &[Row], count: usize) -> Result<Vec<(Lookup, i64)>, StoreError> {
    let mut found: Vec<Option<(Lookup, i64)>> = vec![None; count];
    for row in rows {
        let index = row.get::<_, i64>(0) as usize;
        let purge_after: Option<i64> = row.get(1);
        let session = row.get::<_, Option<i64>>(2).map(|user_id| SessionState {
            user_id,
            ended: row.get(3),
            expires_at: row.get(4),
        });
        let user = row.get::<_, Option<i64>>(5).map(|id| {
            Arc::new(UserFacts::new(
                User {
                    id,
                    name: row.get(6),
                    email: row.get(7),
                    created_at: row.get(8),
                },
                row.get(9),
            ))
        });
        if let Some(slot) = index.checked_sub(1).and_then(|i| found.get_mut(i)) {
            *slot = Some((
                Lookup {
                    revoked: purge_after.is_some(),
                    session,
                    user,
                },
                purge_after.unwrap_or(0),
            ));
        }
    }
    found
        .into_iter()
        .map(|f| f.ok_or_else(|| StoreError::Postgres("a lookup row is missing".into())))
        .collect()
}

/// Most lookups in one statement.
const MAX_BATCH: usize = 512;

/// Most batch statements in flight at once.
const MAX_IN_FLIGHT: usize = 4;

/// Most revocations remembered.
const MAX_REMEMBERED: usize = 16_384;

struct Job {
    key: LookupKey,
    reply: oneshot::Sender<Result<Lookup, String>>,
}

/// Handle on the collector task.
pub struct Lookups {
    queue: mpsc::UnboundedSender<Job>,
    revoked: Arc<Mutex<HashMap<String, i64>>>,
}

impl Lookups {
    /// Starts the collector on the current runtime; it stops when this
    /// handle is dropped.
    pub fn start(db: Db) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let revoked = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(collect(db, jobs, revoked.clone()));
        Self { queue, revoked }
    }

    /// The facts of one token: a remembered revocation, or a database read
    /// that starts after this call.
    pub async fn lookup(
        &self,
        key: &LookupKey,
        now_s: i64,
        timeout: std::time::Duration,
    ) -> Result<Lookup, StoreError> {
        {
            let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            if revoked.get(&key.jti).is_some_and(|&until| until >= now_s) {
                return Ok(Lookup {
                    revoked: true,
                    session: None,
                    user: None,
                });
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                key: key.clone(),
                reply,
            })
            .map_err(|_| StoreError::WriterStopped)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Ok(lookup))) => Ok(lookup),
            Ok(Ok(Err(message))) => Err(StoreError::Postgres(message)),
            Ok(Err(_)) => Err(StoreError::WriterStopped),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }
}

async fn collect(
    db: Db,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    revoked: Arc<Mutex<HashMap<String, i64>>>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = jobs.recv().await {
        // Lookups queued while we wait for a free slot join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let db = db.clone();
        let revoked = revoked.clone();
        tokio::spawn(async move {
            let _permit = permit;
            run_batch(&db, batch, &revoked).await;
        });
    }
}

async fn run_batch(db: &Db, batch: Vec<Job>, revoked: &Mutex<HashMap<String, i64>>) {
    let keys: Vec<&LookupKey> = batch.iter().map(|job| &job.key).collect();
    let (jtis, sids, uids) = facts_params(&keys);
    let count = keys.len();
    let result = pg_read!(db, |client| {
        let stmt = client.prepare_cached(FACTS_SQL).await?;
        let rows = client.query(&stmt, &[&jtis, &sids, &uids]).await?;
        facts_from_rows(&rows, count)
    });
    match result {
        Ok(found) => {
            let mut remembered = revoked.lock().unwrap_or_else(|e| e.into_inner());
            for (job, (lookup, purge_after)) in batch.into_iter().zip(found) {
                if lookup.revoked {
                    if remembered.len() >= MAX_REMEMBERED {
                        remembered.clear();
                    }
                    remembered.insert(job.key.jti.clone(), purge_after);
                }
                let _ = job.reply.send(Ok(lookup));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for job in batch {
                let _ = job.reply.send(Err(message.clone()));
            }
        }
    }
}
