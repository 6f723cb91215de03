//! The platform API over its router (no socket), on the in-memory stores: every endpoint of this
//! step, authorization included (another organization's resources are 404, a member cannot manage
//! keys, a listen key gets 403, a manage key works without a session, cookies need the CSRF token);
//! and the OpenAPI document against the platform served on a socket over SQLite (schemathesis).

use std::sync::Arc;

use aldea_platform::{router, AppState, Config, Deps};
use aldea_store::{KeyCache, MemoryKeyCache, MemoryKeys, MemoryLimits};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Platform {
    app: axum::Router,
    key_cache: Arc<MemoryKeyCache>,
    store: Arc<MemoryKeys>,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Platform {
    fn new() -> Platform {
        Platform::configured(|_| {})
    }

    fn configured(change: impl FnOnce(&mut Config)) -> Platform {
        let store = Arc::new(MemoryKeys::new());
        let key_cache = Arc::new(MemoryKeyCache::new());
        let deps = Deps {
            keys: store.clone(),
            accounts: store.clone(),
            usage: store.clone(),
            limits: Arc::new(MemoryLimits::new()),
            key_cache: key_cache.clone(),
        };
        let mut config = Config { login_attempts_per_minute: 5, ..Config::default() };
        change(&mut config);
        Platform { app: router(AppState::new(config, deps)), key_cache, store }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Body::from(body.unwrap_or_default().to_owned())).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        // JSON, except the probes' plain "ok".
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let body = if bytes.is_empty() { Value::Null } else { body };
        Answer { status, headers, body }
    }

    async fn json(&self, method: &str, path: &str, auth: &str, body: Value) -> Answer {
        self.call(method, path, &[("authorization", auth)], Some(&body.to_string())).await
    }

    async fn get(&self, path: &str, auth: &str) -> Answer {
        self.call("GET", path, &[("authorization", auth)], None).await
    }

    /// Signs up `email`; (bearer header, org id, listen key).
    async fn signup(&self, email: &str) -> (String, String, String) {
        let body = json!({"email": email, "password": "a long password", "org_name": "Acme"}).to_string();
        let answer = self.call("POST", "/v1/auth/signup", &[], Some(&body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        let b = &answer.body;
        (
            format!("Bearer {}", b["token"].as_str().unwrap()),
            b["org"]["id"].as_str().unwrap().to_owned(),
            b["key"]["key"].as_str().unwrap().to_owned(),
        )
    }
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["err_code"], code, "{}", answer.body);
    assert!(answer.body["err_msg"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(answer.body["request_id"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn signup_login_me_and_logout() {
    let platform = Platform::new();
    let body = json!({"email": "Ada@Example.com", "password": "a long password", "org_name": "Acme"}).to_string();
    let answer = platform.call("POST", "/v1/auth/signup", &[], Some(&body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let b = &answer.body;
    assert_eq!(b["user"]["email"], "ada@example.com");
    assert_eq!((b["org"]["name"].as_str(), b["org"]["role"].as_str()), (Some("Acme"), Some("owner")));
    assert_eq!((b["key"]["name"].as_str(), b["key"]["scopes"].clone()), (Some("default"), json!(["listen"])));
    let key = b["key"]["key"].as_str().unwrap();
    assert!(key.starts_with("org_") && key.starts_with(b["key"]["prefix"].as_str().unwrap()));
    let cookies: Vec<&str> = answer.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(cookies.iter().any(|c| c.starts_with("aldea_session=") && c.contains("HttpOnly") && c.contains("Secure")));
    assert!(cookies.iter().any(|c| c.starts_with("aldea_csrf=") && !c.contains("HttpOnly")));

    // The same email again (any case): 409; a short password: 400; bad JSON: 400.
    let again = json!({"email": "ADA@example.com", "password": "another password", "org_name": "B"}).to_string();
    assert_error(&platform.call("POST", "/v1/auth/signup", &[], Some(&again)).await, StatusCode::CONFLICT, "CONFLICT");
    let short = json!({"email": "bob@example.com", "password": "short", "org_name": "B"}).to_string();
    assert_error(
        &platform.call("POST", "/v1/auth/signup", &[], Some(&short)).await,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
    );
    for bad in ["{", "[]", r#"{"email": 5}"#, r#"{"email":"a@b.co","password":"long enough","org_name":"x","x":1}"#] {
        let answer = platform.call("POST", "/v1/auth/signup", &[], Some(bad)).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    // Only JSON: a cross-site form cannot post a login or a signup.
    let form = platform.call("POST", "/v1/auth/login", &[("content-type", "text/plain")], Some(&body)).await;
    assert_error(&form, StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    let huge = format!(r#"{{"email":"{}"}}"#, "a".repeat(100_000));
    let answer = platform.call("POST", "/v1/auth/signup", &[], Some(&huge)).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");

    // Login: a wrong password and an unknown email get the same 401.
    let wrong = json!({"email": "ada@example.com", "password": "not the password"}).to_string();
    let unknown = json!({"email": "nobody@example.com", "password": "a long password"}).to_string();
    let w = platform.call("POST", "/v1/auth/login", &[], Some(&wrong)).await;
    let u = platform.call("POST", "/v1/auth/login", &[], Some(&unknown)).await;
    assert_error(&w, StatusCode::UNAUTHORIZED, "INVALID_AUTH");
    assert_eq!(w.body["err_msg"], u.body["err_msg"]);
    let right = json!({"email": "ada@example.com", "password": "a long password"}).to_string();
    let login = platform.call("POST", "/v1/auth/login", &[], Some(&right)).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let bearer = format!("Bearer {}", login.body["token"].as_str().unwrap());
    let me = platform.get("/v1/me", &bearer).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["email"], "ada@example.com");
    assert_eq!(me.body["orgs"][0]["role"], "owner");

    let out = platform.call("POST", "/v1/auth/logout", &[("authorization", &bearer)], None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_error(&platform.get("/v1/me", &bearer).await, StatusCode::UNAUTHORIZED, "INVALID_AUTH");
    assert_error(&platform.get("/v1/me", "Bearer nonsense").await, StatusCode::UNAUTHORIZED, "INVALID_AUTH");
    assert_error(&platform.call("GET", "/v1/me", &[], None).await, StatusCode::UNAUTHORIZED, "INVALID_AUTH");
}

#[tokio::test]
async fn logins_are_rate_limited_per_account() {
    let platform = Platform::new();
    platform.signup("eve@example.com").await;
    let wrong = json!({"email": "eve@example.com", "password": "guess guess"}).to_string();
    let mut statuses = Vec::new();
    // 5 per minute in fixed windows: 11 attempts (well under a minute) overrun even two windows, when
    // a minute boundary falls inside the loop.
    for _ in 0..11 {
        statuses.push(platform.call("POST", "/v1/auth/login", &[], Some(&wrong)).await.status.as_u16());
    }
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_by_managers_only() {
    let platform = Platform::new();
    let (owner, org, listen_key) = platform.signup("owner@example.com").await;
    let keys_path = format!("/v1/orgs/{org}/keys");
    let created = platform
        .json(
            "POST",
            &keys_path,
            &owner,
            json!({"name": "ci", "scopes": ["listen", "manage"], "limits": {"max_streams": 2}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let manage_key = created.body["key"].as_str().unwrap().to_owned();
    assert_eq!(created.body["scopes"], json!(["listen", "manage"]));
    assert_eq!(created.body["limits"]["max_streams"], 2);
    let unnamed = platform.json("POST", &keys_path, &owner, json!({})).await;
    assert_eq!(unnamed.body["name"], "Key 3");
    assert_eq!(unnamed.body["scopes"], json!(["listen"]));
    for bad in [
        json!({"scopes": ["admin"]}),
        json!({"expires_at": "yesterday"}),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"limits": {"max_streams": 0}}),
    ] {
        assert_error(&platform.json("POST", &keys_path, &owner, bad).await, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }

    let listed = platform.get(&keys_path, &owner).await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed_text = listed.body.to_string();
    assert_eq!(listed.body.as_array().unwrap().len(), 3);
    assert!(!listed_text.contains(&manage_key) && !listed_text.contains(&listen_key), "never a secret");

    // A manage key works without a session; a listen key gets 403 everywhere.
    let by_key = platform.get(&keys_path, &format!("Token {manage_key}")).await;
    assert_eq!(by_key.status, StatusCode::OK);
    assert_error(
        &platform.get(&keys_path, &format!("Token {listen_key}")).await,
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_PERMISSIONS",
    );
    assert_error(
        &platform.get("/v1/orgs", &format!("Token {listen_key}")).await,
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_PERMISSIONS",
    );

    let key_id = created.body["id"].as_str().unwrap();
    let mut invalidations = platform.key_cache.subscribe().await.unwrap();
    let revoke = platform.call("DELETE", &format!("{keys_path}/{key_id}"), &[("authorization", &owner)], None).await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    let published = tokio::time::timeout(std::time::Duration::from_secs(5), invalidations.recv()).await.unwrap();
    assert_eq!(published, Some(aldea_store::hash_key(&manage_key)), "the gateways are told at once");
    let again = platform.call("DELETE", &format!("{keys_path}/{key_id}"), &[("authorization", &owner)], None).await;
    assert_error(&again, StatusCode::CONFLICT, "CONFLICT");
    assert_error(
        &platform.get(&keys_path, &format!("Token {manage_key}")).await,
        StatusCode::UNAUTHORIZED,
        "INVALID_AUTH",
    );
    let unknown =
        platform.call("DELETE", &format!("{keys_path}/no-such-key"), &[("authorization", &owner)], None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");

    // A plain member sees the organization but manages nothing.
    let (member, _, _) = platform.signup("member@example.com").await;
    let added =
        platform.json("POST", &format!("/v1/orgs/{org}/members"), &owner, json!({"email": "member@example.com"})).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(platform.get(&format!("/v1/orgs/{org}"), &member).await.body["role"], "member");
    assert_error(&platform.get(&keys_path, &member).await, StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS");
    assert_error(
        &platform.json("POST", &keys_path, &member, json!({})).await,
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_PERMISSIONS",
    );
    let members = platform.get(&format!("/v1/orgs/{org}/members"), &member).await;
    assert_eq!(members.body["members"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn another_organization_is_not_there() {
    let platform = Platform::new();
    let (a, org_a, _) = platform.signup("a@example.com").await;
    let (b, org_b, _) = platform.signup("b@example.com").await;
    let key_b = platform.json("POST", &format!("/v1/orgs/{org_b}/keys"), &b, json!({})).await;
    let key_b_id = key_b.body["id"].as_str().unwrap();
    for path in [
        format!("/v1/orgs/{org_b}"),
        format!("/v1/orgs/{org_b}/keys"),
        format!("/v1/orgs/{org_b}/members"),
        format!("/v1/orgs/{org_b}/balance"),
        format!("/v1/orgs/{org_b}/usage"),
        format!("/v1/orgs/{org_b}/usage.csv"),
        format!("/v1/orgs/{org_b}/requests"),
        "/v1/orgs/no-such-org".to_owned(),
    ] {
        assert_error(&platform.get(&path, &a).await, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let revoke =
        platform.call("DELETE", &format!("/v1/orgs/{org_b}/keys/{key_b_id}"), &[("authorization", &a)], None).await;
    assert_error(&revoke, StatusCode::NOT_FOUND, "NOT_FOUND");
    // Nor through one's own organization's path.
    let sideways =
        platform.call("DELETE", &format!("/v1/orgs/{org_a}/keys/{key_b_id}"), &[("authorization", &a)], None).await;
    assert_error(&sideways, StatusCode::NOT_FOUND, "NOT_FOUND");
    for org in [&org_a, &org_b] {
        let rotate = platform
            .json("POST", &format!("/v1/orgs/{org}/keys/{key_b_id}/rotate"), &a, json!({"grace_seconds": 60}))
            .await;
        assert_error(&rotate, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let rename = platform.json("PATCH", &format!("/v1/orgs/{org_b}"), &a, json!({"name": "mine"})).await;
    assert_error(&rename, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(platform.get(&format!("/v1/orgs/{org_b}"), &b).await.body["name"], "Acme", "nothing changed");
    let listed = platform.get("/v1/orgs", &a).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(listed.body[0]["id"], org_a.as_str());
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_to_change_things() {
    let platform = Platform::new();
    let body = json!({"email": "c@example.com", "password": "a long password", "org_name": "C"}).to_string();
    let signup = platform.call("POST", "/v1/auth/signup", &[], Some(&body)).await;
    let org = signup.body["org"]["id"].as_str().unwrap().to_owned();
    let cookie_value = |name: &str| {
        signup
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with(&format!("{name}=")))
            .and_then(|c| c.split(';').next())
            .map(|c| c[name.len() + 1..].to_owned())
            .unwrap()
    };
    let cookies = format!("aldea_session={}; aldea_csrf={}", cookie_value("aldea_session"), cookie_value("aldea_csrf"));
    let csrf = cookie_value("aldea_csrf");
    assert_eq!(platform.call("GET", "/v1/me", &[("cookie", &cookies)], None).await.status, StatusCode::OK);
    let keys = format!("/v1/orgs/{org}/keys");
    let without = platform.call("POST", &keys, &[("cookie", &cookies)], Some("{}")).await;
    assert_error(&without, StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS");
    let wrong = platform.call("POST", &keys, &[("cookie", &cookies), ("x-csrf-token", "guess")], Some("{}")).await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS");
    let with = platform.call("POST", &keys, &[("cookie", &cookies), ("x-csrf-token", &csrf)], Some("{}")).await;
    assert_eq!(with.status, StatusCode::CREATED, "{}", with.body);
}

#[tokio::test]
async fn orgs_members_and_balance() {
    let platform = Platform::new();
    let (owner, org, _) = platform.signup("o@example.com").await;
    let balance = platform.get(&format!("/v1/orgs/{org}/balance"), &owner).await;
    assert_eq!(balance.status, StatusCode::OK);
    assert_eq!(balance.body["credit_seconds_remaining"], 3600.0);
    let created = platform.json("POST", "/v1/orgs", &owner, json!({"name": "Second"})).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["role"], "owner");
    let renamed = platform.json("PATCH", &format!("/v1/orgs/{org}"), &owner, json!({"name": "Renamed"})).await;
    assert_eq!(renamed.body["name"], "Renamed");
    assert_eq!(platform.get("/v1/orgs", &owner).await.body.as_array().unwrap().len(), 2);

    let (admin, _, _) = platform.signup("admin@example.com").await;
    let members = format!("/v1/orgs/{org}/members");
    assert_eq!(
        platform.json("POST", &members, &owner, json!({"email": "admin@example.com", "role": "admin"})).await.status,
        StatusCode::CREATED
    );
    assert_error(
        &platform.json("POST", &members, &owner, json!({"email": "admin@example.com"})).await,
        StatusCode::CONFLICT,
        "CONFLICT",
    );
    assert_error(
        &platform.json("POST", &members, &owner, json!({"email": "ghost@example.com"})).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    // An admin cannot make or remove owners; the last owner stays.
    platform.signup("x@example.com").await;
    assert_error(
        &platform.json("POST", &members, &admin, json!({"email": "x@example.com", "role": "owner"})).await,
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_PERMISSIONS",
    );
    let me = platform.get("/v1/me", &owner).await;
    let owner_id = me.body["user"]["id"].as_str().unwrap().to_owned();
    let remove_owner =
        platform.call("DELETE", &format!("{members}/{owner_id}"), &[("authorization", &admin)], None).await;
    assert_error(&remove_owner, StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS");
    let last_owner =
        platform.call("DELETE", &format!("{members}/{owner_id}"), &[("authorization", &owner)], None).await;
    assert_error(&last_owner, StatusCode::CONFLICT, "CONFLICT");
    let ready = platform.call("GET", "/ready", &[], None).await;
    assert_eq!((ready.status, ready.body.as_str()), (StatusCode::OK, Some("ok")));
    assert_error(&platform.call("GET", "/v1/nothing-here", &[], None).await, StatusCode::NOT_FOUND, "NOT_FOUND");
    // axum's own rejections get the error body too.
    assert_error(
        &platform.call("PUT", "/v1/me", &[], None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    let bad_query = platform.get(&format!("/v1/orgs/{org}/keys?limit=many"), &owner).await;
    assert_error(&bad_query, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    // A second organization starts without credit (no free credit by making organizations).
    let second = created.body["id"].as_str().unwrap();
    let second_balance = platform.get(&format!("/v1/orgs/{second}/balance"), &owner).await;
    assert_eq!(second_balance.body["credit_seconds_remaining"], 0.0);
}

#[tokio::test]
async fn rotation_gives_a_new_secret_and_keeps_the_old_one_for_the_grace() {
    use aldea_store::KeyVerifier;
    let platform = Platform::new();
    let (owner, org, _) = platform.signup("rotor@example.com").await;
    let keys_path = format!("/v1/orgs/{org}/keys");
    let created = platform.json("POST", &keys_path, &owner, json!({"name": "ci"})).await;
    let (key_id, old) =
        (created.body["id"].as_str().unwrap().to_owned(), created.body["key"].as_str().unwrap().to_owned());
    assert!(created.body["created_by"].as_str().is_some_and(|u| !u.is_empty()), "the session's user made it");
    let rotate_path = format!("{keys_path}/{key_id}/rotate");
    for bad in [json!({"grace_seconds": -1}), json!({"grace_seconds": 100_000_000}), json!({"grace": 5})] {
        assert_error(
            &platform.json("POST", &rotate_path, &owner, bad).await,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        );
    }

    let mut invalidations = platform.key_cache.subscribe().await.unwrap();
    let rotated = platform.json("POST", &rotate_path, &owner, json!({"grace_seconds": 3600})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated.body["id"], key_id.as_str(), "the same key, a new secret");
    assert_eq!(rotated.body["prefix"], new[..12]);
    assert!(rotated.body["previous_key_expires_at"].as_str().is_some());
    let published = tokio::time::timeout(std::time::Duration::from_secs(5), invalidations.recv()).await.unwrap();
    assert_eq!(published, Some(aldea_store::hash_key(&old)), "cached answers of the old secret are dropped");
    let now = aldea_store::unix_now();
    let store = platform.store.as_ref();
    assert!(store.verify(&aldea_store::hash_key(&new), now).await.unwrap().is_some());
    let old_grant = store.verify(&aldea_store::hash_key(&old), now).await.unwrap().expect("in its grace");
    assert!(old_grant.expires_at.is_some_and(|at| (now + 3_590..=now + 3_601).contains(&at)));
    assert_eq!(store.verify(&aldea_store::hash_key(&old), now + 3_601).await.unwrap(), None, "not after it");

    // Without a grace the secret in use stops at once; the old one in grace too.
    let at_once = platform.json("POST", &rotate_path, &owner, json!({})).await;
    assert_eq!(at_once.status, StatusCode::OK);
    assert_eq!(at_once.body["previous_key_expires_at"], Value::Null);
    for stopped in [&old, &new] {
        assert_eq!(store.verify(&aldea_store::hash_key(stopped), now).await.unwrap(), None);
    }
    let newest = at_once.body["key"].as_str().unwrap();
    assert!(store.verify(&aldea_store::hash_key(newest), now).await.unwrap().is_some());
    let listed = platform.get(&keys_path, &owner).await.body.to_string();
    assert!(!listed.contains(newest) && !listed.contains(&new), "never a secret in a list");

    // A revoked key is not rotated back to life.
    platform.call("DELETE", &format!("{keys_path}/{key_id}"), &[("authorization", &owner)], None).await;
    assert_error(&platform.json("POST", &rotate_path, &owner, json!({})).await, StatusCode::CONFLICT, "CONFLICT");
}

#[tokio::test]
async fn usage_reports_series_totals_csv_and_the_request_log() {
    use aldea_store::{UsageEvent, UsageKind, UsageLedger};
    let platform = Platform::new();
    let (owner, org, listen_key) = platform.signup("meter@example.com").await;
    let key_id = aldea_store::KeyVerifier::verify(platform.store.as_ref(), &aldea_store::hash_key(&listen_key), 0)
        .await
        .unwrap()
        .unwrap()
        .key_id;
    // 2026-12-01T00:00:00Z.
    let day1: i64 = 1_796_083_200;
    let event = |request: &str, seq: u32, kind: UsageKind, ended: i64, seconds: f64, last: bool| UsageEvent {
        event_id: UsageEvent::event_id(request, seq),
        request_id: request.to_owned(),
        seq,
        org_id: org.clone(),
        key_id: key_id.to_string(),
        kind,
        model: "tiny.en".to_owned(),
        audio_seconds: seconds,
        started_at: ended * 1000 - (seconds * 1000.0) as i64,
        ended_at: ended * 1000,
        is_final: last,
        status: 200,
    };
    for e in [
        event("up-1", 0, UsageKind::Rest, day1 + 100, 2.5, true),
        event("st-1", 0, UsageKind::Stream, day1 + 86_400 + 50, 10.0, false),
        event("st-1", 1, UsageKind::Stream, day1 + 86_400 + 70, 20.0, true),
        event("st-1", 1, UsageKind::Stream, day1 + 86_400 + 70, 20.0, true),
    ] {
        platform.store.record(&e).await.unwrap();
    }
    let usage_path = format!("/v1/orgs/{org}/usage");
    let by_day = platform.get(&format!("{usage_path}?start=2026-11-30&end=2026-12-02"), &owner).await;
    assert_eq!(by_day.status, StatusCode::OK, "{}", by_day.body);
    assert_eq!(
        by_day.body,
        json!({
            "start": "2026-11-30T00:00:00Z", "end": "2026-12-03T00:00:00Z", "group_by": "day",
            "totals": {"requests": 2, "streams": 1, "audio_seconds": 32.5},
            "series": [
                {"group": "2026-11-30", "requests": 0, "streams": 0, "audio_seconds": 0.0},
                {"group": "2026-12-01", "requests": 1, "streams": 0, "audio_seconds": 2.5},
                {"group": "2026-12-02", "requests": 1, "streams": 1, "audio_seconds": 30.0},
            ],
        }),
        "every day of the range, the duplicate counted once"
    );
    let by_kind =
        platform.get(&format!("{usage_path}?start=2026-12-01T00:00:00Z&end=2026-12-03&group_by=kind"), &owner).await;
    assert_eq!(
        by_kind.body["series"],
        json!([
            {"group": "rest", "requests": 1, "streams": 0, "audio_seconds": 2.5},
            {"group": "stream", "requests": 1, "streams": 1, "audio_seconds": 30.0},
        ])
    );
    let by_key = platform.get(&format!("{usage_path}?start=2026-12-01&end=2026-12-03&group_by=key"), &owner).await;
    assert_eq!(by_key.body["series"][0]["group"], key_id.as_str());
    let default = platform.get(&usage_path, &owner).await;
    assert_eq!(default.body["series"].as_array().unwrap().len(), 30, "the last 30 days by default");
    for bad in ["?group_by=week", "?start=yesterday", "?start=2026-12-02&end=2026-12-01", "?colour=red"] {
        assert_error(
            &platform.get(&format!("{usage_path}{bad}"), &owner).await,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        );
    }

    let csv =
        platform.get(&format!("/v1/orgs/{org}/usage.csv?start=2026-12-01&end=2026-12-02&group_by=day"), &owner).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(csv.headers["content-disposition"].to_str().unwrap().contains("usage-2026-12-01-2026-12-02.csv"));
    assert_eq!(
        csv.body.as_str().unwrap(),
        "day,requests,streams,audio_seconds\r\n2026-12-01,1,0,2.500\r\n2026-12-02,1,1,30.000\r\n"
    );

    // The request log: newest first, a page at a time.
    let requests_path = format!("/v1/orgs/{org}/requests");
    let first = platform.get(&format!("{requests_path}?limit=1"), &owner).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["requests"][0]["request_id"], "st-1");
    assert_eq!(first.body["requests"][0]["kind"], "stream");
    assert_eq!(first.body["requests"][0]["audio_seconds"], 30.0);
    assert_eq!(first.body["requests"][0]["ended_at"], "2026-12-02T00:01:10.000Z");
    let next = first.body["next_before"].as_str().unwrap();
    let second = platform.get(&format!("{requests_path}?limit=1&before={next}"), &owner).await;
    assert_eq!(second.body["requests"][0]["request_id"], "up-1");
    assert_eq!(second.body["next_before"], Value::Null);
    assert_error(
        &platform.get(&format!("{requests_path}?before=junk"), &owner).await,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
    );

    // Any member reads usage; the key's last use shows in the list.
    let (member, _, _) = platform.signup("reader@example.com").await;
    platform.json("POST", &format!("/v1/orgs/{org}/members"), &owner, json!({"email": "reader@example.com"})).await;
    assert_eq!(platform.get(&usage_path, &member).await.status, StatusCode::OK);
    assert_eq!(platform.get(&requests_path, &member).await.status, StatusCode::OK);
    let keys = platform.get(&format!("/v1/orgs/{org}/keys"), &owner).await;
    assert_eq!(keys.body[0]["last_used_at"], "2026-12-02T00:01:10Z");
}

#[tokio::test]
async fn platform_admins_add_credit_to_any_organization() {
    let platform = Platform::new();
    let (owner, org, payer_key) = platform.signup("payer@example.com").await;
    let (admin, _, _) = platform.signup("admin@example.com").await;
    let credits = format!("/v1/orgs/{org}/credits");
    // Before being made an admin: a stranger to the organization finds nothing, its owner is refused.
    assert_error(
        &platform.json("POST", &credits, &admin, json!({"seconds": 60})).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_error(
        &platform.json("POST", &credits, &owner, json!({"seconds": 60})).await,
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_PERMISSIONS",
    );
    let made = aldea_platform::set_admin(platform.store.as_ref(), "ADMIN@example.com", true).await.unwrap();
    assert!(made.is_admin);
    assert!(aldea_platform::set_admin(platform.store.as_ref(), "nobody@example.com", true).await.is_err());
    let mut invalidations = platform.key_cache.subscribe().await.unwrap();
    let added = platform.json("POST", &credits, &admin, json!({"seconds": 60.5, "note": "trial extension"})).await;
    let published = tokio::time::timeout(std::time::Duration::from_secs(5), invalidations.recv()).await.unwrap();
    assert_eq!(published, Some(aldea_store::hash_key(&payer_key)), "the org's keys' cached answers are dropped");
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["credit_seconds_remaining"], 3660.5, "3600 from signup, and 60.5 more");
    let taken = platform.json("POST", &credits, &admin, json!({"seconds": -0.5})).await;
    assert_eq!(taken.body["credit_seconds_remaining"], 3660.0);
    assert_eq!(platform.get(&format!("/v1/orgs/{org}/balance"), &owner).await.body["credit_seconds_remaining"], 3660.0);
    for bad in [json!({}), json!({"seconds": 0}), json!({"seconds": 1e12}), json!({"seconds": 5, "unlimited": true})] {
        assert_error(&platform.json("POST", &credits, &admin, bad).await, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    let unlimited = platform.json("POST", &credits, &admin, json!({"unlimited": true})).await;
    assert_eq!(unlimited.body["plan"], "unlimited");
    assert_error(
        &platform.json("POST", "/v1/orgs/no-such-org/credits", &admin, json!({"seconds": 1})).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn a_reset_token_sets_a_new_password_once_and_ends_the_sessions() {
    let platform = &Platform::new();
    let (session, _, _) = platform.signup("forgetful@example.com").await;
    let now = aldea_store::unix_now();
    let (user, token) =
        aldea_platform::issue_password_reset(platform.store.as_ref(), "forgetful@example.com", now).await.unwrap();
    assert_eq!(user.email, "forgetful@example.com");
    let reset = |token: &str, password: &str| {
        let body = json!({"token": token, "password": password}).to_string();
        async move { platform.call("POST", "/v1/auth/reset-password", &[], Some(&body)).await }
    };
    assert_error(&reset(&token, "short").await, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_eq!(reset(&token, "a brand new password").await.status, StatusCode::NO_CONTENT);
    assert_error(&reset(&token, "another new password").await, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_error(&reset("not-a-token", "another new password").await, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_error(&platform.get("/v1/me", &session).await, StatusCode::UNAUTHORIZED, "INVALID_AUTH");
    let login = |password: &str| {
        let body = json!({"email": "forgetful@example.com", "password": password}).to_string();
        async move { platform.call("POST", "/v1/auth/login", &[], Some(&body)).await.status }
    };
    assert_eq!(login("a long password").await, StatusCode::UNAUTHORIZED, "the old password is gone");
    assert_eq!(login("a brand new password").await, StatusCode::OK);
    assert!(aldea_platform::issue_password_reset(platform.store.as_ref(), "nobody@example.com", now).await.is_err());
}

#[tokio::test]
async fn a_listen_token_is_a_30_second_jwt_for_the_dashboard_key() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef-dashboard";
    let platform = Platform::configured(|c| c.jwt_secret = Some(SECRET.to_owned().into()));
    let (owner, org, listen_key) = platform.signup("live@example.com").await;
    let (stranger, _, _) = platform.signup("stranger@example.com").await;
    let path = format!("/v1/orgs/{org}/listen-token");
    let answer = platform.call("POST", &path, &[("authorization", &owner)], None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["expires_in"], 30);
    let token = answer.body["access_token"].as_str().unwrap();
    let now = aldea_store::unix_now();
    let claims = aldea_http::jwt::decode_jwt(token, SECRET.as_bytes(), now).expect("signed with the shared secret");
    assert_eq!((claims.org.as_str(), claims.scope.as_str(), claims.exp - claims.iat), (org.as_str(), "listen", 30));
    assert!(aldea_http::jwt::decode_jwt(token, SECRET.as_bytes(), now + 31).is_err(), "expired after 30 s");
    // Its subject is the organization's dashboard key, made once and listed like any key.
    let keys = platform.get(&format!("/v1/orgs/{org}/keys"), &owner).await.body;
    let dashboard: Vec<&Value> = keys.as_array().unwrap().iter().filter(|k| k["system"] == true).collect();
    assert_eq!(dashboard.len(), 1);
    assert_eq!(
        (dashboard[0]["id"].as_str(), dashboard[0]["name"].as_str()),
        (Some(claims.sub.as_str()), Some("dashboard"))
    );
    let rotate = platform
        .json("POST", &format!("/v1/orgs/{org}/keys/{}/rotate", claims.sub), &owner, json!({"grace_seconds": 0}))
        .await;
    assert_error(&rotate, StatusCode::CONFLICT, "CONFLICT");
    let again = platform.call("POST", &path, &[("authorization", &owner)], None).await;
    let claims_again =
        aldea_http::jwt::decode_jwt(again.body["access_token"].as_str().unwrap(), SECRET.as_bytes(), now).unwrap();
    assert_eq!(claims_again.sub, claims.sub, "the same key each time");

    assert_error(
        &platform.call("POST", &path, &[("authorization", &stranger)], None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_error(
        &platform.call("POST", &path, &[("authorization", &format!("Token {listen_key}"))], None).await,
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_PERMISSIONS",
    );
    // Without a JWT secret there are no browser tokens.
    let plain = Platform::new();
    let (session, org, _) = plain.signup("plain@example.com").await;
    let refused =
        plain.call("POST", &format!("/v1/orgs/{org}/listen-token"), &[("authorization", &session)], None).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_never_by_id() {
    let platform = Platform::new();
    let (owner, org, _) = platform.signup("counted@example.com").await;
    for _ in 0..3 {
        assert_eq!(platform.get(&format!("/v1/orgs/{org}/keys"), &owner).await.status, StatusCode::OK);
    }
    platform.get("/v1/orgs/no-such-org/keys", &owner).await;
    let metrics = platform.call("GET", "/metrics", &[], None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.body.as_str().unwrap();
    let line = |status: u16| {
        format!(
            r#"aldea_platform_http_requests_total{{route="/v1/orgs/{{org_id}}/keys",method="GET",status="{status}"}}"#
        )
    };
    assert!(text.contains(&format!("{} 3", line(200))), "{text}");
    assert!(text.contains(&format!("{} 1", line(404))), "{text}");
    assert!(text.contains("aldea_platform_http_request_duration_seconds_bucket"));
    assert!(!text.contains(&org), "ids never become labels");
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_with_the_error_body() {
    let platform = Platform::configured(|c| c.body_timeout = std::time::Duration::from_millis(200));
    let stalled = futures_util::stream::pending::<Result<axum::body::Bytes, std::convert::Infallible>>();
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from_stream(stalled))
        .unwrap();
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), platform.app.clone().oneshot(request))
        .await
        .expect("answered, not held")
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["err_code"], "REQUEST_TIMEOUT");
}

#[tokio::test]
async fn the_openapi_document_describes_every_public_route_and_no_internal_one() {
    let platform = Platform::new();
    let doc = platform.call("GET", "/openapi.json", &[], None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    let routes: &[(&str, &[&str])] = &[
        ("/v1/auth/signup", &["post"]),
        ("/v1/auth/login", &["post"]),
        ("/v1/auth/logout", &["post"]),
        ("/v1/auth/reset-password", &["post"]),
        ("/v1/me", &["get"]),
        ("/v1/orgs", &["get", "post"]),
        ("/v1/orgs/{org_id}", &["get", "patch"]),
        ("/v1/orgs/{org_id}/keys", &["get", "post"]),
        ("/v1/orgs/{org_id}/keys/{key_id}", &["delete"]),
        ("/v1/orgs/{org_id}/keys/{key_id}/rotate", &["post"]),
        ("/v1/orgs/{org_id}/listen-token", &["post"]),
        ("/v1/orgs/{org_id}/usage", &["get"]),
        ("/v1/orgs/{org_id}/usage.csv", &["get"]),
        ("/v1/orgs/{org_id}/requests", &["get"]),
        ("/v1/orgs/{org_id}/members", &["get", "post"]),
        ("/v1/orgs/{org_id}/members/{user_id}", &["delete"]),
        ("/v1/orgs/{org_id}/balance", &["get"]),
        ("/v1/orgs/{org_id}/credits", &["post"]),
        ("/live", &["get"]),
        ("/ready", &["get"]),
        ("/metrics", &["get"]),
    ];
    assert_eq!(paths.len(), routes.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, methods) in routes {
        for method in *methods {
            let operation = &paths[*path][*method];
            assert!(operation["responses"]["default"].is_object(), "{method} {path}: every error has the error body");
            assert!(operation["responses"].as_object().unwrap().keys().any(|s| s.starts_with('2')), "{method} {path}");
        }
    }
    // Every schema an operation refers to is in the document.
    let text = doc.body.to_string();
    let schemas = doc.body["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "{name} is referred to but missing");
    }
    // The signup answer shows the key's secret; the key list never does.
    assert!(schemas["KeyView"]["properties"]["key"].is_object());
    assert!(!paths.contains_key("/internal/v1/keys/verify"), "the internal API is not public");
}

/// schemathesis (PyPI), beside `ALDEA_TEST_PYTHON` (scripts/test.sh's venv).
fn schemathesis() -> std::path::PathBuf {
    let python = std::env::var("ALDEA_TEST_PYTHON")
        .unwrap_or_else(|_| panic!("ALDEA_TEST_PYTHON is not set: run the tests through scripts/test.sh"));
    std::path::PathBuf::from(python).with_file_name("schemathesis")
}

/// schemathesis reads `/openapi.json` and sends generated requests, valid and invalid, to every
/// operation, checking that none gets a 5xx and that every answer matches the document (status,
/// content type, headers, schema). The platform serves on a socket over SQLite, as in `aldea all`;
/// the requests carry a signed-up user's session, and `{org_id}` / `{key_id}` are that user's, so
/// the answers with data are checked too, not only the 404s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(aldea_store_sql::SqlStore::open(&dir.path().join("platform.db")).await.unwrap());
    let deps = Deps::single_process(store);
    let config = Config { jwt_secret: Some("a test secret of some length".to_owned().into()), ..Config::default() };
    let app = router(AppState::new(config, deps));
    let signup = json!({"email": "fuzz@example.com", "password": "a long password", "org_name": "Fuzzing"}).to_string();
    let request = Request::post("/v1/auth/signup").header("content-type", "application/json").body(Body::from(signup));
    let response = app.clone().oneshot(request.unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let signed: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The user's own id is left to generation: removing the only owner would end the run's access.
    let config = dir.path().join("schemathesis.toml");
    let (org_id, key_id) = (signed["org"]["id"].as_str().unwrap(), signed["key"]["id"].as_str().unwrap());
    std::fs::write(&config, format!("[parameters]\n\"path.org_id\" = \"{org_id}\"\n\"path.key_id\" = \"{key_id}\"\n"))
        .unwrap();
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth";
    let run = tokio::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("http://{addr}/openapi.json"), "--checks", checks])
        .args(["--header", &format!("Authorization: Bearer {}", signed["token"].as_str().unwrap())])
        // Logging out would end the session the run uses.
        .args(["--exclude-path", "/v1/auth/logout"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "12", "--seed", "7"])
        .args(["--workers", "2", "--no-color", "--generation-database", "none", "--request-timeout", "30"])
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect("schemathesis runs (scripts/test.sh installs it into the test venv)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{text}");
    assert!(output.status.success(), "schemathesis failed:\n{text}");
    // It ran every operation, hundreds of cases, all passed ("Test cases:\n  N generated, N passed[, K skipped]").
    assert!(text.contains("24 selected / 25 total") && text.contains("Tested: 24"), "{text}");
    let cases = text.split("Test cases:").nth(1).and_then(|rest| rest.lines().map(str::trim).find(|l| !l.is_empty()));
    let counts: Vec<u64> =
        cases.unwrap_or_default().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(counts.len() >= 2 && counts[0] >= 200 && counts[0] == counts[1], "{cases:?}");
}

#[tokio::test]
async fn a_key_list_never_shows_a_secret_and_unlimited_credit_is_null() {
    use aldea_store::{Credit, Keys, OrgId};
    let platform = Platform::new();
    let (owner, org, _) = platform.signup("views@example.com").await;
    let keys = platform.get(&format!("/v1/orgs/{org}/keys"), &owner).await;
    assert_eq!(keys.status, StatusCode::OK);
    let listed = keys.body.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("key").is_none(), "the secret is shown once, at creation: {}", keys.body);
    assert_eq!(listed[0]["limits"], json!({"max_streams": null, "requests_per_minute": null}));
    assert_eq!(listed[0]["revoked_at"], Value::Null);
    platform.store.set_credit(&OrgId::from(org.as_str()), Credit::Unlimited, 0).await.unwrap();
    let balance = platform.get(&format!("/v1/orgs/{org}/balance"), &owner).await;
    assert_eq!(balance.body, json!({"plan": "unlimited", "credit_seconds_remaining": null, "max_streams": null}));
}
