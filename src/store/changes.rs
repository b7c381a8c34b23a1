//! Knowing, without a query, whether the database has changed: the basis of
//! the lookup cache ([`LookupCache`]).
//!
//! In WAL mode SQLite keeps a shared-memory index (the `-shm` file) whose
//! header holds `iChange`, a counter that every committed transaction of any
//! connection in any process increments, and `mxFrame`, the last valid WAL
//! frame (format: <https://sqlite.org/walformat.html>). SQLite updates that
//! header before `COMMIT` returns, so once a `204` for a logout has been sent
//! by any tokengate process on this file, every later read of the header here
//! shows a new value. Reading it is a load from a shared mapping: no query,
//! no lock, no thread hop.
//!
//! A cached answer is used only while (1) the path still names the database
//! file that was open when the mapping was made and (2) the header shows the
//! very version the answer was computed at. Anything unexpected (no `-shm`,
//! an uninitialised header, the two header copies disagreeing mid-update)
//! means "unknown", and the request takes the normal path to a reader thread.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use memmap2::Mmap;

use super::pool::{file_id, FileId};
use super::users::User;

/// Byte offsets in the WAL-index header (two copies of 48 bytes each).
const HEADER_COPY: usize = 48;
const I_CHANGE: usize = 8;
const IS_INIT: usize = 12;
const MX_FRAME: usize = 16;

/// How often, at most, the database path is checked with `stat`.
const RECHECK_FILE_US: u64 = 1_000;

/// Watches the database's version through its `-shm` file.
pub struct Changes {
    db: PathBuf,
    db_id: FileId,
    shm: PathBuf,
    shm_id: FileId,
    shm_file: File,
    map: Mmap,
    started: Instant,
    /// When the path was last checked, in µs since `started` (0: never).
    checked_at: AtomicU64,
    /// Whether the path named the mapped database at that check.
    file_ok: AtomicBool,
}

impl Changes {
    /// Maps `<db>-shm` read-only. `None` if it cannot (then nothing is cached).
    pub fn open(db: &Path) -> Option<Self> {
        let db_id = file_id(db)?;
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let shm = PathBuf::from(shm);
        let shm_id = file_id(&shm)?;
        let file = File::open(&shm).ok()?;
        // SAFETY: a read-only shared mapping; SQLite writes the file while we
        // read it, so every read below is a volatile read of a plain integer,
        // validated by comparing the two header copies.
        let map = unsafe { Mmap::map(&file) }.ok()?;
        (map.len() >= 2 * HEADER_COPY).then(|| Self {
            db: db.to_owned(),
            db_id,
            shm,
            shm_id,
            shm_file: file,
            map,
            started: Instant::now(),
            checked_at: AtomicU64::new(0),
            file_ok: AtomicBool::new(true),
        })
    }

    /// The database's current version, or `None` when it cannot be known
    /// for sure (file gone or replaced, header being written).
    pub fn version(&self) -> Option<u64> {
        if !self.same_file() {
            return None;
        }
        let first = self.read_header(0)?;
        fence(Ordering::Acquire);
        let second = self.read_header(HEADER_COPY)?;
        (first == second).then_some(first)
    }

    /// Whether the path still names the mapped database. The `stat`s behind it
    /// runs at most once per [`RECHECK_FILE_US`]: under load that is a tiny
    /// fraction of requests, and a file removed or replaced is noticed within
    /// a millisecond (until then answers are those of the moment before).
    fn same_file(&self) -> bool {
        let now = (self.started.elapsed().as_micros() as u64).max(1);
        let checked = self.checked_at.load(Ordering::Acquire);
        if checked != 0 && now.saturating_sub(checked) < RECHECK_FILE_US {
            return self.file_ok.load(Ordering::Acquire);
        }
        // The database and its -shm are the files we mapped, and the mapped
        // header still exists (reading a page past the end of a truncated
        // file would fault).
        let ok = file_id(&self.db) == Some(self.db_id)
            && file_id(&self.shm) == Some(self.shm_id)
            && self
                .shm_file
                .metadata()
                .is_ok_and(|m| m.len() >= 2 * HEADER_COPY as u64);
        self.file_ok.store(ok, Ordering::Release);
        self.checked_at.store(now, Ordering::Release);
        ok
    }

    fn read_header(&self, base: usize) -> Option<u64> {
        let u32_at = |offset: usize| {
            let ptr = self.map[base + offset..].as_ptr().cast::<u32>();
            // SAFETY: in bounds (checked in `open`), 4-byte aligned (the
            // mapping is page-aligned and the offsets are multiples of 4).
            unsafe { std::ptr::read_volatile(ptr) }
        };
        let init = u32_at(IS_INIT) & 0xff;
        (init == 1).then(|| (u64::from(u32_at(I_CHANGE)) << 32) | u64::from(u32_at(MX_FRAME)))
    }
}

/// What the per-request lookup found for a token.
#[derive(Clone)]
pub enum Lookup {
    /// The `jti` is in the denylist.
    Revoked,
    /// Not revoked; the user, if the route loads it (`None`: no such user,
    /// or not asked).
    Valid(Option<User>),
}

/// One remembered answer: the version it was computed at, the user id it
/// was asked for, and the answer.
type Remembered = (u64, Option<i64>, Lookup);

/// Lookup answers remembered per `jti` together with the database version
/// they were computed at; a different version makes them worthless.
pub struct LookupCache {
    entries: Mutex<HashMap<String, Remembered>>,
    capacity: usize,
}

impl LookupCache {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The answer for `jti` (and `user_id`) if it was computed at `version`.
    pub fn get(&self, version: u64, jti: &str, user_id: Option<i64>) -> Option<Lookup> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(jti) {
            Some((v, uid, lookup)) if *v == version && *uid == user_id => Some(lookup.clone()),
            // A revocation never goes away while its token can still verify.
            Some((_, _, Lookup::Revoked)) => Some(Lookup::Revoked),
            _ => None,
        }
    }

    /// Remembers an answer computed at `version` (read before the lookup ran).
    pub fn put(&self, version: u64, jti: String, user_id: Option<i64>, lookup: Lookup) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(jti, (version, user_id, lookup));
    }
}
