//! Opening the database: file permissions, per-connection pragmas, the r2d2
//! pool used by the request handlers, and noticing when the file is gone.
//!
//! An open SQLite connection keeps working on a database file that has been
//! deleted or replaced (it holds the old inode), so a revocation written then
//! would be "durable" in a file nobody will ever open again. Every user of a
//! connection therefore checks that the path still names the file it opened
//! ([`FileId`]); if not, it answers `503` (fail closed) and reconnects once a
//! database is back at the path.

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use super::migrations;
use crate::store::StoreError;

/// Identity of a file on disk: (device, inode).
pub type FileId = (u64, u64);

/// The identity of the file at `path` now, if there is one.
pub fn file_id(path: &Path) -> Option<FileId> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A pooled connection.
pub type PooledConnection = r2d2::PooledConnection<SqliteConnectionManager>;

/// The pool of read/write connections shared by request handlers, rebuilt
/// when the database file has been replaced.
#[derive(Clone)]
pub struct Pool(Arc<Shared>);

struct Shared {
    path: PathBuf,
    timeout: Duration,
    current: RwLock<(r2d2::Pool<SqliteConnectionManager>, FileId)>,
}

impl Pool {
    /// A connection to the file now at the path; `StoreError::FileGone` if
    /// there is none. A replaced file gets a fresh pool.
    pub fn get(&self) -> Result<PooledConnection, StoreError> {
        let shared = &self.0;
        let now = file_id(&shared.path).ok_or(StoreError::FileGone)?;
        {
            let current = shared.current.read().unwrap_or_else(|e| e.into_inner());
            if current.1 == now {
                return Ok(current.0.get()?);
            }
        }
        let fresh = build_pool(
            &shared.path,
            shared.timeout,
            OpenFlags::SQLITE_OPEN_READ_WRITE,
        )?;
        let conn = fresh.get()?;
        *shared.current.write().unwrap_or_else(|e| e.into_inner()) = (fresh, now);
        Ok(conn)
    }
}

fn build_pool(
    path: &Path,
    timeout: Duration,
    flags: OpenFlags,
) -> Result<r2d2::Pool<SqliteConnectionManager>, r2d2::Error> {
    let manager = SqliteConnectionManager::file(path)
        .with_flags(flags | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI)
        .with_init(move |conn: &mut Connection| configure(conn, timeout));
    r2d2::Pool::builder()
        .max_size(4)
        .min_idle(Some(1))
        .connection_timeout(timeout)
        .test_on_check_out(false)
        .build(manager)
}

/// Page cache of each [`LiveConnection`] (the writer's and each reader's), KiB.
const LIVE_CACHE_KIB: i64 = 16 * 1024;

thread_local! {
    /// The database file this thread's [`LiveConnection`] last used.
    static CURRENT_FILE: std::cell::Cell<Option<FileId>> = const { std::cell::Cell::new(None) };
}

/// The identity of the database file this thread's live connection is on
/// (`None` on other threads): what in-memory state derived from the file
/// (the denylist's mirror) must belong to.
pub fn current_file() -> Option<FileId> {
    CURRENT_FILE.get()
}

/// A connection owned by one thread (a reader or the writer) that follows
/// the file at its path: [`LiveConnection::get`] fails while the file is
/// missing or replaced, and reconnects when a database is there again.
pub struct LiveConnection {
    path: PathBuf,
    timeout: Duration,
    conn: Option<(Connection, FileId)>,
    /// The writer's: commits do not fsync, the writer syncs the WAL itself
    /// ([`LiveConnection::wal`]) before it answers anyone.
    syncs_itself: bool,
    /// The WAL file of `conn`, once asked for.
    wal: Option<Arc<fs::File>>,
}

impl LiveConnection {
    /// Opens the database at `path` (it must exist).
    pub fn open(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        Self::open_with(path, timeout, false)
    }

    /// Opens the writer's connection to `path`: as [`LiveConnection::open`],
    /// but with `synchronous=NORMAL`, so a commit writes its WAL frames
    /// without waiting for the disk; whoever answers for the commit must
    /// first make the WAL durable with [`LiveConnection::wal`]'s file
    /// (`fdatasync` of the WAL covers every frame written before it, which
    /// is exactly what `synchronous=FULL` does inside the commit).
    /// Checkpoints still sync the WAL before copying it into the database.
    pub fn open_writer(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        Self::open_with(path, timeout, true)
    }

    fn open_with(path: &Path, timeout: Duration, syncs_itself: bool) -> Result<Self, StoreError> {
        let mut live = Self {
            path: path.to_owned(),
            timeout,
            conn: None,
            syncs_itself,
            wal: None,
        };
        live.get()?;
        Ok(live)
    }

