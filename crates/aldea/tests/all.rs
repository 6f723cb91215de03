//! `aldea all` end to end on the real model: keys made with `aldea keys` while the server runs, an
//! upload and a stream through the gateway to the stt service and back, revocation and credit seen
//! by the running server, and the usage recorded in `$ALDEA_HOME/aldea.db` equal to the audio sent.
//! Needs the environment `scripts/test.sh` sets.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aldea_store::{Keys, UsageLedger};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{
    aldea_on as aldea, env_path, http, last_line, open_stream, poll_until, real_dev, run, spawn_printing, stream_wav,
    ChildGuard,
};

struct Server {
    /// Killed when the test ends, however it ends.
    child: ChildGuard,
    addr: String,
    /// The platform API's address.
    platform: String,
}

impl Server {
    fn start(home: &Path) -> Server {
        Server::start_with(home, &[])
    }

    fn start_with(home: &Path, extra: &[&str]) -> Server {
        let mut args = common::ALL_ON_FREE_PORTS.to_vec();
        args.extend_from_slice(extra);
        let (child, mut addrs) = spawn_printing(home, &args, &["Speech API:", "platform:"]);
        let (addr, platform) = (addrs.remove(0), addrs.remove(0));
        poll_until("readiness", || http(&addr, "GET", "/ready", &[], b"").0 == 200);
        Server { child, addr, platform }
    }

    fn stop(mut self) {
        let killed = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a SIGTERM stop is a clean exit: {status:?}");
    }
}

#[test]
fn all_in_one_serves_keys_made_by_the_cli_and_records_usage() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    // A key created while the server runs works on the next request.
    let created = run(aldea(home.path()).args(["keys", "create", "--org", "acme"]));
    assert!(created.status.success());
    let key = last_line(&created);
    assert!(key.starts_with("org_") && key.len() >= 36, "{key}");
    let auth = format!("Token {key}");

    let audio = std::fs::read(real_dev("ps_goforward.wav")).unwrap();
    let (status, body) = http(&server.addr, "POST", "/v1/listen?model=nova-3", &[("authorization", &auth)], &audio);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let transcript = body["results"]["channels"][0]["alternatives"][0]["transcript"].as_str().unwrap().to_lowercase();
    assert!(transcript.contains("forward"), "{transcript}");
    let upload_seconds = body["metadata"]["duration"].as_f64().unwrap();
    let (status, _) = http(&server.addr, "POST", "/v1/listen", &[], &audio);
    assert_eq!(status, 401);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let long = std::fs::read(real_dev("ps_librivox_0870.wav")).unwrap();
    let (finals, stream_seconds) = runtime.block_on(stream_wav(&server.addr, &key, &long));
    let finals = finals.to_lowercase();
    assert!(finals.contains("dashwood") && finals.contains("leisure"), "{finals}");
    assert!((stream_seconds - 7.1).abs() < 0.01, "{stream_seconds}");

    // Credit and revocation made by the CLI reach the running server.
    assert!(run(aldea(home.path()).args(["credit", "set", "--org", "acme", "0"])).status.success());
    poll_until("402 at zero credit", || {
        http(&server.addr, "POST", "/v1/listen", &[("authorization", &auth)], &audio[..3200]).0 == 402
    });
    assert!(run(aldea(home.path()).args(["credit", "set", "--org", "acme", "unlimited"])).status.success());
    let listed = run(aldea(home.path()).args(["keys", "list", "--org", "acme"]));
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!listing.contains(&key), "secrets are never listed");
    let key_id = listing.split('\t').next().unwrap().to_owned();
    let org_id = listing.split('\t').nth(1).unwrap().to_owned();
    assert!(run(aldea(home.path()).args(["keys", "revoke", &key_id])).status.success());
    poll_until("401 after revocation", || {
        http(&server.addr, "POST", "/v1/listen", &[("authorization", &auth)], &audio[..3200]).0 == 401
    });
    server.stop();

    // Every second of audio transcribed is recorded once (the refused requests nothing).
    let totals = runtime.block_on(async {
        let store = aldea_store_sql::SqlStore::open(&home.path().join("aldea.db")).await.unwrap();
        assert_eq!(store.orgs_named("acme").await.unwrap().len(), 1);
        store.totals(&aldea_store::OrgId::from(org_id)).await.unwrap()
    });
    let expected = upload_seconds + stream_seconds;
    let recorded = totals.audio_millis as f64 / 1000.0;
    assert!((recorded - expected).abs() <= 0.2, "recorded {recorded} s, sent {expected} s");
    assert_eq!(totals.requests, 2);
}

