//! The web dashboard in a real browser: `aldea all` on free ports (real model, SQLite), driven by
//! `tests/browser/dashboard.mjs` in Debian's Chromium through playwright-core, with a fake
//! microphone playing a real recording. Elements are found by role and accessible name only. The
//! screenshots of every page at 1280×800 and 390×844 go to `$ALDEA_TEST_SHOTS` (default: a folder
//! under the system's temporary directory), printed by the test.
//! Needs the environment `scripts/test.sh` sets (Chromium, the browser test's node_modules).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{env_path, http, poll_until, real_dev, real_dev_refs, spawn_printing};

/// The five consecutive LibriVox clips, each followed by 0.5 s of silence, as one 16-kHz WAV,
/// and its reference (each clip normalized on its own).
fn recording(path: &Path) -> (String, f64) {
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

fn wer(reference: &str, hypothesis: &str) -> f64 {
    aldea_eval::english_word_errors(reference, hypothesis).wer_percent()
}

fn shots_dir() -> PathBuf {
    std::env::var_os("ALDEA_TEST_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("aldea-web-shots-{}", std::process::id())))
}

#[test]
fn the_dashboard_works_in_chromium_from_sign_up_to_the_microphone() {
    let node_dir = env_path("ALDEA_TEST_NODE_DIR");
    let chromium = env_path("ALDEA_TEST_CHROMIUM");
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let upload = work.path().join("librivox.wav");
    let (reference, seconds) = recording(&upload);
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

    let (_server, addrs) = spawn_printing(home.path(), common::ALL_ON_FREE_PORTS, &["dashboard:", "Speech API:"]);
    let (web, api) = (addrs[0].clone(), addrs[1].clone());
    poll_until("the gateway's readiness", || http(&api, "GET", "/ready", &[], b"").0 == 200);
    poll_until("the dashboard's readiness", || http(&web, "GET", "/ready", &[], b"").0 == 200);

    let shots = shots_dir();
    eprintln!("screenshots: {}", shots.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let output = Command::new("node")
        .arg(&script)
        .env("WEB_URL", format!("http://{web}"))
        .env("API_URL", format!("http://{api}"))
        .env("NODE_DIR", &node_dir)
        .env("CHROMIUM", &chromium)
        .env("UPLOAD_WAV", &upload)
        .env("MIC_WAV", &mic)
        .env("MIC_SECONDS", format!("{seconds:.1}"))
        .env("SHOTS", &shots)
        .output()
        .expect("running node");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("the script's JSON");
    eprintln!("{}", serde_json::to_string_pretty(&result).unwrap());
    assert!(output.status.success() && result.get("error").is_none(), "the browser run: {}", result["error"]);

    // Sign up → create key → copy → curl → usage within 5 s → revoke → refused.
    assert_eq!(result["key_copied"], true, "the Copy button puts the key on the clipboard");
    assert_eq!(result["curl_status"], 200, "the copied key works against the gateway");
    let seen = result["usage_seen_after_ms"].as_u64().expect("the usage page shows the request");
    assert!(seen <= 5_000, "the request shows on the usage page after {seen} ms");
    assert_eq!(result["revoked_status"], 401, "the revoked key is refused");

    // The playground: a file, and the microphone (interim text while it plays, then finals).
    let upload_wer = wer(&reference, result["upload_transcript"].as_str().unwrap());
    let live_wer = wer(&reference, result["live_transcript"].as_str().unwrap());
    eprintln!("playground WER: file {upload_wer:.1} %, microphone {live_wer:.1} % ({seconds:.1} s of speech)");
    assert!(upload_wer <= 15.0, "file WER {upload_wer:.1} %: {}", result["upload_transcript"]);
    let downloads: Vec<&str> = result["downloads"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(downloads, ["librivox.srt", "librivox.vtt", "librivox.json"]);
    assert_eq!(result["live_before_start"], "", "the live region is empty until there is text");
    assert_eq!(result["interim_while_playing"], true, "interim text appears while the recording plays");
    assert!(live_wer <= 25.0, "microphone WER {live_wer:.1} %: {}", result["live_transcript"]);
    assert_eq!(result["live_interim_left"], false, "only finals remain once stopped");

    // Every page: JS+CSS ≤ 150 KB, no serious or critical axe finding, no CSP violation, no
    // horizontal overflow on a phone.
    let pages = result["pages"].as_object().unwrap();
    for name in [
        "landing",
        "signup",
        "login",
        "keys",
        "keys-new",
        "revoke-confirm",
        "rotate-confirm",
        "usage",
        "playground",
        "members",
        "billing",
        "docs",
    ] {
        let page = &pages[name];
        let bytes = page["js_css_bytes"].as_u64().unwrap();
        eprintln!("{name}: {bytes} bytes of JS+CSS, {} axe findings", page["axe"].as_array().unwrap().len());
        assert!(bytes > 0 && bytes <= 150 * 1024, "{name}: {bytes} bytes of JS and CSS");
        let serious: Vec<&Value> = page["axe"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(serious.is_empty(), "{name}: {serious:?}");
        assert!(
            page["overflow"].as_object().unwrap().is_empty(),
            "{name} is wider than the screen: {}",
            page["overflow"]
        );
        assert_eq!(page["shots"].as_array().unwrap().len(), 2);
    }
    assert!(result["csp_violations"].as_array().unwrap().is_empty(), "{}", result["csp_violations"]);
}

/// `aldea web` on its own, as in a cluster: in front of an `aldea platform` process over SQLite;
/// ready when the platform is, its sign-up form served; a bad URL flag is a clear error.
#[test]
fn aldea_web_runs_alone_in_front_of_a_platform() {
    let home = tempfile::tempdir().unwrap();
    let (_platform, platform) =
        common::spawn(home.path(), &["platform", "--listen", "127.0.0.1:0", "--insecure-cookies"], "platform API on");
    let platform_url = format!("http://{platform}");
    let (_web, web) = common::spawn(
        home.path(),
        &[
            "web",
            "--listen",
            "127.0.0.1:0",
            "--platform",
            &platform_url,
            "--api-url",
            "https://api.example.com",
            "--insecure-cookies",
        ],
        "dashboard on",
    );
    poll_until("the dashboard's readiness", || http(&web, "GET", "/ready", &[], b"").0 == 200);
    let (status, page) = http(&web, "GET", "/signup", &[], b"");
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200);
    assert!(page.contains(">Organization name<") && page.contains(">Sign up<"), "{page}");
    let (_, docs) = http(&web, "GET", "/", &[], b"");
    assert!(String::from_utf8_lossy(&docs).contains("href=\"/signup\""));

    let bad = common::run(common::aldea_on(home.path()).args(["web", "--platform", "ftp://platform"]));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an http(s) base URL"));
}
