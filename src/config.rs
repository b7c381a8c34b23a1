//! Configuration: every setting is a command-line flag and an environment
//! variable (`--bind` / `TOKENGATE_BIND`, ...), with the defaults of the HTTP
//! contract. The JWT secret is wrapped in [`Secret`] so it never prints.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

    /// SQLite database file (created with mode 0600 if missing).
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

    /// Seconds between purges of expired rows from the denylist.
    #[arg(long, env = "TOKENGATE_PURGE_INTERVAL", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub purge_interval: u64,

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
            purge_interval: 300,
            db_timeout_ms: 5000,
            password_hash_queue: None,
            login_throttle_keys: 100_000,
            trusted_proxies: Vec::new(),
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
    /// The secret file could not be read or written.
    #[error("cannot use the secret file {0}: {1}")]
    SecretFile(String, std::io::Error),
}

impl Settings {
    /// The signing secret: the configured one, or the one kept beside the
    /// database (generated on first use).
    pub fn load_secret(&self) -> Result<Secret, ConfigError> {
        let secret = match &self.jwt_secret {
            Some(secret) => secret.clone(),
            None => load_or_generate_secret(&self.secret_path())?,
        };
        if secret.expose().len() < MIN_SECRET_BYTES {
            return Err(ConfigError::SecretTooShort(secret.expose().len()));
        }
        Ok(secret)
    }

    /// Where a generated secret is kept: `jwt-secret` beside the database file.
    pub fn secret_path(&self) -> PathBuf {
        let dir = self
            .database
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dir.join("jwt-secret")
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
