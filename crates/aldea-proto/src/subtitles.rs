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
