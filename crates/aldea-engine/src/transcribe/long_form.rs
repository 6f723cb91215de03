//! The long-form loop: faster-whisper's `WhisperModel.generate_segments`, with the model work of
//! each window handed to a runner (`windows`), and [`Transcriber::window_segments`], the same steps
//! for one streaming window decoded whole.
//!
//! Invariants: the loop walks the mel frames with `seek`, one window of at most 30 s at a time, and
//! `seek` only moves forward (a window that would not move it is passed over whole, so a broken
//! model cannot hang the service). The prompt carries the text tokens since the last reset, reset
//! when `condition_on_previous_text` is off or a window needed a temperature above
//! `prompt_reset_on_temperature`. A skipped window (no speech) adds nothing. With word timestamps,
//! `seek` moves to the end of the last word when that lies after the window's start, unless the
//! window ended on a single timestamp. The language detected on the first window holds for the
//! rest. A streaming window returns none of the words of its forced prefix (already committed).

use std::sync::Arc;

use crate::mel::N_FRAMES;
use crate::EngineError;

use super::split::{finished_segment, split_segments_by_timestamps};
use super::{
    RawSegment, Segment, StageTimes, TranscribeOptions, Transcriber, Transcript, WindowJob, WindowOutput,
    FRAMES_PER_SECOND,
};

impl Transcriber {
    pub(super) fn generate_segments(
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
}

/// The end of the last word, or of the last segment when there are no words.
fn last_end(segments: &[RawSegment]) -> Option<f64> {
    segments.iter().rev().flat_map(|s| s.words.iter().rev()).map(|w| w.end).next().or(segments.last().map(|s| s.end))
}
