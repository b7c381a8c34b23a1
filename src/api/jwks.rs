//! `GET /.well-known/jwks.json`: the public signing keys, for resource
//! servers that verify EdDSA/ES256 tokens themselves.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::auth::keys::PublicJwk;
use crate::state::AppState;

/// How long resource servers may cache the key set: a key is published as
/// `next` at least this long before it signs (see the README's rotation).
pub const JWKS_CACHE_CONTROL: &str = "public, max-age=600";

/// A public signing key (RFC 7517; `OKP` per RFC 8037, `EC` per RFC 7518).
#[derive(Debug, Object)]
#[oai(rename = "Jwk")]
pub struct JwkBody {
    /// Key type: `OKP` (Ed25519) or `EC` (P-256).
    pub kty: String,
    /// Curve: `Ed25519` or `P-256`.
    pub crv: String,
    /// The public key (`OKP`) or its x coordinate (`EC`), base64url.
    pub x: String,
    /// The y coordinate (`EC` only), base64url.
    #[oai(skip_serializing_if_is_none)]
    pub y: Option<String>,
    /// Key id: the RFC 7638 SHA-256 thumbprint; tokens name it in their header.
    pub kid: String,
    /// The only algorithm this key verifies: `EdDSA` or `ES256`.
    pub alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: String,
}

impl From<&PublicJwk> for JwkBody {
    fn from(jwk: &PublicJwk) -> Self {
        Self {
            kty: jwk.kty.to_owned(),
            crv: jwk.crv.to_owned(),
            x: jwk.x.clone(),
            y: jwk.y.clone(),
            kid: jwk.kid.clone(),
            alg: jwk.alg.to_owned(),
            use_: "sig".to_owned(),
        }
    }
}

/// A JWK Set (RFC 7517 section 5).
#[derive(Debug, Object)]
#[oai(rename = "JwkSet")]
pub struct JwkSetBody {
    /// The keys in states `next`, `active` and `previous`; empty with HS256.
    pub keys: Vec<JwkBody>,
}

/// Answers of `jwks`.
#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The public keys.
    #[oai(status = 200, content_type = "application/json")]
    Ok(
        Json<JwkSetBody>,
        /// `public, max-age=600`.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// The public signing keys.
pub struct JwksApi;

#[OpenApi(tag = "ApiTags::Keys")]
impl JwksApi {
    /// Public signing keys
    ///
    /// The public halves of the EdDSA/ES256 signing keys as a JWK Set:
    /// the active key, keys about to become active (`next`) and keys that
    /// signed tokens still valid (`previous`). A token's header names its
    /// key's `kid`; verify it with that key and its `alg` only. Never a
    /// private or symmetric key: with HS256 the set is empty. Cacheable for
    /// 600 seconds.
    #[oai(path = "/.well-known/jwks.json", method = "get", operation_id = "jwks")]
    async fn jwks(&self, state: Data<&Arc<AppState>>) -> JwksResponse {
        let keys = match state.tokens.keys() {
            Some(store) => store
                .current()
                .keys()
                .iter()
                .map(|key| JwkBody::from(key.public()))
                .collect(),
            None => Vec::new(),
        };
        JwksResponse::Ok(Json(JwkSetBody { keys }), JWKS_CACHE_CONTROL.to_owned())
    }
}
