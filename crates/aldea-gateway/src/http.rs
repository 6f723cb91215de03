//! Routes and middleware: request ids, CORS for the dashboard's origins, probes, metrics, the JWT
//! grant, and the checks every Speech API request passes before any work (credential, scope,
//! credit, requests per minute).

use std::time::Duration;

use aldea_http::RequestId;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{self, Via};
use crate::error::ApiError;
use crate::{admission, metrics, openai, relay, upload, AppState};

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
        .route("/v1/auth/grant", post(grant))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
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

async fn ready(State(state): State<AppState>) -> Response {
    if state.is_ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let gauges = metrics::Gauges {
        pending_usage: state.pending_usage(),
        limits_fallbacks: state.0.limits.fallbacks.load(std::sync::atomic::Ordering::Relaxed),
        // The queue's dead letters: usage that could not be recorded (kept for an operator).
        usage_dead_letters: state.0.deps.usage.dead_letter_count().await.ok(),
    };
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.0.metrics.render(&gauges)).into_response()
}

/// `POST /v1/auth/grant`: a short-lived token for browsers, for a caller holding a key.
async fn grant(
    State(state): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (credential, _) = auth::credential(&headers)
            .ok_or_else(|| ApiError::Unauthorized("missing credentials: send Authorization: Token <key>".to_owned()))?;
        if !matches!(credential, auth::Credential::Key(_)) {
            return Err(ApiError::Unauthorized("a token is granted for an API key only".to_owned()));
        }
        let grant = state.0.auth.authenticate(&credential).await?;
        let (token, expires_in) = state.0.auth.grant_jwt(&grant, state.config().jwt_ttl)?;
        Ok(Json(serde_json::json!({ "access_token": token, "expires_in": expires_in })).into_response())
    }
    .await;
    result.unwrap_or_else(|e: ApiError| refuse(&state, e, &id))
}

/// An error answer, counted by status.
pub(crate) fn refuse(state: &AppState, error: ApiError, request_id: &str) -> Response {
    state.0.metrics.count_refusal(error.status().as_u16());
    error.with_request_id(request_id)
}

/// What every Speech API request passes first: who it is, whether its key may listen and its
/// organization has credit, and the key's request rate.
pub(crate) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(aldea_store::KeyGrant, auth::Credential, Via), ApiError> {
    let (credential, via) = auth::credential(headers).ok_or_else(|| {
        ApiError::Unauthorized(
            "missing credentials: send Authorization: Token <key> or the token subprotocol".to_owned(),
        )
    })?;
    let grant = state.0.auth.authenticate(&credential).await?;
    admission::check_rate(state.0.limits.as_ref(), state.config(), &grant).await?;
    Ok((grant, credential, via))
}
