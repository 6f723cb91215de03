//! Ports of the state the services share — API keys, limits, the usage queue — and their in-process
//! adapters. The SQL and Redis adapters live in their own crates and implement the same traits; the
//! [`conformance`] suite is run against every adapter.
//!
//! - [`Keys`]: the system of record for organizations, keys and credit (SQLite embedded, the
//!   platform's database in production).
//! - [`KeyCache`]: verify answers cached by key hash, positive and negative, with invalidation
//!   broadcast to every replica (Redis in production, in-process embedded).
//! - [`Limits`]: concurrency leases with a TTL (a dead holder's slots free themselves) and
//!   per-minute request counters.
//! - [`UsageQueue`]: usage events, delivered at least once; [`UsageLedger`] records each `event_id`
//!   exactly once and charges the credit.
//!
//! Invariant: a secret key is never stored, only its SHA-256 ([`hash_key`]); this crate never reads
//! configuration or the environment, and never names a database or Redis client.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use aldea_proto::usage::{UsageEvent, UsageKind};

pub mod conformance;
mod consume;
mod memory;

pub use consume::{consume_usage, Consumed, MAX_DELIVERIES, RECLAIM_AFTER};
pub use memory::{MemoryKeyCache, MemoryKeys, MemoryLimits, MemoryUsageQueue};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing service cannot be reached; the caller may retry later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "org_";
/// Characters of a key kept in clear for display (`org_` and 8 more).
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// A new secret key: `org_` and 40 URL-safe random characters (~238 bits).
pub fn generate_key() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 40];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
    let body: String = bytes.iter().map(|b| ALPHABET[usize::from(b & 63)] as char).collect();
    Ok(format!("{KEY_PREFIX}{body}"))
}

/// How a key is stored and looked up: the hex SHA-256 of the secret.
pub fn hash_key(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// The part of a key shown in lists.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(DISPLAY_PREFIX_LEN).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Audio seconds an organization may still use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credit {
    Unlimited,
    Seconds(f64),
}

impl Credit {
    /// Whether a new request may start.
    pub fn allows_requests(self) -> bool {
        match self {
            Credit::Unlimited => true,
            Credit::Seconds(s) => s > 0.0,
        }
    }
}

/// A key's own limits; each can only be stricter than the organization's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    pub max_streams: Option<u32>,
    pub requests_per_minute: Option<u32>,
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub limits: KeyLimits,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub limits: KeyLimits,
    pub expires_at: Option<i64>,
}

impl NewKey {
    /// A key for the speech API.
    pub fn listen(name: &str) -> NewKey {
        NewKey {
            name: name.to_owned(),
            scopes: vec!["listen".to_owned()],
            limits: KeyLimits::default(),
            expires_at: None,
        }
    }
}

/// The answer to "may this key be used": what the gateway caches and admits requests by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub org_id: String,
    pub key_id: String,
    pub scopes: Vec<String>,
    pub limits: KeyLimits,
    pub credit_ok: bool,
    pub expires_at: Option<i64>,
}

/// The system of record for organizations, keys and credit.
#[async_trait]
pub trait Keys: Send + Sync + 'static {
    /// The organization with this name, created when missing.
    async fn ensure_org(&self, name: &str, credit: Credit) -> Result<Org>;
    async fn org_by_name(&self, name: &str) -> Result<Option<Org>>;
    /// Creates a key; the secret is returned here and never again.
    async fn create_key(&self, org_id: &str, key: NewKey, now: i64) -> Result<(KeyRecord, String)>;
    /// The grant of the key with this hash, unless it is unknown, revoked or expired at `now`.
    async fn verify(&self, key_hash: &str, now: i64) -> Result<Option<KeyGrant>>;
    /// The grant of the key with this id, unless it is unknown, revoked or expired at `now`: what a
    /// live stream is checked against (a browser token carries the key's id, not its secret).
    async fn grant_by_id(&self, key_id: &str, now: i64) -> Result<Option<KeyGrant>>;
    /// Keys of one organization, or of all; oldest first.
    async fn list_keys(&self, org_id: Option<&str>) -> Result<Vec<KeyRecord>>;
    /// Revokes a key; the hash it had (to invalidate caches), or `None` when there is no such live key.
    async fn revoke_key(&self, key_id: &str, now: i64) -> Result<Option<String>>;
    async fn set_credit(&self, org_id: &str, credit: Credit) -> Result<()>;
    async fn credit(&self, org_id: &str) -> Result<Credit>;
}

