//! The long-form transcription loop: 30-s windows advanced by the timestamps the model predicts,
//! conditioning on the previous text, temperature fallback when the output is too repetitive or too
//! improbable, the no-speech check, and word timestamps from cross-attention alignment. This is the
//! algorithm faster-whisper runs (`WhisperModel.generate_segments`), written here so that results
//! agree with it on the same weights; a Silero VAD pass keeps words out of silence.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mel::{MelExtractor, HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::vad::{SpeechSpan, Vad, VadOptions};
use crate::{Encoded, Engine, EngineError, GenerateOptions, Generation, Tokenizer};

/// Seconds per output timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per second.
const FRAMES_PER_SECOND: f64 = (SAMPLE_RATE / HOP_LENGTH) as f64;
/// Mel frames per encoder frame.
const INPUT_STRIDE: usize = 2;
/// Encoder frames per second (the alignment's unit).
const TOKENS_PER_SECOND: f64 = FRAMES_PER_SECOND / INPUT_STRIDE as f64;
/// Longest decoded sequence, prompt included.
const MAX_LENGTH: usize = 448;
const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";

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
            vad: Some(VadOptions::default()),
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

/// Frames of a batch's windows the encoder hears when `encoder_padding` asks for less than the
/// whole window: the longest audio plus the padding, even (the encoder halves the frames).
fn encoded_frames(options: &TranscribeOptions, jobs: &[WindowJob]) -> Option<usize> {
    let padding = options.encoder_padding?;
    let audio = jobs.iter().map(|j| j.n_frames).max()?;
    let frames = (audio + (padding.max(0.0) * FRAMES_PER_SECOND).ceil() as usize).next_multiple_of(2);
    (frames < N_FRAMES).then_some(frames)
}

impl WindowJob {
    /// Whether two windows can share one batched model call: same decoding options, a known, equal
    /// language (windows that detect their language run alone) and prompts of the same length.
    pub fn batches_with(&self, other: &WindowJob) -> bool {
        self.language.is_some()
            && self.language == other.language
            // The runtime decodes a batch from prompts of one length.
            && self.prompt_len() == other.prompt_len()
            && self.keep_tail == other.keep_tail
            && (Arc::ptr_eq(&self.options, &other.options) || *self.options == *other.options)
    }

    /// Tokens of previous text the prompt will carry (with its `<|startofprev|>`).
    fn prompt_len(&self) -> usize {
        if self.previous_tokens.is_empty() {
            0
        } else {
            1 + self.previous_tokens.len().min(MAX_LENGTH / 2 - 1)
        }
    }
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

    fn generate_segments(
        &self,
        mel: &crate::mel::Mel,
        options: &TranscribeOptions,
        transcript: &mut Transcript,
        times: &mut StageTimes,
        runner: &mut dyn FnMut(WindowJob) -> Result<WindowOutput, EngineError>,
        progress: &mut dyn FnMut(f64),
    ) -> Result<Vec<Segment>, EngineError> {
        let tokenizer = self.engine.tokenizer();
        let content_frames = mel.n_frames.saturating_sub(1);
        let mut seek = 0usize;
        let mut all_tokens: Vec<u32> = options.initial_prompt.clone();
        let mut prompt_reset_since = 0usize;
        let mut last_speech_timestamp = 0.0f64;
        let mut out = Vec::new();
        let mut language = options.language.clone();
        let window_options = Arc::new(options.clone());

        while seek < content_frames {
            let time_offset = seek as f64 / FRAMES_PER_SECOND;
            let segment_size = N_FRAMES.min(content_frames - seek);
            let segment_duration = segment_size as f64 / FRAMES_PER_SECOND;
            let mut window = Vec::new();
            mel.window(seek, segment_size, &mut window);
            let previous_tokens = all_tokens[prompt_reset_since.min(all_tokens.len())..].to_vec();
            let output = runner(WindowJob {
                mel: window,
                n_frames: segment_size,
                previous_tokens,
                language: language.clone(),
                options: window_options.clone(),
                keep_tail: false,
                prefix: Vec::new(),
                prefix_end: 0.0,
            })?;
            times.add(&output.times);
            if output.decoded.temperature > 0.0 {
                times.n_fallbacks += 1;
            }
            if language.is_none() {
                transcript.language = output.language.clone();
                transcript.language_probability = output.language_probability;
                language = Some(output.language.clone());
            } else {
                transcript.language = output.language.clone();
            }
            if output.skipped {
                seek += segment_size;
                progress(seek.min(content_frames) as f64 / FRAMES_PER_SECOND);
                continue;
            }
            let decoded = &output.decoded;

            let previous_seek = seek;
            let (mut current, new_seek, single_timestamp_ending) = split_segments_by_timestamps(
                tokenizer,
                &decoded.generation.tokens,
                time_offset,
                segment_size,
                segment_duration,
                seek,
                false,
            );
            seek = new_seek;

            if options.word_timestamps {
                last_speech_timestamp =
                    self.add_word_timestamps(&mut current, output.alignment.clone(), last_speech_timestamp);
                if !single_timestamp_ending {
                    if let Some(last_word_end) = last_end(&current) {
                        if last_word_end > time_offset {
                            seek = (last_word_end * FRAMES_PER_SECOND).round_ties_even() as usize;
                        }
                    }
                }
                if let Some(end) = last_end(&current) {
                    last_speech_timestamp = end;
                }
            }

            for segment in current.into_iter().filter_map(|raw| finished_segment(tokenizer, raw, decoded)) {
                all_tokens.extend_from_slice(&segment.tokens);
                out.push(segment);
            }

            if !options.condition_on_previous_text || decoded.temperature > options.prompt_reset_on_temperature {
                prompt_reset_since = all_tokens.len();
            }
            // A window that could not move forward would loop forever; Whisper's timestamps always
            // move it, but a broken model must not hang the service.
            if seek <= previous_seek {
                seek = previous_seek + segment_size;
            }
            progress(seek.min(content_frames) as f64 / FRAMES_PER_SECOND);
        }
        Ok(out)
    }

