//! One streaming session: a single task that selects over the client's frames, the running decode,
//! the idle timer and shutdown. Audio goes bytes → [`aldea_audio::StreamDecoder`] → mono →
//! [`aldea_audio::StreamResampler`] → VAD → [`Recognizer`]; the recognizer's decode requests go to
//! the shared scheduler one at a time, and its events become the contract's messages.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aldea_audio::{AudioError, DecodeOptions, Encoding, Limits, StreamDecoder, StreamResampler};
use aldea_engine::{VadStream, Word};
use aldea_proto::codes;
use aldea_proto::stream as wire;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use sha2::{Digest, Sha256};

use crate::params::ListenParams;
use crate::recognizer::{
    ContextWord, DecodeReason, Event, NextDecode, Recognizer, RecognizerConfig, ResultsEvent, ResumePoint,
};
use crate::scheduler::{JobKind, WindowInput};
use crate::{response, AppState, Permit, Speaking, MAX_INTERIM_STEP_SCALE};

/// Audio received but not yet decoded beyond which the session stops reading the socket, so a
/// client sending faster than real time is held back by TCP instead of filling memory.
const MAX_BACKLOG_S: f64 = 120.0;

/// How often a held interim checks whether the model is free.
const INTERIM_HOLD_POLL: Duration = Duration::from_millis(20);

/// Failed decodes in a row after which the stream is closed with 1011.
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

type DecodeFuture = Pin<Box<dyn Future<Output = (u64, Option<Vec<Word>>)> + Send>>;

/// Why a session ends, and the close frame it sends.
struct Close {
    code: u16,
    reason: &'static str,
}

