//! The recognition service (stt-api, port 8800, internal): `POST /v1/listen` uploads and the
//! `/v1/listen` WebSocket stream of the public contract, `/live`, `/ready`, `/metrics` and
//! `/v1/capacity`. Every request shares one model through the [`scheduler`], which gathers
//! concurrent windows into batched model calls; streams are admitted while capacity lasts.
//!
//! [`router`] builds the app for `oneshot` tests; [`serve`] runs it on a listener the caller bound,
//! until the shutdown token fires, then drains streams (closing the rest with 1012).
//!
//! Invariant: never reads environment variables or files — the binary passes [`Config`] and the
//! loaded model.
//! Invariant: never logs audio, transcripts or tokens above `trace`.
//! Invariant: no panic reaches a client: engine panics become error replies for their batch, and
//! every bad input is answered with the contract's error form (400/401/413/415/503, close 1003/1008).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use aldea_engine::{TranscribeOptions, Transcriber, Vad, VadOptions};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod error;
mod http;
pub mod metrics;
pub mod params;
pub mod recognizer;
pub mod response;
pub mod scheduler;
mod session;

pub use http::router;

/// The service's settings (the binary fills them from flags, environment and files).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name of the model served (reported in metadata; requests may name it).
    pub model_name: String,
    /// Required `Authorization: Bearer` value of every request but `/live` and `/ready` (redacted in
    /// `Debug`, never serialized: the binary sets it from a flag or the environment).
    #[serde(skip)]
    pub service_token: Option<SecretString>,
    /// Streams admitted at once.
    pub max_streams: usize,
    /// Extra streams admitted only for resumed streams (failover goes first).
    pub resume_headroom: usize,
    /// Uploads transcribed at once.
    pub max_uploads: usize,
    /// Uploads waiting for one of those slots, first come first served (503 beyond).
    pub max_upload_queue: usize,
    /// Longest an upload waits in that queue (503 after).
    pub max_upload_wait_ms: u64,
    pub max_body_bytes: usize,
    /// Upload bodies up to this many bytes are held in memory while they wait and are decoded;
    /// larger ones go to an unnamed temporary file.
    pub spool_memory_bytes: usize,
    /// Directory of those files (`None`: the system's temporary directory).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Longest wait for the next part of an upload's body (408 after).
    pub body_idle_timeout_ms: u64,
    /// Longest upload, seconds of audio.
    pub max_upload_seconds: f64,
    /// Longest stream, seconds of audio.
    pub max_stream_seconds: f64,
    /// Wall-clock time without audio or KeepAlive after which a stream is closed (1011 NET-0001).
    pub idle_timeout_ms: u64,
    /// How long streams may go on after shutdown begins before they are closed with 1012.
    pub drain_timeout_ms: u64,
    pub max_batch: usize,
    pub batch_window_ms: u64,
    /// Threads calling the model, each with a batch of its own (the engine must have as many
    /// replicas): 2 on a GPU keeps it busy while the other batch's CPU work runs.
    pub model_workers: usize,
    /// Stream windows' previous text trimmed to bucket lengths so that more of them share a model
    /// call (`WindowJob::bucket_context`): on a GPU, where batches are large.
    pub bucket_context: bool,
    /// A batch's log-mel windows made on every core (on a GPU; on the CPU the cores are the
    /// model's).
    pub parallel_prep: bool,
    /// Beam of the decodes behind interims.
    pub stream_beam_size: usize,
    /// Beam of the decodes that end an utterance (a flush point in view: endpoint, Finalize,
    /// CloseStream; or a pause).
    pub final_beam_size: usize,
    /// Beam of the decodes of long speech whose agreement makes words final (1 or 2 cost the
    /// real-time long_3min stream 3.1 / 2.5 WER points against 5).
    pub agreement_beam_size: usize,
    pub upload_beam_size: usize,
    /// New audio between two decodes of a stream's buffer.
    pub step_ms: u64,
    /// New streams are refused while windows wait longer than this on average.
    pub max_queue_wait_ms: u64,
    /// Longest a stream's interim decode (or a pause's, which may be one between words) is held
    /// back while the model works for others (finals never wait behind interims that could wait);
    /// 0 never holds.
    pub interim_hold_ms: u64,
    /// Interim decodes are paced by load: the streams in speech together spend at most half the
    /// model's time on interims (each one's step is `step_ms` times their number, longer where a
    /// model call lasts over half a step; at most [`MAX_INTERIM_STEP_SCALE`] steps), so that the
    /// decode at an endpoint seldom waits.
    pub pace_interims: bool,
    /// Streams' windows are encoded up to this many seconds after their audio, the rest of the
    /// 30-s encoder output being that of an empty window (`TranscribeOptions::encoder_padding`):
    /// a window of 10 s costs the encoder about a third of a whole one. `None` encodes whole
    /// windows (docs/decisions/07-streams-windows-are-encoded-in-part.md).
    pub encoder_padding_s: Option<f64>,
}

