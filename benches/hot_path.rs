//! Micro-benchmarks of what every authenticated request pays for: verifying
//! the HS256 token, and looking its `jti` up in the denylist (with a cached
//! statement, alone and inside an already-open read transaction), on an empty
//! denylist and on one with 1,000,000 rows.
//!
//! Run: `cargo bench --bench hot_path`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::Connection;
use tokengate::auth::tokens::Tokens;
use tokengate::config::Secret;
use tokengate::store::sqlite::denylist::{self, View};
use tokengate::store::sqlite::{migrations, pool};

const ROWS: usize = 1_000_000;

fn token_verification(c: &mut Criterion) {
    let tokens = Tokens::new(
        &Secret::new(vec![7u8; 32]),
        "tokengate",
        "tokengate",
        3600,
        30,
    );
    let token = tokens.issue(42, None, 0).expect("signing works").token;
    c.bench_function("tokens::verify (HS256, all claims)", |b| {
        b.iter(|| tokens.verify(black_box(&token)).expect("valid"))
    });
}

fn database(rows: usize) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let mut conn = pool::connect(&path, std::time::Duration::from_secs(5)).expect("open");
    migrations::migrate(&mut conn).expect("migrate");
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO revoked_tokens (jti, purge_after) VALUES (?1, ?2)")
            .expect("prepare");
        for i in 0..rows {
            insert
                .execute(rusqlite::params![format!("revoked-jti-{i:012}"), i64::MAX])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    (dir, conn)
}

fn denylist_lookup(c: &mut Criterion) {
    for rows in [0, ROWS] {
        let (_dir, conn) = database(rows);
        let denylist = denylist::Denylist::new(denylist::DEFAULT_MERGE_ROWS);
        c.bench_function(
            &format!("denylist (merged table plus the log's mirror), {rows} rows"),
            |b| {
                b.iter(|| {
                    denylist
                        .is_revoked(&conn, black_box("not-revoked-jti-0000"), View::Committed)
                        .expect("lookup")
                })
            },
        );
        conn.execute_batch("BEGIN").expect("begin");
        c.bench_function(
            &format!("denylist (merged table plus the log's mirror) in open read txn, {rows} rows"),
            |b| {
                b.iter(|| {
                    denylist
                        .is_revoked(
                            &conn,
                            black_box("revoked-jti-000000000007"),
                            View::Committed,
                        )
                        .expect("lookup")
                })
            },
        );
        conn.execute_batch("COMMIT").expect("commit");
    }
}

criterion_group!(benches, token_verification, denylist_lookup);
criterion_main!(benches);
