//! Argon2id password hashing.
//!
//! Hashing is CPU- and memory-heavy, so [`hash`] and [`verify`] run on
//! tokio's blocking pool, at most one per CPU at a time: a burst of logins
//! queues instead of allocating the argon2 memory once per request (which
//! would let anyone inflate the server's memory by logging in concurrently).

use std::sync::OnceLock;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Memory cost in KiB. 7 MiB with 5 passes is one of OWASP's equivalent
/// argon2id settings (alongside 19 MiB / 2 passes), chosen to keep memory low.
const MEMORY_KIB: u32 = 7 * 1024;
/// Passes over the memory.
const ITERATIONS: u32 = 5;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn argon2() -> Argon2<'static> {
    let params =
        Params::new(MEMORY_KIB, ITERATIONS, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cpus)
    })
}

/// Runs argon2 work on the blocking pool, within the concurrency limit.
async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
    let _permit = permits()
        .acquire()
        .await
        .map_err(|e| HashError(e.to_string()))?;
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| HashError(e.to_string()))
}

/// Hashes a password into a PHC string (argon2id), off the executor.
pub async fn hash(password: String) -> Result<String, HashError> {
    run(move || hash_now(&password)).await?
}

/// Whether `password` matches the PHC string `hash` (or, with `None`, a dummy
/// hash, so an unknown user costs the same time as a wrong password).
pub async fn verify(password: String, hash: Option<String>) -> Result<bool, HashError> {
    run(move || {
        let hash: &str = match &hash {
            Some(hash) => hash,
            None => dummy_hash(),
        };
        match PasswordHash::new(hash) {
            Ok(parsed) => argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    })
    .await
}

/// Hashes on the current thread; for the CLI, which has no executor to protect.
pub fn hash_now(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// A hash of a random password with the same parameters as real ones.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = SaltString::generate(&mut OsRng);
        hash_now(random.as_str()).unwrap_or_default()
    })
}
