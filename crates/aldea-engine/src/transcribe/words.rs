//! Word timestamps from the cross-attention alignment: faster-whisper's `find_alignment` after the
//! model call (`word_timings`: the DTW path's jumps give each word's start and end, its probability
//! is the mean of its tokens'), `add_word_timestamps` for one window, and `merge_punctuations`.
//!
//! Invariants: word durations are judged against their median (at most 0.7 s): a word longer than
//! twice that is shortened when it is, or follows, a sentence-end mark, and a segment's first word
//! that is too long after a pause is truncated. Punctuation is merged onto its neighbour word as
//! Whisper does; the entries it empties are not words. Words are placed on the timeline from the
//! window's first segment (its `seek`) and rounded to 0.01 s. A segment with words takes its bounds
//! from its first and last word, unless that word reaches more than 0.5 s past the segment's own
//! bound (then the word is shortened instead). The returned last speech timestamp is the end of the
//! last segment with words.

use super::{RawSegment, Transcriber, Word, WordTiming, FRAMES_PER_SECOND, INPUT_STRIDE};

/// Encoder frames per second (the alignment's unit).
const TOKENS_PER_SECOND: f64 = FRAMES_PER_SECOND / INPUT_STRIDE as f64;
const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";

impl Transcriber {
    /// Attaches words with start/end times to the window's sub-segments (faster-whisper's
    /// `add_word_timestamps` for one window) and returns the new last speech timestamp.
    pub(super) fn add_word_timestamps(
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
    pub(super) fn word_timings(&self, text_tokens: &[u32], result: &crate::Alignment) -> Vec<WordTiming> {
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

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
