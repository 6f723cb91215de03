//! The docs page: copy-paste examples pre-filled with this deployment's Speech API URL (curl,
//! Python with the Deepgram and OpenAI SDKs, JavaScript), then the API reference read from the
//! two OpenAPI documents (the gateway's Speech API and the platform's), fetched and kept a few
//! minutes.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::PageError;
use crate::pages::{html, layout, Ctx};
use crate::session::Session;
use crate::AppState;

/// How long a fetched document is shown before it is fetched again.
const KEEP: Duration = Duration::from_secs(300);
/// How long a failed fetch is shown as failed before it is tried again.
const RETRY: Duration = Duration::from_secs(20);
/// How long a page waits for a document.
const FETCH: Duration = Duration::from_secs(4);

/// The Speech API's and the platform's documents as last fetched (none where one did not answer).
struct Fetched {
    at: Instant,
    speech: Option<Value>,
    platform: Option<Value>,
}

#[derive(Default)]
pub(crate) struct DocsCache {
    documents: Mutex<Option<Fetched>>,
}

impl DocsCache {
    /// The Speech API's and the platform's documents (none where the service did not answer).
    /// The lock is not held while fetching: a slow service delays the pages that wait for it only.
    async fn get(&self, state: &AppState) -> (Option<Value>, Option<Value>) {
        if let Some(f) = self.documents.lock().await.as_ref() {
            // A document that did not come is asked for again sooner, not on every page view.
            let keep = if f.speech.is_some() && f.platform.is_some() { KEEP } else { RETRY };
            if f.at.elapsed() < keep {
                return (f.speech.clone(), f.platform.clone());
            }
        }
        let speech_url = format!("{}/openapi.json", state.api_base());
        let (speech, platform) = tokio::join!(
            tokio::time::timeout(FETCH, async {
                match crate::Url::parse(&speech_url) {
                    Ok(url) => state.platform().fetch_json(url).await,
                    Err(e) => Err(crate::platform::PlatformError::Unavailable(e.to_string())),
                }
            }),
            tokio::time::timeout(FETCH, state.platform().openapi()),
        );
        let mut documents = [("speech", None), ("platform", None)];
        for ((name, slot), result) in documents.iter_mut().zip([speech, platform]) {
            match result {
                Ok(Ok(document)) => *slot = Some(document),
                Ok(Err(e)) => tracing::warn!(document = *name, error = %e, "fetching an OpenAPI document"),
                Err(_) => tracing::warn!(document = *name, "fetching an OpenAPI document timed out"),
            }
        }
        let [(_, speech), (_, platform)] = documents;
        *self.documents.lock().await =
            Some(Fetched { at: Instant::now(), speech: speech.clone(), platform: platform.clone() });
        (speech, platform)
    }
}

