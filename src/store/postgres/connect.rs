//! Reaching PostgreSQL: the `postgres://` URL (parsed, and redacted in every
//! message), the connection pool, and the per-connection settings.
//!
//! Every connection runs `SET synchronous_commit = on` as soon as it is
//! made, whatever the server's or the role's default: a success answer is
//! sent only after COMMIT is acknowledged, and with synchronous standbys
//! configured that acknowledgement waits for them. `statement_timeout` bounds
//! a statement on the server side too, so a query we gave up on does not hold
//! locks for long.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Connect, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, Config, NoTls};

use crate::store::StoreError;

/// Most connections one process holds.
pub const POOL_SIZE: usize = 16;

/// A parsed database URL, and what must never be shown of it.
#[derive(Clone)]
pub struct Target {
    /// The parsed configuration.
    pub config: Config,
    /// The URL with its password replaced, for messages.
    pub shown: String,
    /// Password spellings to scrub from any message (as written in the URL,
    /// and as decoded).
    secrets: Vec<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL, bounding every connect
    /// attempt by `timeout`. The error names the URL only redacted.
    pub fn parse(url: &str, timeout: Duration) -> Result<Self, String> {
        let mut secrets: Vec<String> = raw_password(url)
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        let shown = redact_url(url);
        let mut config = Config::from_str(url).map_err(|e| {
            scrub(
                &format!("{shown} is not a valid PostgreSQL URL ({e})"),
                &secrets,
            )
        })?;
        if let Some(password) = config.get_password() {
            let decoded = String::from_utf8_lossy(password).into_owned();
            if !decoded.is_empty() && !secrets.contains(&decoded) {
                secrets.push(decoded);
            }
        }
        // Every process writes: with several hosts in the URL, connect to
        // the primary (a hot standby refuses writes anyway).
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        // A copy may allow its statements minutes; connecting never needs that.
        config.connect_timeout(timeout.min(Duration::from_secs(30)));
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("tokengate");
        Ok(Self {
            config,
            shown,
            secrets,
        })
    }

    /// `message` with every spelling of the password replaced.
    pub fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets)
    }
}

/// `message` with each of `secrets` replaced by `***`.
fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The password as written in a URL (`scheme://user:PASSWORD@host`) and
/// in a `password=` parameter, if any; found without a full parse so that
/// even a URL that does not parse can be redacted.
fn raw_password(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            if let Some((_, password)) = authority[..at].split_once(':') {
                found.push(password.to_owned());
                found.push(percent_decode(password));
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("password=") {
                found.push(value.to_owned());
                found.push(percent_decode(value));
            }
        }
    }
    found
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with the password (in the user part or a `password=`
/// parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let secrets: Vec<String> = raw_password(url)
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    scrub(url, &secrets)
}

type ConnectFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
            > + Send
            + 'a,
    >,
>;

/// Connects and applies the per-connection settings.
struct Connector {
    statement_timeout_ms: u64,
}

impl Connect for Connector {
    fn connect(&self, config: &Config) -> ConnectFuture<'_> {
        let config = config.clone();
        let settings = format!(
            "SET synchronous_commit = on; SET statement_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}",
            self.statement_timeout_ms,
            self.statement_timeout_ms.saturating_mul(2)
        );
        Box::pin(async move {
            let (client, connection) = config.connect(NoTls).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection ended");
                }
            });
            client.batch_execute(&settings).await?;
            Ok((client, task))
        })
    }
}

/// A pool of connections to `target`; waiting for one, making one and
/// recycling one are each bounded by `timeout`.
pub fn pool(target: &Target, timeout: Duration) -> Result<Pool, StoreError> {
    let manager = Manager::from_connect(
        target.config.clone(),
        Connector {
            statement_timeout_ms: timeout.as_millis().max(1) as u64,
        },
        ManagerConfig {
            // A closed connection (server restarted, network gone) is
            // noticed at check-out and replaced.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Postgres(e.to_string()))
}

/// One sentence for a PostgreSQL error: the server's own message when there
/// is one (the crate's `Display` says only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_urls_and_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cr%40t@db.example:5432/tg"),
            "postgres://app:***@db.example:5432/tg"
        );
        assert_eq!(
            redact_url("postgresql://app@db/tg?password=hunter22&x=1"),
            "postgresql://app@db/tg?password=***&x=1"
        );
        let target = Target::parse(
            "postgres://app:s3cr%40t@db.example/tg",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(target.scrub("x s3cr@t y s3cr%40t"), "x *** y ***");
        let bad = Target::parse("postgres://app:pw-9@db:notaport/tg", Duration::from_secs(1))
            .unwrap_err();
        assert!(!bad.contains("pw-9"), "{bad}");
    }
}
