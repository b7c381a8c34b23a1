//! Issuing and verifying access tokens: HS256 with the shared secret, or
//! EdDSA/ES256 with the key set of [`crate::auth::keys`].

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::auth::keys::{KeyAlgorithm, KeyStore};
use crate::auth::verdict::{Issued, TokenFacts};
use crate::config::Secret;
use crate::store::LookupKey;

/// Longest token we try to verify; anything longer is rejected unparsed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims tokengate writes into every token. `sid` names the session
/// (v2); `iat_us` is the issue time in microseconds, so a token issued in the
/// same second as a global logout or password change, but before it, can be
/// told from one issued after it (see [`crate::auth::verdict`]).
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    iat_us: i64,
}

/// The claims of a token as they are parsed before the checks of
/// [`Tokens::verify`]. `iss` and `aud` values are checked by jsonwebtoken;
/// the types here make `iss` a string, `iat`/`nbf`/`exp` numbers, and `jti`
/// required (jsonwebtoken's required-claims list ignores it).
#[derive(Debug, Deserialize)]
struct ParsedClaims {
    #[allow(dead_code)] // its value is checked by jsonwebtoken; here only its type
    iss: String,
    sub: String,
    jti: String,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    iat_us: Option<i64>,
}

/// The claims a verified token is known to carry.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    /// The user id, as a string (canonical decimal, see [`parse_user_id`]).
    pub sub: String,
    /// The user id `sub` names.
    pub user_id: i64,
    /// The token's unique id (the denylist key).
    pub jti: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not-before, Unix seconds, if present.
    pub nbf: Option<i64>,
    /// Issued-at, Unix seconds, if present.
    pub iat: Option<i64>,
    /// The session the token belongs to (tokens issued before v2 have none).
    pub sid: Option<String>,
    /// When it was issued, as precisely as the token says.
    pub issued: Issued,
}

impl VerifiedClaims {
    /// What the token says about itself, for [`crate::auth::verdict::judge`].
    pub fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            user_id: self.user_id,
            sid: self.sid.as_deref(),
            issued: self.issued,
        }
    }

    /// The storage lookup this token needs.
    pub fn lookup_key(&self) -> LookupKey {
        LookupKey {
            jti: self.jti.clone(),
            sid: self.sid.clone(),
            user_id: self.user_id,
        }
    }
}

/// Longest `jti` accepted (ours are 24 characters); it becomes a denylist key.
pub const MAX_JTI_LEN: usize = 128;

/// The user id of a `sub`, only in its canonical decimal form: `"17"`, never
/// `"+17"`, `"017"`, `" 17"` or `"17.0"`, so one user has exactly one `sub`.
pub fn parse_user_id(sub: &str) -> Option<i64> {
    let canonical = !sub.is_empty()
        && sub.len() <= 19
        && sub.bytes().all(|b| b.is_ascii_digit())
        && !sub.starts_with('0');
    canonical.then(|| sub.parse::<i64>().ok()).flatten()
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Expiry instant.
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused; the text becomes the challenge's `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.description())]
pub enum TokenError {
    /// Past `exp` plus leeway.
    Expired,
    /// Before `nbf` minus leeway.
    NotYetValid,
    /// Anything else: bad signature, algorithm, claims or encoding.
    Invalid,
}

impl TokenError {
    /// The `error_description` of the `invalid_token` challenge.
    pub fn description(self) -> &'static str {
        match self {
            TokenError::Expired => "the access token has expired",
            TokenError::NotYetValid => "the access token is not valid yet",
            TokenError::Invalid => "the access token is invalid",
        }
    }
}

/// What signs and verifies.
// One value per process: its size does not matter, and boxing a variant
// would add a pointer chase to every HS256 verification.
#[allow(clippy::large_enum_variant)]
enum Signer {
    /// HS256 with the shared secret: one key, no `kid`.
    Secret {
        encoding: EncodingKey,
        decoding: DecodingKey,
        header: Header,
        validation: Validation,
    },
    /// EdDSA/ES256: the active key signs (its `kid` in the header); a token
    /// verifies only with the key its `kid` names, with that key's algorithm.
    Keys {
        store: Arc<KeyStore>,
        eddsa: Validation,
        es256: Validation,
    },
}

/// Signs and verifies tokens.
pub struct Tokens {
    signer: Signer,
    issuer: String,
    audience: String,
    ttl: u64,
    leeway: u64,
}

