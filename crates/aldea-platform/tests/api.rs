//! The platform API over its router (no socket), on the in-memory stores: every endpoint of this
//! step, authorization included (another organization's resources are 404, a member cannot manage
//! keys, a listen key gets 403, a manage key works without a session, cookies need the CSRF token).

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
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Platform {
    fn new() -> Platform {
        let store = Arc::new(MemoryKeys::new());
        let key_cache = Arc::new(MemoryKeyCache::new());
        let deps = Deps {
            keys: store.clone(),
            accounts: store,
            limits: Arc::new(MemoryLimits::new()),
            key_cache: key_cache.clone(),
        };
        let config = Config { login_attempts_per_minute: 5, ..Config::default() };
        Platform { app: router(AppState::new(config, deps)), key_cache }
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
