//! The resource servers allowed to call token introspection
//! (`--introspection-clients`), and the check of the HTTP Basic credentials
//! they present.
//!
//! Each secret is kept only as its SHA-256 and compared in constant time. A
//! check compares the presented id and secret with *every* configured client
//! (and with a dummy when there is none), so the time it takes says neither
//! whether the id exists nor how much of the secret was right.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{ClientCredentials, ConfigError, MIN_SECRET_BYTES};

/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

struct Client {
    id: String,
    id_hash: [u8; 32],
    secret_hash: [u8; 32],
}

/// The configured introspection clients.
pub struct IntrospectionClients {
    clients: Vec<Client>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A client id shows up in errors and logs: plain URL-safe characters only.
fn is_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl IntrospectionClients {
    /// Checks the configured entries: `id:secret` each, a usable id, a
    /// secret of at least [`MIN_SECRET_BYTES`] bytes, no id twice. Blank
    /// entries (a trailing comma, an empty variable) are skipped.
    pub fn from_config(entries: &[ClientCredentials]) -> Result<Self, ConfigError> {
        let mut clients: Vec<Client> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.expose().trim_ascii();
            if entry.is_empty() {
                continue;
            }
            let malformed = || ConfigError::ClientMalformed(index + 1);
            let colon = entry
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(malformed)?;
            let id = std::str::from_utf8(&entry[..colon]).map_err(|_| malformed())?;
            if !is_client_id(id) {
                return Err(malformed());
            }
            let secret = &entry[colon + 1..];
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::ClientSecretTooShort(
                    id.to_owned(),
                    secret.len(),
                ));
            }
            if clients.iter().any(|c| c.id == id) {
                return Err(ConfigError::ClientListedTwice(id.to_owned()));
            }
            clients.push(Client {
                id: id.to_owned(),
                id_hash: sha256(id.as_bytes()),
                secret_hash: sha256(secret),
            });
        }
        Ok(Self { clients })
    }

    /// No client configured: introspection refuses everyone.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The id of the client these credentials belong to, if any.
    pub fn authenticate(&self, id: &[u8], secret: &[u8]) -> Option<&str> {
        let (id_hash, secret_hash) = (sha256(id), sha256(secret));
        let mut found = None;
        for client in &self.clients {
            let matches: Choice =
                client.id_hash.ct_eq(&id_hash) & client.secret_hash.ct_eq(&secret_hash);
            if bool::from(matches) {
                found = Some(client.id.as_str());
            }
        }
        if self.clients.is_empty() {
            // The same work as one comparison, whose answer is always no.
            let dummy = [0u8; 32];
            let _ = bool::from(dummy.ct_eq(&id_hash) & dummy.ct_eq(&secret_hash));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-resource-server-secret-of-32-bytes-or-more";

    fn clients(entries: &[&str]) -> Result<IntrospectionClients, ConfigError> {
        let entries: Vec<ClientCredentials> = entries.iter().map(|e| e.parse().unwrap()).collect();
        IntrospectionClients::from_config(&entries)
    }

    #[test]
    fn only_the_right_id_and_secret_authenticate() {
        let set = clients(&[&format!("api:{SECRET}"), &format!("billing:{SECRET}x")]).unwrap();
        assert_eq!(set.authenticate(b"api", SECRET.as_bytes()), Some("api"));
        assert_eq!(
            set.authenticate(b"billing", format!("{SECRET}x").as_bytes()),
            Some("billing")
        );
        assert_eq!(set.authenticate(b"billing", SECRET.as_bytes()), None);
        assert_eq!(set.authenticate(b"nobody", SECRET.as_bytes()), None);
        assert_eq!(set.authenticate(b"api", b""), None);
        assert!(clients(&[]).unwrap().authenticate(b"", b"").is_none());
    }

    #[test]
    fn secrets_may_contain_colons_and_blank_entries_are_skipped() {
        let secret = format!("{SECRET}:with:colons");
        let set = clients(&["", &format!(" api:{secret} "), "  "]).unwrap();
        assert_eq!(set.authenticate(b"api", secret.as_bytes()), Some("api"));
    }

    #[test]
    fn bad_entries_are_refused_without_showing_the_secret() {
        let short = "api:short-secret-1234";
        let error = clients(&[short]).err().unwrap().to_string();
        assert!(error.contains("32") && error.contains("api"), "{error}");
        assert!(!error.contains("short-secret"), "{error}");
        for entry in [
            format!("no-colon-{SECRET}"),
            format!(":{SECRET}"),
            format!("sp ace:{SECRET}"),
            format!("{}:{SECRET}", "x".repeat(65)),
        ] {
            let error = clients(&[&entry]).err().unwrap().to_string();
            assert!(error.contains("entry 1"), "{error}");
            assert!(!error.contains(SECRET), "{error}");
        }
        let twice = format!("api:{SECRET}");
        let error = clients(&[&twice, &twice]).err().unwrap().to_string();
        assert!(error.contains("more than once"), "{error}");
    }
}
