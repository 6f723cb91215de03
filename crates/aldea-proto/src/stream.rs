//! WebSocket messages of `/v1/listen` streaming: what the server sends, what the client sends, and
//! the internal checkpoint messages between stt and the gateway (never forwarded to clients).

use serde::{Deserialize, Serialize};

use crate::{ModelInfo, Warning, Word};

/// `Metadata` at open (duration 0) and at close (total duration).
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamChannel {
    pub alternatives: Vec<StreamAlternative>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamAlternative {
    pub transcript: String,
    pub confidence: f64,
    pub words: StreamWords,
}

/// Words as objects (Deepgram form) or as `["word", start_ms, end_ms]` (`word_format=tuple`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamWords {
    Objects(Vec<Word>),
    Tuples(Vec<(String, u64, u64)>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsMetadata {
    pub request_id: String,
    pub model_uuid: String,
    pub model_info: ModelInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeechStarted {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: Vec<u32>,
    pub timestamp: f64,
}

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
/// opened with [`Checkpoint::resume_query`] and, as its first bytes, the first `header_bytes` bytes
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
    /// The same prompt as model token ids (what `resume_prompt_tokens` takes back).
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

    /// The query parameters (without a leading `&`) that resume a stream from this checkpoint.
    pub fn resume_query(&self) -> String {
        let start = self.resume_start();
        let mut query = format!("resume_start={start}");
        if start < self.committed_until {
            query.push_str(&format!("&resume_committed_until={}", self.committed_until));
        }
        if !self.prompt_tokens.is_empty() {
            query.push_str(&format!("&resume_prompt_tokens={}", join(&self.prompt_tokens, ",")));
        }
        if !self.context.is_empty() {
            query.push_str(&format!("&resume_context={}", encode_context(&self.context)));
        }
        if self.utterance_open {
            query.push_str("&resume_utterance_open=true");
        }
        query
    }
}

fn join(tokens: &[u32], separator: &str) -> String {
    tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(separator)
}

/// `resume_context`: one `start_ms:end_ms:token.token…` per word, comma-separated (query-safe).
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
        assert_eq!(
            checkpoint.resume_query(),
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
        assert_eq!(old.resume_query(), "resume_start=3.5");
        assert_eq!(serde_json::to_string(&old).unwrap(), json);
    }
}
