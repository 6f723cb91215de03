//! Temperature fallback for a batch of windows: faster-whisper's
//! `WhisperModel.generate_with_fallback`, with `get_suppressed_tokens(tokenizer, [-1])`
//! (`suppress_tokens`) and `get_compression_ratio` (`compression_ratio`).
//!
//! Invariants: the average log-probability is faster-whisper's, from the runtime's
//! length-normalized score: `score * len^length_penalty / (len + 1)`. A window falls back when its
//! compression ratio is above `compression_ratio_threshold` or its average log-probability is below
//! `log_prob_threshold`, but never when its no-speech probability is above `no_speech_threshold`
//! while its log-probability is low (silence does not retry). Only the windows that fall back go on
//! to the next temperature (encoded again as a smaller batch when fewer go on). When every
//! temperature fails, the result with the best average log-probability among those below the
//! compression threshold (among all when none is) is kept, and reported at the last temperature.

use std::io::Write;

use crate::{Encoded, EngineError, GenerateOptions};

use super::{Decoded, TranscribeOptions, Transcriber, WindowJob, FRAMES_PER_SECOND, MAX_LENGTH, TIME_PRECISION};

impl Transcriber {
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
    pub(super) fn generate_batch_with_fallback(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitive_text_compresses_well() {
        assert!(compression_ratio(&"the same words again ".repeat(20)) > 2.4);
        assert!(compression_ratio("A quick brown fox jumps over the lazy dog.") < 2.4);
    }
}