/// The longest interim step, in steps, that [`Config::pace_interims`] sets.
pub const MAX_INTERIM_STEP_SCALE: usize = 4;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("model_name", &self.model_name)
            .field("service_token", &self.service_token)
            .field("max_streams", &self.max_streams)
            .field("max_uploads", &self.max_uploads)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model_name: "tiny.en".to_owned(),
            service_token: None,
            max_streams: 4,
            resume_headroom: 1,
            max_uploads: 4,
            max_upload_queue: 64,
            max_upload_wait_ms: 60_000,
            max_body_bytes: 512 * 1024 * 1024,
            spool_memory_bytes: 2 * 1024 * 1024,
            spool_dir: None,
            body_idle_timeout_ms: 30_000,
            max_upload_seconds: 600.0,
            max_stream_seconds: 4.0 * 3600.0,
            idle_timeout_ms: 10_000,
            drain_timeout_ms: 30_000,
            max_batch: 8,
            batch_window_ms: 4,
            model_workers: 1,
            bucket_context: false,
            parallel_prep: false,
            stream_beam_size: 1,
            final_beam_size: 5,
            agreement_beam_size: 5,
            upload_beam_size: 5,
            step_ms: 1_000,
            max_queue_wait_ms: 500,
            interim_hold_ms: 1_000,
            pace_interims: true,
            encoder_padding_s: Some(3.0),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid stt configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_streams", self.max_streams),
            ("max_uploads", self.max_uploads),
            ("max_batch", self.max_batch),
            ("model_workers", self.model_workers),
            ("stream_beam_size", self.stream_beam_size),
            ("final_beam_size", self.final_beam_size),
            ("agreement_beam_size", self.agreement_beam_size),
            ("upload_beam_size", self.upload_beam_size),
            ("max_body_bytes", self.max_body_bytes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError(format!("{name} must be at least 1")));
        }
        if self.encoder_padding_s.is_some_and(|p| !(2.0..=30.0).contains(&p)) {
            return Err(ConfigError(
                "encoder_padding_s must be between 2 and 30 seconds (under 2 s the model loops)".to_owned(),
            ));
        }
        if self.max_uploads.saturating_add(self.max_upload_queue) > 1_000_000 {
            return Err(ConfigError("max_uploads + max_upload_queue must be at most 1,000,000".to_owned()));
        }
        if self.body_idle_timeout_ms == 0 {
            return Err(ConfigError("body_idle_timeout_ms must be at least 1".to_owned()));
        }
        if self.step_ms < 100 {
            return Err(ConfigError("step_ms must be at least 100".to_owned()));
        }
        if self.service_token.as_ref().is_some_and(|t| t.expose_secret().len() < 16) {
            return Err(ConfigError("the service token must be at least 16 characters".to_owned()));
        }
        Ok(())
    }

    /// Whether the service may listen on `addr`: off loopback only with a service token.
    pub fn check_listen(&self, addr: &SocketAddr) -> Result<(), ConfigError> {
        if !addr.ip().is_loopback() && self.service_token.is_none() {
            return Err(ConfigError(format!(
                "refusing to listen on {addr} without a service token (--service-token or ALDEA_SERVICE_TOKEN); loopback needs none"
            )));
        }
        Ok(())
    }
}

