//! Authentication mechanics, independent of HTTP: issuing and verifying JWTs
//! ([`tokens`]), hashing and checking passwords ([`password`]) and login
//! throttling ([`throttle`]).

pub mod password;
pub mod refresh;
pub mod throttle;
pub mod tokens;
pub mod verdict;
