//! The platform (backend host): people, organizations, members, API keys, usage and credit over HTTP, to
//! docs/spec/platform-api.md. The system of record is reached only through the store ports
//! (`Keys`, `Accounts`, `UsageReports`); `router(state)` serves the API, `serve(state, listener, shutdown)` runs it
//! on a socket the caller bound.
//!
//! Invariant: never names a database or Redis client and never reads configuration or the
//! environment (the binary passes [`Config`] and [`Deps`]); passwords are kept only as argon2id
//! hashes and session tokens and keys only as SHA-256; no secret, password or token is logged or put
//! in an error body; a caller never learns whether another organization's resource exists (404).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use aldea_store::{Accounts, Credit, KeyCache, Keys, Limits, UsageReports};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

mod admin;
mod api;
mod auth;
mod error;
mod internal;
mod metrics;
mod openapi;
mod usage;
mod views;

pub use admin::{issue_password_reset, set_admin, RESET_TTL_SECONDS};
pub use error::ApiError;

/// What the platform is told by the binary.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a session lasts after login.
    pub session_ttl: Duration,
    /// Credit the organization made at signup starts with (`ALDEA_SIGNUP_CREDIT_SECONDS`); further
    /// organizations start with none (credit is added by a platform admin).
    pub signup_credit: Credit,
    /// Whether cookies are `Secure` (off only for local http).
    pub secure_cookies: bool,
    /// Failed logins per email per minute before 429.
    pub login_attempts_per_minute: u32,
    /// Largest JSON body accepted.
    pub max_body_bytes: usize,
    /// Longest a client may take to send a body (then 408): a slow client does not hold a
    /// connection and its buffers for long.
    pub body_timeout: Duration,
    /// The token services present on the internal API (`/internal/…`); without one it is off.
    pub service_token: Option<secrecy::SecretString>,
    /// The secret the gateways check browser tokens with (`ALDEA_JWT_SECRET`); without one
    /// `listen-token` is refused.
    pub jwt_secret: Option<secrecy::SecretString>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            signup_credit: Credit::Millis(3_600_000),
            secure_cookies: true,
            login_attempts_per_minute: 10,
            max_body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            service_token: None,
            jwt_secret: None,
        }
    }
}

/// The store adapters the platform works through (picked by the binary).
#[derive(Clone)]
pub struct Deps {
    pub keys: Arc<dyn Keys>,
    pub accounts: Arc<dyn Accounts>,
    /// Recorded usage (the usage API reads its roll-ups).
    pub usage: Arc<dyn UsageReports>,
    /// Login attempt counters.
    pub limits: Arc<dyn Limits>,
    /// The gateways' shared key cache: a revoked key's entry is dropped and the invalidation
    /// published, so every gateway refuses it at once.
    pub key_cache: Arc<dyn KeyCache>,
}

impl Deps {
    /// One store for keys, accounts and usage, with login limits and a key cache of this process
    /// only: a single platform with no gateway beside it (tests, tools).
    pub fn single_process<S: Keys + Accounts + UsageReports + 'static>(store: Arc<S>) -> Deps {
        Deps {
            keys: store.clone(),
            accounts: store.clone(),
            usage: store,
            limits: Arc::new(aldea_store::MemoryLimits::new()),
            key_cache: Arc::new(aldea_store::MemoryKeyCache::new()),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) deps: Deps,
    /// Password hashes computed at once (argon2id takes ~19 MiB and tens of ms each): one per
    /// core, the rest wait.
    pub(crate) hashing: Arc<tokio::sync::Semaphore>,
    pub(crate) metrics: Arc<metrics::Metrics>,
}

impl AppState {
    pub fn new(config: Config, deps: Deps) -> AppState {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AppState {
            config: Arc::new(config),
            deps,
            hashing: Arc::new(tokio::sync::Semaphore::new(cores)),
            metrics: Arc::default(),
        }
    }
}

/// Every route of the platform API.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/v1/auth/signup", post(api::signup))
        .route("/v1/auth/login", post(api::login))
        .route("/v1/auth/logout", post(api::logout))
        .route("/v1/auth/reset-password", post(admin::reset_password))
        .route("/v1/me", get(api::me))
        .route("/v1/orgs", get(api::list_orgs).post(api::create_org))
        .route("/v1/orgs/{org_id}", get(api::get_org).patch(api::rename_org))
        .route("/v1/orgs/{org_id}/keys", get(api::list_keys).post(api::create_key))
        .route("/v1/orgs/{org_id}/keys/{key_id}", delete(api::revoke_key))
        .route("/v1/orgs/{org_id}/keys/{key_id}/rotate", post(api::rotate_key))
        .route("/v1/orgs/{org_id}/usage", get(usage::usage))
        .route("/v1/orgs/{org_id}/usage.csv", get(usage::usage_csv))
        .route("/v1/orgs/{org_id}/requests", get(usage::requests))
        .route("/v1/orgs/{org_id}/members", get(api::list_members).post(api::add_member))
        .route("/v1/orgs/{org_id}/members/{user_id}", delete(api::remove_member))
        .route("/v1/orgs/{org_id}/balance", get(api::balance))
        .route("/v1/orgs/{org_id}/listen-token", post(api::listen_token))
        .route("/v1/orgs/{org_id}/credits", post(admin::add_credits))
        .route("/internal/v1/keys/verify", post(internal::verify_key))
        .route("/live", get(api::live))
        .route("/openapi.json", get(openapi::document))
        .route("/ready", get(api::ready))
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint".to_owned()) })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn(aldea_http::request_id))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