#[test]
fn the_official_sdks_work_unchanged_against_the_gateway() {
    let home = tempfile::tempdir().unwrap();
    let created = run(aldea(home.path()).args(["keys", "create", "--org", "sdk"]));
    assert!(created.status.success());
    let key = last_line(&created);
    let server = Server::start(home.path());
    // Speech with pauses for utterances and paragraphs: the five LibriVox clips, 1 s apart.
    let paused = home.path().join("paused.wav");
    let mut samples = Vec::new();
    let clips = [
        "ps_librivox_0870.wav",
        "ps_librivox_0880.wav",
        "ps_librivox_0890.wav",
        "ps_librivox_0920.wav",
        "ps_librivox_0930.wav",
    ];
    let mut clip_starts = Vec::new();
    for clip in clips {
        clip_starts.push(samples.len() as f64 / 16_000.0);
        samples.extend(aldea_audio::load_mono_16k(&real_dev(clip)).unwrap());
        samples.extend(std::iter::repeat_n(0.0f32, 16_000));
    }
    std::fs::write(&paused, aldea_testkit::wav::wav_mono16(&samples, 16_000)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/sdk/sdk_check.py");
    let output = Command::new(env_path("ALDEA_TEST_PYTHON"))
        .arg(script)
        .arg(format!("http://{}", server.addr))
        .arg(&key)
        .arg(real_dev("ps_librivox_0870.wav"))
        .arg(&paused)
        .output()
        .expect("running the SDK checks");
    eprintln!("stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the SDK checks failed");
    let checks: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON line per check"))
        .collect();
    let names: Vec<&str> = checks.iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "deepgram_file",
            "deepgram_live",
            "deepgram_structure",
            "openai_json",
            "openai_verbose_json",
            "openai_text",
            "openai_srt",
            "openai_vtt",
            "raw_websocket"
        ]
    );
    for check in &checks {
        let transcript = check["transcript"].as_str().unwrap().to_lowercase();
        assert!(transcript.contains("dashwood") && transcript.contains("leisure"), "{check}");
    }
    // Each clip begins an utterance (a second of silence before it; within a clip the reader
    // pauses less than the split), and at least one paragraph.
    let structure = &checks[2];
    eprintln!("utterances and paragraphs: {structure}");
    let utterances = structure["utterances"].as_array().unwrap();
    for start in &clip_starts[1..] {
        assert!(
            utterances.iter().any(|u| (u[0].as_f64().unwrap() - start).abs() < 0.6),
            "an utterance starts near {start} s: {utterances:?}"
        );
    }
    // No utterance spans the second of silence between two clips.
    for start in &clip_starts[1..] {
        let crossing: Vec<&serde_json::Value> = utterances
            .iter()
            .filter(|u| u[0].as_f64().unwrap() < start - 1.0 && u[1].as_f64().unwrap() > *start)
            .collect();
        assert!(crossing.is_empty(), "utterances across the pause before {start} s: {crossing:?}");
    }
    let paragraphs = structure["paragraphs"].as_array().unwrap();
    assert!(paragraphs.len() >= clips.len(), "a paragraph per clip at least: {paragraphs:?}");
    let text = structure["paragraphs_transcript"].as_str().unwrap();
    assert!(text.starts_with('\n') && text.matches("\n\n").count() == paragraphs.len() - 1, "{text:?}");
    server.stop();
}

