//! WebSocket `/v1/listen` and `/v1/listen/pcm`: authenticated and admitted before the upgrade (a
//! refusal is an HTTP status, never 101 then close), the stt stream is opened before the client's
//! upgrade is accepted (so stt's own refusals — 400, 415, … — reach the client as they came), then
//! one task relays frames both ways with backpressure (a frame is read only once the previous one
//! is sent on). Internal stt messages are dropped; the audio timeline the results report is metered
//! at intervals and at the end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aldea_proto::stream::INTERNAL_PREFIX;
use aldea_store::UsageKind;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as UpMessage};

use crate::admission::{self, Kind, Lease};
use crate::auth::{Credential, Via};
use crate::error::ApiError;
use crate::http::{admit, refuse, RequestId};
use crate::usage::Meter;
use crate::AppState;

type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the gateway waits for stt's last results after the client went away without
/// CloseStream (they are needed only to meter the stream exactly).
const ORPHAN_FLUSH: Duration = Duration::from_secs(30);

pub(crate) async fn listen_ws(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    request: Request,
) -> Response {
    start(state, request_id, request, "/v1/listen").await
}

pub(crate) async fn listen_ws_pcm(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    request: Request,
) -> Response {
    start(state, request_id, request, "/v1/listen/pcm").await
}

async fn start(state: AppState, request_id: String, request: Request, path: &'static str) -> Response {
    let (mut parts, _body) = request.into_parts();
    let (grant, credential, via) = match admit(&state, &parts.headers).await {
        Ok(admitted) => admitted,
        Err(e) => return refuse(&state, e, &request_id),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return refuse(
                &state,
                ApiError::BadRequest(format!("a WebSocket upgrade is needed: {rejection}")),
                &request_id,
            )
        }
    };
    let lease = match admission::acquire(state.0.deps.limits.clone(), state.config(), &grant, Kind::Stream, &request_id)
        .await
    {
        Ok(lease) => lease,
        Err(e) => return refuse(&state, e, &request_id),
    };
    let query = parts.uri.query().map(crate::upload::strip_internal_query).unwrap_or_default();
    let upstream = match connect(&state, &request_id, path, &query).await {
        Ok(upstream) => upstream,
        Err(answer) => {
            lease.release().await;
            return answer;
        }
    };
    state.0.metrics.streams_total.fetch_add(1, Ordering::Relaxed);
    let upgrade = match via {
        Via::Subprotocol(name) => upgrade.protocols([name]),
        Via::Header => upgrade,
    };
    let meter = Meter::new(&request_id, &grant, UsageKind::Stream, &state.config().model_name);
    let tasks = state.0.tasks.clone();
    upgrade.on_upgrade(move |socket| {
        tasks.track_future(async move {
            let session = Session { state, request_id, credential, meter, lease: Some(lease) };
            session.run(socket, upstream).await;
        })
    })
}

/// Opens the stream on the first replica that takes it; stt's own refusal of the request (bad
/// parameters and the like) is relayed as the client's answer.
async fn connect(state: &AppState, request_id: &str, path: &str, query: &str) -> Result<Upstream, Response> {
    for base in state.0.pool.ordered().await {
        let mut url = base.clone();
        let scheme = if base.scheme() == "https" { "wss" } else { "ws" };
        if url.set_scheme(scheme).is_err() {
            continue;
        }
        url.set_path(path);
        url.set_query((!query.is_empty()).then_some(query));
        let Ok(mut request) = url.as_str().into_client_request() else { continue };
        if let Ok(value) = request_id.parse() {
            request.headers_mut().insert("x-request-id", value);
        }
        if let Some(token) = state.0.pool.token() {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.headers_mut().insert("authorization", value);
            }
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => return Ok(stream),
            Err(tungstenite::Error::Http(answer)) if answer.status() != StatusCode::SERVICE_UNAVAILABLE => {
                let status = answer.status();
                let body = answer.into_body().unwrap_or_default();
                let mut response = (status, body).into_response();
                response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("application/json"));
                return Err(response);
            }
            Err(e) => {
                if matches!(e, tungstenite::Error::Http(_)) {
                    state.0.pool.note_full(&base);
                }
                tracing::warn!(request_id, replica = %base, error = %e, "stt replica did not take the stream; trying the next");
                state.0.metrics.upstream_retries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    state.0.metrics.count_refusal(503);
    Err(ApiError::NoCapacity("no stt replica can take a stream now; retry shortly".to_owned())
        .with_request_id(request_id))
}

/// The fields of stt's messages the gateway reads.
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: Option<String>,
    start: Option<f64>,
    duration: Option<f64>,
}

struct Session {
    state: AppState,
    request_id: String,
    credential: Credential,
    meter: Meter,
    lease: Option<Lease>,
}

/// How the relay ended.
enum End {
    /// stt closed the stream with this code (relayed to the client).
    Upstream(u16),
    /// The client went away; stt was asked to finish.
    ClientGone,
    /// The gateway closed both sides with this code.
    Closed(u16),
}

