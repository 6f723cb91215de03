//! Engine transcripts in the forms users read: the Deepgram/Aldea pre-recorded JSON, SRT and WebVTT
//! (the service and the CLI share them).

use std::collections::BTreeMap;

use aldea_engine::Transcript;
use aldea_proto as proto;
use aldea_proto::subtitles::{self, Cue};
use sha2::{Digest, Sha256};

/// Fixed namespace for model UUIDs, so a model's UUID is the same on every host and every run.
const MODEL_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b28_e919_8427_5f1a_a5e6_4b1b_d2ad_6b57);

pub fn model_uuid(model_name: &str) -> String {
    uuid::Uuid::new_v5(&MODEL_NAMESPACE, model_name.as_bytes()).to_string()
}

pub fn model_info(model_name: &str) -> proto::ModelInfo {
    proto::ModelInfo { name: model_name.to_owned(), version: "1".to_owned(), arch: "whisper".to_owned() }
}

/// RFC 3339 now, milliseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The pre-recorded response with a fresh request id (the CLI).
pub fn prerecorded(transcript: &Transcript, model_name: &str, audio: &[u8]) -> proto::PrerecordedResponse {
    let sha256 = hex::encode(Sha256::digest(audio));
    prerecorded_for(
        transcript,
        model_name,
        &sha256,
        &uuid::Uuid::new_v4().to_string(),
        Vec::new(),
        Vec::new(),
        Structure::default(),
    )
}

/// The SHA-256 of what `reader` holds, in hex (the metadata's `sha256`), read in chunks.
pub fn sha256_hex(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// What a request asked of the transcript's structure (`utterances`, `paragraphs`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Structure {
    /// `utterances=true`: split at pauses of this many seconds (`utt_split`).
    pub utterances: Option<f64>,
    pub paragraphs: bool,
}

/// The pre-recorded response of a request.
pub fn prerecorded_for(
    transcript: &Transcript,
    model_name: &str,
    sha256: &str,
    request_id: &str,
    tags: Vec<String>,
    warnings: Vec<proto::Warning>,
    structure: Structure,
) -> proto::PrerecordedResponse {
    let model_id = model_uuid(model_name);
    let mut model_info = BTreeMap::new();
    model_info.insert(model_id.clone(), self::model_info(model_name));
    let words: Vec<proto::Word> = transcript
        .words()
        .map(|w| proto::Word::from_punctuated(&w.text, w.start, w.end, w.probability))
        .filter(|w| !w.word.is_empty())
        .collect();
    let confidence =
        if words.is_empty() { 0.0 } else { words.iter().map(|w| w.confidence).sum::<f64>() / words.len() as f64 };
    // An utterance's id: a UUID of the request's and its place in it (the same request, the same ids).
    let utterances = structure.utterances.map(|split| {
        proto::structure::utterances(&words, 0, split, |n| {
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{request_id}/utterance/{n}").as_bytes()).to_string()
        })
    });
    let paragraphs = structure.paragraphs.then(|| proto::structure::paragraphs(&words));
    proto::PrerecordedResponse {
        metadata: proto::PrerecordedMetadata {
            request_id: request_id.to_owned(),
            created: now_rfc3339(),
            duration: transcript.duration,
            channels: 1,
            models: vec![model_id],
            model_info,
            sha256: sha256.to_owned(),
            tags,
            warnings,
        },
        results: proto::PrerecordedResults {
            channels: vec![proto::Channel {
                detected_language: Some(transcript.language.clone()),
                alternatives: vec![proto::Alternative { transcript: transcript.text(), confidence, words, paragraphs }],
            }],
            utterances,
        },
    }
}

fn cues(transcript: &Transcript) -> impl Iterator<Item = Cue<'_>> {
    transcript.segments.iter().map(|s| Cue { start: s.start, end: s.end, text: &s.text })
}

/// The transcript as a SubRip file, one cue per segment.
pub fn srt(transcript: &Transcript) -> String {
    subtitles::srt(cues(transcript))
}

/// The transcript as a WebVTT file, one cue per segment.
pub fn vtt(transcript: &Transcript) -> String {
    subtitles::vtt(cues(transcript))
}

#[cfg(test)]
mod tests {
    use aldea_engine::{Segment, Word};

    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            segments: vec![Segment {
                start: 0.0,
                end: 3661.5,
                text: " Hello, world.".to_owned(),
                tokens: vec![],
                temperature: 0.0,
                avg_logprob: -0.2,
                compression_ratio: 1.0,
                no_speech_prob: 0.01,
                words: vec![
                    Word { text: " Hello,".to_owned(), start: 0.0, end: 0.4, probability: 0.9, tokens: vec![] },
                    Word { text: " world.".to_owned(), start: 0.5, end: 0.9, probability: 0.7, tokens: vec![] },
                ],
            }],
            duration: 3662.0,
            language: "en".to_owned(),
            language_probability: 1.0,
            speech: vec![],
        }
    }

    #[test]
    fn subtitles() {
        assert_eq!(srt(&transcript()), "1\n00:00:00,000 --> 01:01:01,500\nHello, world.\n\n");
        assert_eq!(vtt(&transcript()), "WEBVTT\n\n00:00:00.000 --> 01:01:01.500\nHello, world.\n\n");
    }

    #[test]
    fn prerecorded_body_follows_the_contract() {
        let body = prerecorded(&transcript(), "tiny.en", b"abc");
        let alt = &body.results.channels[0].alternatives[0];
        assert_eq!(alt.transcript, "Hello, world.");
        assert_eq!(alt.words[0].word, "hello");
        assert_eq!(alt.words[0].punctuated_word, "Hello,");
        assert!((alt.confidence - 0.8).abs() < 1e-9);
        assert_eq!(body.metadata.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(body.metadata.models, vec![model_uuid("tiny.en")]);
        assert!(uuid::Uuid::parse_str(&body.metadata.request_id).is_ok());
        assert!(chrono::DateTime::parse_from_rfc3339(&body.metadata.created).is_ok());
    }
}
