//! The revocation denylist: the `jti` of every logged-out token, with the
//! moment its row may be purged (the token's `exp` plus the leeway of the
//! server that revoked it, fixed at revocation).
//!
//! # Layout, designed for the disk
//!
//! A revocation must be durable before its `204`, and revocations arrive
//! with random `jti` keys. Inserted straight into a table keyed by `jti`,
//! every row of a group commit lands on a different B-tree leaf: a commit of
//! 64 revocations into a denylist of a million rows wrote about 95 pages
//! (380 KiB) to the WAL, and the checkpoints then rewrote those pages into the
//! database file: ~1.5 pages per revocation. So the denylist has two parts:
//!
//! - `revocation_log`: new revocations, appended in commit order
//!   (`seq INTEGER PRIMARY KEY AUTOINCREMENT`, no other index). A group
//!   commit of 64 revocations writes 3 to 4 pages (~15 KiB), whatever the
//!   size of the denylist.
//! - `revoked_tokens`: the merged revocations, keyed by `jti`. When the log
//!   holds `merge_rows` rows, or half the rows of `revoked_tokens` if that
//!   is more, the writer moves them over in `jti` order (a [`MergeRound`],
//!   a step at a time between group commits), so each leaf is written once
//!   for all the rows that land on it (a fraction of a page per revocation). A merge
//!   rewrites most leaves of the table whatever the log's length, so the log
//!   grows with the table (as the levels of an LSM tree do): the pages
//!   written per revocation stay the same at any size of the denylist, and
//!   the mirror below stays bounded by half the denylist.
//!
//! The log has no `jti` index: each process keeps a *mirror* of the log's
//! rows in memory, caught up from the tail (`seq > last seen`) inside the
//! snapshot of each lookup, so a revocation committed by any process is seen
//! by the very next lookup. A lookup is then one primary-key probe of
//! `revoked_tokens` plus a hash-map probe. The mirror forgets rows once they
//! have been merged; a lookup whose snapshot still has such rows in the log
//! (it began before the merge committed) scans them instead, so no snapshot
//! ever misses a revocation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// The denylist key under which the end of session `sid` is logged (see
/// [`super::sessions`]); no `jti` of ours contains a `:`.
pub fn session_key(sid: &str) -> String {
    format!("{SESSION_PREFIX}{sid}")
}

const SESSION_PREFIX: &str = "s:";

/// Log rows at which the writer merges the log into `revoked_tokens`.
pub const DEFAULT_MERGE_ROWS: usize = 32_768;

/// The log is also allowed to grow to `revoked_tokens` rows over this.
const MERGE_RATIO: usize = 2;

/// What a merge did, for [`Denylist::merged`] once it has committed.
#[derive(Debug, Clone, Copy)]
pub struct Merge {
    /// Highest `seq` merged.
    pub upto: i64,
    /// Rows added to `revoked_tokens`.
    pub moved: usize,
    /// Rows of `revoked_tokens` after the merge.
    pub table_rows: usize,
}

/// The denylist of one process: the in-memory mirror of the log.
pub struct Denylist {
    mirror: Mutex<Mirror>,
    merge_rows: usize,
    /// Log rows at which the next merge is due (see the module comment).
    merge_at: AtomicUsize,
}

#[derive(Default)]
struct Mirror {
    /// The database file the rows were copied from: `seq` numbers mean
    /// nothing in another file (a backup restored at the path, say).
    db: Option<super::pool::FileId>,
    /// Highest `seq` copied from the log.
    last_seq: i64,
    /// Log rows up to this `seq` were merged (or purged) and forgotten here.
    trimmed_upto: i64,
    /// `jti` -> `seq`, for the log rows above `trimmed_upto`.
    entries: HashMap<String, i64>,
}

/// What the writer's current batch has appended to the log: not committed
/// yet, so never copied into the shared mirror, but a second revocation of
/// the same `jti` in the batch must see it.
#[derive(Default)]
pub struct Pending {
    /// The `jti`s appended in this batch.
    jtis: HashSet<String>,
}

