//! The gateway's routes and the layers in front of them: which handler answers which path, CORS for
//! the dashboard's origins, the refusal counter, request ids, and `Connection: close` on an answer
//! given before its request's body was read.
//!
//! Invariant: routing only — no handler logic lives here; every route sits behind the same layers,
//! and a refusal (an answer made from an `ApiError`) is counted by its status exactly once.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::Refusal;
use crate::{grant, openai, openapi, probes, relay, upload, AppState};

/// The gateway's routes with their middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/listen", get(relay::listen_ws).post(upload::listen_upload))
        .route("/v1/listen/pcm", get(relay::listen_ws_pcm))
        .route("/v1/listen/media", post(upload::listen_upload))
        .route("/v1/listen/media/transcribe", post(upload::listen_upload))
        .route("/v1/listen/media/transcribe_file", post(upload::listen_upload))
        // The form: the upload limit and a little for the other fields (each is capped while read).
        .route(
            "/v1/audio/transcriptions",
            post(openai::transcriptions)
                .layer(DefaultBodyLimit::max(state.config().max_body_bytes + openai::FORM_OVERHEAD_BYTES)),
        )
        .route("/v1/auth/grant", post(grant::grant))
        .route("/openapi.json", get(openapi::document))
        .route("/live", get(probes::live))
        .route("/ready", get(probes::ready))
        .route("/metrics", get(probes::metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), count_refusals))
        .layer(cors(&state.config().cors_origins))
        .layer(middleware::from_fn(aldea_http::request_id))
        .layer(middleware::from_fn(aldea_http::close_when_body_unread))
        .with_state(state)
}

/// CORS for the configured origins only (`*`: any, echoed); preflights are answered here.
fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            AUTHORIZATION,
            CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("timestamps"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("dg-request-id"),
            RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Counts the gateway's own refusals by status (answers stt gave are relayed, not counted).
async fn count_refusals(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.extensions().get::<Refusal>().is_some() {
        state.0.metrics.count_refusal(response.status().as_u16());
    }
    response
}