    /// The segments and words of one window decoded whole (a streaming buffer): every segment,
    /// including the unfinished one after the last timestamp pair, on the timeline from `time_offset`.
    pub fn window_segments(&self, output: &WindowOutput, n_frames: usize, time_offset: f64) -> Vec<Segment> {
        if output.skipped {
            return Vec::new();
        }
        let tokenizer = self.engine.tokenizer();
        let decoded = &output.decoded;
        let (mut current, _, _) = split_segments_by_timestamps(
            tokenizer,
            &decoded.generation.tokens,
            time_offset,
            n_frames,
            n_frames as f64 / FRAMES_PER_SECOND,
            (time_offset * FRAMES_PER_SECOND).round() as usize,
            true,
        );
        self.add_word_timestamps(&mut current, output.alignment.clone(), time_offset);
        // The words of the forced prefix were said before; a word that reaches past it (the model
        // went on inside the prefix's last word) starts in committed speech and is dropped too.
        let mut prefix_left = output.prefix_len;
        for segment in &mut current {
            if prefix_left == 0 {
                break;
            }
            let n_covered = segment
                .words
                .iter()
                .take_while(|w| {
                    let covered = prefix_left > 0;
                    prefix_left = prefix_left.saturating_sub(w.tokens.len());
                    covered
                })
                .count();
            let mut n_tokens: usize = segment.words.drain(..n_covered).map(|w| w.tokens.len()).sum();
            segment.tokens.retain(|&t| {
                let drop = t < tokenizer.eot && n_tokens > 0;
                n_tokens -= usize::from(drop);
                !drop
            });
            if let Some(first) = segment.words.first() {
                segment.start = segment.start.max(first.start);
            }
        }
        current.into_iter().filter_map(|raw| finished_segment(tokenizer, raw, decoded)).collect()
    }

    /// Mel window of up to 30 s of 16 kHz samples: `(frames laid out [n_mels, 3000], content frames)`.
    pub fn mel_window(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let mel = self.mel.compute(samples, HOP_LENGTH);
        let n_frames = mel.n_frames.saturating_sub(1).min(N_FRAMES);
        let mut window = Vec::new();
        mel.window(0, n_frames, &mut window);
        (window, n_frames)
    }

