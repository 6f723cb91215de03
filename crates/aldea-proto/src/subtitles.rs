//! Subtitle files (SubRip `.srt` and WebVTT `.vtt`) from timed cues: the one writer behind the stt
//! service's `aldea transcribe --format srt|vtt` and the gateway's OpenAI `response_format`.
//!
//! Invariant: times are written in milliseconds, rounded, never negative; a cue's text is trimmed.

/// One subtitle: a span of the recording and what was said in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cue<'a> {
    /// Seconds from the start of the recording.
    pub start: f64,
    pub end: f64,
    pub text: &'a str,
}

/// Longest cue, seconds.
pub const MAX_CUE_S: f64 = 15.0;
/// A pause this long between words starts a new cue.
pub const CUE_GAP_S: f64 = 1.0;

/// Words grouped into one cue by [`sentences`]: its span and its words joined, each after a space.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

impl Sentence {
    pub fn cue(&self) -> Cue<'_> {
        Cue { start: self.start, end: self.end, text: &self.text }
    }
}

/// Timed words (`start`, `end`, punctuated text) grouped into cues: a cue ends at a sentence end,
/// before a pause of [`CUE_GAP_S`] or more, or when it would pass [`MAX_CUE_S`]. What the
/// gateway's OpenAI segments and the dashboard's subtitle downloads are made of.
pub fn sentences<'a>(words: impl IntoIterator<Item = (f64, f64, &'a str)>) -> Vec<Sentence> {
    let mut out: Vec<Sentence> = Vec::new();
    let mut current: Option<Sentence> = None;
    for (start, end, text) in words {
        if let Some(open) = &current {
            if start - open.end >= CUE_GAP_S || end - open.start > MAX_CUE_S {
                out.extend(current.take());
            }
        }
        let cue = current.get_or_insert_with(|| Sentence { start, end, text: String::new() });
        cue.end = end;
        cue.text.push(' ');
        cue.text.push_str(text);
        if ends_sentence(text) {
            out.extend(current.take());
        }
    }
    out.extend(current);
    out
}

/// Whether a word ends a sentence: final punctuation that is not an abbreviation's period.
pub(crate) fn ends_sentence(word: &str) -> bool {
    const ABBREVIATIONS: &[&str] =
        &["mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e.", "mt.", "no."];
    let lower = word.to_lowercase();
    word.ends_with(['?', '!']) || (word.ends_with('.') && !ABBREVIATIONS.contains(&lower.as_str()))
}

/// `HH:MM:SS<decimal>mmm`.
fn timestamp(seconds: f64, decimal: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{decimal}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// A SubRip file: numbered cues, comma before the milliseconds.
pub fn srt<'a>(cues: impl IntoIterator<Item = Cue<'a>>) -> String {
    let mut out = String::new();
    for (i, cue) in cues.into_iter().enumerate() {
        let (start, end) = (timestamp(cue.start, ','), timestamp(cue.end, ','));
        out.push_str(&format!("{}\n{start} --> {end}\n{}\n\n", i + 1, cue.text.trim()));
    }
    out
}

/// A WebVTT file: the `WEBVTT` header, then cues with a dot before the milliseconds.
pub fn vtt<'a>(cues: impl IntoIterator<Item = Cue<'a>>) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for cue in cues {
        let (start, end) = (timestamp(cue.start, '.'), timestamp(cue.end, '.'));
        out.push_str(&format!("{start} --> {end}\n{}\n\n", cue.text.trim()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cues() -> Vec<Cue<'static>> {
        vec![Cue { start: 0.0, end: 3661.5, text: " Hello, world. " }, Cue { start: -1.0, end: 0.0004, text: "Hi." }]
    }

    #[test]
    fn sentences_end_at_sentence_ends_pauses_and_length() {
        let words = [
            (0.0, 0.2, "Mr."),
            (0.2, 0.4, "Hello"),
            (0.5, 0.9, "there."),
            (1.0, 1.3, "After"),
            (1.4, 1.5, "a"),
            (3.0, 3.4, "pause"),
            (3.5, 3.6, "it"),
            (3.7, 4.0, "goes"),
        ];
        let s = sentences(words);
        let texts: Vec<&str> = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, [" Mr. Hello there.", " After a", " pause it goes"]);
        assert_eq!((s[2].start, s[2].end), (3.0, 4.0));
        let long: Vec<(f64, f64, &str)> =
            (0..40).map(|i| (f64::from(i) * 0.5, f64::from(i) * 0.5 + 0.4, "w")).collect();
        let s = sentences(long);
        assert!(s.len() > 1 && s.iter().all(|s| s.end - s.start <= MAX_CUE_S));
        assert!(sentences([]).is_empty());
    }

    #[test]
    fn srt_numbers_cues_with_comma_milliseconds() {
        assert_eq!(
            srt(cues()),
            "1\n00:00:00,000 --> 01:01:01,500\nHello, world.\n\n2\n00:00:00,000 --> 00:00:00,000\nHi.\n\n"
        );
    }

    #[test]
    fn vtt_has_its_header_and_dot_milliseconds() {
        assert_eq!(
            vtt(cues()),
            "WEBVTT\n\n00:00:00.000 --> 01:01:01.500\nHello, world.\n\n00:00:00.000 --> 00:00:00.000\nHi.\n\n"
        );
        assert_eq!(vtt([]), "WEBVTT\n\n");
    }

    #[test]
    fn timestamps_round_to_the_millisecond() {
        assert_eq!(timestamp(3725.5, ','), "01:02:05,500");
        assert_eq!(timestamp(0.0004, '.'), "00:00:00.000");
        assert_eq!(timestamp(59.9996, '.'), "00:01:00.000");
    }
}
