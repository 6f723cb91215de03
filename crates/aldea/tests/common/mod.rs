//! Helpers shared by the `aldea` crate's test binaries: the environment `scripts/test.sh` sets,
//! running the binary, spawning its services and talking HTTP to them. Each binary uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub(crate) use aldea_testkit::fixtures::{real_dev, real_dev_dir, real_dev_refs, synth};
#[allow(unused_imports)]
pub(crate) use aldea_testkit::{ChildGuard, Children as Processes};

pub(crate) fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which prepares models and Python")
    }))
}

/// `aldea` on its own home (its own database) with the test models, no token and no Redis from
/// the caller's environment.
pub(crate) fn aldea_on(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aldea"));
    cmd.env("ALDEA_HOME", home)
        .env("ALDEA_MODELS", env_path("ALDEA_TEST_MODELS"))
        // ALDEA_TEST_CHILD_LOG (a log filter) debugs a test: the children log at it, shown on stderr.
        .env("ALDEA_LOG", std::env::var("ALDEA_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .env_remove("ALDEA_SERVICE_TOKEN")
        .env_remove("ALDEA_REDIS_URL");
    cmd
}

/// Runs a command to the end, showing its stderr.
pub(crate) fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("running aldea");
    eprintln!("stderr: {}", String::from_utf8_lossy(&output.stderr));
    output
}

pub(crate) fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or("").to_owned()
}

/// `aldea keys create --org ORG` on `home`: the new key.
pub(crate) fn create_key(home: &Path, org: &str) -> String {
    let created = run(aldea_on(home).args(["keys", "create", "--org", org]));
    assert!(created.status.success());
    last_line(&created)
}

/// `aldea all` with every service on a free loopback port and 2 inference threads.
pub(crate) const ALL_ON_FREE_PORTS: &[&str] = &[
    "all",
    "--gateway-listen",
    "127.0.0.1:0",
    "--stt-listen",
    "127.0.0.1:0",
    "--platform-listen",
    "127.0.0.1:0",
    "--web-listen",
    "127.0.0.1:0",
    "--threads",
    "2",
];

/// Starts `aldea ARGS` on `home` and returns it, killed when dropped (however the test ends), with
/// the address it printed on the stderr line containing `marker` (its stderr is drained from then on).
pub(crate) fn spawn(home: &Path, args: &[&str], marker: &str) -> (ChildGuard, String) {
    let (child, mut addrs) = spawn_printing(home, args, &[marker]);
    (child, addrs.remove(0))
}

/// [`spawn`], with the addresses printed on the lines containing each of `markers`, in the order
/// the process prints them.
pub(crate) fn spawn_printing(home: &Path, args: &[&str], markers: &[&str]) -> (ChildGuard, Vec<String>) {
    spawn_command(aldea_on(home).args(args), args, markers, None)
}

/// Everything a process wrote on stderr, kept by [`spawn_logged`].
pub(crate) type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// [`spawn`] logging at `level` (`ALDEA_LOG`), with every line it writes kept in the returned
/// [`Log`] (for tests that read the logs).
pub(crate) fn spawn_logged(home: &Path, args: &[&str], marker: &str, level: &str) -> (ChildGuard, String, Log) {
    let log = Log::default();
    let (child, mut addrs) =
        spawn_command(aldea_on(home).args(args).env("ALDEA_LOG", level), args, &[marker], Some(log.clone()));
    (child, addrs.remove(0), log)
}

fn spawn_command(
    command: &mut Command,
    args: &[&str],
    markers: &[&str],
    log: Option<Log>,
) -> (ChildGuard, Vec<String>) {
    let mut child = ChildGuard::new(command.stderr(Stdio::piped()).spawn().unwrap());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok).inspect(move |line| {
        if let Some(log) = &log {
            let mut log = log.lock().unwrap();
            log.push_str(line);
            log.push('\n');
        }
    });
    let addrs = markers
        .iter()
        .map(|marker| {
            lines
                .by_ref()
                .find_map(|l| {
                    l.contains(marker)
                        .then(|| {
                            l.split("http://").nth(1).map(|rest| {
                                rest.split(|c: char| c == '/' || c.is_whitespace()).next().unwrap_or("").to_owned()
                            })
                        })
                        .flatten()
                })
                .unwrap_or_else(|| panic!("the address after {marker:?} on stderr"))
        })
        .collect();
    // Keep draining stderr so the process never blocks on a full pipe (shown with
    // ALDEA_TEST_CHILD_LOG).
    let show = std::env::var_os("ALDEA_TEST_CHILD_LOG").is_some();
    let name = args.first().copied().unwrap_or("aldea").to_owned();
    std::thread::spawn(move || {
        for line in lines {
            if show {
                eprintln!("[{name}] {line}");
            }
        }
    });
    (child, addrs)
}

