//! Opening the database: file permissions, per-connection pragmas and the
//! r2d2 pool used by the request handlers.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use super::{migrations, StoreError};

/// The pool of read/write connections shared by request handlers.
pub type Pool = r2d2::Pool<SqliteConnectionManager>;

/// Why the database could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open database {path}: {reason}")]
pub struct OpenError {
    path: String,
    reason: String,
}

/// Per-connection settings. `synchronous`, `busy_timeout` and `foreign_keys`
/// do not persist in the file, so every connection sets them. `timeout` bounds
/// how long a statement waits for a lock held by another connection or
/// process before failing with `SQLITE_BUSY` (answered `503`).
pub fn configure(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(timeout)?;
    // WAL + synchronous=FULL: a commit returns only after the WAL is fsynced,
    // so a revocation that was answered 204 survives a crash or power loss.
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

    let manager = SqliteConnectionManager::file(path)
        .with_init(move |conn: &mut Connection| configure(conn, timeout));
    r2d2::Pool::builder()
        .max_size(4)
        .min_idle(Some(2))
        .connection_timeout(timeout)
        .test_on_check_out(false)
        .build(manager)
        .map_err(|e| fail(e.to_string()))
}