impl Session {
    async fn run(mut self, mut client: WebSocket, mut upstream: Upstream) {
        let metrics = &self.state.0.metrics;
        metrics.active_streams.fetch_add(1, Ordering::Relaxed);
        let mut heard = 0.0f64;
        let mut usage_tick = tokio::time::interval(self.state.config().usage_interval);
        usage_tick.tick().await;
        let mut recheck = tokio::time::interval(self.state.config().recheck_interval);
        recheck.tick().await;
        let drain = self.state.0.drain.clone();
        let end = loop {
            tokio::select! {
                _ = drain.cancelled() => {
                    let _ = upstream.close(None).await;
                    let _ = client.send(close(1012, "service restart")).await;
                    break End::Closed(1012);
                }
                _ = usage_tick.tick() => {
                    if let Some(event) = self.meter.event(heard, false, 0) {
                        self.state.0.usage.record(event).await;
                    }
                }
                _ = recheck.tick() => {
                    if let Credential::Key(secret) = &self.credential {
                        if let Err(ApiError::Unauthorized(_)) = self.state.0.auth.verify_key(secret).await {
                            let _ = upstream.close(None).await;
                            let _ = client.send(close(1008, "the API key was revoked")).await;
                            break End::Closed(1008);
                        }
                    }
                }
                from_client = client.recv() => {
                    let frame = match from_client {
                        Some(Ok(Message::Binary(bytes))) => UpMessage::Binary(bytes),
                        Some(Ok(Message::Text(text))) => UpMessage::Text(text.as_str().into()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::ClientGone,
                    };
                    metrics.frames_relayed.fetch_add(1, Ordering::Relaxed);
                    if upstream.send(frame).await.is_err() {
                        let _ = client.send(close(1011, "the recognition service was lost")).await;
                        break End::Closed(1011);
                    }
                }
                from_upstream = upstream.next() => {
                    match from_upstream {
                        Some(Ok(UpMessage::Text(text))) => {
                            if let Ok(peek) = serde_json::from_str::<Peek>(text.as_str()) {
                                let kind = peek.kind.as_deref().unwrap_or("");
                                if kind.starts_with(INTERNAL_PREFIX) {
                                    continue;
                                }
                                heard = heard.max(timeline_end(kind, &peek));
                            }
                            metrics.frames_relayed.fetch_add(1, Ordering::Relaxed);
                            if client.send(Message::Text(text.as_str().into())).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                        Some(Ok(UpMessage::Binary(bytes))) => {
                            if client.send(Message::Binary(bytes)).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                        Some(Ok(UpMessage::Close(frame))) => {
                            let (code, reason) = frame.map_or((1000, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                            let _ = client.send(close(code, &reason)).await;
                            break End::Upstream(code);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            let _ = client.send(close(1011, "the recognition service was lost")).await;
                            break End::Closed(1011);
                        }
                    }
                }
            }
        };
        let status = match end {
            End::Upstream(code) | End::Closed(code) => code,
            End::ClientGone => {
                // Ask stt to finish so the audio it heard is known, then meter it.
                heard = heard.max(finish_orphan(&mut upstream).await);
                1000
            }
        };
        metrics.active_streams.fetch_sub(1, Ordering::Relaxed);
        if let Some(event) = self.meter.event(heard, true, status) {
            metrics.audio_ms.fetch_add((event.audio_seconds * 1000.0).round() as u64, Ordering::Relaxed);
            self.state.0.usage.record(event).await;
        }
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        tracing::debug!(request_id = %self.request_id, status, seconds = heard, "stream ended");
    }
}

/// Where on the audio timeline a message says the stream has got to: the end of a result, or the
/// whole duration in the closing Metadata.
fn timeline_end(kind: &str, peek: &Peek) -> f64 {
    match kind {
        "Results" => peek.start.unwrap_or(0.0) + peek.duration.unwrap_or(0.0),
        "Metadata" => peek.duration.unwrap_or(0.0),
        _ => 0.0,
    }
}

/// The client left without CloseStream: stt is asked to close and its last messages are read
/// (for the duration in its closing Metadata), within a bound.
async fn finish_orphan(upstream: &mut Upstream) -> f64 {
    let close_stream = UpMessage::Text(r#"{"type":"CloseStream"}"#.into());
    if upstream.send(close_stream).await.is_err() {
        return 0.0;
    }
    let mut heard = 0.0f64;
    let _ = tokio::time::timeout(ORPHAN_FLUSH, async {
        while let Some(Ok(message)) = upstream.next().await {
            if let UpMessage::Text(text) = message {
                if let Ok(peek) = serde_json::from_str::<Peek>(text.as_str()) {
                    heard = heard.max(timeline_end(peek.kind.as_deref().unwrap_or(""), &peek));
                }
            }
        }
    })
    .await;
    heard
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}
