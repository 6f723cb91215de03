//! Gateways in cluster mode, sharing a Redis this test starts (its own `redis-server`, on a free
//! port, with an append-only file so that a restart keeps what it held): a revoked key is refused
//! by every gateway within a second, a killed gateway's stream slots free themselves within the
//! lease TTL, and the usage recorded across a Redis restart equals the audio sent. Needs the
//! environment `scripts/test.sh` sets (and `redis-server`, which it installs).

use std::time::{Duration, Instant};

use aldea_store::UsageLedger;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{
    aldea_on as aldea, create_key, free_port, http, open_stream, poll_until, real_dev, spawn, start_redis, Processes,
};

#[test]
fn gateways_sharing_redis_see_revocations_within_a_second_and_recover_a_dead_gateways_slots() {
    let home = tempfile::tempdir().unwrap();
    let redis_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = start_redis(redis_dir.path(), port);
    let redis_url = format!("redis://127.0.0.1:{port}");
    let key = create_key(home.path(), "shared");
    let victim = create_key(home.path(), "shared");

    let (stt, stt_addr) = spawn(home.path(), &["stt", "--listen", "127.0.0.1:0", "--threads", "2"], "stt listening");
    let stt_url = format!("http://{stt_addr}");
    let gateway_args =
        ["gateway", "--listen", "127.0.0.1:0", "--stt", &stt_url, "--redis", &redis_url, "--org-max-streams", "2"];
    let (first, first_addr) = spawn(home.path(), &gateway_args, "gateway listening");
    let (second, second_addr) = spawn(home.path(), &gateway_args, "gateway listening");
    let mut processes = Processes(vec![redis, stt, first, second]);
    for addr in [&stt_addr, &first_addr, &second_addr] {
        poll_until("readiness", || http(addr, "GET", "/ready", &[], b"").0 == 200);
    }

    // Revocation: both gateways know the key, then refuse it within a second.
    let audio = std::fs::read(real_dev("ps_cards_001.wav")).unwrap();
    let victim_auth = format!("Token {victim}");
    for addr in [&first_addr, &second_addr] {
        assert_eq!(http(addr, "POST", "/v1/listen", &[("authorization", &victim_auth)], &audio).0, 200);
    }
    let listing = aldea(home.path()).args(["keys", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let victim_id = listing.lines().find(|l| l.contains(&victim[..12])).unwrap().split('\t').next().unwrap().to_owned();
    assert!(aldea(home.path()).args(["keys", "revoke", &victim_id, "--redis", &redis_url]).status().unwrap().success());
    let revoked_at = Instant::now();
    for addr in [&first_addr, &second_addr] {
        poll_until("the revoked key refused", || {
            http(addr, "POST", "/v1/listen", &[("authorization", &victim_auth)], &audio).0 == 401
        });
    }
    let refused_after = revoked_at.elapsed();
    eprintln!("revoked key refused by both gateways after {refused_after:?}");
    assert!(refused_after <= Duration::from_millis(1200), "refused after {refused_after:?}");

    // Slots: the organization's two streams held through the first gateway count on the second.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut held = Vec::new();
        let taken_at = Instant::now();
        for _ in 0..2 {
            held.push(open_stream(&first_addr, &key, "encoding=linear16").await.expect("within the limit"));
        }
        assert_eq!(open_stream(&second_addr, &key, "encoding=linear16").await.err(), Some(429));
        // The first gateway dies without releasing anything.
        let gateway = &mut processes.0[2];
        gateway.kill().unwrap();
        gateway.wait().unwrap();
        let died_at = Instant::now();
        drop(held);
        let mut reopened = None;
        while died_at.elapsed() < Duration::from_secs(25) {
            if let Ok(ws) = open_stream(&second_addr, &key, "encoding=linear16").await {
                reopened = Some(ws);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let freed_after = died_at.elapsed();
        eprintln!(
            "a dead gateway's slots were free {freed_after:?} after it died, {:?} after they were taken",
            taken_at.elapsed()
        );
        let mut ws = reopened.expect("the slots came back");
        assert!(freed_after <= Duration::from_millis(15_500), "freed after {freed_after:?} (lease TTL 15 s)");
        ws.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    });
}

#[test]
fn usage_recorded_across_a_redis_restart_equals_the_audio_sent() {
    let home = tempfile::tempdir().unwrap();
    let redis_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = start_redis(redis_dir.path(), port);
    let redis_url = format!("redis://127.0.0.1:{port}");
    let key = create_key(home.path(), "metered");
    let auth = format!("Token {key}");

    let (stt, stt_addr) = spawn(home.path(), &["stt", "--listen", "127.0.0.1:0", "--threads", "2"], "stt listening");
    let stt_url = format!("http://{stt_addr}");
    let (gateway, gateway_addr) = spawn(
        home.path(),
        &["gateway", "--listen", "127.0.0.1:0", "--stt", &stt_url, "--redis", &redis_url],
        "gateway listening",
    );
    let mut processes = Processes(vec![redis, stt, gateway]);
    for addr in [&stt_addr, &gateway_addr] {
        poll_until("readiness", || http(addr, "GET", "/ready", &[], b"").0 == 200);
    }
    let clips: Vec<Vec<u8>> =
        ["ps_cards_001.wav", "alsa_front_left.wav", "ps_cards_003.wav", "alsa_rear_right.wav", "ps_goforward.wav"]
            .iter()
            .map(|f| std::fs::read(real_dev(f)).unwrap())
            .collect();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut sent_seconds = 0.0;
    for i in 0..50usize {
        if i == 25 {
            // Redis goes away for a while (requests go on meanwhile) and comes back.
            let redis = &mut processes.0[0];
            redis.kill().unwrap();
            redis.wait().unwrap();
        }
        if i == 30 {
            processes.0[0] = start_redis(redis_dir.path(), port);
        }
        let clip = &clips[i % clips.len()];
        if i % 5 == 4 {
            let seconds = runtime.block_on(async {
                let mut ws = open_stream(&gateway_addr, &key, "encoding=linear16").await.expect("the stream opens");
                // The WAV's samples as linear16 (the header is stripped by stt's format rule).
                for chunk in clip.chunks(3200) {
                    ws.send(Message::Binary(chunk.to_vec().into())).await.unwrap();
                }
                ws.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
                let mut duration = None;
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Text(text) => {
                            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                            if value["type"] == "Metadata" {
                                duration = value["duration"].as_f64();
                            }
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                duration.expect("a closing Metadata")
            });
            sent_seconds += seconds;
        } else {
            let (status, body) = http(&gateway_addr, "POST", "/v1/listen", &[("authorization", &auth)], clip);
            assert_eq!(status, 200, "request {i}: {}", String::from_utf8_lossy(&body));
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            sent_seconds += body["metadata"]["duration"].as_f64().unwrap();
        }
    }

    let db = home.path().join("aldea.db");
    let totals = runtime.block_on(async {
        let store = aldea_store_sql::SqlStore::open(&db).await.unwrap();
        let org = aldea_store::resolve_org(&store, "metered").await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let totals = store.totals(&org.id).await.unwrap();
            if totals.requests >= 50 || Instant::now() > deadline {
                return totals;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let recorded = totals.audio_millis as f64 / 1000.0;
    eprintln!("sent {sent_seconds:.3} s in 50 requests; recorded {recorded:.3} s in {} requests", totals.requests);
    assert_eq!(totals.requests, 50);
    assert!((recorded - sent_seconds).abs() <= 0.05, "recorded {recorded} s of {sent_seconds} s");
}