/// What the service runs on: the loaded model and VAD.
#[derive(Debug, Clone)]
pub struct Deps {
    pub transcriber: Transcriber,
    pub vad: Arc<Vad>,
}

/// State shared by every request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    config: Config,
    transcriber: Transcriber,
    vad: Arc<Vad>,
    scheduler: scheduler::Scheduler,
    metrics: Arc<metrics::Metrics>,
    ready: AtomicBool,
    active_streams: AtomicUsize,
    /// Streams whose speech is going on now.
    speaking_streams: Arc<AtomicUsize>,
    active_uploads: AtomicUsize,
    /// One permit per upload slot; a queued upload waits on it in arrival order.
    upload_slots: Arc<tokio::sync::Semaphore>,
    /// One permit per upload admitted (slots plus the queue's length).
    upload_places: Arc<tokio::sync::Semaphore>,
    /// Uploads admitted and not running yet: reading their body or waiting for a slot.
    queued_uploads: AtomicUsize,
    stream_options: Arc<TranscribeOptions>,
    final_options: Arc<TranscribeOptions>,
    agreement_options: Arc<TranscribeOptions>,
    upload_options: Arc<TranscribeOptions>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    multilingual: bool,
}

impl AppState {
    /// Starts the scheduler; the state is not ready until [`AppState::warm_up`] ran.
    pub fn new(config: Config, deps: Deps) -> AppState {
        let upload_slots = Arc::new(tokio::sync::Semaphore::new(config.max_uploads));
        let upload_places = Arc::new(tokio::sync::Semaphore::new(config.max_uploads + config.max_upload_queue));
        let metrics = Arc::new(metrics::Metrics::default());
        let scheduler = scheduler::Scheduler::start(
            deps.transcriber.clone(),
            scheduler::SchedulerConfig {
                max_batch: config.max_batch,
                batch_window: Duration::from_millis(config.batch_window_ms),
                queue_capacity: (2 * config.max_streams).max(256),
                workers: config.model_workers,
                bucket_context: config.bucket_context,
                parallel_prep: config.parallel_prep,
            },
            metrics.clone(),
        );
        // Streams decode a short buffer at a time, again and again: no VAD pass (the session's VAD
        // filters words), no temperature fallback (sampling a second of audio at high temperature
        // produces hundreds of tokens of noise; the next decode looks again anyway) and a token
        // budget proportional to the audio.
        let stream_decoding = |beam_size: usize| {
            Arc::new(TranscribeOptions {
                beam_size,
                best_of: beam_size.max(1),
                temperatures: vec![0.0],
                vad: None,
                max_tokens_per_second: Some(12.0),
                encoder_padding: config.encoder_padding_s,
                ..TranscribeOptions::default()
            })
        };
        let stream_options = stream_decoding(config.stream_beam_size);
        let final_options = stream_decoding(config.final_beam_size);
        let agreement_options = stream_decoding(config.agreement_beam_size);
        let upload_options = Arc::new(TranscribeOptions {
            beam_size: config.upload_beam_size,
            vad: Some(VadOptions::guard()),
            ..TranscribeOptions::default()
        });
        let multilingual = deps.transcriber.engine().config().multilingual;
        AppState(Arc::new(Shared {
            config,
            transcriber: deps.transcriber,
            vad: deps.vad,
            scheduler,
            metrics,
            ready: AtomicBool::new(false),
            active_streams: AtomicUsize::new(0),
            speaking_streams: Arc::new(AtomicUsize::new(0)),
            active_uploads: AtomicUsize::new(0),
            upload_slots,
            upload_places,
            queued_uploads: AtomicUsize::new(0),
            stream_options,
            final_options,
            agreement_options,
            upload_options,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            multilingual,
        }))
    }

