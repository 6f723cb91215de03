//! The web dashboard in a real browser: `aldea all` on free ports (real model, SQLite), driven by
//! `tests/browser/dashboard.mjs` in Debian's Chromium through playwright-core, with a fake
//! microphone playing a real recording. Elements are found by role and accessible name only. The
//! screenshots of every page at 1280×800 and 390×844 go to `$ALDEA_TEST_SHOTS` (default: a folder
//! under the system's temporary directory), printed by the test.
//! Needs the environment `scripts/test.sh` sets (Chromium, the browser test's node_modules).

use std::path::PathBuf;

use serde_json::Value;

mod common;
use common::{http, poll_until, spawn_printing, Dashboard};

fn wer(reference: &str, hypothesis: &str) -> f64 {
    aldea_eval::english_word_errors(reference, hypothesis).wer_percent()
}

#[test]
fn the_dashboard_works_in_chromium_from_sign_up_to_the_microphone() {
    let home = tempfile::tempdir().unwrap();
    let (_server, addrs) = spawn_printing(home.path(), common::ALL_ON_FREE_PORTS, &["dashboard:", "Speech API:"]);
    let (web, api) = (addrs[0].clone(), addrs[1].clone());
    poll_until("the gateway's readiness", || http(&api, "GET", "/ready", &[], b"").0 == 200);
    poll_until("the dashboard's readiness", || http(&web, "GET", "/ready", &[], b"").0 == 200);
    let shots = std::env::var_os("ALDEA_TEST_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("aldea-web-shots-{}", std::process::id())));
    eprintln!("screenshots: {}", shots.display());
    let Dashboard { result, reference, seconds } =
        common::dashboard_in_chromium(&format!("http://{web}"), &format!("http://{api}"), Some(&shots));

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
