//! The web dashboard (platform host): sign-up and login, API keys, usage charts, members, billing, a
//! playground for files and the microphone, and the API reference. Pages are rendered on the server
//! (maud templates, checked at compile time); the stylesheet and the few scripts are embedded in the
//! binary. `router(state)` serves it, `serve(state, listener, shutdown)` runs it on a socket the
//! caller bound.
//!
//! Invariant: talks to the platform only through its public HTTP API (`platform.rs`), as any client
//! would, with the person's session token; never names a store. The browser calls the Speech API
//! itself for the playground, with a 30-s token from the platform's `listen-token` (never a
//! long-lived key in a page).
//! Invariant: no session token, key or password in a URL, a log line or a page other than the one
//! that shows a new key once; every state change is a POST with a CSRF token; scripts only from
//! this origin (the CSP has no `unsafe-inline`); every page renders without JavaScript.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

mod assets;
mod chart;
mod docs;
mod error;
mod pages;
mod platform;
mod session;

pub use platform::Platform;
/// The URL type of [`Config`].
pub use reqwest::Url;

/// What the dashboard is told by the binary.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where this server reaches the platform API (`http://platform:8000`).
    pub platform_url: reqwest::Url,
    /// The public Speech API as a browser reaches it (the gateway): the playground calls it, the
    /// docs' examples name it.
    pub api_url: reqwest::Url,
    /// Cookies with `Secure` (off only for plain http on loopback or a trusted network).
    pub secure_cookies: bool,
}

/// The dashboard's shared state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    platform: Platform,
    docs: docs::DocsCache,
    csp: String,
}

impl AppState {
    pub fn new(config: Config) -> AppState {
        let platform = Platform::new(config.platform_url.clone());
        let csp = assets::content_security_policy(&config.api_url);
        AppState(Arc::new(Inner { docs: docs::DocsCache::default(), platform, csp, config }))
    }

    fn config(&self) -> &Config {
        &self.0.config
    }

    fn platform(&self) -> &Platform {
        &self.0.platform
    }

    /// The Speech API's base URL without a trailing slash, as pages and scripts use it.
    fn api_base(&self) -> String {
        self.0.config.api_url.as_str().trim_end_matches('/').to_owned()
    }
}

/// The dashboard's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::auth::home))
        .route("/signup", get(pages::auth::signup_form).post(pages::auth::signup))
        .route("/login", get(pages::auth::login_form).post(pages::auth::login))
        .route("/logout", post(pages::auth::logout))
        .route("/org", post(pages::auth::switch_org))
        .route("/orgs", post(pages::auth::create_org))
        .route("/keys", get(pages::keys::list).post(pages::keys::create))
        .route("/keys/{key_id}/rotate", get(pages::keys::confirm_rotate).post(pages::keys::rotate))
        .route("/keys/{key_id}/revoke", get(pages::keys::confirm_revoke).post(pages::keys::revoke))
        .route("/usage", get(pages::usage::page))
        .route("/usage.csv", get(pages::usage::csv))
        .route("/playground", get(pages::playground::page))
        .route("/playground/token", post(pages::playground::token))
        .route("/playground/subtitles", post(pages::playground::subtitles))
        .route("/members", get(pages::members::list).post(pages::members::add))
        .route("/members/{user_id}/remove", get(pages::members::confirm_remove).post(pages::members::remove))
        .route("/billing", get(pages::billing::page))
        .route("/docs", get(docs::page))
        .route("/assets/{name}", get(assets::serve))
        .route("/favicon.ico", get(|| async { axum::response::Redirect::permanent(assets::url("favicon.svg")) }))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(pages::ready))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), assets::security_headers))
        .layer(axum::middleware::from_fn(aldea_http::request_id))
        .layer(axum::middleware::from_fn(aldea_http::close_when_body_unread))
        .with_state(state)
}

/// Serves the dashboard on `listener` until `shutdown`.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
