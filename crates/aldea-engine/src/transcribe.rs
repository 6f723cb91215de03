//! The long-form transcription loop: 30-s windows advanced by the timestamps the model predicts,
//! conditioning on the previous text, temperature fallback when the output is too repetitive or too
//! improbable, the no-speech check, and word timestamps from cross-attention alignment. This is the
//! algorithm faster-whisper runs (`WhisperModel.generate_segments`), written here so that results
//! agree with it on the same weights; a Silero VAD pass keeps words out of silence.
//!
//! This file holds the public types and the [`Transcriber`] façade, whose
//! [`Transcriber::transcribe_with`] plays the part of faster-whisper's `WhisperModel.transcribe`
//! (VAD, log-mel, the loop, the VAD guard). The algorithm is split along faster-whisper's own
//! functions, so that each part reads next to `transcribe.py`:
//! - `long_form`: `generate_segments` (the seek loop, conditioning on previous text) and
//!   [`Transcriber::window_segments`] (one streaming window decoded whole);
//! - `windows`: the model calls of one iteration of `generate_segments`, batched over windows
//!   ([`WindowJob`] → [`Transcriber::run_windows`] → [`WindowOutput`]): `encode`,
//!   `detect_language`, `get_prompt`, the no-speech check, the model call of `find_alignment`;
//! - `fallback`: `generate_with_fallback`, `get_suppressed_tokens`, `get_compression_ratio`;
//! - `words`: `add_word_timestamps`, `find_alignment` after the model call, `merge_punctuations`;
//! - `split`: `_split_segments_by_timestamps` and the empty-segment filter of `generate_segments`;
//! - `vad_guard`: no faster-whisper counterpart; drops the words the VAD found outside speech.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mel::{MelExtractor, HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::vad::{SpeechSpan, Vad, VadOptions};
use crate::{Engine, EngineError, Generation};

mod fallback;
mod long_form;
mod split;
mod vad_guard;
mod windows;
mod words;

use vad_guard::keep_speech;

/// Seconds per output timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per second.
const FRAMES_PER_SECOND: f64 = (SAMPLE_RATE / HOP_LENGTH) as f64;
/// Mel frames per encoder frame.
const INPUT_STRIDE: usize = 2;
/// Longest decoded sequence, prompt included.
const MAX_LENGTH: usize = 448;

/// How to transcribe. Defaults are faster-whisper's (`beam_size=5`, temperatures 0.0…1.0, thresholds
/// 2.4 / -1.0 / 0.6), with word timestamps on and the VAD guard on.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribeOptions {
    /// `Some("en")`; `None` detects the language (multilingual models only).
    pub language: Option<String>,
    pub beam_size: usize,
    pub best_of: usize,
    pub patience: f32,
    pub length_penalty: f32,
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: Option<f32>,
    pub log_prob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    pub condition_on_previous_text: bool,
    pub prompt_reset_on_temperature: f32,
    /// Token ids of an initial prompt (biases spelling and vocabulary).
    pub initial_prompt: Vec<u32>,
    pub word_timestamps: bool,
    /// Seconds after the start of a window within which the first timestamp must fall.
    pub max_initial_timestamp: f64,
    /// Run the VAD and drop words that fall outside speech. `None` trusts the model alone.
    pub vad: Option<VadOptions>,
    /// Caps the tokens generated for a window at this many per second of its audio (plus a little):
    /// a short streaming buffer then cannot loop to the 448-token limit. `None`: the model's limit.
    pub max_tokens_per_second: Option<f64>,
    /// Encode only a window's audio and this many seconds after it (the encoder's cost grows with
    /// its input); the rest of the 30-s encoder output is the encoder's output for an empty window
    /// ([`Engine::encode_head`]). `None` encodes the whole window, as Whisper was trained. Under about
    /// 2 s the model loops (it hears where the audio stops); from 2 s on its transcripts matched the
    /// whole window's on the real-dev clips.
    pub encoder_padding: Option<f64>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            language: Some("en".to_owned()),
            beam_size: 5,
            best_of: 5,
            patience: 1.0,
            length_penalty: 1.0,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            prompt_reset_on_temperature: 0.5,
            initial_prompt: Vec::new(),
            word_timestamps: true,
            max_initial_timestamp: 1.0,
            vad: Some(VadOptions::guard()),
            max_tokens_per_second: None,
            encoder_padding: None,
        }
    }
}

