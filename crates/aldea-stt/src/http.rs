//! Routes and middleware: request ids, the service token, probes, metrics, capacity, uploads and
//! the WebSocket upgrade.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aldea_audio::{DecodeOptions, Limits};
use aldea_engine::EngineError;
use aldea_http::spool::{spool, SpoolLimits};
use aldea_http::RequestId;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Failure};
use crate::params::ListenParams;
use crate::scheduler::{JobKind, WindowInput};
use crate::{metrics, response, session, AppState};

/// The service's routes with their middleware.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/listen", get(listen_ws).post(listen_upload))
        .route("/v1/listen/pcm", get(listen_ws_pcm))
        .route("/v1/listen/media", post(listen_upload))
        .route("/v1/listen/media/transcribe", post(listen_upload))
        .route("/v1/listen/media/transcribe_file", post(listen_upload))
        .route("/v1/capacity", get(capacity))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .merge(api)
        .layer(middleware::from_fn(aldea_http::request_id))
        .layer(middleware::from_fn(aldea_http::close_when_body_unread))
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.config().service_token {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        // Compared in constant time: no early exit that would leak the matching prefix by timing.
        if !given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.expose_secret().as_bytes()))) {
            let id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
            return ApiError::Unauthorized.with_request_id(&id);
        }
    }
    next.run(request).await
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let snapshot = metrics::Snapshot {
        free_stream_slots: state.free_stream_slots(),
        queue_depth: state.0.scheduler.queue_depth(),
        ready: state.is_ready(),
    };
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics().render(snapshot)).into_response()
}

async fn capacity(State(state): State<AppState>) -> Response {
    Json(aldea_proto::Capacity {
        active_streams: state.0.active_streams.load(std::sync::atomic::Ordering::SeqCst) as u64,
        free_stream_slots: state.free_stream_slots() as u64,
        max_streams: state.config().max_streams as u64,
        queue_depth: state.0.scheduler.queue_depth() as u64,
        queued_uploads: state.queued_uploads() as u64,
        ready: state.is_ready(),
    })
    .into_response()
}

fn parse_params(state: &AppState, pairs: &[(String, String)]) -> Result<ListenParams, ApiError> {
    ListenParams::parse(pairs, &state.config().model_name, state.0.multilingual)
}

async fn listen_upload(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match upload(&state, &request_id, &pairs, &headers, body).await {
        Ok(response) => response,
        Err(error) => Failure { request_id, error }.into_response(),
    }
}

