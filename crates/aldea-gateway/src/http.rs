//! Routes and middleware: request ids, CORS for the dashboard's origins, probes, metrics, the JWT
//! grant, and the checks every Speech API request passes before any work (credential, scope,
//! credit, requests per minute).

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, CONTENT_TYPE, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use crate::auth::{self, Via};
use crate::error::ApiError;
use crate::{admission, openai, relay, upload, AppState};

/// The request id: the caller's `x-request-id` when it sent a usable one, else a new UUID.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// The gateway's routes with their middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/listen", get(relay::listen_ws).post(upload::listen_upload))
        .route("/v1/listen/pcm", get(relay::listen_ws_pcm))
        .route("/v1/listen/media", post(upload::listen_upload))
        .route("/v1/listen/media/transcribe", post(upload::listen_upload))
        .route("/v1/listen/media/transcribe_file", post(upload::listen_upload))
        // The form's size is limited while it is read (the file field), not by axum's default.
        .route("/v1/audio/transcriptions", post(openai::transcriptions).layer(DefaultBodyLimit::disable()))
        .route("/v1/auth/grant", post(grant))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn(aldea_http::close_when_body_unread))
        .with_state(state)
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value.clone());
        response.headers_mut().insert("dg-request-id", value);
    }
    response
}

/// CORS for the configured origins only; preflights are answered here.
async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| state.config().cors_origins.iter().any(|allowed| allowed == "*" || allowed == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = request.method() == Method::OPTIONS;
    let mut response =
        if preflight && origin.is_some() { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(VARY, HeaderValue::from_static("origin"));
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, dg-request-id, retry-after"),
        );
        if preflight {
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
            headers.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, x-request-id, timestamps"),
            );
            headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
    response
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.is_ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.0.metrics.render(state.pending_usage())).into_response()
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
    admission::check_rate(state.0.deps.limits.as_ref(), state.config(), &grant).await?;
    Ok((grant, credential, via))
}
