//! A stand-in stt replica for load tests of the gateway alone: it accepts any number of streams,
//! sends the opening Metadata, and answers nothing else (an idle stream costs it almost nothing).
//! Prints `listening on http://ADDR`. Used by `scripts/bench-idle.sh`.
#![allow(clippy::print_stdout)] // A benchmark tool reports on stdout.

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use axum::{Json, Router};

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let app = Router::new()
        .route("/ready", get(|| async { "ready" }))
        .route(
            "/v1/capacity",
            get(|| async {
                Json(serde_json::json!({"free_stream_slots": 1_000_000, "queue_depth": 0, "ready": true}))
            }),
        )
        .route(
            "/v1/listen",
            get(|upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(|mut socket| async move {
                    let _ = socket.send(Message::Text(r#"{"type":"Metadata","duration":0.0}"#.into())).await;
                    while let Some(Ok(message)) = socket.recv().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding");
    println!("listening on http://{}", listener.local_addr().expect("an address"));
    axum::serve(listener, app).await.expect("serving");
}
