//! WebSocket messages of `/v1/listen` streaming: what the server sends, what the client sends, and
//! the internal checkpoint messages between stt and the gateway (never forwarded to clients).

use serde::{Deserialize, Serialize};

use crate::{ModelInfo, Warning, Word};

/// `Metadata` at open (duration 0) and at close (total duration).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMetadata {
    #[serde(rename = "type")]
    pub kind: String,
    pub request_id: String,
    pub created: String,
    pub duration: f64,
    pub channels: u32,
    pub model_info: ModelInfo,
    pub transaction_key: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// An interim or final result.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamResults {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel_index: [u32; 2],
    pub start: f64,
    pub duration: f64,
    pub is_final: bool,
    pub speech_final: bool,
    pub from_finalize: bool,
    pub channel: StreamChannel,
    pub metadata: ResultsMetadata,
    /// Highest no-speech probability of the decoded windows behind these words (our own field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_speech_prob: Option<f64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamChannel {
    pub alternatives: Vec<StreamAlternative>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamAlternative {
    pub transcript: String,
    pub confidence: f64,
    pub words: StreamWords,
}

/// Words as objects (Deepgram form) or as `["word", start_ms, end_ms]` (`word_format=tuple`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamWords {
    Objects(Vec<Word>),
    Tuples(Vec<(String, u64, u64)>),
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsMetadata {
    pub request_id: String,
    pub model_uuid: String,
    pub model_info: ModelInfo,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeechStarted {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: Vec<u32>,
    pub timestamp: f64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceEnd {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: Vec<u32>,
    pub last_word_end: f64,
}

/// The `type` of the internal checkpoint message; the gateway swallows every message whose type
/// starts with [`INTERNAL_PREFIX`].
pub const CHECKPOINT_TYPE: &str = "aldea.checkpoint";
pub const INTERNAL_PREFIX: &str = "aldea.";

/// Sent by stt to the gateway after each final: where a resumed stream can pick up. A new stream
/// opened with [`Checkpoint::resume`] (in [`RESUME_HEADER`]) and, as its first bytes, the first `header_bytes` bytes
/// of the input followed by the input from `byte_offset` continues this transcript without losing
/// or repeating finals.
///
/// The restart point may lie before `committed_until`: the committed speech the stream kept as
/// context for its next decode (`context`, whose audio starts at `audio_start`) is replayed too, so
/// the resumed stream decodes the next utterance with the same context as the unbroken one would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds on the stream's timeline up to which every final has been sent.
    pub committed_until: f64,
    /// Byte offset in this stream's input (for a resumed stream: the input it was given, header
    /// included) at which decoding can restart (`None`: the format cannot restart in the middle;
    /// the whole input must be replayed).
    pub byte_offset: Option<u64>,
    /// Leading bytes of the input that a restarted decoder needs first (a WAV header).
    pub header_bytes: u64,
    /// The committed text the next decoding is prompted with.
    pub prompt: String,
    /// The same prompt as model token ids (what [`Resume::prompt_tokens`] takes back).
    pub prompt_tokens: Vec<u32>,
    /// Timeline seconds of the audio at `byte_offset` (absent: `committed_until`, no context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_start: Option<f64>,
    /// Committed words between `audio_start` and `committed_until`: the resumed stream hears their
    /// audio again as context, with these words fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextWord>,
    /// Words of the utterance going on at `committed_until` are already final (it still owes the
    /// client its `speech_final`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub utterance_open: bool,
}

/// A committed word kept as context across a resume: its times on the stream's timeline and its
/// model tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextWord {
    pub start: f64,
    pub end: f64,
    pub tokens: Vec<u32>,
}

impl Checkpoint {
    /// Timeline seconds of the audio at `byte_offset`: where a resumed stream's timeline begins.
    pub fn resume_start(&self) -> f64 {
        self.audio_start.unwrap_or(self.committed_until)
    }