    /// Runs one window through the model (the first call pays for lazy initialisation), then marks
    /// the service ready.
    pub async fn warm_up(&self) -> Result<(), scheduler::ScheduleError> {
        // A second of low noise: real work for the encoder and decoder, no words expected.
        let samples: Vec<f32> = (0..16_000u32).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.01).collect();
        let input = scheduler::WindowInput::Samples {
            samples,
            previous_tokens: Vec::new(),
            prefix: Vec::new(),
            prefix_end: 0.0,
            language: Some("en".to_owned()),
            options: self.0.stream_options.clone(),
        };
        self.0.scheduler.run(input, scheduler::JobKind::Stream).await?;
        self.0.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst) && !self.0.shutdown.is_cancelled()
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.0.metrics
    }

    /// Streams this replica would still admit (0 while overloaded, draining or not ready).
    pub fn free_stream_slots(&self) -> usize {
        if !self.is_ready() || self.overloaded() {
            return 0;
        }
        self.0.config.max_streams.saturating_sub(self.0.active_streams.load(Ordering::SeqCst))
    }

    fn overloaded(&self) -> bool {
        self.0.scheduler.recent_wait() > Duration::from_millis(self.0.config.max_queue_wait_ms)
    }

    /// Takes a stream slot; resumed streams may use the headroom above `max_streams`.
    fn admit_stream(&self, resumed: bool) -> Option<Permit> {
        let limit = self.0.config.max_streams + if resumed { self.0.config.resume_headroom } else { 0 };
        if !self.is_ready() || (!resumed && self.overloaded()) {
            return None;
        }
        let counter = &self.0.active_streams;
        let mut current = counter.load(Ordering::SeqCst);
        loop {
            if current >= limit {
                return None;
            }
            match counter.compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.0.metrics.active_streams.inc();
        Some(Permit { state: self.clone(), kind: scheduler::JobKind::Stream, _upload: None })
    }

    /// Takes a place in the uploads' line: at most `max_uploads + max_upload_queue` uploads are
    /// admitted at once (running, or reading their body, or waiting for a slot); past that (or while
    /// not ready or shutting down) the answer is [`error::ApiError::NoCapacity`] at once, before
    /// any byte of the body is read.
    fn enter_upload_line(&self) -> Result<Place, error::ApiError> {
        use error::ApiError;
        if !self.is_ready() || self.0.shutdown.is_cancelled() {
            return Err(ApiError::NoCapacity("the service is not ready".to_owned()));
        }
        let place = self.0.upload_places.clone().try_acquire_owned().map_err(|_| {
            ApiError::NoCapacity(format!(
                "{} uploads are already waiting for this replica; retry shortly",
                self.0.config.max_upload_queue
            ))
        })?;
        self.0.queued_uploads.fetch_add(1, Ordering::SeqCst);
        self.0.metrics.queued_uploads.inc();
        Ok(Place { place, queued: Queued(self.clone()) })
    }

    /// Takes an upload slot for an upload in line, waiting for one in arrival order, at most
    /// `max_upload_wait_ms` ([`error::ApiError::NoCapacity`] after, or on shutdown).
    async fn take_upload_slot(&self, place: Place) -> Result<Permit, error::ApiError> {
        use error::ApiError;
        let slot = match self.0.upload_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let wait = Duration::from_millis(self.0.config.max_upload_wait_ms);
                let waited = tokio::select! {
                    slot = tokio::time::timeout(wait, self.0.upload_slots.clone().acquire_owned()) => Some(slot),
                    _ = self.0.shutdown.cancelled() => None,
                };
                match waited {
                    Some(Ok(Ok(slot))) => slot,
                    None | Some(Ok(Err(_))) => {
                        return Err(ApiError::NoCapacity("the service is shutting down".to_owned()))
                    }
                    Some(Err(_)) => {
                        return Err(ApiError::NoCapacity(format!(
                            "no upload slot freed within {} s; retry shortly",
                            wait.as_secs_f64()
                        )))
                    }
                }
            }
        };
        // Running now: out of the queue's count, its place held until it ends.
        let Place { place, queued } = place;
        drop(queued);
        self.0.active_uploads.fetch_add(1, Ordering::SeqCst);
        self.0.metrics.active_uploads.inc();
        Ok(Permit { state: self.clone(), kind: scheduler::JobKind::Upload, _upload: Some((place, slot)) })
    }

    /// Uploads waiting for a slot now.
    pub fn queued_uploads(&self) -> usize {
        self.0.queued_uploads.load(Ordering::SeqCst)
    }

    /// Streams whose speech is going on now.
    pub fn speaking_streams(&self) -> usize {
        self.0.speaking_streams.load(Ordering::Relaxed)
    }

    /// Begins shutdown: readiness drops, new work is refused, streams drain.
    pub fn shutdown(&self) {
        self.0.shutdown.cancel();
    }
}

