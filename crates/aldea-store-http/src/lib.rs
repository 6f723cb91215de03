//! The platform's internal API as a store adapter: [`PlatformKeys`] implements [`KeyVerifier`] by
//! asking the platform (`POST /internal/v1/keys/verify`, with the shared service token), so a
//! gateway in split mode never reads the database. The gateway keeps its caches in front of it.
//!
//! Invariant: never sends or logs a secret key (only its SHA-256, which is what the platform looks
//! up); an unreachable or failing platform is [`StoreError::Unavailable`] (the gateway's 503 and
//! its keep-the-stream-on rule), never a refusal of the key.
#![forbid(unsafe_code)]

use std::time::Duration;

use aldea_store::{KeyGrant, KeyId, KeyVerifier, Result, StoreError};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// The path of the verify endpoint.
pub const VERIFY_PATH: &str = "/internal/v1/keys/verify";

/// Key verification by the platform over HTTP.
#[derive(Clone)]
pub struct PlatformKeys {
    client: reqwest::Client,
    verify_url: String,
    service_token: SecretString,
}

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeys").field("verify_url", &self.verify_url).finish_non_exhaustive()
    }
}

impl PlatformKeys {
    /// The platform at `base_url` (`http://platform:8000`), answering within `timeout`.
    pub fn new(base_url: &str, service_token: SecretString, timeout: Duration) -> Result<PlatformKeys> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(StoreError::Invalid(format!("the platform URL {base_url:?} is not http(s)://…")));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Backend(format!("HTTP client: {e}")))?;
        Ok(PlatformKeys { client, verify_url: format!("{base}{VERIFY_PATH}"), service_token })
    }

    async fn ask(&self, body: serde_json::Value, now: i64) -> Result<Option<KeyGrant>> {
        let response = self
            .client
            .post(&self.verify_url)
            .bearer_auth(self.service_token.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(format!("the platform: {e}")))?;
        let status = response.status();
        match status.as_u16() {
            200 => {
                let grant: KeyGrant = response
                    .json()
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("the platform's verify answer: {e}")))?;
                // The platform judged it at its own clock; ours decides expiry here too.
                Ok(Some(grant).filter(|g| g.expires_at.is_none_or(|at| at > now)))
            }
            404 => Ok(None),
            401 | 403 => Err(StoreError::Unavailable(format!(
                "the platform refused this service's token ({status}): check ALDEA_SERVICE_TOKEN on both"
            ))),
            _ => Err(StoreError::Unavailable(format!("the platform answered {status}"))),
        }
    }
}

#[async_trait]
impl KeyVerifier for PlatformKeys {
    async fn verify(&self, key_hash: &str, now: i64) -> Result<Option<KeyGrant>> {
        self.ask(json!({"key_hash": key_hash}), now).await
    }

    async fn grant_by_id(&self, key_id: &KeyId, now: i64) -> Result<Option<KeyGrant>> {
        self.ask(json!({"key_id": key_id}), now).await
    }
}
