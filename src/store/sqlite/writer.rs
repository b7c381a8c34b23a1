//! The group-commit writer: every write whose success answer promises
//! durability (revocations, logouts of every scope, sessions started,
//! rotated, revoked or ended, password changes, and the probe behind `/health`) goes
//! through one thread that owns its own connection. Writes that depend on the
//! caller's token re-check it inside the transaction ([`judge`]), and the
//! refresh rotation reads and writes its session there too: with one writer,
//! no two of them can interleave.
//!
//! The writer takes every write queued while it was busy, applies them in one
//! transaction and commits. The commit writes its WAL frames without waiting
//! for the disk (`synchronous=NORMAL` on this connection); the batch then
//! goes to a second thread, the syncer, which `fdatasync`s the WAL file and
//! only then answers each caller. One `fdatasync` makes every frame written
//! before it durable, which is what `synchronous=FULL` would do inside the
//! commit, so the promise is the same: no success answer before the write
//! is on disk. What changes is that the writer does not wait for the disk:
//! while the syncer waits for one fsync, the writer applies and commits the
//! next batches, and the fsync after them answers them all. One client gets
//! its own commit and fsync immediately (no waiting window); many concurrent
//! clients share the cost of one fsync.
//!
//! Reads inside the writer's later batches (the re-checks, the rotation)
//! see earlier batches before they are synced. That is safe: a later batch
//! is answered only after a later fsync, which covers the earlier batch too
//! (the WAL is written in order, and a checkpoint syncs the WAL before it
//! copies it into the database); and if a sync fails, every batch it was to
//! cover is answered as a failure.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::denylist::{session_key, Denylist, MergeRound, Pending, Revocation, View};
use super::pool::LiveConnection;
use super::sessions::{self, Clock, Ends};
use super::{lookup, users};
use crate::auth::refresh::{Presented, TokenHash};
use crate::auth::verdict::{judge, Refusal, TokenFacts};
use crate::store::{
    Checked, Lifetimes, LogoutScope, NewSession, PasswordChange, Refreshed, StoreError, TokenToEnd,
};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 4096;

/// How recent a successful commit must be for `/health` to trust it without
/// a probe of its own.
const TRUSTED_COMMIT_AGE: Duration = Duration::from_secs(1);

/// One durable write.
enum Write {
    /// Add a `jti` to the denylist, to be kept until `purge_after`.
    Revoke { jti: String, purge_after: i64 },
    /// Log a token out with a scope (re-checking it first).
    Logout {
        token: TokenToEnd,
        scope: LogoutScope,
    },
    /// Start a session (login).
    StartSession(NewSession),
    /// Apply the rotation rules to a presented refresh token.
    Refresh {
        presented: Presented,
        new_hash: TokenHash,
    },
    /// End one session of a user.
    EndSession { user_id: i64, sid: String },
    /// End the session of a presented refresh token (RFC 7009).
    RevokeRefresh(Presented),
    /// Change a password, with its consequences.
    ChangePassword(Box<PasswordChange>),
    /// Global logout of a user by e-mail address.
    RevokeUser { email: String, at_us: i64 },
    /// Write one row, to learn whether commits succeed (for `/health`).
    Probe,
}

/// What a write did.
enum Outcome {
    Revocation(Revocation),
    Logout(Checked<()>),
    SessionStarted(i64),
    Refreshed(Refreshed),
    SessionEnded(bool),
    RefreshRevoked(bool),
    PasswordChanged(Checked<i64>),
    UserRevoked(Option<usize>),
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

impl Status {
    /// Marks `at` (one of the two) with the time now.
    fn stamp(at: &AtomicU64, started: Instant) {
        at.store(
            (started.elapsed().as_millis() as u64).max(1),
            Ordering::Release,
        );
    }
}

/// Handle on the writer thread.
#[derive(Clone)]
pub struct Writer {
    queue: Sender<Request>,
    timeout: Duration,
    lifetimes: Lifetimes,
    status: Arc<Status>,
    started: Instant,
}

impl Writer {
    /// Starts the writer thread on its own connection to `path`. A write not
    /// committed within `timeout` is answered as a failure (`503`); it may
    /// still commit later, which only errs on the side of revoking (a
    /// session or refresh token committed after its caller gave up is never
    /// handed out). `lifetimes` holds the leeway of token checks (a revoked
    /// token can verify until its `exp` plus that, so its row is kept until
    /// then) and the session rules.
    ///
    /// The returned handle finishes when every clone of the `Writer` is gone:
    /// the writer then commits what is queued, checkpoints the WAL into the
    /// database file (so the next start does not have to replay it) and stops.
    pub fn start(
        path: &Path,
        timeout: Duration,
        lifetimes: Lifetimes,
        denylist: Arc<Denylist>,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        Self::start_with(path, timeout, lifetimes, denylist, Arc::new(sync_wal))
    }

