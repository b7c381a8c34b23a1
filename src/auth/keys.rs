//! The signing keys of EdDSA and ES256 tokens: a directory of PEM files and
//! a state file, loaded into a [`KeySet`], kept current in a running process
//! by [`KeyStore::reload`].
//!
//! The keys directory holds:
//! - `<kid>.pem`: one private key per file (PKCS#8 PEM, mode 0600), named by
//!   its `kid`, the RFC 7638 SHA-256 thumbprint of its public JWK;
//! - `state.json`: each key's state, algorithm and creation time;
//! - `.lock`: locked (`flock`) by whoever changes the directory.
//!
//! Writers (the first start, `tokengate keys ...`) replace files atomically
//! (temporary file, `fsync`, `rename`, `fsync` of the directory) and order
//! their steps so that readers need no lock: a key file exists before
//! `state.json` names it, and is removed only after `state.json` has stopped
//! naming it. A key file that is gone (removed or moved away) is a retired
//! key, whatever `state.json` says, unless it is the active one.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use chrono::{SecondsFormat, Utc};
use ed25519_dalek::pkcs8::KeypairBytes;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand::{Rng, TryRngCore};
use serde::{Deserialize, Serialize};

use crate::config::JwtAlgorithm;

/// The file that records every key's state.
pub const STATE_FILE: &str = "state.json";

/// The lock file taken by writers.
const LOCK_FILE: &str = ".lock";

/// Length of a `kid`: 32 bytes of SHA-256, base64url without padding.
pub const KID_LEN: usize = 43;

/// Largest key or state file read; ours are a few hundred bytes.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The kinds of signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// Ed25519 signatures (`alg: EdDSA`).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (`alg: ES256`).
    #[serde(rename = "ES256")]
    Es256,
}

impl KeyAlgorithm {
    /// The kind of key a configured algorithm signs with; `None` for HS256,
    /// which uses the shared secret and no keys.
    pub fn for_setting(algorithm: JwtAlgorithm) -> Option<Self> {
        match algorithm {
            JwtAlgorithm::Hs256 => None,
            JwtAlgorithm::EdDsa => Some(Self::EdDsa),
            JwtAlgorithm::Es256 => Some(Self::Es256),
        }
    }

    /// The JWT `alg` of tokens signed with such a key.
    pub fn jwt(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
            Self::Es256 => Algorithm::ES256,
        }
    }

    /// The name used in `alg`, `state.json` and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }
}

/// Where a key is in its rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published in the JWKS, signs nothing yet.
    Next,
    /// Signs new tokens (exactly one key), verifies, published.
    Active,
    /// Signed earlier tokens: verifies them, published, signs nothing.
    Previous,
}

impl KeyState {
    /// The name used in `state.json` and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Previous => "previous",
        }
    }
}

/// One key's entry in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The key's id: its RFC 7638 thumbprint, and its file name without `.pem`.
    pub kid: String,
    /// Its state.
    pub state: KeyState,
    /// Its kind.
    pub algorithm: KeyAlgorithm,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    keys: Vec<KeyRecord>,
}

/// A key's public half as published in the JWKS (RFC 7517/7518/8037 members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// `OKP` (Ed25519) or `EC` (P-256).
    pub kty: &'static str,
    /// `Ed25519` or `P-256`.
    pub crv: &'static str,
    /// The public key (Ed25519) or its x coordinate (P-256), base64url.
    pub x: String,
    /// The y coordinate (P-256 only), base64url.
    pub y: Option<String>,
    /// The key id.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: &'static str,
}

/// A loaded key: its record, what signs and verifies with it, and its public JWK.
pub struct Key {
    record: KeyRecord,
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    public: PublicJwk,
}

impl Key {
    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        &self.record.kid
    }

    /// The key's state-file entry.
    pub fn record(&self) -> &KeyRecord {
        &self.record
    }

    /// The key's kind.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.record.algorithm
    }

    /// What signs tokens with this key.
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// What verifies tokens signed with this key (its public half only).
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The header of tokens this key signs: its `alg` and `kid`.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The public JWK.
    pub fn public(&self) -> &PublicJwk {
        &self.public
    }
}