async fn upload(
    state: &AppState,
    request_id: &str,
    pairs: &[(String, String)],
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = parse_params(state, pairs)?;
    if state.0.shutdown.is_cancelled() {
        return Err(ApiError::NoCapacity("the service is shutting down".to_owned()));
    }
    let is_json =
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Err(ApiError::BadRequest(
            "JSON bodies with a url are fetched by the gateway; send the audio bytes to this service".to_owned(),
        ));
    }
    // A place in line first (503 at once when the line is full, no byte read), then the body, read
    // while the upload waits: the sender is never left stalled on unread bytes, and a waiting
    // upload holds at most the spool's memory threshold, the rest in an unnamed temporary file.
    let rejected = |_: &ApiError| {
        state.metrics().uploads_rejected_total.inc();
    };
    let place = state.enter_upload_line().inspect_err(rejected)?;
    let config = state.config();
    let limits = SpoolLimits {
        max_bytes: config.max_body_bytes as u64,
        in_memory: config.spool_memory_bytes,
        idle: Duration::from_millis(config.body_idle_timeout_ms),
        dir: config.spool_dir.clone(),
    };
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let spooled = tokio::select! {
        spooled = spool(body.into_data_stream(), declared, &limits) => spooled?,
        _ = state.0.shutdown.cancelled() => {
            return Err(ApiError::NoCapacity("the service is shutting down".to_owned()));
        }
    };
    if spooled.is_empty() {
        return Err(ApiError::BadRequest("the body is empty: send the audio bytes".to_owned()));
    }
    let permit = state.take_upload_slot(place).await.inspect_err(rejected)?;
    state.metrics().uploads_total.inc();
    let decode_options = DecodeOptions {
        encoding: params.audio.encoding,
        sample_rate: params.audio.sample_rate,
        channels: params.audio.channels,
        unknown_as_linear16: true,
        limits: Limits { max_bytes: config.max_body_bytes, max_duration_s: config.max_upload_seconds },
    };
    let worker = state.clone();
    let language = params.language.clone();
    let started = Instant::now();
    let (transcript, sha256) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let _permit = permit;
        // Read in chunks straight to 16 kHz mono: neither the encoded bytes nor the source-rate
        // channels are held whole.
        let samples = aldea_audio::decode_mono_16k(spooled.reader(), &decode_options)?.samples;
        let sha256 = response::sha256_hex(spooled.reader()).map_err(|e| ApiError::Internal(e.to_string()))?;
        worker.metrics().add_upload_audio(samples.len() as f64 / 16_000.0);
        let options = aldea_engine::TranscribeOptions { language, ..(*worker.0.upload_options).clone() };
        let scheduler = worker.0.scheduler.clone();
        let mut runner = |job| {
            scheduler
                .run_blocking(WindowInput::Mel(job), JobKind::Upload)
                .map(|done| done.output)
                .map_err(|e| EngineError::Inference(e.to_string()))
        };
        worker
            .0
            .transcriber
            .transcribe_with(&samples, &options, &mut runner, &mut |_| {})
            .map(|transcript| (transcript, sha256))
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the upload task failed: {e}")))??;
    if transcript.duration > 0.0 {
        state.metrics().upload_rtf.observe(started.elapsed().as_secs_f64() / transcript.duration);
    }
    let body = response::prerecorded_for(
        &transcript,
        &state.config().model_name,
        &sha256,
        request_id,
        params.tags.clone(),
        params.warnings.clone(),
        response::Structure { utterances: params.utterances, paragraphs: params.paragraphs },
    );
    tracing::info!(
        request_id,
        audio_s = transcript.duration,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upload transcribed"
    );
    Ok(Json(body).into_response())
}

async fn listen_ws(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Query(pairs): Query<Vec<(String, String)>>,
    request: Request,
) -> Response {
    start_stream(state, request_id, pairs, request, false).await
}

async fn listen_ws_pcm(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Query(pairs): Query<Vec<(String, String)>>,
    request: Request,
) -> Response {
    start_stream(state, request_id, pairs, request, true).await
}

async fn start_stream(
    state: AppState,
    request_id: String,
    pairs: Vec<(String, String)>,
    request: Request,
    pcm_only: bool,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return Failure {
                request_id,
                error: ApiError::BadRequest(format!("a WebSocket upgrade is needed: {rejection}")),
            }
            .into_response()
        }
    };
    let resume = parts.headers.get(aldea_proto::stream::RESUME_HEADER).map(|v| v.to_str().unwrap_or(""));
    let mut params =
        match parse_params(&state, &pairs).and_then(|p| p.with_resume_header(resume)).map(ListenParams::for_stream) {
            Ok(params) => params,
            Err(error) => return Failure { request_id, error }.into_response(),
        };
    if pcm_only {
        params.audio.encoding = Some(aldea_audio::Encoding::Linear16);
    }
    let Some(permit) = state.admit_stream(params.resume.is_some()) else {
        state.metrics().streams_rejected_total.inc();
        return Failure {
            request_id,
            error: ApiError::NoCapacity("no free stream slot on this replica; retry or use another".to_owned()),
        }
        .into_response();
    };
    state.metrics().streams_total.inc();
    let tracker = state.0.sessions.clone();
    let params = Arc::new(params);
    aldea_http::ws::limited(upgrade)
        .protocols(["token", "bearer"])
        .on_upgrade(move |socket| {
            let session = session::run(state, socket, params, request_id, permit);
            async move {
                tracker.track_future(session).await;
            }
        })
        .into_response()
}
