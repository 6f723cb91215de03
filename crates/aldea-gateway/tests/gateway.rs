//! The gateway over real sockets, in front of a scripted stt peer (a small server speaking the stt
//! wire protocol: capacity, uploads, streams with internal messages), with the in-memory stores:
//! credentials, limits, the relay and usage. The real model behind a real stt service is exercised
//! end to end by the `aldea` crate's tests (`aldea all`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aldea_gateway::{AppState, Config, Deps};
use aldea_proto::stream::{
    ResultsMetadata, Resume, StreamAlternative, StreamChannel, StreamMetadata, StreamResults, StreamWords,
    RESUME_HEADER,
};
use aldea_proto::{Capacity, ModelInfo, PrerecordedMetadata, PrerecordedResponse, PrerecordedResults, Word};
use aldea_store::{
    Credit, KeyLimits, Keys, MemoryKeyCache, MemoryKeys, MemoryLimits, MemoryUsageQueue, NewKey, UsageEvent, UsageQueue,
};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

/// What the scripted stt peer saw and how it behaves.
#[derive(Default)]
struct Peer {
    uploads: AtomicUsize,
    streams: AtomicUsize,
    /// Answer 503 to this many requests first.
    refuse_first: AtomicUsize,
    /// Free stream slots it reports (the gateway prefers more).
    free_slots: AtomicUsize,
    /// Audio frames after which a stream dies (0: never): abruptly, or with 1012 when `close_1012`.
    die_after_frames: AtomicUsize,
    close_1012: std::sync::atomic::AtomicBool,
    /// Checkpoints without a byte offset, as for a container stream (the whole input is replayed).
    container: std::sync::atomic::AtomicBool,
    /// Close every stream at its first control message as the idle timeout does (1011 NET-0001).
    idle_close: std::sync::atomic::AtomicBool,
    /// Query strings of the streams opened, and the bytes each received.
    seen: std::sync::Mutex<Vec<(String, usize)>>,
    /// The resume header of each stream opened (`None`: a new stream).
    resumes: std::sync::Mutex<Vec<Option<Resume>>>,
    /// Query strings of the uploads received.
    upload_queries: std::sync::Mutex<Vec<String>>,
    /// The declared length and the bytes of each upload taken.
    upload_bodies: std::sync::Mutex<Vec<(Option<String>, axum::body::Bytes)>>,
    /// Milliseconds before an upload's body is read (a replica starved of CPU).
    upload_delay_ms: std::sync::atomic::AtomicU64,
}

/// A stand-in for an stt replica: `/v1/capacity`, `/ready`, uploads answered with the duration of
/// the body read as 16-bit PCM at 16 kHz (415 for an odd length), and streams that answer each
/// binary frame with a Results message and an internal checkpoint, and CloseStream with Metadata;
/// its answers and messages are stt's wire types (`aldea-proto`), as the gateway reads them.
async fn spawn_peer() -> (String, Arc<Peer>) {
    let peer = Arc::new(Peer::default());
    peer.free_slots.store(4, Ordering::SeqCst);
    let app = Router::new()
        .route("/ready", get(|| async { "ready" }))
        .route(
            "/v1/capacity",
            get(|State(peer): State<Arc<Peer>>| async move {
                // Like stt: the slots free now, less the streams it has taken.
                let (free, streams) = (peer.free_slots.load(Ordering::SeqCst), peer.streams.load(Ordering::SeqCst));
                Json(Capacity {
                    active_streams: streams as u64,
                    free_stream_slots: free.saturating_sub(streams) as u64,
                    max_streams: free as u64,
                    queue_depth: 0,
                    queued_uploads: 0,
                    ready: true,
                })
            }),
        )
        .route("/v1/listen", get(peer_stream).post(peer_upload))
        // Like stt, it takes bodies up to its own limit, not axum's default of 2 MB.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(peer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), peer)
}

fn refuse_once(peer: &Peer) -> bool {
    peer.refuse_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

async fn peer_upload(
    State(peer): State<Arc<Peer>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    // A replica too busy to read: the body stays in the socket meanwhile.
    let delay = peer.upload_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    peer.upload_queries.lock().unwrap().push(query.unwrap_or_default());
    if refuse_once(&peer) {
        return (StatusCode::SERVICE_UNAVAILABLE, "full").into_response();
    }
    peer.uploads.fetch_add(1, Ordering::SeqCst);
    let declared = headers.get("content-length").map(|v| v.to_str().unwrap().to_owned());
    peer.upload_bodies.lock().unwrap().push((declared, body.clone()));
    if body.len() % 2 == 1 {
        let error = serde_json::json!({"err_code": "UNSUPPORTED_AUDIO", "err_msg": "odd", "request_id": "x"});
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(error)).into_response();
    }
    Json(prerecorded(body.len() as f64 / 32000.0)).into_response()
}

async fn peer_stream(
    State(peer): State<Arc<Peer>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    if refuse_once(&peer) {
        return (StatusCode::SERVICE_UNAVAILABLE, "full").into_response();
    }
    peer.streams.fetch_add(1, Ordering::SeqCst);
    let query = query.unwrap_or_default();
    // A resumed stream's timeline starts where the gateway's resume header says.
    let resume = headers.get(RESUME_HEADER).map(|v| Resume::parse_header(v.to_str().unwrap()).unwrap());
    let origin = resume.as_ref().map_or(0.0, |r| r.start);
    let index = {
        let mut seen = peer.seen.lock().unwrap();
        seen.push((query.clone(), 0));
        peer.resumes.lock().unwrap().push(resume);
        seen.len() - 1
    };
    upgrade.on_upgrade(move |mut socket| async move {
        let _ = socket.send(Message::Text(stream_metadata(0.0).into())).await;
        let (mut received, mut frames) = (0usize, 0usize);
        while let Some(Ok(message)) = socket.recv().await {
            match message {
                Message::Binary(bytes) => {
                    frames += 1;
                    received += bytes.len();
                    peer.seen.lock().unwrap()[index].1 = received;
                    let die_after = peer.die_after_frames.load(Ordering::SeqCst);
                    if die_after > 0 && frames >= die_after {
                        if peer.close_1012.load(Ordering::SeqCst) {
                            let frame = axum::extract::ws::CloseFrame { code: 1012, reason: "restart".into() };
                            let _ = socket.send(Message::Close(Some(frame))).await;
                        }
                        // Otherwise the connection just drops, as when the process is killed.
                        return;
                    }
                    let start = origin + (received - bytes.len()) as f64 / 32000.0;
                    let end = origin + received as f64 / 32000.0;
                    let _ = socket.send(Message::Text(stream_results(start, end).into())).await;
                    let byte_offset = (!peer.container.load(Ordering::SeqCst)).then_some(received);
                    let checkpoint = serde_json::json!({"type": "aldea.checkpoint", "committed_until": end,
                        "byte_offset": byte_offset, "header_bytes": 0, "prompt": "", "prompt_tokens": [7, 8]});
                    let _ = socket.send(Message::Text(checkpoint.to_string().into())).await;
                }
                Message::Text(_) if peer.idle_close.load(Ordering::SeqCst) => {
                    let frame = axum::extract::ws::CloseFrame { code: 1011, reason: "NET-0001".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                Message::Text(text) if text.contains("CloseStream") => {
                    let _ = socket.send(Message::Text(stream_metadata(received as f64 / 32000.0).into())).await;
                    let _ = socket
                        .send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1000, reason: "".into() })))
                        .await;
                    break;
                }
                _ => {}
            }
        }
    })
}

