//! The VAD guard (`TranscribeOptions::vad`): the words the model put where the VAD heard no speech
//! are dropped. No faster-whisper function does this: faster-whisper's `vad_filter` cuts the
//! silence out of the audio before decoding (`collect_chunks`) and maps the timestamps back; here
//! the whole audio is decoded, as faster-whisper does without `vad_filter`, and the guard runs on
//! the finished segments.
//!
//! Invariants: a word is kept when it overlaps a speech span (a word shorter than 10 ms counts as
//! 10 ms); a segment without words is kept when it overlaps speech; a segment that loses all its
//! words is dropped, one that loses some takes its text and bounds from the words left.

use crate::vad::SpeechSpan;

use super::Segment;

/// Keeps the words that overlap detected speech; segments left without words are dropped.
pub(super) fn keep_speech(segments: Vec<Segment>, speech: &[SpeechSpan]) -> Vec<Segment> {
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

#[cfg(test)]
mod tests {
    use super::super::Word;
    use super::*;

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
