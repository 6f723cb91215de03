//! The usage event the gateway puts on the usage queue and the platform records exactly once
//! (docs/spec/platform-api.md, "Usage and credit").

use serde::{Deserialize, Serialize};

/// Whether the audio came as an upload or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UsageKind {
    Rest,
    Stream,
}

impl UsageKind {
    /// Its wire (and stored) name.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Rest => "rest",
            UsageKind::Stream => "stream",
        }
    }
}

/// One piece of a request's usage: `audio_seconds` is the delta since the previous event of the
/// same request; the last event has `final: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// `request_id` + `:` + `seq`: recording an event twice changes nothing.
    pub event_id: String,
    pub request_id: String,
    pub seq: u32,
    pub org_id: String,
    pub key_id: String,
    pub kind: UsageKind,
    pub model: String,
    pub audio_seconds: f64,
    /// Unix milliseconds.
    pub started_at: i64,
    pub ended_at: i64,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// HTTP status of an upload, close code of a stream.
    pub status: u16,
}

impl UsageEvent {
    /// The event id of `seq` within `request_id`.
    pub fn event_id(request_id: &str, seq: u32) -> String {
        format!("{request_id}:{seq}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let event = UsageEvent {
            event_id: UsageEvent::event_id("r1", 2),
            request_id: "r1".to_owned(),
            seq: 2,
            org_id: "o".to_owned(),
            key_id: "k".to_owned(),
            kind: UsageKind::Stream,
            model: "tiny.en".to_owned(),
            audio_seconds: 1.5,
            started_at: 1,
            ended_at: 2,
            is_final: true,
            status: 1000,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event_id"], "r1:2");
        assert_eq!(json["kind"], "stream");
        assert_eq!(json["final"], true);
        assert_eq!(serde_json::from_value::<UsageEvent>(json).unwrap(), event);
    }
}
