//! Authentication mechanics, independent of HTTP: issuing and verifying JWTs
//! ([`tokens`]), the EdDSA/ES256 signing keys and their rotation ([`keys`]),
//! hashing and checking passwords ([`password`]) and login throttling
//! ([`throttle`]).

pub mod keys;
pub mod password;
pub mod refresh;
pub mod throttle;
pub mod tokens;
pub mod verdict;
