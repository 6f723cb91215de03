//! What a client is sent of stt's stream messages ([`Rewriter`]): internal `aldea.*` messages stay
//! in the gateway (a checkpoint moves the replay's resume point); after a failover the replacement
//! replica's opening Metadata is dropped, results the client already has are dropped or trimmed to
//! their new words ([`trim_results`]), and durations count from the client's zero; the audio
//! timeline the results reach is what the stream is metered for. stt's messages are read as the
//! `aldea-proto` types stt writes them from (`StreamMetadata`, `StreamResults`, `Checkpoint`).
//!
//! Invariant: pure (no I/O); no `aldea.*` message is ever forwarded; a message is forwarded as the
//! bytes stt sent unless it must change, and a changed one is those bytes with only the fields that
//! change replaced (every other field kept, those this gateway does not know too); after a failover
//! no final the client already had is sent again. A message that does not read as its proto type
//! is relayed as it came and counts for nothing.

use aldea_proto::stream::{Checkpoint, StreamMetadata, StreamResults, StreamWords, CHECKPOINT_TYPE, INTERNAL_PREFIX};
use aldea_proto::Word;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// What to do with a message from stt.
#[derive(Debug, PartialEq)]
pub(crate) enum Outbound {
    /// Send this text to the client.
    Forward(String),
    /// An internal checkpoint: the replay's resume point moves; the client is sent nothing.
    Checkpoint(Checkpoint),
    /// Send the client nothing.
    Drop,
}

/// The `type` of a message, read first to know which proto type the rest is.
#[derive(Deserialize)]
struct Tagged {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A stream's timeline as the client has been told it, across failovers.
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    /// Timeline start of the current upstream (the resume start after a failover).
    origin: f64,
    /// End of the last final the client received: nothing before it is sent again.
    relayed_until: f64,
    /// Furthest point of the audio timeline the results reached (metered).
    heard: f64,
    /// A replica took the stream over at least once: results are checked against what was relayed.
    resumed: bool,
    /// The next Metadata is a replacement replica's opening one: the client already had its own.
    swallow_metadata: bool,
}

impl Rewriter {
    /// Furthest point of the audio timeline the results reached: what the stream is metered for.
    pub(crate) fn heard(&self) -> f64 {
        self.heard
    }

    /// A replica took the stream over, its timeline starting at `start`.
    pub(crate) fn resumed_at(&mut self, start: f64) {
        self.origin = start;
        self.resumed = true;
        self.swallow_metadata = true;
    }

    /// The current upstream said (in its closing Metadata) that it heard `duration` seconds.
    pub(crate) fn heard_upstream(&mut self, duration: f64) {
        self.heard = self.heard.max(self.origin + duration);
    }

    /// Reads a message from stt: what the client is sent of it.
    pub(crate) fn outbound(&mut self, text: &str) -> Outbound {
        let Ok(Tagged { kind }) = serde_json::from_str::<Tagged>(text) else {
            return Outbound::Forward(text.to_owned());
        };
        let kind = kind.unwrap_or_default();
        if kind.starts_with(INTERNAL_PREFIX) {
            if kind == CHECKPOINT_TYPE {
                if let Some(checkpoint) = read::<Checkpoint>(&kind, text) {
                    return Outbound::Checkpoint(checkpoint);
                }
            }
            return Outbound::Drop;
        }
        let outbound = match kind.as_str() {
            "Metadata" => read::<StreamMetadata>(&kind, text).map(|metadata| self.metadata(text, &metadata)),
            "Results" => read::<StreamResults>(&kind, text).map(|results| self.results(text, &results)),
            _ => None,
        };
        outbound.unwrap_or_else(|| Outbound::Forward(text.to_owned()))
    }

    fn metadata(&mut self, text: &str, metadata: &StreamMetadata) -> Outbound {
        if std::mem::take(&mut self.swallow_metadata) {
            return Outbound::Drop;
        }
        self.heard_upstream(metadata.duration);
        if self.origin > 0.0 {
            // A replacement replica counts from its resume start; the client's stream began at zero.
            let duration = round3(self.origin + metadata.duration);
            if let Some(rebased) = patched(text, |value| value["duration"] = serde_json::json!(duration)) {
                return Outbound::Forward(rebased);
            }
        }
        Outbound::Forward(text.to_owned())
    }