    /// Runs a batch of windows through the model in batched calls: one encode, one generate per
    /// temperature (only the windows that need a fallback go on), one align. Every job must share
    /// options and language (the scheduler groups them with [`WindowJob::batches_with`]).
    pub fn run_windows(&self, jobs: &[WindowJob]) -> Result<Vec<WindowOutput>, EngineError> {
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        if jobs.iter().skip(1).any(|j| !first.batches_with(j)) {
            return Err(EngineError::InvalidInput("windows with different options in one batch".to_owned()));
        }
        let options = &first.options;
        let tokenizer = self.engine.tokenizer();
        let window_len = self.engine.config().n_mels * N_FRAMES;
        if jobs.iter().any(|j| j.mel.len() != window_len || j.n_frames > N_FRAMES) {
            return Err(EngineError::InvalidInput("a window is not one [n_mels, 3000] mel window".to_owned()));
        }
        let mut times = WindowTimes::default();
        let started = Instant::now();
        let mut mels: Vec<f32> = jobs.iter().flat_map(|j| j.mel.iter().copied()).collect();
        let encoded = match encoded_frames(options, jobs) {
            Some(frames) => self.engine.encode_head(&mut mels, jobs.len(), frames)?,
            None => self.engine.encode(&mut mels, jobs.len())?,
        };
        times.encode += started.elapsed();
        times.encoded_frames = encoded.frames;

        let mut language = first.language.clone().unwrap_or_else(|| "en".to_owned());
        let mut language_probability = 1.0;
        let sot_sequence = if !self.engine.config().multilingual {
            language = "en".to_owned();
            vec![tokenizer.sot]
        } else {
            if first.language.is_none() {
                let detected = self.engine.detect_language(&encoded)?;
                let (best, probability) =
                    detected.first().and_then(|d| d.first()).cloned().unwrap_or_else(|| ("en".to_owned(), 0.0));
                language = best;
                language_probability = f64::from(probability);
            }
            let language_token = tokenizer.id(&format!("<|{language}|>")).ok_or_else(|| {
                EngineError::InvalidInput(format!("the model does not know the language {language:?}"))
            })?;
            let transcribe = tokenizer
                .transcribe
                .ok_or_else(|| EngineError::Model("multilingual vocabulary lacks <|transcribe|>".to_owned()))?;
            vec![tokenizer.sot, language_token, transcribe]
        };

        let prompts: Vec<Vec<u32>> = jobs
            .iter()
            .map(|j| prompt_for(tokenizer, &j.previous_tokens, &sot_sequence, &j.prefix, j.prefix_end))
            .collect();
        let generate_started = Instant::now();
        let decoded = self.generate_batch_with_fallback(&encoded, jobs, &prompts, options)?;
        times.generate += generate_started.elapsed();

        let skipped: Vec<bool> = decoded
            .iter()
            .map(|d| {
                let Some(no_speech_threshold) = options.no_speech_threshold else {
                    return false;
                };
                f64::from(d.generation.no_speech_prob) > f64::from(no_speech_threshold)
                    && !options.log_prob_threshold.is_some_and(|t| d.avg_logprob > f64::from(t))
            })
            .collect();
        // The text tokens each window keeps (those of its segments), aligned in one batched call.
        let kept: Vec<Vec<u32>> = jobs
            .iter()
            .zip(&decoded)
            .zip(&skipped)
            .map(|((job, d), &skip)| {
                if skip || !options.word_timestamps {
                    return Vec::new();
                }
                let (segments, _, _) = split_segments_by_timestamps(
                    tokenizer,
                    &d.generation.tokens,
                    0.0,
                    job.n_frames,
                    0.0,
                    0,
                    job.keep_tail,
                );
                segments.iter().flat_map(|s| s.tokens.iter().copied().filter(|&t| t < tokenizer.eot)).collect()
            })
            .collect();
        let align_started = Instant::now();
        let mut alignments = vec![Vec::new(); jobs.len()];
        if kept.iter().any(|k| !k.is_empty()) {
            // Every batch item needs a sequence; windows without text get a placeholder whose result
            // is thrown away.
            let text_tokens: Vec<Vec<u32>> =
                kept.iter().map(|k| if k.is_empty() { vec![tokenizer.eot] } else { k.clone() }).collect();
            let num_frames: Vec<usize> = jobs.iter().map(|j| j.n_frames.max(1)).collect();
            let results = self.engine.align(&encoded, &sot_sequence, &text_tokens, &num_frames, 7)?;
            for (idx, result) in results.into_iter().enumerate() {
                if !kept[idx].is_empty() {
                    alignments[idx] = self.word_timings(&kept[idx], &result);
                }
            }
        }
        times.align += align_started.elapsed();

        Ok(decoded
            .into_iter()
            .zip(skipped)
            .zip(alignments)
            .zip(jobs)
            .map(|(((decoded, skipped), alignment), job)| WindowOutput {
                language: language.clone(),
                language_probability,
                decoded,
                skipped,
                alignment,
                prefix_len: job.prefix.len(),
                times: WindowTimes { batch: jobs.len(), ..times },
            })
            .collect())
    }

