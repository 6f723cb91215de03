//! Wire types of the public Speech API (docs/spec/speech-api.md): the pre-recorded response, the
//! streaming messages ([`stream`]), the error body and their field types, exactly as Deepgram and Aldea clients parse them;
//! stt's capacity answer, which the gateway reads; and the usage event of the usage queue
//! ([`usage`], docs/spec/platform-api.md).
//!
//! Invariant: serde only — this crate never does I/O, never depends on tokio, and never depends on
//! another aldea crate.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
pub mod openapi;
pub mod stream;
pub mod structure;
pub mod subtitles;
pub mod usage;

/// Stable error codes of the error body and of WebSocket close reasons.
pub mod codes {
    pub const INVALID_AUTH: &str = "INVALID_AUTH";
    pub const BAD_REQUEST: &str = "Bad Request";
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    pub const UNSUPPORTED_AUDIO: &str = "UNSUPPORTED_AUDIO";
    pub const NO_CAPACITY: &str = "NO_CAPACITY";
    /// 402: the organization has no credit left.
    pub const INSUFFICIENT_CREDIT: &str = "INSUFFICIENT_CREDIT";
    /// 403: the key lacks the scope the request needs.
    pub const INSUFFICIENT_PERMISSIONS: &str = "INSUFFICIENT_PERMISSIONS";
    /// 408: the client stopped sending its body.
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
    /// 429: a concurrency or rate limit.
    pub const TOO_MANY_REQUESTS: &str = "TOO_MANY_REQUESTS";
    pub const INTERNAL: &str = "INTERNAL_SERVER_ERROR";
    /// Close reason of undecodable audio (close 1003).
    pub const DATA: &str = "DATA-0000";
    /// Close reason of the idle timeout (close 1011).
    pub const NET_IDLE: &str = "NET-0001";
}

/// The body of every non-2xx answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub err_code: String,
    pub err_msg: String,
    pub request_id: String,
}

/// `GET /v1/capacity` of an stt replica (behind its service token): what it can take now. The
/// gateway reads it to order the replicas. Fields in name order, as the map it replaced wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Streams open now.
    pub active_streams: u64,
    /// Streams it would still take.
    pub free_stream_slots: u64,
    pub max_streams: u64,
    /// Windows waiting for the model.
    pub queue_depth: u64,
    /// Uploads waiting for a slot.
    pub queued_uploads: u64,
    /// It has its model and is not shutting down.
    pub ready: bool,
}

/// `model_info` entry: what the model is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// `POST /v1/listen` response body (Deepgram pre-recorded form).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrerecordedResponse {
    pub metadata: PrerecordedMetadata,
    pub results: PrerecordedResults,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrerecordedMetadata {
    /// UUID string.
    pub request_id: String,
    /// RFC 3339 timestamp.
    pub created: String,
    /// Seconds of audio received.
    pub duration: f64,
    pub channels: u32,
    /// UUIDs of the models used.
    pub models: Vec<String>,
    /// Keyed by model UUID.
    pub model_info: BTreeMap<String, ModelInfo>,
    /// Hex SHA-256 of the audio bytes received.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// A parameter the server accepted but does not implement (never answered with invented output).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub parameter: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrerecordedResults {
    pub channels: Vec<Channel>,
    /// With `utterances=true`: every channel's words split at pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utterances: Option<Vec<structure::Utterance>>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_language: Option<String>,
    pub alternatives: Vec<Alternative>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub transcript: String,
    pub confidence: f64,
    pub words: Vec<Word>,
    /// With `paragraphs=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paragraphs: Option<structure::Paragraphs>,
}

/// One recognized word. `word` is lower-case without punctuation; `punctuated_word` keeps both.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub word: String,
    pub punctuated_word: String,
    pub start: f64,
    pub end: f64,
    pub confidence: f64,
}

impl Word {
    /// Builds a word from the text the model produced, deriving the bare lower-case form.
    pub fn from_punctuated(punctuated: &str, start: f64, end: f64, confidence: f64) -> Word {
        Word { word: bare_word(punctuated), punctuated_word: punctuated.trim().to_owned(), start, end, confidence }
    }
}

/// Lower-cases a word and strips the punctuation around it, keeping inner apostrophes and hyphens
/// ("Don't" → "don't", "well-known," → "well-known").
pub fn bare_word(punctuated: &str) -> String {
    let trimmed = punctuated.trim().trim_matches(|c: char| !c.is_alphanumeric());
    trimmed.to_lowercase()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn bare_word_strips_outer_punctuation_only() {
        assert_eq!(bare_word(" Don't,"), "don't");
        assert_eq!(bare_word("well-known."), "well-known");
        assert_eq!(bare_word("\"Hello!\""), "hello");
        assert_eq!(bare_word("3.5%"), "3.5");
    }

    #[test]
    fn capacity_wire_form() {
        let capacity = Capacity {
            active_streams: 1,
            free_stream_slots: 3,
            max_streams: 4,
            queue_depth: 2,
            queued_uploads: 0,
            ready: true,
        };
        expect![[r#"{"active_streams":1,"free_stream_slots":3,"max_streams":4,"queue_depth":2,"queued_uploads":0,"ready":true}"#]]
            .assert_eq(&serde_json::to_string(&capacity).unwrap());
    }

    #[test]
    fn prerecorded_response_wire_form() {
        let mut model_info = BTreeMap::new();
        model_info.insert(
            "6b28e919-8427-5f1a-a5e6-4b1bd2ad6b57".to_owned(),
            ModelInfo { name: "tiny.en".into(), version: "1".into(), arch: "whisper".into() },
        );
        let response = PrerecordedResponse {
            metadata: PrerecordedMetadata {
                request_id: "00000000-0000-0000-0000-000000000001".into(),
                created: "2026-11-25T21:00:00Z".into(),
                duration: 1.5,
                channels: 1,
                models: vec!["6b28e919-8427-5f1a-a5e6-4b1bd2ad6b57".into()],
                model_info,
                sha256: "ab".into(),
                tags: vec![],
                warnings: vec![],
            },
            results: PrerecordedResults {
                channels: vec![Channel {
                    detected_language: None,
                    alternatives: vec![Alternative {
                        transcript: "Hello.".into(),
                        confidence: 0.9,
                        words: vec![Word::from_punctuated(" Hello.", 0.0, 0.5, 0.9)],
                        paragraphs: None,
                    }],
                }],
                utterances: None,
            },
        };
        expect![[r#"{"metadata":{"request_id":"00000000-0000-0000-0000-000000000001","created":"2026-11-25T21:00:00Z","duration":1.5,"channels":1,"models":["6b28e919-8427-5f1a-a5e6-4b1bd2ad6b57"],"model_info":{"6b28e919-8427-5f1a-a5e6-4b1bd2ad6b57":{"name":"tiny.en","version":"1","arch":"whisper"}},"sha256":"ab"},"results":{"channels":[{"alternatives":[{"transcript":"Hello.","confidence":0.9,"words":[{"word":"hello","punctuated_word":"Hello.","start":0.0,"end":0.5,"confidence":0.9}]}]}]}}"#]]
        .assert_eq(&serde_json::to_string(&response).unwrap());
    }
}
