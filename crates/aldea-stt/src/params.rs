//! Query parameters of `/v1/listen` (REST and WebSocket) as the contract defines them: booleans as
//! true/false/1/0, model aliases, the audio format rule, and the parameters accepted but not yet
//! implemented, which become `metadata.warnings[]` instead of invented output.

use aldea_audio::Encoding;
use aldea_proto::Warning;

use crate::error::ApiError;

/// Model names that existing Deepgram and OpenAI clients send; they mean the default model.
const MODEL_ALIASES: &[&str] = &[
    "nova-3",
    "nova-3-general",
    "nova-2",
    "nova-2-general",
    "nova",
    "enhanced",
    "base-general",
    "general",
    "whisper",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
];

/// Parameters of the contract that are accepted but not implemented yet.
const UNSUPPORTED: &[&str] = &[
    "diarize",
    "diarization",
    "keywords",
    "keyterm",
    "redact",
    "redact_mode",
    "callback",
    "callback_method",
    "multichannel",
    "search",
    "replace",
    "summarize",
    "topics",
    "intents",
    "sentiment",
    "filler_words",
    "profanity_filter",
    "numerals",
    "dictation",
    "measurements",
];

/// The audio format part of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioParams {
    /// A declared headerless encoding (authoritative); `None` detects containers.
    pub encoding: Option<Encoding>,
    /// A container named on a WebSocket (`encoding=opus`, `webm`, …): detection still decides.
    pub container_hint: Option<String>,
    pub sample_rate: u32,
    pub channels: u16,
}

/// Where a resumed stream starts: internal, sent by the gateway in the
/// [`aldea_proto::stream::RESUME_HEADER`] header, never read from the query.
pub use aldea_proto::stream::Resume;

#[derive(Debug, Clone, PartialEq)]
pub struct ListenParams {
    /// The model as the client named it (`None`: the default).
    pub model: Option<String>,
    /// `None` = detect.
    pub language: Option<String>,
    pub audio: AudioParams,
    pub interim_results: bool,
    pub endpointing_ms: Option<u32>,
    pub utterance_end_ms: Option<u32>,
    pub vad_events: bool,
    pub word_format_tuple: bool,
    /// `utterances=true`: `utt_split`'s seconds (default 0.8); uploads only.
    pub utterances: Option<f64>,
    /// `paragraphs=true`; uploads only.
    pub paragraphs: bool,
    pub tags: Vec<String>,
    pub warnings: Vec<Warning>,
    pub resume: Option<Resume>,
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::BadRequest(format!("{name} must be true, false, 1 or 0, not {value:?}"))),
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::BadRequest(format!("{name} must be a number, not {value:?}")))
}

