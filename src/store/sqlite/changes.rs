//! Knowing, without a query, whether the database has changed: the basis of
//! the lookup cache ([`super::lookup::LookupCache`]).
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
//! file that was open when the mapping was made and (2) the [`Version`]
//! shows exactly the state the answer was computed at. Anything unexpected
//! (no `-shm`, an uninitialised header, the two header copies disagreeing
//! mid-update) means "unknown", and the request takes the normal path to a
//! reader thread.
//!
//! A version must never repeat for different contents, or a remembered
//! answer could be taken for current (ABA). `iChange` alone is not enough:
//! SQLite's WAL recovery (run by any connection that finds the index
//! damaged, or after a process crashed mid-commit) rewrites the header with
//! `iChange` reset. So the version is the *whole* header: with the WAL's
//! salts (new random ones at every WAL restart) and the running checksum of
//! every frame up to `mxFrame`, the same header means the same WAL contents.
//! The database file itself changes only by checkpoints (which copy those
//! frames, so the contents stay the same) or by someone writing it behind
//! SQLite's back; the second shows as a new modification time or size, which
//! the periodic `stat` turns into a new generation number, part of the
//! version too. Generations only grow, so they never repeat either.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use memmap2::Mmap;

use super::pool::{file_id, FileId};

/// Size of one copy of the WAL-index header (there are two, back to back).
const HEADER_COPY: usize = 48;
/// 32-bit words in one copy.
const HEADER_WORDS: usize = HEADER_COPY / 4;
/// Byte offset of `isInit` (a byte) in a copy.
const IS_INIT: usize = 12;

/// How often, at most, the database path is checked with `stat`.
const RECHECK_FILE_US: u64 = 1_000;

/// A state of the database that can never repeat for other contents: the
/// whole WAL-index header and the generation of the files' metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    header: [u32; HEADER_WORDS],
    generation: u64,
}

/// What the periodic `stat` saw of the database file: a change of any of it
/// starts a new generation.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    db: Metadata,
    shm_len: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Metadata {
    id: FileId,
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

fn metadata(path: &Path) -> Option<Metadata> {
    let m = std::fs::metadata(path).ok()?;
    Some(Metadata {
        id: (m.dev(), m.ino()),
        len: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    })
}

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
    /// Bumped whenever a check sees the files' metadata change.
    generation: AtomicU64,
    /// The metadata of the last check.
    seen: Mutex<Option<Seen>>,
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
            generation: AtomicU64::new(0),
            seen: Mutex::new(None),
        })
    }

    /// The database's current version, or `None` when it cannot be known
    /// for sure (file gone or replaced, header being written).
    pub fn version(&self) -> Option<Version> {
        if !self.same_file() {
            return None;
        }
        let first = self.read_header(0)?;
        fence(Ordering::Acquire);
        let second = self.read_header(HEADER_COPY)?;
        fence(Ordering::Acquire);
        // Read after the header: a metadata change noticed meanwhile only
        // makes the version newer than the contents, never older.
        let generation = self.generation.load(Ordering::Acquire);
        (first == second).then_some(Version {
            header: first,
            generation,
        })
    }

    /// Whether the path still names the mapped database. The `stat`s behind it
    /// run at most once per [`RECHECK_FILE_US`]: under load that is a tiny
    /// fraction of requests, and a file removed, replaced or written behind
    /// SQLite's back is noticed within a millisecond (until then answers are
    /// those of the moment before).
    fn same_file(&self) -> bool {
        let now = (self.started.elapsed().as_micros() as u64).max(1);
        let checked = self.checked_at.load(Ordering::Acquire);
        if checked != 0 && now.saturating_sub(checked) < RECHECK_FILE_US {
            return self.file_ok.load(Ordering::Acquire);
        }
        let db = metadata(&self.db);
        let shm_len = self.shm_file.metadata().map(|m| m.len()).unwrap_or(0);
        // The database and its -shm are the files we mapped, and the mapped
        // header still exists (reading a page past the end of a truncated
        // file would fault).
        let ok = db.is_some_and(|m| m.id == self.db_id)
            && file_id(&self.shm) == Some(self.shm_id)
            && shm_len >= 2 * HEADER_COPY as u64;
        if let Some(db) = db {
            let seen = Some(Seen { db, shm_len });
            let mut last = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *last != seen {
                // Bump before publishing the check, so no caller can pair
                // the new state with the old generation.
                self.generation.fetch_add(1, Ordering::AcqRel);
                *last = seen;
            }
        }
        self.file_ok.store(ok, Ordering::Release);
        self.checked_at.store(now, Ordering::Release);
        ok
    }

    fn read_header(&self, base: usize) -> Option<[u32; HEADER_WORDS]> {
        let mut words = [0u32; HEADER_WORDS];
        for (index, word) in words.iter_mut().enumerate() {
            let ptr = self.map[base + 4 * index..].as_ptr().cast::<u32>();
            // SAFETY: in bounds (checked in `open`), 4-byte aligned (the
            // mapping is page-aligned and the offsets are multiples of 4).
            *word = unsafe { std::ptr::read_volatile(ptr) };
        }
        let init = words[IS_INIT / 4] & 0xff;
        (init == 1).then_some(words)
    }
}