    fn start_with(
        path: &Path,
        timeout: Duration,
        lifetimes: Lifetimes,
        denylist: Arc<Denylist>,
        sync: SyncFn,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let conn = LiveConnection::open_writer(path, timeout)?;
        let (queue, requests) = crossbeam_channel::unbounded();
        let status = Arc::new(Status::default());
        let started = Instant::now();
        let (to_syncer, committed) = crossbeam_channel::unbounded();
        let sync_failed = Arc::new(AtomicBool::new(false));
        let syncer = {
            let status = status.clone();
            let sync_failed = sync_failed.clone();
            thread::Builder::new()
                .name("db-syncer".into())
                .spawn(move || sync_loop(committed, &status, started, &sync_failed, &*sync))
                .map_err(|e| StoreError::Task(e.to_string()))?
        };
        let syncer = Syncer {
            queue: to_syncer,
            failed: sync_failed,
            thread: syncer,
        };
        let thread_status = status.clone();
        let thread = thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || {
                let context = Context {
                    status: &thread_status,
                    started,
                    lifetimes: &lifetimes,
                    denylist: &denylist,
                };
                write_loop(conn, requests, &context, syncer)
            })
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok((
            Self {
                queue,
                timeout,
                lifetimes,
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
            purge_after: exp.saturating_add(self.lifetimes.leeway),
        };
        match self.submit(write).await? {
            Outcome::Revocation(revocation) => Ok(revocation),
            _ => Err(unexpected()),
        }
    }

    /// Logs a token out with `scope` (see [`crate::store::Store::logout`]).
    pub async fn logout(
        &self,
        token: TokenToEnd,
        scope: LogoutScope,
    ) -> Result<Checked<()>, StoreError> {
        match self.submit(Write::Logout { token, scope }).await? {
            Outcome::Logout(checked) => Ok(checked),
            _ => Err(unexpected()),
        }
    }

    /// Starts a session; returns its refresh token's expiry.
    pub async fn start_session(&self, session: NewSession) -> Result<i64, StoreError> {
        match self.submit(Write::StartSession(session)).await? {
            Outcome::SessionStarted(expires_at) => Ok(expires_at),
            _ => Err(unexpected()),
        }
    }

    /// Applies the rotation rules to a presented refresh token.
    pub async fn refresh(
        &self,
        presented: Presented,
        new_hash: TokenHash,
    ) -> Result<Refreshed, StoreError> {
        match self
            .submit(Write::Refresh {
                presented,
                new_hash,
            })
            .await?
        {
            Outcome::Refreshed(refreshed) => Ok(refreshed),
            _ => Err(unexpected()),
        }
    }

    /// Ends one active session of a user; `false` if there is none such.
    pub async fn end_session(&self, user_id: i64, sid: String) -> Result<bool, StoreError> {
        match self.submit(Write::EndSession { user_id, sid }).await? {
            Outcome::SessionEnded(ended) => Ok(ended),
            _ => Err(unexpected()),
        }
    }

    /// Ends the session of a presented refresh token of any generation;
    /// `false` if it is no stored token of an active session.
    pub async fn revoke_refresh(&self, presented: Presented) -> Result<bool, StoreError> {
        match self.submit(Write::RevokeRefresh(presented)).await? {
            Outcome::RefreshRevoked(ended) => Ok(ended),
            _ => Err(unexpected()),
        }
    }

    /// Changes a password (see [`crate::store::Store::change_password`]).
    pub async fn change_password(
        &self,
        change: PasswordChange,
    ) -> Result<Checked<i64>, StoreError> {
        match self.submit(Write::ChangePassword(Box::new(change))).await? {
            Outcome::PasswordChanged(checked) => Ok(checked),
            _ => Err(unexpected()),
        }
    }

    /// Global logout of the user with this e-mail address.
    pub async fn revoke_user(
        &self,
        email: String,
        at_us: i64,
    ) -> Result<Option<usize>, StoreError> {
        match self.submit(Write::RevokeUser { email, at_us }).await? {
            Outcome::UserRevoked(ended) => Ok(ended),
            _ => Err(unexpected()),
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

fn unexpected() -> StoreError {
    StoreError::Task("the writer answered another kind of write".into())
}

/// What the writer thread works with.
struct Context<'a> {
    status: &'a Status,
    started: Instant,
    lifetimes: &'a Lifetimes,
    denylist: &'a Denylist,
}

/// One batch's transaction and what it needs.
struct Batch<'a> {
    conn: &'a Connection,
    clock: Clock,
    lifetimes: &'a Lifetimes,
    denylist: &'a Denylist,
    pending: Pending,
}

impl Batch<'_> {
    /// Sessions ended through the log, as this batch sees them.
    fn ends(&self) -> Ends<'_> {
        Ends {
            denylist: self.denylist,
            view: View::Batch(&self.pending),
        }
    }
}

/// Ends session `sid` (of `user_id`, when given: a user may end only their
/// own) by appending its end to the denylist's log. The entry is due when no
/// access token naming the session can verify any more (now plus the token
/// tail); the purge then deletes the session's row with it, never the entry
/// alone (see `super::purge`). Returns whether an active session ended.
fn end_session(batch: &mut Batch<'_>, sid: &str, user_id: Option<i64>) -> Result<bool, StoreError> {
    let now_s = batch.clock.now_s();
    let Some((owner, _, _)) = sessions::active_session(batch.conn, batch.ends(), sid, now_s)?
    else {
        return Ok(false);
    };
    if user_id.is_some_and(|id| id != owner) {
        return Ok(false);
    }
    let purge_after = now_s.saturating_add(batch.clock.token_tail);
    batch.denylist.insert(
        batch.conn,
        &mut batch.pending,
        &session_key(sid),
        purge_after,
    )?;
    Ok(true)
}

/// How the syncer makes a WAL file durable ([`sync_wal`]; tests put
/// themselves in between).
type SyncFn = Arc<dyn Fn(&File) -> Result<(), StoreError> + Send + Sync>;

/// A committed batch on its way to the syncer: the callers with their
/// outcomes, and the WAL file the commit wrote its frames to.
struct Committed {
    answers: Vec<(oneshot::Sender<Result<Outcome, String>>, Outcome)>,
    wal: Arc<File>,
}

/// The writer's side of the syncer thread.
struct Syncer {
    queue: Sender<Committed>,
    /// Set by the syncer when a sync failed: the connection (and its page
    /// cache) may no longer match the disk, so the writer starts afresh.
    failed: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn write_loop(
    mut live: LiveConnection,
    queue: Receiver<Request>,
    context: &Context<'_>,
    syncer: Syncer,
) {
    // The merge of the revocation log under way, if any.
    let mut merging = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if syncer.failed.swap(false, Ordering::AcqRel) {
            live.reset();
            merging = None;
        }
        // The path must still name the file we write to (see `pool`).
        let clock = Clock::at(chrono::Utc::now().timestamp_millis(), context.lifetimes);
        let written = live
            .get_mut()
            .and_then(|conn| write_batch(conn, &batch, clock, context))
            .and_then(|outcomes| Ok((outcomes, live.wal()?)));
        match written {
            Ok((outcomes, wal)) => {
                let answers = batch
                    .into_iter()
                    .map(|request| request.reply)
                    .zip(outcomes)
                    .collect();
                // The syncer answers once the WAL is on disk. It outlives
                // this loop (joined below), so the send cannot fail.
                let _ = syncer.queue.send(Committed { answers, wal });
                // Between batches, never inside one.
                if let Ok(conn) = live.get_mut() {
                    merge_step(conn, &mut merging, context.denylist);
                }
            }
            Err(e) => {
                Status::stamp(&context.status.last_failed_ms, context.started);
                tracing::error!(error = %e, writes = batch.len(), "write batch failed");
                for request in batch {
                    let _ = request.reply.send(Err(e.to_string()));
                }
                // The connection may be broken (I/O error, disk full): start
                // the next batch on a fresh one.
                live.reset();
                merging = None;
            }
        }
    }
    // Shutting down: answer what is committed, then fold the WAL into the
    // database file.
    drop(syncer.queue);
    let _ = syncer.thread.join();
    if let Ok(conn) = live.get() {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
    }
}

/// The syncer: takes every batch committed since its last sync, makes the
/// WAL durable with one `fdatasync` (a batch sent here was committed before
/// this sync begins, so the sync covers it) and answers their callers, or
/// answers them all with the failure.
fn sync_loop(
    committed: Receiver<Committed>,
    status: &Status,
    started: Instant,
    sync_failed: &AtomicBool,
    sync: &(dyn Fn(&File) -> Result<(), StoreError> + Send + Sync),
) {
    while let Ok(first) = committed.recv() {
        let mut group = vec![first];
        while let Ok(more) = committed.try_recv() {
            group.push(more);
        }
        // Usually one WAL file; two after the writer reconnected.
        let mut synced: Vec<&Arc<File>> = Vec::with_capacity(1);
        let mut result = Ok(());
        for batch in &group {
            if result.is_ok() && !synced.iter().any(|w| Arc::ptr_eq(w, &batch.wal)) {
                result = sync(&batch.wal);
                synced.push(&batch.wal);
            }
        }
        match result {
            Ok(()) => {
                Status::stamp(&status.last_ok_ms, started);
                for batch in group {
                    for (reply, outcome) in batch.answers {
                        let _ = reply.send(Ok(outcome));
                    }
                }
            }
            Err(e) => {
                Status::stamp(&status.last_failed_ms, started);
                sync_failed.store(true, Ordering::Release);
                let writes: usize = group.iter().map(|b| b.answers.len()).sum();
                tracing::error!(error = %e, writes, "syncing the write-ahead log failed");
                let message = e.to_string();
                for batch in group {
                    for (reply, _) in batch.answers {
                        let _ = reply.send(Err(message.clone()));
                    }
                }
            }
        }
    }
}

/// Makes every frame written to `wal` so far durable; refuses a WAL that
/// is no longer linked at any path (deleted behind SQLite's back: what is
/// synced there would not be found again).
fn sync_wal(wal: &File) -> Result<(), StoreError> {
    wal.sync_data()
        .map_err(|e| StoreError::Sync(e.to_string()))?;
    match wal.metadata() {
        Ok(meta) if meta.nlink() > 0 => Ok(()),
        Ok(_) => Err(StoreError::Sync("the file was deleted".into())),
        Err(e) => Err(StoreError::Sync(e.to_string())),
    }
}

/// One step of merging the revocation log into `revoked_tokens` (see
/// [`super::denylist::MergeRound`]), starting a round when one is due; a
/// round of at most one step's rows is run to its end at once. A failure
/// only ends the round: the log keeps every revocation.
fn merge_step(conn: &mut Connection, round: &mut Option<MergeRound>, denylist: &Denylist) {
    if round.as_ref().is_some_and(|r| !r.same_file()) {
        *round = None;
    }
    if round.is_none() {
        match denylist.begin_merge(conn) {
            Ok(begun) => *round = begun,
            Err(e) => tracing::warn!(error = %e, "merging the revocation log failed; will retry"),
        }
    }
    while let Some(current) = round.as_mut() {
        let began = Instant::now();
        let stepped = (|| -> Result<_, StoreError> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let step = current.step(&tx)?;
            let stepped_at = began.elapsed();
            tx.commit()?;
            tracing::trace!(
                step_us = stepped_at.as_micros() as u64,
                total_us = began.elapsed().as_micros() as u64,
                "merge step"
            );
            Ok(step)
        })();
        match stepped {
            Ok(step) => {
                if let Some(merge) = current.committed(step) {
                    denylist.merged(&merge);
                    tracing::debug!(
                        rows = merge.moved,
                        table_rows = merge.table_rows,
                        "merged the revocation log"
                    );
                    *round = None;
                } else if !current.is_small() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "merging the revocation log failed; will retry");
                *round = None;
            }
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    requests: &[Request],
    clock: Clock,
    context: &Context<'_>,
) -> Result<Vec<Outcome>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut batch = Batch {
        conn: &tx,
        clock,
        lifetimes: context.lifetimes,
        denylist: context.denylist,
        pending: Pending::begin(&tx, context.denylist)?,
    };
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        outcomes.push(apply(&mut batch, &request.write)?);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Applies one write inside the batch's transaction.
fn apply(batch: &mut Batch<'_>, write: &Write) -> Result<Outcome, StoreError> {
    let conn = batch.conn;
    let clock = &batch.clock;
    Ok(match write {
        Write::Revoke { jti, purge_after } => Outcome::Revocation(batch.denylist.insert(
            conn,
            &mut batch.pending,
            jti,
            *purge_after,
        )?),
        Write::Logout { token, scope } => Outcome::Logout(logout(batch, token, *scope)?),
        Write::StartSession(session) => {
            Outcome::SessionStarted(sessions::create(conn, session, clock)?)
        }
        Write::Refresh {
            presented,
            new_hash,
        } => {
            let refreshed = sessions::refresh(conn, batch.ends(), presented, new_hash, clock)?;
            if refreshed == Refreshed::Theft {
                end_session(batch, &presented.sid, None)?;
            }
            Outcome::Refreshed(refreshed)
        }
        Write::EndSession { user_id, sid } => {
            Outcome::SessionEnded(end_session(batch, sid, Some(*user_id))?)
        }
        Write::RevokeRefresh(presented) => Outcome::RefreshRevoked(
            sessions::is_known_token(conn, batch.ends(), presented, clock.now_s())?
                && end_session(batch, &presented.sid, None)?,
        ),
        Write::ChangePassword(change) => Outcome::PasswordChanged(change_password(batch, change)?),
        Write::RevokeUser { email, at_us } => {
            Outcome::UserRevoked(match users::find_credentials(conn, email)? {
                Some(user) => {
                    users::mark_tokens_invalid(conn, user.id, *at_us)?;
                    Some(sessions::end_all(conn, batch.ends(), user.id, None, clock)?)
                }
                None => None,
            })
        }
        Write::Probe => {
            conn.prepare_cached(
                "INSERT INTO writer_probe (id, written_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
            )?
            .execute([clock.now_s()])?;
            Outcome::Probed
        }
    })
}

/// Re-checks the caller's token against what is stored now (inside the
/// write, so a token ended meanwhile cannot do anything).
fn recheck(batch: &Batch<'_>, token: &TokenToEnd) -> Result<Option<Refusal>, StoreError> {
    let facts = lookup::facts(
        batch.conn,
        &token.key,
        batch.denylist,
        View::Batch(&batch.pending),
    )?;
    let token_facts = TokenFacts {
        user_id: token.key.user_id,
        sid: token.key.sid.as_deref(),
        issued: token.issued,
    };
    Ok(judge(token_facts, &facts, batch.clock.now_s()).err())
}

fn logout(
    batch: &mut Batch<'_>,
    token: &TokenToEnd,
    scope: LogoutScope,
) -> Result<Checked<()>, StoreError> {
    if let Some(refusal) = recheck(batch, token)? {
        return Ok(Checked::Refused(refusal));
    }
    let conn = batch.conn;
    let clock = &batch.clock;
    let user_id = token.key.user_id;
    let sid = token.key.sid.as_deref();
    match scope {
        LogoutScope::Local => {
            // The re-check just found the jti unrevoked and the session
            // active, in this very transaction: append without asking again.
            let purge_after = token.exp.saturating_add(batch.lifetimes.leeway);
            batch
                .denylist
                .append(conn, &mut batch.pending, &token.key.jti, purge_after)?;
            if let Some(sid) = sid {
                let session_purge_after = clock.now_s().saturating_add(clock.token_tail);
                batch.denylist.append(
                    conn,
                    &mut batch.pending,
                    &session_key(sid),
                    session_purge_after,
                )?;
            }
        }
        LogoutScope::Others => {
            sessions::end_all(conn, batch.ends(), user_id, sid, clock)?;
        }
        LogoutScope::Global => {
            sessions::end_all(conn, batch.ends(), user_id, None, clock)?;
            users::mark_tokens_invalid(conn, user_id, clock.now_ms.saturating_mul(1000))?;
        }
    }
    Ok(Checked::Done(()))
}

fn change_password(
    batch: &mut Batch<'_>,
    change: &PasswordChange,
) -> Result<Checked<i64>, StoreError> {
    if let Some(refusal) = recheck(batch, &change.token)? {
        return Ok(Checked::Refused(refusal));
    }
    let conn = batch.conn;
    let clock = &batch.clock;
    let user_id = change.token.key.user_id;
    let keep = change.token.key.sid.as_deref();
    users::set_password(conn, user_id, &change.password_hash)?;
    users::mark_tokens_invalid(conn, user_id, change.at_us)?;
    sessions::end_all(conn, batch.ends(), user_id, keep, clock)?;
    let expires_at = match keep {
        Some(sid) => sessions::rotate(
            conn,
            batch.ends(),
            sid,
            user_id,
            &change.session.refresh_hash,
            clock,
        )?,
        None => Some(sessions::create(conn, &change.session, clock)?),
    };
    Ok(match expires_at {
        Some(expires_at) => Checked::Done(expires_at),
        // Unreachable after the re-check (same transaction), but never a 2xx
        // without a working refresh token.
        None => Checked::Refused(Refusal::SessionEnded),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::*;

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            token_ttl: 900,
            leeway: 30,
            refresh_ttl: 86_400,
            refresh_reuse_interval: 10,
            session_max_age: 7 * 86_400,
        }
    }

    /// A migrated database and a writer on it that syncs with `sync`.
    fn writer(sync: SyncFn) -> (tempfile::TempDir, PathBuf, Writer, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(super::super::pool::open(&path, Duration::from_secs(5)).unwrap());
        let denylist = Arc::new(Denylist::new(1 << 20));
        let (writer, handle) =
            Writer::start_with(&path, Duration::from_secs(30), lifetimes(), denylist, sync)
                .unwrap();
        (dir, path, writer, handle)
    }

    fn logged(path: &Path, jti: &str) -> bool {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            "SELECT count(*) FROM revocation_log WHERE jti = ?1",
            [jti],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn no_write_is_answered_before_the_wal_it_was_committed_to_is_synced() {
        // The sync announces itself, then waits to be released.
        let (entered_tx, entered) = mpsc::channel::<u64>();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let sync: SyncFn = Arc::new(move |wal: &File| {
            entered_tx.send(wal.metadata().unwrap().ino()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            sync_wal(wal)
        });
        let (_dir, path, writer, handle) = writer(sync);
        let (done_tx, done) = mpsc::channel();
        let task = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                let outcome = runtime().block_on(writer.revoke("jti-1", i64::MAX / 2));
                done_tx.send(outcome.map_err(|e| e.to_string())).unwrap();
            })
        };
        // The sync has begun: the write is committed (another connection
        // reads it) and the file being synced is the WAL at the path...
        let synced_ino = entered.recv().unwrap();
        assert!(logged(&path, "jti-1"));
        let mut wal_path = path.clone().into_os_string();
        wal_path.push("-wal");
        assert_eq!(std::fs::metadata(&wal_path).unwrap().ino(), synced_ino);
        // ...but its caller gets no answer while the sync has not returned
        // (given time in which an answer sent before the sync would arrive).
        assert_eq!(
            done.recv_timeout(Duration::from_millis(300)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        release.send(()).unwrap();
        assert_eq!(done.recv().unwrap(), Ok(Revocation::Revoked));
        task.join().unwrap();
        drop(release);
        drop(writer);
        handle.join().unwrap();
    }

    #[test]
    fn a_wal_deleted_behind_sqlites_back_is_never_reported_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db-wal");
        std::fs::write(&path, b"frames").unwrap();
        let wal = File::open(&path).unwrap();
        assert!(sync_wal(&wal).is_ok());
        std::fs::remove_file(&path).unwrap();
        let refused = sync_wal(&wal);
        assert!(
            matches!(&refused, Err(StoreError::Sync(m)) if m.contains("deleted")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_failed_sync_fails_every_write_it_covers_and_later_writes_are_synced_afresh() {
        let calls = Arc::new(AtomicU64::new(0));
        let sync: SyncFn = {
            let calls = calls.clone();
            Arc::new(move |wal: &File| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(StoreError::Sync("injected: EIO".into()))
                } else {
                    sync_wal(wal)
                }
            })
        };
        let (_dir, _path, writer, handle) = writer(sync);
        let rt = runtime();
        let first = rt.block_on(writer.revoke("jti-a", i64::MAX / 2));
        assert!(
            matches!(&first, Err(StoreError::Task(m)) if m.contains("injected: EIO")),
            "{first:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // /health does not trust the failed commit: it commits and syncs a
        // probe of its own (which succeeds now).
        assert!(rt.block_on(writer.check()).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The writer went on, on a fresh connection.
        let second = rt.block_on(writer.revoke("jti-b", i64::MAX / 2)).unwrap();
        assert_eq!(second, Revocation::Revoked);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        drop(writer);
        handle.join().unwrap();
    }
}