    /// The model's non-speech symbols plus the special tokens that must never be generated, as
    /// faster-whisper's `get_suppressed_tokens(tokenizer, [-1])`.
    fn suppress_tokens(&self) -> Vec<i32> {
        let tokenizer = self.engine.tokenizer();
        let mut ids: Vec<i32> = self.engine.config().suppress_ids.clone();
        let specials = [
            tokenizer.transcribe,
            tokenizer.translate,
            Some(tokenizer.sot),
            Some(tokenizer.sot_prev),
            tokenizer.sot_lm,
            tokenizer.no_speech,
        ];
        ids.extend(specials.into_iter().flatten().map(|id| id as i32));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Decodes every window of the batch, retrying with the next temperature the windows whose output
    /// is too repetitive or too improbable (faster-whisper's `generate_with_fallback`). The windows
    /// that fall back are encoded again as a smaller batch.
    fn generate_batch_with_fallback(
        &self,
        encoded: &Encoded,
        jobs: &[WindowJob],
        prompts: &[Vec<u32>],
        options: &TranscribeOptions,
    ) -> Result<Vec<Decoded>, EngineError> {
        let tokenizer = self.engine.tokenizer();
        let suppress_tokens = self.suppress_tokens();
        let max_initial_timestamp_index = (options.max_initial_timestamp / TIME_PRECISION).round() as usize;
        let temperatures = if options.temperatures.is_empty() { vec![0.0] } else { options.temperatures.clone() };
        let n_jobs = jobs.len();
        let mut done: Vec<Option<Decoded>> = (0..n_jobs).map(|_| None).collect();
        let mut all_results: Vec<Vec<Decoded>> = (0..n_jobs).map(|_| Vec::new()).collect();
        let mut below_cr_threshold: Vec<Vec<usize>> = vec![Vec::new(); n_jobs];
        let mut pending: Vec<usize> = (0..n_jobs).collect();
        let mut subset_encoded: Option<Encoded> = None;
        let mut encoded_jobs: Vec<usize> = (0..n_jobs).collect();
        let mut last_temperature = 0.0;
        for (temperature_idx, &temperature) in temperatures.iter().enumerate() {
            if pending.is_empty() {
                break;
            }
            last_temperature = temperature;
            if temperature_idx > 0 && pending != encoded_jobs {
                let mut mels: Vec<f32> = pending.iter().flat_map(|&i| jobs[i].mel.iter().copied()).collect();
                subset_encoded = Some(self.engine.encode(&mut mels, pending.len())?);
                encoded_jobs = pending.clone();
            }
            let batch_encoded = subset_encoded.as_ref().unwrap_or(encoded);
            let batch_prompts: Vec<Vec<u32>> = pending.iter().map(|&i| prompts[i].clone()).collect();
            let max_length = match options.max_tokens_per_second {
                Some(rate) => {
                    let longest_prompt = batch_prompts.iter().map(Vec::len).max().unwrap_or(0);
                    let longest_audio =
                        pending.iter().map(|&i| jobs[i].n_frames).max().unwrap_or(0) as f64 / FRAMES_PER_SECOND;
                    (longest_prompt + (longest_audio * rate).ceil() as usize + 8).min(MAX_LENGTH)
                }
                None => MAX_LENGTH,
            };
            let generate_options = GenerateOptions {
                beam_size: options.beam_size,
                patience: options.patience,
                length_penalty: options.length_penalty,
                repetition_penalty: 1.0,
                no_repeat_ngram_size: 0,
                max_length,
                temperature,
                num_hypotheses: if temperature > 0.0 { options.best_of } else { 1 },
                suppress_blank: true,
                suppress_tokens: suppress_tokens.clone(),
                max_initial_timestamp_index,
            };
            let generations = self.engine.generate(batch_encoded, &batch_prompts, &generate_options)?;
            if generations.len() != pending.len() {
                return Err(EngineError::Inference("the model did not return one result per window".to_owned()));
            }
            let mut still_pending = Vec::new();
            for (&job_idx, generation) in pending.iter().zip(generations) {
                let seq_len = generation.tokens.len() as f64;
                let cum_logprob = f64::from(generation.score) * seq_len.powf(f64::from(options.length_penalty));
                let avg_logprob = cum_logprob / (seq_len + 1.0);
                let text = tokenizer.decode(&generation.tokens);
                let compression_ratio = compression_ratio(text.trim());

                let mut needs_fallback = false;
                if let Some(threshold) = options.compression_ratio_threshold {
                    if compression_ratio > f64::from(threshold) {
                        needs_fallback = true;
                    } else {
                        below_cr_threshold[job_idx].push(all_results[job_idx].len());
                    }
                }
                let low_logprob = options.log_prob_threshold.is_some_and(|t| avg_logprob < f64::from(t));
                if low_logprob {
                    needs_fallback = true;
                }
                let silent = options.no_speech_threshold.is_some_and(|t| generation.no_speech_prob > t);
                if silent && low_logprob {
                    needs_fallback = false;
                }
                let decoded = Decoded { generation, avg_logprob, temperature, compression_ratio };
                if needs_fallback {
                    all_results[job_idx].push(decoded);
                    still_pending.push(job_idx);
                } else {
                    done[job_idx] = Some(decoded);
                }
            }
            pending = still_pending;
        }
        // Every temperature failed: keep the most probable result, preferring the non-repetitive ones,
        // and report the last temperature so the prompt is reset.
        for job_idx in pending {
            let results = &mut all_results[job_idx];
            if results.is_empty() {
                return Err(EngineError::Inference("no result for the window".to_owned()));
            }
            let candidates: Vec<usize> = if below_cr_threshold[job_idx].is_empty() {
                (0..results.len()).collect()
            } else {
                below_cr_threshold[job_idx].clone()
            };
            let best = candidates
                .into_iter()
                .max_by(|&a, &b| results[a].avg_logprob.total_cmp(&results[b].avg_logprob))
                .unwrap_or(0);
            let mut decoded = results.swap_remove(best);
            decoded.temperature = last_temperature;
            done[job_idx] = Some(decoded);
        }
        done.into_iter()
            .map(|d| d.ok_or_else(|| EngineError::Inference("no result for the window".to_owned())))
            .collect()
    }

    /// Attaches words with start/end times to the window's sub-segments (faster-whisper's
    /// `add_word_timestamps` for one window) and returns the new last speech timestamp.
    fn add_word_timestamps(
        &self,
        segments: &mut [RawSegment],
        mut alignment: Vec<WordTiming>,
        mut last_speech_timestamp: f64,
    ) -> f64 {
        if segments.is_empty() {
            return last_speech_timestamp;
        }
        let tokenizer = self.engine.tokenizer();
        let per_segment: Vec<Vec<u32>> =
            segments.iter().map(|s| s.tokens.iter().copied().filter(|&t| t < tokenizer.eot).collect()).collect();

        let mut durations: Vec<f64> = alignment.iter().map(|w| w.end - w.start).filter(|&d| d != 0.0).collect();
        let median_duration = median(&mut durations).min(0.7);
        let max_duration = median_duration * 2.0;
        if !durations.is_empty() {
            let sentence_end_marks = ".。!！?？";
            for i in 1..alignment.len() {
                if alignment[i].end - alignment[i].start > max_duration {
                    if sentence_end_marks.contains(alignment[i].word.as_str()) && !alignment[i].word.is_empty() {
                        alignment[i].end = alignment[i].start + max_duration;
                    } else if sentence_end_marks.contains(alignment[i - 1].word.as_str())
                        && !alignment[i - 1].word.is_empty()
                    {
                        alignment[i].start = alignment[i].end - max_duration;
                    }
                }
            }
        }
        merge_punctuations(&mut alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);

        let time_offset = segments[0].seek as f64 / FRAMES_PER_SECOND;
        let mut word_index = 0;
        for (segment, segment_tokens) in segments.iter_mut().zip(&per_segment) {
            let mut saved_tokens = 0;
            let mut words: Vec<Word> = Vec::new();
            while word_index < alignment.len() && saved_tokens < segment_tokens.len() {
                let timing = &alignment[word_index];
                if !timing.word.is_empty() {
                    words.push(Word {
                        tokens: timing.tokens.clone(),
                        text: timing.word.clone(),
                        start: round2(time_offset + timing.start),
                        end: round2(time_offset + timing.end),
                        probability: timing.probability,
                    });
                }
                saved_tokens += timing.tokens.len();
                word_index += 1;
            }
            if let Some(first) = words.first().cloned() {
                // A first word after a pause that is far too long is truncated.
                if first.end - last_speech_timestamp > median_duration * 4.0
                    && (first.end - first.start > max_duration
                        || (words.len() > 1 && words[1].end - first.start > max_duration * 2.0))
                {
                    if words.len() > 1 && words[1].end - words[1].start > max_duration {
                        let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                        words[0].end = boundary;
                        words[1].start = boundary;
                    }
                    words[0].start = (words[0].end - max_duration).max(0.0);
                }
                // Prefer the segment-level start when the first word is too long.
                if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                    words[0].start = (words[0].end - median_duration).min(segment.start).max(0.0);
                } else {
                    segment.start = words[0].start;
                }
                let last = words.len() - 1;
                if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
                    words[last].end = (words[last].start + median_duration).max(segment.end);
                } else {
                    segment.end = words[last].end;
                }
                last_speech_timestamp = segment.end;
            }
            segment.words = words;
        }
        last_speech_timestamp
    }

    /// Word timings from the DTW path of one window's text tokens (faster-whisper's `find_alignment`
    /// after the model call).
    fn word_timings(&self, text_tokens: &[u32], result: &crate::Alignment) -> Vec<WordTiming> {
        let tokenizer = self.engine.tokenizer();
        let mut with_eot = text_tokens.to_vec();
        with_eot.push(tokenizer.eot);
        let words = tokenizer.split_to_words(&with_eot);
        if words.len() <= 1 {
            return Vec::new();
        }
        // Times at which the DTW path moves to the next token.
        let mut jump_times = Vec::new();
        let mut previous_token: Option<i64> = None;
        for &(token_idx, frame_idx) in &result.path {
            if previous_token != Some(token_idx) {
                jump_times.push(frame_idx as f64 / TOKENS_PER_SECOND);
            }
            previous_token = Some(token_idx);
        }
        let mut boundaries = vec![0usize];
        for (_, tokens) in &words[..words.len() - 1] {
            boundaries.push(boundaries.last().copied().unwrap_or(0) + tokens.len());
        }
        let mut timings = Vec::with_capacity(words.len());
        for (word_idx, (word, tokens)) in words.into_iter().enumerate().take(boundaries.len() - 1) {
            let (from, to) = (boundaries[word_idx], boundaries[word_idx + 1]);
            let (Some(&start), Some(&end)) = (jump_times.get(from), jump_times.get(to)) else {
                break;
            };
            let probs = result.text_token_probs.get(from..to.min(result.text_token_probs.len())).unwrap_or(&[]);
            let probability = if probs.is_empty() {
                0.0
            } else {
                probs.iter().map(|&p| f64::from(p)).sum::<f64>() / probs.len() as f64
            };
            timings.push(WordTiming { word, tokens, start, end, probability });
        }
        timings
    }
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

