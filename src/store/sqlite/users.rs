//! The `users` table.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{CreateError, Credentials, StoreError, User, UserFacts};

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

/// Loads a user and their global-logout mark by id.
pub fn find_facts(conn: &Connection, id: i64) -> Result<Option<UserFacts>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, email, created_at, tokens_invalid_before_us FROM users WHERE id = ?1",
    )?;
    let user = stmt
        .query_row([id], |row| {
            Ok(UserFacts::new(
                User {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    email: row.get(2)?,
                    created_at: row.get(3)?,
                },
                row.get(4)?,
            ))
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

/// Stores a new password hash.
pub fn set_password(conn: &Connection, id: i64, password_hash: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
        .execute(params![id, password_hash])?;
    Ok(())
}

/// Records that every access token of `user_id` issued up to `at_us` (Unix
/// µs) is rejected from now on. Never moves the mark backwards.
pub fn mark_tokens_invalid(conn: &Connection, user_id: i64, at_us: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE users SET tokens_invalid_before_us = max(tokens_invalid_before_us, ?2) WHERE id = ?1",
    )?
    .execute(params![user_id, at_us])?;
    Ok(())
}

/// A real query on the schema, for `/health`.
pub fn check(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached("SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1)")?
        .query_row([], |_| Ok(()))?;
    Ok(())
}