    fn results(&mut self, text: &str, results: &StreamResults) -> Outbound {
        let end = results.start + results.duration;
        self.heard = self.heard.max(end);
        if self.resumed && results.start < self.relayed_until - 1e-3 {
            if end <= self.relayed_until + 1e-3 {
                return Outbound::Drop;
            }
            let Some(trimmed) = trim_results(text, results, self.relayed_until) else { return Outbound::Drop };
            if results.is_final {
                self.relayed_until = end;
            }
            return Outbound::Forward(trimmed);
        }
        if results.is_final {
            self.relayed_until = self.relayed_until.max(end);
        }
        Outbound::Forward(text.to_owned())
    }
}

/// A message as the proto type of its `kind`; `None` (logged) when it does not read as one.
fn read<T: DeserializeOwned>(kind: &str, text: &str) -> Option<T> {
    match serde_json::from_str(text) {
        Ok(message) => Some(message),
        Err(e) => {
            // Not the error's text: it may quote the message (a transcript).
            tracing::debug!(
                kind,
                line = e.line(),
                column = e.column(),
                "an stt message does not read as its proto type"
            );
            None
        }
    }
}

/// `text` (a JSON object) with `change` made to it and every other field as it was.
fn patched(text: &str, change: impl FnOnce(&mut serde_json::Value)) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    change(&mut value);
    Some(value.to_string())
}

/// The duration a Metadata message reports (`None` for any other message).
pub(crate) fn metadata_duration(text: &str) -> Option<f64> {
    let Tagged { kind } = serde_json::from_str::<Tagged>(text).ok()?;
    let kind = kind.filter(|kind| kind == "Metadata")?;
    read::<StreamMetadata>(&kind, text).map(|metadata| metadata.duration)
}

