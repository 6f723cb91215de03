//! WebSocket `/v1/listen` and `/v1/listen/pcm`: authenticated and admitted before the upgrade (a
//! refusal is an HTTP status, never 101 then close), the stt stream is opened before the client's
//! upgrade is accepted (so stt's own refusals — 400, 415, … — reach the client as they came), then
//! one task relays frames both ways with backpressure (a frame is read only once the previous one
//! is sent on). Internal stt messages are dropped; the audio timeline the results report is metered
//! at intervals and at the end. A replica lost mid-stream is replaced from the last resume point.
//! This is the session's I/O loop; what it decides on is in [`replay`] (the failover replay buffer)
//! and [`rewrite`] (what the client is sent of stt's messages), both free of I/O.
//!
//! Invariant: every refusal comes before the upgrade, as an HTTP status; a stream holds its two
//! sockets' small buffers, at most one client message in flight and its replay buffer; however it
//! ends, its usage is metered and its slot released; it moves to another replica at most
//! [`MAX_FAILOVERS`] times, and a stream that cannot move is closed with 1011.

mod replay;
mod rewrite;

use std::time::Duration;

use aldea_http::RequestId;
use aldea_proto::stream::Resume;
use aldea_store::UsageKind;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use tokio_tungstenite::tungstenite::Message as UpMessage;

use crate::admission::{self, Kind, Lease};
use crate::auth::Via;
use crate::error::ApiError;
use crate::extract::{Admitted, SttQuery};
use crate::upstream::{self, Opened, Upstream, SOCKET_BUFFER};
use crate::usage::Meter;
use crate::AppState;
use replay::Replay;
use rewrite::{Outbound, Rewriter};

/// How long the gateway waits for stt's last results after the client went away without
/// CloseStream (they are needed only to meter the stream exactly).
const ORPHAN_FLUSH: Duration = Duration::from_secs(30);

#[utoipa::path(get, path = "/v1/listen", tag = "listen", operation_id = "listen_stream", security(("token" = []), ("bearer" = [])),
    responses((status = 101, description = "The WebSocket. Client: binary audio frames (≤ 1 MiB), text `{\"type\": \"KeepAlive\" | \"Finalize\" | \"CloseStream\"}`. Server: JSON text frames `Metadata` (StreamMetadata), `Results` (StreamResults), `SpeechStarted`, `UtteranceEnd`; close 1000 normal, 1003 undecodable audio, 1008 policy, 1009 frame too large, 1011 internal or idle, 1012 restart")))]
pub(crate) async fn listen_ws(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    admitted: Admitted,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    SttQuery(query): SttQuery,
) -> Result<Response, ApiError> {
    start(state, request_id, admitted, upgrade, query, "/v1/listen").await
}

#[utoipa::path(get, path = "/v1/listen/pcm", tag = "listen", operation_id = "listen_stream_pcm", security(("token" = []), ("bearer" = [])),
    responses((status = 101, description = "The WebSocket of `/v1/listen` for raw s16le frames only")))]
pub(crate) async fn listen_ws_pcm(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    admitted: Admitted,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    SttQuery(query): SttQuery,
) -> Result<Response, ApiError> {
    start(state, request_id, admitted, upgrade, query, "/v1/listen/pcm").await
}

/// After admission: the upgrade checked, a stream slot taken, the stt stream opened; then the
/// client's upgrade is accepted and the session runs.
async fn start(
    state: AppState,
    request_id: String,
    Admitted { grant, via, key_hash }: Admitted,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    query: String,
    path: &'static str,
) -> Result<Response, ApiError> {
    let upgrade =
        upgrade.map_err(|rejection| ApiError::BadRequest(format!("a WebSocket upgrade is needed: {rejection}")))?;
    let lease = admission::acquire(state.0.limits.clone(), state.config(), &grant, Kind::Stream, &request_id).await?;
    let (upstream, replica) = match upstream::open_stream(&state, &request_id, path, &query, None, None).await {
        Ok(Opened::Stream(upstream, replica)) => (*upstream, replica),
        Ok(Opened::Refused(answer)) => {
            lease.release().await;
            return Ok(answer.into_response());
        }
        Err(e) => {
            lease.release().await;
            return Err(e);
        }
    };
    state.0.metrics.streams_total.inc();
    // Small socket buffers: an idle stream should cost a few kilobytes, not the 2 × 128 KiB per
    // socket the WebSocket library reserves by default (audio frames are read in several pieces).
    let upgrade = aldea_http::ws::limited(upgrade).read_buffer_size(SOCKET_BUFFER).write_buffer_size(SOCKET_BUFFER);
    let upgrade = match via {
        Via::Subprotocol(name) => upgrade.protocols([name]),
        Via::Header => upgrade,
    };
    let meter = Meter::new(&request_id, &grant, UsageKind::Stream, &state.config().model_name);
    // Watched from before the client hears the upgrade: a revocation that follows it at once is
    // not missed while the session starts.
    let invalidations = state.0.auth.changes();
    let tasks = state.0.tasks.clone();
    Ok(upgrade.on_upgrade(move |socket| {
        tasks.track_future(async move {
            let session = Session {
                state,
                request_id,
                grant,
                key_hash,
                invalidations,
                meter,
                lease: Some(lease),
                path,
                query,
                replica,
                replay: Replay::default(),
                rewriter: Rewriter::default(),
                client_closing: false,
                failovers: 0,
            };
            session.run(socket, upstream).await;
        })
    }))
}

