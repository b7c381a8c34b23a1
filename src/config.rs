//! Configuration: every setting is a command-line flag and an environment
//! variable (`--bind` / `TOKENGATE_BIND`, ...), with the defaults of the HTTP
//! contract. The JWT secret is wrapped in [`Secret`] so it never prints.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

/// Shortest secret accepted, in bytes (HS256 wants at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether `POST /api/v1/register` accepts new users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Registration {
    /// Anyone may register.
    Open,
    /// Registration answers `403 registration_closed`; add users with `tokengate user add`.
    Closed,
}

/// The algorithm access tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with the shared secret (`--jwt-secret`).
    #[value(name = "HS256")]
    Hs256,
    /// Ed25519 keys from `--keys-dir`; resource servers verify with the JWKS.
    #[value(name = "EdDSA")]
    EdDsa,
    /// P-256 ECDSA keys from `--keys-dir`; resource servers verify with the JWKS.
    #[value(name = "ES256")]
    Es256,
}

/// A secret value whose `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret bytes; call only where the secret is used.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s.as_bytes()))
    }
}

/// One `id:secret` entry of `--introspection-clients`: a resource server
/// that may call token introspection. Kept whole, secret and all, as a
/// [`Secret`] and judged only at start ([`crate::auth::clients`]), so that
/// neither the argument parser nor a log line ever shows it.
#[derive(Clone)]
pub struct ClientCredentials(Secret);

impl ClientCredentials {
    /// The entry of client `id` with `secret`.
    pub fn new(id: &str, secret: &str) -> Self {
        Self(Secret::new(format!("{id}:{secret}")))
    }

    /// The entry as configured, `id:secret`; call only where it is checked.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientCredentials(<redacted>)")
    }
}

impl std::str::FromStr for ClientCredentials {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(Secret::new(s.as_bytes())))
    }
}

/// An IP network such as `10.0.0.0/8` or `::1/128` (a bare address is one
/// host). IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are kept as
/// IPv4, and addresses are compared the same way, so either spelling
/// matches both. Bits past the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                mask_v4(ip.to_bits(), self.prefix) == network.to_bits()
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                mask_v6(ip.to_bits(), self.prefix) == network.to_bits()
            }
            _ => false,
        }
    }
}

