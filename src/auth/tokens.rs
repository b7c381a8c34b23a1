//! Issuing and verifying HS256 access tokens.

use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// Longest token we try to verify; anything longer is rejected unparsed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The claims tokengate writes into every token.
#[derive(Debug, Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

/// The claims a verified token is known to carry. `iss` and `aud` are checked
/// by jsonwebtoken; `jti` is a required field here because jsonwebtoken's
/// required-claims list ignores it. Numbers must be JSON numbers.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifiedClaims {
    /// The user id, as a string.
    pub sub: String,
    /// The token's unique id (the denylist key).
    pub jti: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not-before, Unix seconds, if present.
    #[serde(default)]
    pub nbf: Option<i64>,
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
pub enum TokenError {
    /// Past `exp` plus leeway.
    #[error("the access token has expired")]
    Expired,
    /// Before `nbf` minus leeway.
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// Anything else: bad signature, algorithm, claims or encoding.
    #[error("the access token is invalid")]
    Invalid,
}

/// Signs and verifies tokens with one key and one algorithm.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    header: Header,
    issuer: String,
    audience: String,
    ttl: u64,
}

impl Tokens {
    /// Builds the signer/verifier. Verification accepts HS256 only and requires
    /// `exp`, `sub`, `iss`, `aud` (and `jti`, through [`VerifiedClaims`]).
    pub fn new(secret: &Secret, issuer: &str, audience: &str, ttl: u64, leeway: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
            header: Header::new(Algorithm::HS256),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    /// Issues a token for user `user_id`, valid from now for the configured TTL.
    pub fn issue(&self, user_id: i64) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::seconds(self.ttl as i64);
        let claims = IssuedClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: user_id.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: new_jti(),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl,
            expires_at: DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at),
        })
    }

    /// Verifies signature, algorithm and claims. Does not look at the denylist.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        if claims.jti.is_empty() || claims.sub.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// 144 random bits, URL-safe base64 (24 characters).
fn new_jti() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
