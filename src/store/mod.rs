//! SQLite storage: the connection pool, its pragmas and file tracking
//! ([`pool`]), versioned schema migrations ([`migrations`]), users
//! ([`users`]), the revocation denylist ([`denylist`]), the group-commit
//! writer for every durable write ([`writer`]) and the reader threads that
//! serve the per-request lookups ([`reader`]), whose answers are remembered
//! while the database has not changed ([`changes`]).
//!
//! Everything here is blocking; callers run it on the reader threads, the
//! writer thread or tokio's blocking pool, never on an executor thread.

pub mod changes;
pub mod denylist;
pub mod migrations;
pub mod pool;
pub mod reader;
pub mod users;
pub mod writer;

pub use pool::Pool;
pub use reader::Readers;
pub use writer::Writer;

/// A storage failure. Every variant means "the database cannot be used right
/// now"; the HTTP layer answers `503` and logs the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No pooled connection could be had in time.
    #[error("database connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// The database was written by a newer tokengate.
    #[error("the database schema version {found} is newer than this tokengate supports ({supported}); refusing to touch it")]
    NewerSchema {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The writer thread is gone (the service is shutting down).
    #[error("the database writer has stopped")]
    WriterStopped,
    /// The database file is missing, or was replaced, at its path.
    #[error("the database file is missing or was replaced")]
    FileGone,
    /// The database did not answer within the configured time.
    #[error("the database did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A blocking task could not be run to completion.
    #[error("blocking task failed: {0}")]
    Task(String),
}

/// Runs blocking storage work on tokio's blocking thread pool, keeping the
/// caller's tracing span.
pub async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}