fn mask_v4(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| {
            format!("`{text}` is not an IP address or network (e.g. 10.0.0.0/8, ::1/128)")
        })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        let (network, prefix) = match address {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (address, prefix),
            },
            _ => (address, prefix),
        };
        let network = match network {
            IpAddr::V4(v4) => IpAddr::from(mask_v4(v4.to_bits(), prefix).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::from(mask_v6(v6.to_bits(), prefix).to_be_bytes()),
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Settings of the service, shared by `serve`, `user add` and `purge`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address and port to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "TOKENGATE_BIND",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind: SocketAddr,

    /// SQLite database file (created with mode 0600 if missing), or a
    /// `postgres://` / `postgresql://` URL (PostgreSQL 13 or newer; several
    /// tokengate processes may share it).
    #[arg(
        long,
        env = "TOKENGATE_DATABASE",
        default_value = "data/tokengate.db",
        global = true
    )]
    pub database: PathBuf,

    /// HS256 signing secret, at least 32 bytes. Without it, a random secret is
    /// generated once and kept in `jwt-secret` beside the database (mode 0600).
    #[arg(
        long,
        env = "TOKENGATE_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<Secret>,

    /// Value of the `iss` claim issued and required.
    #[arg(
        long,
        env = "TOKENGATE_ISSUER",
        default_value = "tokengate",
        global = true
    )]
    pub issuer: String,

    /// Value of the `aud` claim issued and required.
    #[arg(
        long,
        env = "TOKENGATE_AUDIENCE",
        default_value = "tokengate",
        global = true
    )]
    pub audience: String,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "TOKENGATE_TOKEN_TTL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000), global = true)]
    pub token_ttl: u64,

    /// Clock leeway allowed when checking `exp` and `nbf`, in seconds.
    #[arg(long, env = "TOKENGATE_LEEWAY", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=86_400), global = true)]
    pub leeway: u64,

    /// Whether anyone may register (`open`) or not (`closed`).
    #[arg(
        long,
        env = "TOKENGATE_REGISTRATION",
        value_enum,
        ignore_case = true,
        default_value = "open",
        global = true
    )]
    pub registration: Registration,

    /// Comma-separated list of SPA origins allowed by CORS (none by default).
    #[arg(
        long,
        env = "TOKENGATE_CORS_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_origins: Vec<String>,

    /// Failed logins for one e-mail address, within the window, before it gets 429.
    #[arg(long, env = "TOKENGATE_LOGIN_MAX_FAILURES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub login_max_failures: u32,

    /// Failed logins from one client address, within the window, before it gets 429.
    #[arg(long, env = "TOKENGATE_LOGIN_MAX_FAILURES_PER_CLIENT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub login_max_failures_per_client: u32,

    /// Length of the login throttling window, in seconds.
    #[arg(long, env = "TOKENGATE_LOGIN_WINDOW", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub login_window: u64,

    /// Longest wait, in milliseconds, for the database (a lock held by another
    /// process, a free connection, a queued read or commit) before a request
    /// is answered `503` instead of hanging.
    #[arg(long, env = "TOKENGATE_DB_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000), global = true)]
    pub db_timeout_ms: u64,

    /// Revocations appended to the log before they are merged into the
    /// table keyed by `jti`, or half that table's rows if more (see the
    /// denylist layout in the README).
    #[arg(long, env = "TOKENGATE_DENYLIST_MERGE_ROWS", default_value_t = 32_768, hide = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000),
          global = true)]
    pub denylist_merge_rows: usize,

    /// Lifetime of a refresh token, in seconds (each refresh issues a new one,
    /// so an active session slides forward).
    #[arg(long, env = "TOKENGATE_REFRESH_TTL", default_value_t = 1_209_600,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000), global = true)]
    pub refresh_ttl: u64,

    /// Seconds during which a just-rotated refresh token may be presented
    /// again (two tabs refreshing at once) and still get a working pair;
    /// after that, presenting it is treated as theft and ends the session.
    #[arg(long, env = "TOKENGATE_REFRESH_REUSE_INTERVAL", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600), global = true)]
    pub refresh_reuse_interval: u64,

    /// Longest life of a session after its login, in seconds, however often
    /// it is refreshed.
    #[arg(long, env = "TOKENGATE_SESSION_MAX_AGE", default_value_t = 7_776_000,
          value_parser = clap::value_parser!(u64).range(60..=315_360_000), global = true)]
    pub session_max_age: u64,

    /// Seconds between purges of rows no token can need any more: denylist
    /// entries, ended or expired sessions and their refresh tokens.
    #[arg(long, env = "TOKENGATE_PURGE_INTERVAL", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub purge_interval: u64,

    /// Signing algorithm: `HS256` (the shared secret), `EdDSA` (Ed25519) or
    /// `ES256` (P-256). With EdDSA/ES256 the keys live in `--keys-dir` and
    /// their public halves are published at `/.well-known/jwks.json`.
    #[arg(
        long,
        env = "TOKENGATE_JWT_ALGORITHM",
        value_enum,
        ignore_case = true,
        default_value = "HS256",
        global = true
    )]
    pub jwt_algorithm: JwtAlgorithm,

    /// Directory of the EdDSA/ES256 signing keys (one PEM file per key, mode
    /// 0600, generated on first start). Default: `keys/` beside the database.
    #[arg(long, env = "TOKENGATE_KEYS_DIR", global = true)]
    pub keys_dir: Option<PathBuf>,

    /// Milliseconds between checks of the keys directory for changes (tests
    /// shorten it; a change is picked up within this time).
    #[arg(long, env = "TOKENGATE_KEYS_RELOAD_MS", default_value_t = 2000, hide = true,
          value_parser = clap::value_parser!(u64).range(10..=10_000), global = true)]
    pub keys_reload_ms: u64,

    /// Longest time, in milliseconds, a client may take to send a request's
    /// headers: from the connection's accept to its first request, and (for
    /// HTTP/1.1) from the moment a connection is ready for the next request.
    #[arg(long, env = "TOKENGATE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000), global = true)]
    pub header_read_timeout_ms: u64,

    /// A connection on which no request started for this many milliseconds
    /// is closed (after the requests in flight); one that is closing and on
    /// which nothing moved for as long is dropped.
    #[arg(long, env = "TOKENGATE_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000), global = true)]
    pub idle_timeout_ms: u64,

    /// Password hashes (logins, registrations) allowed to wait for a free
    /// CPU; beyond that, requests get `503` with `Retry-After` at once.
    /// Default: 32 per CPU.
    #[arg(long, env = "TOKENGATE_PASSWORD_HASH_QUEUE",
          value_parser = clap::value_parser!(u32).range(0..=100_000), global = true)]
    pub password_hash_queue: Option<u32>,

    /// Most e-mail addresses, and most client addresses, whose failed
    /// logins are remembered at once; when full, expired and then the least
    /// failed ones are forgotten first.
    #[arg(long, env = "TOKENGATE_LOGIN_THROTTLE_KEYS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000), global = true)]
    pub login_throttle_keys: u32,

    /// Comma-separated networks of reverse proxies whose `X-Forwarded-For`
    /// (or, without it, `Forwarded`) header names the client, e.g.
    /// `127.0.0.1/32,10.0.0.0/8,::1/128`. None by default: the client is
    /// the socket peer and those headers are ignored.
    #[arg(
        long,
        env = "TOKENGATE_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<Cidr>,

    /// Comma-separated `id:secret` pairs of the resource servers allowed to
    /// call token introspection with HTTP Basic (secrets of at least 32
    /// bytes). None by default: introspection answers `401` to everyone.
    #[arg(
        long,
        env = "TOKENGATE_INTROSPECTION_CLIENTS",
        value_name = "ID:SECRET",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub introspection_clients: Vec<ClientCredentials>,
}

