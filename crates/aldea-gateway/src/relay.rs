//! WebSocket `/v1/listen` and `/v1/listen/pcm`: authenticated and admitted before the upgrade (a
//! refusal is an HTTP status, never 101 then close), the stt stream is opened before the client's
//! upgrade is accepted (so stt's own refusals — 400, 415, … — reach the client as they came), then
//! one task relays frames both ways with backpressure (a frame is read only once the previous one
//! is sent on). Internal stt messages are dropped; the audio timeline the results report is metered
//! at intervals and at the end.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aldea_http::RequestId;
use aldea_proto::stream::{Resume, INTERNAL_PREFIX};
use aldea_store::UsageKind;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message as UpMessage;

use crate::admission::{self, Kind, Lease};
use crate::auth::Via;
use crate::error::ApiError;
use crate::extract::{Admitted, SttQuery};
use crate::upstream::{self, Opened, Upstream, SOCKET_BUFFER};
use crate::usage::Meter;
use crate::AppState;

/// How long the gateway waits for stt's last results after the client went away without
/// CloseStream (they are needed only to meter the stream exactly).
const ORPHAN_FLUSH: Duration = Duration::from_secs(30);

pub(crate) async fn listen_ws(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    admitted: Admitted,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    SttQuery(query): SttQuery,
) -> Result<Response, ApiError> {
    start(state, request_id, admitted, upgrade, query, "/v1/listen").await
}

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
    Admitted { grant, via }: Admitted,
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
    state.0.metrics.streams_total.fetch_add(1, Ordering::Relaxed);
    // Small socket buffers: an idle stream should cost a few kilobytes, not the 2 × 128 KiB per
    // socket the WebSocket library reserves by default (audio frames are read in several pieces).
    let upgrade = aldea_http::ws::limited(upgrade).read_buffer_size(SOCKET_BUFFER).write_buffer_size(SOCKET_BUFFER);
    let upgrade = match via {
        Via::Subprotocol(name) => upgrade.protocols([name]),
        Via::Header => upgrade,
    };
    let meter = Meter::new(&request_id, &grant, UsageKind::Stream, &state.config().model_name);
    let tasks = state.0.tasks.clone();
    Ok(upgrade.on_upgrade(move |socket| {
        tasks.track_future(async move {
            let session = Session {
                state,
                request_id,
                grant,
                meter,
                lease: Some(lease),
                path,
                query,
                replica,
                replay: Replay::default(),
                origin: 0.0,
                relayed_until: 0.0,
                heard: 0.0,
                client_closing: false,
                failovers: 0,
                swallow_metadata: false,
            };
            session.run(socket, upstream).await;
        })
    }))
}

/// The fields of stt's messages the gateway reads.
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: Option<String>,
    start: Option<f64>,
    duration: Option<f64>,
    is_final: Option<bool>,
}

/// Where a stream can restart on another replica: from the input at absolute byte `offset` (after
/// the first `header` bytes of the input), with the timeline at `start` and the prompt `tokens`.
#[derive(Debug, Clone, Default, PartialEq)]
struct ResumePoint {
    offset: u64,
    header: u64,
    /// Timeline seconds of the audio at `offset`.
    start: f64,
    /// Where stt said a stream resumed here starts ([`aldea_proto::stream::Checkpoint::resume`]);
    /// `None`: replay from the start.
    resume: Option<Resume>,
}

/// The client's audio kept for a failover: the input's first bytes (a container header) and every
/// byte since the last resume point; bounded, and given up (no failover) past the bound.
#[derive(Debug, Default)]
struct Replay {
    head: Vec<u8>,
    chunks: std::collections::VecDeque<Bytes>,
    /// Absolute offset of the first byte in `chunks`.
    chunks_start: u64,
    received: u64,
    point: ResumePoint,
    /// The current upstream's input: the absolute offset it began at and the header bytes sent
    /// before it (its own offsets map back through these).
    upstream_input: (u64, u64),
    overflowed: bool,
}

