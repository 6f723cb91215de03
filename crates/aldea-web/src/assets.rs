//! The stylesheet and scripts, embedded in the binary and served with their content's hash in the
//! URL (cached for a year); the headers every answer carries (CSP, no sniffing, no framing).

use std::sync::LazyLock;

use axum::extract::{Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../assets/app.css") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../assets/app.js") },
    Asset {
        name: "playground.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/playground.js"),
    },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_bytes!("../assets/favicon.svg") },
    Asset {
        name: "mic-worklet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/mic-worklet.js"),
    },
];

/// Each file's versioned URL: `/assets/NAME?v=HASH`.
static VERSIONS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|f| {
            let hash = Sha256::digest(f.body);
            let short: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
            (f.name, format!("/assets/{}?v={short}", f.name))
        })
        .collect()
});

/// The URL a page links `name` with (changes when the file does).
pub(crate) fn url(name: &str) -> &'static str {
    VERSIONS.iter().find(|(n, _)| *n == name).map_or("/assets/missing", |(_, url)| url.as_str())
}

pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|f| f.name == name) {
        Some(file) => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(file.content_type)),
                (CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            ],
            file.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The page's CSP: everything from this origin only, no inline script or style; the browser may
/// also reach the Speech API (HTTP and WebSocket) and make `blob:` downloads.
pub(crate) fn content_security_policy(api: &reqwest::Url) -> String {
    let origin = api.origin().ascii_serialization();
    let ws = origin.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {origin} {ws}; media-src 'self' blob:; worker-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Headers on every answer: the CSP, no MIME sniffing, no framing, no referrer to other sites,
/// the microphone for this origin only; pages (which may show a new key) are never cached.
pub(crate) async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&state.0.csp) {
        headers.insert(CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    headers.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("same-origin"));
    headers.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("microphone=(self), camera=(), geolocation=()"),
    );
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn csp_allows_the_api_and_no_inline_script() {
        let csp = super::content_security_policy(&"https://api.example.com/".parse().unwrap());
        assert!(csp.contains("connect-src 'self' https://api.example.com wss://api.example.com"));
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains("unsafe-inline"));
    }

    #[test]
    fn asset_urls_carry_a_content_hash() {
        let url = super::url("app.css");
        assert!(url.starts_with("/assets/app.css?v=") && url.len() == "/assets/app.css?v=".len() + 12);
        assert_eq!(super::url("nothing.js"), "/assets/missing");
    }
}
