//! The stt service on the real model and real speech: uploads, the streaming protocol (at real-time
//! pace and at full speed), completeness against the batch transcript, silence, idle close,
//! KeepAlive, Finalize, UtteranceEnd, admission, the service token and resume after a crash.
//! Needs `ALDEA_TEST_MODELS` (tiny.en and silero-vad pulled; `scripts/test.sh` sets it); the audio
//! comes from `fixtures/` (`aldea-testkit`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aldea_engine::{EngineOptions, Transcriber, Vad};
use aldea_engine_ct2::Ct2Engine;
use aldea_eval::{english_word_errors, normalize_english, word_errors};
use aldea_stt::{AppState, Config, Deps};
use aldea_testkit::fixtures::{long_3min_reference, real_dev, real_dev_refs, synth};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header as axum_header;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which prepares models and data")
    }))
}

fn deps() -> Deps {
    static DEPS: OnceLock<Deps> = OnceLock::new();
    DEPS.get_or_init(|| {
        // ALDEA_TEST_LOG (a log filter, e.g. `aldea_stt=trace`) shows the service's logs on stderr.
        if let Ok(filter) = std::env::var("ALDEA_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let models = env_path("ALDEA_TEST_MODELS");
        let engine = Ct2Engine::load(&models.join("tiny.en"), &EngineOptions { threads: 2, ..Default::default() })
            .expect("loading tiny.en");
        let vad = Arc::new(Vad::load(&models.join("silero-vad/silero_vad_v6.onnx")).expect("loading the VAD"));
        Deps { transcriber: Transcriber::new(Arc::new(engine), Some(vad.clone())), vad }
    })
    .clone()
}

/// The tests of this file share one model (and the machine's cores). Streaming completeness at
/// real-time pace depends on how soon each decode returns, so the tests that measure it take the
/// model to themselves ([`model_alone`]); the others share it ([`model_shared`]). Measured on the
/// same 2-core machine, the real-time long_3min stream went from 11.00 % alone to 12.77 % WER while
/// other tests of this file decoded on the same cores (batch 8.25 %): that is a load test, which
/// `aldea bench-streams` runs on purpose, not a completeness measurement.
static MODEL: std::sync::LazyLock<tokio::sync::RwLock<()>> = std::sync::LazyLock::new(|| tokio::sync::RwLock::new(()));

async fn model_shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MODEL.read().await
}

