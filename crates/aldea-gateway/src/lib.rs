//! The gateway (ws-proxy): the public face of the Speech API. It authenticates every request (API
//! keys, short-lived JWTs), applies the organization's and key's limits, forwards uploads and
//! WebSocket streams to the least-loaded stt replica, relays the answers, and meters the audio
//! seconds onto the usage queue.
//!
//! Invariant: never decodes audio and never links `aldea-engine` (stt answers every audio
//! question); never logs keys, tokens or transcripts above `trace`; never reads env or files (the
//! binary passes `Config` and the store adapters); internal stt messages (`aldea.*`) never reach a
//! client.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aldea_store::{KeyCache, KeyVerifier, Limits, UsageQueue};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod admission;
mod auth;
mod error;
mod extract;
mod grant;
mod metrics;
mod openai;
mod openapi;
mod pool;
mod probes;
mod relay;
mod router;
mod upload;
mod upstream;
mod usage;

pub use error::ApiError;
pub use router::router;

/// Everything the gateway is told; the binary fills it from flags, env and files.
#[derive(Debug, Clone)]
pub struct Config {
    /// stt replicas: `http://host:port` each; a host name may resolve to several addresses (a
    /// Kubernetes headless Service), each of which becomes a replica.
    pub stt_urls: Vec<String>,
    /// Bearer token the stt replicas require (redacted in `Debug`).
    pub service_token: Option<SecretString>,
    /// HS256 secret shared by every replica for `/v1/auth/grant` tokens; `None` disables JWTs
    /// (redacted in `Debug`).
    pub jwt_secret: Option<SecretString>,
    /// Lifetime of a granted JWT.
    pub jwt_ttl: Duration,
    /// Browser origins allowed by CORS (the dashboard).
    pub cors_origins: Vec<String>,
    /// Concurrent streams per organization (a key's `max_streams` can only be stricter).
    pub org_max_streams: u32,
    /// Concurrent uploads per organization.
    pub org_max_uploads: u32,
    /// Requests per minute per key unless the key sets its own.
    pub key_requests_per_minute: u32,
    /// Lifetime of a stream or upload slot unless renewed (a dead gateway's slots free themselves).
    pub lease_ttl: Duration,
    /// How long a verify answer is kept in this process (positive answers).
    pub key_cache_ttl: Duration,
    /// How long an "unknown key" answer is kept (≤ 1 s, so a key just created works at once).
    pub negative_cache_ttl: Duration,
    /// How long a verify answer is kept in the shared cache (invalidated on every change).
    pub shared_cache_ttl: Duration,
    /// Largest upload body (and largest content fetched for a `url` body).
    pub max_body_bytes: usize,
    /// An upload body up to this size is held in memory; a larger one goes to an unnamed temporary
    /// file while it is sent to stt (what bounds the gateway's memory per upload).
    pub spool_memory_bytes: usize,
    /// Where larger bodies go (`None`: the system's temporary directory).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Whether a `url` body may point at loopback or private addresses (off: no request forgery
    /// against the cluster's own services).
    pub allow_private_urls: bool,
    /// Longest fetch of a `url` body.
    pub url_fetch_timeout: Duration,
    /// Longest wait for the next piece of an upload's body (a client that stalls gets 408 and
    /// frees its slot).
    pub body_idle_timeout: Duration,
    /// A long stream reports its usage at this interval.
    pub usage_interval: Duration,
    /// How often a live stream re-checks its key (a revoked key's streams close with 1008).
    pub recheck_interval: Duration,
    /// How long streams may go on after shutdown begins before they are closed with 1012.
    pub drain_timeout: Duration,
    /// Name of the default model, reported in usage events.
    pub model_name: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            stt_urls: vec!["http://127.0.0.1:8800".to_owned()],
            service_token: None,
            jwt_secret: None,
            jwt_ttl: Duration::from_secs(30),
            cors_origins: Vec::new(),
            org_max_streams: 10,
            org_max_uploads: 20,
            key_requests_per_minute: 600,
            lease_ttl: Duration::from_secs(15),
            // The two caches together keep a verify answer at most a second: until the system of
            // record publishes invalidations on every change (the platform), a revoked key or
            // exhausted credit is seen by expiry.
            key_cache_ttl: Duration::from_millis(500),
            negative_cache_ttl: Duration::from_millis(500),
            shared_cache_ttl: Duration::from_millis(500),
            max_body_bytes: 512 * 1024 * 1024,
            spool_memory_bytes: 2 * 1024 * 1024,
            spool_dir: None,
            allow_private_urls: false,
            url_fetch_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(30),
            usage_interval: Duration::from_secs(60),
            recheck_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            model_name: "tiny.en".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid gateway configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stt_urls.is_empty() {
            return Err(ConfigError("at least one stt URL is needed".to_owned()));
        }
        for url in &self.stt_urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError(format!("stt URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(ConfigError(format!("stt URL {url:?} must be http(s)://host[:port]")));
            }
        }
        if self.jwt_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
            return Err(ConfigError("the JWT secret must be at least 32 characters".to_owned()));
        }
        if self.lease_ttl < Duration::from_secs(3) || self.lease_ttl > Duration::from_secs(15) {
            return Err(ConfigError("the lease TTL must be between 3 and 15 s".to_owned()));
        }
        if self.negative_cache_ttl > Duration::from_secs(1) {
            return Err(ConfigError("negative key-cache entries may live at most 1 s".to_owned()));
        }
        if self.org_max_streams == 0 || self.org_max_uploads == 0 || self.key_requests_per_minute == 0 {
            return Err(ConfigError("limits must be at least 1".to_owned()));
        }
        Ok(())
    }
}