fn model_info() -> ModelInfo {
    ModelInfo { name: "tiny.en".to_owned(), version: "1".to_owned(), arch: "whisper".to_owned() }
}

/// What stt answers an upload of `duration` seconds in which it heard no words.
fn prerecorded(duration: f64) -> PrerecordedResponse {
    PrerecordedResponse {
        metadata: PrerecordedMetadata {
            request_id: "peer".to_owned(),
            created: "2026-11-25T21:00:00Z".to_owned(),
            duration,
            channels: 1,
            models: Vec::new(),
            model_info: Default::default(),
            sha256: String::new(),
            tags: Vec::new(),
            warnings: Vec::new(),
        },
        results: PrerecordedResults { channels: Vec::new(), utterances: None },
    }
}

/// A stream's Metadata as stt sends it: at open (0) and at close (the seconds heard).
fn stream_metadata(duration: f64) -> String {
    let metadata = StreamMetadata {
        kind: "Metadata".to_owned(),
        request_id: "peer".to_owned(),
        created: "2026-11-25T21:00:00.000Z".to_owned(),
        duration,
        channels: 1,
        model_info: model_info(),
        transaction_key: "deprecated".to_owned(),
        sha256: String::new(),
        warnings: Vec::new(),
    };
    serde_json::to_string(&metadata).unwrap()
}

/// A final result as stt sends it: one word, `w<start>`, over `start..end`.
fn stream_results(start: f64, end: f64) -> String {
    let text = format!("w{start:.1}");
    let results = StreamResults {
        kind: "Results".to_owned(),
        channel_index: [0, 1],
        start,
        duration: end - start,
        is_final: true,
        speech_final: false,
        from_finalize: false,
        channel: StreamChannel {
            alternatives: vec![StreamAlternative {
                transcript: text.clone(),
                confidence: 1.0,
                words: StreamWords::Objects(vec![Word {
                    word: "w".to_owned(),
                    punctuated_word: text,
                    start,
                    end,
                    confidence: 1.0,
                }]),
            }],
        },
        metadata: ResultsMetadata {
            request_id: "peer".to_owned(),
            model_uuid: "peer".to_owned(),
            model_info: model_info(),
        },
        no_speech_prob: None,
    };
    serde_json::to_string(&results).unwrap()
}

struct Gateway {
    addr: SocketAddr,
    keys: Arc<MemoryKeys>,
    key_cache: Arc<MemoryKeyCache>,
    usage: Arc<MemoryUsageQueue>,
    key: String,
    org_id: aldea_store::OrgId,
    peer: Arc<Peer>,
    _stop: tokio_util::sync::DropGuard,
}

async fn spawn_gateway(adjust: impl FnOnce(&mut Config)) -> Gateway {
    let (stt_url, peer) = spawn_peer().await;
    spawn_gateway_over(vec![stt_url], peer, adjust).await
}

async fn spawn_gateway_over(stt_urls: Vec<String>, peer: Arc<Peer>, adjust: impl FnOnce(&mut Config)) -> Gateway {
    spawn_gateway_with(stt_urls, peer, Arc::new(MemoryLimits::new()), adjust).await
}

async fn spawn_gateway_with(
    stt_urls: Vec<String>,
    peer: Arc<Peer>,
    limits: Arc<dyn aldea_store::Limits>,
    adjust: impl FnOnce(&mut Config),
) -> Gateway {
    let keys = Arc::new(MemoryKeys::new());
    let org = keys.create_org("acme", Credit::Unlimited, 0).await.unwrap();
    let (_, key) = keys.create_key(&org.id, NewKey::listen("test"), aldea_store::unix_now()).await.unwrap();
    let usage = Arc::new(MemoryUsageQueue::default());
    let key_cache = Arc::new(MemoryKeyCache::new());
    let deps = Deps { keys: keys.clone(), key_cache: key_cache.clone(), limits, usage: usage.clone() };
    let mut config =
        Config { stt_urls, jwt_secret: Some("a test secret that is long enough!".into()), ..Config::default() };
    adjust(&mut config);
    let state = AppState::new(config, deps).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(aldea_gateway::serve(state, listener, stop.clone()));
    Gateway { addr, keys, key_cache, usage, key, org_id: org.id, peer, _stop: stop.drop_guard() }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn post(&self, path: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        reqwest::Client::new().post(self.url(path)).body(body)
    }

    /// Usage events as they are published, until a request's final one has come (at most 5 s).
    async fn usage_until_final(&self) -> Vec<UsageEvent> {
        let events = std::sync::Mutex::new(Vec::new());
        let done = eventually(|| async {
            let taken = self.usage_events().await;
            let mut events = events.lock().unwrap();
            events.extend(taken);
            events.iter().any(|e| e.is_final)
        })
        .await;
        assert!(done, "no final usage event");
        events.into_inner().unwrap()
    }

    /// Every usage event published so far.
    async fn usage_events(&self) -> Vec<UsageEvent> {
        let taken = self.usage.take("test", 1000, Duration::from_millis(50), Duration::from_secs(3600)).await.unwrap();
        taken.into_iter().map(|d| d.event).collect()
    }
}

async fn error_code(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let header_id = response.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["request_id"].as_str().unwrap(), header_id, "the body names the request id of the header");
    assert!(!body["err_msg"].as_str().unwrap().is_empty());
    (status, body["err_code"].as_str().unwrap().to_owned(), header_id)
}

