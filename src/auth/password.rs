//! Argon2id password hashing.
//!
//! Hashing is CPU- and memory-heavy (7 MiB per hash), so a [`Hasher`] runs it
//! on tokio's blocking pool, a bounded number at a time, with a bounded
//! queue in front: a burst of logins waits briefly instead of allocating the
//! argon2 memory once per request, and a burst beyond the queue is refused at
//! once ([`HashError::Busy`], a `503` with `Retry-After`) instead of waiting
//! for seconds. A hash keeps its slot until argon2 returns, even when the
//! request that asked for it is gone (a reset stream, a client that hung
//! up): dropping the request's future does not stop a blocking job, so
//! letting the slot go with it would let any number of hashes run at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

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

/// Hashes allowed to wait for a slot, per CPU, by default.
pub const DEFAULT_QUEUE_PER_CPU: usize = 32;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every slot is taken and the queue is full: try again shortly.
    #[error("too many password hashes are waiting")]
    Busy,
    /// Argon2 or the blocking pool failed.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

fn argon2() -> Argon2<'static> {
    let params =
        Params::new(MEMORY_KIB, ITERATIONS, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs argon2 work off the executor: at most `concurrency` at a time, at
/// most `queue` more waiting; beyond that, [`HashError::Busy`] at once.
pub struct Hasher {
    concurrency: usize,
    queue: usize,
    /// One permit per hash admitted (waiting or running).
    admitted: Arc<Semaphore>,
    /// One permit per hash running.
    slots: Arc<Semaphore>,
    counts: Arc<Counts>,
}

/// What the hasher has done, for tests and diagnostics.
#[derive(Default)]
struct Counts {
    running: AtomicUsize,
    peak_running: AtomicUsize,
    started: AtomicU64,
}

/// Marks one hash as running until dropped.
struct Running<'a>(&'a Counts);

impl<'a> Running<'a> {
    fn enter(counts: &'a Counts) -> Self {
        let now = counts.running.fetch_add(1, Ordering::SeqCst) + 1;
        counts.peak_running.fetch_max(now, Ordering::SeqCst);
        counts.started.fetch_add(1, Ordering::SeqCst);
        Self(counts)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hasher {
    /// A hasher running at most `concurrency` hashes (at least one) at a
    /// time, with at most `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            concurrency,
            queue,
            admitted: Arc::new(Semaphore::new(concurrency + queue)),
            slots: Arc::new(Semaphore::new(concurrency)),
            counts: Arc::default(),
        }
    }

    /// One hash per CPU at a time; `queue` waiting, or
    /// [`DEFAULT_QUEUE_PER_CPU`] per CPU if `None`.
    pub fn per_cpu(queue: Option<usize>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(cpus, queue.unwrap_or(DEFAULT_QUEUE_PER_CPU * cpus))
    }

    /// Hashes a password into a PHC string (argon2id).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run_limited(move || hash_now(&password)).await?
    }

    /// Whether `password` matches the PHC string `hash` (or, with `None`, a
    /// dummy hash, so an unknown user costs the same time as a wrong password).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        self.run_limited(move || {
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

    /// Runs `work` (argon2 or the like) on the blocking pool within the
    /// limits: [`HashError::Busy`] at once if the queue is full.
    pub async fn run_limited<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HashError::Failed(e.to_string()))?;
        let counts = self.counts.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            // The permits are released when the work returns, not when the
            // caller stops waiting for it.
            let _permits = (admitted, slot);
            let _running = Running::enter(&counts);
            span.in_scope(work)
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))
    }

    /// Hashes allowed to run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Hashes allowed to wait for a slot.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Hashes running now.
    pub fn running(&self) -> usize {
        self.counts.running.load(Ordering::SeqCst)
    }

    /// Hashes admitted and waiting for a slot now.
    pub fn waiting(&self) -> usize {
        let admitted = self.concurrency + self.queue - self.admitted.available_permits();
        admitted.saturating_sub(self.concurrency - self.slots.available_permits())
    }

    /// The most hashes that have run at once since this hasher was made.
    pub fn peak_running(&self) -> usize {
        self.counts.peak_running.load(Ordering::SeqCst)
    }

    /// Hashes started since this hasher was made.
    pub fn started(&self) -> u64 {
        self.counts.started.load(Ordering::SeqCst)
    }
}

/// Hashes on the current thread; for the CLI, which has no executor to protect.
pub fn hash_now(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

/// A hash of a random password with the same parameters as real ones.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = SaltString::generate(&mut OsRng);
        hash_now(random.as_str()).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_slots_outlive_dropped_callers() {
        let hasher = Arc::new(Hasher::new(1, 1));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut jobs = Vec::new();
        for _ in 0..2 {
            let (hasher, gate) = (hasher.clone(), gate.clone());
            jobs.push(tokio::spawn(async move {
                hasher
                    .run_limited(move || {
                        let _ = gate.lock().unwrap().recv();
                    })
                    .await
            }));
        }
        while hasher.running() != 1 || hasher.waiting() != 1 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            hasher.run_limited(|| ()).await,
            Err(HashError::Busy)
        ));

        // Callers that stop waiting do not free the running job's slot.
        for job in &jobs {
            job.abort();
        }
        for job in jobs {
            let _ = job.await;
        }
        assert_eq!(hasher.running(), 1, "the blocked job still runs");
        assert_eq!(hasher.waiting(), 0, "the waiting caller left the queue");
        let next = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run_limited(|| 7).await })
        };
        while hasher.waiting() != 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(hasher.running(), 1, "the next job waits for the slot");

        drop(release);
        assert!(next.await.unwrap().is_ok_and(|v| v == 7));
        assert_eq!(hasher.peak_running(), 1);
    }
}
