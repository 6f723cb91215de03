//! A `url` body is fetched straight from the address the gateway checked, whatever proxy the
//! environment names (a proxy would connect wherever it likes, past the address pinning). Its own
//! test binary: the proxy variables are set for the whole process before anything else runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aldea_gateway::{AppState, Config, Deps};
use aldea_store::{Credit, Keys, MemoryKeyCache, MemoryKeys, MemoryLimits, MemoryUsageQueue, NewKey};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn url_fetches_ignore_proxy_environment_variables() {
    // A proxy that counts the connections it gets and answers each with 502.
    let proxied = Arc::new(AtomicUsize::new(0));
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let count = proxied.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = proxy.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = socket.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    // The clients of this test talk to loopback directly; only the gateway would use the proxy.
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(name, &proxy_url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    // The audio file, and an stt stand-in that answers with the length it got.
    let files = Router::new().route("/audio.raw", get(|| async { vec![0u8; 16000] }));
    let file_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let file_addr = file_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(file_listener, files).await });
    let stt = Router::new()
        .route("/ready", get(|| async { "ready" }))
        .route(
            "/v1/capacity",
            get(|| async { Json(serde_json::json!({"free_stream_slots": 4, "queue_depth": 0, "ready": true})) }),
        )
        .route(
            "/v1/listen",
            post(|State(()): State<()>, body: axum::body::Bytes| async move {
                Json(serde_json::json!({"metadata": {"duration": body.len() as f64 / 32000.0}}))
            }),
        )
        .with_state(());
    let stt_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stt_addr = stt_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(stt_listener, stt).await });

    let keys = Arc::new(MemoryKeys::new());
    let org = keys.create_org("acme", Credit::Unlimited, 0).await.unwrap();
    let (_, key) = keys.create_key(&org.id, NewKey::listen("test"), aldea_store::unix_now()).await.unwrap();
    let deps = Deps {
        keys,
        key_cache: Arc::new(MemoryKeyCache::new()),
        limits: Arc::new(MemoryLimits::new()),
        usage: Arc::new(MemoryUsageQueue::default()),
    };
    let config = Config { stt_urls: vec![format!("http://{stt_addr}")], allow_private_urls: true, ..Config::default() };
    let state = AppState::new(config, deps).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(aldea_gateway::serve(state, listener, stop));

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(format!("http://{addr}/v1/listen"))
        .header("authorization", format!("Token {key}"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "url": format!("http://{file_addr}/audio.raw") }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.load(Ordering::SeqCst), 0, "the fetch went through the proxy");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["metadata"]["duration"], 0.5);
}
