//! `POST /v1/audio/transcriptions`, OpenAI-compatible: a multipart form (`file`, `model`,
//! `language`, `prompt`, `response_format`, `timestamp_granularities[]`) transcribed through the same
//! stt upload as `/v1/listen`, answered as `json`, `text`, `srt`, `vtt` or `verbose_json`.
//!
//! Invariant: the upload's slot is taken before the form is read, and given back with its usage
//! metered whatever the answer; every field is capped while it is read (the file at
//! `max_body_bytes`, spooled to a temporary file past the threshold; the others at 4 KiB) and every wait for the next piece bounded; stt's refusals
//! are relayed as they came.

use aldea_http::spool::{spool, SpoolError, SpoolLimits, Spooled};
use aldea_http::RequestId;
use aldea_proto::subtitles::{self, Cue};
use aldea_proto::{Alternative, PrerecordedResponse};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use tokio::time::timeout;

use crate::error::{ApiError, IntoApi};
use crate::extract::UploadSlot;
use crate::{upstream, AppState};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl Format {
    fn parse(s: &str) -> Result<Format, ApiError> {
        match s {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            "srt" => Ok(Format::Srt),
            "vtt" => Ok(Format::Vtt),
            "verbose_json" => Ok(Format::VerboseJson),
            other => Err(ApiError::BadRequest(format!(
                "response_format {other:?} is not one of json, text, srt, vtt, verbose_json"
            ))),
        }
    }
}

/// The form as sent.
#[derive(Debug, Default)]
struct Form {
    file: Option<(Spooled, Option<HeaderValue>)>,
    model: Option<String>,
    language: Option<String>,
    response_format: Option<String>,
    word_timestamps: bool,
    segment_timestamps: bool,
}

#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "openai", security(("token" = []), ("bearer" = [])),
    request_body(description = "OpenAI's form: `file` (the audio), `model`, `language`, `prompt`, `response_format` (json, text, srt, vtt, verbose_json), `timestamp_granularities[]` (word, segment)",
        content((String = "multipart/form-data"))),
    responses((status = 200, description = "`json`: `{\"text\"}`; `verbose_json`: text, language, duration, segments and words; `text`, `srt`, `vtt`: the plain text", content(
        (serde_json::Value = "application/json"), (String = "text/plain"), (String = "application/x-subrip"), (String = "text/vtt")))))]
pub(crate) async fn transcriptions(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    slot: UploadSlot,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let result: Result<(Response, Option<f64>), ApiError> = async {
        let multipart =
            multipart.map_err(|e| ApiError::BadRequest(format!("a multipart/form-data body is needed: {e}")))?;
        let limits = state.spool_limits(state.config().max_body_bytes, state.config().body_idle_timeout);
        let form = read_form(multipart, &limits).await?;
        let format = Format::parse(form.response_format.as_deref().unwrap_or("json"))?;
        let (audio, content_type) =
            form.file.clone().ok_or_else(|| ApiError::BadRequest("the form has no `file` field".to_owned()))?;
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(model) = &form.model {
                query.append_pair("model", model);
            }
            if let Some(language) = &form.language {
                query.append_pair("language", language);
            }
            query.finish()
        };
        // A form's part type says little (browsers send application/octet-stream): stt detects.
        let content_type = content_type.filter(|c| c.to_str().is_ok_and(|c| c.starts_with("audio/")));
        let answer = upstream::post_upload(&state, &request_id, &query, &audio, content_type, None).await?;
        if !answer.status.is_success() {
            return Ok((answer.into_response(), None));
        }
        let body: PrerecordedResponse = serde_json::from_slice(&answer.body).map_err(|e| {
            ApiError::Internal(format!("stt answered something that is not a pre-recorded response: {e}"))
        })?;
        Ok((render(&body, format, &form), Some(body.metadata.duration)))
    }
    .await;
    let (status, seconds) = match &result {
        Ok((response, seconds)) => (response.status(), *seconds),
        Err(e) => (e.status(), None),
    };
    slot.finish(&state, status, seconds).await;
    result.map(|(response, _)| response)
}