/// The store adapters the gateway works through (in-memory, SQLite or Redis; picked by the binary).
#[derive(Clone)]
pub struct Deps {
    pub keys: Arc<dyn KeyVerifier>,
    pub key_cache: Arc<dyn KeyCache>,
    pub limits: Arc<dyn Limits>,
    pub usage: Arc<dyn UsageQueue>,
}

/// Shared state of one gateway process.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    deps: Deps,
    /// `deps.limits` with this process's limiter standing in while the store fails.
    limits: Arc<admission::WithFallback>,
    auth: auth::Authenticator,
    pool: Arc<pool::SttPool>,
    usage: Arc<usage::UsageSink>,
    metrics: metrics::Metrics,
    /// Streams and their helper tasks; `serve` waits for them.
    tasks: TaskTracker,
    /// Cancelled when the drain window has passed: streams still open close with 1012.
    drain: CancellationToken,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(config: Config, deps: Deps) -> Result<AppState, ConfigError> {
        config.validate()?;
        let auth = auth::Authenticator::new(&config, deps.keys.clone(), deps.key_cache.clone());
        let pool = Arc::new(pool::SttPool::new(&config).map_err(|e| ConfigError(e.to_string()))?);
        let usage = Arc::new(usage::UsageSink::new(deps.usage.clone()));
        let metrics = metrics::Metrics::default();
        let limits = Arc::new(admission::WithFallback::new(deps.limits.clone(), metrics.limits_fallbacks.clone()));
        Ok(AppState(Arc::new(Inner {
            config,
            deps,
            limits,
            auth,
            pool,
            usage,
            metrics,
            tasks: TaskTracker::new(),
            drain: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
        })))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// How a body of at most `max_bytes` is read: in memory up to the spool threshold, idle at
    /// most `idle`.
    pub(crate) fn spool_limits(&self, max_bytes: usize, idle: Duration) -> aldea_http::spool::SpoolLimits {
        aldea_http::spool::SpoolLimits {
            max_bytes: max_bytes as u64,
            in_memory: self.0.config.spool_memory_bytes,
            idle,
            dir: self.0.config.spool_dir.clone(),
        }
    }

    /// Whether the gateway can serve: an stt replica is ready and the key store answers.
    pub async fn is_ready(&self) -> bool {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return false;
        }
        // A well-formed hash of no key: the store (or the platform) answers it without a grant.
        let probe = aldea_store::hash_key("aldea-readiness-probe");
        let store_ok = self.0.deps.keys.verify(&probe, aldea_store::unix_now()).await.is_ok();
        store_ok && self.0.pool.any_ready().await
    }

    /// Usage events not yet accepted by the queue (they are retried).
    pub fn pending_usage(&self) -> usize {
        self.0.usage.pending()
    }
}

/// Serves the gateway on `listener` until `shutdown`; then stops accepting, lets streams run for
/// the drain window, closes the rest with 1012, and flushes the usage still buffered.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let background = CancellationToken::new();
    state.0.auth.spawn_invalidation_listener(background.clone());
    state.0.usage.spawn_retry(background.clone());
    // The first capacity readings are in before the first request is taken.
    state.0.pool.start(background.clone()).await;
    let app = router(state.clone());
    let stop = shutdown.clone();
    let on_stop = state.clone();
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
            on_stop.0.shutting_down.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: draining streams");
        })
        .await;
    let drain = state.0.drain.clone();
    let window = state.0.config.drain_timeout;
    state.0.tasks.close();
    if tokio::time::timeout(window, state.0.tasks.wait()).await.is_err() {
        drain.cancel();
        state.0.tasks.wait().await;
    }
    state.0.usage.flush().await;
    background.cancel();
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = Config {
            service_token: Some("service-token-0123456789".into()),
            jwt_secret: Some("jwt-secret-0123456789abcdefghijklmnop".into()),
            ..Config::default()
        };
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("service-token-0123456789"), "{shown}");
        assert!(!shown.contains("jwt-secret-0123456789"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
