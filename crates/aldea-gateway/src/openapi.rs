//! `GET /openapi.json`: the OpenAPI 3.1 document of the Speech API, generated from the handlers'
//! `#[utoipa::path]` annotations and the wire types of `aldea-proto`. The query parameters are the
//! contract's (they go to stt as they came, so they are listed here, once); the upload's aliases
//! share its operation; the WebSocket's messages are in the components (OpenAPI has no frames).
//!
//! Invariant: every public route is in the document, and every operation's error answers are the
//! error body (`default`).

use std::sync::OnceLock;

use aldea_proto::stream::{SpeechStarted, StreamMetadata, StreamResults, UtteranceEnd};
use aldea_proto::ErrorBody;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};

use crate::{grant, openai, probes, relay, upload};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aldea Speech API",
        description = "Speech to text, Deepgram-compatible: pre-recorded uploads and WebSocket streams, plus an \
                       OpenAI-compatible transcription endpoint. Authenticate with `Authorization: Token <key>` \
                       (or `Bearer <key>` / a short-lived JWT), or on a WebSocket with the subprotocols \
                       `token, <key>` / `bearer, <jwt>`. Every error answers with `{err_code, err_msg, request_id}`."
    ),
    paths(
        upload::listen_upload, relay::listen_ws, relay::listen_ws_pcm, openai::transcriptions, grant::grant,
        probes::live, probes::ready, probes::metrics_text,
    ),
    components(schemas(ErrorBody, StreamMetadata, StreamResults, SpeechStarted, UtteranceEnd)),
    modifiers(&Common),
    tags(
        (name = "listen", description = "Pre-recorded and streaming transcription"),
        (name = "openai", description = "For OpenAI SDK users"),
        (name = "auth", description = "Short-lived tokens for browsers"),
        (name = "probes", description = "For the orchestrator"),
    )
)]
struct SpeechApi;

/// The upload's aliases (the same operation).
const UPLOAD_ALIASES: [&str; 3] =
    ["/v1/listen/media", "/v1/listen/media/transcribe", "/v1/listen/media/transcribe_file"];

/// What a parameter this server accepts but does not implement yet says of itself.
const NOT_YET: &str =
    "Accepted, not implemented yet: named in `metadata.warnings[]`, never answered with invented output";

/// Query parameters of uploads and streams: (name, type, description). Booleans also take 1 and 0.
const COMMON_PARAMS: &[(&str, Type, &str)] = &[
    ("model", Type::String, "A model this server has; Deepgram and OpenAI model names are aliases of the default model"),
    ("language", Type::String, "BCP-47 (default `en`); `auto` detects it"),
    ("lang", Type::String, "An alias of `language`"),
    ("punctuate", Type::Boolean, "Punctuation and case as the model gives them (default true)"),
    ("smart_format", Type::Boolean, "Also numbers (default true)"),
    ("keywords", Type::String, NOT_YET),
    ("keyterm", Type::String, NOT_YET),
    ("redact", Type::String, NOT_YET),
    ("redact_mode", Type::String, NOT_YET),
    ("encoding", Type::String, "A headerless encoding read as declared (`linear16`, `mulaw`, `alaw`; streams also name containers); absent: detected"),
    ("sample_rate", Type::Integer, "Of a headerless encoding (default 16000)"),
    ("channels", Type::Integer, "Of a headerless encoding (default 1)"),
    ("tag", Type::String, "Repeatable: echoed in the metadata"),
];

const UPLOAD_PARAMS: &[(&str, Type, &str)] = &[
    ("detect_language", Type::Boolean, "Detect the language"),
    ("diarize", Type::Boolean, NOT_YET),
    ("diarization", Type::Boolean, NOT_YET),
    ("utterances", Type::Boolean, "`results.utterances[]`: the words split at pauses of `utt_split` seconds"),
    ("utt_split", Type::Number, "Seconds of silence between words that end an utterance (default 0.8)"),
    ("paragraphs", Type::Boolean, "`alternatives[].paragraphs`: sentences grouped into paragraphs at pauses"),
    ("multichannel", Type::Boolean, NOT_YET),
    ("callback", Type::String, NOT_YET),
    ("callback_method", Type::String, NOT_YET),
];

const STREAM_PARAMS: &[(&str, Type, &str)] = &[
    ("interim_results", Type::Boolean, "Revisable results before each final (default true)"),
    ("endpointing", Type::String, "Milliseconds of silence that end an utterance (default 300), or `false`"),
    ("utterance_end_ms", Type::Integer, "Enables UtteranceEnd messages after this gap"),
    ("vad_events", Type::Boolean, "Enables SpeechStarted messages"),
    ("format", Type::String, "An alias of `encoding`"),
    ("codec", Type::String, "An alias of `encoding`"),
    ("word_format", Type::String, "`tuple`: words as `[\"word\", start_ms, end_ms]`"),
    ("resume", Type::String, "A resume token from a Metadata message: continues that stream"),
];

fn query_params(table: &[(&str, Type, &str)]) -> Vec<Parameter> {
    table
        .iter()
        .map(|(name, kind, description)| {
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(ObjectBuilder::new().schema_type(kind.clone())))
                .build()
        })
        .collect()
}

