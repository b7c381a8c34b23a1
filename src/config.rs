//! Configuration: every setting is a command-line flag and an environment
//! variable (`--bind` / `TOKENGATE_BIND`, ...), with the defaults of the HTTP
//! contract. The JWT secret is wrapped in [`Secret`] so it never prints.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
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

    /// Seconds between purges of expired rows from the denylist.
    #[arg(long, env = "TOKENGATE_PURGE_INTERVAL", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub purge_interval: u64,
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
            refresh_ttl: 1_209_600,
            refresh_reuse_interval: 10,
            session_max_age: 7_776_000,
            purge_interval: 300,
            db_timeout_ms: 5000,
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
