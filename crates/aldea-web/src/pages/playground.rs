//! The playground: a file or the microphone through the public Speech API, called by the browser
//! itself with a 30-s token the platform's `listen-token` makes for the organization (the page
//! never holds a long-lived key). The subtitle downloads are made here from the transcript's words
//! by the one SRT/WebVTT writer.

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Json, Response};
use maud::html;
use serde::Deserialize;

use super::{html, layout, Ctx};
use crate::error::PageError;
use crate::session::Session;
use crate::AppState;

pub(crate) async fn page(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    ctx.org()?;
    let api = state.api_base();
    Ok(html(layout::page(
        &ctx,
        "/playground",
        "Playground",
        &["playground.js"],
        html! {
            p { "Try the Speech API at " code { (api) } " on a recording or your microphone. Requests here count as usage of your organization's " em { "dashboard" } " key." }
            noscript { p class="alert" { "The playground calls the API from your browser: it needs JavaScript." } }
            div id="playground" data-api=(api) data-worklet=(crate::assets::url("mic-worklet.js")) {
                section class="card" aria-labelledby="file-title" {
                    h2 id="file-title" { "A file" }
                    form id="upload" class="inline" {
                        label for="audio-file" { "Audio file" }
                        input id="audio-file" name="file" type="file" accept="audio/*,video/*,.wav,.mp3,.flac,.ogg,.opus,.webm,.m4a" required;
                        button type="submit" { "Transcribe" }
                    }
                    p id="upload-status" class="hint" role="status" aria-live="polite" {}
                    h3 id="transcript-title" { "Transcript" }
                    div id="transcript" class="transcript" role="region" aria-labelledby="transcript-title" {}
                    h3 id="words-title" { "Words" }
                    div id="words" role="region" aria-labelledby="words-title" tabindex="0" class="words" {
                        p class="hint" { "Word timings and downloads (SRT, WebVTT, JSON) appear here after a transcription." }
                    }
                }
                section class="card" aria-labelledby="mic-title" {
                    h2 id="mic-title" { "Your microphone" }
                    p class="hint" { "Streams live over a WebSocket; grey text is interim and may still change." }
                    div class="inline" {
                        button type="button" id="mic-start" { "Start microphone" }
                        button type="button" id="mic-stop" class="secondary" disabled { "Stop microphone" }
                    }
                    p id="mic-status" class="hint" role="status" aria-live="polite" {}
                    h3 id="live-title" { "Live transcript" }
                    div id="live" class="transcript" role="region" aria-labelledby="live-title" aria-live="polite" {}
                }
            }
        },
    )))
}

/// `POST /playground/token` (from the page's script, with the CSRF token in `x-csrf-token`): a
/// 30-s Speech API token of the organization picked.
pub(crate) async fn token(
    State(state): State<AppState>,
    session: Result<Session, PageError>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        let session = session?;
        session.check_csrf(csrf_header(&headers))?;
        let ctx = Ctx::load(&state, session).await?;
        let org = ctx.org()?;
        Ok::<_, PageError>(state.platform().listen_token(ctx.token(), &org.id).await?)
    };
    match answer.await {
        Ok(token) => Json(token).into_response(),
        Err(e) => e.into_json(),
    }
}

fn csrf_header(headers: &HeaderMap) -> &str {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[derive(Deserialize)]
pub(crate) struct SubtitleQuery {
    format: String,
}

/// `POST /playground/subtitles?format=srt|vtt` with a transcript (the Speech API's answer): the
/// subtitle file of its first channel's words.
pub(crate) async fn subtitles(
    session: Result<Session, PageError>,
    headers: HeaderMap,
    Query(query): Query<SubtitleQuery>,
    body: axum::body::Bytes,
) -> Response {
    subtitle_file(session, &headers, &query, &body).unwrap_or_else(PageError::into_json)
}

fn subtitle_file(
    session: Result<Session, PageError>,
    headers: &HeaderMap,
    query: &SubtitleQuery,
    body: &[u8],
) -> Result<Response, PageError> {
    session?.check_csrf(csrf_header(headers))?;
    let answer: aldea_proto::PrerecordedResponse = serde_json::from_slice(body)
        .map_err(|e| PageError::BadRequest(format!("That is not a transcript of the Speech API: {e}")))?;
    let words = answer
        .results
        .channels
        .first()
        .and_then(|c| c.alternatives.first())
        .map(|a| a.words.as_slice())
        .unwrap_or_default();
    let sentences =
        aldea_proto::subtitles::sentences(words.iter().map(|w| (w.start, w.end, w.punctuated_word.as_str())));
    let cues = sentences.iter().map(|s| s.cue());
    let (content_type, text) = match query.format.as_str() {
        "srt" => ("application/x-subrip; charset=utf-8", aldea_proto::subtitles::srt(cues)),
        "vtt" => ("text/vtt; charset=utf-8", aldea_proto::subtitles::vtt(cues)),
        other => return Err(PageError::BadRequest(format!("format {other:?} is neither srt nor vtt"))),
    };
    Ok(([(CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response())
}
