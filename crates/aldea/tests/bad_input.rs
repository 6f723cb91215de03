//! The bad-input matrix over both services of `aldea all` (real gateway, real stt, real model):
//! internal parameters in every spelling, oversized fields, frames and bodies, slow bodies,
//! malformed JSON and control messages, wrong, expired and revoked credentials, private and tricky
//! `url`s. Each case gets its documented status or close code, and the process's resident memory
//! stays bounded through all of them. Needs the environment `scripts/test.sh` sets.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{aldea_on as aldea, http, last_line, poll_until, real_dev, run, ChildGuard};

const SERVICE_TOKEN: &str = "a-service-token-for-the-matrix";
const JWT_SECRET: &str = "a jwt secret for the bad input matrix, long enough";
const MAX_BODY: usize = 300_000;

/// `aldea all` with a service token (stt refuses requests without it), browser tokens, a small body
/// limit and a short idle timeout; the gateway's and stt's addresses.
fn start(home: &Path) -> (ChildGuard, String, String) {
    let mut child = ChildGuard::new(
        aldea(home)
            .args(common::ALL_ON_FREE_PORTS)
            .args(["--max-body-bytes", &MAX_BODY.to_string(), "--body-idle-seconds", "1"])
            .env("ALDEA_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("ALDEA_JWT_SECRET", JWT_SECRET)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address =
        |line: &str| line.split("http://").nth(1).and_then(|rest| rest.split([' ', '/']).next()).map(str::to_owned);
    let mut gateway = None;
    let mut stt = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains("Speech API:") {
            gateway = address(&line);
        } else if line.contains("stt service:") {
            stt = address(&line);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let (gateway, stt) = (gateway.expect("the gateway's address"), stt.expect("stt's address"));
    poll_until("readiness", || http(&gateway, "GET", "/ready", &[], b"").0 == 200);
    (child, gateway, stt)
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// One raw HTTP/1.1 exchange: `head` (request line and headers, without the blank line), then
/// `body` in pieces with `pause` between them; the status (0: none).
fn raw(addr: &str, head: &str, body: &[&[u8]], pause: Duration) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = stream.write_all(format!("{head}\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes());
    for piece in body {
        if stream.write_all(piece).is_err() {
            break;
        }
        std::thread::sleep(pause);
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A multipart body with these fields (name, value).
fn form(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        let filename = if *name == "file" { "; filename=\"a.wav\"" } else { "" };
        body.extend_from_slice(
            format!("--XyZ\r\ncontent-disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--XyZ--\r\n");
    body
}

/// What a stream ends with after `frames` are sent on it: the close code (1006: no close frame).
async fn close_after(
    addr: &str,
    path_query: &str,
    headers: &[(&'static str, String)],
    frames: Vec<Message>,
) -> Result<u16, u16> {
    let mut request = format!("ws://{addr}{path_query}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let ws = match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => return Err(answer.status().as_u16()),
        Err(e) => panic!("connecting: {e}"),
    };
    let (mut write, mut read) = ws.split();
    // As a browser does: frames are written while what the server says is read.
    tokio::spawn(async move {
        for frame in frames {
            if write.send(frame).await.is_err() {
                break;
            }
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = read.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map_or(1005, |f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return 1006,
            }
        }
        1006
    })
    .await;
    Ok(ended.unwrap_or(0))
}

/// A stream case: name, service (`gw` or `stt`), path and query, headers, frames sent, and the
/// documented answer (`Err`: an HTTP status before the upgrade; `Ok`: a close code).
type StreamCase =
    (&'static str, &'static str, &'static str, Vec<(&'static str, String)>, Vec<Message>, Result<u16, u16>);

#[test]
fn every_bad_input_gets_its_documented_answer_and_memory_stays_bounded() {
    let home = tempfile::tempdir().unwrap();
    let key = last_line(&run(aldea(home.path()).args(["keys", "create", "--org", "matrix"])));
    let revoked = last_line(&run(aldea(home.path()).args(["keys", "create", "--org", "matrix", "--name", "old"])));
    let broke = last_line(&run(aldea(home.path()).args(["keys", "create", "--org", "broke"])));
    let (server, gw, stt) = start(home.path());
    let auth = format!("Token {key}");
    let audio = std::fs::read(real_dev("ps_goforward.wav")).unwrap();
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        http(&gw, "POST", path, &all, body).0
    };
    // A browser token of the key about to be revoked, minted while it is valid.
    let (status, body) = http(&gw, "POST", "/v1/auth/grant", &[("authorization", &format!("Token {revoked}"))], b"");
    assert_eq!(status, 200);
    let old_token =
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["access_token"].as_str().unwrap().to_owned();
    let listing =
        String::from_utf8_lossy(&run(aldea(home.path()).args(["keys", "list", "--org", "matrix"])).stdout).into_owned();
    let revoked_id =
        listing.lines().find(|l| l.contains("\told\t")).and_then(|l| l.split('\t').next()).unwrap().to_owned();
    assert!(run(aldea(home.path()).args(["keys", "revoke", &revoked_id])).status.success());
    assert!(run(aldea(home.path()).args(["credit", "set", "--org", "broke", "0"])).status.success());
    poll_until("the revocation is seen", || {
        http(&gw, "POST", "/v1/listen", &[("authorization", &format!("Token {revoked}"))], &audio[..3200]).0 == 401
    });
    // The warm-up: one good upload and stream, then the memory baseline.
    assert_eq!(post("/v1/listen", &[], &audio), 200);
    let pid = server.id();
    let baseline = rss_kib(pid);

    let mut cases: Vec<(String, u16, u16)> = Vec::new();
    let mut check = |name: &str, got: u16, want: u16| cases.push((name.to_owned(), got, want));

    // Credentials.
    check("no credentials", http(&gw, "POST", "/v1/listen", &[], &audio).0, 401);
    check("unknown key", http(&gw, "POST", "/v1/listen", &[("authorization", "Token org_nope")], &audio).0, 401);
    check("basic auth", http(&gw, "POST", "/v1/listen", &[("authorization", "Basic YTpi")], &audio).0, 401);
    check(
        "revoked key",
        http(&gw, "POST", "/v1/listen", &[("authorization", &format!("Token {revoked}"))], &audio).0,
        401,
    );
    check(
        "organization without credit",
        http(&gw, "POST", "/v1/listen", &[("authorization", &format!("Token {broke}"))], &audio).0,
        402,
    );
    check(
        "malformed browser token",
        http(&gw, "POST", "/v1/listen", &[("authorization", "Bearer a.b.c")], &audio).0,
        401,
    );
    let mut forged = old_token.clone();
    forged.push('x');
    check(
        "browser token with a bad signature",
        http(&gw, "POST", "/v1/listen", &[("authorization", &format!("Bearer {forged}"))], &audio).0,
        401,
    );
    check(
        "browser token of a revoked key",
        http(&gw, "POST", "/v1/listen", &[("authorization", &format!("Bearer {old_token}"))], &audio).0,
        401,
    );
    let (status, _) = http(&gw, "POST", "/v1/auth/grant", &[("authorization", &format!("Bearer {old_token}"))], b"");
    check("a token minting a token", status, 401);

    // The resume handshake is the gateway's: clients' spellings change nothing.
    for (name, query) in [
        ("resume_start in the query", "resume_start=99"),
        ("resume%5Fstart in the query", "resume%5Fstart=99"),
        ("%72esume_start in the query", "%72esume_start=99"),
        ("resume_prompt_tokens in the query", "resume_prompt_tokens=1,2,3"),
    ] {
        let (status, body) = http(&gw, "POST", &format!("/v1/listen?{query}"), &[("authorization", &auth)], &audio);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let first_word = value.pointer("/results/channels/0/alternatives/0/words/0/start").and_then(|s| s.as_f64());
        check(name, if first_word.is_some_and(|s| s < 10.0) { status } else { 0 }, 200);
    }
    check("a client's aldea-resume header", post("/v1/listen", &[("aldea-resume", "start=99")], &audio), 200);

    // Query parameters.
    check("sample_rate not a number", post("/v1/listen?sample_rate=abc", &[], &audio), 400);
    check("unknown model", post("/v1/listen?model=no-such-model", &[], &audio), 400);
    check("unknown encoding", post("/v1/listen?encoding=speex", &[], &audio), 400);
    check("zero channels", post("/v1/listen?channels=0", &[], &audio), 400);
    check("a language the model lacks", post("/v1/listen?language=fr", &[], &audio), 400);

    // Bodies.
    check("body over the limit", post("/v1/listen", &[], &vec![0u8; MAX_BODY + 1]), 413);
    let declared = format!("POST /v1/listen HTTP/1.1\r\nauthorization: {auth}\r\ncontent-length: 999999999");
    check("declared length over the limit", raw(&gw, &declared, &[b"RIFF"], Duration::ZERO), 413);
    let slow = format!("POST /v1/listen HTTP/1.1\r\nauthorization: {auth}\r\ncontent-length: 64000");
    check("a body that stalls", raw(&gw, &slow, &[&audio[..1000], &audio[1000..2000]], Duration::from_secs(3)), 408);
    check("empty body", post("/v1/listen", &[], b""), 400);
    let mut not_flac = b"fLaC".to_vec();
    not_flac.extend(std::iter::repeat_n(0x5a, 4000));
    check("undecodable audio", post("/v1/listen", &[], &not_flac), 415);
    let json = [("content-type", "application/json")];
    check("JSON without url", post("/v1/listen", &json, br#"{"nope":1}"#), 400);
    check("malformed JSON", post("/v1/listen", &json, b"{\"url\":"), 400);
    check("JSON over 64 KiB", post("/v1/listen", &json, &vec![b' '; 70_000]), 413);
    for (name, url) in [
        ("file url", "file:///etc/passwd"),
        ("ftp url", "ftp://example.com/a.wav"),
        ("loopback url", "http://127.0.0.1:9/a.wav"),
        ("metadata-service url", "http://169.254.169.254/latest/meta-data"),
        ("IPv4-mapped loopback url", "http://[::ffff:127.0.0.1]:9/a.wav"),
        ("NAT64 loopback url", "http://[64:ff9b::7f00:1]:9/a.wav"),
        ("6to4 private url", "http://[2002:c0a8:101::1]:9/a.wav"),
        ("benchmarking-range url", "http://198.18.0.1/a.wav"),
        ("reserved-range url", "http://240.0.0.1/a.wav"),
        ("decimal loopback url", "http://2130706433:9/a.wav"),
    ] {
        check(name, post("/v1/listen", &json, format!(r#"{{"url":"{url}"}}"#).as_bytes()), 400);
    }

    // The OpenAI form.
    let multipart = [("content-type", "multipart/form-data; boundary=XyZ")];
    let openai = "/v1/audio/transcriptions";
    check("form without a file", post(openai, &multipart, &form(&[("model", b"whisper-1")])), 400);
    check(
        "form field over 4 KiB",
        post(openai, &multipart, &form(&[("model", &[b'a'; 10_000]), ("file", &audio)])),
        400,
    );
    check(
        "unknown response_format",
        post(openai, &multipart, &form(&[("file", &audio), ("response_format", b"xml")])),
        400,
    );
    check("not a form", post(openai, &[("content-type", "application/json")], b"{}"), 400);
    check("form over the limit", post(openai, &multipart, &form(&[("file", &vec![0u8; MAX_BODY + 10])])), 413);

    // stt directly: the service token guards it, and the resume header must hold together.
    check("stt without the service token", http(&stt, "POST", "/v1/listen", &[], &audio).0, 401);
    check(
        "stt with a wrong service token",
        http(&stt, "POST", "/v1/listen", &[("authorization", "Bearer nope-nope-nope-nope")], &audio).0,
        401,
    );

    // Streams.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let token_header = vec![("authorization", auth.clone())];
    let stt_header = vec![("authorization", format!("Bearer {SERVICE_TOKEN}"))];
    let close_stream = || Message::Text(r#"{"type":"CloseStream"}"#.into());
    let silence = || Message::Binary(vec![0u8; 3200].into());
    let stream_cases: Vec<StreamCase> = vec![
        ("stream without credentials", "gw", "/v1/listen", Vec::new(), Vec::new(), Err(401)),
        (
            "stream with an unknown encoding",
            "gw",
            "/v1/listen?encoding=bogus",
            token_header.clone(),
            Vec::new(),
            Err(400),
        ),
        (
            "stream with a negative sample rate",
            "gw",
            "/v1/listen?sample_rate=-5",
            token_header.clone(),
            Vec::new(),
            Err(400),
        ),
        (
            "audio frame of 40 MiB",
            "gw",
            "/v1/listen",
            token_header.clone(),
            vec![Message::Binary(vec![0u8; 40 << 20].into())],
            Ok(1009),
        ),
        (
            "audio frame of 1 MiB + 1",
            "gw",
            "/v1/listen",
            token_header.clone(),
            vec![Message::Binary(vec![0u8; (1 << 20) + 1].into())],
            Ok(1009),
        ),
        (
            "text frame over 64 KiB",
            "gw",
            "/v1/listen",
            token_header.clone(),
            vec![Message::Text("x".repeat(70_000).into())],
            Ok(1009),
        ),
        (
            "malformed control message",
            "gw",
            "/v1/listen?encoding=linear16",
            token_header.clone(),
            vec![silence(), Message::Text(r#"{"type":"#.into()), close_stream()],
            Ok(1000),
        ),
        (
            "unknown control message",
            "gw",
            "/v1/listen?encoding=linear16",
            token_header.clone(),
            vec![silence(), Message::Text(r#"{"type":"Dance"}"#.into()), close_stream()],
            Ok(1000),
        ),
        (
            "stream with resume%5Fstart",
            "gw",
            "/v1/listen?encoding=linear16&resume%5Fstart=99",
            token_header.clone(),
            vec![silence(), close_stream()],
            Ok(1000),
        ),
        ("stt stream without the service token", "stt", "/v1/listen", Vec::new(), Vec::new(), Err(401)),
        (
            "stt stream with a broken resume header",
            "stt",
            "/v1/listen",
            [stt_header.clone(), vec![("aldea-resume", "start=-1".to_owned())]].concat(),
            Vec::new(),
            Err(400),
        ),
        (
            "stt audio frame of 40 MiB",
            "stt",
            "/v1/listen",
            stt_header.clone(),
            vec![Message::Binary(vec![0u8; 40 << 20].into())],
            Ok(1009),
        ),
    ];
    for (name, target, path, headers, frames, want) in stream_cases {
        let addr = if target == "gw" { &gw } else { &stt };
        let got = runtime.block_on(close_after(addr, path, &headers, frames));
        let code = |r: Result<u16, u16>| r.unwrap_or_else(|status| status);
        check(name, code(got), code(want));
    }

    let after = rss_kib(pid);
    let report: Vec<String> =
        cases.iter().map(|(name, got, want)| format!("{:<42} got {got:>4}, documented {want:>4}", name)).collect();
    eprintln!(
        "{}\nresident memory: {} MiB before the matrix, {} MiB after",
        report.join("\n"),
        baseline / 1024,
        after / 1024
    );
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let wrong: Vec<&String> =
        cases.iter().zip(&report).filter(|((_, got, want), _)| got != want).map(|(_, line)| line).collect();
    assert!(
        wrong.is_empty(),
        "answers other than the documented ones:\n{}",
        wrong.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    // Nothing above is buffered whole past the limits: 40-MiB frames, a 1-GB declared body.
    assert!(after < baseline + 64 * 1024, "resident memory grew from {} to {} MiB", baseline / 1024, after / 1024);
}
