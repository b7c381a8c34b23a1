//! Configuration: every setting is a command-line flag and an environment
//! variable (`--bind` / `TOKENGATE_BIND`, ...), with the defaults of the HTTP
//! contract. The JWT secret is wrapped in [`Secret`] so it never prints.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
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