impl ListenParams {
    /// Parses the query pairs. `served_model` is the model this replica runs; `multilingual` whether
    /// it knows languages other than English.
    pub fn parse(pairs: &[(String, String)], served_model: &str, multilingual: bool) -> Result<ListenParams, ApiError> {
        let mut params = ListenParams {
            model: None,
            language: Some("en".to_owned()),
            audio: AudioParams { encoding: None, container_hint: None, sample_rate: 16_000, channels: 1 },
            interim_results: true,
            endpointing_ms: Some(300),
            utterance_end_ms: None,
            vad_events: false,
            word_format_tuple: false,
            utterances: None,
            paragraphs: false,
            tags: Vec::new(),
            warnings: Vec::new(),
            resume: None,
        };
        // `utt_split` may come before or after `utterances`.
        let (mut utt_split, mut utterances_on) = (aldea_proto::structure::DEFAULT_UTT_SPLIT_S, false);
        for (name, value) in pairs {
            match name.as_str() {
                "model" => {
                    let known = value == served_model || MODEL_ALIASES.contains(&value.to_ascii_lowercase().as_str());
                    if !known {
                        return Err(ApiError::BadRequest(format!(
                            "model {value:?} is not served here (this replica runs {served_model:?}; Deepgram and OpenAI model names mean it too)"
                        )));
                    }
                    params.model = Some(value.clone());
                }
                "language" | "lang" => {
                    let language = value.to_ascii_lowercase();
                    if language == "auto" {
                        params.language = None;
                    } else {
                        let base = language.split(['-', '_']).next().unwrap_or("").to_owned();
                        if base.is_empty() || base.len() > 3 || !base.chars().all(|c| c.is_ascii_alphabetic()) {
                            return Err(ApiError::BadRequest(format!("language {value:?} is not a BCP-47 tag")));
                        }
                        if base != "en" && !multilingual {
                            return Err(ApiError::BadRequest(format!(
                                "language {value:?}: the model {served_model:?} is English-only"
                            )));
                        }
                        params.language = Some(base);
                    }
                }
                "detect_language" if parse_bool(name, value)? => params.language = None,
                "detect_language" => {}
                "encoding" | "format" | "codec" => {
                    let lower = value.to_ascii_lowercase();
                    match lower.as_str() {
                        "linear16" | "pcm" | "mulaw" | "alaw" => {
                            params.audio.encoding = Some(lower.parse().map_err(|e: aldea_audio::AudioError| {
                                ApiError::BadRequest(e.to_string())
                            })?);
                        }
                        "opus" | "ogg" | "ogg-opus" | "webm" | "flac" | "wav" | "mp3" | "aac" | "m4a" | "mp4" | "vorbis" => {
                            params.audio.container_hint = Some(lower);
                        }
                        _ => {
                            return Err(ApiError::BadRequest(format!(
                                "encoding {value:?} is not one of linear16, pcm, mulaw, alaw, opus, ogg, webm, flac, wav, mp3, aac, m4a"
                            )))
                        }
                    }
                }
                "sample_rate" => {
                    let rate: u32 = parse_number(name, value)?;
                    if !(1_000..=384_000).contains(&rate) {
                        return Err(ApiError::BadRequest(format!("sample_rate {rate} is out of range (1000–384000)")));
                    }
                    params.audio.sample_rate = rate;
                }
                "channels" => {
                    let channels: u16 = parse_number(name, value)?;
                    if !(1..=16).contains(&channels) {
                        return Err(ApiError::BadRequest(format!("channels {channels} is out of range (1–16)")));
                    }
                    params.audio.channels = channels;
                }
                "interim_results" => params.interim_results = parse_bool(name, value)?,
                "endpointing" => {
                    params.endpointing_ms = match value.to_ascii_lowercase().as_str() {
                        "false" => None,
                        "true" => Some(300),
                        _ => {
                            let ms: u32 = parse_number(name, value)?;
                            if ms == 0 {
                                None
                            } else {
                                Some(ms.clamp(10, 60_000))
                            }
                        }
                    }
                }
                "utterance_end_ms" => {
                    let ms: u32 = parse_number(name, value)?;
                    params.utterance_end_ms = Some(ms.clamp(1000, 60_000));
                }
                "vad_events" => params.vad_events = parse_bool(name, value)?,
                "punctuate" | "smart_format" => {
                    parse_bool(name, value)?;
                }
                "word_format" => params.word_format_tuple = value == "tuple",
                "utterances" => {
                    let on = parse_bool(name, value)?;
                    utterances_on = on;
                }
                "utt_split" => {
                    let seconds: f64 = parse_number(name, value)?;
                    if !seconds.is_finite() || !(0.0..=60.0).contains(&seconds) {
                        return Err(ApiError::BadRequest(format!("utt_split {value} is out of range (0–60 s)")));
                    }
                    utt_split = seconds;
                }
                "paragraphs" => params.paragraphs = parse_bool(name, value)?,
                "tag" => params.tags.push(value.clone()),
                // `false` asks for nothing; anything else is a feature we do not have yet.
                other
                    if UNSUPPORTED.contains(&other)
                        && !matches!(value.to_ascii_lowercase().as_str(), "false" | "0")
                        && !params.warnings.iter().any(|w| w.parameter == other) =>
                {
                    params.warnings.push(Warning {
                        parameter: other.to_owned(),
                        kind: "unsupported".to_owned(),
                        message: format!("{other} is not supported by this server yet; it was ignored"),
                    });
                }
                _ => {}
            }
        }
        params.utterances = utterances_on.then_some(utt_split);
        Ok(params)
    }

    /// A stream's parameters: what only uploads have (`utterances`, `paragraphs`) becomes a warning
    /// in the stream's Metadata (a stream's utterances end with `speech_final` and `UtteranceEnd`).
    pub fn for_stream(mut self) -> ListenParams {
        for (asked, parameter) in [(self.utterances.is_some(), "utterances"), (self.paragraphs, "paragraphs")] {
            if asked {
                self.warnings.push(Warning {
                    parameter: parameter.to_owned(),
                    kind: "unsupported".to_owned(),
                    message: format!(
                        "{parameter} is for pre-recorded audio; a stream's utterances end with speech_final and UtteranceEnd"
                    ),
                });
            }
        }
        (self.utterances, self.paragraphs) = (None, false);
        self
    }

