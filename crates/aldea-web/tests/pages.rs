//! The dashboard against the real platform (served on port-0 sockets over in-memory stores), as a
//! browser without JavaScript sees it: forms, cookies, CSRF, redirects and the headers of every
//! page. The browser tests (Chromium) are in the `aldea` crate's `tests/web.rs`.

use std::sync::Arc;

use aldea_platform::Deps;
use aldea_store::MemoryKeys;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use tokio_util::sync::CancellationToken;

const JWT_SECRET: &str = "a-jwt-secret-for-the-dashboard-tests-0123";

struct Site {
    url: String,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

/// The platform and the dashboard on free ports; the Speech API URL points nowhere (port 9).
async fn site() -> Site {
    let stop = CancellationToken::new();
    let platform_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let platform_url = format!("http://{}", platform_listener.local_addr().unwrap());
    let config = aldea_platform::Config {
        jwt_secret: Some(secrecy::SecretString::from(JWT_SECRET.to_owned())),
        secure_cookies: false,
        ..aldea_platform::Config::default()
    };
    let deps = Deps::single_process(Arc::new(MemoryKeys::new()));
    tokio::spawn(aldea_platform::serve(aldea_platform::AppState::new(config, deps), platform_listener, stop.clone()));
    let web_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", web_listener.local_addr().unwrap());
    let config = aldea_web::Config {
        platform_url: platform_url.parse().unwrap(),
        api_url: "http://127.0.0.1:9".parse().unwrap(),
        secure_cookies: false,
    };
    tokio::spawn(aldea_web::serve(aldea_web::AppState::new(config), web_listener, stop.clone()));
    let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    Site { url, http, _stop: stop.drop_guard() }
}

/// `name=value` of each `Set-Cookie`.
fn cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

/// The value of the first `name="csrf"` input (or of the CSRF meta tag).
fn csrf(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .map(|i| i + r#"name="csrf" value=""#.len())
        .or_else(|| page.find(r#"name="csrf-token" content=""#).map(|i| i + r#"name="csrf-token" content=""#.len()));
    let at = at.expect("a CSRF token in the page");
    page[at..].split('"').next().unwrap().to_owned()
}

/// The new key's secret shown on the page.
fn new_key(page: &str) -> Option<String> {
    let at = page.find(r#"id="new-key""#)?;
    let value = page[at..].find(r#"value=""#)? + at + r#"value=""#.len();
    Some(page[value..].split('"').next().unwrap().to_owned())
}

impl Site {
    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).header(COOKIE, cookie).send().await.unwrap()
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.url)).header(COOKIE, cookie).form(form).send().await.unwrap()
    }

    /// Signs up through the form: the session's cookie header and the page shown.
    async fn sign_up(&self, email: &str) -> (String, String) {
        let form = self.get("/signup", "").await;
        let csrf_cookie = cookies(&form).into_iter().find(|c| c.starts_with("aldea_csrf=")).expect("the form's cookie");
        let token = csrf(&form.text().await.unwrap());
        let fields =
            [("email", email), ("password", "correct horse battery"), ("org_name", "Acme"), ("csrf", token.as_str())];
        let answer = self.post("/signup", &csrf_cookie, &fields).await;
        assert_eq!(answer.status(), 200);
        let set = cookies(&answer);
        let session = set.iter().find(|c| c.starts_with("aldea_session=")).expect("a session cookie").clone();
        let org = set.iter().find(|c| c.starts_with("aldea_org=")).expect("the org picked").clone();
        (format!("{session}; {org}"), answer.text().await.unwrap())
    }
}

#[tokio::test]
async fn sign_up_shows_the_first_key_once_and_keeps_a_session() {
    let site = site().await;
    // The landing page links the form; signed-out pages send to the login form.
    let home = site.get("/", "").await.text().await.unwrap();
    assert!(home.contains(r#"href="/signup""#) && home.contains(">Sign up<"));
    let keys = site.get("/keys", "").await;
    assert_eq!((keys.status().as_u16(), keys.headers()[LOCATION].to_str().unwrap()), (303, "/login"));

    // Without the form's cookie the token proves nothing.
    let form = site.get("/signup", "").await;
    let token = csrf(&form.text().await.unwrap());
    let refused = site
        .post(
            "/signup",
            "",
            &[("email", "a@example.com"), ("password", "long enough"), ("org_name", "A"), ("csrf", &token)],
        )
        .await;
    assert_eq!(refused.status(), 403);

    let (cookie, page) = site.sign_up("ada@example.com").await;
    let secret = new_key(&page).expect("the first key's secret");
    assert!(secret.starts_with("aldea_") || secret.len() > 20, "a key: {secret}");
    assert!(page.contains(">New API key<") && page.contains(">Copy<"));
    for name in ["API keys", "Usage", "Playground", "Members", "Billing", "Docs"] {
        assert!(page.contains(&format!(">{name}</a>")), "the navigation names {name}");
    }
    // The session works; the secret is never shown again.
    let keys = site.get("/keys", &cookie).await;
    assert_eq!(keys.status(), 200);
    let keys = keys.text().await.unwrap();
    assert!(keys.contains(">default<") && !keys.contains(&secret));
    // A second sign-up with the same email says why, keeping what was typed (not the password).
    let form = site.get("/signup", "").await;
    let csrf_cookie = cookies(&form).into_iter().find(|c| c.starts_with("aldea_csrf=")).unwrap();
    let token = csrf(&form.text().await.unwrap());
    let again = site
        .post(
            "/signup",
            &csrf_cookie,
            &[("email", "ada@example.com"), ("password", "another secret"), ("org_name", "Dup"), ("csrf", &token)],
        )
        .await;
    assert_eq!(again.status(), 409);
    let again = again.text().await.unwrap();
    assert!(again.contains(r#"role="alert""#) && again.contains(r#"value="Dup""#) && !again.contains("another secret"));
}

#[tokio::test]
async fn keys_are_created_and_revoked_with_the_sessions_csrf_token_only() {
    let site = site().await;
    let (cookie, page) = site.sign_up("grace@example.com").await;
    let token = csrf(&page);
    // No token, a wrong one, or another site's Origin: refused, and nothing is made.
    assert_eq!(site.post("/keys", &cookie, &[("name", "x")]).await.status(), 403);
    assert_eq!(site.post("/keys", &cookie, &[("name", "x"), ("csrf", "nope")]).await.status(), 403);
    let cross = site
        .http
        .post(format!("{}/keys", site.url))
        .header(COOKIE, &cookie)
        .header("origin", "https://evil.example")
        .form(&[("name", "x"), ("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(!site.get("/keys", &cookie).await.text().await.unwrap().contains(">x<"));

    // One press of "Create key" with the name empty makes "Key N" and shows its secret.
    let made = site.post("/keys", &cookie, &[("name", ""), ("csrf", &token)]).await;
    assert_eq!(made.status(), 200);
    let made = made.text().await.unwrap();
    let secret = new_key(&made).expect("the secret, once");
    assert!(made.contains(">Key 2<"), "the default name");
    // Keys are listed oldest first: the last revoke form is the new key's; it asks first, then revokes.
    let last_revoke = made.rfind(r#"/revoke""#).expect("a revoke form");
    let key_id = made[..last_revoke].rsplit("/keys/").next().unwrap().to_owned();
    let confirm = site.get(&format!("/keys/{key_id}/revoke"), &cookie).await.text().await.unwrap();
    assert!(confirm.contains(">Revoke<") && confirm.contains(">Cancel<"));
    let revoked = site.post(&format!("/keys/{key_id}/revoke"), &cookie, &[("csrf", &token)]).await;
    assert_eq!((revoked.status().as_u16(), revoked.headers()[LOCATION].to_str().unwrap()), (303, "/keys?done=revoked"));
    let list = site.get("/keys?done=revoked", &cookie).await.text().await.unwrap();
    assert!(list.contains("revoked") && !list.contains(&secret));
    // Another organization's (or no) key: a page that says so, not a crash.
    assert_eq!(site.get("/keys/key_nope/revoke", &cookie).await.status(), 404);
}

#[tokio::test]
async fn every_page_renders_with_the_security_headers() {
    let site = site().await;
    let (cookie, _) = site.sign_up("lin@example.com").await;
    for path in [
        "/keys",
        "/usage",
        "/usage?group_by=key",
        "/usage?group_by=model",
        "/playground",
        "/members",
        "/billing",
        "/docs",
    ] {
        let page = site.get(path, &cookie).await;
        assert_eq!(page.status(), 200, "{path}");
        let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self' http://127.0.0.1:9 ws://127.0.0.1:9"), "{path}: {csp}");
        assert_eq!(page.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        let body = page.text().await.unwrap();
        assert!(!body.contains("<script>") && !body.contains(" style="), "{path}: no inline script or style");
        assert!(body.contains(r#"<main id="main""#) && body.contains(r#"lang="en""#), "{path}");
    }
    // The usage page's empty state; a bad date is a clear 400.
    let usage = site.get("/usage", &cookie).await.text().await.unwrap();
    assert!(usage.contains("No usage from"));
    let bad = site.get("/usage?start=yesterday", &cookie).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("is not a date"));
    for odd in
        ["/usage?end=-262143-01-01", "/usage?start=2000-01-01&end=2026-01-01", "/usage?start=2026-02-01&end=2026-01-01"]
    {
        assert_eq!(site.get(odd, &cookie).await.status(), 400, "{odd}");
    }
    // The report as CSV, the platform's, as a download.
    let csv = site.get("/usage.csv?start=2026-01-01&end=2026-01-03&group_by=day", &cookie).await;
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let csv = csv.text().await.unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        ["day,requests,streams,audio_seconds", "2026-01-01,0,0,0.000", "2026-01-02,0,0,0.000", "2026-01-03,0,0,0.000"]
    );
    // The docs page names the Speech API URL in its examples and says when a document is unreachable.
    let docs = site.get("/docs", &cookie).await.text().await.unwrap();
    assert!(
        docs.contains("curl -X POST &#39;http://127.0.0.1:9/v1/listen")
            || docs.contains("curl -X POST 'http://127.0.0.1:9/v1/listen")
    );
    assert!(
        docs.contains("could not be fetched") && docs.contains("/v1/orgs/{org_id}/keys"),
        "the platform's reference"
    );
    // Assets: hashed URLs, cached, typed.
    let css = site.get("/assets/app.css", "").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(site.get("/assets/nothing.js", "").await.status(), 404);
    assert_eq!(site.get("/no/such/page", "").await.status(), 404);
    assert_eq!(site.get("/ready", "").await.status(), 200);
}

#[tokio::test]
async fn the_playground_gets_short_tokens_and_subtitles_and_logout_ends_the_session() {
    let site = site().await;
    let (cookie, page) = site.sign_up("kay@example.com").await;
    let token = csrf(&page);
    let url = format!("{}/playground/token", site.url);
    let refused = site.http.post(&url).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(refused.status(), 403, "no CSRF header");
    // A script's call without a session: 401 with the error body, not a redirect to a page.
    let signed_out = site.http.post(&url).header("x-csrf-token", &token).send().await.unwrap();
    assert_eq!(signed_out.status(), 401);
    let body: serde_json::Value = signed_out.json().await.unwrap();
    assert_eq!(body["err_code"], "SIGNED_OUT");
    let granted = site.http.post(&url).header(COOKIE, &cookie).header("x-csrf-token", &token).send().await.unwrap();
    assert_eq!(granted.status(), 200);
    let granted: serde_json::Value = granted.json().await.unwrap();
    assert_eq!(granted["expires_in"], 30);
    assert_eq!(granted["access_token"].as_str().unwrap().split('.').count(), 3, "a JWT");

    let answer = serde_json::json!({
        "metadata": {"request_id": "r", "created": "2026-12-04T00:00:00Z", "duration": 3.0, "channels": 1, "models": [], "model_info": {}, "sha256": ""},
        "results": {"channels": [{"alternatives": [{"transcript": "Hello there. Bye.", "confidence": 0.9, "words": [
            {"word": "hello", "punctuated_word": "Hello", "start": 0.0, "end": 0.4, "confidence": 0.9},
            {"word": "there", "punctuated_word": "there.", "start": 0.5, "end": 0.9, "confidence": 0.9},
            {"word": "bye", "punctuated_word": "Bye.", "start": 2.5, "end": 2.8, "confidence": 0.9}]}]}]}
    });
    let subtitles = |format: &str| {
        site.http
            .post(format!("{}/playground/subtitles?format={format}", site.url))
            .header(COOKIE, &cookie)
            .header("x-csrf-token", &token)
            .json(&answer)
            .send()
    };
    let srt = subtitles("srt").await.unwrap().text().await.unwrap();
    assert_eq!(srt, "1\n00:00:00,000 --> 00:00:00,900\nHello there.\n\n2\n00:00:02,500 --> 00:00:02,800\nBye.\n\n");
    let vtt = subtitles("vtt").await.unwrap().text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:00.900\nHello there."));
    assert_eq!(subtitles("txt").await.unwrap().status(), 400);

    // Log out: the cookie goes and the platform forgets the session.
    let out = site.post("/logout", &cookie, &[("csrf", &token)]).await;
    assert_eq!(out.status(), 303);
    assert!(cookies(&out).iter().any(|c| c == "aldea_session="));
    let after = site.get("/keys", &cookie).await;
    assert_eq!((after.status().as_u16(), after.headers()[LOCATION].to_str().unwrap()), (303, "/login"));
}