impl Default for Settings {
    /// The contract's defaults, without reading flags or the environment.
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: PathBuf::from("data/tokengate.db"),
            jwt_secret: None,
            issuer: "tokengate".into(),
            audience: "tokengate".into(),
            token_ttl: 3600,
            leeway: 30,
            registration: Registration::Open,
            cors_origins: Vec::new(),
            login_max_failures: 5,
            login_max_failures_per_client: 100,
            login_window: 900,
            denylist_merge_rows: 32_768,
            refresh_ttl: 1_209_600,
            refresh_reuse_interval: 10,
            session_max_age: 7_776_000,
            purge_interval: 300,
            db_timeout_ms: 5000,
            jwt_algorithm: JwtAlgorithm::Hs256,
            keys_dir: None,
            keys_reload_ms: 2000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            password_hash_queue: None,
            login_throttle_keys: 100_000,
            trusted_proxies: Vec::new(),
            introspection_clients: Vec::new(),
        }
    }
}

/// A configuration problem that stops the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configured secret is too short.
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes long (got {0})")]
    SecretTooShort(usize),
    /// The secret file is readable by others.
    #[error(
        "the secret file {0} is readable by group or others (mode {1:o}); run `chmod 600 {0}`"
    )]
    SecretFileTooOpen(String, u32),
    /// The secret file belongs to another user.
    #[error(
        "the secret file {0} belongs to user id {1}, not to this process (user id {2}); \
         remove it to generate a new one, or `chown` it if it is really yours"
    )]
    SecretFileForeign(String, u32, u32),
    /// The secret file could not be read or written.
    #[error("cannot use the secret file {0}: {1}")]
    SecretFile(String, std::io::Error),
    /// PostgreSQL has no file beside it to keep a generated secret in.
    #[error(
        "with a PostgreSQL database, --jwt-secret (or TOKENGATE_JWT_SECRET) is required: \
         every process sharing the database must sign with the same secret"
    )]
    SecretRequired,
    /// PostgreSQL has no file beside it to keep signing keys in.
    #[error(
        "with a PostgreSQL database and {0}, --keys-dir (or TOKENGATE_KEYS_DIR) is required: \
         every process sharing the database must have the same keys directory contents"
    )]
    KeysDirRequired(&'static str),
    /// An entry of `--introspection-clients` is not `id:secret` with a
    /// usable id (the entry is not shown: it holds a secret).
    #[error(
        "entry {0} of --introspection-clients is not `id:secret` with an id of 1 to 64 \
         letters, digits, `-`, `.`, `_` or `~`"
    )]
    ClientMalformed(usize),
    /// A resource server's secret is too short.
    #[error(
        "the secret of introspection client `{0}` must be at least {MIN_SECRET_BYTES} bytes long (got {1})"
    )]
    ClientSecretTooShort(String, usize),
    /// The same client id twice.
    #[error("introspection client `{0}` is listed more than once")]
    ClientListedTwice(String),
}