fn err_code(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).expect("the contract's error body");
    assert!(value["request_id"].is_string() && value["err_msg"].is_string());
    value["err_code"].as_str().unwrap().to_owned()
}

#[test]
fn bad_input_gets_the_documented_answer_and_sigterm_drains_streams_with_1012() {
    let home = tempfile::tempdir().unwrap();
    let key = last_line(&run(aldea(home.path()).args(["keys", "create", "--org", "bad"])));
    let server = Server::start_with(home.path(), &["--max-body-bytes", "300000", "--drain-seconds", "1"]);
    let auth = format!("Token {key}");
    let audio = std::fs::read(real_dev("ps_goforward.wav")).unwrap();
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        http(&server.addr, "POST", path, &all, body)
    };

    let (status, body) = post("/v1/listen?sample_rate=abc", &[], &audio);
    assert_eq!((status, err_code(&body).as_str()), (400, "Bad Request"));
    let (status, body) = post("/v1/listen?model=no-such-model", &[], &audio);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let mut not_flac = b"fLaC".to_vec();
    not_flac.extend(std::iter::repeat_n(0x5a, 4000));
    let (status, body) = post("/v1/listen", &[], &not_flac);
    assert_eq!((status, err_code(&body).as_str()), (415, "UNSUPPORTED_AUDIO"));
    let (status, body) = post("/v1/listen", &[], &vec![0u8; 300_001]);
    assert_eq!((status, err_code(&body).as_str()), (413, "PAYLOAD_TOO_LARGE"));
    let (status, _) =
        post("/v1/listen", &[("content-type", "application/json")], br#"{"url":"http://127.0.0.1:9/a.wav"}"#);
    assert_eq!(status, 400, "loopback urls are refused");
    let (status, _) = http(&server.addr, "POST", "/v1/listen", &[("authorization", "Token org_nope")], &audio);
    assert_eq!(status, 401);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        assert_eq!(open_stream(&server.addr, &key, "encoding=bogus").await.err(), Some(400));
        assert_eq!(open_stream(&server.addr, &key, "sample_rate=-5").await.err(), Some(400));
        // An invalid control message is ignored; the stream goes on.
        let mut ws = open_stream(&server.addr, &key, "").await.expect("the stream opens");
        ws.send(Message::Text(r#"{"type":"#.into())).await.unwrap();
        ws.send(Message::Text(r#"{"type":"Dance"}"#.into())).await.unwrap();
        for chunk in audio.chunks(3200) {
            ws.send(Message::Binary(chunk.to_vec().into())).await.unwrap();
        }
        ws.send(Message::Text(r#"{"type":"Finalize"}"#.into())).await.unwrap();
        let mut finals = String::new();
        while !finals.to_lowercase().contains("forward") {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    if value["type"] == "Results" && value["is_final"] == true {
                        finals.push_str(value["channel"]["alternatives"][0]["transcript"].as_str().unwrap());
                    }
                }
                other => panic!("the stream ended early: {other:?}"),
            }
        }
        // SIGTERM: the stream still open is closed with 1012 once the drain window has passed.
        let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let mut code = None;
        let keep_alive = tokio::time::interval(Duration::from_millis(500));
        tokio::pin!(keep_alive);
        loop {
            tokio::select! {
                _ = keep_alive.tick() => {
                    let _ = ws.send(Message::Text(r#"{"type":"KeepAlive"}"#.into())).await;
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Close(frame))) => {
                        code = frame.map(|f| u16::from(f.code));
                        break;
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        }
        assert_eq!(code, Some(1012), "a draining gateway tells the client to reconnect");
    });
    let mut child = server.child;
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The platform in `aldea all`: a sign-up over HTTP gets a key the gateway takes; the upload is
/// charged to the organization's balance; a key revoked on the platform is refused by the gateway
/// within a second (the contract's bound; that the platform publishes the invalidation is tested in
/// aldea-platform).
#[test]
fn a_key_from_signup_works_on_the_gateway_until_the_platform_revokes_it() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let signup = br#"{"email":"new@example.com","password":"a long password","org_name":"New"}"#;
    let (status, body) =
        http(&server.platform, "POST", "/v1/auth/signup", &[("content-type", "application/json")], signup);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (key, key_id, org_id) = (
        body["key"]["key"].as_str().unwrap(),
        body["key"]["id"].as_str().unwrap(),
        body["org"]["id"].as_str().unwrap(),
    );
    let session = format!("Bearer {}", body["token"].as_str().unwrap());

    let audio = std::fs::read(real_dev("alsa_front_left.wav")).unwrap();
    let auth = format!("Token {key}");
    let (status, answer) = http(&server.addr, "POST", "/v1/listen", &[("authorization", &auth)], &audio);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let duration = answer["metadata"]["duration"].as_f64().unwrap();
    // Usage reaches the ledger through the in-process queue: the balance goes down by the audio.
    let balance_path = format!("/v1/orgs/{org_id}/balance");
    let left = || {
        let (_, body) = http(&server.platform, "GET", &balance_path, &[("authorization", &session)], b"");
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["credit_seconds_remaining"].as_f64().unwrap()
    };
    poll_until("the upload charged", || (3600.0 - left() - duration).abs() <= 0.05);

    // The dashboard's way in: a 30-s browser token from the platform opens a stream on the gateway
    // (the secret `aldea all` generated is shared by both), metered on the dashboard key.
    let (status, token) =
        http(&server.platform, "POST", &format!("/v1/orgs/{org_id}/listen-token"), &[("authorization", &session)], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&token));
    let token: serde_json::Value = serde_json::from_slice(&token).unwrap();
    let bearer = format!("bearer, {}", token["access_token"].as_str().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (words, streamed) = runtime.block_on(common::stream_wav_as(&server.addr, &bearer, &audio));
    assert!(!words.trim().is_empty());
    let (_, by_key) = http(
        &server.platform,
        "GET",
        &format!("/v1/orgs/{org_id}/usage?group_by=key"),
        &[("authorization", &session)],
        b"",
    );
    let by_key: serde_json::Value = serde_json::from_slice(&by_key).unwrap();
    let (_, keys) =
        http(&server.platform, "GET", &format!("/v1/orgs/{org_id}/keys"), &[("authorization", &session)], b"");
    let keys: serde_json::Value = serde_json::from_slice(&keys).unwrap();
    let dashboard = keys.as_array().unwrap().iter().find(|k| k["system"] == true).expect("the dashboard key");
    let metered = |series: &serde_json::Value| {
        series["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == dashboard["id"])
            .map(|r| r["audio_seconds"].as_f64().unwrap())
    };
    let mut dashboard_seconds = metered(&by_key);
    poll_until("the stream metered on the dashboard key", || {
        if dashboard_seconds.is_some_and(|s| (s - streamed).abs() <= 0.05) {
            return true;
        }
        let (_, body) = http(
            &server.platform,
            "GET",
            &format!("/v1/orgs/{org_id}/usage?group_by=key"),
            &[("authorization", &session)],
            b"",
        );
        dashboard_seconds = metered(&serde_json::from_slice(&body).unwrap());
        false
    });

    // A tenth of a second of audio: the gateway has just cached the key's grant when the
    // revocation comes.
    let short = &audio[..3244];
    assert_eq!(http(&server.addr, "POST", "/v1/listen", &[("authorization", &auth)], short).0, 200);
    let revoke = format!("/v1/orgs/{org_id}/keys/{key_id}");
    assert_eq!(http(&server.platform, "DELETE", &revoke, &[("authorization", &session)], b"").0, 204);
    let revoked_at = std::time::Instant::now();
    poll_until("the revoked key refused", || {
        http(&server.addr, "POST", "/v1/listen", &[("authorization", &auth)], short).0 == 401
    });
    let refused_after = revoked_at.elapsed();
    eprintln!("revoked key refused after {refused_after:?}");
    assert!(refused_after < Duration::from_secs(1), "refused within a second");
    server.stop();
}
