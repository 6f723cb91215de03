//! The operator's routes: `/live` (the process answers), `/ready` (an stt replica is ready and the
//! key store answers; not while shutting down) and `/metrics` (Prometheus metrics, OpenMetrics
//! text).
//!
//! Invariant: no credential is asked and none is read; nothing here changes state.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::{metrics, AppState};

#[utoipa::path(get, path = "/live", tag = "probes", security(()),
    responses((status = 200, description = "The process serves", body = String, content_type = "text/plain")))]
pub(crate) async fn live() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/ready", tag = "probes", security(()),
    responses((status = 200, description = "An stt replica is ready and the key store answers", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready (or shutting down)", body = String, content_type = "text/plain")))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    if state.is_ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "probes", security(()),
    responses((status = 200, description = "OpenMetrics text exposition", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub(crate) async fn metrics_text(State(state): State<AppState>) -> Response {
    let gauges = metrics::Gauges {
        pending_usage: state.pending_usage(),
        // The queue's dead letters: usage that could not be recorded (kept for an operator).
        usage_dead_letters: state.0.deps.usage.dead_letter_count().await.ok(),
    };
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], state.0.metrics.render(&gauges)).into_response()
}