/// The keys of one consistent reading of the keys directory: exactly one
/// active key, any number of `next` and `previous` ones.
pub struct KeySet {
    keys: Vec<Key>,
    active: usize,
}

impl KeySet {
    /// The key that signs.
    pub fn active(&self) -> &Key {
        &self.keys[self.active]
    }

    /// The key that may verify a token whose header names `kid`: the active
    /// key or a previous one (a `next` key has signed nothing yet).
    pub fn verifier(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|key| {
            key.record.kid == kid
                && matches!(key.record.state, KeyState::Active | KeyState::Previous)
        })
    }

    /// Every key, in `state.json` order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// Why the keys directory cannot be used (or changed as asked).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file is readable by group or others.
    #[error("the key file {0} is readable by group or others (mode {1:o}); run `chmod 600 {0}`")]
    FileTooOpen(String, u32),
    /// A key file belongs to another user.
    #[error(
        "the key file {0} belongs to user id {1}, not to this process (user id {2}); \
         remove it, or `chown` it if it is really yours"
    )]
    FileForeign(String, u32, u32),
    /// A file or the directory could not be read or written.
    #[error("cannot use {0}: {1}")]
    Io(String, std::io::Error),
    /// The directory's contents are inconsistent.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// The directory holds no key at all.
    #[error(
        "there are no signing keys in {0} (the first start with --jwt-algorithm EdDSA or ES256 \
         generates one, and so does `tokengate keys add`)"
    )]
    NoKeys(String),
    /// No key has this `kid`.
    #[error("there is no key with kid {0} in {1} (`tokengate keys list` shows them)")]
    UnknownKid(String, String),
    /// The text given as a `kid` cannot be one.
    #[error("{0:?} is not a key id (a kid is 43 characters of A-Z, a-z, 0-9, - and _)")]
    NotAKid(String),
    /// Retiring the active key would leave nothing to sign with.
    #[error(
        "key {0} is active and cannot be retired; \
         add and activate another key first (`tokengate keys add`, `tokengate keys activate KID`)"
    )]
    RetireActive(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |e| KeyError::Io(path.display().to_string(), e)
}

fn invalid(path: &Path, problem: impl Into<String>) -> KeyError {
    KeyError::Invalid(path.display().to_string(), problem.into())
}

