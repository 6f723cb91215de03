//! The platform's public HTTP API as the dashboard calls it: every call carries the person's session
//! token as `Authorization: Bearer` (so the platform's cookie CSRF rule does not apply here; the
//! dashboard checks its own), and the answers are read into the few fields the pages show.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Why a platform call gave no answer to show.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlatformError {
    /// The platform answered with its error body.
    #[error("{message}")]
    Refused { status: u16, code: String, message: String },
    /// The platform could not be reached or answered something else than its API.
    #[error("the platform is unavailable: {0}")]
    Unavailable(String),
}

impl PlatformError {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            PlatformError::Refused { status, .. } => Some(*status),
            PlatformError::Unavailable(_) => None,
        }
    }
}

/// A client of one platform.
#[derive(Debug, Clone)]
pub struct Platform {
    http: reqwest::Client,
    base: Url,
}

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    pub(crate) email: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Org {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) role: String,
}

impl Org {
    /// Owners and admins manage keys and members.
    pub(crate) fn manages(&self) -> bool {
        self.role == "owner" || self.role == "admin"
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Me {
    pub(crate) user: User,
    pub(crate) orgs: Vec<Org>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Key {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) prefix: String,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) created_at: String,
    pub(crate) last_used_at: Option<String>,
    pub(crate) expires_at: Option<String>,
    pub(crate) revoked_at: Option<String>,
    pub(crate) previous_key_expires_at: Option<String>,
    #[serde(default)]
    pub(crate) system: bool,
    /// The secret: only in the answer that made it.
    pub(crate) key: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Signup {
    pub(crate) token: String,
    pub(crate) org: Org,
    pub(crate) key: Key,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    pub(crate) token: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MemberUser {
    pub(crate) id: String,
    pub(crate) email: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Member {
    pub(crate) user: MemberUser,
    pub(crate) role: String,
    pub(crate) added_at: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Members {
    pub(crate) members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Balance {
    pub(crate) plan: String,
    pub(crate) credit_seconds_remaining: Option<f64>,
    pub(crate) max_streams: Option<u32>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub(crate) struct ListenToken {
    pub(crate) access_token: String,
    pub(crate) expires_in: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Totals {
    pub(crate) requests: u64,
    pub(crate) streams: u64,
    pub(crate) audio_seconds: f64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Point {
    pub(crate) group: String,
    pub(crate) requests: u64,
    pub(crate) streams: u64,
    pub(crate) audio_seconds: f64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Usage {
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) totals: Totals,
    pub(crate) series: Vec<Point>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RequestRow {
    pub(crate) request_id: String,
    pub(crate) key_id: String,
    pub(crate) model: String,
    pub(crate) kind: String,
    pub(crate) started_at: String,
    pub(crate) audio_seconds: f64,
    pub(crate) status: u16,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Requests {
    pub(crate) requests: Vec<RequestRow>,
}

#[derive(Deserialize)]
struct ErrorBody {
    err_code: String,
    err_msg: String,
}

impl Platform {
    pub fn new(base: Url) -> Platform {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Platform { http, base }
    }

    /// One request to the platform: a success's headers and body, or the platform's refusal.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(reqwest::header::HeaderMap, axum::body::Bytes), PlatformError> {
        let unavailable = |e: reqwest::Error| PlatformError::Unavailable(e.without_url().to_string());
        let url = self.base.join(path).map_err(|e| PlatformError::Unavailable(e.to_string()))?;
        let mut request = self.http.request(method, url).header("accept", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(unavailable)?;
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.bytes().await.map_err(unavailable)?;
        if status.is_success() {
            return Ok((headers, bytes));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => {
                Err(PlatformError::Refused { status: status.as_u16(), code: body.err_code, message: body.err_msg })
            }
            Err(_) => Err(PlatformError::Unavailable(format!("status {status} without the error body"))),
        }
    }

    /// [`send`](Self::send), the answer read as JSON.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<T, PlatformError> {
        let (_, bytes) = self.send(method, path, token, body).await?;
        // A 204 has no body: read it as JSON null.
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes)
            .map_err(|e| PlatformError::Unavailable(format!("an answer the dashboard cannot read ({e})")))
    }

    pub(crate) async fn signup(&self, email: &str, password: &str, org_name: &str) -> Result<Signup, PlatformError> {
        let body = serde_json::json!({ "email": email, "password": password, "org_name": org_name });
        self.call(Method::POST, "/v1/auth/signup", None, Some(body)).await
    }

    pub(crate) async fn login(&self, email: &str, password: &str) -> Result<Login, PlatformError> {
        let body = serde_json::json!({ "email": email, "password": password });
        self.call(Method::POST, "/v1/auth/login", None, Some(body)).await
    }

    pub(crate) async fn logout(&self, token: &str) -> Result<(), PlatformError> {
        self.call::<Value>(Method::POST, "/v1/auth/logout", Some(token), None).await.map(drop)
    }

    pub(crate) async fn me(&self, token: &str) -> Result<Me, PlatformError> {
        self.call(Method::GET, "/v1/me", Some(token), None).await
    }

    pub(crate) async fn create_org(&self, token: &str, name: &str) -> Result<Org, PlatformError> {
        self.call(Method::POST, "/v1/orgs", Some(token), Some(serde_json::json!({ "name": name }))).await
    }

    pub(crate) async fn keys(&self, token: &str, org: &str) -> Result<Vec<Key>, PlatformError> {
        self.call(Method::GET, &format!("/v1/orgs/{}/keys?limit=500", segment(org)), Some(token), None).await
    }

    pub(crate) async fn create_key(&self, token: &str, org: &str, name: Option<&str>) -> Result<Key, PlatformError> {
        let body = match name {
            Some(name) => serde_json::json!({ "name": name }),
            None => serde_json::json!({}),
        };
        self.call(Method::POST, &format!("/v1/orgs/{}/keys", segment(org)), Some(token), Some(body)).await
    }

    pub(crate) async fn rotate_key(
        &self,
        token: &str,
        org: &str,
        key: &str,
        grace_seconds: u64,
    ) -> Result<Key, PlatformError> {
        let path = format!("/v1/orgs/{}/keys/{}/rotate", segment(org), segment(key));
        self.call(Method::POST, &path, Some(token), Some(serde_json::json!({ "grace_seconds": grace_seconds }))).await
    }

    pub(crate) async fn revoke_key(&self, token: &str, org: &str, key: &str) -> Result<(), PlatformError> {
        let path = format!("/v1/orgs/{}/keys/{}", segment(org), segment(key));
        self.call::<Value>(Method::DELETE, &path, Some(token), None).await.map(drop)
    }

    pub(crate) async fn usage(
        &self,
        token: &str,
        org: &str,
        start: &str,
        end: &str,
        group_by: &str,
    ) -> Result<Usage, PlatformError> {
        self.call(Method::GET, &usage_path("usage", org, start, end, group_by), Some(token), None).await
    }

    /// The usage report as the platform's CSV: the body and its `Content-Disposition`.
    pub(crate) async fn usage_csv(
        &self,
        token: &str,
        org: &str,
        start: &str,
        end: &str,
        group_by: &str,
    ) -> Result<(String, Option<String>), PlatformError> {
        let (headers, bytes) =
            self.send(Method::GET, &usage_path("usage.csv", org, start, end, group_by), Some(token), None).await?;
        let disposition = headers.get("content-disposition").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((String::from_utf8_lossy(&bytes).into_owned(), disposition))
    }

    pub(crate) async fn requests(&self, token: &str, org: &str, limit: u32) -> Result<Requests, PlatformError> {
        self.call(Method::GET, &format!("/v1/orgs/{}/requests?limit={limit}", segment(org)), Some(token), None).await
    }

    pub(crate) async fn members(&self, token: &str, org: &str) -> Result<Members, PlatformError> {
        self.call(Method::GET, &format!("/v1/orgs/{}/members?limit=500", segment(org)), Some(token), None).await
    }

    pub(crate) async fn add_member(
        &self,
        token: &str,
        org: &str,
        email: &str,
        role: &str,
    ) -> Result<(), PlatformError> {
        let body = serde_json::json!({ "email": email, "role": role });
        self.call::<Value>(Method::POST, &format!("/v1/orgs/{}/members", segment(org)), Some(token), Some(body))
            .await
            .map(drop)
    }

    pub(crate) async fn remove_member(&self, token: &str, org: &str, user: &str) -> Result<(), PlatformError> {
        let path = format!("/v1/orgs/{}/members/{}", segment(org), segment(user));
        self.call::<Value>(Method::DELETE, &path, Some(token), None).await.map(drop)
    }

    pub(crate) async fn balance(&self, token: &str, org: &str) -> Result<Balance, PlatformError> {
        self.call(Method::GET, &format!("/v1/orgs/{}/balance", segment(org)), Some(token), None).await
    }

    pub(crate) async fn listen_token(&self, token: &str, org: &str) -> Result<ListenToken, PlatformError> {
        self.call(Method::POST, &format!("/v1/orgs/{}/listen-token", segment(org)), Some(token), None).await
    }

    /// The platform's OpenAPI document.
    pub(crate) async fn openapi(&self) -> Result<Value, PlatformError> {
        self.call(Method::GET, "/openapi.json", None, None).await
    }

    /// Whether the platform answers its liveness probe.
    pub(crate) async fn live(&self) -> bool {
        let Ok(url) = self.base.join("/live") else { return false };
        self.http.get(url).send().await.is_ok_and(|r| r.status().is_success())
    }

    /// Any JSON document by absolute URL (the gateway's OpenAPI document).
    pub(crate) async fn fetch_json(&self, url: Url) -> Result<Value, PlatformError> {
        let response =
            self.http.get(url).send().await.map_err(|e| PlatformError::Unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(PlatformError::Unavailable(format!("status {}", response.status())));
        }
        response.json().await.map_err(|e| PlatformError::Unavailable(e.without_url().to_string()))
    }
}

/// `/v1/orgs/{org}/{report}?start=&end=&group_by=` (`report`: `usage` or `usage.csv`).
fn usage_path(report: &str, org: &str, start: &str, end: &str, group_by: &str) -> String {
    format!(
        "/v1/orgs/{}/{report}?start={}&end={}&group_by={}",
        segment(org),
        segment(start),
        segment(end),
        segment(group_by)
    )
}

/// A value put in a URL path or query, percent-encoded.
fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(super::segment("org_1a-B.~"), "org_1a-B.~");
        assert_eq!(super::segment("a/b?c=d&e f"), "a%2Fb%3Fc%3Dd%26e%20f");
        assert_eq!(super::segment("2026-01-01T00:00:00+01:00"), "2026-01-01T00%3A00%3A00%2B01%3A00");
    }
}
