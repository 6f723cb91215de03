//! A window's tokens cut into segments: faster-whisper's
//! `WhisperModel._split_segments_by_timestamps`, and the filter of `generate_segments` that drops a
//! segment that is empty or of zero length (`finished_segment`).
//!
//! Invariants: segments are cut at consecutive timestamp pairs. Without `keep_tail` (the long-form
//! loop), the text after the last pair is left to the next window: `seek` moves to the last pair,
//! or past the whole window when the output ended on a single timestamp. With `keep_tail` (a
//! streaming window) that text is one more segment, up to the end of the window. An output without
//! a timestamp pair is one segment, up to its last timestamp (the window's end without one), and
//! the window is consumed whole.

use crate::Tokenizer;

use super::{Decoded, RawSegment, Segment, INPUT_STRIDE, TIME_PRECISION};

/// Splits a window's tokens at consecutive timestamp pairs and works out where the next window starts
/// (faster-whisper's `_split_segments_by_timestamps`). Returns the sub-segments, the new seek and
/// whether the output ended on a single timestamp (no speech after it).
pub(super) fn split_segments_by_timestamps(
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
pub(super) fn finished_segment(tokenizer: &Tokenizer, raw: RawSegment, decoded: &Decoded) -> Option<Segment> {
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

#[cfg(test)]
mod tests {
    use super::super::toy_tokenizer;
    use super::*;

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
}
