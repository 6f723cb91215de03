//! HTTP plumbing every Aldea service puts in front of its routes (axum middleware).
//!
//! Invariant: no service logic and no aldea crate: what is here behaves the same in stt, the gateway
//! and the services to come; never reads configuration or the environment.

#![forbid(unsafe_code)]

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::CONNECTION;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub mod jwt;
pub mod spool;
pub mod ws;

/// Middleware: an answer given before the request's body was read to its end says
/// `Connection: close`.
///
/// hyper closes such a connection after the answer (the unread rest of the body is in the way of
/// the next request), but without saying so a keep-alive client puts it back in its pool and its
/// next request on it fails before any answer — on a slow machine often, on a fast one rarely. An
/// early refusal (a bad parameter, a missing credential, a body over the limit) is the usual case.
pub async fn close_when_body_unread(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let seen = finished.clone();
    let request = request.map(|body| Body::new(Watched { inner: body, finished: seen }));
    let mut response = next.run(request).await;
    if !finished.load(Ordering::Acquire) {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The request id: the caller's `x-request-id` when it sent a usable one (1 to 128 visible ASCII
/// characters), else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

tokio::task_local! {
    /// The id of the request whose answer is being made: set by [`request_id`] around the layers and
    /// handler inside it.
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being answered, when called from inside the [`request_id`] middleware
/// (a handler, an extractor, an error turned into its answer); `None` elsewhere, such as in a task
/// the request spawned.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(String::clone).ok()
}

/// Middleware: puts the [`RequestId`] in the request's extensions, runs the rest of the request
/// with it as the [`current_request_id`], and echoes it on the answer as `x-request-id` and
/// `dg-request-id` (the name Deepgram's clients read).
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = CURRENT_REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value.clone());
        response.headers_mut().insert("dg-request-id", value);
    }
    response
}

/// A request body that says when it has been read to its end.
struct Watched {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::post;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends one request with a body over a fresh connection: the answer's head, lowercased.
    async fn head_of(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = vec![b'x'; 200_000];
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer and close before taking the whole body.
        let _ = stream.write_all(&body).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "no answer");
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).to_lowercase()
    }

    #[tokio::test]
    async fn the_request_id_is_current_while_the_request_is_answered() {
        use tower::ServiceExt as _;
        let app = Router::new()
            .route("/", axum::routing::get(|| async { current_request_id().unwrap_or_default() }))
            .layer(axum::middleware::from_fn(request_id));
        let request = Request::builder().uri("/").header("x-request-id", "abc-1").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "abc-1");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"abc-1");
        // A new id when the caller sent none (or one not usable), the same in the header and inside.
        let request = Request::builder().uri("/").header("x-request-id", "a b").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let header = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!((header.len(), std::str::from_utf8(&body).unwrap()), (36, header.as_str()));
        assert_eq!(current_request_id(), None, "outside a request there is none");
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_read_closes_the_connection_and_says_so() {
        let app = Router::new()
            .route("/early", post(|| async { (axum::http::StatusCode::BAD_REQUEST, "refused") }))
            .route("/read", post(|body: Bytes| async move { body.len().to_string() }))
            .layer(axum::middleware::from_fn(close_when_body_unread));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let early = head_of(addr, "/early").await;
        assert!(early.starts_with("http/1.1 400"), "{early}");
        assert!(early.contains("connection: close"), "an early answer says the connection closes: {early}");
        let read = head_of(addr, "/read").await;
        assert!(read.starts_with("http/1.1 200"), "{read}");
        assert!(!read.contains("connection: close"), "a body read to its end keeps the connection: {read}");
    }
}