/// Leading input bytes kept for a header.
const HEAD_KEEP: usize = 64 * 1024;
/// Most input bytes kept for a replay: the bound of a stream's memory in the gateway. A headerless
/// stream is trimmed at every checkpoint (seconds of audio); a container that cannot restart in
/// the middle keeps its whole input, up to this (about 35 min of 64-kbit/s Opus), and past it goes
/// on without failover.
const MAX_REPLAY: u64 = 16 * 1024 * 1024;
/// Failovers one stream may go through.
const MAX_FAILOVERS: u32 = 3;

impl Replay {
    fn push(&mut self, bytes: &Bytes) {
        if self.head.len() < HEAD_KEEP {
            let take = (HEAD_KEEP - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.received += bytes.len() as u64;
        if self.overflowed {
            return;
        }
        self.chunks.push_back(bytes.clone());
        if self.received - self.chunks_start > MAX_REPLAY {
            self.overflowed = true;
            self.chunks.clear();
        }
    }

    /// A checkpoint from the current upstream moves the resume point (and frees what precedes it).
    fn checkpoint(&mut self, checkpoint: &aldea_proto::stream::Checkpoint) {
        let (input_start, input_header) = self.upstream_input;
        match checkpoint.byte_offset {
            Some(offset) => {
                self.point = ResumePoint {
                    offset: input_start + offset.saturating_sub(input_header),
                    header: checkpoint.header_bytes,
                    start: checkpoint.resume_start(),
                    resume: Some(checkpoint.resume()),
                };
                self.trim_to(self.point.offset);
            }
            // The format cannot restart in the middle: the whole input is replayed from the start
            // and what was already final is dropped on the way out.
            None => self.point = ResumePoint::default(),
        }
    }

    fn trim_to(&mut self, offset: u64) {
        while let Some(front) = self.chunks.front_mut() {
            let end = self.chunks_start + front.len() as u64;
            if end <= offset {
                self.chunks_start = end;
                self.chunks.pop_front();
            } else {
                if self.chunks_start < offset {
                    let cut = (offset - self.chunks_start) as usize;
                    *front = front.slice(cut..);
                    self.chunks_start = offset;
                }
                break;
            }
        }
    }

    /// What a new upstream is sent: the header, then the input from the resume point.
    fn replay(&self) -> Option<Vec<Bytes>> {
        if self.overflowed || self.chunks_start > self.point.offset {
            return None;
        }
        let header = usize::try_from(self.point.header).ok()?;
        if header > self.head.len() {
            return None;
        }
        let mut out = Vec::new();
        if header > 0 && self.point.offset > 0 {
            out.push(Bytes::copy_from_slice(&self.head[..header]));
        }
        let mut position = self.chunks_start;
        for chunk in &self.chunks {
            let end = position + chunk.len() as u64;
            if end > self.point.offset {
                let skip = self.point.offset.saturating_sub(position) as usize;
                out.push(chunk.slice(skip..));
            }
            position = end;
        }
        Some(out)
    }
}

struct Session {
    state: AppState,
    request_id: String,
    /// What the stream was admitted with: rechecked by key id while it lives.
    grant: aldea_store::KeyGrant,
    meter: Meter,
    lease: Option<Lease>,
    path: &'static str,
    query: String,
    /// The replica serving the stream now.
    replica: Url,
    replay: Replay,
    /// Timeline start of the current upstream (the resume start after a failover).
    origin: f64,
    /// End of the last final the client received: nothing before it is sent again.
    relayed_until: f64,
    /// Furthest point of the audio timeline the results reached (metered).
    heard: f64,
    /// The client asked to close (sent again to a replica taking over).
    client_closing: bool,
    failovers: u32,
    /// The next Metadata is a replacement replica's opening one: the client already had its own.
    swallow_metadata: bool,
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

/// What to do with a message from stt.
enum Outbound {
    Forward(String),
    Drop,
}

impl Session {
    async fn run(mut self, mut client: WebSocket, mut upstream: Upstream) {
        let state = self.state.clone();
        let metrics = &state.0.metrics;
        metrics.active_streams.fetch_add(1, Ordering::Relaxed);
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
                    if let Some(event) = self.meter.event(self.heard, false, 0) {
                        self.state.0.usage.record(event).await;
                    }
                }
                _ = recheck.tick() => {
                    // Every stream, however it was opened (key or browser token), by its key's id.
                    if let Err(refusal) = self.state.0.auth.recheck(&self.grant).await {
                        let reason = match refusal {
                            ApiError::PaymentRequired(_) => "the organization has no credit left",
                            _ => "the API key was revoked",
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
                    metrics.frames_relayed.fetch_add(1, Ordering::Relaxed);
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
                        Some(Ok(UpMessage::Text(text))) => match self.outbound(text.as_str()) {
                            Outbound::Drop => {}
                            Outbound::Forward(text) => {
                                metrics.frames_relayed.fetch_add(1, Ordering::Relaxed);
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
        let status = match end {
            End::Upstream(code) | End::Closed(code) => code,
            End::ClientGone => {
                // Ask stt to finish so the audio it heard is known, then meter it.
                let heard = finish_orphan(&mut upstream).await;
                self.heard = self.heard.max(self.origin + heard);
                1000
            }
        };
        metrics.active_streams.fetch_sub(1, Ordering::Relaxed);
        if let Some(event) = self.meter.event(self.heard, true, status) {
            metrics.audio_ms.fetch_add((event.audio_seconds * 1000.0).round() as u64, Ordering::Relaxed);
            self.state.0.usage.record(event).await;
        }
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        tracing::debug!(request_id = %self.request_id, status, seconds = self.heard, failovers = self.failovers, "stream ended");
    }

    /// Reads a message from stt: internal ones update the resume point and stay here; results the
    /// client already has (after a failover) are dropped or trimmed; the rest goes on.
    fn outbound(&mut self, text: &str) -> Outbound {
        let Ok(peek) = serde_json::from_str::<Peek>(text) else { return Outbound::Forward(text.to_owned()) };
        let kind = peek.kind.as_deref().unwrap_or("");
        if kind.starts_with(INTERNAL_PREFIX) {
            if kind == aldea_proto::stream::CHECKPOINT_TYPE {
                if let Ok(checkpoint) = serde_json::from_str::<aldea_proto::stream::Checkpoint>(text) {
                    self.replay.checkpoint(&checkpoint);
                }
            }
            return Outbound::Drop;
        }
        match kind {
            "Metadata" => {
                if std::mem::take(&mut self.swallow_metadata) {
                    return Outbound::Drop;
                }
                let duration = peek.duration.unwrap_or(0.0);
                self.heard = self.heard.max(self.origin + duration);
                if self.origin > 0.0 {
                    // A replacement replica counts from its resume start; the client's stream
                    // began at zero.
                    if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) {
                        value["duration"] = serde_json::json!(round3(self.origin + duration));
                        return Outbound::Forward(value.to_string());
                    }
                }
                Outbound::Forward(text.to_owned())
            }
            "Results" => {
                let start = peek.start.unwrap_or(0.0);
                let end = start + peek.duration.unwrap_or(0.0);
                self.heard = self.heard.max(end);
                let is_final = peek.is_final.unwrap_or(false);
                if self.failovers > 0 && start < self.relayed_until - 1e-3 {
                    if end <= self.relayed_until + 1e-3 {
                        return Outbound::Drop;
                    }
                    if let Some(trimmed) = trim_results(text, self.relayed_until) {
                        if is_final {
                            self.relayed_until = end;
                        }
                        return Outbound::Forward(trimmed);
                    }
                    return Outbound::Drop;
                }
                if is_final {
                    self.relayed_until = self.relayed_until.max(end);
                }
                Outbound::Forward(text.to_owned())
            }
            _ => Outbound::Forward(text.to_owned()),
        }
    }

    /// Moves the stream to another replica from the last resume point; `None` when it cannot (the
    /// client is then closed with 1011).
    async fn fail_over(&mut self, client: &mut WebSocket) -> Option<Upstream> {
        let failed = self.replica.clone();
        while self.failovers < MAX_FAILOVERS {
            self.failovers += 1;
            self.state.0.metrics.failovers.fetch_add(1, Ordering::Relaxed);
            let Some(replay) = self.replay.replay() else {
                tracing::warn!(request_id = %self.request_id, "stream lost its replica and cannot be replayed");
                break;
            };
            let point = self.replay.point.clone();
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
            self.replay.upstream_input = (point.offset, if point.offset > 0 { point.header } else { 0 });
            self.origin = point.start;
            self.swallow_metadata = true;
            return Some(upstream);
        }
        let _ = client.send(close(1011, "the recognition service was lost")).await;
        None
    }
}

/// A Results message without the words that end before `until` (already final at the client),
/// its transcript, start and duration rebuilt from the words kept; `None` when none are left.
fn trim_results(text: &str, until: f64) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    let alternatives = value.pointer_mut("/channel/alternatives")?.as_array_mut()?;
    let mut new_start = None;
    let mut new_end = None;
    for alternative in alternatives.iter_mut() {
        let words = alternative.get_mut("words")?.as_array_mut()?;
        words.retain(|w| w.get("start").and_then(|s| s.as_f64()).is_some_and(|s| s >= until - 1e-3));
        let transcript: Vec<&str> =
            words.iter().filter_map(|w| w.get("punctuated_word").or_else(|| w.get("word"))?.as_str()).collect();
        let transcript = transcript.join(" ");
        if new_start.is_none() {
            new_start = words.first().and_then(|w| w.get("start")?.as_f64());
            new_end = words.last().and_then(|w| w.get("end")?.as_f64());
        }
        alternative["transcript"] = serde_json::json!(transcript);
    }
    let start = new_start?;
    let end = new_end.unwrap_or(start);
    let old_end = value.get("start")?.as_f64()? + value.get("duration")?.as_f64()?;
    value["start"] = serde_json::json!(round3(start));
    value["duration"] = serde_json::json!(round3(old_end.max(end) - start));
    Some(value.to_string())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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
                    if peek.kind.as_deref() == Some("Metadata") {
                        heard = heard.max(peek.duration.unwrap_or(0.0));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(committed_until: f64, byte_offset: Option<u64>) -> aldea_proto::stream::Checkpoint {
        aldea_proto::stream::Checkpoint {
            kind: aldea_proto::stream::CHECKPOINT_TYPE.to_owned(),
            committed_until,
            byte_offset,
            header_bytes: 0,
            prompt: String::new(),
            prompt_tokens: vec![1, 2],
            audio_start: None,
            context: Vec::new(),
            utterance_open: false,
        }
    }

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn the_replay_starts_at_the_last_checkpoint_whatever_the_chunking() {
        let input: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut replay = Replay::default();
        for chunk in input.chunks(333) {
            replay.push(&Bytes::copy_from_slice(chunk));
        }
        assert_eq!(concat(&replay.replay().unwrap()), input, "before any checkpoint: everything");
        replay.checkpoint(&checkpoint(0.1, Some(3200)));
        assert_eq!(concat(&replay.replay().unwrap()), input[3200..]);
        assert_eq!(replay.chunks_start, 3200, "what precedes the point is freed");
        // A replacement stream's offsets count from where its input began.
        replay.upstream_input = (3200, 0);
        replay.checkpoint(&checkpoint(0.2, Some(1000)));
        assert_eq!(replay.point.offset, 4200);
        assert_eq!(concat(&replay.replay().unwrap()), input[4200..]);
        assert_eq!(replay.point.resume.as_ref().map(Resume::to_header).unwrap(), "start=0.2&prompt_tokens=1,2");
        // A checkpoint that restarts at its context: the replay and the timeline begin there.
        let with_context = aldea_proto::stream::Checkpoint {
            audio_start: Some(0.22),
            context: vec![aldea_proto::stream::ContextWord { start: 0.23, end: 0.24, tokens: vec![5] }],
            ..checkpoint(0.25, Some(1640))
        };
        replay.checkpoint(&with_context);
        assert_eq!((replay.point.offset, replay.point.start), (4840, 0.22));
        assert_eq!(concat(&replay.replay().unwrap()), input[4840..]);
        let header = replay.point.resume.as_ref().map(Resume::to_header).unwrap();
        assert!(header.starts_with("start=0.22&committed_until=0.25&"), "{header}");
        // A format that cannot restart mid-stream has nothing to replay once trimmed.
        replay.checkpoint(&checkpoint(0.3, None));
        assert!(replay.replay().is_none());
    }

    #[test]
    fn results_already_final_at_the_client_are_trimmed_to_the_new_words() {
        let results = serde_json::json!({
            "type": "Results", "start": 1.0, "duration": 2.0, "is_final": true,
            "channel": {"alternatives": [{"transcript": "one two three", "confidence": 0.9, "words": [
                {"word": "one", "punctuated_word": "One", "start": 1.0, "end": 1.4},
                {"word": "two", "punctuated_word": "two", "start": 1.5, "end": 2.0},
                {"word": "three", "punctuated_word": "three.", "start": 2.1, "end": 2.8}]}]}
        })
        .to_string();
        let trimmed: serde_json::Value = serde_json::from_str(&trim_results(&results, 1.5).unwrap()).unwrap();
        assert_eq!(trimmed["channel"]["alternatives"][0]["transcript"], "two three.");
        assert_eq!(trimmed["start"], 1.5);
        assert_eq!(trimmed["duration"], 1.5);
        assert!(trim_results(&results, 2.5).is_none());
    }

    /// What a client gets when a Results message is trimmed after a failover, to the byte: every
    /// field stt sent is kept (those this gateway does not know too), keys in sorted order.
    #[test]
    fn a_trimmed_results_message_keeps_every_field_stt_sent() {
        let results = r#"{"type":"Results","channel_index":[0,1],"start":1.0,"duration":2.0,"is_final":true,"speech_final":false,"from_finalize":false,"channel":{"alternatives":[{"transcript":"One two three.","confidence":0.9,"words":[{"word":"one","punctuated_word":"One","start":1.0,"end":1.4,"confidence":0.9,"speaker":0},{"word":"two","punctuated_word":"two","start":1.5,"end":2.0,"confidence":0.8,"speaker":0},{"word":"three","punctuated_word":"three.","start":2.1,"end":2.8,"confidence":0.7,"speaker":1}]}]},"metadata":{"request_id":"r1","model_uuid":"u1","model_info":{"name":"tiny.en","version":"1","arch":"whisper"}},"from_a_newer_stt":{"x":1}}"#;
        assert_eq!(
            trim_results(results, 1.5).unwrap(),
            r#"{"channel":{"alternatives":[{"confidence":0.9,"transcript":"two three.","words":[{"confidence":0.8,"end":2.0,"punctuated_word":"two","speaker":0,"start":1.5,"word":"two"},{"confidence":0.7,"end":2.8,"punctuated_word":"three.","speaker":1,"start":2.1,"word":"three"}]}]},"channel_index":[0,1],"duration":1.5,"from_a_newer_stt":{"x":1},"from_finalize":false,"is_final":true,"metadata":{"model_info":{"arch":"whisper","name":"tiny.en","version":"1"},"model_uuid":"u1","request_id":"r1"},"speech_final":false,"start":1.5,"type":"Results"}"#
        );
    }
}
