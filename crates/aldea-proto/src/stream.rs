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
/// opened with `resume_start = committed_until`, `resume_prompt_tokens = prompt_tokens` and, as its
/// first bytes, the first `header_bytes` bytes of the input followed by the input from `byte_offset`
/// continues this transcript without losing or repeating finals.
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
}