async fn model_alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MODEL.write().await
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
async fn assert_eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Server {
    addr: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn spawn(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(config, deps());
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(aldea_stt::serve(state.clone(), listener, shutdown.clone()));
    let probe = state.clone();
    assert_eventually("the service to be ready", Duration::from_secs(60), || probe.is_ready()).await;
    Server { addr, state, shutdown, served }
}

fn load_16k(path: &Path) -> Vec<f32> {
    aldea_audio::load_mono_16k(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real-dev clips joined with 1, 2 and 3 s of silence in turn, repeated until the stream lasts
/// at least a minute. Returns the samples, the reference, and each clip's (start, end) in seconds.
fn real_dev_stream() -> (Vec<f32>, String, Vec<(f64, f64)>) {
    let mut samples = Vec::new();
    let mut reference = Vec::new();
    let mut clips = Vec::new();
    let rows = real_dev_refs();
    let mut idx = 0;
    while samples.len() < 16_000 * 60 || idx < rows.len() {
        let (file, text) = &rows[idx % rows.len()];
        let clip = load_16k(&real_dev(file));
        let start = samples.len() as f64 / 16_000.0;
        samples.extend(clip);
        clips.push((start, samples.len() as f64 / 16_000.0));
        reference.push(text.as_str());
        samples.extend(std::iter::repeat_n(0.0, 16_000 * (1 + idx % 3)));
        idx += 1;
    }
    (samples, aldea_eval::joined_reference(reference), clips)
}

fn pcm_bytes(samples: &[f32]) -> Vec<u8> {
    aldea_testkit::wav::pcm16(samples)
}

fn wav_bytes(samples: &[f32]) -> Vec<u8> {
    aldea_testkit::wav::wav_mono16(samples, 16_000)
}

/// A minimal HTTP/1.1 client over a TCP stream (the tests need nothing more). Reads the head, then
/// the body by its length (or until the close); a 101 answer returns at once.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n", body.len());
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("connection")) {
        request.push_str("connection: close\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break split;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the response head");
        response.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let mut body = response[split + 4..].to_vec();
    if status == 101 {
        return (status, headers, body);
    }
    let length = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    loop {
        if length.is_some_and(|l| body.len() >= l) {
            break;
        }
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&body[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 2 + size + 2..];
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// What a streaming client saw: each message with its arrival time since the first byte was sent,
/// and the close frame.
struct Streamed {
    messages: Vec<(Duration, Value)>,
    close: Option<(u16, String)>,
}

impl Streamed {
    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.messages.iter().map(|(_, m)| m).filter(|m| m["type"] == kind).collect()
    }

    fn finals(&self) -> Vec<&Value> {
        self.of_type("Results").into_iter().filter(|m| m["is_final"] == true).collect()
    }

    fn final_text(&self) -> String {
        let texts: Vec<String> = self
            .finals()
            .iter()
            .map(|m| m["channel"]["alternatives"][0]["transcript"].as_str().unwrap_or("").to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        texts.join(" ")
    }

    fn final_words(&self) -> usize {
        self.finals().iter().map(|m| m["channel"]["alternatives"][0]["words"].as_array().map_or(0, Vec::len)).sum()
    }
}

struct StreamPlan<'a> {
    query: &'a str,
    audio: &'a [u8],
    chunk_bytes: usize,
    /// Real-time pace: bytes per second of audio; `None` sends as fast as the socket takes it.
    pace_bytes_per_s: Option<f64>,
    close: bool,
    headers: &'a [(&'a str, &'a str)],
}

async fn stream(addr: SocketAddr, plan: StreamPlan<'_>) -> Streamed {
    let mut request = format!("ws://{addr}/v1/listen?{}", plan.query).into_client_request().unwrap();
    for (name, value) in plan.headers {
        let name: axum_header::HeaderName = name.parse().unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("WebSocket upgrade");
    let (mut sink, mut source) = socket.split();
    let started = Instant::now();
    let audio = plan.audio.to_vec();
    let (chunk_bytes, pace, close) = (plan.chunk_bytes, plan.pace_bytes_per_s, plan.close);
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        for chunk in audio.chunks(chunk_bytes) {
            if let Some(rate) = pace {
                let due = started + Duration::from_secs_f64(sent as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            if sink.send(Message::Binary(chunk.to_vec().into())).await.is_err() {
                return sink;
            }
            sent += chunk.len();
        }
        if close {
            let _ = sink.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await;
        }
        sink
    });
    let mut messages = Vec::new();
    let mut close_frame = None;
    while let Some(frame) = source.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON message");
                messages.push((started.elapsed(), value));
            }
            Ok(Message::Close(frame)) => {
                close_frame = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = sender.await;
    Streamed { messages, close: close_frame }
}

/// The protocol invariants every stream must keep.
fn check_protocol(streamed: &Streamed) {
    let types: Vec<&str> = streamed.messages.iter().map(|(_, m)| m["type"].as_str().unwrap_or("")).collect();
    assert_eq!(types.first(), Some(&"Metadata"), "Metadata first");
    assert_eq!(types.last(), Some(&"Metadata"), "Metadata last");
    let mut cursor: Option<f64> = None;
    let mut interim_before = false;
    for (_, m) in &streamed.messages {
        if m["type"] != "Results" {
            continue;
        }
        let start = m["start"].as_f64().unwrap();
        let duration = m["duration"].as_f64().unwrap();
        assert!(duration >= 0.0);
        assert_eq!(m["channel_index"], serde_json::json!([0, 1]));
        assert!(uuid_like(m["metadata"]["request_id"].as_str().unwrap()));
        if m["is_final"] == true {
            if let Some(previous_end) = cursor {
                assert!((start - previous_end).abs() < 0.0015, "finals are contiguous: {start} after {previous_end}");
            }
            let words = m["channel"]["alternatives"][0]["words"].as_array().unwrap();
            if !words.is_empty() {
                assert!(interim_before, "an interim precedes each final with words");
            }
            for w in words {
                let (ws, we) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
                assert!(ws >= start - 0.0015 && we <= start + duration + 0.0015, "words lie inside their final");
            }
            cursor = Some(start + duration);
            interim_before = false;
        } else {
            interim_before = true;
        }
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|&c| c == '-').count() == 4
}

/// Batch transcript of the same audio through the upload path.
async fn batch_text(addr: SocketAddr, samples: &[f32]) -> String {
    let (status, _, body) =
        http(addr, "POST", "/v1/listen", &[("content-type", "audio/wav")], &wav_bytes(samples)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["results"]["channels"][0]["alternatives"][0]["transcript"].as_str().unwrap().to_owned()
}

/// Completeness gates: few batch words missing from the finals, and WER within 3.0 points of the
/// batch's.
fn check_completeness(name: &str, streamed: &Streamed, batch: &str, reference: &str) {
    check_completeness_within(name, streamed, batch, reference, 3.0);
}

/// [`check_completeness`] with another WER margin over the batch transcript.
fn check_completeness_within(name: &str, streamed: &Streamed, batch: &str, reference: &str, margin: f64) {
    let stream_text = streamed.final_text();
    let against_batch = english_word_errors(batch, &stream_text);
    let deletion_rate = 100.0 * against_batch.deletions as f64 / against_batch.reference_words.max(1) as f64;
    let stream_wer = english_word_errors(reference, &stream_text).wer_percent();
    let batch_wer = english_word_errors(reference, batch).wer_percent();
    eprintln!(
        "{name}: {} finals, stream WER {stream_wer:.2}% vs batch {batch_wer:.2}%, batch words deleted {deletion_rate:.2}% ({} of {})",
        streamed.finals().len(),
        against_batch.deletions,
        against_batch.reference_words
    );
    if std::env::var_os("ALDEA_TEST_DUMP").is_some() {
        eprintln!("--- batch\n{batch}\n--- stream\n{stream_text}");
        for m in streamed.finals() {
            eprintln!(
                "[{:.2} +{:.2} sf={}] {}",
                m["start"], m["duration"], m["speech_final"], m["channel"]["alternatives"][0]["transcript"]
            );
        }
    }
    assert!(deletion_rate <= 2.0, "{name}: {deletion_rate:.2}% of the batch words are missing from the finals");
    assert!(stream_wer <= batch_wer + margin, "{name}: stream WER {stream_wer:.2}% > batch {batch_wer:.2}% + {margin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_transcribes_real_speech_with_the_contract_form() {
    let _model = model_shared().await;
    let server = spawn(Config::default()).await;
    let rows = real_dev_refs();
    let (file, reference) = &rows[0];
    let audio = std::fs::read(real_dev(file)).unwrap();
    let (status, headers, body) = http(
        server.addr,
        "POST",
        "/v1/listen?model=nova-3&diarize=true&tag=t1",
        &[("content-type", "audio/wav"), ("x-request-id", "11111111-2222-3333-4444-555555555555")],
        &audio,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "x-request-id"), Some("11111111-2222-3333-4444-555555555555"));
    assert_eq!(header(&headers, "dg-request-id"), Some("11111111-2222-3333-4444-555555555555"));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["metadata"]["request_id"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(body["metadata"]["tags"], serde_json::json!(["t1"]));
    assert_eq!(body["metadata"]["warnings"][0]["parameter"], "diarize");
    let alternative = &body["results"]["channels"][0]["alternatives"][0];
    let transcript = alternative["transcript"].as_str().unwrap();
    let wer = english_word_errors(reference, transcript).wer_percent();
    assert!(wer <= 20.0, "{file}: {transcript:?} vs {reference:?} ({wer:.1}%)");
    assert!(!alternative["words"].as_array().unwrap().is_empty());
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_documented_errors() {
    let _model = model_shared().await;
    let server = spawn(Config { max_body_bytes: 100_000, ..Config::default() }).await;
    let check = |status: u16, body: &[u8], expected_status: u16, code: &str| {
        assert_eq!(status, expected_status, "{}", String::from_utf8_lossy(body));
        let body: Value = serde_json::from_slice(body).expect("the error body is JSON");
        assert_eq!(body["err_code"], code);
        assert!(uuid_like(body["request_id"].as_str().unwrap()));
        assert!(!body["err_msg"].as_str().unwrap().is_empty());
    };
    let (status, _, body) = http(server.addr, "POST", "/v1/listen?model=nova-9000", &[], b"abcd").await;
    check(status, &body, 400, "Bad Request");
    let (status, _, body) = http(server.addr, "POST", "/v1/listen", &[], &vec![0u8; 200_000]).await;
    check(status, &body, 413, "PAYLOAD_TOO_LARGE");
    let mut corrupt = b"OggS".to_vec();
    corrupt.extend(std::iter::repeat_n(0x5Au8, 5_000));
    let (status, _, body) = http(server.addr, "POST", "/v1/listen", &[], &corrupt).await;
    check(status, &body, 415, "UNSUPPORTED_AUDIO");
    // A bad parameter on the WebSocket path is refused before the upgrade.
    let (status, _, body) = http(
        server.addr,
        "GET",
        "/v1/listen?vad_events=maybe",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await;
    check(status, &body, 400, "Bad Request");
    // Undecodable audio on a stream: close 1003 DATA-0000 after the opening Metadata.
    let streamed = stream(
        server.addr,
        StreamPlan {
            query: "",
            audio: &corrupt,
            chunk_bytes: 1_000,
            pace_bytes_per_s: None,
            close: true,
            headers: &[],
        },
    )
    .await;
    assert_eq!(streamed.close, Some((1003, "DATA-0000".to_owned())));
    assert_eq!(streamed.messages.first().map(|(_, m)| m["type"].clone()), Some(Value::from("Metadata")));
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_token_guards_everything_but_the_probes() {
    let _model = model_shared().await;
    let token = "s3cret-token-0123456789";
    let server = spawn(Config { service_token: Some(token.into()), ..Config::default() }).await;
    let (status, _, _) = http(server.addr, "GET", "/live", &[], b"").await;
    assert_eq!(status, 200);
    let (status, _, _) = http(server.addr, "GET", "/ready", &[], b"").await;
    assert_eq!(status, 200);
    let (status, headers, body) = http(server.addr, "GET", "/v1/capacity", &[("x-request-id", "abc-123")], b"").await;
    assert_eq!(status, 401);
    assert_eq!(header(&headers, "x-request-id"), Some("abc-123"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["err_code"], "INVALID_AUTH");
    let bearer = format!("Bearer {token}");
    let (status, _, body) = http(server.addr, "GET", "/v1/capacity", &[("authorization", &bearer)], b"").await;
    assert_eq!(status, 200);
    let capacity: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(capacity["free_stream_slots"], 4);
    let (status, _, body) = http(server.addr, "GET", "/metrics", &[("authorization", &bearer)], b"").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("aldea_stt_free_stream_slots 4"));
    let wrong = format!("Bearer {token}x");
    let (status, _, _) = http(server.addr, "GET", "/metrics", &[("authorization", &wrong)], b"").await;
    assert_eq!(status, 401);
    // Off loopback the service refuses to start without a token.
    assert!(Config::default().check_listen(&"0.0.0.0:8800".parse().unwrap()).is_err());
    assert!(Config::default().check_listen(&"127.0.0.1:8800".parse().unwrap()).is_ok());
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_real_speech_streams_at_full_speed_and_at_real_time() {
    let _model = model_alone().await;
    let server = spawn(Config::default()).await;
    let (samples, reference, clips) = real_dev_stream();
    let audio = pcm_bytes(&samples);
    let batch = batch_text(server.addr, &samples).await;
    for (name, pace) in [("full speed", None), ("real time", Some(32_000.0))] {
        let streamed = stream(
            server.addr,
            StreamPlan {
                query: "encoding=linear16&sample_rate=16000",
                audio: &audio,
                chunk_bytes: 3_200,
                pace_bytes_per_s: pace,
                close: true,
                headers: &[],
            },
        )
        .await;
        assert_eq!(streamed.close.as_ref().map(|c| c.0), Some(1000), "{name}: closed normally");
        check_protocol(&streamed);
        let finals = streamed.finals();
        assert!(finals.len() >= 5, "{name}: several finals before CloseStream ({})", finals.len());
        let speech_finals = finals.iter().filter(|m| m["speech_final"] == true).count();
        assert!(
            speech_finals >= clips.len() / 2,
            "{name}: speech_final at the silences ({speech_finals} for {} clips)",
            clips.len()
        );
        let last = streamed.of_type("Metadata");
        let duration = last.last().unwrap()["duration"].as_f64().unwrap();
        assert!((duration - samples.len() as f64 / 16_000.0).abs() < 0.05, "{name}: closing Metadata has the duration");
        check_completeness(name, &streamed, &batch, &reference);
        assert!(streamed.final_words() > 50);
    }
    server.shutdown.cancel();
}

/// What `aldea stt --device cuda` runs with (two model workers, previous text in buckets, log-mel
/// on every core, batches of 64, whole windows), here on the CPU: concurrent streams get their words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_sizing_streams_every_word_with_two_workers_and_context_buckets() {
    let _model = model_alone().await;
    let config = Config {
        model_workers: 2,
        bucket_context: true,
        parallel_prep: true,
        max_batch: 64,
        encoder_padding_s: None,
        max_queue_wait_ms: 60_000,
        ..Config::default()
    };
    let server = spawn(config).await;
    let (samples, reference, _) = real_dev_stream();
    let audio = pcm_bytes(&samples);
    let batch = batch_text(server.addr, &samples).await;
    let streams = (0..2).map(|_| {
        stream(
            server.addr,
            StreamPlan {
                query: "encoding=linear16&sample_rate=16000",
                audio: &audio,
                chunk_bytes: 3_200,
                pace_bytes_per_s: None,
                close: true,
                headers: &[],
            },
        )
    });
    for (i, streamed) in futures_util::future::join_all(streams).await.iter().enumerate() {
        assert_eq!(streamed.close.as_ref().map(|c| c.0), Some(1000), "stream {i}: closed normally");
        check_protocol(streamed);
        check_completeness(&format!("stream {i}"), streamed, &batch, &reference);
    }
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_minutes_of_continuous_speech_at_full_speed_and_at_real_time() {
    let _model = model_alone().await;
    let server = spawn(Config::default()).await;
    let path = synth("long_3min.wav");
    let samples = load_16k(&path);
    let reference = long_3min_reference();
    let batch = batch_text(server.addr, &samples).await;
    let wav = std::fs::read(&path).unwrap();
    // A WAV header, then 16-kHz 16-bit mono: 32,000 bytes per second at real time.
    for (name, pace) in [("long_3min full speed", None), ("long_3min real time", Some(32_000.0))] {
        let streamed = stream(
            server.addr,
            StreamPlan {
                query: "",
                audio: &wav,
                chunk_bytes: 8_000,
                pace_bytes_per_s: pace,
                close: true,
                headers: &[],
            },
        )
        .await;
        assert_eq!(streamed.close.as_ref().map(|c| c.0), Some(1000), "{name}");
        check_protocol(&streamed);
        // The gate is +3.0. At real-time pace what each decode hears depends on when it runs: with
        // the model to itself on a 2-core machine the real-time run measured 10.61 % three times on
        // one and 11.20 % twice on another (batch 8.45 %), 11.00 % on a third (batch 8.25 %), so it
        // guards at +4.0 here (it was +6.0 before the left-context prefix).
        let margin = if pace.is_some() { 4.0 } else { 3.0 };
        check_completeness_within(name, &streamed, &batch, &reference, margin);
    }
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_and_noise_streams_say_nothing() {
    let _model = model_shared().await;
    let server = spawn(Config::default()).await;
    for (name, samples) in aldea_testkit::noise::non_speech(30) {
        let audio = pcm_bytes(&samples);
        let streamed = stream(
            server.addr,
            StreamPlan {
                query: "encoding=linear16",
                audio: &audio,
                chunk_bytes: 6_400,
                pace_bytes_per_s: None,
                close: true,
                headers: &[],
            },
        )
        .await;
        check_protocol(&streamed);
        assert_eq!(streamed.final_words(), 0, "{name}: {}", streamed.final_text());
        let words_anywhere: usize = streamed
            .of_type("Results")
            .iter()
            .map(|m| m["channel"]["alternatives"][0]["words"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(words_anywhere, 0, "{name}: no interim words either");
    }
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_close_and_keepalive_keeps_them_open() {
    let _model = model_shared().await;
    let server = spawn(Config { idle_timeout_ms: 600, ..Config::default() }).await;
    // Nothing sent: closed with 1011 NET-0001 after the idle time.
    let started = Instant::now();
    let streamed = stream(
        server.addr,
        StreamPlan { query: "", audio: &[], chunk_bytes: 1, pace_bytes_per_s: None, close: false, headers: &[] },
    )
    .await;
    assert_eq!(streamed.close, Some((1011, "NET-0001".to_owned())));
    assert!(started.elapsed() >= Duration::from_millis(600));
    // KeepAlive every 200 ms for 1.5 s keeps the stream open; then silence closes it.
    let request = format!("ws://{}/v1/listen", server.addr).into_client_request().unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_millis(1500) {
        socket.send(Message::Text(r#"{"type":"KeepAlive"}"#.into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut closed_at = None;
    while let Some(Ok(frame)) = socket.next().await {
        if let Message::Close(frame) = frame {
            assert_eq!(frame.map(|f| u16::from(f.code)), Some(1011));
            closed_at = Some(opened.elapsed());
            break;
        }
    }
    let closed_at = closed_at.expect("closed after KeepAlive stopped");
    assert!(closed_at >= Duration::from_millis(2000), "KeepAlive kept it open ({closed_at:?})");
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_flushes_and_utterance_end_follows_the_finals() {
    let _model = model_shared().await;
    let server = spawn(Config::default()).await;
    let rows = real_dev_refs();
    let clip = load_16k(&real_dev(&rows[1].0));
    let request = format!(
        "ws://{}/v1/listen?encoding=linear16&vad_events=true&utterance_end_ms=1000&endpointing=false",
        server.addr
    )
    .into_client_request()
    .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::Binary(pcm_bytes(&clip).into())).await.unwrap();
    socket.send(Message::Text(r#"{"type":"Finalize"}"#.into())).await.unwrap();
    let mut seen = Vec::new();
    // Read until the Finalize's final arrives; the stream stays open.
    while let Some(Ok(Message::Text(text))) = socket.next().await {
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        let done = value["from_finalize"] == true;
        seen.push(value);
        if done {
            break;
        }
    }
    let last = seen.last().unwrap();
    assert_eq!(last["is_final"], true);
    assert_eq!(last["speech_final"], true);
    let finals_text: String = seen
        .iter()
        .filter(|m| m["is_final"] == true)
        .map(|m| m["channel"]["alternatives"][0]["transcript"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let wer = english_word_errors(&rows[1].1, &finals_text).wer_percent();
    assert!(wer <= 25.0, "{finals_text:?} vs {:?}", rows[1].1);
    assert!(seen.iter().any(|m| m["type"] == "SpeechStarted"), "vad_events gives SpeechStarted");
    // More speech, then 2 s of silence: UtteranceEnd after that utterance's finals.
    let mut more = clip.clone();
    more.extend(std::iter::repeat_n(0.0, 32_000));
    socket.send(Message::Binary(pcm_bytes(&more).into())).await.unwrap();
    socket.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
    let mut rest = Vec::new();
    while let Some(Ok(frame)) = socket.next().await {
        match frame {
            Message::Text(text) => rest.push(serde_json::from_str::<Value>(text.as_str()).unwrap()),
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            _ => {}
        }
    }
    let summary: Vec<String> = rest
        .iter()
        .map(|m| {
            format!(
                "{} final={} {:?} {}",
                m["type"], m["is_final"], m["start"], m["channel"]["alternatives"][0]["transcript"]
            )
        })
        .collect();
    let utterance_end = rest.iter().position(|m| m["type"] == "UtteranceEnd").expect("UtteranceEnd");
    assert!(rest[..utterance_end].iter().any(|m| m["is_final"] == true), "finals before UtteranceEnd: {summary:#?}");
    let last_word_end = rest[utterance_end]["last_word_end"].as_f64().unwrap();
    let clip_s = clip.len() as f64 / 16_000.0;
    assert!(last_word_end > clip_s && last_word_end <= 2.0 * clip_s + 0.01, "{last_word_end}");
    assert_eq!(rest.last().unwrap()["type"], "Metadata");
    server.shutdown.cancel();
}

/// A burst of uploads larger than the slots waits in a bounded queue, first come first served;
/// only an upload beyond the queue is refused (503 with Retry-After), and at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_uploads_waits_in_a_bounded_queue() {
    let _model = model_shared().await;
    let server = spawn(Config { max_uploads: 1, max_upload_queue: 2, ..Config::default() }).await;
    let (samples, _, _) = real_dev_stream();
    let wav = std::sync::Arc::new(wav_bytes(&samples[..16_000 * 20]));
    let addr = server.addr;
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let wav = wav.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let (status, headers, body) =
                    http(addr, "POST", "/v1/listen", &[("content-type", "audio/wav")], &wav).await;
                (status, header(&headers, "retry-after").is_some(), body, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in burst {
        answers.push(request.await.unwrap());
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "one at work, two queued: {statuses:?}");
    let refused = answers.iter().find(|a| a.0 == 503).expect("the fourth is refused");
    assert!(refused.1, "503 says Retry-After");
    assert_eq!(serde_json::from_slice::<Value>(&refused.2).unwrap()["err_code"], "NO_CAPACITY");
    let slowest = answers.iter().filter(|a| a.0 == 200).map(|a| a.3).max().unwrap();
    assert!(refused.3 < slowest, "the refusal came at once ({:?}), not after a wait ({slowest:?})", refused.3);
    server.shutdown.cancel();
}

/// An upload in line reads its body while it waits (its sender is never left stalled on unread
/// bytes, which a proxy's connection would time out on), holding at most the spool's threshold in
/// memory and the rest in an unnamed file; it is transcribed from there when its turn comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_line_reads_its_body_into_a_file_while_it_waits() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _model = model_shared().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        max_uploads: 1,
        max_upload_queue: 1,
        spool_memory_bytes: 64 * 1024,
        spool_dir: Some(dir.path().to_owned()),
        ..Config::default()
    };
    let server = spawn(config).await;
    let (samples, _, _) = real_dev_stream();
    let first = wav_bytes(&samples[..16_000 * 30]);
    let addr = server.addr;
    let running =
        tokio::spawn(async move { http(addr, "POST", "/v1/listen", &[("content-type", "audio/wav")], &first).await });
    let state = server.state.clone();
    assert_eventually("the first upload to run", Duration::from_secs(30), || state.metrics().active_uploads.get() == 1)
        .await;
    // 24 MiB (a minute of 48-kHz stereo silence): far more than the sockets' buffers hold.
    let n_data = 24 * 1024 * 1024;
    let mut second = Vec::with_capacity(44 + n_data);
    second.extend_from_slice(b"RIFF");
    second.extend_from_slice(&(36 + n_data as u32).to_le_bytes());
    second.extend_from_slice(b"WAVEfmt ");
    for field in [16u32, 1 | (2 << 16), 48_000, 48_000 * 4, 4 | (16 << 16)] {
        second.extend_from_slice(&field.to_le_bytes());
    }
    second.extend_from_slice(b"data");
    second.extend_from_slice(&(n_data as u32).to_le_bytes());
    second.resize(44 + n_data, 0);
    let written = Arc::new(AtomicBool::new(false));
    let flag = written.clone();
    let queued = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/listen HTTP/1.1\r\nhost: {addr}\r\ncontent-type: audio/wav\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            second.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&second).await.unwrap();
        flag.store(true, Ordering::SeqCst);
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    });
    assert_eventually("the queued upload's body to be taken whole", Duration::from_secs(30), || {
        written.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(state.queued_uploads(), 1, "taken while it waits for the slot, not once it has it");
    assert_eq!(state.metrics().active_uploads.get(), 1);
    assert!(!running.is_finished());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spool file has no name");
    let (status, _, body) = running.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = queued.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{}", &response[..response.len().min(400)]);
    let (_, json) = response.split_once("\r\n\r\n").unwrap();
    let body: Value = serde_json::from_str(json).unwrap();
    assert!((body["metadata"]["duration"].as_f64().unwrap() - 131.072).abs() < 0.01, "{}", body["metadata"]);
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_answers_503_and_lets_resumed_streams_in_first() {
    let _model = model_shared().await;
    let server = spawn(Config { max_streams: 1, resume_headroom: 1, ..Config::default() }).await;
    let request = format!("ws://{}/v1/listen", server.addr).into_client_request().unwrap();
    let (first, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let upgrade = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let (status, headers, body) = http(server.addr, "GET", "/v1/listen", &upgrade, b"").await;
    assert_eq!(status, 503);
    assert!(header(&headers, "retry-after").is_some());
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["err_code"], "NO_CAPACITY");
    let (_, _, body) = http(server.addr, "GET", "/v1/capacity", &[], b"").await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["free_stream_slots"], 0);
    let (_, _, body) = http(server.addr, "GET", "/metrics", &[], b"").await;
    assert!(String::from_utf8_lossy(&body).contains("aldea_stt_streams_rejected_total 1"));
    // The resume handshake is the gateway's header, never the query, however it is spelled.
    for query in ["resume_start=3.5", "resume%5Fstart=3.5", "%72esume_start=3.5"] {
        let (status, _, _) = http(server.addr, "GET", &format!("/v1/listen?{query}"), &upgrade, b"").await;
        assert_eq!(status, 503, "{query} is no resume");
    }
    let resumed = [upgrade.as_slice(), &[(aldea_proto::stream::RESUME_HEADER, "start=3.5")]].concat();
    let (status, _, _) = http(server.addr, "GET", "/v1/listen", &resumed, b"").await;
    assert_eq!(status, 101, "a resumed stream uses the headroom");
    drop(first);
    server.shutdown.cancel();
}

/// Streams `audio` (16-kHz linear16) to `addr` at full speed and closes it, resumed as the
/// gateway's `resume` header says (`None`: a new stream).
async fn resume_stream(addr: SocketAddr, query: &str, resume: Option<&str>, audio: &[u8]) -> Streamed {
    let header = resume.map(|value| (aldea_proto::stream::RESUME_HEADER, value));
    let headers: Vec<(&str, &str)> = header.into_iter().collect();
    stream(
        addr,
        StreamPlan { query, audio, chunk_bytes: 3_200, pace_bytes_per_s: None, close: true, headers: &headers },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_on_another_instance_after_a_crash_loses_and_repeats_nothing() {
    let _model = model_shared().await;
    let (samples, _, _) = real_dev_stream();
    let audio = pcm_bytes(&samples);
    // The unbroken run.
    let steady = spawn(Config::default()).await;
    let unbroken = resume_stream(steady.addr, "encoding=linear16", None, &audio).await;
    steady.shutdown.cancel();

    // A run that dies once a checkpoint past 20 s has been sent.
    let doomed = spawn(Config { drain_timeout_ms: 0, ..Config::default() }).await;
    let request = format!("ws://{}/v1/listen?encoding=linear16", doomed.addr).into_client_request().unwrap();
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut sink, mut source) = socket.split();
    for chunk in audio.chunks(32_000) {
        sink.send(Message::Binary(chunk.to_vec().into())).await.unwrap();
    }
    let mut before = Vec::new();
    let mut checkpoint: Option<Value> = None;
    let mut killed = false;
    let mut close_code = None;
    while let Some(Ok(frame)) = source.next().await {
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] == "aldea.checkpoint" {
                    if !killed && value["committed_until"].as_f64().unwrap() >= 20.0 {
                        killed = true;
                        // The crash: the service goes away with the stream mid-way.
                        doomed.state.shutdown();
                        doomed.shutdown.cancel();
                    }
                    // The gateway resumes from the last checkpoint it got before the close.
                    checkpoint = Some(value.clone());
                }
                before.push((Duration::ZERO, value));
            }
            Message::Close(frame) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert!(killed, "a checkpoint past 20 s arrived");
    assert_eq!(close_code, Some(1012), "the dying service closes with 1012");
    let checkpoint: aldea_proto::stream::Checkpoint = serde_json::from_value(checkpoint.unwrap()).unwrap();
    let committed_until = checkpoint.committed_until;
    let byte_offset = checkpoint.byte_offset.expect("linear16 streams have a byte offset") as usize;
    // The restart point is a sample at or before the commit: the committed speech kept as context.
    let audio_start = checkpoint.resume_start();
    assert_eq!(byte_offset, (audio_start * 16_000.0).round() as usize * 2);
    assert!(audio_start <= committed_until && committed_until - audio_start <= 28.0, "{checkpoint:?}");
    // Context words start inside the replayed audio (a word cut a hair before the buffer start stays
    // one) and before the commit; the last may end after it (a final's words are those starting
    // before its end).
    assert!(
        checkpoint.context.iter().all(|w| w.start >= audio_start - 0.02 && w.start <= committed_until),
        "{checkpoint:?}"
    );
    eprintln!(
        "checkpoint: audio from {audio_start:.3} s, {} context words, committed until {committed_until:.3} s",
        checkpoint.context.len()
    );
    // Finals up to the checkpoint count; anything later is redone by the new instance.
    let kept: Vec<(Duration, Value)> = before
        .into_iter()
        .filter(|(_, m)| {
            m["type"] == "Results"
                && m["is_final"] == true
                && m["start"].as_f64().unwrap() + m["duration"].as_f64().unwrap() <= committed_until + 1e-6
        })
        .collect();
    let second = spawn(Config::default()).await;
    let resume = checkpoint.resume().to_header();
    let resumed = resume_stream(second.addr, "encoding=linear16", Some(&resume), &audio[byte_offset..]).await;
    check_protocol(&resumed);
    let first_resumed = resumed.finals().first().map(|m| m["start"].as_f64().unwrap());
    assert_eq!(first_resumed.map(|s| (s - committed_until).abs() < 0.0015), Some(true), "the timeline continues");
    let joined = Streamed { messages: kept.into_iter().chain(resumed.messages.into_iter()).collect(), close: None };
    // Whisper's normalizer joins spelled-out numbers ("Five, five. Eight" → "558") but not digits
    // ("5, 5. 8" → "5 5 8"): every digit counts as a word of its own, so a number read as words on
    // one side and as digits on the other is not a word lost or repeated.
    let digit_words = |text: &str| -> String {
        normalize_english(text)
            .chars()
            .flat_map(|c| if c.is_ascii_digit() { vec![' ', c, ' '] } else { vec![c] })
            .collect()
    };
    let difference = word_errors(&digit_words(&unbroken.final_text()), &digit_words(&joined.final_text()));
    eprintln!(
        "resume at {committed_until:.2} s: between unbroken and resumed {:.2}% ({} ref words: {} sub, {} del, {} ins)",
        difference.wer_percent(),
        difference.reference_words,
        difference.substitutions,
        difference.deletions,
        difference.insertions
    );
    // Nothing lost or repeated. A word may be read differently: the resumed decode hears its
    // context cut at the checkpoint, the unbroken one the whole buffer, and on unclear audio
    // ("4 of clubs" heard as "close" or "clothes") the two readings differ.
    let texts = format!("{}\nvs\n{}", unbroken.final_text(), joined.final_text());
    assert_eq!(difference.deletions + difference.insertions, 0, "words lost or repeated: {texts}");
    let substituted = 100.0 * difference.substitutions as f64 / difference.reference_words.max(1) as f64;
    assert!(substituted <= 4.0, "{substituted:.2}% of the words read differently: {texts}");
    second.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_closes_streams_with_1012() {
    let _model = model_shared().await;
    let server = spawn(Config { drain_timeout_ms: 300, ..Config::default() }).await;
    let request = format!("ws://{}/v1/listen", server.addr).into_client_request().unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let _metadata = socket.next().await;
    server.shutdown.cancel();
    let started = Instant::now();
    let mut code = None;
    while let Some(Ok(frame)) = socket.next().await {
        if let Message::Close(frame) = frame {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1012));
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.served.await.unwrap().unwrap();
}
