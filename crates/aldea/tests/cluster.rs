//! `aldea cluster up`: the chart's topology as processes (2 gateways, 2 stt, 2 platforms, the
//! dashboard, the usage worker, a 3-node Redis Cluster, PostgreSQL in a schema of its own) behind
//! the host-routing front door. Uploads and streams by host name reach both gateways; the
//! dashboard signs up, creates a key and transcribes through it in Chromium; a rolling restart
//! of every service under real-time streams loses none of them; the usage in PostgreSQL equals
//! the audio sent; `down` leaves no process. Needs the environment `scripts/test.sh` sets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{aldea_on, http_to, real_dev, run, Schema};

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("JSON: {}", String::from_utf8_lossy(body)))
}

/// Brings the cluster down when the test ends, passed or failed.
struct Cluster {
    home: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    fn command(&self, args: &[&str]) -> std::process::Output {
        run(aldea_on(&self.home).args(["cluster"]).args(args).arg("--dir").arg(&self.dir))
    }

    /// `aldea cluster status`: each replica's port.
    fn ports(&self) -> Vec<(String, u16)> {
        let status = self.command(&["status"]);
        assert!(status.status.success());
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?.to_owned();
                let port = fields.next()?.parse().ok()?;
                Some((name, port))
            })
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("cluster.json")).unwrap()).unwrap();
        let mut pids: Vec<u32> = state["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect();
        pids.push(state["supervisor_pid"].as_u64().unwrap() as u32);
        pids
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = aldea_on(&self.home).args(["cluster", "down", "--dir"]).arg(&self.dir).output();
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// A counter's value summed over its series in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// 16-bit little-endian PCM of a recording at 16 kHz.
fn pcm_of(file: &str) -> Vec<u8> {
    let samples = aldea_audio::load_mono_16k(&real_dev(file)).unwrap();
    samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()).collect()
}

/// A stream's seconds of audio sent, and its transcript and metered duration or what went wrong.
type Outcome = (f64, Result<(String, f64), String>);

/// A stream through the front door at real time (100-ms chunks): the finals' text and the
/// closing Metadata's duration, or what went wrong.
async fn stream_realtime(door: &str, host: &str, key: &str, pcm: &[u8], pace: bool) -> Result<(String, f64), String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = tokio::net::TcpStream::connect(door).await.map_err(|e| format!("connect: {e}"))?;
    let mut request = format!("ws://{host}/v1/listen?encoding=linear16&sample_rate=16000&interim_results=true")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert("authorization", format!("Token {key}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, tcp).await.map_err(|e| format!("upgrade: {e}"))?;
    let (mut tx, mut rx) = ws.split();
    let pcm = pcm.to_vec();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for chunk in pcm.chunks(3200) {
            if pace {
                tick.tick().await;
            }
            tx.send(Message::Binary(chunk.to_vec().into())).await.map_err(|e| format!("send: {e}"))?;
        }
        tx.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await.map_err(|e| format!("send: {e}"))?;
        Ok::<_, String>(tx)
    });
    let mut finals = Vec::new();
    let mut duration = None;
    let mut closed = None;
    while let Some(message) = rx.next().await {
        match message.map_err(|e| format!("receive: {e}"))? {
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                match value["type"].as_str() {
                    Some("Results") if value["is_final"] == true => {
                        finals.push(value["channel"]["alternatives"][0]["transcript"].as_str().unwrap_or("").to_owned())
                    }
                    Some("Metadata") => duration = value["duration"].as_f64(),
                    Some("Error") => return Err(format!("error message: {text}")),
                    _ => {}
                }
            }
            Message::Close(frame) => {
                closed = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            _ => {}
        }
    }
    let _sink = sender.await.map_err(|e| e.to_string())??;
    match closed {
        Some((1000, _)) => Ok((finals.join(" ").trim().to_owned(), duration.ok_or("no Metadata")?)),
        other => Err(format!("closed with {other:?}")),
    }
}