impl Pending {
    /// Starts a batch, inside its write transaction: the mirror catches up
    /// with everything committed (by any process) once, here.
    pub fn begin(conn: &Connection, denylist: &Denylist) -> Result<Self, StoreError> {
        denylist.follow_file();
        let committed_upto = log_bounds(conn)?.map_or(0, |(_, max)| max);
        denylist.catch_up(conn, committed_upto)?;
        Ok(Self {
            jtis: HashSet::new(),
        })
    }
}

/// A reader's snapshot of the log, taken once for several checks (see
/// [`Denylist::snapshot`]).
pub struct Snapshot {
    /// The log's lowest `seq` in this snapshot (`None`: an empty log).
    min: Option<i64>,
}

/// Where a check runs.
#[derive(Clone, Copy)]
pub enum View<'a> {
    /// A reader's committed snapshot; the log is looked at for each check.
    Committed,
    /// A reader's committed snapshot, already caught up with the log.
    Snapshot(&'a Snapshot),
    /// The writer's open transaction, with what it appended so far.
    Batch(&'a Pending),
}

impl Denylist {
    /// An empty mirror; the writer merges the log every `merge_rows` rows.
    pub fn new(merge_rows: usize) -> Self {
        Self {
            mirror: Mutex::new(Mirror::default()),
            merge_rows: merge_rows.max(1),
            merge_at: AtomicUsize::new(merge_rows.max(1)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Catches the mirror up with the log as `conn`'s snapshot has it, once
    /// for the several checks of one lookup.
    pub fn snapshot(&self, conn: &Connection) -> Result<Snapshot, StoreError> {
        self.follow_file();
        let Some((min, max)) = log_bounds(conn)? else {
            // An empty log in this snapshot: everything was merged or purged.
            self.forget_upto(i64::MAX);
            return Ok(Snapshot { min: None });
        };
        // Rows below `min` are gone from this snapshot's log: merged into
        // `revoked_tokens` (seen by the probe of each check) or purged.
        self.forget_upto(min - 1);
        self.catch_up(conn, max)?;
        Ok(Snapshot { min: Some(min) })
    }

    /// Whether `jti` is revoked in `conn`'s snapshot (or later).
    pub fn is_revoked(
        &self,
        conn: &Connection,
        jti: &str,
        view: View<'_>,
    ) -> Result<bool, StoreError> {
        if in_main(conn, jti)? {
            return Ok(true);
        }
        let snapshot = match view {
            View::Batch(pending) => {
                // The writer's transaction is the newest state: the mirror
                // (caught up when the batch began) and the batch's own rows.
                return Ok(pending.jtis.contains(jti) || self.lock().entries.contains_key(jti));
            }
            View::Snapshot(snapshot) => return self.in_log(conn, jti, snapshot),
            View::Committed => self.snapshot(conn)?,
        };
        self.in_log(conn, jti, &snapshot)
    }

    /// Whether `jti` is in the log of `snapshot` (the mirror, or for rows
    /// the mirror already forgot, the table itself).
    fn in_log(
        &self,
        conn: &Connection,
        jti: &str,
        snapshot: &Snapshot,
    ) -> Result<bool, StoreError> {
        let trimmed_upto = {
            let mirror = self.lock();
            if mirror.entries.contains_key(jti) {
                return Ok(true);
            }
            mirror.trimmed_upto
        };
        if snapshot.min.is_some_and(|min| min <= trimmed_upto) {
            // This snapshot began before a merge this process has already
            // seen: the rows it still has in the log are no longer mirrored.
            return in_log_upto(conn, jti, trimmed_upto);
        }
        Ok(false)
    }

    /// Appends a revocation inside the writer's batch (unless `jti` is
    /// already revoked).
    pub fn insert(
        &self,
        conn: &Connection,
        pending: &mut Pending,
        jti: &str,
        purge_after: i64,
    ) -> Result<Revocation, StoreError> {
        if self.is_revoked(conn, jti, View::Batch(pending))? {
            return Ok(Revocation::AlreadyRevoked);
        }
        self.append(conn, pending, jti, purge_after)
    }

    /// Appends a revocation the caller has just seen unrevoked in this same
    /// transaction; only the batch's own earlier rows are checked again.
    pub fn append(
        &self,
        conn: &Connection,
        pending: &mut Pending,
        jti: &str,
        purge_after: i64,
    ) -> Result<Revocation, StoreError> {
        if pending.jtis.contains(jti) {
            return Ok(Revocation::AlreadyRevoked);
        }
        conn.prepare_cached("INSERT INTO revocation_log (jti, purge_after) VALUES (?1, ?2)")?
            .execute(params![jti, purge_after])?;
        pending.jtis.insert(jti.to_owned());
        Ok(Revocation::Revoked)
    }

    /// Starts the mirror over when this thread's connection is on another
    /// database file than the one the mirror was copied from.
    fn follow_file(&self) {
        let Some(file) = super::pool::current_file() else {
            return;
        };
        let mut mirror = self.lock();
        if mirror.db != Some(file) {
            *mirror = Mirror {
                db: Some(file),
                ..Mirror::default()
            };
        }
    }

    /// Copies the log rows above what the mirror has, up to `upto`.
    fn catch_up(&self, conn: &Connection, upto: i64) -> Result<(), StoreError> {
        let from = {
            let mirror = self.lock();
            mirror.last_seq.max(mirror.trimmed_upto)
        };
        if upto <= from {
            return Ok(());
        }
        let rows = conn
            .prepare_cached(
                "SELECT seq, jti FROM revocation_log WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
            )?
            .query_map([from, upto], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut mirror = self.lock();
        for (seq, jti) in rows {
            if seq > mirror.trimmed_upto {
                mirror.entries.insert(jti, seq);
            }
        }
        mirror.last_seq = mirror.last_seq.max(upto);
        Ok(())
    }

    /// Forgets mirrored rows up to `seq` (merged or purged).
    fn forget_upto(&self, seq: i64) {
        let mut mirror = self.lock();
        let seq = seq.min(mirror.last_seq);
        if seq > mirror.trimmed_upto {
            mirror.entries.retain(|_, s| *s > seq);
            mirror.trimmed_upto = seq;
        }
    }

    /// Whether the log is due a merge (called by the writer after a commit).
    pub fn merge_due(&self, conn: &Connection) -> Result<bool, StoreError> {
        let due = self.merge_at.load(Ordering::Relaxed);
        Ok(log_bounds(conn)?.is_some_and(|(min, max)| (max - min + 1) as usize >= due))
    }

    /// A whole merge round in one piece, inside the caller's write
    /// transaction (tests; the writer runs rounds a step at a time).
    #[cfg(test)]
    pub fn merge(&self, conn: &Connection) -> Result<Merge, StoreError> {
        let Some((_, upto)) = log_bounds(conn)? else {
            return Ok(Merge {
                upto: 0,
                moved: 0,
                table_rows: 0,
            });
        };
        let mut round = MergeRound::new(upto);
        loop {
            let step = round.step(conn)?;
            if let Some(merge) = round.committed(step) {
                return Ok(merge);
            }
        }
    }

    /// A merge has committed: the mirror may forget its rows, and the next
    /// merge is due when the log holds half the table (or
    /// `merge_rows`, if that is more).
    pub fn merged(&self, merge: &Merge) {
        self.forget_upto(merge.upto);
        self.merge_at.store(
            self.merge_rows.max(merge.table_rows / MERGE_RATIO),
            Ordering::Relaxed,
        );
    }

    /// Rows the mirror holds (for tests and diagnostics).
    pub fn mirrored(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Log rows a merge round reads, or moves into `revoked_tokens`, per step.
pub const MERGE_STEP_ROWS: usize = 4096;

/// A merge done a step at a time, between group commits, so that no batch
/// waits for a whole merge (a merge of a large table takes a few hundred
/// milliseconds in one piece). A round first reads the log rows up to the
/// highest `seq` it saw at its start, a step at a time, then sorts them by
/// `jti` and moves them into `revoked_tokens` a step at a time (each step
/// its own transaction, touching the leaves of one slice of the key space),
/// and last deletes them from the log. Until that last step commits the rows
/// are in the log (and the mirror) as well: a lookup finds them either way,
/// and a round that stops half-way (an error, a restart, the file replaced)
/// leaves nothing a lookup would miss; a later round moves them again
/// (`ON CONFLICT DO NOTHING`).
pub struct MergeRound {
    /// The database file the rows were read from.
    db: Option<super::pool::FileId>,
    /// Highest `seq` of the round.
    upto: i64,
    /// Rows read so far: up to this `seq`.
    read_upto: i64,
    /// The rows, sorted by `jti` once all are read.
    rows: Vec<(String, i64)>,
    sorted: bool,
    /// Rows moved into `revoked_tokens` so far (committed).
    next: usize,
    moved: usize,
}

/// What one step of a [`MergeRound`] did, to be recorded with
/// [`MergeRound::committed`] once its transaction has committed.
pub enum MergeStep {
    /// Rows read from the log (no write).
    Read,
    /// Rows moved into `revoked_tokens`: the new position and how many rows
    /// were new there.
    Moved { next: usize, moved: usize },
    /// The log rows deleted: the merge is complete.
    Finished(Merge),
}

impl Denylist {
    /// Starts a merge round if the log is long enough.
    pub fn begin_merge(&self, conn: &Connection) -> Result<Option<MergeRound>, StoreError> {
        if !self.merge_due(conn)? {
            return Ok(None);
        }
        Ok(log_bounds(conn)?.map(|(_, upto)| MergeRound::new(upto)))
    }
}

impl MergeRound {
    /// A round over the log rows up to `upto`, of this thread's file.
    fn new(upto: i64) -> Self {
        Self {
            db: super::pool::current_file(),
            upto,
            read_upto: 0,
            rows: Vec::new(),
            sorted: false,
            next: 0,
            moved: 0,
        }
    }

    /// Whether the round was read from the file this thread's connection
    /// is on now.
    pub fn same_file(&self) -> bool {
        self.db == super::pool::current_file()
    }

    /// Whether every row is read and they fit in one step: the rest of the
    /// round is cheap enough to run at once.
    pub fn is_small(&self) -> bool {
        self.read_upto >= self.upto && self.rows.len() <= MERGE_STEP_ROWS
    }

    /// The next step, inside the caller's write transaction (a read step
    /// writes nothing).
    pub fn step(&mut self, conn: &Connection) -> Result<MergeStep, StoreError> {
        if self.read_upto < self.upto {
            let rows = conn
                .prepare_cached(
                    "SELECT seq, jti, purge_after FROM revocation_log
                     WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
                )?
                .query_map(
                    params![self.read_upto, self.upto, MERGE_STEP_ROWS as i64],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?)),
                )?
                .collect::<Result<Vec<(i64, String, i64)>, _>>()?;
            self.read_upto = match rows.last() {
                Some((seq, _, _)) if rows.len() == MERGE_STEP_ROWS => *seq,
                _ => self.upto,
            };
            self.rows.extend(
                rows.into_iter()
                    .map(|(_, jti, purge_after)| (jti, purge_after)),
            );
            return Ok(MergeStep::Read);
        }
        if !self.sorted {
            // SQLite's BINARY collation orders TEXT as Rust orders `str`:
            // by bytes.
            self.rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            self.sorted = true;
        }
        if self.next < self.rows.len() {
            let end = (self.next + MERGE_STEP_ROWS).min(self.rows.len());
            let mut insert = conn.prepare_cached(
                "INSERT INTO revoked_tokens (jti, purge_after) VALUES (?1, ?2)
                 ON CONFLICT (jti) DO NOTHING",
            )?;
            let mut moved = 0;
            for (jti, purge_after) in &self.rows[self.next..end] {
                moved += insert.execute(params![jti, purge_after])?;
            }
            return Ok(MergeStep::Moved { next: end, moved });
        }
        conn.prepare_cached("DELETE FROM revocation_log WHERE seq <= ?1")?
            .execute([self.upto])?;
        let table_rows: i64 = conn
            .prepare_cached("SELECT count(*) FROM revoked_tokens")?
            .query_row([], |row| row.get(0))?;
        Ok(MergeStep::Finished(Merge {
            upto: self.upto,
            moved: self.moved,
            table_rows: usize::try_from(table_rows).unwrap_or(0),
        }))
    }

    /// A step's transaction committed. Returns the finished merge, for
    /// [`Denylist::merged`].
    pub fn committed(&mut self, step: MergeStep) -> Option<Merge> {
        match step {
            MergeStep::Read => None,
            MergeStep::Moved { next, moved } => {
                self.next = next;
                self.moved += moved;
                None
            }
            MergeStep::Finished(merge) => Some(merge),
        }
    }
}

/// The log's lowest and highest `seq` in this snapshot (`None`: empty).
fn log_bounds(conn: &Connection) -> Result<Option<(i64, i64)>, StoreError> {
    let (min, max): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT min(seq) FROM revocation_log), (SELECT max(seq) FROM revocation_log)",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(min.zip(max))
}

fn in_main(conn: &Connection, jti: &str) -> Result<bool, StoreError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM revoked_tokens WHERE jti = ?1")?
        .query_row([jti], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

fn in_log_upto(conn: &Connection, jti: &str, upto: i64) -> Result<bool, StoreError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM revocation_log WHERE seq <= ?1 AND jti = ?2")?
        .query_row(params![upto, jti], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

/// Deletes the sessions whose logged end is due by `now` (no access token
/// naming them can verify any more), with their refresh tokens. Must run in
/// the same transaction as, and before, [`purge_expired`]: an end entry may
/// go only with its session, or the session's refresh token would work again.
pub fn purge_ended_sessions(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    // `s:` keys form one range of the primary key (`;` follows `:`).
    Ok(conn
        .prepare_cached(
            "DELETE FROM sessions WHERE id IN (
                 SELECT substr(jti, 3) FROM revoked_tokens
                 WHERE jti >= 's:' AND jti < 's;' AND purge_after < ?1
                 UNION ALL
                 SELECT substr(jti, 3) FROM revocation_log
                 WHERE substr(jti, 1, 2) = 's:' AND purge_after < ?1)",
        )?
        .execute([now])?)
}

/// Deletes rows whose moment to go has passed by `now` (Unix seconds), from
/// both parts. Returns how many were deleted. No leeway is applied here: it
/// was added when the row was written, by the server whose checks it must
/// outlive.
pub fn purge_expired(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    let main = conn
        .prepare_cached("DELETE FROM revoked_tokens WHERE purge_after < ?1")?
        .execute([now])?;
    let log = conn
        .prepare_cached("DELETE FROM revocation_log WHERE purge_after < ?1")?
        .execute([now])?;
    Ok(main + log)
}

/// A real read of both parts, for `/health`.
pub fn check(conn: &Connection) -> Result<(), StoreError> {
    in_main(conn, "")?;
    log_bounds(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        crate::store::sqlite::migrations::migrate(&mut conn).unwrap();
        (dir, conn)
    }

    fn revoke(denylist: &Denylist, conn: &mut Connection, jti: &str) -> Revocation {
        let tx = conn.transaction().unwrap();
        let mut pending = Pending::begin(&tx, denylist).unwrap();
        let outcome = denylist.insert(&tx, &mut pending, jti, i64::MAX).unwrap();
        tx.commit().unwrap();
        outcome
    }

    #[test]
    fn revocations_are_seen_before_and_after_a_merge() {
        let (_dir, mut conn) = db();
        let denylist = Denylist::new(4);
        assert_eq!(revoke(&denylist, &mut conn, "a"), Revocation::Revoked);
        assert_eq!(
            revoke(&denylist, &mut conn, "a"),
            Revocation::AlreadyRevoked
        );
        for jti in ["b", "c", "d"] {
            revoke(&denylist, &mut conn, jti);
        }
        assert!(denylist.is_revoked(&conn, "c", View::Committed).unwrap());
        assert!(!denylist.is_revoked(&conn, "z", View::Committed).unwrap());
        assert!(denylist.merge_due(&conn).unwrap());
        let tx = conn.transaction().unwrap();
        let merge = denylist.merge(&tx).unwrap();
        tx.commit().unwrap();
        denylist.merged(&merge);
        assert_eq!((merge.moved, merge.table_rows), (4, 4));
        assert_eq!(denylist.mirrored(), 0);
        for jti in ["a", "b", "c", "d"] {
            assert!(denylist.is_revoked(&conn, jti, View::Committed).unwrap());
        }
        // The log continues after the merge.
        assert_eq!(revoke(&denylist, &mut conn, "e"), Revocation::Revoked);
        assert!(denylist.is_revoked(&conn, "e", View::Committed).unwrap());
    }

    fn append_many(denylist: &Denylist, conn: &mut Connection, n: usize) {
        let tx = conn.transaction().unwrap();
        let mut pending = Pending::begin(&tx, denylist).unwrap();
        for i in 0..n {
            denylist
                .insert(&tx, &mut pending, &format!("j{i:06}"), i64::MAX)
                .unwrap();
        }
        tx.commit().unwrap();
    }

    /// Runs `round` to its end (or `limit` steps), checking after every
    /// step that each of `jtis` is still revoked.
    fn run_round(
        denylist: &Denylist,
        conn: &mut Connection,
        round: &mut MergeRound,
        jtis: &[String],
        limit: usize,
    ) -> (usize, Option<Merge>) {
        for steps in 1..=limit {
            let tx = conn.transaction().unwrap();
            let step = round.step(&tx).unwrap();
            tx.commit().unwrap();
            for jti in jtis {
                assert!(
                    denylist.is_revoked(conn, jti, View::Committed).unwrap(),
                    "{jti} after step {steps}"
                );
            }
            if let Some(merge) = round.committed(step) {
                return (steps, Some(merge));
            }
        }
        (limit, None)
    }

    #[test]
    fn a_merge_round_moves_the_log_a_step_at_a_time_and_never_hides_a_revocation() {
        let (_dir, mut conn) = db();
        let denylist = Denylist::new(1);
        let n = MERGE_STEP_ROWS * 2 + 10;
        append_many(&denylist, &mut conn, n);
        let mut round = denylist.begin_merge(&conn).unwrap().expect("due");
        // Appended after the round began: stays in the log.
        revoke(&denylist, &mut conn, "late");
        let watched = [
            "j000000".to_string(),
            format!("j{:06}", n - 1),
            "late".into(),
        ];
        let (steps, merge) = run_round(&denylist, &mut conn, &mut round, &watched, 100);
        let merge = merge.expect("finished");
        // Three steps read the log, three move its rows, one deletes them.
        assert_eq!(steps, 7);
        assert_eq!((merge.moved, merge.table_rows), (n, n));
        denylist.merged(&merge);
        assert_eq!(denylist.mirrored(), 1);
        let logged: i64 = conn
            .query_row("SELECT count(*) FROM revocation_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(logged, 1);
        for i in [0, n / 2, n - 1] {
            let jti = format!("j{i:06}");
            assert!(denylist.is_revoked(&conn, &jti, View::Committed).unwrap());
        }
    }

    #[test]
    fn a_merge_round_abandoned_half_way_loses_nothing_and_the_next_one_completes() {
        let (_dir, mut conn) = db();
        let denylist = Denylist::new(1);
        let n = MERGE_STEP_ROWS + 100;
        append_many(&denylist, &mut conn, n);
        let watched: Vec<String> = (0..n).step_by(97).map(|i| format!("j{i:06}")).collect();
        let mut first = denylist.begin_merge(&conn).unwrap().expect("due");
        // Two reads and one move of 4096 rows, then the round is dropped
        // (an error, or the file replaced).
        let (_, merge) = run_round(&denylist, &mut conn, &mut first, &watched, 3);
        assert!(merge.is_none());
        drop(first);
        let mut second = denylist.begin_merge(&conn).unwrap().expect("still due");
        let (_, merge) = run_round(&denylist, &mut conn, &mut second, &watched, 100);
        let merge = merge.expect("finished");
        assert_eq!((merge.moved, merge.table_rows), (100, n));
        denylist.merged(&merge);
        for jti in &watched {
            assert!(denylist.is_revoked(&conn, jti, View::Committed).unwrap());
        }
    }

    #[test]
    fn the_log_may_grow_to_half_the_table_before_the_next_merge() {
        let (_dir, mut conn) = db();
        let denylist = Denylist::new(2);
        let merge_all = |denylist: &Denylist, conn: &mut Connection| {
            let tx = conn.transaction().unwrap();
            let merge = denylist.merge(&tx).unwrap();
            tx.commit().unwrap();
            denylist.merged(&merge);
            merge
        };
        for i in 0..10 {
            revoke(&denylist, &mut conn, &format!("a{i}"));
        }
        assert_eq!(merge_all(&denylist, &mut conn).table_rows, 10);
        // Half of 10: due at 5 log rows, not at merge_rows (2).
        for i in 0..4 {
            revoke(&denylist, &mut conn, &format!("b{i}"));
            assert!(!denylist.merge_due(&conn).unwrap(), "{} rows", i + 1);
        }
        revoke(&denylist, &mut conn, "b4");
        assert!(denylist.merge_due(&conn).unwrap());
        assert_eq!(merge_all(&denylist, &mut conn).table_rows, 15);
        assert_eq!(denylist.mirrored(), 0);
        // A table that shrank (purged) below 2 * merge_rows: merge_rows again.
        conn.execute("DELETE FROM revoked_tokens WHERE jti <> 'a0'", [])
            .unwrap();
        revoke(&denylist, &mut conn, "c0");
        assert_eq!(merge_all(&denylist, &mut conn).table_rows, 2);
        revoke(&denylist, &mut conn, "c1");
        assert!(!denylist.merge_due(&conn).unwrap());
        revoke(&denylist, &mut conn, "c2");
        assert!(denylist.merge_due(&conn).unwrap());
    }

    #[test]
    fn a_snapshot_older_than_a_merge_still_sees_the_merged_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        crate::store::sqlite::migrations::migrate(&mut writer).unwrap();
        let reader = Connection::open(&path).unwrap();
        let denylist = Denylist::new(1);
        revoke(&denylist, &mut writer, "old");
        // The reader's snapshot begins: "old" is in the log.
        reader.execute_batch("BEGIN").unwrap();
        assert!(denylist
            .is_revoked(&reader, "old", View::Committed)
            .unwrap());
        // Merge and forget, while the reader's snapshot is still open.
        let tx = writer.transaction().unwrap();
        let merge = denylist.merge(&tx).unwrap();
        tx.commit().unwrap();
        denylist.merged(&merge);
        assert_eq!(denylist.mirrored(), 0);
        // In its snapshot "old" is in the log, not in revoked_tokens: it
        // must still be found (by the scan fallback).
        assert!(denylist
            .is_revoked(&reader, "old", View::Committed)
            .unwrap());
        reader.execute_batch("COMMIT").unwrap();
        assert!(denylist
            .is_revoked(&reader, "old", View::Committed)
            .unwrap());
    }

    #[test]
    fn uncommitted_rows_never_reach_the_mirror() {
        let (_dir, mut conn) = db();
        let denylist = Denylist::new(1000);
        {
            let tx = conn.transaction().unwrap();
            let mut pending = Pending::begin(&tx, &denylist).unwrap();
            denylist.insert(&tx, &mut pending, "x", i64::MAX).unwrap();
            // A second check in the same batch sees it...
            assert!(denylist
                .is_revoked(&tx, "x", View::Batch(&pending))
                .unwrap());
            // ...the transaction is rolled back (dropped).
        }
        assert_eq!(denylist.mirrored(), 0);
        assert!(!denylist.is_revoked(&conn, "x", View::Committed).unwrap());
    }
}
