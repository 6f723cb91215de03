//! The architecture split into processes, as a cluster runs it: stt, the platform and the usage
//! worker on PostgreSQL (a schema of its own in `ALDEA_TEST_POSTGRES_URL`), the gateway verifying
//! keys through the platform's internal API, and a private `redis-server` between them (key
//! cache, limits, usage queue). Signing up over HTTP gives a key that works on the gateway for an
//! upload and a stream on the real model; the usage API shows both with the audio sent; revoking
//! the key refuses it within a second and closes its open stream with 1008 within five. Needs the
//! environment `scripts/test.sh` sets.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{
    free_port, http, open_stream, poll_until, real_dev, spawn_logged, start_redis, stream_wav, Processes, Schema,
};

const SERVICE_TOKEN: &str = "split-mode-service-token-0123456789abcdef";

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("JSON: {}", String::from_utf8_lossy(body)))
}

#[test]
fn split_services_on_postgres_and_redis_sign_up_meter_and_revoke() {
    let home = tempfile::tempdir().unwrap();
    let redis_dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_schema, database) = Schema::new();
    let port = free_port();
    let redis = start_redis(redis_dir.path(), port);
    let redis_url = format!("redis://127.0.0.1:{port}");

    let token = ["--service-token", SERVICE_TOKEN];
    // Every service logs at debug: the test reads the logs for secrets at the end.
    let spawn = |args: &[&str], marker: &str| spawn_logged(home.path(), args, marker, "debug");
    let (stt, stt_addr, stt_log) =
        spawn(&[&["stt", "--listen", "127.0.0.1:0", "--threads", "2"][..], &token].concat(), "stt listening");
    let (platform, platform_addr, platform_log) = spawn(
        &[
            &["platform", "--listen", "127.0.0.1:0", "--database", &database, "--redis", &redis_url][..],
            &["--insecure-cookies"],
            &token,
        ]
        .concat(),
        "platform API on",
    );
    let (worker, worker_addr, worker_log) = spawn(
        &["usage-worker", "--listen", "127.0.0.1:0", "--database", &database, "--redis", &redis_url],
        "health on",
    );
    let platform_url = format!("http://{platform_addr}");
    let stt_url = format!("http://{stt_addr}");
    let (gateway, gateway_addr, gateway_log) = spawn(
        &[
            &["gateway", "--listen", "127.0.0.1:0", "--stt", &stt_url, "--redis", &redis_url][..],
            &["--platform", &platform_url],
            &token,
        ]
        .concat(),
        "gateway listening",
    );
    let _processes = Processes(vec![redis, stt, platform, worker, gateway]);
    for (name, addr) in
        [("stt", &stt_addr), ("platform", &platform_addr), ("worker", &worker_addr), ("gateway", &gateway_addr)]
    {
        poll_until(&format!("{name}'s readiness"), || http(addr, "GET", "/ready", &[], b"").0 == 200);
    }
    // The gateway holds no database: its home has none.
    assert!(!home.path().join("aldea.db").exists(), "no service opened the SQLite default");

    let signup = br#"{"email":"split@example.com","password":"a long password","org_name":"Split"}"#;
    let (status, body) =
        http(&platform_addr, "POST", "/v1/auth/signup", &[("content-type", "application/json")], signup);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let body = json(&body);
    let key = body["key"]["key"].as_str().unwrap().to_owned();
    let key_id = body["key"]["id"].as_str().unwrap().to_owned();
    let org_id = body["org"]["id"].as_str().unwrap().to_owned();
    let session = format!("Bearer {}", body["token"].as_str().unwrap());
    let auth = format!("Token {key}");

    // An upload and a stream with the key the signup returned.
    let audio = std::fs::read(real_dev("alsa_front_left.wav")).unwrap();
    let (status, answer) = http(&gateway_addr, "POST", "/v1/listen", &[("authorization", &auth)], &audio);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let upload_seconds = json(&answer)["metadata"]["duration"].as_f64().unwrap();
    let streamed = std::fs::read(real_dev("ps_cards_001.wav")).unwrap();
    let (words, stream_seconds) = runtime.block_on(stream_wav(&gateway_addr, &key, &streamed));
    assert!(!words.trim().is_empty(), "the stream was transcribed");
    let sent_at = Instant::now();

    // The usage API shows both requests with the audio sent, within 5 s.
    let usage_path = format!("/v1/orgs/{org_id}/requests");
    let mut requests = serde_json::Value::Null;
    while sent_at.elapsed() < Duration::from_secs(5) {
        let (status, body) = http(&platform_addr, "GET", &usage_path, &[("authorization", &session)], b"");
        assert_eq!(status, 200);
        requests = json(&body)["requests"].clone();
        if requests.as_array().is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["complete"] == true)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen_after = sent_at.elapsed();
    eprintln!("both requests in the usage API {seen_after:?} after the stream ended");
    let requests = requests.as_array().cloned().unwrap_or_default();
    assert_eq!(requests.len(), 2, "both requests within 5 s: {requests:?}");
    let audio_of = |kind: &str| requests.iter().find(|r| r["kind"] == kind).unwrap()["audio_seconds"].as_f64().unwrap();
    assert!((audio_of("rest") - upload_seconds).abs() <= 0.05, "{} vs {upload_seconds}", audio_of("rest"));
    assert!((audio_of("stream") - stream_seconds).abs() <= 0.05, "{} vs {stream_seconds}", audio_of("stream"));
    let (_, summary) = http(
        &platform_addr,
        "GET",
        &format!("/v1/orgs/{org_id}/usage?group_by=kind"),
        &[("authorization", &session)],
        b"",
    );
    let summary = json(&summary);
    assert_eq!(summary["totals"]["requests"], 2);
    assert_eq!(summary["totals"]["streams"], 1);
    let total = summary["totals"]["audio_seconds"].as_f64().unwrap();
    assert!((total - upload_seconds - stream_seconds).abs() <= 0.1, "{total}");
    let (_, balance) =
        http(&platform_addr, "GET", &format!("/v1/orgs/{org_id}/balance"), &[("authorization", &session)], b"");
    let left = json(&balance)["credit_seconds_remaining"].as_f64().unwrap();
    assert!((3600.0 - left - total).abs() <= 0.01, "charged what was used: {left}");

    // Revocation: an open stream of the key is closed with 1008 within 5 s, and new requests are
    // refused within a second.
    runtime.block_on(async {
        let mut open = open_stream(&gateway_addr, &key, "encoding=linear16&sample_rate=16000").await.expect("opens");
        open.send(Message::Binary(vec![0u8; 3200].into())).await.unwrap();
        let revoke = format!("/v1/orgs/{org_id}/keys/{key_id}");
        let (status, _) = http(&platform_addr, "DELETE", &revoke, &[("authorization", &session)], b"");
        assert_eq!(status, 204);
        let revoked_at = Instant::now();
        let short = &audio[..3244];
        let refused = tokio::task::spawn_blocking({
            let (gateway_addr, auth, short) = (gateway_addr.clone(), auth.clone(), short.to_vec());
            move || {
                poll_until("the revoked key refused", || {
                    http(&gateway_addr, "POST", "/v1/listen", &[("authorization", &auth)], &short).0 == 401
                });
                revoked_at.elapsed()
            }
        });
        let mut close_code = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, open.next()).await {
            match message {
                Ok(Message::Close(frame)) => {
                    close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("the stream ended without a close frame: {e}"),
            }
        }
        let closed_after = revoked_at.elapsed();
        let refused_after = refused.await.unwrap();
        eprintln!("revoked key refused after {refused_after:?}; its stream closed after {closed_after:?}");
        assert!(refused_after < Duration::from_secs(1), "refused within a second: {refused_after:?}");
        assert_eq!(close_code, Some(1008), "the open stream is closed as a policy violation");
        assert!(closed_after <= Duration::from_secs(5), "closed within 5 s: {closed_after:?}");
        // At once, by the invalidation, not at the periodic recheck (every 5 s).
        assert!(closed_after < Duration::from_secs(1), "closed by the invalidation: {closed_after:?}");
    });

    // Secrets: no API key, session token or password in clear in the database, the logs of any
    // service, or an error body.
    let mut bodies = Vec::new();
    for (addr, method, path, headers, body) in [
        (&gateway_addr, "POST", "/v1/listen", vec![("authorization", auth.as_str())], &audio[..3244]),
        (&platform_addr, "GET", "/v1/me", vec![("authorization", "Bearer not-a-session")], &b""[..]),
        (
            &platform_addr,
            "POST",
            "/v1/auth/login",
            vec![("content-type", "application/json")],
            &br#"{"email":"split@example.com","password":"a long password!"}"#[..],
        ),
        (
            &platform_addr,
            "POST",
            "/v1/auth/signup",
            vec![("content-type", "application/json")],
            &br#"{"email":"split@example.com","password":"a long password","org_name":"Again"}"#[..],
        ),
    ] {
        let (status, answer) = http(addr, method, path, &headers, body);
        assert!((400..500).contains(&status), "{path}: {status}");
        bodies.push(String::from_utf8_lossy(&answer).into_owned());
    }
    let token = session.trim_start_matches("Bearer ").to_owned();
    let secrets = [key.as_str(), token.as_str(), "a long password"];
    let tables = runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&database).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut dump = String::new();
        for name in &names {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT t::text FROM {name} t")).fetch_all(&pool).await.unwrap();
            dump.push_str(&rows.join("\n"));
        }
        (names.len(), dump)
    });
    let (table_count, dump) = tables;
    assert!(table_count >= 8 && dump.contains(&key[..12]), "the dump holds the data ({table_count} tables)");
    let logs: Vec<(&str, String)> =
        [("stt", &stt_log), ("platform", &platform_log), ("usage-worker", &worker_log), ("gateway", &gateway_log)]
            .into_iter()
            .map(|(name, log)| (name, log.lock().unwrap().clone()))
            .collect();
    assert!(logs.iter().any(|(_, log)| log.contains("key revoked")), "the logs were read");
    for secret in secrets {
        assert!(!dump.contains(secret), "a secret in the database");
        for (name, log) in &logs {
            assert!(!log.contains(secret), "a secret in the {name} log");
        }
        for body in &bodies {
            assert!(!body.contains(secret), "a secret in an error body: {body}");
        }
    }
    eprintln!(
        "no secret in {table_count} tables ({} bytes), {} bytes of logs, {} error bodies",
        dump.len(),
        logs.iter().map(|(_, l)| l.len()).sum::<usize>(),
        bodies.len()
    );
}