/// What every operation shares (ways to authenticate, the error body of `default`), the query
/// parameters, the binary upload body and the aliases.
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <key>` (Deepgram's SDKs), or on a WebSocket the subprotocols `token, <key>`",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, or a short-lived JWT (`/v1/auth/grant`, the platform's listen-token)",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let (upload, stream) = (path == "/v1/listen", path.starts_with("/v1/listen"));
            if let (true, Some(post)) = (upload, item.post.as_mut()) {
                post.parameters.get_or_insert_with(Vec::new).extend(query_params(COMMON_PARAMS));
                post.parameters.get_or_insert_with(Vec::new).extend(query_params(UPLOAD_PARAMS));
                if let Some(body) = post.request_body.as_mut() {
                    if let Some(content) = body.content.get_mut("application/octet-stream") {
                        content.schema = Some(RefOr::T(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                                .into(),
                        ));
                    }
                }
            }
            if let (true, Some(get)) = (stream, item.get.as_mut()) {
                get.parameters.get_or_insert_with(Vec::new).extend(query_params(COMMON_PARAMS));
                get.parameters.get_or_insert_with(Vec::new).extend(query_params(STREAM_PARAMS));
            }
        }
        aldea_proto::openapi::default_error_responses(
            openapi,
            "An error: 400 bad parameter, 401 bad or missing key, 402 out of credit, 403 key lacks scope, 413 too large, 415 unsupported or undecodable audio, 429 limit (Retry-After), 503 no capacity (Retry-After)",
        );
        if let Some(form) = openapi
            .paths
            .paths
            .get_mut("/v1/audio/transcriptions")
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.request_body.as_mut())
            .and_then(|body| body.content.get_mut("multipart/form-data"))
        {
            form.schema = Some(RefOr::T(openai_form().into()));
        }
        if let Some(upload) = openapi.paths.paths.get("/v1/listen").and_then(|item| item.post.clone()) {
            for alias in UPLOAD_ALIASES {
                let mut operation = upload.clone();
                operation.operation_id = Some(format!("listen_upload_{}", alias.rsplit('/').next().unwrap_or("alias")));
                operation.description = Some("An alias of `POST /v1/listen`.".to_owned());
                let mut item = utoipa::openapi::PathItem::default();
                item.post = Some(operation);
                openapi.paths.paths.insert(alias.to_owned(), item);
            }
        }
    }
}

/// The fields of OpenAI's transcription form.
fn openai_form() -> ObjectBuilder {
    let text = |description: &str| ObjectBuilder::new().schema_type(Type::String).description(Some(description));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "file",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                .description(Some("The audio file")),
        )
        .required("file")
        .property("model", text("`whisper-1` and OpenAI's other names are the default model"))
        .property("language", text("ISO 639-1"))
        .property("prompt", text("Accepted; not used"))
        .property(
            "response_format",
            text("json (default), text, srt, vtt or verbose_json").enum_values(Some([
                "json",
                "text",
                "srt",
                "vtt",
                "verbose_json",
            ])),
        )
        .property(
            "timestamp_granularities[]",
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["word", "segment"])))
                .description(Some("With verbose_json: words and/or segments")),
        )
}

/// The document as JSON (built once).
fn document_json() -> Result<&'static str, String> {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    aldea_proto::openapi::json_once(&DOCUMENT, SpeechApi::openapi)
}

pub(crate) async fn document() -> Result<Response, crate::ApiError> {
    let json = document_json().map_err(|e| crate::ApiError::Internal(format!("the OpenAPI document: {e}")))?;
    Ok(([(CONTENT_TYPE, "application/json")], json).into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn the_document_has_every_public_route_and_resolves_every_reference() {
        let doc: Value = serde_json::from_str(super::document_json().unwrap()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let routes: &[(&str, &str)] = &[
            ("/v1/listen", "post"),
            ("/v1/listen", "get"),
            ("/v1/listen/pcm", "get"),
            ("/v1/listen/media", "post"),
            ("/v1/listen/media/transcribe", "post"),
            ("/v1/listen/media/transcribe_file", "post"),
            ("/v1/audio/transcriptions", "post"),
            ("/v1/auth/grant", "post"),
            ("/live", "get"),
            ("/ready", "get"),
            ("/metrics", "get"),
        ];
        assert_eq!(paths.len(), 10, "{:?}", paths.keys().collect::<Vec<_>>());
        for (path, method) in routes {
            let operation = &paths[*path][*method];
            assert!(operation["responses"]["default"].is_object(), "{method} {path}");
        }
        let upload = &paths["/v1/listen"]["post"];
        let params: Vec<&str> =
            upload["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        for name in ["model", "language", "encoding", "sample_rate", "utterances", "callback"] {
            assert!(params.contains(&name), "{name} in {params:?}");
        }
        assert_eq!(upload["requestBody"]["content"]["application/octet-stream"]["schema"]["format"], "binary");
        let form =
            &paths["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"];
        assert_eq!(form["properties"]["file"]["format"], "binary");
        assert_eq!(
            upload["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/PrerecordedResponse"
        );
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "{name} is referred to but missing");
        }
        for message in ["StreamResults", "StreamMetadata", "SpeechStarted", "UtteranceEnd"] {
            assert!(schemas.contains_key(message), "{message}");
        }
    }
}