/// The claim checks of every token, accepting only `algorithm`: `exp`,
/// `sub`, `iss`, `aud` required (and `jti`, through [`ParsedClaims`]).
fn validation(algorithm: Algorithm, issuer: &str, audience: &str, leeway: u64) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = leeway;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation
}

impl Tokens {
    /// Builds the HS256 signer/verifier. Verification accepts HS256 only;
    /// header fields such as `kid` are ignored.
    pub fn new(secret: &Secret, issuer: &str, audience: &str, ttl: u64, leeway: u64) -> Self {
        Self {
            signer: Signer::Secret {
                encoding: EncodingKey::from_secret(secret.expose()),
                decoding: DecodingKey::from_secret(secret.expose()),
                header: Header::new(Algorithm::HS256),
                validation: validation(Algorithm::HS256, issuer, audience, leeway),
            },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            leeway,
        }
    }

    /// Builds the EdDSA/ES256 signer/verifier over a key set that may change
    /// while it runs (see [`KeyStore::reload`]).
    pub fn with_keys(
        store: Arc<KeyStore>,
        issuer: &str,
        audience: &str,
        ttl: u64,
        leeway: u64,
    ) -> Self {
        Self {
            signer: Signer::Keys {
                store,
                eddsa: validation(Algorithm::EdDSA, issuer, audience, leeway),
                es256: validation(Algorithm::ES256, issuer, audience, leeway),
            },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            leeway,
        }
    }

    /// The `iss` of the tokens issued and accepted.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` of the tokens issued and accepted.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The key set, when tokens are signed with EdDSA/ES256 keys (`None` with HS256).
    pub fn keys(&self) -> Option<&Arc<KeyStore>> {
        match &self.signer {
            Signer::Secret { .. } => None,
            Signer::Keys { store, .. } => Some(store),
        }
    }

    /// Issues a token for user `user_id` in session `sid`, valid from now
    /// for the configured TTL. `not_before_us` (Unix µs) is a moment the
    /// issue time must be after (a password change's mark); 0 for none.
    pub fn issue(
        &self,
        user_id: i64,
        sid: Option<&str>,
        not_before_us: i64,
    ) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let mut now = Utc::now();
        if now.timestamp_micros() <= not_before_us {
            now = DateTime::from_timestamp_micros(not_before_us + 1).unwrap_or(now);
        }
        let expires_at = now + chrono::Duration::seconds(self.ttl as i64);
        let claims = IssuedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: user_id.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: new_jti(),
            sid,
            iat_us: now.timestamp_micros(),
        };
        let token = match &self.signer {
            Signer::Secret {
                encoding, header, ..
            } => jsonwebtoken::encode(header, &claims, encoding)?,
            Signer::Keys { store, .. } => {
                let keys = store.current();
                let key = keys.active();
                jsonwebtoken::encode(key.header(), &claims, key.encoding_key())?
            }
        };
        Ok(IssuedToken {
            token,
            expires_in: self.ttl,
            expires_at: DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at),
        })
    }

    /// Verifies signature, algorithm and claims. Does not look at the denylist.
    ///
    /// Beyond jsonwebtoken's checks: no `crit` header (RFC 7515 4.1.11: we
    /// understand no extension, so a token that requires one is refused), a
    /// canonical `sub`, a `jti` of sane length, and an `exp` no further away
    /// than a token we issue now could have (so a revocation row never has to
    /// be kept for an absurd time).
    ///
    /// With EdDSA/ES256 keys, the header must name the `kid` of the active
    /// or a previous key, and the token verifies only with that key and its
    /// algorithm: no `kid`, an unknown or retired one, or another `alg` is
    /// [`TokenError::Invalid`].
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let decoded = match &self.signer {
            Signer::Secret {
                decoding,
                validation,
                ..
            } => jsonwebtoken::decode::<ParsedClaims>(token, decoding, validation),
            Signer::Keys {
                store,
                eddsa,
                es256,
            } => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
                let kid = header.kid.as_deref().ok_or(TokenError::Invalid)?;
                let keys = store.current();
                let key = keys.verifier(kid).ok_or(TokenError::Invalid)?;
                let validation = match key.algorithm() {
                    KeyAlgorithm::EdDsa => eddsa,
                    KeyAlgorithm::Es256 => es256,
                };
                // `validation` accepts only the key's algorithm, whatever
                // the header says: no HS256 with the public key as secret.
                jsonwebtoken::decode::<ParsedClaims>(token, key.decoding_key(), validation)
            }
        };
        let data = decoded.map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            _ => TokenError::Invalid,
        })?;
        if data.header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let claims = data.claims;
        let user_id = parse_user_id(&claims.sub).ok_or(TokenError::Invalid)?;
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(TokenError::Invalid);
        }
        let latest_exp = Utc::now().timestamp() + (self.ttl + self.leeway) as i64;
        if claims.exp > latest_exp {
            return Err(TokenError::Invalid);
        }
        if claims
            .sid
            .as_deref()
            .is_some_and(|sid| !crate::auth::refresh::is_session_id(sid))
        {
            return Err(TokenError::Invalid);
        }
        // iat_us counts only with a sid (v2 tokens), and only if it agrees
        // with iat; anything else falls back to whole seconds.
        let issued = match (claims.sid.as_ref(), claims.iat_us, claims.iat) {
            (Some(_), Some(us), Some(s)) if us.div_euclid(1_000_000) == s => Issued::Micros(us),
            (_, _, Some(s)) => Issued::Seconds(s),
            (_, _, None) => Issued::Unknown,
        };
        Ok(VerifiedClaims {
            sub: claims.sub,
            user_id,
            jti: claims.jti,
            exp: claims.exp,
            nbf: claims.nbf,
            iat: claims.iat,
            sid: claims.sid,
            issued,
        })
    }
}