/// Longest value of a form field other than `file`.
const MAX_FIELD_BYTES: usize = 4096;
/// What a form may add around its file (boundaries, part headers, the other fields).
pub(crate) const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// Reads the form: every field capped while it is read (the file at the limit, spooled as an
/// upload's body is, the others at [`MAX_FIELD_BYTES`]), and every wait for the next piece bounded
/// by the idle time.
async fn read_form(mut multipart: Multipart, limits: &SpoolLimits) -> Result<Form, ApiError> {
    let (limit, idle) = (limits.max_bytes, limits.idle);
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("the form is larger than the limit of {limit} bytes"))
        } else {
            ApiError::BadRequest(format!("malformed form: {e}"))
        }
    };
    let stalled = || ApiError::Timeout(format!("no part of the form arrived for {} s", idle.as_secs_f64()));
    let mut form = Form::default();
    while let Some(mut field) = timeout(idle, multipart.next_field()).await.map_err(|_| stalled())?.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        let content_type = field.content_type().and_then(|c| HeaderValue::from_str(c).ok());
        if name == "file" {
            let file = spool(&mut field, None, limits).await.map_err(|e| match e {
                SpoolError::TooLarge { .. } => {
                    ApiError::TooLarge(format!("the file is larger than the limit of {limit} bytes"))
                }
                SpoolError::Idle(_) => stalled(),
                other => other.into_api(bad),
            })?;
            form.file = Some((file, content_type));
            continue;
        }
        let too_long = || ApiError::BadRequest(format!("the field {name:?} is longer than {MAX_FIELD_BYTES} bytes"));
        let mut data: Vec<u8> = Vec::new();
        while let Some(chunk) = timeout(idle, field.chunk()).await.map_err(|_| stalled())?.map_err(bad)? {
            if data.len() + chunk.len() > MAX_FIELD_BYTES {
                return Err(too_long());
            }
            data.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(data)
            .map_err(|_| ApiError::BadRequest(format!("the field {name:?} is not UTF-8 text")))?;
        match name.as_str() {
            "model" => form.model = Some(value),
            "language" => form.language = Some(value),
            "response_format" => form.response_format = Some(value),
            "timestamp_granularities[]" | "timestamp_granularities" => match value.as_str() {
                "word" => form.word_timestamps = true,
                "segment" => form.segment_timestamps = true,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "timestamp_granularities {other:?} is not one of word, segment"
                    )))
                }
            },
            // Accepted and not used: Whisper's decoding here is deterministic, and the prompt is
            // not passed to the model yet.
            "prompt" | "temperature" | "stream" | "chunking_strategy" | "include[]" => {}
            other => tracing::debug!(field = other, "unknown form field ignored"),
        }
    }
    Ok(form)
}

/// A word of the stt answer, as OpenAI's answers show it.
#[derive(Debug, Clone, PartialEq)]
struct Word {
    text: String,
    start: f64,
    end: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Segment {
    id: usize,
    seek: usize,
    start: f64,
    end: f64,
    text: String,
    tokens: Vec<u32>,
    temperature: f64,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
}

/// The first channel's first alternative: what the answer is made from.
fn alternative(body: &PrerecordedResponse) -> Option<&Alternative> {
    body.results.channels.first()?.alternatives.first()
}

fn words_of(body: &PrerecordedResponse) -> Vec<Word> {
    let words = alternative(body).map(|a| a.words.as_slice()).unwrap_or_default();
    words.iter().map(|w| Word { text: w.punctuated_word.clone(), start: w.start, end: w.end }).collect()
}

/// Words grouped into segments as subtitles' cues are ([`subtitles::sentences`]).
fn segments(words: &[Word]) -> Vec<Segment> {
    subtitles::sentences(words.iter().map(|w| (w.start, w.end, w.text.as_str())))
        .into_iter()
        .enumerate()
        .map(|(id, s)| Segment {
            id,
            seek: 0,
            start: s.start,
            end: s.end,
            text: s.text,
            tokens: Vec::new(),
            temperature: 0.0,
            avg_logprob: 0.0,
            compression_ratio: 0.0,
            no_speech_prob: 0.0,
        })
        .collect()
}

fn language_name(code: &str) -> String {
    let name = match code.split(['-', '_']).next().unwrap_or(code) {
        "en" => "english",
        "de" => "german",
        "es" => "spanish",
        "fr" => "french",
        "it" => "italian",
        "pt" => "portuguese",
        "nl" => "dutch",
        "ru" => "russian",
        "zh" => "chinese",
        "ja" => "japanese",
        "ko" => "korean",
        other => other,
    };
    name.to_owned()
}

fn cues(segments: &[Segment]) -> impl Iterator<Item = Cue<'_>> {
    segments.iter().map(|s| Cue { start: s.start, end: s.end, text: &s.text })
}