/// Failovers one stream may go through.
const MAX_FAILOVERS: u32 = 3;

struct Session {
    state: AppState,
    request_id: String,
    /// What the stream was admitted with: rechecked by key id while it lives.
    grant: aldea_store::KeyGrant,
    /// The hash of the API key that opened it (none for a browser token).
    key_hash: Option<String>,
    /// Invalidations received since the stream was admitted: each makes it recheck at once (the
    /// periodic recheck is the fallback).
    invalidations: tokio::sync::watch::Receiver<u64>,
    meter: Meter,
    lease: Option<Lease>,
    path: &'static str,
    query: String,
    /// The replica serving the stream now.
    replica: Url,
    replay: Replay,
    /// What the client is sent of stt's messages, and the timeline they reached.
    rewriter: Rewriter,
    /// The client asked to close (sent again to a replica taking over).
    client_closing: bool,
    failovers: u32,
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
        let state = self.state.clone();
        let metrics = &state.0.metrics;
        metrics.active_streams.inc();
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
                    if let Some(event) = self.meter.event(self.rewriter.heard(), false, 0) {
                        self.state.0.usage.record(event).await;
                    }
                }
                _ = async {
                    tokio::select! {
                        _ = recheck.tick() => {}
                        Ok(()) = self.invalidations.changed() => {}
                    }
                } => {
                    // Every stream, however it was opened (key or browser token), by its key's id.
                    if let Err(refusal) = self.state.0.auth.recheck(&self.grant, self.key_hash.as_deref()).await {
                        let reason = match refusal {
                            ApiError::PaymentRequired(_) => "the organization has no credit left",
                            _ => "the API key is no longer valid (revoked, rotated or expired)",
                        };
                        let _ = upstream.close(None).await;
                        let _ = client.send(close(1008, reason)).await;
                        break End::Closed(1008);
                    }
                }
                from_client = client.recv() => {
                    let frame = match from_client {
                        Some(Ok(Message::Binary(bytes))) => {
                            if bytes.is_empty() {
                                self.client_closing = true;
                            } else {
                                self.replay.push(&bytes);
                            }
                            UpMessage::Binary(bytes)
                        }
                        Some(Ok(Message::Text(text))) if aldea_http::ws::text_too_large(text.as_str()) => {
                            let _ = upstream.close(None).await;
                            aldea_http::ws::close_too_large(&mut client).await;
                            break End::Closed(aldea_http::ws::CLOSE_TOO_LARGE);
                        }
                        Some(Ok(Message::Text(text))) => {
                            if text.as_str().contains("CloseStream") {
                                self.client_closing = true;
                            }
                            UpMessage::Text(text.as_str().into())
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        // A frame over the contract's limits: refused from its header, before its
                        // payload is read; the client hears why.
                        Some(Err(e)) if aldea_http::ws::is_too_large(&e) => {
                            let _ = upstream.close(None).await;
                            aldea_http::ws::close_too_large(&mut client).await;
                            break End::Closed(aldea_http::ws::CLOSE_TOO_LARGE);
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::ClientGone,
                    };
                    metrics.frames_relayed.inc();
                    if upstream.send(frame).await.is_err() {
                        // The frame is in the replay buffer: a replacement replica gets it.
                        match self.fail_over(&mut client).await {
                            Some(next) => upstream = next,
                            None => break End::Closed(1011),
                        }
                    }
                }
                from_upstream = upstream.next() => {
                    match from_upstream {
                        Some(Ok(UpMessage::Text(text))) => match self.rewriter.outbound(text.as_str()) {
                            Outbound::Drop => {}
                            Outbound::Checkpoint(checkpoint) => self.replay.checkpoint(&checkpoint),
                            Outbound::Forward(text) => {
                                metrics.frames_relayed.inc();
                                if client.send(Message::Text(text.into())).await.is_err() {
                                    break End::ClientGone;
                                }
                            }
                        },
                        Some(Ok(UpMessage::Binary(bytes))) => {
                            if client.send(Message::Binary(bytes)).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                        Some(Ok(UpMessage::Close(frame))) => {
                            let (code, reason) = frame.map_or((1000, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                            // A replica restarting (1012) or failing (1011, not the idle timeout) hands
                            // the stream to another; everything else is the stream's own end.
                            let replica_lost = code == 1012 || (code == 1011 && reason != aldea_proto::codes::NET_IDLE);
                            if replica_lost {
                                match self.fail_over(&mut client).await {
                                    Some(next) => {
                                        upstream = next;
                                        continue;
                                    }
                                    None => break End::Closed(1011),
                                }
                            }
                            let _ = client.send(close(code, &reason)).await;
                            break End::Upstream(code);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => match self.fail_over(&mut client).await {
                            Some(next) => upstream = next,
                            None => break End::Closed(1011),
                        },
                    }
                }
            }
        };
        let client_gone = matches!(end, End::ClientGone);
        let status = match end {
            End::Upstream(code) | End::Closed(code) => code,
            End::ClientGone => {
                // Ask stt to finish so the audio it heard is known, then meter it.
                let heard = finish_orphan(&mut upstream).await;
                self.rewriter.heard_upstream(heard);
                1000
            }
        };
        metrics.active_streams.dec();
        let heard = self.rewriter.heard();
        if let Some(event) = self.meter.event(heard, true, status) {
            metrics.add_audio(event.audio_seconds);
            self.state.0.usage.record(event).await;
        }
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        tracing::debug!(request_id = %self.request_id, status, seconds = heard, failovers = self.failovers, "stream ended");
        if !client_gone {
            // The close frame was sent: the client's answer completes the handshake.
            aldea_http::ws::finish_close(&mut client).await;
        }
    }

    /// Moves the stream to another replica from the last resume point; `None` when it cannot (the
    /// client is then closed with 1011).
    async fn fail_over(&mut self, client: &mut WebSocket) -> Option<Upstream> {
        let failed = self.replica.clone();
        while self.failovers < MAX_FAILOVERS {
            self.failovers += 1;
            self.state.0.metrics.failovers.inc();
            let Some(replay) = self.replay.replay() else {
                tracing::warn!(request_id = %self.request_id, "stream lost its replica and cannot be replayed");
                break;
            };
            let point = self.replay.point().clone();
            let resume = point.resume.clone().unwrap_or_else(Resume::from_start);
            let opened = upstream::open_stream(
                &self.state,
                &self.request_id,
                self.path,
                &self.query,
                Some(&resume),
                Some(&failed),
            )
            .await;
            let (mut upstream, replica) = match opened {
                Ok(Opened::Stream(upstream, replica)) => (*upstream, replica),
                Ok(Opened::Refused(_)) => break,
                Err(e) => {
                    // No replica left to take the stream over: counted as a refusal (503), as it
                    // always was, though no answer is sent (the client is closed with 1011).
                    self.state.0.metrics.count_refusal(e.status().as_u16());
                    break;
                }
            };
            tracing::info!(request_id = %self.request_id, from = %failed, to = %replica, resume_start = point.start, "stream moved to another replica");
            let mut sent = true;
            for chunk in replay {
                if upstream.send(UpMessage::Binary(chunk)).await.is_err() {
                    sent = false;
                    break;
                }
            }
            if sent && self.client_closing {
                sent = upstream.send(UpMessage::Text(r#"{"type":"CloseStream"}"#.into())).await.is_ok();
            }
            if !sent {
                continue;
            }
            self.replica = replica;
            self.replay.restarted_at(&point);
            self.rewriter.resumed_at(point.start);
            return Some(upstream);
        }
        let _ = client.send(close(1011, "the recognition service was lost")).await;
        None
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
                if let Some(duration) = rewrite::metadata_duration(text.as_str()) {
                    heard = heard.max(duration);
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