/// One recognized word. `text` is as the model wrote it, with its leading space and punctuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
    /// The model's token ids of the word (a streaming prompt is built from committed words).
    pub tokens: Vec<u32>,
}

/// A stretch of transcript between two timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
    pub words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    /// Seconds of audio.
    pub duration: f64,
    pub language: String,
    pub language_probability: f64,
    /// Speech found by the VAD (empty when the VAD is off).
    pub speech: Vec<SpeechSpan>,
}

impl Transcript {
    /// The whole text, segments joined, trimmed.
    pub fn text(&self) -> String {
        self.segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_owned()
    }

    pub fn words(&self) -> impl Iterator<Item = &Word> {
        self.segments.iter().flat_map(|s| s.words.iter())
    }
}

/// Runs the long-form loop over one engine. Cheap to clone; share one per model.
#[derive(Clone)]
pub struct Transcriber {
    engine: Arc<dyn Engine>,
    mel: Arc<MelExtractor>,
    vad: Option<Arc<Vad>>,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber").field("mel", &self.mel).field("vad", &self.vad.is_some()).finish()
    }
}

/// Where the time of one transcription went (logged at debug level).
#[derive(Debug, Default)]
struct StageTimes {
    encode: Duration,
    generate: Duration,
    align: Duration,
    n_windows: usize,
    n_fallbacks: usize,
}

impl StageTimes {
    fn add(&mut self, window: &WindowTimes) {
        self.encode += window.encode;
        self.generate += window.generate;
        self.align += window.align;
        self.n_windows += 1;
    }
}

/// One window of at most 30 s for the model: the unit the stt scheduler gathers into batches.
#[derive(Debug, Clone)]
pub struct WindowJob {
    /// `[n_mels, 3000]` log-mel frames, zero beyond `n_frames` ([`Transcriber::mel_window`]).
    pub mel: Vec<f32>,
    /// Frames of real audio in the window.
    pub n_frames: usize,
    /// Text tokens of what came before (the prompt keeps the last 223).
    pub previous_tokens: Vec<u32>,
    /// `None` detects the language on this window (multilingual models).
    pub language: Option<String>,
    pub options: Arc<TranscribeOptions>,
    /// Keep the unfinished segment after the last timestamp pair (a streaming buffer decoded whole)
    /// instead of leaving it to the next window (the long-form loop).
    pub keep_tail: bool,
    /// Text tokens forced at the start of the window's transcript (after `<|0.00|>`): what was
    /// already said in the window's first audio (a streaming buffer that keeps committed speech as
    /// left context). The model hears that audio with its words fixed and goes on after them; the
    /// words the prefix covers are not returned by [`Transcriber::window_segments`].
    pub prefix: Vec<u32>,
    /// Seconds into the window where the prefix's speech ends: the prefix closes its segment there
    /// with a timestamp pair, as the model itself writes between segments (a prefix left open at a
    /// sentence end makes the model end the transcript there).
    pub prefix_end: f64,
}

/// What the model made of one window.
#[derive(Debug, Clone)]
pub struct WindowOutput {
    pub language: String,
    pub language_probability: f64,
    decoded: Decoded,
    /// The no-speech check said the window holds no speech.
    pub skipped: bool,
    alignment: Vec<WordTiming>,
    /// Text tokens of the forced prefix at the start of `decoded` (after its first timestamp).
    prefix_len: usize,
    pub times: WindowTimes,
}

/// Time spent on the batch a window ran in, by stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowTimes {
    pub encode: Duration,
    pub generate: Duration,
    pub align: Duration,
    /// Windows in the batch.
    pub batch: usize,
    /// Mel frames of the window the encoder heard (3000: the whole window; fewer: encoded in part,
    /// `TranscribeOptions::encoder_padding`).
    pub encoded_frames: usize,
}

/// What one window's decoding gave, after fallback.
#[derive(Debug, Clone)]
struct Decoded {
    generation: Generation,
    avg_logprob: f64,
    temperature: f32,
    compression_ratio: f64,
}

/// A sub-segment of a window, before words are attached.
struct RawSegment {
    seek: usize,
    start: f64,
    end: f64,
    tokens: Vec<u32>,
    words: Vec<Word>,
}