/// One HTTP/1.1 request over a fresh connection: the status and the body; status 0 when the
/// server cannot be reached or answers nothing.
pub(crate) fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    http_to(addr, addr, method, path, headers, body)
}

/// [`http`] to `addr` with `host` as the Host header (a host-routing front door's name).
pub(crate) fn http_to(
    addr: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return (0, Vec::new()) };
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return (0, Vec::new()) };
    let status = String::from_utf8_lossy(&response[..split]).split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// A GET: the status and the body as text.
pub(crate) fn get(addr: &str, path: &str) -> (u16, String) {
    let (status, body) = http(addr, "GET", path, &[], b"");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` until it holds (at most 60 s).
pub(crate) fn poll_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client WebSocket to a service.
pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/v1/listen?{query}` with the API key; the HTTP status when it is refused before the upgrade.
pub(crate) async fn open_stream(addr: &str, key: &str, query: &str) -> Result<Socket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/v1/listen?{query}").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Token {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => Err(answer.status().as_u16()),
        Err(e) => panic!("connecting: {e}"),
    }
}

/// Streams `audio` (a WAV file) in 100-ms chunks as fast as it can go, then CloseStream; the
/// finals' text and the closing Metadata's duration.
pub(crate) async fn stream_wav(addr: &str, key: &str, audio: &[u8]) -> (String, f64) {
    stream_wav_as(addr, &format!("token, {key}"), audio).await
}

/// [`stream_wav`] with the credential as the `Sec-WebSocket-Protocol` a browser sends (`token,
/// <key>` or `bearer, <jwt>`).
pub(crate) async fn stream_wav_as(addr: &str, subprotocol: &str, audio: &[u8]) -> (String, f64) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let mut request = format!("ws://{addr}/v1/listen?interim_results=true").into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", subprotocol.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("the stream opens");
    let (mut tx, mut rx) = ws.split();
    let audio = audio.to_vec();
    let sender = tokio::spawn(async move {
        for chunk in audio.chunks(3200) {
            tx.send(Message::Binary(chunk.to_vec().into())).await.unwrap();
        }
        tx.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await.unwrap();
        tx
    });
    let mut finals = Vec::new();
    let mut metadata = Vec::new();
    while let Some(message) = rx.next().await {
        match message.unwrap() {
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                let kind = value["type"].as_str().unwrap().to_owned();
                assert!(!kind.starts_with("aldea."), "internal messages stay inside");
                if kind == "Results" && value["is_final"] == true {
                    finals.push(value["channel"]["alternatives"][0]["transcript"].as_str().unwrap().to_owned());
                }
                if kind == "Metadata" {
                    metadata.push(value["duration"].as_f64().unwrap());
                }
            }
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            _ => {}
        }
    }
    let _ = sender.await;
    assert_eq!(metadata.len(), 2, "Metadata first and last");
    (finals.join(" "), metadata[1])
}

/// A free loopback port (nothing listens on it when this returns).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private `redis-server` on `port`, its data in `dir` (append-only, synced on every write, so a
/// restart keeps what it held).
pub(crate) fn start_redis(dir: &Path, port: u16) -> ChildGuard {
    let child = ChildGuard::new(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)"),
    );
    poll_until("redis to answer", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    child
}

/// A schema of its own in the test database (`ALDEA_TEST_POSTGRES_URL`), dropped when the test
/// ends.
pub(crate) struct Schema {
    admin: String,
    name: String,
}