    /// Where a stream resumed from this checkpoint starts.
    pub fn resume(&self) -> Resume {
        Resume {
            start: self.resume_start(),
            committed_until: self.committed_until,
            prompt_tokens: self.prompt_tokens.clone(),
            context: self.context.clone(),
            utterance_open: self.utterance_open,
        }
    }
}

/// The header that carries the resume handshake from the gateway to stt. It is never a query
/// parameter (clients write the query; they cannot set this header: the gateway builds every
/// request to stt itself, and stt's routes sit behind the service token).
pub const RESUME_HEADER: &str = "aldea-resume";

/// Where a resumed stream starts: the value of [`RESUME_HEADER`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// Timeline seconds of the first byte of audio.
    pub start: f64,
    /// Every final up to here was sent: the audio before it is context (`start` when none).
    pub committed_until: f64,
    pub prompt_tokens: Vec<u32>,
    /// Committed words whose audio is replayed as context, on the timeline.
    pub context: Vec<ContextWord>,
    /// The utterance going on at `committed_until` already has final words.
    pub utterance_open: bool,
}

impl Resume {
    /// A stream replayed from its very start (a format that cannot restart in the middle).
    pub fn from_start() -> Resume {
        Resume {
            start: 0.0,
            committed_until: 0.0,
            prompt_tokens: Vec::new(),
            context: Vec::new(),
            utterance_open: false,
        }
    }

    /// The header value: `start=S[&committed_until=C][&prompt_tokens=1,2][&context=…][&utterance_open=true]`
    /// (numbers, `,`, `.` and `:` only: valid in a header as it is).
    pub fn to_header(&self) -> String {
        let mut value = format!("start={}", self.start);
        if self.start < self.committed_until {
            value.push_str(&format!("&committed_until={}", self.committed_until));
        }
        if !self.prompt_tokens.is_empty() {
            value.push_str(&format!("&prompt_tokens={}", join(&self.prompt_tokens, ",")));
        }
        if !self.context.is_empty() {
            value.push_str(&format!("&context={}", encode_context(&self.context)));
        }
        if self.utterance_open {
            value.push_str("&utterance_open=true");
        }
        value
    }

    /// The same as query parameters of the release before the header (`resume_start=…`): what an stt
    /// replica of that release reads, sent beside the header during a rolling update. Remove once
    /// every replica reads the header.
    pub fn to_legacy_query(&self) -> String {
        self.to_header().split('&').map(|pair| format!("resume_{pair}")).collect::<Vec<_>>().join("&")
    }

    /// Reads [`Resume::to_header`]'s form back, checking it: `start` present, finite and not
    /// negative, `committed_until` not before it, every context word starting between the two.
    /// Fields it does not know are ignored (a newer gateway may send more).
    pub fn parse_header(value: &str) -> Result<Resume, String> {
        let mut start = None;
        let mut committed_until = None;
        let mut resume = Resume::from_start();
        let number = |name: &str, v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("{name} must be a non-negative number"))
        };
        for pair in value.split('&').filter(|p| !p.is_empty()) {
            let (name, v) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "start" => start = Some(number(name, v)?),
                "committed_until" => committed_until = Some(number(name, v)?),
                "prompt_tokens" => {
                    resume.prompt_tokens = v
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(|t| t.parse::<u32>().map_err(|_| "prompt_tokens must be token ids".to_owned()))
                        .collect::<Result<_, _>>()?;
                }
                "context" => {
                    resume.context =
                        decode_context(v).ok_or_else(|| "context must be start_ms:end_ms:tokens words".to_owned())?;
                }
                "utterance_open" => {
                    resume.utterance_open = match v {
                        "true" => true,
                        "false" => false,
                        _ => return Err("utterance_open must be true or false".to_owned()),
                    }
                }
                // A field from a newer gateway (a rolling update): what this release knows is enough.
                _ => {}
            }
        }
        resume.start = start.ok_or_else(|| "the resume header needs start".to_owned())?;
        resume.committed_until = committed_until.unwrap_or(resume.start);
        // A context word starts in the replayed audio (a word cut a hair before the buffer's
        // start stays one) and before the commit; it may end after the commit.
        let inside = |w: &ContextWord| w.start >= resume.start - 0.02 && w.start <= resume.committed_until + 1e-3;
        if resume.committed_until < resume.start || !resume.context.iter().all(inside) {
            return Err("context words must start between start and committed_until".to_owned());
        }
        Ok(resume)
    }
}

