//! Failing closed, visibly, while the database is unusable, and recovering by
//! itself when it comes back: the file removed or replaced, a lock held by
//! another process beyond the timeout, a full disk (a tiny tmpfs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{assert_error, spawn_app_with, TestApp};

async fn assert_unavailable(app: &TestApp, token: &str) {
    assert_error(
        app.current_user_with(token).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert_error(
        app.get("/health").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert_error(
        app.logout_with(token).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
}

/// The database is back: the token reads, logs out, and is then refused.
async fn assert_recovered(app: &TestApp, token: &str) {
    assert_eq!(app.current_user_with(token).await.status(), StatusCode::OK);
    assert_eq!(
        app.logout_with(token).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.current_user_with(token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn removed_database_file_gives_503_and_service_recovers_when_it_is_back() {
    let app = spawn_app_with(|_| {}).await;
    let (_, token) = app.user_with_token("gone@example.com").await;
    let db = app.db_path();
    let moved = db.with_extension("moved");

    std::fs::rename(&db, &moved).unwrap();
    assert_unavailable(&app, &token).await;

    std::fs::rename(&moved, &db).unwrap();
    assert_recovered(&app, &token).await;
}

#[tokio::test]
async fn replaced_database_file_is_followed_not_written_behind_its_back() {
    let app = spawn_app_with(|_| {}).await;
    let (_, token) = app.user_with_token("replaced@example.com").await;
    let db = app.db_path();
    // A backup taken through SQLite, then the live file deleted with its
    // -wal and -shm (a restore must not leave the old WAL beside the new
    // file: SQLite would replay it into the backup).
    let backup = db.with_extension("backup");
    app.db()
        .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
        .unwrap();
    std::fs::remove_file(&db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    assert_unavailable(&app, &token).await;

    // The backup restored (a new file at the path): the service follows it.
    std::fs::copy(&backup, &db).unwrap();
    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );
    let revoked: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM revocations WHERE jti NOT LIKE 's:%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(revoked, 1, "the revocation is in the file at the path");
}

#[tokio::test]
async fn lock_held_by_another_process_gives_503_within_the_timeout_and_reads_go_on() {
    let app = spawn_app_with(|s| s.db_timeout_ms = 300).await;
    let (_, token) = app.user_with_token("locked@example.com").await;
    let (_, other) = app.user_with_token("other@example.com").await;
    let db = app.db_path();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();

    let started = Instant::now();
    let response = app.logout_with(&token).await;
    let waited = started.elapsed();
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    // WAL: readers are not blocked by the writer's lock.
    assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    // The writer may still be busy with the timed-out batch (its lock wait
    // ends in steps of up to 100 ms, then a commit and a sync). Another
    // user's logout queues behind it: once one is answered (not 503), the
    // writer is through, and the logout below is not judged on a loaded
    // machine's 300 ms budget for two commits.
    let mut through = false;
    for _ in 0..100 {
        let status = app.logout_with(&other).await.status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                status == StatusCode::NO_CONTENT || status == StatusCode::UNAUTHORIZED,
                "{status}"
            );
            through = true;
            break;
        }
    }
    assert!(
        through,
        "the writer never recovered after the lock was released"
    );
    // The timed-out revocation may still have committed once the lock was
    // released (erring on the side of revoking): then this is a 401.
    let status = app.logout_with(&token).await.status();
    assert!(
        status == StatusCode::NO_CONTENT || status == StatusCode::UNAUTHORIZED,
        "{status}"
    );
    assert_eq!(
        app.current_user_with(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// A tmpfs of a few hundred KiB, unmounted on drop.
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(dir: &Path) -> Option<TinyFs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=768k,mode=0700", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| TinyFs(dir.to_owned()))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn full_disk_gives_503_on_logout_and_recovers_when_space_is_freed() {
    let outer = tempfile::tempdir().unwrap();
    let Some(fs) = TinyFs::mount(outer.path()) else {
        // Mounting needs root (CI runs as root); say so rather than pass silently.
        eprintln!("SKIPPED full_disk test: cannot mount a tmpfs here (not root?)");
        return;
    };
    let dir = fs.0.clone();
    let app = spawn_app_with(|s| s.database = dir.join("tokengate.db")).await;
    let (_, token) = app.user_with_token("full@example.com").await;
    let (_, other) = app.user_with_token("full2@example.com").await;

    // Fill the filesystem.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let mut answered_503 = false;
    for token in [&token, &other] {
        let response = app.logout_with(token).await;
        let status = response.status();
        assert!(
            status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::NO_CONTENT,
            "a full disk gives 503 (or 204 if the WAL still had room), got {status}"
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            answered_503 = true;
            assert_error(
                response,
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
            )
            .await;
            // Not revoked, and reads still work.
            assert_eq!(app.current_user_with(token).await.status(), StatusCode::OK);
        }
    }
    assert!(
        answered_503,
        "with the disk full, a logout must fail closed"
    );
    // Health tells the truth: revocations cannot be written, so not "ok".
    assert_error(
        app.get("/health").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    for token in [&token, &other] {
        let status = app.logout_with(token).await.status();
        assert!(status == StatusCode::NO_CONTENT || status == StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.current_user_with(token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn unreadable_database_gives_503_and_service_recovers_when_it_is_restored() {
    // Permissions do not stop root (CI runs as root), so "unreadable" here is
    // a file at the path that is not a database any more.
    let app = spawn_app_with(|s| s.db_timeout_ms = 500).await;
    let (_, token) = app.user_with_token("unreadable@example.com").await;
    let db = app.db_path();
    let backup = db.with_extension("backup");
    app.db()
        .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
        .unwrap();

    let garbage = db.with_extension("garbage");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    std::fs::rename(&garbage, &db).unwrap();
    assert_unavailable(&app, &token).await;
    assert_error(
        app.login("unreadable@example.com", crate::helpers::PASSWORD)
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;

    std::fs::rename(&backup, &db).unwrap();
    assert_recovered(&app, &token).await;
}

/// Overwrites `path` in place (same inode, no truncation) with `bytes`.
fn overwrite_in_place(path: &Path, bytes: &[u8]) {
    use std::io::{Seek, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A WAL file whose 32-byte header is well formed (magic, version, page
/// size, fresh random salts, a correct checksum) followed by `frames` frames
/// of garbage: SQLite's recovery accepts the header and finds no valid frame.
fn wal_with_valid_header_then_garbage(frames: usize) -> Vec<u8> {
    let salts = random_bytes(8);
    let mut header = Vec::with_capacity(32);
    header.extend_from_slice(&0x377f_0683u32.to_be_bytes()); // big-endian checksums
    header.extend_from_slice(&3_007_000u32.to_be_bytes());
    header.extend_from_slice(&4096u32.to_be_bytes());
    header.extend_from_slice(&7u32.to_be_bytes()); // checkpoint sequence
    header.extend_from_slice(&salts);
    let (mut s0, mut s1) = (0u32, 0u32);
    for pair in header.chunks(8) {
        let x0 = u32::from_be_bytes(pair[0..4].try_into().unwrap());
        let x1 = u32::from_be_bytes(pair[4..8].try_into().unwrap());
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    header.extend_from_slice(&s0.to_be_bytes());
    header.extend_from_slice(&s1.to_be_bytes());
    header.extend(random_bytes(frames * (24 + 4096)));
    header
}

#[tokio::test]
async fn database_overwritten_in_place_with_garbage_is_never_answered_from_memory() {
    // The reproduction of the report: a server restarted on its database
    // (registration closed: nothing writes), one login, reads that work;
    // then the database, its -wal and its -shm overwritten in place with
    // random bytes (the WAL with a well-formed header and fresh salts). A
    // reader then runs SQLite's WAL recovery, which rewrites the WAL-index
    // header; no answer remembered from before may count as current.
    let app = spawn_app_with(|s| s.db_timeout_ms = 1000).await;
    let user = app.register_user("garbage@example.com").await;
    let mut stopped = app.stop().await;
    stopped.settings.registration = tokengate::config::Registration::Closed;
    let app = stopped.restart().await;
    let token = app.login_token(&user).await;
    for _ in 0..3 {
        assert_eq!(app.current_user_with(&token).await.status(), StatusCode::OK);
    }

    let db = app.db_path();
    let sidecar = |suffix: &str| PathBuf::from(format!("{}{suffix}", db.display()));
    let db_len = std::fs::metadata(&db).unwrap().len() as usize;
    let shm_len = std::fs::metadata(sidecar("-shm")).unwrap().len() as usize;
    overwrite_in_place(&db, &random_bytes(db_len));
    overwrite_in_place(&sidecar("-wal"), &wal_with_valid_header_then_garbage(4));
    overwrite_in_place(&sidecar("-shm"), &random_bytes(shm_len));

    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.current_user_with(&token).await.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 503),
        "every read of a garbage database fails closed: {statuses:?}"
    );
}

#[tokio::test]
async fn a_backup_restored_at_the_path_is_read_as_it_is_not_as_remembered() {
    // Revocations are numbered in the file's log; a backup restored at the
    // path numbers its next ones from where *it* was. What this process
    // remembers of the old file's log must not hide a revocation committed
    // into the restored one (nor keep one the backup does not have).
    let app = spawn_app_with(|_| {}).await;
    let user = app.register_user("restore@example.com").await;
    let a = app.login_token(&user).await;
    let b = app.login_token(&user).await;
    let db = app.db_path();
    let backup = db.with_extension("backup");
    app.db()
        .execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
        .unwrap();
    assert_eq!(app.logout_with(&a).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.current_user_with(&a).await.status(),
        StatusCode::UNAUTHORIZED
    );

    std::fs::remove_file(&db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&backup, &db).unwrap();

    assert_eq!(app.logout_with(&b).await.status(), StatusCode::NO_CONTENT);
    crate::helpers::assert_invalid_token(app.current_user_with(&b).await).await;
    // The backup predates A's logout: in the file now, A was never revoked.
    assert_eq!(app.current_user_with(&a).await.status(), StatusCode::OK);
}
