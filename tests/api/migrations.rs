//! Upgrading a database written by an earlier tokengate: `tests/fixtures/v1.db`
//! was made by the v1 binary (two users, Ada and Grace, with the password
//! [`PASSWORD`](crate::helpers::PASSWORD), and one logout of Ada's token).

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_invalid_token, forge, now, spawn_app_with, valid_claims, PASSWORD};

/// The jti revoked in the fixture.
const REVOKED_JTI: &str = "TFjZG8h44Ns7VlMUNTqFNo_s";

/// A copy of the fixture in `dir`, its revocation made current (the v1 row
/// holds the token's `exp`; the token in the fixture has long expired).
fn v1_copy(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("tokengate.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.db"),
        &db,
    )
    .unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1, "the fixture is a version-1 database");
    conn.execute(
        "UPDATE revoked_tokens SET expires_at = ?1 WHERE jti = ?2",
        rusqlite::params![now() + 600, REVOKED_JTI],
    )
    .unwrap();
    db
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_in_place_and_keeps_users_and_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let db = v1_copy(dir.path());
    let app = spawn_app_with(|s| s.database = db.clone()).await;

    // Users survive, with their passwords.
    for email in ["ada@example.com", "grace@example.com"] {
        assert_eq!(
            app.login(email, PASSWORD).await.status(),
            StatusCode::OK,
            "{email}"
        );
    }
    // A v1 token (no sid) with the revoked jti is still refused...
    let mut revoked = valid_claims(1);
    revoked["jti"] = json!(REVOKED_JTI);
    let description = assert_invalid_token(app.current_user_with(&forge(&revoked)).await).await;
    assert!(description.contains("revoked"), "{description}");
    // ...and any other v1 token of the user works.
    assert_eq!(
        app.current_user_with(&forge(&valid_claims(1)))
            .await
            .status(),
        StatusCode::OK
    );

    // The schema is current, and the old row got the most generous purge
    // moment (exp plus the largest leeway), never an earlier one.
    let conn = app.db();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        version,
        tokengate::store::sqlite::migrations::LATEST_VERSION
    );
    let purge_after: i64 = conn
        .query_row(
            "SELECT purge_after FROM revoked_tokens WHERE jti = ?1",
            [REVOKED_JTI],
            |row| row.get(0),
        )
        .unwrap();
    assert!(purge_after >= now() + 600 + 86_400 - 5, "{purge_after}");
}
