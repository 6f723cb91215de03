//! The gateway's client of stt: the requests it makes to a replica, built here and tried on the
//! replicas in the pool's order — a stream's WebSocket ([`open_stream`], with the resume header when
//! it takes over a stream after a failover) and an upload's POST ([`post_upload`]).
//!
//! Invariant: every request to stt is built from the pieces named here (path, the forwarded query,
//! the request id, the service token, the resume handshake, an upload's content type and
//! `timestamps`): none of the client's headers pass, and no proxy is used. A replica that is full
//! (503) or unreachable is skipped and the next one tried; any other answer of stt's is final and
//! relayed as it came; no replica left is [`ApiError::NoCapacity`].

use aldea_http::spool::Spooled;
use aldea_proto::stream::{Resume, RESUME_HEADER};
use aldea_proto::PrerecordedResponse;
use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};

use crate::error::ApiError;
use crate::AppState;

/// A stream's WebSocket to its stt replica.
pub(crate) type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Read and write buffer of each WebSocket, client side and stt side.
pub(crate) const SOCKET_BUFFER: usize = 4 * 1024;

/// What an stt replica answered over HTTP: an upload's answer, or its refusal of a stream.
pub(crate) struct SttAnswer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) body: Bytes,
}

impl SttAnswer {
    /// The audio seconds a successful answer reports (read as the proto type stt writes it from;
    /// the body is relayed as it came, fields this gateway does not know included).
    pub(crate) fn seconds(&self) -> Option<f64> {
        if !self.status.is_success() {
            return None;
        }
        let answer: PrerecordedResponse = serde_json::from_slice(&self.body).ok()?;
        Some(answer.metadata.duration)
    }
}

impl IntoResponse for SttAnswer {
    /// The answer as stt gave it: its status, its body to the byte, its content type.
    fn into_response(self) -> Response {
        let mut response = (self.status, Body::from(self.body)).into_response();
        if let Some(value) = self.content_type {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        response
    }
}

/// How opening a stream went.
pub(crate) enum Opened {
    /// A replica took it: the socket (boxed: it is large, and a refusal is not), and which replica.
    Stream(Box<Upstream>, Url),
    /// stt refused the request itself (bad parameters and the like): the client's answer.
    Refused(SttAnswer),
}

/// Opens the stream on the first replica that takes it (`avoid` last: a replica that just failed),
/// resumed from `resume` when given (stt's resume header, which only the gateway sets).
pub(crate) async fn open_stream(
    state: &AppState,
    request_id: &str,
    path: &str,
    query: &str,
    resume: Option<&Resume>,
    avoid: Option<&Url>,
) -> Result<Opened, ApiError> {
    let mut replicas = state.0.pool.ordered();
    if let Some(avoid) = avoid {
        replicas.sort_by_key(|r| r == avoid);
    }
    for base in replicas {
        let mut url = base.clone();
        let scheme = if base.scheme() == "https" { "wss" } else { "ws" };
        if url.set_scheme(scheme).is_err() {
            continue;
        }
        url.set_path(path);
        // During a rolling update a replica of the release before the header reads the resume from
        // the query: it gets both (the client's own `resume_*` were dropped by `forwarded_query`).
        let legacy = resume.map(|r| r.to_legacy_query());
        let query = match (&legacy, query.is_empty()) {
            (Some(legacy), true) => legacy.clone(),
            (Some(legacy), false) => format!("{query}&{legacy}"),
            (None, _) => query.to_owned(),
        };
        url.set_query((!query.is_empty()).then_some(&query));
        let Ok(mut request) = url.as_str().into_client_request() else { continue };
        if let Ok(value) = request_id.parse() {
            request.headers_mut().insert("x-request-id", value);
        }
        if let Some(token) = state.0.pool.token() {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.headers_mut().insert("authorization", value);
            }
        }
        if let Some(resume) = resume {
            let Ok(value) = resume.to_header().parse() else { continue };
            request.headers_mut().insert(RESUME_HEADER, value);
        }
        let config = WebSocketConfig::default().read_buffer_size(SOCKET_BUFFER).write_buffer_size(SOCKET_BUFFER);
        match tokio_tungstenite::connect_async_with_config(request, Some(config), false).await {
            Ok((stream, _)) => return Ok(Opened::Stream(Box::new(stream), base)),
            Err(tungstenite::Error::Http(answer)) if answer.status() != StatusCode::SERVICE_UNAVAILABLE => {
                let status = answer.status();
                let body = Bytes::from(answer.into_body().unwrap_or_default());
                let content_type = Some(HeaderValue::from_static("application/json"));
                return Ok(Opened::Refused(SttAnswer { status, content_type, body }));
            }
            Err(e) => {
                if matches!(e, tungstenite::Error::Http(_)) {
                    state.0.pool.note_full(&base);
                }
                tracing::warn!(request_id, replica = %base, error = %e, "stt replica did not take the stream; trying the next");
                state.0.metrics.upstream_retries.inc();
            }
        }
    }
    Err(ApiError::NoCapacity("no stt replica can take a stream now; retry shortly".to_owned()))
}

