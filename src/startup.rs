//! Building and running the service: open the database, load the secret, bind
//! the listener, assemble routes and middleware, serve until shutdown.
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
use poem::listener::TcpAcceptor;
use poem::{Endpoint, Response, Route, Server};

use crate::api;
use crate::auth::password::Hasher;
use crate::auth::throttle::{Limits, LoginThrottle};
use crate::auth::tokens::Tokens;
use crate::config::{ConfigError, Settings};
use crate::cors::SpaCors;
use crate::middleware::Edge;
use crate::state::AppState;
use crate::store::changes::{Changes, LookupCache};
use crate::store::{self, denylist, denylist::Denylist, pool, Readers};

/// Threads serving the per-request database reads (see [`crate::store::reader`]).
const READER_THREADS: usize = 2;

/// Most tokens whose lookup answers are remembered (a few hundred bytes each).
const LOOKUP_CACHE_TOKENS: usize = 16_384;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the service could not start; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration (secret too short, secret file too open, ...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Database(#[from] pool::OpenError),
    /// The denylist writer could not start.
    #[error("cannot start the denylist writer: {0}")]
    Writer(#[from] store::StoreError),
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
    writer: std::thread::JoinHandle<()>,
}

impl Application {
    /// Opens the database (migrating it), loads or generates the secret and
    /// binds the listener. Blocking file work runs off the executor.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        tokio::task::spawn_blocking(move || Self::build_blocking(settings))
            .await
            .unwrap_or_else(|e| Err(StartupError::Writer(store::StoreError::Task(e.to_string()))))
    }

    fn build_blocking(settings: Settings) -> Result<Self, StartupError> {
        let timeout = Duration::from_millis(settings.db_timeout_ms);
        let pool = pool::open(&settings.database, timeout)?;
        let secret = settings.load_secret()?;
        let (denylist, writer) = Denylist::start(&settings.database, timeout)?;
        let readers = Readers::start(&settings.database, READER_THREADS, timeout)?;
        let changes = Changes::open(&settings.database);
        if changes.is_none() {
            tracing::warn!("cannot map the WAL index; every request will query the denylist");
        }
        let listener = std::net::TcpListener::bind(settings.bind)
            .map_err(|e| StartupError::Bind(settings.bind, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| StartupError::Bind(settings.bind, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(settings.bind, e))?;
        let state = Arc::new(AppState {
            pool,
            readers,
            changes,
            lookups: LookupCache::new(LOOKUP_CACHE_TOKENS),
            denylist,
            tokens: Tokens::new(
                &secret,
                &settings.issuer,
                &settings.audience,
                settings.token_ttl,
                settings.leeway,
            ),
            throttle: LoginThrottle::new(Limits {
                per_email: settings.login_max_failures,
                per_client: settings.login_max_failures_per_client,
                window: Duration::from_secs(settings.login_window),
                max_keys: settings.login_throttle_keys as usize,
            }),
            passwords: Hasher::per_cpu(settings.password_hash_queue.map(|q| q as usize)),
            trusted_proxies: settings.trusted_proxies.clone(),
            registration: settings.registration,
            leeway: settings.leeway,
        });
        // Pay for the dummy hash now rather than on the first unknown login.
        let _ = crate::auth::password::dummy_hash();
        Ok(Self {
            listener,
            local_addr,
            state,
            settings,
            writer,
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
        let app = app(self.state, &self.settings);
        let acceptor = TcpAcceptor::from_std(self.listener)?;
        tracing::info!("listening on http://{}", self.local_addr);
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(SHUTDOWN_GRACE))
            .await;
        purge.abort();
        let _ = purge.await;
        // Every handle on the state is gone now: the revocation writer commits
        // what is queued, checkpoints the WAL and stops; wait for it.
        let writer = self.writer;
        let joined = tokio::task::spawn_blocking(move || writer.join());
        if tokio::time::timeout(SHUTDOWN_GRACE, joined).await.is_err() {
            tracing::warn!("the denylist writer did not stop in time");
        }
        tracing::info!("stopped");
        result
    }
}

/// The whole HTTP app: API and documentation, inside [`Edge`].
pub fn app(state: Arc<AppState>, settings: &Settings) -> impl Endpoint<Output = Response> {
    let api = api::service();
    let routes = Route::new()
        .nest("/docs", api.swagger_ui())
        .at("/openapi.json", api.spec_endpoint())
        .at("/openapi.yaml", api.spec_endpoint_yaml())
        .nest("/", api);
    let cors = SpaCors::new(settings.cors_origins.iter().map(String::as_str));
    Edge::new(routes, state, cors, allowed_methods())
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

/// Deletes expired denylist rows and stale throttle counters every `every`.
async fn purge_periodically(state: Arc<AppState>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        state.throttle.sweep();
        let pool = state.pool.clone();
        let cutoff = chrono::Utc::now().timestamp() - state.leeway as i64;
        match store::blocking(move || denylist::purge_expired(&*pool.get()?, cutoff)).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired denylist rows"),
            Err(e) => tracing::warn!(error = %e, "denylist purge failed"),
        }
    }
}