/// Whether `database` is a PostgreSQL URL rather than a SQLite file path.
pub fn is_postgres_url(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

impl Settings {
    /// The lifetimes of tokens and sessions, for the store's session rules.
    pub fn lifetimes(&self) -> crate::store::Lifetimes {
        crate::store::Lifetimes {
            token_ttl: self.token_ttl as i64,
            leeway: self.leeway as i64,
            refresh_ttl: self.refresh_ttl as i64,
            refresh_reuse_interval: self.refresh_reuse_interval as i64,
            session_max_age: self.session_max_age as i64,
        }
    }

    /// The PostgreSQL URL, if `--database` is one (otherwise it is a SQLite
    /// file path).
    pub fn database_url(&self) -> Option<&str> {
        self.database.to_str().filter(|d| is_postgres_url(d))
    }

    /// With PostgreSQL, the signing material must be configured (there is no
    /// database file to keep it beside): `--jwt-secret` for HS256,
    /// `--keys-dir` for EdDSA/ES256. Checked before connecting.
    pub fn check_signing_for_postgres(&self) -> Result<(), ConfigError> {
        if self.database_url().is_none() {
            return Ok(());
        }
        match self.jwt_algorithm {
            JwtAlgorithm::Hs256 if self.jwt_secret.is_none() => Err(ConfigError::SecretRequired),
            JwtAlgorithm::EdDsa if self.keys_dir.is_none() => {
                Err(ConfigError::KeysDirRequired("EdDSA"))
            }
            JwtAlgorithm::Es256 if self.keys_dir.is_none() => {
                Err(ConfigError::KeysDirRequired("ES256"))
            }
            _ => Ok(()),
        }
    }

    /// The signing secret: the configured one, or the one kept beside the
    /// database (generated on first use; with PostgreSQL there is no such
    /// place, so the secret must be configured).
    pub fn load_secret(&self) -> Result<Secret, ConfigError> {
        let secret = match &self.jwt_secret {
            Some(secret) => secret.clone(),
            None if self.database_url().is_some() => return Err(ConfigError::SecretRequired),
            None => load_or_generate_secret(&self.secret_path())?,
        };
        if secret.expose().len() < MIN_SECRET_BYTES {
            return Err(ConfigError::SecretTooShort(secret.expose().len()));
        }
        Ok(secret)
    }

    /// Where a generated secret is kept: `jwt-secret` beside the database file.
    pub fn secret_path(&self) -> PathBuf {
        self.database_dir().join("jwt-secret")
    }

    /// The directory of the signing keys: `--keys-dir`, or `keys/` beside
    /// the database file.
    pub fn keys_dir_path(&self) -> PathBuf {
        match &self.keys_dir {
            Some(dir) => dir.clone(),
            None => self.database_dir().join("keys"),
        }
    }

    fn database_dir(&self) -> &Path {
        if self.database_url().is_some() {
            // A URL names no directory (the server requires --keys-dir and
            // --jwt-secret then; the keys commands work in the current one).
            return Path::new(".");
        }
        self.database
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }
}

fn load_or_generate_secret(path: &Path) -> Result<Secret, ConfigError> {
    let shown = path.display().to_string();
    let io_err = |e| ConfigError::SecretFile(shown.clone(), e);
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ConfigError::SecretFileTooOpen(shown, mode));
            }
            // A file someone else owns could have been planted (in a shared
            // directory) to make us sign with a secret they know.
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                return Err(ConfigError::SecretFileForeign(shown, meta.uid(), me));
            }
            let text = fs::read_to_string(path).map_err(io_err)?;
            Ok(Secret::new(text.trim_end().as_bytes()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(io_err)?;
            }
            let mut bytes = [0u8; 48];
            rand::rng().fill_bytes(&mut bytes);
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            // create_new: never overwrite a secret another process just wrote.
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err)?;
            file.write_all(text.as_bytes()).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            Ok(Secret::new(text.into_bytes()))
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_matches_addresses_in_its_network() {
        let private = cidr("10.0.0.0/8");
        assert!(private.contains(ip("10.255.1.2")));
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(
            private.contains(ip("::ffff:10.1.2.3")),
            "mapped IPv4 is IPv4"
        );
        assert!(!private.contains(ip("::1")));
        assert!(cidr("::1/128").contains(ip("::1")));
        assert!(!cidr("::1/128").contains(ip("::2")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(
            cidr("192.0.2.7").contains(ip("192.0.2.7")),
            "a bare address is one host"
        );
        assert!(!cidr("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" ::1/128 ").to_string(), "::1/128");
    }

    #[test]
    fn cidr_refuses_garbage_and_long_prefixes() {
        for text in [
            "",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            let error = text.parse::<Cidr>().expect_err(text);
            assert!(!error.is_empty());
        }
    }
}