fn render(body: &PrerecordedResponse, format: Format, form: &Form) -> Response {
    let text = alternative(body).map_or("", |a| a.transcript.as_str());
    let words = words_of(body);
    let with_type = |content_type: &'static str, text: String| {
        ([(CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response()
    };
    match format {
        Format::Json => Json(serde_json::json!({ "text": text })).into_response(),
        Format::Text => with_type("text/plain; charset=utf-8", format!("{text}\n")),
        Format::Srt => with_type("application/x-subrip; charset=utf-8", subtitles::srt(cues(&segments(&words)))),
        Format::Vtt => with_type("text/vtt; charset=utf-8", subtitles::vtt(cues(&segments(&words)))),
        Format::VerboseJson => {
            let language = body
                .results
                .channels
                .first()
                .and_then(|c| c.detected_language.as_deref())
                .or(form.language.as_deref())
                .unwrap_or("en");
            let duration = body.metadata.duration;
            let mut answer = serde_json::json!({
                "task": "transcribe",
                "language": language_name(language),
                "duration": duration,
                "text": text,
            });
            // Segments unless only words were asked for (OpenAI's behaviour).
            if form.segment_timestamps || !form.word_timestamps {
                answer["segments"] = serde_json::to_value(segments(&words)).unwrap_or_default();
            }
            if form.word_timestamps {
                answer["words"] = words
                    .iter()
                    .map(|w| serde_json::json!({"word": w.text, "start": w.start, "end": w.end}))
                    .collect::<Vec<_>>()
                    .into();
            }
            Json(answer).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, start: f64, end: f64) -> Word {
        Word { text: text.to_owned(), start, end }
    }

    #[test]
    fn segments_end_at_sentences_pauses_and_length() {
        let words = [
            word("Mr.", 0.0, 0.2),
            word("Hello", 0.2, 0.4),
            word("there.", 0.5, 0.9),
            word("After", 1.0, 1.3),
            word("a", 1.4, 1.5),
            word("pause", 3.0, 3.4),
            word("it", 3.5, 3.6),
            word("goes", 3.7, 4.0),
        ];
        let s = segments(&words);
        let texts: Vec<&str> = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, [" Mr. Hello there.", " After a", " pause it goes"]);
        assert_eq!((s[2].id, s[2].start, s[2].end), (2, 3.0, 4.0));
        let long: Vec<Word> = (0..40).map(|i| word("w", f64::from(i) * 0.5, f64::from(i) * 0.5 + 0.4)).collect();
        assert!(segments(&long).iter().all(|s| s.end - s.start <= subtitles::MAX_CUE_S));
    }

    /// An stt answer of two sentences, as stt writes it.
    fn answer() -> PrerecordedResponse {
        let words = vec![
            aldea_proto::Word::from_punctuated("Hello", 0.0, 0.4, 0.9),
            aldea_proto::Word::from_punctuated("there.", 0.5, 0.9, 0.9),
            aldea_proto::Word::from_punctuated("Bye.", 2.5, 2.8, 0.9),
        ];
        serde_json::from_value(serde_json::json!({
            "metadata": {"request_id": "r1", "created": "2026-11-25T21:00:00Z", "duration": 3.0, "channels": 1,
                "models": [], "model_info": {}, "sha256": ""},
            "results": {"channels": [{"detected_language": "de", "alternatives": [
                {"transcript": "Hello there. Bye.", "confidence": 0.9, "words": words}]}]}
        }))
        .unwrap()
    }

    async fn rendered(format: Format, form: &Form) -> (String, String) {
        let response = render(&answer(), format, form);
        let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn an_stt_answer_in_every_format() {
        let form = Form::default();
        assert_eq!(rendered(Format::Json, &form).await.1, r#"{"text":"Hello there. Bye."}"#);
        assert_eq!(
            rendered(Format::Text, &form).await,
            ("text/plain; charset=utf-8".to_owned(), "Hello there. Bye.\n".to_owned())
        );
        assert_eq!(
            rendered(Format::Srt, &form).await.1,
            "1\n00:00:00,000 --> 00:00:00,900\nHello there.\n\n2\n00:00:02,500 --> 00:00:02,800\nBye.\n\n"
        );
        assert_eq!(
            rendered(Format::Vtt, &form).await.1,
            "WEBVTT\n\n00:00:00.000 --> 00:00:00.900\nHello there.\n\n00:00:02.500 --> 00:00:02.800\nBye.\n\n"
        );
        let words_only = Form { word_timestamps: true, ..Form::default() };
        let verbose: serde_json::Value =
            serde_json::from_str(&rendered(Format::VerboseJson, &words_only).await.1).unwrap();
        assert_eq!(
            verbose,
            serde_json::json!({"task": "transcribe", "language": "german", "duration": 3.0, "text": "Hello there. Bye.",
                "words": [{"word": "Hello", "start": 0.0, "end": 0.4}, {"word": "there.", "start": 0.5, "end": 0.9},
                    {"word": "Bye.", "start": 2.5, "end": 2.8}]})
        );
        let verbose: serde_json::Value = serde_json::from_str(&rendered(Format::VerboseJson, &form).await.1).unwrap();
        let segments: Vec<(&str, f64, f64)> = verbose["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["text"].as_str().unwrap(), s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap()))
            .collect();
        assert_eq!(segments, [(" Hello there.", 0.0, 0.9), (" Bye.", 2.5, 2.8)]);
    }
}