/// Whether `text` has the shape of a `kid` (so it is also a safe file name).
pub fn is_kid(text: &str) -> bool {
    text.len() == KID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK.
pub fn thumbprint(jwk: &Jwk) -> Result<String, jsonwebtoken::errors::Error> {
    jwk.thumbprint(ThumbprintHash::SHA256)
}

/// A private key parsed from PEM, with what jsonwebtoken signs with.
struct PrivateKey {
    algorithm: KeyAlgorithm,
    /// PKCS#8 DER as jsonwebtoken's backend reads it.
    der: Vec<u8>,
}

impl PrivateKey {
    /// Parses a PKCS#8 PEM private key, Ed25519 or P-256.
    fn from_pem(text: &str) -> Option<Self> {
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            return Some(Self::ed25519(&key));
        }
        if let Ok(key) = p256::SecretKey::from_pkcs8_pem(text) {
            return Self::p256(&key);
        }
        None
    }

    fn ed25519(key: &ed25519_dalek::SigningKey) -> Self {
        // jsonwebtoken wants the 48-byte PKCS#8 v1 form (no public key inside).
        let bytes = KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: None,
        };
        let der = bytes
            .to_pkcs8_der()
            .map(|doc| doc.as_bytes().to_vec())
            .unwrap_or_default();
        Self {
            algorithm: KeyAlgorithm::EdDsa,
            der,
        }
    }

    fn p256(key: &p256::SecretKey) -> Option<Self> {
        let der = key.to_pkcs8_der().ok()?.as_bytes().to_vec();
        Some(Self {
            algorithm: KeyAlgorithm::Es256,
            der,
        })
    }

    /// A new random key (from the operating system's generator).
    fn generate(algorithm: KeyAlgorithm) -> Result<Self, std::io::Error> {
        let mut seed = [0u8; 32];
        let result = loop {
            rand::rngs::OsRng
                .try_fill_bytes(&mut seed)
                .map_err(std::io::Error::other)?;
            match algorithm {
                KeyAlgorithm::EdDsa => {
                    break Some(Self::ed25519(&ed25519_dalek::SigningKey::from_bytes(&seed)))
                }
                // Rejection sampling: a seed of zero or at least the group
                // order is not a key; draw again (probability about 2^-32).
                KeyAlgorithm::Es256 => match p256::SecretKey::from_slice(&seed) {
                    Ok(key) => break Self::p256(&key),
                    Err(_) => continue,
                },
            }
        };
        seed.fill(0);
        result.ok_or_else(|| std::io::Error::other("cannot encode the new key"))
    }

    /// The PEM text of the key file.
    fn to_pem(&self) -> Result<String, std::io::Error> {
        let pem = match self.algorithm {
            KeyAlgorithm::EdDsa => KeypairBytes::from_pkcs8_der(&self.der)
                .and_then(|key| key.to_pkcs8_pem(LineEnding::LF)),
            KeyAlgorithm::Es256 => p256::SecretKey::from_pkcs8_der(&self.der)
                .map_err(|_| p256::pkcs8::Error::KeyMalformed)
                .and_then(|key| key.to_pkcs8_pem(LineEnding::LF)),
        };
        pem.map(|pem| pem.to_string())
            .map_err(std::io::Error::other)
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.algorithm {
            KeyAlgorithm::EdDsa => EncodingKey::from_ed_der(&self.der),
            KeyAlgorithm::Es256 => EncodingKey::from_ec_der(&self.der),
        }
    }

    /// The public JWK (no `kid` yet) and its thumbprint.
    fn public_jwk(&self) -> Result<(Jwk, String), jsonwebtoken::errors::Error> {
        let jwk = Jwk::from_encoding_key(&self.encoding_key(), self.algorithm.jwt())?;
        let kid = thumbprint(&jwk)?;
        Ok((jwk, kid))
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.der.fill(0);
    }
}

/// Builds the loaded form of a key whose record and private key agree.
fn build_key(record: KeyRecord, private: &PrivateKey, path: &Path) -> Result<Key, KeyError> {
    if private.algorithm != record.algorithm {
        return Err(invalid(
            path,
            format!(
                "holds an {} key, but {STATE_FILE} says {}",
                private.algorithm.name(),
                record.algorithm.name()
            ),
        ));
    }
    let (jwk, kid) = private
        .public_jwk()
        .map_err(|e| invalid(path, format!("unusable key: {e}")))?;
    if kid != record.kid {
        // A file whose key is not the one its name promises (a foreign key
        // put under a real kid) is refused, never used.
        return Err(invalid(
            path,
            format!("the key's thumbprint is {kid}, not the kid in its name"),
        ));
    }
    let decoding =
        DecodingKey::from_jwk(&jwk).map_err(|e| invalid(path, format!("unusable key: {e}")))?;
    let public = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) => PublicJwk {
            kty: "OKP",
            crv: "Ed25519",
            x: p.x.clone(),
            y: None,
            kid: kid.clone(),
            alg: record.algorithm.name(),
        },
        AlgorithmParameters::EllipticCurve(p) => PublicJwk {
            kty: "EC",
            crv: "P-256",
            x: p.x.clone(),
            y: Some(p.y.clone()),
            kid: kid.clone(),
            alg: record.algorithm.name(),
        },
        _ => return Err(invalid(path, "unsupported key type")),
    };
    let mut header = Header::new(record.algorithm.jwt());
    header.kid = Some(kid);
    Ok(Key {
        encoding: private.encoding_key(),
        decoding,
        header,
        public,
        record,
    })
}

