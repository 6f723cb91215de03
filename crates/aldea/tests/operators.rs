//! Operators bootstrap the platform from the command line, on the platform's own database while it
//! runs: `aldea users admin EMAIL` makes a platform admin (who may then add credit to any
//! organization), `aldea users reset-password EMAIL` prints a one-time token that sets a new
//! password over the API and ends the user's sessions, and an unknown email is a clear error.

mod common;

use common::{aldea_on, http, last_line, run, spawn};
use serde_json::Value;

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[test]
fn users_admin_and_reset_password_act_on_the_running_platform() {
    let home = tempfile::tempdir().unwrap();
    let (_platform, addr) = spawn(home.path(), &["platform", "--listen", "127.0.0.1:0"], "platform API on");
    let post = |path: &str, auth: Option<&str>, body: &str| {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = auth {
            headers.push(("authorization", auth));
        }
        http(&addr, "POST", path, &headers, body.as_bytes())
    };
    let (status, body) =
        post("/v1/auth/signup", None, r#"{"email":"ops@example.com","password":"first password","org_name":"Ops"}"#);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let signed = json(&body);
    let session = format!("Bearer {}", signed["token"].as_str().unwrap());
    let org = signed["org"]["id"].as_str().unwrap().to_owned();
    let credits = format!("/v1/orgs/{org}/credits");

    let (status, _) = post(&credits, Some(&session), r#"{"seconds": 60}"#);
    assert_eq!(status, 403, "a user is not a platform admin until an operator says so");
    let made = run(aldea_on(home.path()).args(["users", "admin", "ops@example.com"]));
    assert!(made.status.success());
    assert!(String::from_utf8_lossy(&made.stderr).contains("is now a platform admin"));
    let (_, before) = http(&addr, "GET", &format!("/v1/orgs/{org}/balance"), &[("authorization", &session)], b"");
    let before = json(&before)["credit_seconds_remaining"].as_f64().unwrap();
    let (status, body) = post(&credits, Some(&session), r#"{"seconds": 60, "note": "bootstrap"}"#);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let after = json(&body)["credit_seconds_remaining"].as_f64().unwrap();
    assert!((after - before - 60.0).abs() < 1e-9, "{before} + 60 != {after}");

    let reset = run(aldea_on(home.path()).args(["users", "reset-password", "ops@example.com"]));
    assert!(reset.status.success());
    let token = last_line(&reset);
    assert_eq!(token.len(), 64, "one token on the last stdout line: {token:?}");
    let body = format!(r#"{{"token":"{token}","password":"second password"}}"#);
    assert_eq!(post("/v1/auth/reset-password", None, &body).0, 204);
    let (status, _) = http(&addr, "GET", "/v1/me", &[("authorization", &session)], b"");
    assert_eq!(status, 401, "the reset ended the user's sessions");
    let login = |password: &str| {
        post("/v1/auth/login", None, &format!(r#"{{"email":"ops@example.com","password":"{password}"}}"#)).0
    };
    assert_eq!(login("first password"), 401);
    assert_eq!(login("second password"), 200);
    let (status, body) = post("/v1/auth/reset-password", None, &body);
    assert_eq!(status, 400, "a reset token works once");
    assert_eq!(json(&body)["err_code"], "INVALID_REQUEST");

    let unknown = run(aldea_on(home.path()).args(["users", "admin", "nobody@example.com"]));
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no account has this email"));
}
