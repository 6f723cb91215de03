//! What the gateway adds, measured (`cargo run --release -p aldea-gateway --example overhead`):
//! - relay overhead per frame: a client sends a binary frame and waits for the answer a stand-in
//!   stt replica sends back at once, straight to the replica and through the gateway; the
//!   difference of the round trips is the gateway's two relay hops;
//! - key check with a warm cache: `POST /v1/auth/grant` (credential check + a JWT) against
//!   `GET /live` (no check) on one keep-alive connection.
//!
//! Percentiles over many round trips on loopback; both paths run in the same process and run.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aldea_gateway::{AppState, Config, Deps};
use aldea_store::{Credit, Keys, MemoryKeyCache, MemoryKeys, MemoryLimits, MemoryUsageQueue, NewKey};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const FRAMES: usize = 20_000;
const REQUESTS: usize = 20_000;

/// A replica that answers every audio frame with a small Results message, at once.
async fn spawn_echo_replica() -> String {
    let app = Router::new()
        .route("/ready", get(|| async { "ready" }))
        .route(
            "/v1/capacity",
            get(|| async { Json(serde_json::json!({"free_stream_slots": 4, "queue_depth": 0, "ready": true})) }),
        )
        .route(
            "/v1/listen",
            get(|upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(|mut socket| async move {
                    while let Some(Ok(message)) = socket.recv().await {
                        if let Message::Binary(_) = message {
                            let answer = r#"{"type":"Results","start":0.0,"duration":0.1,"is_final":false}"#;
                            if socket.send(Message::Text(answer.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("127.0.0.1:{}", addr.port())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

async fn round_trips(url: &str, auth: Option<&str>) -> Vec<Duration> {
    let mut request = url.into_client_request().unwrap();
    if let Some(auth) = auth {
        request.headers_mut().insert("authorization", auth.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let frame = vec![0u8; 3200];
    let mut times = Vec::with_capacity(FRAMES);
    for i in 0..FRAMES + 500 {
        let started = Instant::now();
        ws.send(WsMessage::Binary(frame.clone().into())).await.unwrap();
        loop {
            match ws.next().await.unwrap().unwrap() {
                WsMessage::Text(text) if text.as_str().contains("Results") => break,
                _ => {}
            }
        }
        // The first 500 warm the connection up.
        if i >= 500 {
            times.push(started.elapsed());
        }
    }
    times
}

/// Round trips of one HTTP request on a keep-alive connection.
async fn requests(client: &reqwest::Client, url: &str, post_auth: Option<&str>) -> Vec<Duration> {
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS + 500 {
        let started = Instant::now();
        let response = match post_auth {
            Some(auth) => client.post(url).header("authorization", auth).send().await.unwrap(),
            None => client.get(url).send().await.unwrap(),
        };
        assert!(response.status().is_success());
        let _ = response.bytes().await.unwrap();
        if i >= 500 {
            times.push(started.elapsed());
        }
    }
    times
}

fn report(label: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    let (p50, p99) = (percentile(samples, 0.50), percentile(samples, 0.99));
    println!("{label}: p50 {:.3} ms, p99 {:.3} ms ({} samples)", ms(p50), ms(p99), samples.len());
    (p50, p99)
}

/// Prints what `with` adds to `base`, percentile by percentile (p50, p99).
fn report_difference(label: &str, base: (Duration, Duration), with: (Duration, Duration)) {
    println!(
        "{label}: p50 {:.3} ms, p99 {:.3} ms",
        ms(with.0.saturating_sub(base.0)),
        ms(with.1.saturating_sub(base.1))
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let replica = spawn_echo_replica().await;
    let keys = Arc::new(MemoryKeys::new());
    let org = keys.create_org("bench", Credit::Unlimited, 0).await.unwrap();
    let (_, key) = keys.create_key(&org.id, NewKey::listen("bench"), aldea_store::unix_now()).await.unwrap();
    let deps = Deps {
        keys,
        key_cache: Arc::new(MemoryKeyCache::new()),
        limits: Arc::new(MemoryLimits::new()),
        usage: Arc::new(MemoryUsageQueue::default()),
    };
    let config = Config {
        stt_urls: vec![format!("http://{replica}")],
        jwt_secret: Some("a benchmark secret that is long enough".into()),
        // A warm cache: the benchmark asks about the same key all the time.
        key_cache_ttl: Duration::from_secs(3600),
        key_requests_per_minute: u32::MAX,
        ..Config::default()
    };
    let state = AppState::new(config, deps).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(aldea_gateway::serve(state, listener, stop.clone()));
    let auth = format!("Token {key}");

    println!("frames of 3,200 bytes, one at a time, answered at once by a stand-in replica (loopback)");
    let mut direct = round_trips(&format!("ws://{replica}/v1/listen"), None).await;
    let mut relayed = round_trips(&format!("ws://{gateway}/v1/listen"), Some(&auth)).await;
    let direct = report("straight to the replica", &mut direct);
    let relayed = report("through the gateway", &mut relayed);
    report_difference("relay overhead per frame (both hops)", direct, relayed);

    let client = reqwest::Client::new();
    let mut live = requests(&client, &format!("http://{gateway}/live"), None).await;
    let mut grant = requests(&client, &format!("http://{gateway}/v1/auth/grant"), Some(&auth)).await;
    let live = report("GET /live (no key check)", &mut live);
    let grant = report("POST /v1/auth/grant (key check + JWT)", &mut grant);
    report_difference("key check with a warm cache (grant − live)", live, grant);
    stop.cancel();
}