/// A cached verify answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CachedGrant {
    Valid(KeyGrant),
    /// The key is unknown or no longer valid.
    Invalid,
}

/// Verify answers by key hash, shared by the gateway replicas.
#[async_trait]
pub trait KeyCache: Send + Sync + 'static {
    async fn get(&self, key_hash: &str) -> Result<Option<CachedGrant>>;
    async fn put(&self, key_hash: &str, entry: &CachedGrant, ttl: Duration) -> Result<()>;
    /// Drops the entry and tells every subscriber (their in-process copies go too).
    async fn invalidate(&self, key_hash: &str) -> Result<()>;
    /// Hashes invalidated from now on, by anyone.
    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<String>>;
}

/// Outcome of counting a request against a per-minute budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateDecision {
    Allowed {
        remaining: u32,
    },
    /// Over budget: retry after this many seconds (≥ 1).
    Limited {
        retry_after_s: u32,
    },
}

/// Concurrency leases and request rates.
#[async_trait]
pub trait Limits: Send + Sync + 'static {
    /// Takes one of `limit` slots of `scope` for `holder` until `ttl` from now unless renewed;
    /// `false` when all are taken by live leases. Taking a slot one already holds renews it.
    async fn acquire(&self, scope: &str, holder: &str, limit: u32, ttl: Duration) -> Result<bool>;
    /// Extends a held lease; `false` when it had expired and was lost.
    async fn renew(&self, scope: &str, holder: &str, ttl: Duration) -> Result<bool>;
    async fn release(&self, scope: &str, holder: &str) -> Result<()>;
    /// Live leases of `scope`.
    async fn held(&self, scope: &str) -> Result<u32>;
    /// Counts one request of `bucket` in the current minute (fixed windows on the store's clock).
    async fn hit(&self, bucket: &str, per_minute: u32) -> Result<RateDecision>;
}

/// A usage event handed to a consumer, to be acknowledged once recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The queue's id of this entry (not the event id).
    pub id: String,
    pub event: UsageEvent,
    /// How many times this entry has been handed out, this time included (1 the first time).
    pub deliveries: u32,
}

/// An entry taken out of the usage queue because it could not be recorded: kept, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The queue's id the entry had.
    pub id: String,
    /// The entry as it was published (the event's JSON; whatever was there when unreadable).
    pub payload: String,
    pub reason: String,
}

/// The usage queue: at-least-once delivery to a group of consumers, redelivering what a consumer
/// took and never acknowledged (it died) once `reclaim_after` has passed.
#[async_trait]
pub trait UsageQueue: Send + Sync + 'static {
    async fn publish(&self, event: &UsageEvent) -> Result<()>;
    /// Up to `max` entries for `consumer`: entries left unacknowledged longer than `reclaim_after`
    /// first, then new ones, waiting at most `wait` for any.
    async fn take(&self, consumer: &str, max: usize, wait: Duration, reclaim_after: Duration) -> Result<Vec<Delivery>>;
    async fn ack(&self, ids: &[String]) -> Result<()>;
    /// Moves a taken entry to the dead letters (kept for an operator, never redelivered).
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()>;
    /// The oldest `max` dead letters.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>>;
    /// How many dead letters are kept.
    async fn dead_letter_count(&self) -> Result<u64>;
}

/// Totals recorded for an organization.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageTotals {
    /// Distinct requests and streams.
    pub requests: u64,
    pub audio_seconds: f64,
    pub events: u64,
}

/// Where usage is recorded: each `event_id` counts once, and the organization's credit (unless
/// unlimited) goes down by its audio seconds in the same step.
#[async_trait]
pub trait UsageLedger: Send + Sync + 'static {
    /// `true` when the event was new, `false` when it had been recorded already.
    async fn record(&self, event: &UsageEvent) -> Result<bool>;
    async fn totals(&self, org_id: &str) -> Result<UsageTotals>;
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_the_contract_says() {
        let key = generate_key().unwrap();
        assert!(key.starts_with("org_") && key.len() == 44);
        assert!(key[4..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(key, generate_key().unwrap());
        assert_eq!(hash_key(&key).len(), 64);
        assert_eq!(display_prefix(&key), key[..12]);
    }
}