pub(crate) async fn run(
    state: AppState,
    socket: WebSocket,
    params: Arc<ListenParams>,
    request_id: String,
    permit: Permit,
) {
    let _permit = permit;
    let started = Instant::now();
    let mut session = match Session::new(state.clone(), params, request_id.clone()) {
        Ok(session) => session,
        Err(e) => {
            tracing::error!(request_id, error = %e, "the session could not start");
            let mut socket = socket;
            let _ = socket.send(close_message(1011, codes::INTERNAL)).await;
            return;
        }
    };
    let close = session.run(socket).await;
    tracing::info!(
        request_id,
        audio_s = session.recognizer.audio_end(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        close_code = close.code,
        "stream ended"
    );
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

/// The most of the model's time that the interim decodes of the streams in speech take together
/// ([`crate::Config::pace_interims`]).
const INTERIM_SHARE: f64 = 0.5;

/// The interim step, in steps, when `speaking` streams are in speech and a model call lasts
/// `call`: their interims together take at most [`INTERIM_SHARE`] of the model's time, and the
/// step grows at most to [`MAX_INTERIM_STEP_SCALE`].
fn interim_step_scale(speaking: usize, call: Duration, step: Duration) -> f64 {
    let per_step = call.as_secs_f64() / (INTERIM_SHARE * step.as_secs_f64());
    (speaking.max(1) as f64 * per_step.max(1.0)).min(MAX_INTERIM_STEP_SCALE as f64)
}

struct Session {
    state: AppState,
    params: Arc<ListenParams>,
    request_id: String,
    decoder: StreamDecoder,
    resampler: Option<StreamResampler>,
    vad: VadStream,
    recognizer: Recognizer,
    hasher: Sha256,
    in_flight: Option<DecodeFuture>,
    /// When the pending endpoint or Finalize began (wall clock), for the latency metric.
    flush_started: Option<Instant>,
    /// An interim decode is due and held back while the model works for others, since then.
    interim_held_since: Option<Instant>,
    /// This stream's part in the count of streams in speech.
    speaking: Speaking,
    closing: bool,
    model_uuid: String,
    /// Decodes that failed in a row.
    failures: u32,
}

impl Session {
    fn new(
        state: AppState,
        params: Arc<ListenParams>,
        request_id: String,
    ) -> Result<Session, aldea_engine::EngineError> {
        let config = state.config();
        let decoder = StreamDecoder::new(DecodeOptions {
            encoding: params.audio.encoding,
            sample_rate: params.audio.sample_rate,
            channels: params.audio.channels,
            unknown_as_linear16: true,
            limits: Limits { max_bytes: usize::MAX, max_duration_s: config.max_stream_seconds },
        });
        let recognizer_config = RecognizerConfig {
            interim_results: params.interim_results,
            endpointing_ms: params.endpointing_ms,
            utterance_end_ms: params.utterance_end_ms,
            vad_events: params.vad_events,
            step_s: config.step_ms as f64 / 1000.0,
            ..RecognizerConfig::default()
        };
        let recognizer = match &params.resume {
            Some(resume) => {
                let tokenizer = state.0.transcriber.engine().tokenizer();
                let context = resume
                    .context
                    .iter()
                    .map(|w| ContextWord {
                        start: w.start,
                        end: w.end,
                        tokens: w.tokens.clone(),
                        text: tokenizer.decode(&w.tokens),
                    })
                    .collect();
                Recognizer::resume(
                    recognizer_config,
                    ResumePoint {
                        committed_until: resume.committed_until,
                        audio_start: resume.start,
                        prompt_tokens: resume.prompt_tokens.clone(),
                        context,
                        utterance_open: resume.utterance_open,
                    },
                )
            }
            None => Recognizer::new(recognizer_config, 0.0, Vec::new()),
        };
        let vad = VadStream::new(state.0.vad.clone())?;
        let speaking = Speaking::new(&state);
        Ok(Session {
            model_uuid: response::model_uuid(&config.model_name),
            state,
            params,
            request_id,
            decoder,
            resampler: None,
            vad,
            recognizer,
            hasher: Sha256::new(),
            in_flight: None,
            flush_started: None,
            interim_held_since: None,
            speaking,
            closing: false,
            failures: 0,
        })
    }

    async fn run(&mut self, mut socket: WebSocket) -> Close {
        let close = self.event_loop(&mut socket).await;
        if close.code == 1000 {
            let _ = self.send_metadata(&mut socket, self.recognizer.audio_end() - self.origin()).await;
        }
        if close.code == aldea_http::ws::CLOSE_TOO_LARGE {
            aldea_http::ws::close_too_large(&mut socket).await;
        } else {
            let _ = socket.send(close_message(close.code, close.reason)).await;
        }
        close
    }

    fn origin(&self) -> f64 {
        self.params.resume.as_ref().map_or(0.0, |r| r.start)
    }

    async fn event_loop(&mut self, socket: &mut WebSocket) -> Close {
        if self.send_metadata(socket, 0.0).await.is_err() {
            return Close { code: 1000, reason: "" };
        }
        let idle = Duration::from_millis(self.state.config().idle_timeout_ms);
        let drain = Duration::from_millis(self.state.config().drain_timeout_ms);
        let mut idle_deadline = tokio::time::Instant::now() + idle;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let shutdown = self.state.0.shutdown.clone();
        loop {
            let decoding = self.in_flight.is_some();
            tokio::select! {
                frame = socket.recv(), if !self.closing && self.recognizer.backlog_s() < MAX_BACKLOG_S => {
                    let frame = match frame {
                        Some(Ok(Message::Text(text))) if aldea_http::ws::text_too_large(text.as_str()) => {
                            return Close { code: aldea_http::ws::CLOSE_TOO_LARGE, reason: aldea_http::ws::TOO_LARGE_REASON };
                        }
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) if aldea_http::ws::is_too_large(&e) => {
                            return Close { code: aldea_http::ws::CLOSE_TOO_LARGE, reason: aldea_http::ws::TOO_LARGE_REASON };
                        }
                        // The client went away: nothing left to tell it.
                        _ => return Close { code: 1000, reason: "" },
                    };
                    match frame {
                        Message::Binary(bytes) => {
                            idle_deadline = tokio::time::Instant::now() + idle;
                            if bytes.is_empty() {
                                if let Err(close) = self.close_stream() { return close; }
                            } else if let Err(close) = self.on_audio(&bytes) {
                                return close;
                            }
                        }
                        Message::Text(text) => match serde_json::from_str::<aldea_proto::stream::ClientMessage>(text.as_str()) {
                            Ok(aldea_proto::stream::ClientMessage::KeepAlive) => {
                                idle_deadline = tokio::time::Instant::now() + idle;
                            }
                            Ok(aldea_proto::stream::ClientMessage::Finalize) => {
                                idle_deadline = tokio::time::Instant::now() + idle;
                                self.flush_started.get_or_insert_with(Instant::now);
                                let events = self.recognizer.finalize(true);
                                if self.send_events(socket, events).await.is_err() { return Close { code: 1000, reason: "" }; }
                            }
                            Ok(aldea_proto::stream::ClientMessage::CloseStream) => {
                                if let Err(close) = self.close_stream() { return close; }
                            }
                            Err(_) => {
                                tracing::debug!(request_id = %self.request_id, "ignored an unknown control message");
                            }
                        },
                        Message::Close(_) => return Close { code: 1000, reason: "" },
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                done = poll_in_flight(&mut self.in_flight), if decoding => {
                    self.in_flight = None;
                    // Idle means nothing sent and nothing left to do: a client that sent audio faster
                    // than it is recognized is not idle while its backlog is being worked off.
                    idle_deadline = tokio::time::Instant::now() + idle;
                    let (id, words) = done;
                    if words.is_none() {
                        // A window that keeps failing would be retried forever.
                        self.failures += 1;
                        if self.failures >= MAX_CONSECUTIVE_FAILURES {
                            return Close { code: 1011, reason: codes::INTERNAL };
                        }
                    } else {
                        self.failures = 0;
                    }
                    let events = self.recognizer.on_decoded(id, words);
                    if self.send_events(socket, events).await.is_err() { return Close { code: 1000, reason: "" }; }
                }
                _ = tokio::time::sleep(INTERIM_HOLD_POLL), if self.interim_held_since.is_some() && !decoding => {}
                _ = tokio::time::sleep_until(idle_deadline), if !self.closing => {
                    return Close { code: 1011, reason: codes::NET_IDLE };
                }
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(tokio::time::Instant::now() + drain);
                }
                _ = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => {
                    return Close { code: 1012, reason: "service restart" };
                }
            }
            // Pending events from audio (VAD, flush) go out before the next decode starts.
            let events = self.recognizer.take_forced();
            if self.send_events(socket, events).await.is_err() {
                return Close { code: 1000, reason: "" };
            }
            self.start_decode();
            if self.closing && self.in_flight.is_none() && self.recognizer.is_settled() {
                return Close { code: 1000, reason: "" };
            }
        }
    }

    /// Bytes from the client: decoded, resampled, run through the VAD and the recognizer.
    fn on_audio(&mut self, bytes: &[u8]) -> Result<(), Close> {
        self.hasher.update(bytes);
        let pcm = self.decoder.push(bytes).map_err(audio_close)?;
        if let Some(pcm) = pcm {
            self.feed(pcm)?;
        }
        Ok(())
    }

    fn feed(&mut self, pcm: aldea_audio::Pcm) -> Result<(), Close> {
        let n_channels = pcm.channels.len().max(1);
        let n_frames = pcm.n_frames();
        let mono: Vec<f32> =
            (0..n_frames).map(|i| pcm.channels.iter().map(|c| c[i]).sum::<f32>() / n_channels as f32).collect();
        let resampler = match &mut self.resampler {
            Some(resampler) => resampler,
            None => self.resampler.insert(StreamResampler::new(pcm.sample_rate, 16_000).map_err(audio_close)?),
        };
        let samples = resampler.push(&mono).map_err(audio_close)?;
        self.push_samples(&samples)
    }

    fn push_samples(&mut self, samples: &[f32]) -> Result<(), Close> {
        if samples.is_empty() {
            return Ok(());
        }
        self.state.metrics().add_stream_audio(samples.len() as f64 / 16_000.0);
        let probs = self.vad.push(samples).map_err(|e| {
            tracing::error!(request_id = %self.request_id, error = %e, "the VAD failed");
            Close { code: 1011, reason: codes::INTERNAL }
        })?;
        let events = self.recognizer.push_audio(samples, &probs);
        self.speaking.set(self.recognizer.in_speech());
        self.pending_events(events);
        Ok(())
    }

    /// Keeps events produced while handling input until the loop sends them.
    fn pending_events(&mut self, events: Vec<Event>) {
        self.recognizer.defer(events);
    }

    /// CloseStream (or an empty frame): the decoder's tail, then a flush of everything.
    fn close_stream(&mut self) -> Result<(), Close> {
        self.closing = true;
        if let Some(pcm) = self.decoder.finish().map_err(audio_close)? {
            self.feed(pcm)?;
        }
        if let Some(resampler) = &mut self.resampler {
            let tail = resampler.finish().map_err(audio_close)?;
            self.push_samples(&tail)?;
        }
        self.flush_started.get_or_insert_with(Instant::now);
        let events = self.recognizer.finalize(false);
        self.pending_events(events);
        Ok(())
    }

    fn start_decode(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        // Interims are best effort: while the model works for others (another stream's final, an
        // upload's window), a decode that would only refresh this stream's interim, or that a short
        // pause asked for, waits, up to `interim_hold_ms`, so that finals do not queue behind
        // interims. The decodes that end utterances go ahead of the queue (`run_urgent`).
        // Streams in speech together share the model's time for interims: at most
        // `INTERIM_SHARE` of it, so that the decode at an endpoint seldom finds the model busy.
        if self.state.config().pace_interims {
            let step = Duration::from_millis(self.state.config().step_ms);
            let scale = interim_step_scale(self.state.speaking_streams(), self.state.0.scheduler.recent_call(), step);
            self.recognizer.set_interim_step_scale(scale);
        }
        let max_hold = Duration::from_millis(self.state.config().interim_hold_ms);
        let busy = self.state.0.scheduler.windows_in_progress() > 0;
        let hold = busy && self.interim_held_since.is_none_or(|since| since.elapsed() < max_hold);
        let request = match self.recognizer.next_decode_holding(hold) {
            NextDecode::Start(request) => request,
            NextDecode::Held => {
                self.interim_held_since.get_or_insert_with(Instant::now);
                return;
            }
            NextDecode::Nothing => {
                self.interim_held_since = None;
                return;
            }
        };
        self.interim_held_since = None;
        let scheduler = self.state.0.scheduler.clone();
        let transcriber = self.state.0.transcriber.clone();
        let options = match request.reason {
            DecodeReason::Endpoint | DecodeReason::Pause => self.state.0.final_options.clone(),
            DecodeReason::LongSpeech => self.state.0.agreement_options.clone(),
            DecodeReason::Interim => self.state.0.stream_options.clone(),
        };
        let language = self.params.language.clone().or_else(|| Some("en".to_owned()));
        let request_id = self.request_id.clone();
        self.in_flight = Some(Box::pin(async move {
            let (reason, audio_s) = (request.reason.as_str(), request.samples.len() as f64 / 16_000.0);
            let (offset, prompt_tokens, prefix_tokens) = (request.offset, request.prompt.len(), request.prefix.len());
            // The decode that ends an utterance: a client waits for its final.
            let urgent = matches!(request.reason, DecodeReason::Endpoint | DecodeReason::Pause);
            let input = WindowInput::Samples {
                samples: request.samples,
                previous_tokens: request.prompt,
                prefix: request.prefix,
                prefix_end: request.prefix_end,
                language,
                options,
            };
            let submitted = if urgent {
                scheduler.run_urgent(input, JobKind::Stream).await
            } else {
                scheduler.run(input, JobKind::Stream).await
            };
            match submitted {
                Ok(done) => {
                    tracing::debug!(
                        request_id,
                        reason,
                        offset,
                        audio_s,
                        prompt_tokens,
                        prefix_tokens,
                        latency_ms = done.latency.as_millis() as u64,
                        "a stream window was decoded"
                    );
                    let segments = transcriber.window_segments(&done.output, done.n_frames, request.offset);
                    // A looping decode (the prompt or a phrase said over and over) is no hypothesis:
                    // the next decode, with more audio, looks again.
                    let looping = segments.iter().any(|s| s.compression_ratio > 2.4);
                    let words: Vec<Word> = if looping {
                        Vec::new()
                    } else {
                        drop_repeats(segments.into_iter().flat_map(|s| s.words).collect())
                    };
                    // Transcripts only at trace level (never in production logs).
                    tracing::trace!(
                        request_id,
                        offset,
                        looping,
                        words = ?words.iter().map(|w| (w.text.as_str(), round3(w.start), round3(w.end))).collect::<Vec<_>>(),
                        "the stream window's words"
                    );
                    (request.id, Some(words))
                }
                Err(e) => {
                    tracing::warn!(request_id, error = %e, "a stream window failed; it is decoded again with the next one");
                    (request.id, None)
                }
            }
        }));
    }

    async fn send_events(&mut self, socket: &mut WebSocket, events: Vec<Event>) -> Result<(), axum::Error> {
        let mut events = events;
        events.splice(0..0, self.recognizer.take_forced());
        for event in events {
            let text = match event {
                Event::SpeechStarted { timestamp } => serde_json::to_string(&wire::SpeechStarted {
                    kind: "SpeechStarted".to_owned(),
                    channel: vec![0],
                    timestamp,
                }),
                Event::UtteranceEnd { last_word_end } => serde_json::to_string(&wire::UtteranceEnd {
                    kind: "UtteranceEnd".to_owned(),
                    channel: vec![0, 1],
                    last_word_end,
                }),
                Event::Results(results) => {
                    if results.is_final && results.speech_final {
                        if let Some(started) = self.flush_started.take() {
                            self.state.metrics().final_latency.observe(started.elapsed().as_secs_f64());
                        }
                    }
                    serde_json::to_string(&self.results_message(&results))
                }
                Event::Checkpoint(point) => serde_json::to_string(&self.checkpoint(point)),
            };
            let text = text.map_err(axum::Error::new)?;
            socket.send(Message::Text(text.into())).await?;
        }
        if self.recognizer.flush_pending() {
            self.flush_started.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn results_message(&self, results: &ResultsEvent) -> wire::StreamResults {
        let words: Vec<aldea_proto::Word> = results
            .words
            .iter()
            .map(|w| aldea_proto::Word::from_punctuated(&w.text, round3(w.start), round3(w.end), w.probability))
            .filter(|w| !w.word.is_empty())
            .collect();
        let transcript = results.words.iter().map(|w| w.text.as_str()).collect::<String>().trim().to_owned();
        let confidence =
            if words.is_empty() { 0.0 } else { words.iter().map(|w| w.confidence).sum::<f64>() / words.len() as f64 };
        let words = if self.params.word_format_tuple {
            wire::StreamWords::Tuples(
                words
                    .into_iter()
                    .map(|w| (w.word, (w.start * 1000.0).round() as u64, (w.end * 1000.0).round() as u64))
                    .collect(),
            )
        } else {
            wire::StreamWords::Objects(words)
        };
        wire::StreamResults {
            kind: "Results".to_owned(),
            channel_index: [0, 1],
            start: round3(results.start),
            duration: round3(results.end - results.start).max(0.0),
            is_final: results.is_final,
            speech_final: results.speech_final,
            from_finalize: results.from_finalize,
            channel: wire::StreamChannel {
                alternatives: vec![wire::StreamAlternative { transcript, confidence, words }],
            },
            metadata: wire::ResultsMetadata {
                request_id: self.request_id.clone(),
                model_uuid: self.model_uuid.clone(),
                model_info: response::model_info(&self.state.config().model_name),
            },
            no_speech_prob: None,
        }
    }

    /// The resume point: only headerless input can restart at a byte offset (frames are
    /// fixed-size). It restarts at the committed speech kept as context (on a sample of the input),
    /// so a resumed stream hears it again; a container replays from the start.
    fn checkpoint(&self, point: ResumePoint) -> wire::Checkpoint {
        let audio = &self.params.audio;
        let restart = audio.encoding.map(|encoding| {
            let bytes_per_sample: u64 = match encoding {
                Encoding::Linear16 => 2,
                Encoding::Mulaw | Encoding::Alaw => 1,
            };
            // Relative to this stream's own input: a resumed stream's input starts at its origin.
            let rate = f64::from(audio.sample_rate);
            let frames = ((point.audio_start - self.origin()).max(0.0) * rate).floor() as u64;
            (frames * bytes_per_sample * u64::from(audio.channels), self.origin() + frames as f64 / rate)
        });
        // Without a byte offset the whole input is replayed: no context to carry.
        let point = if restart.is_some() { point } else { point.without_context() };
        let prompt = self.state.0.transcriber.engine().tokenizer().decode(&point.prompt_tokens);
        let context = point
            .context
            .iter()
            .map(|w| wire::ContextWord { start: round3(w.start), end: round3(w.end), tokens: w.tokens.clone() })
            .collect();
        wire::Checkpoint {
            kind: wire::CHECKPOINT_TYPE.to_owned(),
            committed_until: round3(point.committed_until),
            byte_offset: restart.map(|(offset, _)| offset),
            header_bytes: 0,
            prompt: prompt.trim().to_owned(),
            prompt_tokens: point.prompt_tokens,
            audio_start: restart.map(|(_, start)| start).filter(|&start| start < point.committed_until - 1e-9),
            context,
            utterance_open: point.utterance_open,
        }
    }

    async fn send_metadata(&mut self, socket: &mut WebSocket, duration: f64) -> Result<(), axum::Error> {
        let metadata = wire::StreamMetadata {
            kind: "Metadata".to_owned(),
            request_id: self.request_id.clone(),
            created: response::now_rfc3339(),
            duration: round3(duration.max(0.0)),
            channels: u32::from(self.params.audio.channels),
            model_info: response::model_info(&self.state.config().model_name),
            transaction_key: "deprecated".to_owned(),
            sha256: hex::encode(self.hasher.clone().finalize()),
            warnings: self.params.warnings.clone(),
        };
        let text = serde_json::to_string(&metadata).map_err(axum::Error::new)?;
        socket.send(Message::Text(text.into())).await
    }
}

fn audio_close(e: AudioError) -> Close {
    match e {
        AudioError::TooLarge { .. } | AudioError::TooLong { .. } => Close { code: 1008, reason: "LIMIT-0000" },
        _ => Close { code: 1003, reason: codes::DATA },
    }
}

async fn poll_in_flight(in_flight: &mut Option<DecodeFuture>) -> (u64, Option<Vec<Word>>) {
    match in_flight {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Cuts a word said more than three times in a row down to its first saying: Whisper's loop on a
/// short buffer, not speech.
fn drop_repeats(words: Vec<Word>) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::with_capacity(words.len());
    let mut idx = 0;
    while idx < words.len() {
        let bare = aldea_proto::bare_word(&words[idx].text);
        let mut end = idx + 1;
        while end < words.len() && aldea_proto::bare_word(&words[end].text) == bare {
            end += 1;
        }
        let keep = if end - idx > 3 { idx + 1 } else { end };
        out.extend(words[idx..keep].iter().cloned());
        idx = end;
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str) -> Word {
        Word { text: format!(" {text}"), start: 0.0, end: 0.1, probability: 0.9, tokens: vec![] }
    }

    #[test]
    fn interims_get_wider_steps_with_more_streams_and_slower_calls_up_to_the_cap() {
        let (step, ms) = (Duration::from_secs(1), Duration::from_millis);
        // One stream, calls under half a step (or none measured yet): the base step.
        assert_eq!(interim_step_scale(1, ms(400), step), 1.0);
        assert_eq!(interim_step_scale(0, Duration::ZERO, step), 1.0);
        // Two streams share the half: each steps twice as far apart.
        assert_eq!(interim_step_scale(2, ms(400), step), 2.0);
        // A call of 0.75 s is 1.5 half-steps.
        assert!((interim_step_scale(1, ms(750), step) - 1.5).abs() < 1e-9);
        assert!((interim_step_scale(2, ms(750), step) - 3.0).abs() < 1e-9);
        // Never more than the cap.
        assert_eq!(interim_step_scale(8, ms(900), step), MAX_INTERIM_STEP_SCALE as f64);
    }

    #[test]
    fn a_word_looping_is_cut_to_one_and_pairs_stay() {
        let texts = |words: Vec<Word>| words.iter().map(|w| w.text.trim().to_owned()).collect::<Vec<_>>();
        let looped = vec![word("go"), word("rear."), word("rear."), word("rear."), word("rear."), word("left")];
        assert_eq!(texts(drop_repeats(looped)), vec!["go", "rear.", "left"]);
        let pair = vec![word("rear,"), word("rear."), word("left")];
        assert_eq!(texts(drop_repeats(pair)), vec!["rear,", "rear.", "left"]);
    }
}