    /// The connection, if the path still names the file it has open.
    pub fn get(&mut self) -> Result<&Connection, StoreError> {
        let Some(now) = file_id(&self.path) else {
            self.conn = None;
            return Err(StoreError::FileGone);
        };
        if self.conn.as_ref().is_none_or(|(_, id)| *id != now) {
            self.conn = None;
            self.wal = None;
            let conn = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&conn, self.timeout)?;
            if self.syncs_itself {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            // The writer and the readers probe random keys of the denylist
            // and sessions on every miss: a page cache larger than SQLite's
            // 2 MiB default keeps those pages off `pread`.
            conn.pragma_update(None, "cache_size", -LIVE_CACHE_KIB)?;
            self.conn = Some((conn, now));
        }
        CURRENT_FILE.set(Some(now));
        match &mut self.conn {
            Some((conn, _)) => Ok(conn),
            None => Err(StoreError::FileGone),
        }
    }

    /// The connection for a write transaction, with the same checks.
    pub fn get_mut(&mut self) -> Result<&mut Connection, StoreError> {
        self.get()?;
        match &mut self.conn {
            Some((conn, _)) => Ok(conn),
            None => Err(StoreError::FileGone),
        }
    }

    /// Drops the connection, so the next [`LiveConnection::get`] reconnects.
    pub fn reset(&mut self) {
        self.conn = None;
        self.wal = None;
    }

    /// The WAL file this connection writes to, opened the first time it is
    /// asked for after the connection has committed (SQLite creates it on
    /// the first access and keeps it open while the connection is; no
    /// SQLite connection deletes a WAL another one has open, so the path
    /// names the very file until this connection closes).
    pub fn wal(&mut self) -> Result<Arc<fs::File>, StoreError> {
        if self.conn.is_none() {
            return Err(StoreError::FileGone);
        }
        if let Some(wal) = &self.wal {
            return Ok(wal.clone());
        }
        let mut name = self.path.clone().into_os_string();
        name.push("-wal");
        let wal = Arc::new(
            fs::File::open(&name).map_err(|e| StoreError::Sync(format!("cannot open it: {e}")))?,
        );
        self.wal = Some(wal.clone());
        Ok(wal)
    }
}

/// Why the database could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open database {path}: {reason}")]
pub struct OpenError {
    path: String,
    reason: String,
}

impl OpenError {
    /// The database at `path` could not be used, for `reason`.
    pub fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// Per-connection settings. `synchronous`, `busy_timeout` and `foreign_keys`
/// do not persist in the file, so every connection sets them. `timeout` bounds
/// how long a statement waits for a lock held by another connection or
/// process before failing with `SQLITE_BUSY` (answered `503`).
pub fn configure(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(timeout)?;
    // WAL + synchronous=FULL: a commit returns only after the WAL is fsynced,
    // so what was answered as stored survives a crash or power loss. (The
    // writer's connection then switches to NORMAL and syncs the WAL itself
    // before answering: `LiveConnection::open_writer`.)
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Opens one configured connection (used by the denylist writer and the CLI).
pub fn connect(path: &Path, timeout: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    configure(&conn, timeout)?;
    Ok(conn)
}

/// Refuses a database path that does not name an existing file (for the
/// maintenance commands: a mistyped `--database` must not create a new,
/// empty database and report success on it).
pub fn must_exist(path: &Path) -> Result<(), OpenError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(OpenError::new(path, "it is not a file")),
        Err(_) => Err(OpenError::new(
            path,
            "there is no database there (check --database or TOKENGATE_DATABASE; \
             `tokengate serve` creates it)",
        )),
    }
}

/// Creates the database file (mode 0600) if missing, applies migrations and
/// returns the pool, whose callers wait at most `timeout` for a connection or
/// a lock. Errors are worded for a person reading one line.
pub fn open(path: &Path, timeout: Duration) -> Result<Pool, OpenError> {
    let fail = |reason: String| OpenError {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    // Create the file ourselves so it is 0600 from the start; SQLite gives the
    // -wal and -shm files the same mode.
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;

    let mut conn = connect(path, timeout).map_err(|e| fail(e.to_string()))?;
    migrations::migrate(&mut conn).map_err(|e| fail(e.to_string()))?;
    drop(conn);

    let id = file_id(path).ok_or_else(|| fail("the file disappeared while opening it".into()))?;
    let pool = build_pool(
        path,
        timeout,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(Pool(Arc::new(Shared {
        path: path.to_owned(),
        timeout,
        current: RwLock::new((pool, id)),
    })))
}