fn prompt_for(
    tokenizer: &Tokenizer,
    previous_tokens: &[u32],
    sot_sequence: &[u32],
    prefix: &[u32],
    prefix_end: f64,
) -> Vec<u32> {
    let mut prompt = Vec::new();
    if !previous_tokens.is_empty() {
        prompt.push(tokenizer.sot_prev);
        let keep = MAX_LENGTH / 2 - 1;
        prompt.extend_from_slice(&previous_tokens[previous_tokens.len().saturating_sub(keep)..]);
    }
    prompt.extend_from_slice(sot_sequence);
    if !prefix.is_empty() {
        // The runtime returns the prefix as the start of the generated tokens. It is not cut: the
        // caller keeps it short (a cut one would come back as new words).
        prompt.push(tokenizer.timestamp_begin);
        prompt.extend_from_slice(prefix);
        let end = tokenizer.timestamp_begin + (prefix_end.clamp(0.0, 30.0) / TIME_PRECISION).round() as u32;
        prompt.extend_from_slice(&[end, end]);
    }
    prompt
}

/// Splits a window's tokens at consecutive timestamp pairs and works out where the next window starts
/// (faster-whisper's `_split_segments_by_timestamps`). Returns the sub-segments, the new seek and
/// whether the output ended on a single timestamp (no speech after it).
fn split_segments_by_timestamps(
    tokenizer: &Tokenizer,
    tokens: &[u32],
    time_offset: f64,
    segment_size: usize,
    segment_duration: f64,
    mut seek: usize,
    keep_tail: bool,
) -> (Vec<RawSegment>, usize, bool) {
    let ts_begin = tokenizer.timestamp_begin;
    let is_ts = |t: u32| t >= ts_begin;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1])).collect();
    let mut segments = Vec::new();
    if !consecutive.is_empty() {
        let mut slices = consecutive;
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last_slice = 0;
        for &current_slice in &slices {
            let sliced = &tokens[last_slice..current_slice];
            let (Some(&first), Some(&last)) = (sliced.first(), sliced.last()) else {
                continue;
            };
            let start = time_offset + f64::from(first.saturating_sub(ts_begin)) * TIME_PRECISION;
            let end = time_offset + f64::from(last.saturating_sub(ts_begin)) * TIME_PRECISION;
            segments.push(RawSegment { seek, start, end, tokens: sliced.to_vec(), words: Vec::new() });
            last_slice = current_slice;
        }
        let tail = &tokens[last_slice..];
        if keep_tail && !single_timestamp_ending && tail.iter().any(|&t| !is_ts(t)) {
            let start = match tail.first() {
                Some(&t) if is_ts(t) => time_offset + f64::from(t - ts_begin) * TIME_PRECISION,
                _ => segments.last().map_or(time_offset, |s| s.end),
            };
            let end = time_offset + segment_duration;
            segments.push(RawSegment { seek, start, end, tokens: tail.to_vec(), words: Vec::new() });
        }
        if single_timestamp_ending {
            seek += segment_size;
        } else {
            let last_timestamp_position = tokens[last_slice - 1].saturating_sub(ts_begin) as usize;
            seek += last_timestamp_position * INPUT_STRIDE;
        }
    } else {
        let mut duration = segment_duration;
        if let Some(&last) = tokens.iter().rev().find(|&&t| is_ts(t)) {
            if last != ts_begin {
                duration = f64::from(last - ts_begin) * TIME_PRECISION;
            }
        }
        segments.push(RawSegment {
            seek,
            start: time_offset,
            end: time_offset + duration,
            tokens: tokens.to_vec(),
            words: Vec::new(),
        });
        seek += segment_size;
    }
    (segments, seek, single_timestamp_ending)
}

