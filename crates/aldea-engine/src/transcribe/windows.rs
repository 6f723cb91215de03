//! Batched model work: [`WindowJob`] → [`Transcriber::run_windows`] → [`WindowOutput`]. The part of
//! each iteration of faster-whisper's `WhisperModel.generate_segments` that calls the model, done
//! for a batch of windows at once: `encode`, `detect_language` (multilingual models, when no
//! language is given), `get_prompt` (`prompt_for`), `generate_with_fallback` (`fallback`), the
//! no-speech check and the model call of `find_alignment` (`words` turns its path into words).
//!
//! Invariants: only windows that [`WindowJob::batches_with`] each other share a batch (same
//! options, a known, equal language, prompts of one length, same `keep_tail`); one output per job,
//! in job order. The prompt carries at most the last 223 previous tokens (`MAX_LENGTH / 2 - 1`). A
//! window is skipped when its no-speech probability is above `no_speech_threshold`, unless its
//! average log-probability is above `log_prob_threshold`. With word timestamps, the alignment
//! covers exactly the text tokens of the segments the window keeps (split as its `keep_tail` says).

use std::sync::Arc;
use std::time::Instant;

use crate::mel::N_FRAMES;
use crate::{EngineError, Tokenizer};

use super::split::split_segments_by_timestamps;
use super::{
    TranscribeOptions, Transcriber, WindowJob, WindowOutput, WindowTimes, FRAMES_PER_SECOND, MAX_LENGTH, TIME_PRECISION,
};

/// Frames of a batch's windows the encoder hears when `encoder_padding` asks for less than the
/// whole window: the longest audio plus the padding, even (the encoder halves the frames).
fn encoded_frames(options: &TranscribeOptions, jobs: &[WindowJob]) -> Option<usize> {
    let padding = options.encoder_padding?;
    let audio = jobs.iter().map(|j| j.n_frames).max()?;
    let frames = (audio + (padding.max(0.0) * FRAMES_PER_SECOND).ceil() as usize).next_multiple_of(2);
    (frames < N_FRAMES).then_some(frames)
}

/// Previous-text lengths (tokens) that [`WindowJob::bucket_context`] trims to.
const CONTEXT_BUCKETS: [usize; 7] = [4, 8, 16, 32, 64, 128, MAX_LENGTH / 2 - 1];

impl WindowJob {
    /// Trims the previous text to the longest bucket length it reaches (its most recent tokens; none
    /// under 4), so that windows whose contexts differ by a little can share a batch: the runtime
    /// needs one prompt length per batch. A window's prompt depends only on itself, never on the
    /// windows it is batched with. Used where batches are large (a GPU); at least half of the
    /// context the prompt would carry is kept.
    pub fn bucket_context(&mut self) {
        let len = self.previous_tokens.len().min(MAX_LENGTH / 2 - 1);
        let keep = CONTEXT_BUCKETS.iter().copied().filter(|&b| b <= len).max().unwrap_or(0);
        let drop = self.previous_tokens.len() - keep;
        self.previous_tokens.drain(..drop);
    }

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

impl Transcriber {
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

#[cfg(test)]
mod tests {
    use super::super::toy_tokenizer;
    use super::*;

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

    fn window(previous: usize) -> WindowJob {
        WindowJob {
            mel: Vec::new(),
            n_frames: 0,
            previous_tokens: (0..previous as u32).collect(),
            language: Some("en".to_owned()),
            options: Arc::new(TranscribeOptions::default()),
            keep_tail: true,
            prefix: Vec::new(),
            prefix_end: 0.0,
        }
    }

    #[test]
    fn context_buckets_keep_the_most_recent_half_or_more() {
        for (len, kept) in [
            (0, 0),
            (3, 0),
            (4, 4),
            (7, 4),
            (8, 8),
            (40, 32),
            (127, 64),
            (128, 128),
            (222, 128),
            (223, 223),
            (400, 223),
        ] {
            let mut job = window(len);
            job.bucket_context();
            assert_eq!(job.previous_tokens.len(), kept, "{len} tokens");
            // The most recent tokens stay, in order.
            let expected: Vec<u32> = (len.saturating_sub(kept) as u32..len as u32).collect();
            assert_eq!(job.previous_tokens, expected, "{len} tokens");
            if len >= 4 {
                assert!(2 * kept > len.min(223), "{len} tokens keep {kept}");
            }
        }
        // Windows of one bucket batch together; a window's prompt does not depend on its batch.
        let (mut a, mut b) = (window(40), window(50));
        assert!(!a.batches_with(&b));
        a.bucket_context();
        b.bucket_context();
        assert!(a.batches_with(&b));
    }
}
