//! Refresh tokens: their format, how they are stored (hashes only) and the
//! rotation rules, independent of any storage engine.
//!
//! A refresh token is `<sid>.<secret>`: the id of its session (public
//! anyway: access tokens carry it as `sid`) and 256 random bits, both
//! base64url. The database keeps only the SHA-256 of the secret, per session;
//! a presented token is found through its session's primary key and compared
//! with that session's hashes in constant time. Carrying the session id means
//! a guessed or garbage secret for a known session is just "invalid", never
//! mistaken for a stolen older token of that session (which would end it).
//!
//! Rotation (see [`decide`]): presenting the session's *current* token gives
//! a new pair and makes the presented one *previous*; presenting a previous
//! token within the reuse interval (two tabs refreshing at once) gives another
//! working pair of the same session; presenting a previous token after that
//! interval, or any older one, is theft: the session ends.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes of a session id (144 bits).
const SID_BYTES: usize = 18;
/// Random bytes of a refresh token's secret (256 bits).
const SECRET_BYTES: usize = 32;
/// Length of a base64url session id.
pub const SID_LEN: usize = 24;
/// Length of a base64url secret.
const SECRET_LEN: usize = 43;

/// The stored form of a refresh token's secret.
pub type TokenHash = [u8; 32];

/// A new session id: 144 random bits, URL-safe.
pub fn new_session_id() -> String {
    random_b64::<SID_BYTES>()
}

/// A freshly made refresh token and the hash to store.
pub struct NewRefreshToken {
    /// What the client gets (never stored, never logged).
    pub token: String,
    /// What the database keeps.
    pub hash: TokenHash,
}

/// A new refresh token for session `sid`.
pub fn new_token(sid: &str) -> NewRefreshToken {
    let secret = random_b64::<SECRET_BYTES>();
    let hash = hash_secret(&secret);
    NewRefreshToken {
        token: format!("{sid}.{secret}"),
        hash,
    }
}

/// A refresh token as presented: its session and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The session it names.
    pub sid: String,
    /// SHA-256 of its secret.
    pub hash: TokenHash,
}

/// Splits a presented refresh token; `None` for anything not of our shape
/// (so garbage never reaches the database).
pub fn parse(token: &str) -> Option<Presented> {
    let (sid, secret) = token.split_once('.')?;
    let shaped = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !shaped(sid, SID_LEN) || !shaped(secret, SECRET_LEN) {
        return None;
    }
    Some(Presented {
        sid: sid.to_owned(),
        hash: hash_secret(secret),
    })
}

/// Whether a session id has our shape (cheap refusal of garbage ids).
pub fn is_session_id(id: &str) -> bool {
    id.len() == SID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn hash_secret(secret: &str) -> TokenHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn random_b64<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One stored refresh token of a session, as the rules need it.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// SHA-256 of its secret.
    pub hash: Vec<u8>,
    /// The session's generation when it was issued.
    pub generation: i64,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
}

/// The rotation state of a session.
#[derive(Debug, Clone, Copy)]
pub struct RotationState {
    /// Tokens of this generation are current.
    pub generation: i64,
    /// When the current generation began (the last rotation), Unix ms.
    pub rotated_at_ms: i64,
}

/// What a presented refresh token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A current token: rotate (a new generation; the presented one becomes previous).
    Rotate,
    /// A previous token within the reuse interval: another current token of
    /// the same generation (the first tab's keeps working too).
    Reissue,
    /// Not a token of this session, or expired: `invalid_grant`, nothing changes.
    Invalid,
    /// A previous token after the interval, or an older one: theft. The
    /// session ends (durably) and the answer is `invalid_grant`.
    Theft,
}

/// Applies the rotation rules to a presented hash, given the session's
/// stored tokens and state. Every stored hash is compared (in constant time),
/// so the time taken does not say which one matched.
pub fn decide(
    presented: &TokenHash,
    tokens: &[StoredToken],
    state: RotationState,
    now_s: i64,
    now_ms: i64,
    reuse_interval_ms: i64,
) -> Decision {
    let mut found: Option<&StoredToken> = None;
    for token in tokens {
        if same_hash(&token.hash, presented) {
            found = Some(token);
        }
    }
    let Some(token) = found else {
        return Decision::Invalid;
    };
    if token.expires_at <= now_s {
        return Decision::Invalid;
    }
    if token.generation == state.generation {
        Decision::Rotate
    } else if token.generation == state.generation - 1
        && now_ms.saturating_sub(state.rotated_at_ms) <= reuse_interval_ms
    {
        Decision::Reissue
    } else {
        Decision::Theft
    }
}

