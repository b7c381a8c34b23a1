//! Building and running the service: open the database, load the secret (or
//! the signing keys), bind the listener, assemble routes and middleware,
//! serve until shutdown.
//!
//! [`Application::build`] binds the listener itself, so tests can ask for
//! port 0 and read the real port from [`Application::local_addr`]; `main` and
//! the tests start the server the same way, with [`Application::run_until`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoEndpoint, Response, Route};

use crate::api;
use crate::auth::clients::IntrospectionClients;
use crate::auth::keys::{KeyAlgorithm, KeyDir, KeyError, KeyStore, Reload};
use crate::auth::password::Hasher;
use crate::auth::throttle::{Limits, LoginThrottle};
use crate::auth::tokens::Tokens;
use crate::config::{ConfigError, Settings};
use crate::cors::SpaCors;
use crate::middleware::Edge;
use crate::server::{self, Timeouts};
use crate::state::AppState;
use crate::store::{self, Running, Store};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the service could not start; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration (secret too short, secret file too open, ...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing keys cannot be used (a key file too open, inconsistent state, ...).
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Database(#[from] store::OpenError),
    /// Start-up work could not be run.
    #[error("cannot start: {0}")]
    Task(String),
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// A service that is bound and ready to run.
pub struct Application {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    settings: Settings,
    running: Running,
}

impl Application {
    /// Opens the database (migrating it), loads or generates the secret and
    /// binds the listener. Blocking file work runs off the executor.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        tokio::task::spawn_blocking(move || Self::build_blocking(settings))
            .await
            .unwrap_or_else(|e| Err(StartupError::Task(e.to_string())))
    }

    fn build_blocking(settings: Settings) -> Result<Self, StartupError> {
        let introspection_clients =
            IntrospectionClients::from_config(&settings.introspection_clients)?;
        let (store, running) = Store::open(&settings, false)?;
        let tokens = tokens(&settings)?;
        let listener = std::net::TcpListener::bind(settings.bind)
            .map_err(|e| StartupError::Bind(settings.bind, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| StartupError::Bind(settings.bind, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(settings.bind, e))?;
        let state = Arc::new(AppState {
            store,
            tokens,
            throttle: LoginThrottle::new(Limits {
                per_email: settings.login_max_failures,
                per_client: settings.login_max_failures_per_client,
                window: Duration::from_secs(settings.login_window),
                max_keys: settings.login_throttle_keys as usize,
            }),
            passwords: Hasher::per_cpu(settings.password_hash_queue.map(|q| q as usize)),
            trusted_proxies: settings.trusted_proxies.clone(),
            registration: settings.registration,
            introspection_clients,
        });
        // Pay for the dummy hash now rather than on the first unknown login.
        let _ = crate::auth::password::dummy_hash();
        Ok(Self {
            listener,
            local_addr,
            state,
            settings,
            running,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The context the requests will share, for tests that observe it
    /// (throttle sizes, hashes running).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let purge = tokio::spawn(purge_periodically(
            self.state.clone(),
            Duration::from_secs(self.settings.purge_interval),
        ));
        let reload_keys = self.state.tokens.keys().map(|store| {
            tokio::spawn(reload_keys_periodically(
                store.clone(),
                Duration::from_millis(self.settings.keys_reload_ms),
            ))
        });
        let app = app(self.state, &self.settings);
        let timeouts = Timeouts {
            header_read: Duration::from_millis(self.settings.header_read_timeout_ms),
            idle: Duration::from_millis(self.settings.idle_timeout_ms),
        };
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        tracing::info!("listening on http://{}", self.local_addr);
        let result = server::serve(listener, app, timeouts, shutdown, SHUTDOWN_GRACE).await;
        purge.abort();
        let _ = purge.await;
        if let Some(reload_keys) = reload_keys {
            reload_keys.abort();
            let _ = reload_keys.await;
        }
        // Every handle on the state is gone now: the database writer commits
        // what is queued, checkpoints the WAL and stops; wait for it.
        self.running.finish(SHUTDOWN_GRACE).await;
        tracing::info!("stopped");
        result
    }
}

/// The whole HTTP app: API and documentation, inside [`Edge`].
pub fn app(state: Arc<AppState>, settings: &Settings) -> impl Endpoint<Output = Response> {
    let api = api::service();
    let docs = Route::new()
        .nest("/docs", api.swagger_ui())
        .at("/openapi.json", api.spec_endpoint())
        .at("/openapi.yaml", api.spec_endpoint_yaml());
    let cors = SpaCors::new(settings.cors_origins.iter().map(String::as_str));
    Edge::new(api.into_endpoint(), docs, state, cors, allowed_methods())
}

/// Path -> the methods the OpenAPI document gives it, e.g. `"GET"`, read
/// from the document itself so it cannot drift from the routes.
fn allowed_methods() -> HashMap<String, HeaderValue> {
    let spec: serde_json::Value = serde_json::from_str(&api::service().spec()).unwrap_or_default();
    let mut allow = HashMap::new();
    if let Some(paths) = spec["paths"].as_object() {
        for (path, operations) in paths {
            let methods: Vec<String> = operations
                .as_object()
                .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                .unwrap_or_default();
            if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
                allow.insert(path.clone(), value);
            }
        }
    }
    for path in ["/openapi.json", "/openapi.yaml", "/docs", "/docs/"] {
        allow.insert(path.to_owned(), HeaderValue::from_static("GET"));
    }
    allow
}

/// The token signer: HS256 with the secret, or the keys directory's key set
/// (with a first key generated if it has none).
fn tokens(settings: &Settings) -> Result<Tokens, StartupError> {
    let Some(algorithm) = KeyAlgorithm::for_setting(settings.jwt_algorithm) else {
        let secret = settings.load_secret()?;
        return Ok(Tokens::new(
            &secret,
            &settings.issuer,
            &settings.audience,
            settings.token_ttl,
            settings.leeway,
        ));
    };
    let store = KeyStore::open(KeyDir::new(settings.keys_dir_path()), algorithm)?;
    let active = store.current();
    let active = active.active();
    if active.algorithm() != algorithm {
        tracing::warn!(
            kid = active.kid(),
            "the active key is {}, not the configured {}: it signs until another key is activated",
            active.algorithm().name(),
            algorithm.name()
        );
    }
    Ok(Tokens::with_keys(
        Arc::new(store),
        &settings.issuer,
        &settings.audience,
        settings.token_ttl,
        settings.leeway,
    ))
}

/// Re-reads the keys directory every `every` (off the executor), so key
/// rotations reach this process without a restart and without any request
/// reading the directory. A broken directory keeps the last good key set;
/// its error is logged once, until it changes.
async fn reload_keys_periodically(store: Arc<KeyStore>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the keys were just read
    let mut last_error = None;
    loop {
        ticker.tick().await;
        let reloading = store.clone();
        let result = tokio::task::spawn_blocking(move || reloading.reload())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match result {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Replaced) => {
                let keys = store.current();
                let kids: Vec<String> = keys
                    .keys()
                    .iter()
                    .map(|k| format!("{}:{}", k.kid(), k.record().state.name()))
                    .collect();
                tracing::info!(active = keys.active().kid(), keys = %kids.join(","), "signing keys loaded");
                last_error = None;
            }
            Err(error) => {
                if last_error.as_ref() != Some(&error) {
                    tracing::error!(%error, "cannot reload the signing keys; keeping the last good set");
                    last_error = Some(error);
                }
            }
        }
    }
}

/// Deletes what no token can need any more (expired revocations, sessions,
/// refresh tokens) and stale throttle counters, every `every`.
async fn purge_periodically(state: Arc<AppState>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        state.throttle.sweep();
        match state.store.purge().await {
            Ok(purged) if purged == store::Purged::default() => {}
            Ok(purged) => tracing::info!(
                revocations = purged.revocations,
                sessions = purged.sessions,
                refresh_tokens = purged.refresh_tokens,
                "purged"
            ),
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
    }
}