fn join(tokens: &[u32], separator: &str) -> String {
    tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(separator)
}

/// [`Resume::context`] in the header: one `start_ms:end_ms:token.token…` per word, comma-separated.
pub fn encode_context(words: &[ContextWord]) -> String {
    words
        .iter()
        .map(|w| {
            let ms = |t: f64| (t * 1000.0).round().max(0.0) as u64;
            format!("{}:{}:{}", ms(w.start), ms(w.end), join(&w.tokens, "."))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads [`encode_context`]'s form back; `None` when it is malformed.
pub fn decode_context(text: &str) -> Option<Vec<ContextWord>> {
    text.split(',')
        .filter(|w| !w.is_empty())
        .map(|word| {
            let mut fields = word.split(':');
            let start: u64 = fields.next()?.parse().ok()?;
            let end: u64 = fields.next()?.parse().ok()?;
            let tokens = fields.next()?.split('.').map(|t| t.parse().ok()).collect::<Option<Vec<u32>>>()?;
            if fields.next().is_some() || end < start || tokens.is_empty() {
                return None;
            }
            Some(ContextWord { start: start as f64 / 1000.0, end: end as f64 / 1000.0, tokens })
        })
        .collect()
}

/// A control message from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    KeepAlive,
    Finalize,
    CloseStream,
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn model_info() -> ModelInfo {
        ModelInfo { name: "tiny.en".into(), version: "1".into(), arch: "whisper".into() }
    }

    #[test]
    fn results_wire_form() {
        let results = StreamResults {
            kind: "Results".into(),
            channel_index: [0, 1],
            start: 1.5,
            duration: 2.0,
            is_final: true,
            speech_final: false,
            from_finalize: false,
            channel: StreamChannel {
                alternatives: vec![StreamAlternative {
                    transcript: "Hello.".into(),
                    confidence: 0.9,
                    words: StreamWords::Objects(vec![Word::from_punctuated(" Hello.", 1.6, 2.0, 0.9)]),
                }],
            },
            metadata: ResultsMetadata {
                request_id: "00000000-0000-0000-0000-000000000001".into(),
                model_uuid: "6b28e919-8427-5f1a-a5e6-4b1bd2ad6b57".into(),
                model_info: model_info(),
            },
            no_speech_prob: None,
        };
        expect![[r#"{"type":"Results","channel_index":[0,1],"start":1.5,"duration":2.0,"is_final":true,"speech_final":false,"from_finalize":false,"channel":{"alternatives":[{"transcript":"Hello.","confidence":0.9,"words":[{"word":"hello","punctuated_word":"Hello.","start":1.6,"end":2.0,"confidence":0.9}]}]},"metadata":{"request_id":"00000000-0000-0000-0000-000000000001","model_uuid":"6b28e919-8427-5f1a-a5e6-4b1bd2ad6b57","model_info":{"name":"tiny.en","version":"1","arch":"whisper"}}}"#]]
        .assert_eq(&serde_json::to_string(&results).unwrap());
    }

    #[test]
    fn tuple_words_and_control_messages() {
        let words = StreamWords::Tuples(vec![("hello".into(), 1600, 2000)]);
        assert_eq!(serde_json::to_string(&words).unwrap(), r#"[["hello",1600,2000]]"#);
        let parsed: ClientMessage = serde_json::from_str(r#"{"type":"Finalize"}"#).unwrap();
        assert_eq!(parsed, ClientMessage::Finalize);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"Dance"}"#).is_err());
    }

    #[test]
    fn metadata_and_events_wire_form() {
        let metadata = StreamMetadata {
            kind: "Metadata".into(),
            request_id: "00000000-0000-0000-0000-000000000001".into(),
            created: "2026-11-25T21:00:00.000Z".into(),
            duration: 0.0,
            channels: 1,
            model_info: model_info(),
            transaction_key: "deprecated".into(),
            sha256: "e3b0".into(),
            warnings: vec![],
        };
        expect![[r#"{"type":"Metadata","request_id":"00000000-0000-0000-0000-000000000001","created":"2026-11-25T21:00:00.000Z","duration":0.0,"channels":1,"model_info":{"name":"tiny.en","version":"1","arch":"whisper"},"transaction_key":"deprecated","sha256":"e3b0"}"#]]
        .assert_eq(&serde_json::to_string(&metadata).unwrap());
        let started = SpeechStarted { kind: "SpeechStarted".into(), channel: vec![0], timestamp: 0.5 };
        assert_eq!(
            serde_json::to_string(&started).unwrap(),
            r#"{"type":"SpeechStarted","channel":[0],"timestamp":0.5}"#
        );
        let end = UtteranceEnd { kind: "UtteranceEnd".into(), channel: vec![0, 1], last_word_end: 3.1 };
        assert_eq!(
            serde_json::to_string(&end).unwrap(),
            r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":3.1}"#
        );
    }

    #[test]
    fn a_checkpoint_with_context_resumes_from_its_audio() {
        let context = vec![
            ContextWord { start: 1.25, end: 1.5, tokens: vec![440, 7] },
            ContextWord { start: 1.5, end: 2.0, tokens: vec![9] },
        ];
        let checkpoint = Checkpoint {
            kind: CHECKPOINT_TYPE.to_owned(),
            committed_until: 2.4,
            byte_offset: Some(36_000),
            header_bytes: 0,
            prompt: "Hi.".to_owned(),
            prompt_tokens: vec![1, 2],
            audio_start: Some(1.125),
            context: context.clone(),
            utterance_open: true,
        };
        let header = checkpoint.resume().to_header();
        assert_eq!(
            header,
            "start=1.125&committed_until=2.4&prompt_tokens=1,2&context=1250:1500:440.7,1500:2000:9&utterance_open=true"
        );
        assert_eq!(Resume::parse_header(&header), Ok(checkpoint.resume()), "the header reads back");
        assert_eq!(
            checkpoint.resume().to_legacy_query(),
            "resume_start=1.125&resume_committed_until=2.4&resume_prompt_tokens=1,2\
             &resume_context=1250:1500:440.7,1500:2000:9&resume_utterance_open=true"
        );
        assert_eq!(decode_context(&encode_context(&context)), Some(context));
        for bad in ["1:2", "2:1:5", "1:2:", "1:2:x", "1:2:3:4"] {
            assert_eq!(decode_context(bad), None, "{bad}");
        }
        // Without context: the old form, which older checkpoints (no new fields) still parse to.
        let json = r#"{"type":"aldea.checkpoint","committed_until":3.5,"byte_offset":112000,"header_bytes":0,"prompt":"","prompt_tokens":[]}"#;
        let old: Checkpoint = serde_json::from_str(json).unwrap();
        assert_eq!(old.resume().to_header(), "start=3.5");
        assert_eq!(serde_json::to_string(&old).unwrap(), json);
    }

    #[test]
    fn a_resume_header_that_does_not_hold_together_is_refused() {
        let parsed = Resume::parse_header("start=12.5&prompt_tokens=1,2,3").unwrap();
        assert_eq!((parsed.start, parsed.committed_until, parsed.prompt_tokens), (12.5, 12.5, vec![1, 2, 3]));
        for bad in [
            "",
            "committed_until=12",
            "start=10&committed_until=9",
            "start=10&committed_until=12&context=9000:9500:5",
            "start=10&context=10x",
            "start=-1",
            "start=NaN",
            "start=inf",
            "start=1&prompt_tokens=a",
            "start=1&utterance_open=yes",
        ] {
            assert!(Resume::parse_header(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Resume::parse_header("start=1&from_a_newer_gateway=2").map(|r| r.start), Ok(1.0));
    }
}
