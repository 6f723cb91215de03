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
#[derive(Debug, Clone)]
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

/// What one window's decoding gave, after fallback.
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
        let segments = self.generate_segments(&mel, options, &mut transcript, &mut times, progress)?;
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
        progress: &mut dyn FnMut(f64),
    ) -> Result<Vec<Segment>, EngineError> {
        let tokenizer = self.engine.tokenizer();
        let content_frames = mel.n_frames.saturating_sub(1);
        let mut sot_sequence = vec![tokenizer.sot];
        let suppress_tokens = self.suppress_tokens();
        let mut seek = 0usize;
        let mut all_tokens: Vec<u32> = options.initial_prompt.clone();
        let mut prompt_reset_since = 0usize;
        let mut last_speech_timestamp = 0.0f64;
        let mut window = Vec::new();
        let mut out = Vec::new();
        let mut language_known = false;

        while seek < content_frames {
            let time_offset = seek as f64 / FRAMES_PER_SECOND;
            let segment_size = N_FRAMES.min(content_frames - seek);
            let segment_duration = segment_size as f64 / FRAMES_PER_SECOND;
            mel.window(seek, segment_size, &mut window);
            let encode_started = Instant::now();
            let encoded = self.engine.encode(&mut window, 1)?;
            times.encode += encode_started.elapsed();
            times.n_windows += 1;

            if !language_known {
                sot_sequence = self.sot_sequence(&encoded, options, transcript)?;
                language_known = true;
            }

            let previous_tokens = &all_tokens[prompt_reset_since.min(all_tokens.len())..];
            let prompt = prompt_for(tokenizer, previous_tokens, &sot_sequence);
            let generate_started = Instant::now();
            let decoded = self.generate_with_fallback(&encoded, &prompt, options, &suppress_tokens)?;
            times.generate += generate_started.elapsed();
            if decoded.temperature > 0.0 {
                times.n_fallbacks += 1;
            }

            if let Some(no_speech_threshold) = options.no_speech_threshold {
                let mut should_skip = f64::from(decoded.generation.no_speech_prob) > f64::from(no_speech_threshold);
                if options.log_prob_threshold.is_some_and(|t| decoded.avg_logprob > f64::from(t)) {
                    should_skip = false;
                }
                if should_skip {
                    seek += segment_size;
                    progress(seek.min(content_frames) as f64 / FRAMES_PER_SECOND);
                    continue;
                }
            }

            let previous_seek = seek;
            let (mut current, new_seek, single_timestamp_ending) = split_segments_by_timestamps(
                tokenizer,
                &decoded.generation.tokens,
                time_offset,
                segment_size,
                segment_duration,
                seek,
            );
            seek = new_seek;

            if options.word_timestamps {
                let align_started = Instant::now();
                last_speech_timestamp = self.add_word_timestamps(
                    &mut current,
                    &encoded,
                    &sot_sequence,
                    segment_size,
                    last_speech_timestamp,
                )?;
                times.align += align_started.elapsed();
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

            for raw in current {
                let text = tokenizer.decode(&raw.tokens);
                if raw.start == raw.end || text.trim().is_empty() {
                    continue;
                }
                all_tokens.extend_from_slice(&raw.tokens);
                out.push(Segment {
                    start: raw.start,
                    end: raw.end,
                    text,
                    tokens: raw.tokens,
                    temperature: decoded.temperature,
                    avg_logprob: decoded.avg_logprob,
                    compression_ratio: decoded.compression_ratio,
                    no_speech_prob: f64::from(decoded.generation.no_speech_prob),
                    words: raw.words,
                });
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

    /// `[sot]` for English-only models; `[sot, <|lang|>, <|transcribe|>]` for multilingual ones, with
    /// the language detected on the first window when none was given.
    fn sot_sequence(
        &self,
        encoded: &Encoded,
        options: &TranscribeOptions,
        transcript: &mut Transcript,
    ) -> Result<Vec<u32>, EngineError> {
        let tokenizer = self.engine.tokenizer();
        if !self.engine.config().multilingual {
            transcript.language = "en".to_owned();
            return Ok(vec![tokenizer.sot]);
        }
        let language = match &options.language {
            Some(language) => language.clone(),
            None => {
                let detected = self.engine.detect_language(encoded)?;
                let (language, probability) =
                    detected.first().and_then(|d| d.first()).cloned().unwrap_or_else(|| ("en".to_owned(), 0.0));
                transcript.language_probability = f64::from(probability);
                language
            }
        };
        let language_token = tokenizer
            .id(&format!("<|{language}|>"))
            .ok_or_else(|| EngineError::InvalidInput(format!("the model does not know the language {language:?}")))?;
        transcript.language = language;
        let transcribe = tokenizer
            .transcribe
            .ok_or_else(|| EngineError::Model("multilingual vocabulary lacks <|transcribe|>".to_owned()))?;
        Ok(vec![tokenizer.sot, language_token, transcribe])
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

    fn generate_with_fallback(
        &self,
        encoded: &Encoded,
        prompt: &[u32],
        options: &TranscribeOptions,
        suppress_tokens: &[i32],
    ) -> Result<Decoded, EngineError> {
        let tokenizer = self.engine.tokenizer();
        let max_initial_timestamp_index = (options.max_initial_timestamp / TIME_PRECISION).round() as usize;
        let mut all_results: Vec<Decoded> = Vec::new();
        let mut below_cr_threshold: Vec<usize> = Vec::new();
        let temperatures = if options.temperatures.is_empty() { vec![0.0] } else { options.temperatures.clone() };
        let mut last_temperature = 0.0;
        for &temperature in &temperatures {
            last_temperature = temperature;
            let generate_options = GenerateOptions {
                beam_size: options.beam_size,
                patience: options.patience,
                length_penalty: options.length_penalty,
                repetition_penalty: 1.0,
                no_repeat_ngram_size: 0,
                max_length: MAX_LENGTH,
                temperature,
                num_hypotheses: if temperature > 0.0 { options.best_of } else { 1 },
                suppress_blank: true,
                suppress_tokens: suppress_tokens.to_vec(),
                max_initial_timestamp_index,
            };
            let generation = self
                .engine
                .generate(encoded, &[prompt.to_vec()], &generate_options)?
                .pop()
                .ok_or_else(|| EngineError::Inference("no result for the window".to_owned()))?;
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
                    below_cr_threshold.push(all_results.len());
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
            if !needs_fallback {
                return Ok(decoded);
            }
            all_results.push(decoded);
        }
        // Every temperature failed: keep the most probable result, preferring the non-repetitive ones,
        // and report the last temperature so the prompt is reset.
        let candidates: Vec<usize> =
            if below_cr_threshold.is_empty() { (0..all_results.len()).collect() } else { below_cr_threshold };
        let best = candidates
            .into_iter()
            .max_by(|&a, &b| all_results[a].avg_logprob.total_cmp(&all_results[b].avg_logprob))
            .unwrap_or(0);
        let mut decoded = all_results.swap_remove(best);
        decoded.temperature = last_temperature;
        Ok(decoded)
    }

    /// Attaches words with start/end times to the window's sub-segments (faster-whisper's
    /// `add_word_timestamps` for one window) and returns the new last speech timestamp.
    fn add_word_timestamps(
        &self,
        segments: &mut [RawSegment],
        encoded: &Encoded,
        sot_sequence: &[u32],
        num_frames: usize,
        mut last_speech_timestamp: f64,
    ) -> Result<f64, EngineError> {
        if segments.is_empty() {
            return Ok(last_speech_timestamp);
        }
        let tokenizer = self.engine.tokenizer();
        let per_segment: Vec<Vec<u32>> =
            segments.iter().map(|s| s.tokens.iter().copied().filter(|&t| t < tokenizer.eot).collect()).collect();
        let text_tokens: Vec<u32> = per_segment.iter().flatten().copied().collect();
        let mut alignment = self.find_alignment(&text_tokens, encoded, sot_sequence, num_frames)?;

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
        Ok(last_speech_timestamp)
    }

    fn find_alignment(
        &self,
        text_tokens: &[u32],
        encoded: &Encoded,
        sot_sequence: &[u32],
        num_frames: usize,
    ) -> Result<Vec<WordTiming>, EngineError> {
        if text_tokens.is_empty() {
            return Ok(Vec::new());
        }
        let tokenizer = self.engine.tokenizer();
        let result = self
            .engine
            .align(encoded, sot_sequence, &[text_tokens.to_vec()], &[num_frames], 7)?
            .pop()
            .ok_or_else(|| EngineError::Inference("no alignment for the window".to_owned()))?;
        let mut with_eot = text_tokens.to_vec();
        with_eot.push(tokenizer.eot);
        let words = tokenizer.split_to_words(&with_eot);
        if words.len() <= 1 {
            return Ok(Vec::new());
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
        Ok(timings)
    }
}

/// A word of the alignment before it is placed on the audio timeline.
#[derive(Debug, Clone)]
struct WordTiming {
    word: String,
    tokens: Vec<u32>,
    start: f64,
    end: f64,
    probability: f64,
}

fn prompt_for(tokenizer: &Tokenizer, previous_tokens: &[u32], sot_sequence: &[u32]) -> Vec<u32> {
    let mut prompt = Vec::new();
    if !previous_tokens.is_empty() {
        prompt.push(tokenizer.sot_prev);
        let keep = MAX_LENGTH / 2 - 1;
        prompt.extend_from_slice(&previous_tokens[previous_tokens.len().saturating_sub(keep)..]);
    }
    prompt.extend_from_slice(sot_sequence);
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
        let (segments, seek, single_ending) = split_segments_by_timestamps(&tok, &tokens, 10.0, 3000, 30.0, 1000);
        assert!(!single_ending);
        assert_eq!(segments.len(), 2);
        assert_eq!((segments[0].start, segments[0].end), (10.0, 11.0));
        assert_eq!((segments[1].start, segments[1].end), (11.0, 12.5));
        assert_eq!(segments[1].tokens, vec![ts(1.0), 2, ts(2.5)]);
        // Seek moves to the last complete timestamp: 2.5 s = 250 frames.
        assert_eq!(seek, 1250);
    }

    #[test]
    fn single_timestamp_ending_consumes_the_window() {
        let tok = toy_tokenizer();
        let ts = |secs: f64| tok.timestamp_begin + (secs / 0.02).round() as u32;
        let tokens = vec![ts(0.0), 0, ts(1.0), ts(1.0), 1, ts(2.0)];
        let (segments, seek, single_ending) = split_segments_by_timestamps(&tok, &tokens, 0.0, 2000, 20.0, 0);
        assert!(single_ending);
        assert_eq!(segments.len(), 2);
        assert_eq!(seek, 2000);
        // No timestamp pairs at all: one segment up to the last timestamp, window consumed.
        let (segments, seek, _) = split_segments_by_timestamps(&tok, &[ts(0.0), 0, 1, ts(3.0)], 5.0, 3000, 30.0, 500);
        assert_eq!((segments.len(), segments[0].start, segments[0].end, seek), (1, 5.0, 8.0, 3500));
    }

    #[test]
    fn prompt_keeps_the_last_223_previous_tokens() {
        let tok = toy_tokenizer();
        let previous: Vec<u32> = (0..300).map(|i| i % 4).collect();
        let prompt = prompt_for(&tok, &previous, &[tok.sot]);
        assert_eq!(prompt.len(), 1 + 223 + 1);
        assert_eq!(prompt[0], tok.sot_prev);
        assert_eq!(*prompt.last().unwrap(), tok.sot);
        assert_eq!(prompt_for(&tok, &[], &[tok.sot]), vec![tok.sot]);
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
        let word = |t: &str, s: f64, e: f64| Word { text: t.to_owned(), start: s, end: e, probability: 0.9 };
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