/// A window's sub-segment as a [`Segment`] with its text and the window's decoding figures; `None`
/// for an empty or zero-length one.
fn finished_segment(tokenizer: &Tokenizer, raw: RawSegment, decoded: &Decoded) -> Option<Segment> {
    let text = tokenizer.decode(&raw.tokens);
    (raw.start != raw.end && !text.trim().is_empty()).then(|| Segment {
        start: raw.start,
        end: raw.end,
        text,
        tokens: raw.tokens,
        temperature: decoded.temperature,
        avg_logprob: decoded.avg_logprob,
        compression_ratio: decoded.compression_ratio,
        no_speech_prob: f64::from(decoded.generation.no_speech_prob),
        words: raw.words,
    })
}

/// The end of the last word, or of the last segment when there are no words.
fn last_end(segments: &[RawSegment]) -> Option<f64> {
    segments.iter().rev().flat_map(|s| s.words.iter().rev()).map(|w| w.end).next().or(segments.last().map(|s| s.end))
}

/// Moves leading punctuation onto the following word and trailing punctuation onto the previous
/// word, as Whisper does.
fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    if alignment.len() >= 2 {
        let mut i = alignment.len() as isize - 2;
        let mut j = alignment.len() - 1;
        while i >= 0 {
            let iu = i as usize;
            let previous = &alignment[iu];
            if previous.word.starts_with(' ') && is_in(previous.word.trim(), prepended) {
                let (word, tokens) = (alignment[iu].word.clone(), std::mem::take(&mut alignment[iu].tokens));
                alignment[j].word = word + &alignment[j].word;
                let mut merged = tokens;
                merged.append(&mut alignment[j].tokens);
                alignment[j].tokens = merged;
                alignment[iu].word.clear();
            } else {
                j = iu;
            }
            i -= 1;
        }
    }
    let mut i = 0;
    let mut j = 1;
    while j < alignment.len() {
        if !alignment[i].word.ends_with(' ') && is_in(&alignment[j].word, appended) {
            let word = std::mem::take(&mut alignment[j].word);
            let mut tokens = std::mem::take(&mut alignment[j].tokens);
            alignment[i].word.push_str(&word);
            alignment[i].tokens.append(&mut tokens);
        } else {
            i = j;
        }
        j += 1;
    }
}