/// Polls `check` until it holds (at most 5 s).
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn credentials_in_every_form_and_refusals_in_the_contract_form() {
    let gw = spawn_gateway(|_| {}).await;
    let pcm = vec![0u8; 32000];
    for header in [format!("Token {}", gw.key), format!("Bearer {}", gw.key), format!("token {}", gw.key)] {
        let response = gw.post("/v1/listen", pcm.clone()).header("authorization", header).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-request-id") && response.headers().contains_key("dg-request-id"));
    }
    // The caller's request id is kept.
    let response = gw
        .post("/v1/listen", pcm.clone())
        .header("authorization", format!("Token {}", gw.key))
        .header("x-request-id", "my-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "my-request-1");

    let missing = gw.post("/v1/listen", pcm.clone()).send().await.unwrap();
    assert_eq!(error_code(missing).await.0, 401);
    let wrong_key = format!("org_{}", "x".repeat(40));
    for header in
        [format!("Token {wrong_key}"), "Token short".to_owned(), "Basic abc".to_owned(), "Bearer not.a.jwt".to_owned()]
    {
        let response = gw.post("/v1/listen", pcm.clone()).header("authorization", &header).send().await.unwrap();
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (401, "INVALID_AUTH"), "{header}");
    }
    // Nothing refused reached stt.
    assert_eq!(gw.peer.uploads.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn credit_scope_and_revocation() {
    let gw = spawn_gateway(|_| {}).await;
    let auth = format!("Token {}", gw.key);
    gw.keys.set_credit(&gw.org_id, Credit::Millis(0), 0).await.unwrap();
    // The verify answer is cached for at most a second.
    assert!(
        eventually(|| async {
            let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap();
            r.status() == 402
        })
        .await
    );
    let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap();
    assert_eq!(error_code(r).await.1, "INSUFFICIENT_CREDIT");
    gw.keys.set_credit(&gw.org_id, Credit::Unlimited, 0).await.unwrap();

    let manage_only = NewKey { scopes: vec![aldea_store::Scope::Manage], ..NewKey::listen("ops") };
    let (_, manage_key) = gw.keys.create_key(&gw.org_id, manage_only, aldea_store::unix_now()).await.unwrap();
    let r =
        gw.post("/v1/listen", vec![0; 64]).header("authorization", format!("Token {manage_key}")).send().await.unwrap();
    assert_eq!(error_code(r).await.0, 403);

    let (record, victim) =
        gw.keys.create_key(&gw.org_id, NewKey::listen("victim"), aldea_store::unix_now()).await.unwrap();
    let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", format!("Token {victim}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    gw.keys.revoke_key(&gw.org_id, &record.id, aldea_store::unix_now()).await.unwrap();
    let revoked_at = std::time::Instant::now();
    assert!(
        eventually(|| async {
            let r = gw
                .post("/v1/listen", vec![0; 64])
                .header("authorization", format!("Token {victim}"))
                .send()
                .await
                .unwrap();
            r.status() == 401
        })
        .await
    );
    assert!(revoked_at.elapsed() <= Duration::from_millis(1500), "refused {:?} after revocation", revoked_at.elapsed());
}

#[tokio::test]
async fn requests_over_the_key_rate_get_429_with_retry_after() {
    let gw = spawn_gateway(|_| {}).await;
    let limited =
        NewKey { limits: KeyLimits { max_streams: None, requests_per_minute: Some(3) }, ..NewKey::listen("slow") };
    let (_, key) = gw.keys.create_key(&gw.org_id, limited, aldea_store::unix_now()).await.unwrap();
    // Seven requests span at most two fixed one-minute windows, so at most six pass.
    let mut refused = 0;
    for _ in 0..7 {
        let r =
            gw.post("/v1/listen", vec![0; 64]).header("authorization", format!("Token {key}")).send().await.unwrap();
        if r.status() == 429 {
            refused += 1;
            let retry_after: u32 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry_after));
            assert_eq!(error_code(r).await.1, "TOO_MANY_REQUESTS");
        } else {
            assert_eq!(r.status(), 200);
        }
    }
    assert!(refused >= 1);
    // Other keys of the organization keep their own budget.
    let r =
        gw.post("/v1/listen", vec![0; 64]).header("authorization", format!("Token {}", gw.key)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// An stt replica at the HTTP level only, as hyper behaves when a handler answers before reading
/// the request body: the answer says nothing of closing, and the connection is closed behind it. The
/// worst timing, made certain here: the next upload sent on that kept-alive connection finds it
/// closed before any answer. Capacity and readiness are answered normally on any connection.
async fn spawn_early_answering_peer() -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                let mut answered_upload = false;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut length, mut request_id) = (0usize, String::new());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            }
                            if name.eq_ignore_ascii_case("x-request-id") {
                                request_id = value.trim().to_owned();
                            }
                        }
                    }
                    let is_upload = request_line.starts_with("POST ");
                    if is_upload && answered_upload {
                        return; // Closed before answering: the request is lost with the connection.
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let (status, json) = if is_upload {
                        answered_upload = true;
                        let error = serde_json::json!({"err_code": "Bad Request", "err_msg": "bad sample_rate", "request_id": request_id});
                        ("400 Bad Request", error.to_string())
                    } else if request_line.contains("/v1/capacity") {
                        ("200 OK", r#"{"active_streams":0,"free_stream_slots":4,"max_streams":4,"queue_depth":0,"queued_uploads":0,"ready":true}"#.to_owned())
                    } else {
                        ("200 OK", r#""ready""#.to_owned())
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                        json.len()
                    );
                    if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_kept_alive_stt_connection_closed_behind_an_answer_is_not_a_full_replica() {
    let url = spawn_early_answering_peer().await;
    let gw = spawn_gateway_over(vec![url], Arc::new(Peer::default()), |_| {}).await;
    let auth = format!("Token {}", gw.key);
    // Every upload gets the replica's own answer, none the gateway's 503 NO_CAPACITY: a connection
    // that breaks before an answer is replaced, not taken for a replica that cannot work.
    for attempt in 0..4 {
        let r =
            gw.post("/v1/listen?sample_rate=abc", vec![0; 32_000]).header("authorization", &auth).send().await.unwrap();
        let (status, code, _) = error_code(r).await;
        assert_eq!((status, code.as_str()), (400, "Bad Request"), "upload {attempt}");
    }
}

/// An upload whose replica reads its body only after 40 s (a replica starved of CPU under a burst)
/// gets its answer: the gateway's stt connection is not given up while the replica's window is
/// closed (reqwest's default TCP_USER_TIMEOUT of 30 s did that: "Connection timed out (os error
/// 110)", then 503 — 5 to 8 of 32 uploads in `scripts/bench-uploads.sh`'s burst).
#[tokio::test]
async fn an_upload_read_by_its_replica_after_40_s_is_relayed() {
    let (url, peer) = spawn_peer().await;
    peer.upload_delay_ms.store(40_000, Ordering::SeqCst);
    let gw = spawn_gateway_over(vec![url], peer.clone(), |_| {}).await;
    // 16 MB: more than the sockets' buffers take while nobody reads.
    let r = gw
        .post("/v1/listen", vec![0; 16_000_000])
        .header("authorization", format!("Token {}", gw.key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(peer.uploads.load(Ordering::SeqCst), 1, "answered by the first attempt");
}

#[tokio::test]
async fn uploads_are_relayed_metered_and_limited() {
    let gw = spawn_gateway(|c| c.max_body_bytes = 100_000).await;
    let auth = format!("Token {}", gw.key);
    // stt's own refusal comes back as it was.
    let r = gw.post("/v1/listen", vec![0; 33]).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 415);
    // A full replica is skipped: the request goes to the next (here the same one, asked again).
    gw.peer.refuse_first.store(1, Ordering::SeqCst);
    let r = gw.post("/v1/listen?model=nova-3", vec![0; 64000]).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 503, "with one replica that refused, the client is told to retry");
    assert!(r.headers().contains_key("retry-after"));
    let r = gw.post("/v1/listen?model=nova-3", vec![0; 64000]).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["metadata"]["duration"], 2.0);

    // Too large: refused from the declared length, and while streaming a body of unknown length.
    let r = gw.post("/v1/listen", vec![0; 100_002]).header("authorization", &auth).send().await.unwrap();
    assert_eq!(error_code(r).await.0, 413);
    let chunks = futures_util::stream::iter((0..50).map(|_| Ok::<_, std::io::Error>(vec![0u8; 10_000])));
    let r = reqwest::Client::new()
        .post(gw.url("/v1/listen"))
        .header("authorization", &auth)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let events = gw.usage_events().await;
    let seconds: f64 = events.iter().map(|e| e.audio_seconds).sum();
    assert!((seconds - 2.0).abs() < 1e-6, "only the transcribed upload is metered: {events:?}");
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are distinct");
    assert!(events.iter().all(|e| e.is_final && e.org_id == gw.org_id.as_str()));
}

#[tokio::test]
async fn a_body_past_the_spool_threshold_goes_through_a_file_to_the_replica_that_takes_it() {
    // The gateway keeps 64 KiB of a body in memory; this one is 3 MB, sent with and without a
    // declared length, and the replica tried first is full: the next one gets every byte.
    let (first_url, first) = spawn_peer().await;
    let (second_url, second) = spawn_peer().await;
    first.free_slots.store(8, Ordering::SeqCst); // the first choice
    let spool_dir = tempfile::tempdir().unwrap();
    let dir = spool_dir.path().to_owned();
    let gw = spawn_gateway_over(vec![first_url, second_url], first.clone(), move |c| {
        c.spool_memory_bytes = 64 * 1024;
        c.spool_dir = Some(dir);
        c.max_body_bytes = 4_000_000;
    })
    .await;
    let auth = format!("Token {}", gw.key);
    let audio: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    for declared in [true, false] {
        first.refuse_first.store(1, Ordering::SeqCst);
        let request = reqwest::Client::new().post(gw.url("/v1/listen")).header("authorization", &auth);
        let request = if declared {
            request.body(audio.clone())
        } else {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = audio.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
            request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        };
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200, "declared length: {declared}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["metadata"]["duration"], 93.75);
        let taken = second.upload_bodies.lock().unwrap().pop().expect("the second replica took the upload");
        assert_eq!(taken.0.as_deref(), Some("3000000"), "the length is said up front");
        assert!(taken.1 == audio, "every byte arrives, in order");
        assert_eq!(first.uploads.load(Ordering::SeqCst), 0, "the first replica refused");
    }
    assert_eq!(std::fs::read_dir(spool_dir.path()).unwrap().count(), 0, "spooled bodies leave no file behind");
}

#[tokio::test]
async fn url_bodies_refuse_private_addresses_unless_allowed() {
    // A local file server: loopback, so refused by default.
    let files = Router::new().route("/audio.raw", get(|| async { vec![0u8; 16000] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let file_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, files).await });
    let body = serde_json::json!({ "url": format!("http://{file_addr}/audio.raw") }).to_string();

    let strict = spawn_gateway(|_| {}).await;
    let r = reqwest::Client::new()
        .post(strict.url("/v1/listen"))
        .header("authorization", format!("Token {}", strict.key))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, _, _) = error_code(r).await;
    assert_eq!(status, 400);
    for bad in [
        r#"{"url":"file:///etc/passwd"}"#,
        r#"{"url":"http://169.254.169.254/latest"}"#,
        r#"{"nope":1}"#,
        "not json",
        r#"["http://example.com/a.wav"]"#,
        r#"{"url":7}"#,
    ] {
        let r = reqwest::Client::new()
            .post(strict.url("/v1/listen"))
            .header("authorization", format!("Token {}", strict.key))
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    let open = spawn_gateway(|c| c.allow_private_urls = true).await;
    let r = reqwest::Client::new()
        .post(open.url("/v1/listen"))
        .header("authorization", format!("Token {}", open.key))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["metadata"]["duration"], 0.5);
}

async fn connect(
    gw: &Gateway,
    path: &str,
    auth: Option<(&'static str, String)>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        axum::http::Response<Option<Vec<u8>>>,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = format!("ws://{}{path}", gw.addr).into_client_request().unwrap();
    if let Some((name, value)) = auth {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await
}

#[tokio::test]
async fn streams_relay_results_drop_internal_messages_and_meter_the_timeline() {
    let gw = spawn_gateway(|_| {}).await;
    // Browsers: the key as a subprotocol, `token` echoed.
    let (mut ws, response) =
        connect(&gw, "/v1/listen?encoding=linear16", Some(("sec-websocket-protocol", format!("token, {}", gw.key))))
            .await
            .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "token");
    for _ in 0..3 {
        ws.send(WsMessage::Binary(vec![0u8; 16000].into())).await.unwrap();
    }
    ws.send(WsMessage::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
    let mut kinds = Vec::new();
    let mut close_code = None;
    while let Some(message) = ws.next().await {
        match message.unwrap() {
            WsMessage::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                kinds.push(value["type"].as_str().unwrap().to_owned());
            }
            WsMessage::Close(frame) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        kinds,
        ["Metadata", "Results", "Results", "Results", "Metadata"],
        "no aldea.* message reaches the client"
    );
    assert_eq!(close_code, Some(1000));
    let events = gw.usage_until_final().await;
    let seconds: f64 = events.iter().map(|e| e.audio_seconds).sum();
    assert!((seconds - 1.5).abs() < 1e-6, "{events:?}");

    // Refusals come before the upgrade, as HTTP statuses.
    match connect(&gw, "/v1/listen", None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => assert_eq!(answer.status(), 401),
        other => panic!("expected 401 before the upgrade, got {:?}", other.map(|r| r.1.status())),
    }
}

/// The resume handshake belongs to the gateway: a client's `resume_*` query parameters, in any
/// percent-encoded spelling, never reach stt (as a resume header or as a query stt could decode).
#[tokio::test]
async fn clients_cannot_resume_a_stream_or_upload_in_any_spelling() {
    let gw = spawn_gateway(|_| {}).await;
    let spellings = ["resume_start=99", "resume%5Fstart=99", "%72esume_start=99", "resume%5fprompt%5Ftokens=1,2"];
    for spelling in spellings {
        let path = format!("/v1/listen?encoding=linear16&{spelling}&tag=t");
        let (mut ws, _) = connect(&gw, &path, Some(("authorization", format!("Token {}", gw.key)))).await.unwrap();
        ws.send(WsMessage::Binary(vec![0u8; 3200].into())).await.unwrap();
        ws.send(WsMessage::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if let WsMessage::Text(text) = message {
                let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] == "Results" {
                    assert!(value["start"].as_f64().unwrap() < 1.0, "{spelling}: the timeline was moved: {value}");
                }
            }
        }
        let response = gw
            .post(&format!("/v1/listen?{spelling}"), vec![0u8; 3200])
            .header("authorization", format!("Token {}", gw.key))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{spelling}");
    }
    let decoded_names = |query: &String| -> Vec<String> {
        form_urlencoded::parse(query.as_bytes()).map(|(name, _)| name.into_owned()).collect()
    };
    let seen: Vec<String> = gw.peer.seen.lock().unwrap().iter().map(|(q, _)| q.clone()).collect();
    let uploads = gw.peer.upload_queries.lock().unwrap().clone();
    assert_eq!((seen.len(), uploads.len()), (spellings.len(), spellings.len()));
    for query in seen.iter().chain(&uploads) {
        let names = decoded_names(query);
        assert!(names.iter().all(|n| !n.starts_with("resume")), "stt was sent {query:?}");
    }
    assert!(seen.iter().all(|q| q == "encoding=linear16&tag=t"), "{seen:?}");
    assert!(gw.peer.resumes.lock().unwrap().iter().all(Option::is_none), "no resume header from a client");
}

/// The close code a client sees after sending `frame` on a fresh stream (`None`: no close frame,
/// the connection just dropped — 1006 to a browser).
async fn close_code_after(gw: &Gateway, frame: WsMessage) -> Option<(u16, String)> {
    let (mut ws, _) = connect(gw, "/v1/listen?encoding=linear16", Some(("authorization", format!("Token {}", gw.key))))
        .await
        .unwrap();
    ws.send(WsMessage::Binary(vec![0u8; 3200].into())).await.unwrap();
    // As a browser does: the frame is written while what the server says is read (the gateway
    // stops reading a frame over the limit, so its write may never finish).
    let (mut write, mut ws) = ws.split();
    tokio::spawn(async move {
        let _ = write.send(frame).await;
    });
    while let Some(message) = ws.next().await {
        match message {
            Ok(WsMessage::Close(frame)) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test]
async fn frames_over_the_contract_limits_close_with_1009_and_a_reason() {
    let gw = spawn_gateway(|_| {}).await;
    for frame in [
        WsMessage::Binary(vec![0u8; 40 * 1024 * 1024].into()),
        WsMessage::Binary(vec![0u8; 1024 * 1024 + 2].into()),
        WsMessage::Text(format!(r#"{{"type":"KeepAlive","pad":"{}"}}"#, "x".repeat(64 * 1024)).into()),
    ] {
        let size = frame.len();
        let (code, reason) =
            close_code_after(&gw, frame).await.unwrap_or_else(|| panic!("{size} bytes: no close frame"));
        assert_eq!(code, 1009, "{size} bytes: {reason}");
        assert!(reason.contains("1 MiB"), "{reason}");
    }
    // A frame of exactly 1 MiB is audio like any other.
    let (mut ws, _) =
        connect(&gw, "/v1/listen?encoding=linear16", Some(("authorization", format!("Token {}", gw.key))))
            .await
            .unwrap();
    ws.send(WsMessage::Binary(vec![0u8; 1024 * 1024].into())).await.unwrap();
    ws.send(WsMessage::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
    let mut code = None;
    while let Some(Ok(message)) = ws.next().await {
        if let WsMessage::Close(frame) = message {
            code = frame.map(|f| u16::from(f.code));
        }
    }
    assert_eq!(code, Some(1000));
}

#[tokio::test]
async fn the_eleventh_stream_of_an_organization_gets_429_before_the_upgrade() {
    let gw = spawn_gateway(|_| {}).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        let (ws, _) = connect(&gw, "/v1/listen", Some(("authorization", format!("Token {}", gw.key)))).await.unwrap();
        open.push(ws);
    }
    match connect(&gw, "/v1/listen", Some(("authorization", format!("Token {}", gw.key)))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            assert_eq!(answer.status(), 429);
            assert!(answer.headers().contains_key("retry-after"));
        }
        other => panic!("expected 429, got {:?}", other.map(|r| r.1.status())),
    }
    // A stream that ends gives its slot back.
    let mut first = open.remove(0);
    first.send(WsMessage::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
    while let Some(Ok(message)) = first.next().await {
        if matches!(message, WsMessage::Close(_)) {
            break;
        }
    }
    assert!(
        eventually(|| async {
            connect(&gw, "/v1/listen", Some(("authorization", format!("Token {}", gw.key)))).await.is_ok()
        })
        .await
    );
}

#[tokio::test]
async fn browser_tokens_from_the_grant_open_streams_and_expire() {
    let gw = spawn_gateway(|c| c.jwt_ttl = Duration::from_secs(2)).await;
    let r = gw
        .post("/v1/auth/grant", Vec::new())
        .header("authorization", format!("Token {}", gw.key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let grant: serde_json::Value = r.json().await.unwrap();
    let token = grant["access_token"].as_str().unwrap().to_owned();
    assert_eq!(grant["expires_in"], 2);
    let (mut ws, response) =
        connect(&gw, "/v1/listen", Some(("sec-websocket-protocol", format!("bearer, {token}")))).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    ws.send(WsMessage::Binary(vec![0u8; 3200].into())).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("Metadata"));
    // The token cannot be used to mint another, and stops opening streams once expired.
    let r =
        gw.post("/v1/auth/grant", Vec::new()).header("authorization", format!("Bearer {token}")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        eventually(|| async {
            matches!(
                connect(&gw, "/v1/listen", Some(("authorization", format!("Bearer {token}")))).await,
                Err(tokio_tungstenite::tungstenite::Error::Http(ref a)) if a.status() == 401
            )
        })
        .await
    );
}

/// Reads a stream until it closes: the close code and reason (`None`: no close frame).
async fn close_of(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Option<(u16, String)> {
    while let Some(Ok(message)) = ws.next().await {
        if let WsMessage::Close(frame) = message {
            return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
        }
    }
    None
}

/// Every live stream is checked again by its key's id, whether it was opened with the key or with a
/// browser token: a revoked key closes them all with 1008, and so does credit that runs out.
#[tokio::test]
async fn streams_opened_by_key_or_token_close_with_1008_on_revocation_or_no_credit() {
    let gw = spawn_gateway(|c| c.recheck_interval = Duration::from_millis(100)).await;
    let (record, key) = gw.keys.create_key(&gw.org_id, NewKey::listen("live"), aldea_store::unix_now()).await.unwrap();
    let open_both = || async {
        let r = gw.post("/v1/auth/grant", Vec::new()).header("authorization", format!("Token {key}")).send().await;
        let grant: serde_json::Value = r.unwrap().json().await.unwrap();
        let token = grant["access_token"].as_str().unwrap().to_owned();
        let by_token = connect(&gw, "/v1/listen", Some(("authorization", format!("Bearer {token}")))).await.unwrap().0;
        let by_key = connect(&gw, "/v1/listen", Some(("authorization", format!("Token {key}")))).await.unwrap().0;
        [by_token, by_key]
    };

    // Credit runs out: both close with 1008 and say why.
    let mut streams = open_both().await;
    gw.keys.set_credit(&gw.org_id, Credit::Millis(0), 0).await.unwrap();
    for ws in &mut streams {
        let closed = tokio::time::timeout(Duration::from_secs(5), close_of(ws)).await.expect("closed in time");
        assert_eq!(closed, Some((1008, "the organization has no credit left".to_owned())));
    }
    gw.keys.set_credit(&gw.org_id, Credit::Unlimited, 0).await.unwrap();
    // Let the credit be seen again by key and by token (the caches keep an answer at most a second).
    assert!(
        eventually(|| async {
            let r = gw.post("/v1/auth/grant", Vec::new()).header("authorization", format!("Token {key}")).send().await;
            let Ok(grant) = r.unwrap().json::<serde_json::Value>().await else { return false };
            let Some(token) = grant["access_token"].as_str() else { return false };
            let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", format!("Bearer {token}")).send().await;
            r.unwrap().status() == 200
        })
        .await
    );

    // The key is revoked: both close with 1008.
    let mut streams = open_both().await;
    gw.keys.revoke_key(&gw.org_id, &record.id, aldea_store::unix_now()).await.unwrap();
    for ws in &mut streams {
        let closed = tokio::time::timeout(Duration::from_secs(5), close_of(ws)).await.expect("closed in time");
        assert_eq!(closed, Some((1008, "the API key is no longer valid (revoked, rotated or expired)".to_owned())));
    }
}

/// A stream opened with a secret that is rotated away ends with that secret: at once without a
/// grace, while the new secret's stream goes on.
#[tokio::test]
async fn a_stream_of_a_rotated_secret_closes_with_1008_and_the_new_secrets_goes_on() {
    let gw = spawn_gateway(|c| c.recheck_interval = Duration::from_millis(100)).await;
    let now = aldea_store::unix_now();
    let (record, old) = gw.keys.create_key(&gw.org_id, NewKey::listen("rotating"), now).await.unwrap();
    let mut by_old = connect(&gw, "/v1/listen", Some(("authorization", format!("Token {old}")))).await.unwrap().0;
    let rotated = gw.keys.rotate_key(&gw.org_id, &record.id, now, now).await.unwrap();
    let mut by_new =
        connect(&gw, "/v1/listen", Some(("authorization", format!("Token {}", rotated.secret)))).await.unwrap().0;
    let closed = tokio::time::timeout(Duration::from_secs(5), close_of(&mut by_old)).await.expect("closed in time");
    assert_eq!(closed, Some((1008, "the API key is no longer valid (revoked, rotated or expired)".to_owned())));
    // The new secret's stream outlives several rechecks.
    assert!(tokio::time::timeout(Duration::from_millis(1_500), close_of(&mut by_new)).await.is_err(), "still open");
}

/// A browser token outlives neither its key nor its organization's credit: it opens nothing after.
#[tokio::test]
async fn a_browser_token_of_a_revoked_key_or_an_org_without_credit_opens_nothing() {
    let gw = spawn_gateway(|c| c.jwt_ttl = Duration::from_secs(60)).await;
    let (record, key) = gw.keys.create_key(&gw.org_id, NewKey::listen("web"), aldea_store::unix_now()).await.unwrap();
    let r = gw.post("/v1/auth/grant", Vec::new()).header("authorization", format!("Token {key}")).send().await.unwrap();
    let token = r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let upload = || async {
        let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", format!("Bearer {token}")).send().await;
        r.unwrap().status()
    };
    assert_eq!(upload().await, 200);
    gw.keys.set_credit(&gw.org_id, Credit::Millis(0), 0).await.unwrap();
    assert!(eventually(|| async { upload().await == 402 }).await, "no credit: 402 for the token too");
    gw.keys.set_credit(&gw.org_id, Credit::Unlimited, 0).await.unwrap();
    assert!(eventually(|| async { upload().await == 200 }).await);
    gw.keys.revoke_key(&gw.org_id, &record.id, aldea_store::unix_now()).await.unwrap();
    assert!(eventually(|| async { upload().await == 401 }).await, "revoked key: 401 for its token");
}

/// A limits store that is down: every call fails.
struct DownLimits;

#[async_trait::async_trait]
impl aldea_store::Limits for DownLimits {
    async fn acquire(&self, _: &str, _: &str, _: u32, _: Duration) -> aldea_store::Result<bool> {
        Err(aldea_store::StoreError::Unavailable("down".to_owned()))
    }
    async fn renew(&self, _: &str, _: &str, _: Duration) -> aldea_store::Result<bool> {
        Err(aldea_store::StoreError::Unavailable("down".to_owned()))
    }
    async fn release(&self, _: &str, _: &str) -> aldea_store::Result<()> {
        Err(aldea_store::StoreError::Unavailable("down".to_owned()))
    }
    async fn held(&self, _: &str) -> aldea_store::Result<u32> {
        Err(aldea_store::StoreError::Unavailable("down".to_owned()))
    }
    async fn hit(&self, _: &str, _: u32) -> aldea_store::Result<aldea_store::RateDecision> {
        Err(aldea_store::StoreError::Unavailable("down".to_owned()))
    }
}

/// The value of a line of the metrics text (`name value`).
async fn metric(gw: &Gateway, name: &str) -> Option<u64> {
    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The gateway's own refusals are counted by status, for uploads and streams alike.
#[tokio::test]
async fn refusals_are_counted_by_status() {
    let gw = spawn_gateway(|c| c.max_body_bytes = 1000).await;
    let auth = format!("Token {}", gw.key);
    // 401: an upload and a stream without credentials.
    assert_eq!(gw.post("/v1/listen", vec![0; 64]).send().await.unwrap().status(), 401);
    match connect(&gw, "/v1/listen", None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => assert_eq!(answer.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|r| r.1.status())),
    }
    // 503: the only replica is full, for an upload and for a stream.
    gw.peer.refuse_first.store(2, Ordering::SeqCst);
    assert_eq!(gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap().status(), 503);
    match connect(&gw, "/v1/listen", Some(("authorization", auth.clone()))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => assert_eq!(answer.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|r| r.1.status())),
    }
    // 429: a key limited to one request a minute, asked twice.
    let limited =
        NewKey { limits: KeyLimits { max_streams: None, requests_per_minute: Some(1) }, ..NewKey::listen("one") };
    let (_, key) = gw.keys.create_key(&gw.org_id, limited, aldea_store::unix_now()).await.unwrap();
    for expected in [200, 429] {
        let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", format!("Token {key}")).send().await;
        assert_eq!(r.unwrap().status(), expected);
    }
    // Statuses the counter does not keep: stt's own 415 (relayed) and the gateway's 413.
    assert_eq!(gw.post("/v1/listen", vec![0; 33]).header("authorization", &auth).send().await.unwrap().status(), 415);
    assert_eq!(gw.post("/v1/listen", vec![0; 2000]).header("authorization", &auth).send().await.unwrap().status(), 413);
    for (status, count) in [(401, 2), (402, 0), (429, 1), (503, 2)] {
        let name = format!("aldea_gateway_refused_total{{status=\"{status}\"}}");
        assert_eq!(metric(&gw, &name).await, Some(count), "{name}");
    }
}

/// With the limits store down, this process's own limiter still holds the rate and the concurrency.
#[tokio::test]
async fn limits_hold_while_the_limits_store_is_down() {
    let (stt_url, peer) = spawn_peer().await;
    let gw = spawn_gateway_with(vec![stt_url], peer, Arc::new(DownLimits), |c| {
        c.key_requests_per_minute = 3;
        c.org_max_streams = 1;
    })
    .await;
    let auth = format!("Token {}", gw.key);
    let (_first, _) = connect(&gw, "/v1/listen", Some(("authorization", auth.clone()))).await.unwrap();
    match connect(&gw, "/v1/listen", Some(("authorization", auth.clone()))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => assert_eq!(answer.status(), 429),
        other => panic!("a second stream over the limit of 1 was not refused: {:?}", other.map(|r| r.1.status())),
    }
    let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 200, "the third request of the minute");
    let r = gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap();
    assert_eq!(r.status(), 429, "the fourth request of the minute");
    assert!(r.headers().contains_key("retry-after"));
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    let fallbacks = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aldea_gateway_limits_fallbacks_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("the fallback counter");
    assert!(fallbacks >= 4, "{fallbacks}");
    assert!(metrics.contains("\naldea_usage_dead_letters 0\n"), "the usage queue's dead letters are visible");
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let gw = spawn_gateway(|c| c.cors_origins = vec!["http://localhost:3000".to_owned()]).await;
    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, gw.url("/v1/listen"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "http://localhost:3000");
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    let preflight = client
        .request(reqwest::Method::OPTIONS, gw.url("/v1/listen"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!preflight.headers().contains_key("access-control-allow-origin"), "no other origin is allowed");
    let answer = client.get(gw.url("/live")).header("origin", "http://localhost:3000").send().await.unwrap();
    assert_eq!(answer.headers()["access-control-allow-origin"], "http://localhost:3000");
    let exposed = answer.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"), "{exposed}");
    let other = client.get(gw.url("/live")).header("origin", "http://evil.example").send().await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let metrics = client.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("aldea_gateway_active_streams"));
    assert_eq!(client.get(gw.url("/ready")).send().await.unwrap().status(), 200);
}

/// Streams 10 frames of 0.1 s through a gateway over two peers whose first dies after `die_after`
/// frames; the messages the client got and the close code.
async fn stream_across_a_failover(close_1012: bool) -> (Vec<serde_json::Value>, Option<u16>, Arc<Peer>, Arc<Peer>) {
    stream_across_a_failover_of(close_1012, false).await
}

async fn stream_across_a_failover_of(
    close_1012: bool,
    container: bool,
) -> (Vec<serde_json::Value>, Option<u16>, Arc<Peer>, Arc<Peer>) {
    let (first_url, first) = spawn_peer().await;
    let (second_url, second) = spawn_peer().await;
    first.container.store(container, Ordering::SeqCst);
    second.container.store(container, Ordering::SeqCst);
    first.free_slots.store(8, Ordering::SeqCst);
    first.die_after_frames.store(5, Ordering::SeqCst);
    first.close_1012.store(close_1012, Ordering::SeqCst);
    let gw = spawn_gateway_over(vec![first_url, second_url], first.clone(), |_| {}).await;
    let (mut ws, _) = connect(
        &gw,
        "/v1/listen?encoding=linear16&sample_rate=16000",
        Some(("authorization", format!("Token {}", gw.key))),
    )
    .await
    .unwrap();
    for i in 0..10u8 {
        ws.send(WsMessage::Binary(vec![i; 3200].into())).await.unwrap();
    }
    ws.send(WsMessage::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
    let mut messages = Vec::new();
    let mut code = None;
    while let Some(message) = ws.next().await {
        match message.unwrap() {
            WsMessage::Text(text) => messages.push(serde_json::from_str(text.as_str()).unwrap()),
            WsMessage::Close(frame) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    (messages, code, first, second)
}

fn check_failover(messages: &[serde_json::Value], code: Option<u16>, first: &Peer, second: &Peer) {
    assert_eq!(code, Some(1000), "the client sees a normal end: {messages:?}");
    let kinds: Vec<&str> = messages.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "Metadata").count(),
        2,
        "one opening and one closing Metadata: {kinds:?}"
    );
    assert_eq!(kinds.first(), Some(&"Metadata"));
    assert_eq!(kinds.last(), Some(&"Metadata"));
    // Finals cover 0..1.0 s once, in order, without gaps or overlaps.
    let mut until = 0.0f64;
    for m in messages.iter().filter(|m| m["type"] == "Results") {
        let start = m["start"].as_f64().unwrap();
        assert!((start - until).abs() < 1e-6, "a final starts at {start}, the previous ended at {until}");
        until = start + m["duration"].as_f64().unwrap();
    }
    assert!((until - 1.0).abs() < 1e-6, "the finals reach {until}");
    assert!(
        (messages.last().unwrap()["duration"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "the closing Metadata counts from 0"
    );
    // The second replica was told where to resume and got the audio from the last checkpoint on.
    let seen = second.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let resume = second.resumes.lock().unwrap()[0].clone().expect("a resume header");
    assert_eq!((resume.start, resume.prompt_tokens), (0.4, vec![7, 8]));
    // Beside the header, the query form an older stt reads (rolling updates).
    assert!(seen[0].0.ends_with("&resume_start=0.4&resume_prompt_tokens=7,8"), "{}", seen[0].0);
    assert_eq!(seen[0].1, 6 * 3200);
    assert_eq!(first.streams.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stream_whose_replica_dies_goes_on_elsewhere_without_loss_or_repeats() {
    let (messages, code, first, second) = stream_across_a_failover(false).await;
    check_failover(&messages, code, &first, &second);
}

#[tokio::test]
async fn a_stream_whose_replica_restarts_with_1012_goes_on_elsewhere() {
    let (messages, code, first, second) = stream_across_a_failover(true).await;
    check_failover(&messages, code, &first, &second);
}

#[tokio::test]
async fn a_client_that_stalls_its_upload_gets_408_and_its_slot_back() {
    let gw = spawn_gateway(|c| {
        c.body_idle_timeout = Duration::from_millis(300);
        c.org_max_uploads = 1;
    })
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(vec![0u8; 3200])).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
    let r = reqwest::Client::new()
        .post(gw.url("/v1/listen"))
        .header("authorization", format!("Token {}", gw.key))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 408);
    drop(tx);
    // The only upload slot is free again.
    let r =
        gw.post("/v1/listen", vec![0; 3200]).header("authorization", format!("Token {}", gw.key)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A multipart body whose `model` field never ends: chunks of 64 KiB up to `total` bytes, counting
/// in `pulled` how many the server has taken.
fn endless_model_field(
    total: usize,
    pulled: Arc<AtomicUsize>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let head = b"--XyZ\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\n".to_vec();
    futures_util::stream::iter(
        std::iter::once(head).chain(std::iter::repeat_n(vec![b'a'; 64 * 1024], total / (64 * 1024))),
    )
    .map(move |chunk| {
        pulled.fetch_add(chunk.len(), Ordering::SeqCst);
        Ok(chunk)
    })
}

#[tokio::test]
async fn openai_form_fields_are_capped_while_read_and_a_stalled_form_gets_408() {
    let gw = spawn_gateway(|c| {
        c.body_idle_timeout = Duration::from_millis(300);
        c.max_body_bytes = 8 * 1024 * 1024;
    })
    .await;
    let transcriptions = || {
        reqwest::Client::new()
            .post(gw.url("/v1/audio/transcriptions"))
            .header("authorization", format!("Token {}", gw.key))
            .header("content-type", "multipart/form-data; boundary=XyZ")
    };
    // A `model` field of 64 MiB: refused after its first 4 KiB, not after reading it all.
    let pulled = Arc::new(AtomicUsize::new(0));
    let body = reqwest::Body::wrap_stream(endless_model_field(64 * 1024 * 1024, pulled.clone()));
    let r = transcriptions().body(body).send().await.unwrap();
    assert_eq!(error_code(r).await.0, 400, "the field is too long");
    let taken = pulled.load(Ordering::SeqCst);
    assert!(taken < 16 * 1024 * 1024, "the server read {taken} bytes of a field capped at 4 KiB");

    // A form larger than the route's limit: 413 (the file cap is 8 MiB here).
    let mut big = b"--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(0u8, 9 * 1024 * 1024));
    big.extend_from_slice(b"\r\n--XyZ--\r\n");
    let r = transcriptions().body(big).send().await.unwrap();
    assert_eq!(error_code(r).await.0, 413);

    // A form that stops arriving: 408 once the idle timeout passes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(b"--XyZ\r\ncontent-disposition: form-data; name=\"file\"\r\n\r\nRIFF".to_vec())).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        transcriptions().body(reqwest::Body::wrap_stream(tokio_stream_of(rx))).send(),
    )
    .await
    .expect("a stalled form is answered, not waited on forever")
    .unwrap();
    assert_eq!(error_code(r).await.0, 408);
    drop(tx);
}

/// A body stream fed by a channel (it stalls while the channel is empty).
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn an_idle_close_is_relayed_not_failed_over() {
    let (first_url, first) = spawn_peer().await;
    let (second_url, second) = spawn_peer().await;
    first.free_slots.store(8, Ordering::SeqCst);
    first.idle_close.store(true, Ordering::SeqCst);
    let gw = spawn_gateway_over(vec![first_url, second_url], first.clone(), |_| {}).await;
    let (mut ws, _) = connect(&gw, "/v1/listen", Some(("authorization", format!("Token {}", gw.key)))).await.unwrap();
    ws.send(WsMessage::Text(r#"{"type":"KeepAlive"}"#.into())).await.unwrap();
    let mut code = None;
    while let Some(message) = ws.next().await {
        if let WsMessage::Close(frame) = message.unwrap() {
            code = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            break;
        }
    }
    assert_eq!(code, Some((1011, "NET-0001".to_owned())));
    assert_eq!(second.streams.load(Ordering::SeqCst), 0, "an idle stream is not moved");
}

#[tokio::test]
async fn long_streams_report_usage_at_intervals_that_add_up() {
    let gw = spawn_gateway(|c| c.usage_interval = Duration::from_millis(150)).await;
    let (mut ws, _) = connect(&gw, "/v1/listen", Some(("authorization", format!("Token {}", gw.key)))).await.unwrap();
    // 0.1 s of audio every 100 ms for about a second, then CloseStream.
    for _ in 0..10 {
        ws.send(WsMessage::Binary(vec![0u8; 3200].into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ws.send(WsMessage::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
    while let Some(Ok(message)) = ws.next().await {
        if matches!(message, WsMessage::Close(_)) {
            break;
        }
    }
    let mut events = gw.usage_until_final().await;
    events.sort_by_key(|e| e.seq);
    assert!(events.len() >= 3, "interval events before the final one: {events:?}");
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq as usize == i && e.event_id == format!("{}:{i}", e.request_id)));
    assert_eq!(events.iter().filter(|e| e.is_final).count(), 1);
    assert!(events.last().unwrap().is_final);
    let total: f64 = events.iter().map(|e| e.audio_seconds).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
}

#[tokio::test]
async fn a_container_stream_fails_over_by_replaying_its_whole_input_without_repeats() {
    let (messages, code, _first, second) = stream_across_a_failover_of(false, true).await;
    assert_eq!(code, Some(1000));
    // The finals still cover 0..1.0 s exactly once.
    let mut until = 0.0f64;
    for m in messages.iter().filter(|m| m["type"] == "Results") {
        let start = m["start"].as_f64().unwrap();
        assert!((start - until).abs() < 1e-6, "a final starts at {start}, the previous ended at {until}");
        until = start + m["duration"].as_f64().unwrap();
    }
    assert!((until - 1.0).abs() < 1e-6);
    assert!((messages.last().unwrap()["duration"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    // The replacement got everything from the first byte, with the timeline from 0.
    let seen = second.seen.lock().unwrap();
    assert_eq!(second.resumes.lock().unwrap()[0], Some(Resume::from_start()));
    assert_eq!(seen[0].1, 10 * 3200);
}

#[tokio::test]
async fn an_invalidation_on_the_key_cache_refuses_the_key_at_once_whatever_the_ttl() {
    // Cached answers would live a minute: only the invalidation can make the revocation seen.
    let gw = spawn_gateway(|c| {
        c.key_cache_ttl = Duration::from_secs(60);
        c.shared_cache_ttl = Duration::from_secs(60);
    })
    .await;
    let auth = format!("Token {}", gw.key);
    assert_eq!(gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap().status(), 200);
    let record = gw.keys.list_keys(&gw.org_id, &aldea_store::PageRequest::first(1)).await.unwrap().items.remove(0);
    let hash = gw.keys.revoke_key(&gw.org_id, &record.id, aldea_store::unix_now()).await.unwrap().remove(0);
    assert_eq!(
        gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap().status(),
        200,
        "without an invalidation the cached answer stands"
    );
    aldea_store::KeyCache::invalidate(gw.key_cache.as_ref(), &hash).await.unwrap();
    let invalidated_at = std::time::Instant::now();
    assert!(
        eventually(|| async {
            gw.post("/v1/listen", vec![0; 64]).header("authorization", &auth).send().await.unwrap().status() == 401
        })
        .await
    );
    assert!(invalidated_at.elapsed() < Duration::from_millis(500), "refused after {:?}", invalidated_at.elapsed());
}

#[tokio::test]
async fn streams_opened_together_spread_over_the_replicas() {
    let (first_url, first) = spawn_peer().await;
    let (second_url, second) = spawn_peer().await;
    let gw = spawn_gateway_over(vec![first_url, second_url], first.clone(), |_| {}).await;
    let auth = || Some(("authorization", format!("Token {}", gw.key)));
    let (a, b) = tokio::join!(connect(&gw, "/v1/listen", auth()), connect(&gw, "/v1/listen", auth()));
    let (_a, _b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (first.streams.load(Ordering::SeqCst), second.streams.load(Ordering::SeqCst)),
        (1, 1),
        "two replicas with the same free slots get one stream each"
    );
}