/// What `activate` changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// The key is active now; the previously active key (if any) is `previous`.
    Activated {
        /// The key that was active before.
        previous: Option<String>,
    },
    /// The key was active already; nothing changed.
    AlreadyActive,
}

/// The identity of one file of the directory at one moment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FileStamp {
    name: String,
    device: u64,
    inode: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    mode: u32,
    uid: u32,
}

/// The identity of the directory's relevant files, to tell cheaply whether
/// anything changed since the last reading.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<FileStamp>);

/// A keys directory: reading it, and the changes the CLI makes.
#[derive(Debug, Clone)]
pub struct KeyDir {
    path: PathBuf,
}

/// An exclusive `flock` on the directory's lock file, released on drop.
struct DirLock(#[allow(dead_code)] fs::File);

impl KeyDir {
    /// The keys directory at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn key_path(&self, kid: &str) -> PathBuf {
        self.path.join(format!("{kid}.pem"))
    }

    /// Creates the directory (mode 0700) if needed and locks it.
    fn lock(&self) -> Result<DirLock, KeyError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(io_error(&self.path))?;
        let path = self.path.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        // SAFETY: flock on a descriptor we own; it is released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(KeyError::Io(
                path.display().to_string(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(DirLock(file))
    }

    /// Reads `state.json`; `None` if there is none.
    fn read_state(&self) -> Result<Option<StateFile>, KeyError> {
        let path = self.path.join(STATE_FILE);
        let text = match read_small(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(KeyError::Io(path.display().to_string(), e)),
        };
        let state: StateFile = serde_json::from_str(&text)
            .map_err(|e| invalid(&path, format!("not a valid state file: {e}")))?;
        let mut seen = BTreeSet::new();
        for record in &state.keys {
            if !is_kid(&record.kid) {
                return Err(invalid(&path, format!("{:?} is not a kid", record.kid)));
            }
            if !seen.insert(record.kid.as_str()) {
                return Err(invalid(&path, format!("{} is listed twice", record.kid)));
            }
        }
        Ok(Some(state))
    }

    /// Writes `state.json` atomically.
    fn write_state(&self, state: &StateFile) -> Result<(), KeyError> {
        let mut text = serde_json::to_string_pretty(state)
            .map_err(|e| invalid(&self.path, format!("cannot encode the state: {e}")))?;
        text.push('\n');
        write_atomically(&self.path, STATE_FILE, text.as_bytes())
    }

    /// Whether any `*.pem` file is in the directory.
    fn has_key_files(&self) -> Result<bool, KeyError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(KeyError::Io(self.shown(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error(&self.path))?;
            if entry.file_name().to_string_lossy().ends_with(".pem") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads and checks one key file: mode 0600 (or stricter), owned by this
    /// process's user, a parsable private key. `Ok(None)` if it is gone.
    fn read_key_file(&self, kid: &str) -> Result<Option<PrivateKey>, KeyError> {
        let path = self.key_path(kid);
        let shown = path.display().to_string();
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(KeyError::Io(shown, e)),
        };
        // Checked on the open file, so the checks and the read see one file.
        let meta = file.metadata().map_err(io_error(&path))?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::FileTooOpen(shown, mode));
        }
        // A key file someone else planted would make us sign with a key they know.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(KeyError::FileForeign(shown, meta.uid(), me));
        }
        let mut text = String::new();
        Read::by_ref(&mut file)
            .take(MAX_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(io_error(&path))?;
        let key = PrivateKey::from_pem(&text)
            .ok_or_else(|| invalid(&path, "not an Ed25519 or P-256 private key in PKCS#8 PEM"));
        // The PEM text held the private key; do not leave it in freed memory.
        text.into_bytes().fill(0);
        key.map(Some)
    }

    /// Reads the directory into a key set. A key whose file is gone is
    /// retired (skipped), unless it is the active one.
    pub fn load(&self) -> Result<KeySet, KeyError> {
        let state_path = self.path.join(STATE_FILE);
        let Some(state) = self.read_state()? else {
            if self.has_key_files()? {
                return Err(invalid(
                    &state_path,
                    "missing, but the directory holds key files (each key's state is kept there)",
                ));
            }
            return Err(KeyError::NoKeys(self.shown()));
        };
        let mut keys = Vec::with_capacity(state.keys.len());
        for record in state.keys {
            let path = self.key_path(&record.kid);
            match self.read_key_file(&record.kid)? {
                Some(private) => keys.push(build_key(record, &private, &path)?),
                None if record.state == KeyState::Active => {
                    return Err(invalid(&path, "the active key's file is missing"));
                }
                None => {} // removed or moved away: retired
            }
        }
        let mut active = keys
            .iter()
            .enumerate()
            .filter(|(_, key)| key.record.state == KeyState::Active)
            .map(|(i, _)| i);
        match (active.next(), active.next()) {
            (Some(active), None) => Ok(KeySet { keys, active }),
            (None, _) if keys.is_empty() => Err(KeyError::NoKeys(self.shown())),
            (None, _) => Err(invalid(&state_path, "no key is active")),
            (Some(_), Some(_)) => Err(invalid(&state_path, "more than one key is active")),
        }
    }

    /// Loads the directory; if it has no keys at all (first start), first
    /// generates an active key of `algorithm`.
    pub fn load_or_generate(&self, algorithm: KeyAlgorithm) -> Result<KeySet, KeyError> {
        match self.load() {
            Err(KeyError::NoKeys(_)) => {}
            other => return other,
        }
        let _lock = self.lock()?;
        // Another process may have generated the first key meanwhile.
        if self.read_state()?.is_none() && !self.has_key_files()? {
            self.create_key(algorithm, KeyState::Active, StateFile::default())?;
        }
        self.load()
    }

    /// Generates a key, writes its file, then the state naming it.
    fn create_key(
        &self,
        algorithm: KeyAlgorithm,
        state: KeyState,
        mut file: StateFile,
    ) -> Result<KeyRecord, KeyError> {
        let private = PrivateKey::generate(algorithm).map_err(io_error(&self.path))?;
        let (_, kid) = private
            .public_jwk()
            .map_err(|e| invalid(&self.path, format!("cannot derive the new key's kid: {e}")))?;
        let pem = private.to_pem().map_err(io_error(&self.path))?;
        let written = write_atomically(&self.path, &format!("{kid}.pem"), pem.as_bytes());
        pem.into_bytes().fill(0);
        written?;
        let record = KeyRecord {
            kid,
            state,
            algorithm,
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        file.keys.push(record.clone());
        self.write_state(&file)?;
        Ok(record)
    }

    /// Reads the state for a change, under the lock: every key must load
    /// (a broken directory is not made worse), and entries whose file is
    /// gone are dropped.
    fn state_for_change(&self) -> Result<StateFile, KeyError> {
        let set = self.load()?;
        Ok(StateFile {
            keys: set.keys.into_iter().map(|key| key.record).collect(),
        })
    }

    /// Creates a key of `algorithm` in state `next` (or `active`, if the
    /// directory has no key yet).
    pub fn add(&self, algorithm: KeyAlgorithm) -> Result<KeyRecord, KeyError> {
        let _lock = self.lock()?;
        let (file, state) = match self.state_for_change() {
            Ok(file) => (file, KeyState::Next),
            Err(KeyError::NoKeys(_)) => (StateFile::default(), KeyState::Active),
            Err(e) => return Err(e),
        };
        self.create_key(algorithm, state, file)
    }

    /// Makes `kid` the active key; the key active until now becomes `previous`.
    pub fn activate(&self, kid: &str) -> Result<Activation, KeyError> {
        if !is_kid(kid) {
            return Err(KeyError::NotAKid(kid.to_owned()));
        }
        let _lock = self.lock()?;
        let mut file = self.state_for_change()?;
        let Some(target) = file.keys.iter().position(|r| r.kid == kid) else {
            return Err(KeyError::UnknownKid(kid.to_owned(), self.shown()));
        };
        if file.keys[target].state == KeyState::Active {
            return Ok(Activation::AlreadyActive);
        }
        let mut previous = None;
        for record in &mut file.keys {
            if record.state == KeyState::Active {
                record.state = KeyState::Previous;
                previous = Some(record.kid.clone());
            }
        }
        file.keys[target].state = KeyState::Active;
        self.write_state(&file)?;
        Ok(Activation::Activated { previous })
    }

    /// Removes `kid`, which must not be active: tokens it signed are
    /// rejected from the next reload on.
    pub fn retire(&self, kid: &str) -> Result<KeyRecord, KeyError> {
        if !is_kid(kid) {
            return Err(KeyError::NotAKid(kid.to_owned()));
        }
        let _lock = self.lock()?;
        let mut file = self.state_for_change()?;
        let Some(target) = file.keys.iter().position(|r| r.kid == kid) else {
            return Err(KeyError::UnknownKid(kid.to_owned(), self.shown()));
        };
        if file.keys[target].state == KeyState::Active {
            return Err(KeyError::RetireActive(kid.to_owned()));
        }
        let record = file.keys.remove(target);
        // The state first: a reader that still sees the key in it but finds
        // no file takes the key as retired too.
        self.write_state(&file)?;
        let path = self.key_path(kid);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyError::Io(path.display().to_string(), e)),
        }
        sync_dir(&self.path)?;
        Ok(record)
    }

    /// What identifies the current contents: name, inode, size, times, mode
    /// and owner of `state.json` and every `*.pem` file (symbolic links
    /// followed), sorted by name.
    fn stamp(&self) -> std::io::Result<Stamp> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != STATE_FILE && !name.ends_with(".pem") {
                continue;
            }
            match fs::metadata(self.path.join(&name)) {
                Ok(m) => files.push(FileStamp {
                    name,
                    device: m.dev(),
                    inode: m.ino(),
                    size: m.size(),
                    mtime: m.mtime(),
                    mtime_nsec: m.mtime_nsec(),
                    mode: m.mode(),
                    uid: m.uid(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        files.sort();
        Ok(Stamp(files))
    }
}

/// Reads a file of at most [`MAX_FILE_BYTES`].
fn read_small(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Replaces `dir/name` with `bytes` so that readers see either the old or
/// the new file, never a part: temporary file (mode 0600), `fsync`,
/// `rename`, `fsync` of the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), KeyError> {
    let mut suffix = [0u8; 9];
    rand::rng().fill(&mut suffix);
    let suffix = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(suffix);
    // A dot name that ends in neither `.pem` nor `.json`: readers skip it.
    let temporary = dir.join(format!(".{name}.{}.{suffix}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, dir.join(name))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temporary);
        return Err(KeyError::Io(dir.join(name).display().to_string(), e));
    }
    sync_dir(dir)
}

/// Makes a directory's entries (a rename, a removal) durable.
fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// What a reload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Nothing changed since the last reading.
    Unchanged,
    /// The directory changed; the new key set is in use.
    Replaced,
}

/// The key set a running process signs and verifies with, swapped whole
/// when the directory changes. Requests take the current set with one
/// uncontended read lock and an `Arc` clone; only [`KeyStore::reload`],
/// run by a background task, reads the directory.
pub struct KeyStore {
    dir: KeyDir,
    current: RwLock<Arc<KeySet>>,
    stamp: std::sync::Mutex<Option<Stamp>>,
}

impl KeyStore {
    /// Loads the directory (generating a first key of `algorithm` if it has
    /// none). Every problem is an error: a process does not start on a
    /// broken key set.
    pub fn open(dir: KeyDir, algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let set = dir.load_or_generate(algorithm)?;
        // No stamp yet: the first reload reads the directory once more, so a
        // change made while this reading ran is not missed.
        Ok(Self {
            dir,
            current: RwLock::new(Arc::new(set)),
            stamp: std::sync::Mutex::new(None),
        })
    }

    /// The keys directory.
    pub fn dir(&self) -> &KeyDir {
        &self.dir
    }

    /// The key set in use now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads the directory if anything in it changed (blocking file
    /// work: run it off the async executor). On an error the set in use
    /// stays, and the next call tries again.
    pub fn reload(&self) -> Result<Reload, KeyError> {
        let mut last = self
            .stamp
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stamp = self.dir.stamp().map_err(io_error(self.dir.path()))?;
        if last.as_ref() == Some(&stamp) {
            return Ok(Reload::Unchanged);
        }
        let set = self.dir.load()?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
        *last = Some(stamp);
        Ok(Reload::Replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{
        CommonParameters, EllipticCurve, OctetKeyPairParameters, OctetKeyPairType,
        RSAKeyParameters, RSAKeyType,
    };
    use std::os::unix::fs::PermissionsExt;

    /// RFC 7638 section 3.1: the example RSA key and its SHA-256 thumbprint.
    #[test]
    fn thumbprint_matches_the_rfc_7638_example() {
        let jwk = Jwk {
            common: CommonParameters {
                key_id: Some("2011-04-29".into()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
                e: "AQAB".into(),
            }),
        };
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// RFC 8037 appendix A: the example Ed25519 key, its public key and its
    /// RFC 7638 thumbprint, derived here from the private key alone.
    #[test]
    fn ed25519_kid_is_the_rfc_8037_example_thumbprint() {
        let d = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&d.try_into().unwrap());
        let private = PrivateKey::ed25519(&key);
        let (jwk, kid) = private.public_jwk().unwrap();
        assert_eq!(kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let expected = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            }),
        };
        assert_eq!(jwk.algorithm, expected.algorithm);
    }

    /// A P-256 key's kid is the SHA-256 of `{"crv","kty","x","y"}` in that
    /// order with no spaces (RFC 7638 section 3.2), computed independently
    /// (Python's hashlib) for this fixed key.
    #[test]
    fn p256_kid_follows_rfc_7638() {
        let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let private = PrivateKey::p256(&key).unwrap();
        let (jwk, kid) = private.public_jwk().unwrap();
        let AlgorithmParameters::EllipticCurve(p) = &jwk.algorithm else {
            panic!("an EC key: {jwk:?}");
        };
        assert_eq!(
            (p.x.as_str(), p.y.as_str(), kid.as_str()),
            (P256_X, P256_Y, P256_KID)
        );
    }

    const P256_X: &str = "HhhTL9R1TALzBB2cdc6zO4P_2BrHzk_ogsyxyYvFiW4";
    const P256_Y: &str = "pGwxHE4v9A3ZajZT5uRURdMt_khuztdcepDGoYiBwKM";
    const P256_KID: &str = "gWjt7nmB1udyFpLYVp0SxJnI8lJEvl7q8AFYZRqnGV8";

    #[test]
    fn generated_keys_survive_a_pem_round_trip_with_the_same_kid() {
        for algorithm in [KeyAlgorithm::EdDsa, KeyAlgorithm::Es256] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let pem = key.to_pem().unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
            let again = PrivateKey::from_pem(&pem).expect("our own PEM parses");
            assert_eq!(again.algorithm, algorithm);
            assert_eq!(
                again.public_jwk().unwrap().1,
                key.public_jwk().unwrap().1,
                "same kid"
            );
        }
    }

    #[test]
    fn kid_shape_is_43_base64url_characters() {
        assert!(is_kid("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"));
        assert!(is_kid("-PrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"));
        assert!(!is_kid("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4"));
        assert!(!is_kid("../qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k.."));
        assert!(!is_kid(""));
    }

    #[test]
    fn a_file_whose_key_is_not_its_kid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let first = keys.load_or_generate(KeyAlgorithm::EdDsa).unwrap();
        let kid = first.active().kid().to_owned();
        // Another key's PEM under the real kid's name.
        let other = PrivateKey::generate(KeyAlgorithm::EdDsa).unwrap();
        let path = keys.key_path(&kid);
        fs::write(&path, other.to_pem().unwrap()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let error = keys.load().err().expect("refused");
        assert!(error.to_string().contains("thumbprint"), "{error}");
    }
}