/// The stored token `presented` is, if it is *current*: of the session's
/// current `generation` and not expired at `now_s` (RFC 7662 introspection
/// calls only such a token active; a previous one, even within the reuse
/// interval, is not). Every stored hash is compared, in constant time.
pub fn find_current<'a>(
    presented: &TokenHash,
    tokens: &'a [StoredToken],
    generation: i64,
    now_s: i64,
) -> Option<&'a StoredToken> {
    let mut found = None;
    for token in tokens {
        if same_hash(&token.hash, presented) {
            found = Some(token);
        }
    }
    found.filter(|t| t.generation == generation && t.expires_at > now_s)
}

/// Whether `presented` is any stored token of the session, of any
/// generation (RFC 7009 revocation ends the session for any of them).
/// Every stored hash is compared, in constant time.
pub fn is_any(presented: &TokenHash, tokens: &[StoredToken]) -> bool {
    tokens.iter().fold(false, |found, token| {
        same_hash(&token.hash, presented) | found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(token: &NewRefreshToken, generation: i64) -> StoredToken {
        StoredToken {
            hash: token.hash.to_vec(),
            generation,
            expires_at: 2_000_000_000,
        }
    }

    #[test]
    fn a_token_parses_back_to_its_session_and_hash() {
        let sid = new_session_id();
        let token = new_token(&sid);
        let presented = parse(&token.token).expect("our shape");
        assert_eq!(presented.sid, sid);
        assert_eq!(presented.hash, token.hash);
        assert!(token.token.len() >= 43 + 24);
    }

    #[test]
    fn garbage_does_not_parse() {
        let token = new_token(&new_session_id()).token;
        for bad in [
            "",
            ".",
            "abc",
            &token[1..],
            &format!("{token}x"),
            &token.replace('.', "!"),
            &format!("{}'.{}", &token[..23], &token[24..]),
            &"a".repeat(10_000),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn rotation_rules() {
        let sid = new_session_id();
        let (old, previous, current) = (new_token(&sid), new_token(&sid), new_token(&sid));
        let tokens = [stored(&old, 1), stored(&previous, 2), stored(&current, 3)];
        let state = RotationState {
            generation: 3,
            rotated_at_ms: 1_000_000,
        };
        let at = |ms: i64| (ms / 1000, ms);
        let d = |hash: &TokenHash, ms: i64| {
            let (s, ms) = at(ms);
            decide(hash, &tokens, state, s, ms, 10_000)
        };
        assert_eq!(d(&current.hash, 1_000_500), Decision::Rotate);
        assert_eq!(d(&previous.hash, 1_010_000), Decision::Reissue);
        assert_eq!(d(&previous.hash, 1_010_001), Decision::Theft);
        assert_eq!(d(&old.hash, 1_000_001), Decision::Theft);
        assert_eq!(d(&new_token(&sid).hash, 1_000_001), Decision::Invalid);
    }

    #[test]
    fn only_an_unexpired_token_of_the_current_generation_is_current() {
        let sid = new_session_id();
        let (previous, current, expired, other) = (
            new_token(&sid),
            new_token(&sid),
            new_token(&sid),
            new_token(&sid),
        );
        let mut tokens = vec![stored(&previous, 2), stored(&current, 3)];
        tokens.push(StoredToken {
            expires_at: 100,
            ..stored(&expired, 3)
        });
        let now = 1_000;
        assert!(find_current(&current.hash, &tokens, 3, now).is_some());
        assert!(find_current(&previous.hash, &tokens, 3, now).is_none());
        assert!(find_current(&expired.hash, &tokens, 3, now).is_none());
        assert!(find_current(&other.hash, &tokens, 3, now).is_none());
        for token in [&previous, &current, &expired] {
            assert!(is_any(&token.hash, &tokens));
        }
        assert!(!is_any(&other.hash, &tokens));
    }

    #[test]
    fn an_expired_token_is_invalid_not_theft() {
        let sid = new_session_id();
        let token = new_token(&sid);
        let tokens = [StoredToken {
            hash: token.hash.to_vec(),
            generation: 1,
            expires_at: 100,
        }];
        let state = RotationState {
            generation: 3,
            rotated_at_ms: 0,
        };
        assert_eq!(
            decide(&token.hash, &tokens, state, 100, 100_000, 10_000),
            Decision::Invalid
        );
    }
}