#[test]
fn a_local_cluster_routes_hosts_survives_a_rolling_restart_and_meters_exactly() {
    let home = tempfile::tempdir().unwrap();
    let (_schema, database) = Schema::new();
    let cluster = Cluster { home: home.path().to_owned(), dir: home.path().join("cluster") };
    let up = run(aldea_on(home.path())
        .args(["cluster", "up", "--port", "0", "--drain-seconds", "20", "--stt-threads", "1", "--dir"])
        .arg(&cluster.dir)
        .env("ALDEA_DATABASE_URL", &database));
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    eprintln!("{stdout}");
    assert!(up.status.success(), "aldea cluster up");
    let url_of = |label: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(label)).map(|u| u.trim().to_owned()).expect("the URLs printed")
    };
    let (dashboard, api, backend) = (url_of("dashboard:"), url_of("Speech API:"), url_of("platform API:"));
    let port = api.rsplit(':').next().unwrap().to_owned();
    assert_eq!(api, format!("http://api.localhost:{port}"));
    assert_eq!(backend, format!("http://backend.localhost:{port}"));
    assert_eq!(dashboard, format!("http://platform.localhost:{port}"));
    let door = format!("127.0.0.1:{port}");
    let (api_host, backend_host) = (format!("api.localhost:{port}"), format!("backend.localhost:{port}"));

    // Every replica the issue names, ready.
    let ports = cluster.ports();
    let names: Vec<&str> = ports.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "redis-1",
        "redis-2",
        "redis-3",
        "stt-1",
        "stt-2",
        "platform-1",
        "platform-2",
        "usage-worker",
        "gateway-1",
        "gateway-2",
        "web",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let status = String::from_utf8_lossy(&cluster.command(&["status"]).stdout).into_owned();
    assert!(status.lines().skip(4).all(|l| l.contains(" yes ")), "{status}");
    let port_of = |name: &str| ports.iter().find(|(n, _)| n == name).unwrap().1;
    // The Redis nodes form one cluster.
    let info = std::process::Command::new("redis-cli")
        .args(["-p", &port_of("redis-1").to_string(), "cluster", "info"])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3"), "{info}");

    // Host routing: an unknown host is told what the door serves.
    let (status, body) = http_to(&door, "nope.localhost", "GET", "/", &[], b"");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // A person signs up on the backend host and calls the API host with the key.
    let signup = br#"{"email":"cluster@example.com","password":"a long password","org_name":"Cluster"}"#;
    let (status, body) =
        http_to(&door, &backend_host, "POST", "/v1/auth/signup", &[("content-type", "application/json")], signup);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let body = json(&body);
    let key = body["key"]["key"].as_str().unwrap().to_owned();
    let org_id = body["org"]["id"].as_str().unwrap().to_owned();
    let session = format!("Bearer {}", body["token"].as_str().unwrap());
    let auth = format!("Token {key}");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut sent_seconds = 0.0;
    let mut requests = 0;
    let upload = std::fs::read(real_dev("ps_cards_005.wav")).unwrap();
    for _ in 0..4 {
        let (status, answer) = http_to(&door, &api_host, "POST", "/v1/listen", &[("authorization", &auth)], &upload);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let answer = json(&answer);
        assert!(!answer["results"]["channels"][0]["alternatives"][0]["transcript"].as_str().unwrap().is_empty());
        sent_seconds += answer["metadata"]["duration"].as_f64().unwrap();
        requests += 1;
    }
    let pcm = pcm_of("ps_forever.wav");
    for _ in 0..4 {
        let (text, duration) =
            runtime.block_on(stream_realtime(&door, &api_host, &key, &pcm, false)).expect("a stream by host name");
        assert!(!text.is_empty());
        assert!((duration - pcm.len() as f64 / 32_000.0).abs() < 0.01, "{duration}");
        sent_seconds += duration;
        requests += 1;
    }
    // Both gateways served uploads and streams.
    for gateway in ["gateway-1", "gateway-2"] {
        let (_, page) = common::get(&format!("127.0.0.1:{}", port_of(gateway)), "/metrics");
        let (uploads, streams) =
            (metric(&page, "aldea_gateway_uploads_total"), metric(&page, "aldea_gateway_streams_total"));
        eprintln!("{gateway}: {uploads} uploads, {streams} streams");
        assert!(uploads >= 1.0 && streams >= 1.0, "{gateway} served both: {uploads} uploads, {streams} streams");
    }

    // The dashboard through the front door, in Chromium: sign up, key, curl, usage, revoke, the
    // playground's file and microphone.
    let browser = common::dashboard_in_chromium(&dashboard, &api, None);
    assert_eq!(browser.result["key_copied"], true);
    assert_eq!(browser.result["curl_status"], 200, "the dashboard's key works on the API host");
    assert!(browser.result["usage_seen_after_ms"].as_u64().is_some(), "the usage page shows the request");
    assert_eq!(browser.result["revoked_status"], 401);
    for transcript in ["upload_transcript", "live_transcript"] {
        let wer = aldea_eval::english_word_errors(&browser.reference, browser.result[transcript].as_str().unwrap())
            .wer_percent();
        eprintln!("dashboard {transcript}: WER {wer:.1} % ({:.1} s)", browser.seconds);
        assert!(wer <= 25.0, "{transcript}: {wer:.1} %");
    }

    // A rolling restart of every service under real-time streams, three at a time.
    let clips: Vec<Vec<u8>> =
        ["ps_librivox_0880.wav", "ps_goforward.wav", "ps_librivox_0890.wav", "ps_forever.wav", "ps_librivox_0930.wav"]
            .iter()
            .map(|f| pcm_of(f))
            .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let load: Vec<_> = (0..3)
        .map(|worker| {
            let (door, host, key, clips) = (door.clone(), api_host.clone(), key.clone(), clips.clone());
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            runtime.spawn(async move {
                let mut turn = worker;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let pcm = &clips[turn % clips.len()];
                    turn += 1;
                    let outcome = stream_realtime(&door, &host, &key, pcm, true).await;
                    outcomes.lock().unwrap().push((pcm.len() as f64 / 32_000.0, outcome));
                }
            })
        })
        .collect();
    let began = Instant::now();
    let rolled = cluster.command(&["restart"]);
    let rolled_after = began.elapsed();
    eprintln!("{}", String::from_utf8_lossy(&rolled.stdout));
    assert!(rolled.status.success(), "the rolling restart");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in load {
        runtime.block_on(worker).unwrap();
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let lost: Vec<&Outcome> = outcomes.iter().filter(|(_, o)| o.is_err()).collect();
    eprintln!(
        "rolling restart of 8 replicas in {rolled_after:?} under {} real-time streams: {} lost",
        outcomes.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "streams lost: {lost:?}");
    assert!(outcomes.len() >= 12, "the load went on through the restart: {} streams", outcomes.len());
    for (seconds, outcome) in &outcomes {
        let (text, duration) = outcome.as_ref().unwrap();
        assert!(!text.is_empty(), "every stream transcribed");
        assert!((duration - seconds).abs() < 0.01, "metered {duration} s of {seconds} s");
        sent_seconds += duration;
        requests += 1;
    }
    let restarted = String::from_utf8_lossy(&rolled.stdout).lines().filter(|l| l.contains("ready again")).count();
    assert_eq!(restarted, 8, "every replica but Redis restarted once");

    // The usage in PostgreSQL: every request once, exactly the audio sent.
    let path = format!("/v1/orgs/{org_id}/usage");
    let deadline = Instant::now() + Duration::from_secs(60);
    let totals = loop {
        let (status, body) = http_to(&door, &backend_host, "GET", &path, &[("authorization", &session)], b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let totals = json(&body)["totals"].clone();
        if totals["requests"].as_u64() == Some(requests) || Instant::now() > deadline {
            break totals;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let metered = totals["audio_seconds"].as_f64().unwrap();
    eprintln!("usage: {} requests, {metered:.3} s metered, {sent_seconds:.3} s sent", totals["requests"]);
    assert_eq!(totals["requests"].as_u64(), Some(requests), "each request once");
    assert!((metered - sent_seconds).abs() < 0.001 * requests as f64, "{metered} s metered, {sent_seconds} s sent");

    // A replica that dies is started again and comes back ready.
    let web_pid = |cluster: &Cluster| {
        let status = String::from_utf8_lossy(&cluster.command(&["status"]).stdout).into_owned();
        let line = status.lines().find(|l| l.starts_with("web ")).unwrap().to_owned();
        let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        (fields[2].clone(), fields[3] == "yes", fields[4].parse::<u32>().unwrap())
    };
    let (pid, _, restarts) = web_pid(&cluster);
    assert!(std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    common::poll_until("the dashboard restarted", || {
        let (now, ready, count) = web_pid(&cluster);
        now != pid && ready && count == restarts + 1
    });
    let (status, _) = http_to(&door, &format!("platform.localhost:{port}"), "GET", "/login", &[], b"");
    assert_eq!(status, 200, "the restarted dashboard serves through the front door");

    // Down: the supervisor and every process it started are gone.
    let pids = cluster.pids();
    let down = cluster.command(&["down"]);
    assert!(down.status.success());
    let left: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    assert!(!cluster.dir.join("cluster.json").exists());
    assert!(!cluster.command(&["status"]).status.success(), "no cluster to report on");

    // Up again on the same folder (the Redis Cluster from its own files), then the supervisor is
    // killed outright: `down` stops what it left.
    let again = run(aldea_on(home.path())
        .args(["cluster", "up", "--port", "0", "--stt-threads", "1", "--dir"])
        .arg(&cluster.dir)
        .env("ALDEA_DATABASE_URL", &database));
    assert!(again.status.success(), "up again");
    let pids = cluster.pids();
    let supervisor = pids.last().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-KILL", &supervisor]).status().unwrap().success());
    common::poll_until("the supervisor gone", || !alive(pids[pids.len() - 1]));
    assert!(pids[..pids.len() - 1].iter().all(|&p| alive(p)), "its replicas outlive it");
    let down = cluster.command(&["down"]);
    assert!(down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("stopped 11 processes the supervisor left"));
    let left: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
}