/// 144 random bits, URL-safe base64 (24 characters).
fn new_jti() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"unit-test-secret-0123456789abcdef-xyz";

    fn tokens() -> Tokens {
        Tokens::new(&Secret::new(SECRET), "tokengate", "tokengate", 3600, 30)
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Arbitrary text never panics the verifier and is never accepted.
        #[test]
        fn arbitrary_text_is_never_accepted(text in ".{0,300}") {
            prop_assert!(tokens().verify(&text).is_err());
        }

        /// Three arbitrary base64url segments (JWT-shaped) are never accepted.
        #[test]
        fn arbitrary_jwt_shaped_input_is_never_accepted(
            header in proptest::collection::vec(any::<u8>(), 0..80),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            signature in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let token = format!("{}.{}.{}", b64(&header), b64(&payload), b64(&signature));
            prop_assert!(tokens().verify(&token).is_err());
        }

        /// Any single-character change to a valid token makes it invalid.
        #[test]
        fn any_change_to_a_valid_token_is_rejected(position in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.=-]") {
            let verifier = tokens();
            let token = verifier.issue(7, None, 0).expect("signing works").token;
            let i = position.index(token.len());
            let mut changed = token.clone();
            changed.replace_range(i..i + 1, &replacement);
            prop_assume!(changed != token);
            prop_assert!(verifier.verify(&changed).is_err(), "accepted {changed}");
        }

        /// Well-formed claims signed with any other key, or any algorithm other
        /// than HS256 with our key, are rejected.
        #[test]
        fn tokens_not_signed_by_us_with_hs256_are_rejected(
            other_key in proptest::collection::vec(any::<u8>(), 1..64),
            algorithm in prop::sample::select(vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
            sub in "[0-9]{1,6}",
            jti in "[A-Za-z0-9_-]{1,40}",
        ) {
            prop_assume!(!(other_key.as_slice() == SECRET && algorithm == Algorithm::HS256));
            let now = Utc::now().timestamp();
            let claims = serde_json::json!({
                "iss": "tokengate", "aud": "tokengate", "sub": sub, "jti": jti,
                "iat": now, "nbf": now, "exp": now + 600,
            });
            let key = if algorithm == Algorithm::HS256 { other_key.as_slice() } else { SECRET };
            let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &EncodingKey::from_secret(key))
                .expect("signing works");
            prop_assert!(tokens().verify(&token).is_err());
        }
    }

    #[test]
    fn a_token_we_issued_is_accepted() {
        let verifier = tokens();
        let issued = verifier.issue(7, None, 0).expect("signing works");
        let claims = verifier.verify(&issued.token).expect("valid");
        assert_eq!(claims.sub, "7");
        assert!(claims.jti.len() >= 22);
    }
}