/// A word of the alignment before it is placed on the audio timeline.
#[derive(Debug, Clone)]
pub struct WordTiming {
    word: String,
    tokens: Vec<u32>,
    start: f64,
    end: f64,
    probability: f64,
}

impl Transcriber {
    pub fn new(engine: Arc<dyn Engine>, vad: Option<Arc<Vad>>) -> Transcriber {
        let mel = Arc::new(MelExtractor::new(engine.config().n_mels));
        Transcriber { engine, mel, vad }
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Transcribes 16 kHz mono samples. `progress` is called with the seconds of audio done so far.
    pub fn transcribe(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Transcript, EngineError> {
        let direct = self.clone();
        let mut runner = move |job: WindowJob| {
            direct
                .run_windows(std::slice::from_ref(&job))?
                .pop()
                .ok_or_else(|| EngineError::Inference("no result for the window".to_owned()))
        };
        self.transcribe_with(samples, options, &mut runner, progress)
    }

    /// [`Transcriber::transcribe`] with each window's model work handed to `runner` (the stt
    /// service's scheduler, which batches windows of concurrent requests).
    pub fn transcribe_with(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        runner: &mut dyn FnMut(WindowJob) -> Result<WindowOutput, EngineError>,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Transcript, EngineError> {
        let duration = samples.len() as f64 / SAMPLE_RATE as f64;
        let started = Instant::now();
        let speech = match (&options.vad, &self.vad) {
            (Some(vad_options), Some(vad)) => Some(vad.speech_spans(samples, vad_options)?),
            (Some(_), None) => {
                return Err(EngineError::Vad("the VAD guard is on but no VAD model was loaded".to_owned()))
            }
            (None, _) => None,
        };
        let mut transcript = Transcript {
            segments: Vec::new(),
            duration,
            language: options.language.clone().unwrap_or_else(|| "en".to_owned()),
            language_probability: 1.0,
            speech: speech.clone().unwrap_or_default(),
        };
        if samples.is_empty() || speech.as_ref().is_some_and(Vec::is_empty) {
            // Silence: nothing to recognize, and nothing the model says about it would be true.
            progress(duration);
            return Ok(transcript);
        }
        let vad_done = Instant::now();
        let mel = self.mel.compute(samples, HOP_LENGTH);
        let mel_done = Instant::now();
        let mut times = StageTimes::default();
        let segments = self.generate_segments(&mel, options, &mut transcript, &mut times, runner, progress)?;
        tracing::debug!(
            audio_s = duration,
            vad_ms = (vad_done - started).as_millis() as u64,
            mel_ms = (mel_done - vad_done).as_millis() as u64,
            encode_ms = times.encode.as_millis() as u64,
            generate_ms = times.generate.as_millis() as u64,
            align_ms = times.align.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            windows = times.n_windows,
            fallbacks = times.n_fallbacks,
            "transcribed"
        );
        transcript.segments = match &speech {
            Some(spans) => keep_speech(segments, spans),
            None => segments,
        };
        Ok(transcript)
    }

    /// Mel window of up to 30 s of 16 kHz samples: `(frames laid out [n_mels, 3000], content frames)`.
    pub fn mel_window(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let mel = self.mel.compute(samples, HOP_LENGTH);
        let n_frames = mel.n_frames.saturating_sub(1).min(N_FRAMES);
        let mut window = Vec::new();
        mel.window(0, n_frames, &mut window);
        (window, n_frames)
    }
}

/// A vocabulary with 4 text tokens, the specials the loop needs, and timestamp tokens from id 10 on
/// (`<|0.00|>`, `<|0.02|>`, … `<|30.00|>`). Shared by the sub-modules' tests.
#[cfg(test)]
fn toy_tokenizer() -> crate::Tokenizer {
    let mut tokens: Vec<String> = ["Ġa", "Ġb", "Ġc", "Ġd"].iter().map(|s| (*s).to_owned()).collect();
    for special in ["<|endoftext|>", "<|startoftranscript|>", "<|startofprev|>", "<|notimestamps|>"] {
        tokens.push(special.to_owned());
    }
    tokens.resize(10, "<|unused|>".to_owned());
    tokens.extend((0..1501).map(|i| format!("<|{:.2}|>", f64::from(i) * 0.02)));
    crate::Tokenizer::from_tokens(tokens).unwrap()
}
