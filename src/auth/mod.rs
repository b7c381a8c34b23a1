//! Authentication mechanics, independent of HTTP: issuing and verifying JWTs
//! ([`tokens`]), the EdDSA/ES256 signing keys and their rotation ([`keys`]),
//! hashing and checking passwords ([`password`]), login throttling
//! ([`throttle`]) and the resource servers allowed to introspect tokens
//! ([`clients`]).

pub mod clients;
pub mod keys;
pub mod password;
pub mod refresh;
pub mod throttle;
pub mod tokens;
pub mod verdict;