/// Whether one stream is in speech, counted in [`AppState::speaking_streams`] while it is.
#[derive(Debug)]
struct Speaking {
    counter: Arc<AtomicUsize>,
    on: bool,
}

impl Speaking {
    fn new(state: &AppState) -> Speaking {
        Speaking { counter: state.0.speaking_streams.clone(), on: false }
    }

    fn set(&mut self, on: bool) {
        if on != self.on {
            self.on = on;
            let counter = &self.counter;
            if on {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Speaking {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// An upload admitted but not running yet (reading its body or waiting for a slot).
#[derive(Debug)]
struct Place {
    place: tokio::sync::OwnedSemaphorePermit,
    queued: Queued,
}

/// Counts one upload in the queue until dropped.
#[derive(Debug)]
struct Queued(AppState);

impl Drop for Queued {
    fn drop(&mut self) {
        let shared = &self.0 .0;
        shared.queued_uploads.fetch_sub(1, Ordering::SeqCst);
        shared.metrics.queued_uploads.dec();
    }
}

/// A stream or upload slot, given back when dropped.
#[derive(Debug)]
struct Permit {
    state: AppState,
    kind: scheduler::JobKind,
    /// An upload's place in line and its slot, given back (to the next uploads) when dropped.
    _upload: Option<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let shared = &self.state.0;
        match self.kind {
            scheduler::JobKind::Stream => {
                shared.active_streams.fetch_sub(1, Ordering::SeqCst);
                shared.metrics.active_streams.dec();
            }
            scheduler::JobKind::Upload => {
                shared.active_uploads.fetch_sub(1, Ordering::SeqCst);
                shared.metrics.active_uploads.dec();
            }
        }
    }
}

/// Serves the app on `listener` until `shutdown` fires; then stops accepting, lets streams run up to
/// the drain timeout (closing the rest with 1012), and returns when every session has ended.
/// Warms the model up first in the background (`/ready` says when).
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let warm = state.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.warm_up().await {
            tracing::error!(error = %e, "warm-up failed; the service stays unready");
        } else {
            tracing::info!("model warm; ready");
        }
    });
    let app = router(state.clone());
    let stop = shutdown.clone();
    let on_stop = state.clone();
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
            on_stop.shutdown();
        })
        .await?;
    state.0.sessions.close();
    state.0.sessions.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_as_speaking_once_and_stops_when_dropped() {
        let counter = Arc::new(AtomicUsize::new(0));
        let mut first = Speaking { counter: counter.clone(), on: false };
        let mut second = Speaking { counter: counter.clone(), on: false };
        first.set(true);
        first.set(true);
        assert_eq!(counter.load(Ordering::Relaxed), 1, "a stream counts once however often it is told");
        second.set(true);
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        second.set(false);
        second.set(false);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(counter.load(Ordering::Relaxed), 0, "a stream that ends in speech leaves the count");
        drop(second);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn encoder_padding_under_two_seconds_is_refused() {
        let with = |padding| Config { encoder_padding_s: padding, ..Config::default() }.validate();
        assert!(with(None).is_ok());
        assert!(with(Some(3.0)).is_ok());
        let refused = with(Some(1.0)).unwrap_err().to_string();
        assert!(refused.contains("encoder_padding_s"), "{refused}");
        assert!(with(Some(f64::NAN)).is_err());
    }
}
