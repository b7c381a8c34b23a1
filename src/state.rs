//! The application context shared by every request.

use crate::auth::password::Hasher;
use crate::auth::throttle::LoginThrottle;
use crate::auth::tokens::Tokens;
use crate::config::{Cidr, Registration};
use crate::store::changes::{Changes, LookupCache};
use crate::store::denylist::Denylist;
use crate::store::{Pool, Readers};

/// Everything a handler needs, built once at start (see [`crate::startup`]).
pub struct AppState {
    /// Connection pool for user writes and logins (blocking-pool work).
    pub pool: Pool,
    /// Reader threads for the per-request lookups (denylist, user, health).
    pub readers: Readers,
    /// The database's version, read from its shared memory (`None`: unknown,
    /// nothing is cached).
    pub changes: Option<Changes>,
    /// Per-token lookup answers, valid for one database version.
    pub lookups: LookupCache,
    /// The revocation denylist.
    pub denylist: Denylist,
    /// Token signer and verifier.
    pub tokens: Tokens,
    /// Failed-login counters.
    pub throttle: LoginThrottle,
    /// Argon2 work, bounded in concurrency and queue.
    pub passwords: Hasher,
    /// Networks of reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Whether registration is open.
    pub registration: Registration,
    /// Clock leeway in seconds (also used when purging the denylist).
    pub leeway: u64,
}