/// Python's `s in chars` for a string of characters: substring containment (the empty string is in
/// every string).
fn is_in(s: &str, chars: &str) -> bool {
    chars.contains(s)
}

/// Keeps the words that overlap detected speech; segments left without words are dropped.
fn keep_speech(segments: Vec<Segment>, speech: &[SpeechSpan]) -> Vec<Segment> {
    let overlaps = |start: f64, end: f64| speech.iter().any(|s| start < s.end && end > s.start);
    segments
        .into_iter()
        .filter_map(|mut segment| {
            if segment.words.is_empty() {
                return overlaps(segment.start, segment.end).then_some(segment);
            }
            let n_before = segment.words.len();
            segment.words.retain(|w| overlaps(w.start, w.end.max(w.start + 0.01)));
            if segment.words.is_empty() {
                return None;
            }
            if segment.words.len() != n_before {
                segment.text = segment.words.iter().map(|w| w.text.as_str()).collect();
                segment.start = segment.words[0].start;
                segment.end = segment.words[segment.words.len() - 1].end;
            }
            Some(segment)
        })
        .collect()
}

/// zlib compression ratio of the text (repetitive text compresses well).
fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    if encoder.write_all(bytes).is_err() {
        return 0.0;
    }
    match encoder.finish() {
        Ok(compressed) if !compressed.is_empty() => bytes.len() as f64 / compressed.len() as f64,
        _ => 0.0,
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(word: &str, n_tokens: usize) -> WordTiming {
        WordTiming { word: word.to_owned(), tokens: vec![0; n_tokens], start: 0.0, end: 0.0, probability: 1.0 }
    }

    #[test]
    fn punctuation_merges_onto_neighbours() {
        let mut words = vec![timing(" \"", 1), timing("Hello", 1), timing(",", 1), timing(" world", 1), timing(".", 1)];
        merge_punctuations(&mut words, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let texts: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(texts, vec!["", " \"Hello,", "", " world.", ""]);
        assert_eq!(words[1].tokens.len(), 3);
    }

    /// A vocabulary with 4 text tokens, the specials the loop needs, and timestamp tokens from id 10 on
    /// (`<|0.00|>`, `<|0.02|>`, … `<|30.00|>`).
    fn toy_tokenizer() -> Tokenizer {
        let mut tokens: Vec<String> = ["Ġa", "Ġb", "Ġc", "Ġd"].iter().map(|s| (*s).to_owned()).collect();
        for special in ["<|endoftext|>", "<|startoftranscript|>", "<|startofprev|>", "<|notimestamps|>"] {
            tokens.push(special.to_owned());
        }
        tokens.resize(10, "<|unused|>".to_owned());
        tokens.extend((0..1501).map(|i| format!("<|{:.2}|>", f64::from(i) * 0.02)));
        Tokenizer::from_tokens(tokens).unwrap()
    }

    #[test]
    fn timestamp_pairs_split_segments_and_seek_to_the_last_one() {
        let tok = toy_tokenizer();
        let ts = |secs: f64| tok.timestamp_begin + (secs / 0.02).round() as u32;
        // <0.00> a b <1.00><1.00> c <2.50><2.50> d   (unfinished last segment)
        let tokens = vec![ts(0.0), 0, 1, ts(1.0), ts(1.0), 2, ts(2.5), ts(2.5), 3];
        let (segments, seek, single_ending) =
            split_segments_by_timestamps(&tok, &tokens, 10.0, 3000, 30.0, 1000, false);
        assert!(!single_ending);
        assert_eq!(segments.len(), 2);
        assert_eq!((segments[0].start, segments[0].end), (10.0, 11.0));
        assert_eq!((segments[1].start, segments[1].end), (11.0, 12.5));
        assert_eq!(segments[1].tokens, vec![ts(1.0), 2, ts(2.5)]);
        // Seek moves to the last complete timestamp: 2.5 s = 250 frames.
        assert_eq!(seek, 1250);
    }

    #[test]
    fn a_streaming_window_keeps_its_unfinished_tail() {
        let tok = toy_tokenizer();
        let ts = |t: f64| tok.timestamp_begin + (t / TIME_PRECISION).round() as u32;
        let tokens = [ts(0.0), 0, 1, ts(2.0), ts(2.5), 2, 3];
        let (segments, _, _) = split_segments_by_timestamps(&tok, &tokens, 10.0, 400, 4.0, 1000, false);
        assert_eq!(segments.len(), 1);
        let (segments, _, _) = split_segments_by_timestamps(&tok, &tokens, 10.0, 400, 4.0, 1000, true);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[1].tokens, vec![ts(2.5), 2, 3]);
        assert!((segments[1].start - 12.5).abs() < 1e-9 && (segments[1].end - 14.0).abs() < 1e-9);
    }

    #[test]
    fn single_timestamp_ending_consumes_the_window() {
        let tok = toy_tokenizer();
        let ts = |secs: f64| tok.timestamp_begin + (secs / 0.02).round() as u32;
        let tokens = vec![ts(0.0), 0, ts(1.0), ts(1.0), 1, ts(2.0)];
        let (segments, seek, single_ending) = split_segments_by_timestamps(&tok, &tokens, 0.0, 2000, 20.0, 0, false);
        assert!(single_ending);
        assert_eq!(segments.len(), 2);
        assert_eq!(seek, 2000);
        // No timestamp pairs at all: one segment up to the last timestamp, window consumed.
        let (segments, seek, _) =
            split_segments_by_timestamps(&tok, &[ts(0.0), 0, 1, ts(3.0)], 5.0, 3000, 30.0, 500, false);
        assert_eq!((segments.len(), segments[0].start, segments[0].end, seek), (1, 5.0, 8.0, 3500));
    }

    #[test]
    fn prompt_keeps_the_last_223_previous_tokens() {
        let tok = toy_tokenizer();
        let previous: Vec<u32> = (0..300).map(|i| i % 4).collect();
        let prompt = prompt_for(&tok, &previous, &[tok.sot], &[], 0.0);
        assert_eq!(prompt.len(), 1 + 223 + 1);
        assert_eq!(prompt[0], tok.sot_prev);
        assert_eq!(*prompt.last().unwrap(), tok.sot);
        assert_eq!(prompt_for(&tok, &[], &[tok.sot], &[], 0.0), vec![tok.sot]);
    }

    #[test]
    fn repetitive_text_compresses_well() {
        assert!(compression_ratio(&"the same words again ".repeat(20)) > 2.4);
        assert!(compression_ratio("A quick brown fox jumps over the lazy dog.") < 2.4);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn words_outside_speech_are_dropped() {
        let word =
            |t: &str, s: f64, e: f64| Word { text: t.to_owned(), start: s, end: e, probability: 0.9, tokens: vec![] };
        let segment = Segment {
            start: 0.0,
            end: 10.0,
            text: " hi there you".to_owned(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: -0.1,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            words: vec![word(" hi", 0.5, 0.9), word(" there", 1.0, 1.4), word(" you", 8.0, 8.3)],
        };
        let kept = keep_speech(vec![segment], &[SpeechSpan { start: 0.0, end: 2.0 }]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].text, " hi there");
        assert_eq!(kept[0].end, 1.4);
        assert!(keep_speech(kept, &[SpeechSpan { start: 5.0, end: 6.0 }]).is_empty());
    }
}