/// A Results message (`text`, read as `results`) without the words that start before `until`
/// (already final at the client), its transcript, start and duration rebuilt from the words kept;
/// `None` when none are left. Tuple words (`word_format=tuple`) carry no start to trim by: none
/// are kept.
fn trim_results(text: &str, results: &StreamResults, until: f64) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    let alternatives = value.pointer_mut("/channel/alternatives")?.as_array_mut()?;
    let mut span = None;
    for (alternative, typed) in alternatives.iter_mut().zip(&results.channel.alternatives) {
        let StreamWords::Objects(words) = &typed.words else { return None };
        let keep: Vec<bool> = words.iter().map(|w| w.start >= until - 1e-3).collect();
        let kept: Vec<&Word> = words.iter().zip(&keep).filter(|(_, keep)| **keep).map(|(w, _)| w).collect();
        // The words as stt sent them (fields this gateway does not know included), those kept.
        let mut keeps = keep.iter();
        alternative.get_mut("words")?.as_array_mut()?.retain(|_| keeps.next().copied().unwrap_or(false));
        let transcript: Vec<&str> = kept.iter().map(|w| w.punctuated_word.as_str()).collect();
        alternative["transcript"] = serde_json::json!(transcript.join(" "));
        if span.is_none() {
            span = kept.first().zip(kept.last()).map(|(first, last)| (first.start, last.end));
        }
    }
    let (start, end) = span?;
    let old_end = results.start + results.duration;
    value["start"] = serde_json::json!(round3(start));
    value["duration"] = serde_json::json!(round3(old_end.max(end) - start));
    Some(value.to_string())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Results message in stt's form: one word per `(text, start, end)`.
    fn results(start: f64, end: f64, is_final: bool, words: &[(&str, f64, f64)]) -> String {
        let words: Vec<serde_json::Value> = words
            .iter()
            .map(|(w, s, e)| {
                serde_json::json!({"word": w.to_lowercase(), "punctuated_word": w, "start": s, "end": e, "confidence": 0.9})
            })
            .collect();
        let transcript = words.iter().map(|w| w["punctuated_word"].as_str().unwrap()).collect::<Vec<_>>().join(" ");
        serde_json::json!({"type": "Results", "channel_index": [0, 1], "start": start, "duration": end - start,
            "is_final": is_final, "speech_final": false, "from_finalize": false,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.9, "words": words}]},
            "metadata": {"request_id": "r1", "model_uuid": "u1", "model_info": {"name": "tiny.en", "version": "1", "arch": "whisper"}}})
        .to_string()
    }

    fn metadata(duration: f64) -> String {
        serde_json::json!({"type": "Metadata", "request_id": "r1", "created": "2026-11-25T21:00:00.000Z",
            "duration": duration, "channels": 1, "model_info": {"name": "tiny.en", "version": "1", "arch": "whisper"},
            "transaction_key": "deprecated", "sha256": "e3b0"})
        .to_string()
    }

    fn trim(text: &str, until: f64) -> Option<String> {
        trim_results(text, &serde_json::from_str(text).unwrap(), until)
    }

    fn forwarded(outbound: Outbound) -> serde_json::Value {
        match outbound {
            Outbound::Forward(text) => serde_json::from_str(&text).unwrap(),
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn results_already_final_at_the_client_are_trimmed_to_the_new_words() {
        let results = results(1.0, 3.0, true, &[("One", 1.0, 1.4), ("two", 1.5, 2.0), ("three.", 2.1, 2.8)]);
        let trimmed: serde_json::Value = serde_json::from_str(&trim(&results, 1.5).unwrap()).unwrap();
        assert_eq!(trimmed["channel"]["alternatives"][0]["transcript"], "two three.");
        assert_eq!(trimmed["start"], 1.5);
        assert_eq!(trimmed["duration"], 1.5);
        assert!(trim(&results, 2.5).is_none());
    }

    /// What a client gets when a Results message is trimmed after a failover, to the byte: every
    /// field stt sent is kept (those this gateway does not know too), keys in sorted order.
    #[test]
    fn a_trimmed_results_message_keeps_every_field_stt_sent() {
        let results = r#"{"type":"Results","channel_index":[0,1],"start":1.0,"duration":2.0,"is_final":true,"speech_final":false,"from_finalize":false,"channel":{"alternatives":[{"transcript":"One two three.","confidence":0.9,"words":[{"word":"one","punctuated_word":"One","start":1.0,"end":1.4,"confidence":0.9,"speaker":0},{"word":"two","punctuated_word":"two","start":1.5,"end":2.0,"confidence":0.8,"speaker":0},{"word":"three","punctuated_word":"three.","start":2.1,"end":2.8,"confidence":0.7,"speaker":1}]}]},"metadata":{"request_id":"r1","model_uuid":"u1","model_info":{"name":"tiny.en","version":"1","arch":"whisper"}},"from_a_newer_stt":{"x":1}}"#;
        assert_eq!(
            trim(results, 1.5).unwrap(),
            r#"{"channel":{"alternatives":[{"confidence":0.9,"transcript":"two three.","words":[{"confidence":0.8,"end":2.0,"punctuated_word":"two","speaker":0,"start":1.5,"word":"two"},{"confidence":0.7,"end":2.8,"punctuated_word":"three.","speaker":1,"start":2.1,"word":"three"}]}]},"channel_index":[0,1],"duration":1.5,"from_a_newer_stt":{"x":1},"from_finalize":false,"is_final":true,"metadata":{"model_info":{"arch":"whisper","name":"tiny.en","version":"1"},"model_uuid":"u1","request_id":"r1"},"speech_final":false,"start":1.5,"type":"Results"}"#
        );
    }

    #[test]
    fn internal_messages_stay_here_and_a_checkpoint_moves_the_resume_point() {
        let mut rewriter = Rewriter::default();
        let checkpoint = r#"{"type":"aldea.checkpoint","committed_until":3.5,"byte_offset":112000,"header_bytes":0,"prompt":"","prompt_tokens":[]}"#;
        match rewriter.outbound(checkpoint) {
            Outbound::Checkpoint(c) => assert_eq!((c.committed_until, c.byte_offset), (3.5, Some(112_000))),
            other => panic!("{other:?}"),
        }
        assert_eq!(rewriter.outbound(r#"{"type":"aldea.something_new","x":1}"#), Outbound::Drop);
        assert_eq!(rewriter.outbound(r#"{"type":"aldea.checkpoint"}"#), Outbound::Drop, "malformed: still internal");
        // Everything else goes on as stt sent it, to the byte.
        for text in [r#"{"type":"SpeechStarted","channel":[0],"timestamp":0.5}"#, "not json", r#"{"type":"Dance"}"#] {
            assert_eq!(rewriter.outbound(text), Outbound::Forward(text.to_owned()));
        }
        let first = metadata(0.0);
        assert_eq!(rewriter.outbound(&first), Outbound::Forward(first.clone()));
        assert_eq!(rewriter.heard(), 0.0);
    }

    #[test]
    fn the_timeline_heard_is_the_furthest_results_or_metadata_reached() {
        let mut rewriter = Rewriter::default();
        let interim = results(0.0, 1.2, false, &[("Hi", 0.1, 0.4)]);
        assert_eq!(rewriter.outbound(&interim), Outbound::Forward(interim.clone()));
        assert_eq!(rewriter.heard(), 1.2);
        rewriter.outbound(&metadata(2.5));
        assert_eq!(rewriter.heard(), 2.5);
        rewriter.heard_upstream(1.0);
        assert_eq!(rewriter.heard(), 2.5, "never goes back");
    }

    #[test]
    fn after_a_failover_the_client_gets_no_final_twice_and_one_timeline() {
        let mut rewriter = Rewriter::default();
        rewriter.outbound(&metadata(0.0));
        rewriter.outbound(&results(0.0, 1.0, true, &[("One", 0.2, 0.6)]));
        rewriter.outbound(&results(1.0, 2.0, true, &[("two", 1.2, 1.6)]));
        // The replacement resumes at 1.0 (a checkpoint before the last final).
        rewriter.resumed_at(1.0);
        assert_eq!(rewriter.outbound(&metadata(0.0)), Outbound::Drop, "its opening Metadata");
        assert_eq!(rewriter.outbound(&results(1.0, 2.0, true, &[("two", 1.2, 1.6)])), Outbound::Drop, "had it");
        let overlapping = results(1.5, 3.0, true, &[("two", 1.55, 1.9), ("three", 2.0, 2.5)]);
        let trimmed = forwarded(rewriter.outbound(&overlapping));
        assert_eq!(trimmed["channel"]["alternatives"][0]["transcript"], "three");
        assert_eq!((trimmed["start"].as_f64(), trimmed["duration"].as_f64()), (Some(2.0), Some(1.0)));
        let next = results(3.0, 4.0, true, &[("four", 3.1, 3.5)]);
        assert_eq!(rewriter.outbound(&next), Outbound::Forward(next.clone()), "new results go on untouched");
        // The closing Metadata counts from the client's zero, every other field as stt sent it.
        let closing = forwarded(rewriter.outbound(&metadata(3.25)));
        assert_eq!(closing, serde_json::from_str::<serde_json::Value>(&metadata(4.25)).unwrap());
        assert_eq!(rewriter.heard(), 4.25);
    }

    #[test]
    fn a_rebased_metadata_message_is_what_a_client_got_before_to_the_byte() {
        let mut rewriter = Rewriter::default();
        rewriter.resumed_at(0.4);
        rewriter.outbound(&metadata(0.0));
        let closing = r#"{"type":"Metadata","request_id":"r1","created":"2026-11-25T21:00:00.000Z","duration":0.6,"channels":1,"model_info":{"name":"tiny.en","version":"1","arch":"whisper"},"transaction_key":"deprecated","sha256":"e3b0","from_a_newer_stt":true}"#;
        assert_eq!(
            rewriter.outbound(closing),
            Outbound::Forward(r#"{"channels":1,"created":"2026-11-25T21:00:00.000Z","duration":1.0,"from_a_newer_stt":true,"model_info":{"arch":"whisper","name":"tiny.en","version":"1"},"request_id":"r1","sha256":"e3b0","transaction_key":"deprecated","type":"Metadata"}"#.to_owned())
        );
    }

    #[test]
    fn a_message_off_the_contract_is_relayed_as_it_came_and_counts_for_nothing() {
        let mut rewriter = Rewriter::default();
        let off = [
            r#"{"type":"Results","start":5.0,"duration":1.0,"is_final":true}"#,
            r#"{"type":"Metadata","duration":9.0}"#,
        ];
        for text in off {
            assert_eq!(rewriter.outbound(text), Outbound::Forward(text.to_owned()));
        }
        assert_eq!(rewriter.heard(), 0.0);
        assert_eq!(metadata_duration(off[1]), None);
    }

    #[test]
    fn tuple_words_have_no_start_to_trim_by() {
        let mut value: serde_json::Value = serde_json::from_str(&results(1.0, 3.0, true, &[])).unwrap();
        value["channel"]["alternatives"][0]["words"] = serde_json::json!([["one", 1000, 1400], ["three", 2100, 2800]]);
        assert_eq!(trim(&value.to_string(), 1.5), None);
    }

    #[test]
    fn the_duration_of_a_closing_metadata() {
        assert_eq!(metadata_duration(&metadata(2.5)), Some(2.5));
        assert_eq!(metadata_duration(&results(0.0, 1.0, true, &[])), None);
        assert_eq!(metadata_duration("not json"), None);
    }
}