impl Schema {
    /// The schema, and the URL that puts a service in it (its `search_path`).
    pub(crate) fn new() -> (Schema, String) {
        let admin =
            std::env::var("ALDEA_TEST_POSTGRES_URL").expect("ALDEA_TEST_POSTGRES_URL (scripts/test.sh sets it)");
        let name = format!("aldea_e2e_{}", uuid::Uuid::new_v4().simple());
        Schema::admin_sql(&admin, &format!("CREATE SCHEMA {name}"));
        let url = Schema::url_in(&admin, &name);
        (Schema { admin, name }, url)
    }

    /// `url` (a database URL) with this schema as its `search_path`.
    pub(crate) fn url_in(url: &str, name: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{name}")
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn admin_sql(admin: &str, sql: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let pool = sqlx::PgPool::connect(admin).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        });
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (admin, name) = (self.admin.clone(), self.name.clone());
        runtime.block_on(async move {
            if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                let _ = sqlx::raw_sql(&format!("DROP SCHEMA {name} CASCADE")).execute(&pool).await;
            }
        });
    }
}

/// What `tests/browser/dashboard.mjs` reported, and the recording its playground transcribed.
pub(crate) struct Dashboard {
    /// The script's JSON (its last line).
    pub(crate) result: serde_json::Value,
    /// The recording's reference text.
    pub(crate) reference: String,
    /// The recording's length in seconds.
    pub(crate) seconds: f64,
}

/// The five consecutive LibriVox clips, each followed by 0.5 s of silence, as one 16-kHz WAV,
/// and its reference (each clip normalized on its own).
fn librivox_recording(path: &Path) -> (String, f64) {
    let rows = real_dev_refs();
    let mut samples = Vec::new();
    let mut reference = Vec::new();
    for (file, text) in rows.iter().filter(|(f, _)| f.starts_with("ps_librivox_")) {
        samples.extend(aldea_audio::load_mono_16k(&real_dev(file)).unwrap());
        samples.extend(std::iter::repeat_n(0.0f32, 8_000));
        reference.push(text.as_str());
    }
    assert!(reference.len() == 5, "the five LibriVox clips");
    std::fs::write(path, aldea_testkit::wav::wav_mono16(&samples, 16_000)).unwrap();
    (aldea_eval::joined_reference(reference), samples.len() as f64 / 16_000.0)
}

/// The dashboard at `web` (calling the Speech API at `api`) in Debian's Chromium, as a person uses
/// it, by `tests/browser/dashboard.mjs`: sign up, create and copy a key, curl, usage, revoke, the
/// playground's file and (fake) microphone. `shots`: screenshots and axe there; without it the
/// flow alone. Panics when the script fails.
pub(crate) fn dashboard_in_chromium(web: &str, api: &str, shots: Option<&Path>) -> Dashboard {
    let node_dir = env_path("ALDEA_TEST_NODE_DIR");
    let chromium = env_path("ALDEA_TEST_CHROMIUM");
    let work = tempfile::tempdir().unwrap();
    let upload = work.path().join("librivox.wav");
    let (reference, seconds) = librivox_recording(&upload);
    // The fake microphone plays a 48-kHz copy (what a capture device gives), once.
    let mic = work.path().join("mic.wav");
    let converted = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&upload)
        .args(["-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le"])
        .arg(&mic)
        .status()
        .unwrap();
    assert!(converted.success());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let output = Command::new("node")
        .arg(&script)
        .env("WEB_URL", web)
        .env("API_URL", api)
        .env("NODE_DIR", &node_dir)
        .env("CHROMIUM", &chromium)
        .env("UPLOAD_WAV", &upload)
        .env("MIC_WAV", &mic)
        .env("MIC_SECONDS", format!("{seconds:.1}"))
        .env("SHOTS", shots.unwrap_or(&work.path().join("shots")))
        .env("INSPECT", if shots.is_some() { "1" } else { "0" })
        .output()
        .expect("running node");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("the script's JSON");
    eprintln!("{}", serde_json::to_string_pretty(&result).unwrap());
    assert!(output.status.success() && result.get("error").is_none(), "the browser run: {}", result["error"]);
    Dashboard { result, reference, seconds }
}
