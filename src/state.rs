//! The application context shared by every request.

use crate::auth::clients::IntrospectionClients;
use crate::auth::password::Hasher;
use crate::auth::throttle::LoginThrottle;
use crate::auth::tokens::Tokens;
use crate::config::{Cidr, Registration};
use crate::store::Store;

/// Everything a handler needs, built once at start (see [`crate::startup`]).
pub struct AppState {
    /// Users, sessions, the denylist: whatever engine holds them.
    pub store: Store,
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
    /// The resource servers allowed to call token introspection.
    pub introspection_clients: IntrospectionClients,
}