/// Sends an upload's audio to the replicas in order until one takes it; a full (503) or unreachable
/// replica is skipped, any other answer is final. A replica whose connection breaks before it
/// answers is asked once more on a fresh connection first: a pooled keep-alive connection that the
/// replica closed after its last answer (it does when it answered before reading a body) fails the
/// next request sent on it, and that says nothing about the replica.
pub(crate) async fn post_upload(
    state: &AppState,
    request_id: &str,
    query: &str,
    audio: &Spooled,
    content_type: Option<HeaderValue>,
    timestamps: Option<HeaderValue>,
) -> Result<SttAnswer, ApiError> {
    for base in state.0.pool.ordered() {
        let Ok(mut url) = base.join("/v1/listen") else { continue };
        url.set_query((!query.is_empty()).then_some(query));
        for attempt in 0..2 {
            // A body in memory is sent as it is; one in a file is streamed from its first byte again
            // for every attempt, with its length said up front.
            let body = match audio.as_bytes() {
                Some(bytes) => reqwest::Body::from(bytes.clone()),
                None => reqwest::Body::wrap_stream(audio.stream()),
            };
            let mut request = state
                .0
                .pool
                .client()
                .post(url.clone())
                .header("x-request-id", request_id)
                .header(CONTENT_LENGTH, audio.len())
                .body(body);
            if let Some(content_type) = &content_type {
                request = request.header(CONTENT_TYPE, content_type.clone());
            }
            if let Some(timestamps) = &timestamps {
                request = request.header("timestamps", timestamps.clone());
            }
            if let Some(token) = state.0.pool.token() {
                request = request.bearer_auth(token);
            }
            let answer = match request.send().await {
                Ok(answer) => answer,
                Err(e) if attempt == 0 && !e.is_timeout() && !e.is_connect() => {
                    tracing::debug!(request_id, replica = %base, error = %causes(&e), "stt connection broke before an answer; asking again");
                    state.0.metrics.upstream_retries.inc();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(request_id, replica = %base, error = %causes(&e), "stt replica unreachable; trying the next");
                    state.0.metrics.upstream_retries.inc();
                    break;
                }
            };
            let status = answer.status();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                state.0.pool.note_full(&base);
                state.0.metrics.upstream_retries.inc();
                break;
            }
            let content_type =
                answer.headers().get(CONTENT_TYPE).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
            let body = match answer.bytes().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(request_id, replica = %base, error = %causes(&e), "stt replica failed mid-answer; trying the next");
                    state.0.metrics.upstream_retries.inc();
                    break;
                }
            };
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return Ok(SttAnswer { status, content_type, body });
        }
    }
    Err(ApiError::NoCapacity("no stt replica can take this request now; retry shortly".to_owned()))
}

/// An error with its causes (reqwest's own message says only "error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
