//! The `users` table.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// A stored user, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id, the token's `sub`.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Lower-cased e-mail address.
    pub email: String,
    /// Creation time, RFC 3339 in UTC.
    pub created_at: String,
}

/// What login needs to check a password.
#[derive(Debug)]
pub struct Credentials {
    /// The user's id.
    pub id: i64,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Another user has this e-mail address (compared case-insensitively).
    #[error("e-mail address already registered")]
    EmailTaken,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Inserts a user; `email` must already be lower-cased.
pub fn create(
    conn: &Connection,
    name: &str,
    email: &str,
    password_hash: &str,
    created_at: &str,
) -> Result<User, CreateError> {
    let result = conn
        .prepare_cached(
            "INSERT INTO users (name, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut stmt| stmt.execute(params![name, email, password_hash, created_at]));
    match result {
        Ok(_) => Ok(User {
            id: conn.last_insert_rowid(),
            name: name.to_owned(),
            email: email.to_owned(),
            created_at: created_at.to_owned(),
        }),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Err(CreateError::EmailTaken)
        }
        Err(e) => Err(CreateError::Store(e.into())),
    }
}

/// Loads a user by id.
pub fn find_by_id(conn: &Connection, id: i64) -> Result<Option<User>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, email, created_at FROM users WHERE id = ?1")?;
    let user = stmt
        .query_row([id], |row| {
            Ok(User {
                id: row.get(0)?,
                name: row.get(1)?,
                email: row.get(2)?,
                created_at: row.get(3)?,
            })
        })
        .optional()?;
    Ok(user)
}

/// Looks up the password hash for an e-mail address (case-insensitive).
pub fn find_credentials(conn: &Connection, email: &str) -> Result<Option<Credentials>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, password_hash FROM users WHERE email = ?1")?;
    let found = stmt
        .query_row([email], |row| {
            Ok(Credentials {
                id: row.get(0)?,
                password_hash: row.get(1)?,
            })
        })
        .optional()?;
    Ok(found)
}

/// A real query on the schema, for `/health`.
pub fn check(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached("SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1)")?
        .query_row([], |_| Ok(()))?;
    Ok(())
}