    /// The resume handshake of the gateway's [`aldea_proto::stream::RESUME_HEADER`] (absent: a
    /// new stream). Query parameters never resume a stream, whatever their spelling.
    pub fn with_resume_header(mut self, header: Option<&str>) -> Result<ListenParams, ApiError> {
        self.resume = header
            .map(|value| Resume::parse_header(value).map_err(|e| ApiError::BadRequest(format!("resume header: {e}"))))
            .transpose()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> Result<ListenParams, ApiError> {
        let pairs: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ListenParams::parse(&pairs, "tiny.en", false)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let params = parse(&[]).unwrap();
        assert!(params.interim_results);
        assert_eq!(params.endpointing_ms, Some(300));
        assert_eq!(params.language.as_deref(), Some("en"));
        assert_eq!(params.audio.sample_rate, 16_000);
        assert!(params.warnings.is_empty());
    }

    #[test]
    fn aliases_booleans_and_errors() {
        assert!(parse(&[("model", "nova-3"), ("interim_results", "0"), ("endpointing", "false")]).is_ok());
        assert!(matches!(parse(&[("model", "nova-9000")]), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse(&[("vad_events", "yes")]), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse(&[("language", "fr")]), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse(&[("encoding", "speex")]), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse(&[("sample_rate", "abc")]), Err(ApiError::BadRequest(_))));
        let params = parse(&[("endpointing", "500"), ("encoding", "mulaw"), ("sample_rate", "8000")]).unwrap();
        assert_eq!(params.endpointing_ms, Some(500));
        assert_eq!(params.audio.encoding, Some(Encoding::Mulaw));
    }

    #[test]
    fn unimplemented_parameters_become_warnings_once() {
        let params =
            parse(&[("diarize", "true"), ("redact", "pii"), ("redact", "numbers"), ("paragraphs", "false")]).unwrap();
        let names: Vec<&str> = params.warnings.iter().map(|w| w.parameter.as_str()).collect();
        assert_eq!(names, vec!["diarize", "redact"]);
        assert!(params.warnings.iter().all(|w| w.kind == "unsupported"));
    }

    #[test]
    fn utterances_and_paragraphs_are_asked_for_with_utt_split_in_any_order() {
        let params = parse(&[]).unwrap();
        assert_eq!((params.utterances, params.paragraphs), (None, false));
        let params = parse(&[("utt_split", "1.5"), ("utterances", "true"), ("paragraphs", "1")]).unwrap();
        assert_eq!((params.utterances, params.paragraphs), (Some(1.5), true));
        assert!(params.warnings.is_empty(), "{:?}", params.warnings);
        assert_eq!(parse(&[("utterances", "true")]).unwrap().utterances, Some(0.8));
        assert_eq!(parse(&[("utt_split", "2")]).unwrap().utterances, None, "utt_split alone asks for nothing");
        for bad in [("utt_split", "-1"), ("utt_split", "soon"), ("utt_split", "NaN"), ("utterances", "yes")] {
            assert!(matches!(parse(&[bad]), Err(ApiError::BadRequest(_))), "{bad:?}");
        }
        // On a stream they are warnings, not output.
        let stream = parse(&[("utterances", "true"), ("paragraphs", "true")]).unwrap().for_stream();
        assert_eq!((stream.utterances, stream.paragraphs), (None, false));
        let names: Vec<&str> = stream.warnings.iter().map(|w| w.parameter.as_str()).collect();
        assert_eq!(names, ["utterances", "paragraphs"]);
    }

    #[test]
    fn the_query_never_resumes_a_stream_only_the_gateway_header_does() {
        for query in [
            vec![("resume_start", "12.5"), ("resume_prompt_tokens", "1,2,3")],
            vec![("resume_start", "10"), ("resume_committed_until", "12.5"), ("resume_utterance_open", "true")],
        ] {
            assert_eq!(parse(&query).unwrap().resume, None, "{query:?}");
        }
        let resumed = parse(&[]).unwrap().with_resume_header(Some("start=12.5&prompt_tokens=1,2,3")).unwrap();
        assert_eq!(resumed.resume.map(|r| (r.start, r.prompt_tokens)), Some((12.5, vec![1, 2, 3])));
        let bad = parse(&[]).unwrap().with_resume_header(Some("start=10&committed_until=9"));
        assert!(matches!(bad, Err(ApiError::BadRequest(_))));
        assert_eq!(parse(&[]).unwrap().with_resume_header(None).unwrap().resume, None);
    }
}