pub(crate) async fn page(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let (speech, platform) = state.0.docs.get(&state).await;
    let api = state.api_base();
    let ws = api.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    Ok(html(layout::page(
        &ctx,
        "/docs",
        "Docs",
        &[],
        html! {
            p { "The Speech API is at " code { (api) } ". It speaks Deepgram's " code { "/v1/listen" } " (files and live streams) and OpenAI's " code { "/v1/audio/transcriptions" } ", so their SDKs work once pointed here. Make a key on the " a href="/keys" { "API keys" } " page and put it where the examples say " code { "YOUR_KEY" } "." }
            nav aria-label="On this page" class="toc" {
                ul {
                    li { a href="#examples" { "Examples" } }
                    li { a href="#speech-api" { "Speech API reference" } }
                    li { a href="#platform-api" { "Platform API reference" } }
                }
            }
            h2 id="examples" { "Examples" }
            (example("curl: transcribe a file", &format!("curl -X POST '{api}/v1/listen?smart_format=true' \\\n  -H 'Authorization: Token YOUR_KEY' \\\n  -H 'Content-Type: audio/wav' \\\n  --data-binary @audio.wav")))
            (example("curl: transcribe a file at a URL", &format!("curl -X POST '{api}/v1/listen' \\\n  -H 'Authorization: Token YOUR_KEY' \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"url\": \"https://example.com/audio.mp3\"}}'")))
            (example("Python: the Deepgram SDK (pip install deepgram-sdk)", &format!(
                "from deepgram import DeepgramClient\nfrom deepgram.environment import DeepgramClientEnvironment\n\nenvironment = DeepgramClientEnvironment(\n    base=\"{api}\", production=\"{ws}\", agent=\"{ws}\", agent_rest=\"{api}\")\nclient = DeepgramClient(api_key=\"YOUR_KEY\", environment=environment)\nwith open(\"audio.wav\", \"rb\") as audio:\n    response = client.listen.v1.media.transcribe_file(request=audio.read(), smart_format=True)\nprint(response.results.channels[0].alternatives[0].transcript)")))
            (example("Python: the OpenAI SDK (pip install openai)", &format!(
                "from openai import OpenAI\n\nclient = OpenAI(api_key=\"YOUR_KEY\", base_url=\"{api}/v1\")\nwith open(\"audio.wav\", \"rb\") as audio:\n    result = client.audio.transcriptions.create(file=audio, model=\"whisper-1\")\nprint(result.text)")))
            (example("JavaScript: a file (Node 18+ or a server)", &format!(
                "import {{ readFile }} from 'node:fs/promises';\n\nconst response = await fetch('{api}/v1/listen?smart_format=true', {{\n  method: 'POST',\n  headers: {{ Authorization: 'Token YOUR_KEY', 'Content-Type': 'audio/wav' }},\n  body: await readFile('audio.wav'),\n}});\nconst answer = await response.json();\nconsole.log(answer.results.channels[0].alternatives[0].transcript);")))
            (example("JavaScript: a live stream (16-bit PCM at 16 kHz)", &format!(
                "const socket = new WebSocket('{ws}/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true',\n  ['token', 'YOUR_KEY']);\nsocket.onmessage = (event) => {{\n  const message = JSON.parse(event.data);\n  if (message.type === 'Results') {{\n    console.log(message.is_final ? 'final:' : 'interim:', message.channel.alternatives[0].transcript);\n  }}\n}};\n// socket.send(pcmChunk) as audio arrives, then:\n// socket.send(JSON.stringify({{ type: 'CloseStream' }}));")))
            p class="hint" { "In a browser, never put a long-lived key in a page: have your server ask the platform for a 30-second token (" code { "POST /v1/orgs/{org_id}/listen-token" } ") and open the socket with " code { "['bearer', token]" } ", as this dashboard's playground does." }
            h2 id="speech-api" { "Speech API reference" }
            (reference(speech.as_ref(), &format!("{api}/openapi.json")))
            h2 id="platform-api" { "Platform API reference" }
            (reference(platform.as_ref(), "the platform's /openapi.json"))
        },
    )))
}

fn example(title: &str, code: &str) -> Markup {
    html! {
        figure class="example" {
            figcaption { (title) }
            div class="code-wrap" {
                pre class="code" tabindex="0" { code { (code) } }
                button type="button" class="secondary copy-code" aria-label={ "Copy: " (title) } { "Copy" }
            }
        }
    }
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// An OpenAPI document's operations: method, path, summary, description and parameters.
fn reference(document: Option<&Value>, source: &str) -> Markup {
    let Some(document) = document else {
        return html! { p class="alert" role="alert" { "The document (" (source) ") could not be fetched just now; reload in a moment." } };
    };
    let info = &document["info"];
    let paths = document["paths"].as_object();
    html! {
        p { strong { (info["title"].as_str().unwrap_or("API")) } " " (info["version"].as_str().unwrap_or("")) ". " (info["description"].as_str().unwrap_or("")) " The machine-readable document: " code { (source) } "." }
        @if let Some(paths) = paths {
            @for (path, item) in paths {
                @for method in METHODS {
                    @if let Some(op) = item.get(*method) {
                        section class="operation" {
                            h3 { span class={ "method " (method) } { (method.to_uppercase()) } " " code { (path) } }
                            @if let Some(summary) = op["summary"].as_str() { p { (summary) } }
                            @if let Some(description) = op["description"].as_str() { @if Some(description) != op["summary"].as_str() { p class="hint" { (description) } } }
                            @if let Some(types) = op["requestBody"]["content"].as_object() {
                                p class="hint" { "Body: " @for (i, t) in types.keys().enumerate() { @if i > 0 { ", " } code { (t) } } }
                            }
                            @if let Some((code, answer)) = op["responses"].as_object().and_then(|r| r.iter().find(|(c, _)| c.starts_with('2'))) {
                                p class="hint" { "Answers " (code) ": " (answer["description"].as_str().unwrap_or("")) }
                            }
                            (parameters(op))
                        }
                    }
                }
            }
        }
    }
}

fn parameters(op: &Value) -> Markup {
    let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) else { return html! {} };
    html! {
        div {
            table class="params" {
                thead { tr { th scope="col" { "Parameter" } th scope="col" { "In" } th scope="col" { "Description" } } }
                tbody {
                    @for p in params {
                        tr {
                            th scope="row" { code { (p["name"].as_str().unwrap_or("")) } @if p["required"].as_bool() == Some(true) { " " span class="tag" { "required" } } }
                            td { (p["in"].as_str().unwrap_or("")) }
                            td { (p["description"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}
