//! Ports of the state the services share — API keys, limits, the usage queue — and their in-process
//! adapters. The SQL and Redis adapters live in their own crates and implement the same traits; the
//! [`conformance`] suite is run against every adapter.
//!
//! - [`KeyVerifier`]: the gateway's hot path (is this key valid, what may it do).
//! - [`Keys`]: the system of record for organizations, keys and the credit ledger (SQLite embedded,
//!   PostgreSQL in production); typed ids ([`OrgId`], [`KeyId`]), [`Scope`]s, integer milliseconds
//!   of audio and credit, paginated lists.
//! - [`Accounts`]: users (email, password hash), sessions (by token hash, expiring) and
//!   memberships with [`Role`]s.
//! - [`KeyCache`]: verify answers cached by key hash, positive and negative, with invalidation
//!   broadcast to every replica (Redis in production, in-process embedded).
//! - [`Limits`]: concurrency leases with a TTL (a dead holder's slots free themselves) and
//!   per-minute request counters.
//! - [`UsageQueue`]: usage events, delivered at least once; [`UsageLedger`] records each `event_id`
//!   exactly once, charges the credit and keeps the roll-ups [`UsageReports`] reads.
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
mod ids;
mod memory;

pub use consume::{consume_usage, Consumed, MAX_DELIVERIES, RECLAIM_AFTER};
pub use ids::{KeyId, OrgId, UserId};
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
    /// The change contradicts what is stored (a second account with one email, a key revoked
    /// twice): the API's 409.
    #[error("conflict: {0}")]
    Conflict(String),
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

/// The most audio one usage event may carry (a year), in milliseconds.
pub const MAX_EVENT_MILLIS: i64 = 365 * 24 * 3600 * 1000;

/// Audio seconds (from the wire) as the integer milliseconds that usage and credit are kept in:
/// never negative (an event never adds credit), at most [`MAX_EVENT_MILLIS`], 0 for NaN.
pub fn audio_millis(seconds: f64) -> i64 {
    if seconds.is_finite() {
        ((seconds * 1000.0).round() as i64).clamp(0, MAX_EVENT_MILLIS)
    } else {
        0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What an organization may still use: unlimited, or a balance of audio milliseconds. The balance
/// goes below zero when a request that was admitted uses more than was left (the overage is kept,
/// not forgotten); requests are admitted only while it is above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credit {
    Unlimited,
    Millis(i64),
}

impl Credit {
    /// Whether a new request may start.
    pub fn allows_requests(self) -> bool {
        match self {
            Credit::Unlimited => true,
            Credit::Millis(ms) => ms > 0,
        }
    }
}

/// Why the credit ledger changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// Credit a new organization starts with.
    Grant,
    /// Credit added later (an operator, a payment).
    TopUp,
    /// Audio used: one entry per usage event, its reference the event id.
    Charge,
    /// An operator set the balance to a value: the difference.
    Adjustment,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Grant => "grant",
            CreditKind::TopUp => "top_up",
            CreditKind::Charge => "charge",
            CreditKind::Adjustment => "adjustment",
        }
    }

    pub fn parse(text: &str) -> Result<CreditKind> {
        match text {
            "grant" => Ok(CreditKind::Grant),
            "top_up" => Ok(CreditKind::TopUp),
            "charge" => Ok(CreditKind::Charge),
            "adjustment" => Ok(CreditKind::Adjustment),
            other => Err(StoreError::Backend(format!("unknown credit entry kind {other:?}"))),
        }
    }
}

/// One line of an organization's credit ledger (append-only; the balance is their sum, kept
/// beside it in the same transaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditEntry {
    pub id: String,
    pub org_id: OrgId,
    pub kind: CreditKind,
    /// Positive adds credit, negative uses it.
    pub millis: i64,
    /// The usage event of a charge; free text (who, why) otherwise.
    pub reference: Option<String>,
    /// Unix seconds.
    pub at: i64,
    /// The balance after this entry.
    pub balance_after: i64,
}

/// What a key may be used for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The Speech API.
    Listen,
    /// The platform API, instead of a session.
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Listen, Scope::Manage];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Listen => "listen",
            Scope::Manage => "manage",
        }
    }

    /// A scope by name; `Invalid` names the ones there are.
    pub fn parse(name: &str) -> Result<Scope> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| StoreError::Invalid(format!("unknown scope {name:?} (listen or manage)")))
    }

    /// Space-separated names (how scopes are stored and put in tokens), in a fixed order.
    pub fn join(scopes: &[Scope]) -> String {
        let mut sorted = scopes.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }

    /// Stored scopes (the inverse of [`Scope::join`]) as this release knows them: a scope a newer release added is not granted
    /// here, and does not make the key unreadable.
    pub fn split_known(text: &str) -> Vec<Scope> {
        text.split_whitespace().filter_map(|name| Scope::parse(name).ok()).collect()
    }
}

/// A key's own limits; each can only be stricter than the organization's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    pub max_streams: Option<u32>,
    pub requests_per_minute: Option<u32>,
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: KeyId,
    pub org_id: OrgId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub limits: KeyLimits,
    /// Unix seconds.
    pub created_at: i64,
    /// The user who made it (none for keys made by an operator's command or by an API key).
    pub created_by: Option<UserId>,
    /// When a request with it last ended, as far as the recorded usage tells (Unix seconds).
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Until when the secret it had before its last rotation still works (Unix seconds).
    pub previous_until: Option<i64>,
    /// Made by the platform for itself ([`Keys::system_key`]); its secret was never shown.
    pub system: bool,
}

/// What to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub limits: KeyLimits,
    pub expires_at: Option<i64>,
    pub created_by: Option<UserId>,
    /// A key the platform makes for itself (see [`Keys::system_key`]).
    pub system: bool,
}

impl NewKey {
    /// A key for the speech API.
    pub fn listen(name: &str) -> NewKey {
        NewKey {
            name: name.to_owned(),
            scopes: vec![Scope::Listen],
            limits: KeyLimits::default(),
            expires_at: None,
            created_by: None,
            system: false,
        }
    }

    /// The record of this key of `org_id` made at `now` with `secret` (scopes sorted, once each).
    pub fn record(self, org_id: &OrgId, secret: &str, now: i64) -> KeyRecord {
        let mut scopes = self.scopes;
        scopes.sort();
        scopes.dedup();
        KeyRecord {
            id: KeyId::random(),
            org_id: org_id.clone(),
            name: self.name,
            prefix: display_prefix(secret),
            scopes,
            limits: self.limits,
            created_at: now,
            created_by: self.created_by,
            last_used_at: None,
            expires_at: self.expires_at,
            revoked_at: None,
            previous_until: None,
            system: self.system,
        }
    }

    /// `Invalid` unless it has a name, at least one scope and limits of at least 1.
    pub fn check(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(StoreError::Invalid("a key needs a name".to_owned()));
        }
        if self.scopes.is_empty() {
            return Err(StoreError::Invalid("a key needs at least one scope".to_owned()));
        }
        if self.limits.max_streams == Some(0) || self.limits.requests_per_minute == Some(0) {
            return Err(StoreError::Invalid("a key's limits are at least 1".to_owned()));
        }
        Ok(())
    }
}

/// The most items a page holds.
pub const MAX_PAGE: u32 = 500;

/// Which page of a list: at most `limit` items after the cursor a previous page returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

impl PageRequest {
    pub fn first(limit: u32) -> PageRequest {
        PageRequest { limit, after: None }
    }

    /// The limit, between 1 and [`MAX_PAGE`].
    pub fn limit(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE)
    }
}

/// A page of a list, oldest first, and the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Lists are ordered by (created, id); a cursor is the last item's `"created:id"`.
pub fn page_cursor(created: i64, id: &str) -> String {
    format!("{created}:{id}")
}

/// The (created, id) of a cursor; `Invalid` when it is not one.
pub fn parse_page_cursor(cursor: &str) -> Result<(i64, String)> {
    cursor
        .split_once(':')
        .and_then(|(created, id)| Some((created.parse().ok()?, id.to_owned())))
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(|| StoreError::Invalid(format!("{cursor:?} is not a page cursor")))
}

/// The answer to "may this key be used": what the gateway caches and admits requests by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub org_id: OrgId,
    pub key_id: KeyId,
    pub scopes: Vec<Scope>,
    pub limits: KeyLimits,
    pub credit_ok: bool,
    pub expires_at: Option<i64>,
}

/// The gateway's hot path: is this key valid now, and what may it do. The platform's database
/// answers it (embedded: directly; split: through the platform's verify endpoint), behind the
/// gateway's caches.
#[async_trait]
pub trait KeyVerifier: Send + Sync + 'static {
    /// The grant of the key with this hash, unless it is unknown, revoked or expired at `now`.
    async fn verify(&self, key_hash: &str, now: i64) -> Result<Option<KeyGrant>>;
    /// The grant of the key with this id, unless it is unknown, revoked or expired at `now`: what a
    /// live stream is checked against (a browser token carries the key's id, not its secret).
    async fn grant_by_id(&self, key_id: &KeyId, now: i64) -> Result<Option<KeyGrant>>;
}

/// The system of record for organizations, keys and credit: the platform's use cases. Every call
/// that reaches a key names its organization too, so one tenant never reaches another's.
#[async_trait]
pub trait Keys: KeyVerifier {
    /// A new organization (names need not be unique); a positive `credit` is its first ledger
    /// entry, a grant.
    async fn create_org(&self, name: &str, credit: Credit, now: i64) -> Result<Org>;
    async fn org(&self, org_id: &OrgId) -> Result<Option<Org>>;
    /// The organization, renamed; `NotFound` without it.
    async fn rename_org(&self, org_id: &OrgId, name: &str) -> Result<Org>;
    /// Organizations with exactly this name, oldest first.
    async fn orgs_named(&self, name: &str) -> Result<Vec<Org>>;
    /// Every organization, oldest first (operators).
    async fn orgs(&self, page: &PageRequest) -> Result<Page<Org>>;
    /// Creates a key; the secret is returned here and never again.
    async fn create_key(&self, org_id: &OrgId, key: NewKey, now: i64) -> Result<(KeyRecord, String)>;
    async fn key(&self, org_id: &OrgId, key_id: &KeyId) -> Result<Option<KeyRecord>>;
    /// The organization a key belongs to (operator tools that are given a bare key id).
    async fn key_org(&self, key_id: &KeyId) -> Result<Option<OrgId>>;
    /// Keys of one organization, oldest first.
    async fn list_keys(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<KeyRecord>>;
    /// Revokes a key; the hashes that worked until now (its secret's, and the one before its
    /// last rotation while in grace), to invalidate caches. `NotFound` for no such key of this
    /// organization, `Conflict` when it is revoked already.
    async fn revoke_key(&self, org_id: &OrgId, key_id: &KeyId, now: i64) -> Result<Vec<String>>;
    /// The hashes that open the organization's live keys now (each key's secret, and the one
    /// before its last rotation while in grace): what gateways may hold cached answers for, to
    /// invalidate when something every key's answer carries (the credit) changes.
    async fn live_key_hashes(&self, org_id: &OrgId) -> Result<Vec<String>>;
    /// The organization's live system key `name` (scope `listen`), made on first use (and again
    /// after it was revoked): the dashboard's, whose short-lived browser tokens name it, so their
    /// usage is attributed to it and revoking it stops them. `NotFound` without the organization.
    async fn system_key(&self, org_id: &OrgId, name: &str, now: i64) -> Result<KeyRecord>;
    /// Gives a key a new secret (returned here and never again); the current one keeps working
    /// until `previous_until` (at once when that is not after `now`), and one kept from an earlier
    /// rotation stops now. Also the hashes that worked until now, whose cached answers are stale.
    /// `NotFound` / `Conflict` (revoked) as [`Keys::revoke_key`].
    async fn rotate_key(&self, org_id: &OrgId, key_id: &KeyId, previous_until: i64, now: i64) -> Result<RotatedKey>;
    async fn credit(&self, org_id: &OrgId) -> Result<Credit>;
    /// Makes the credit unlimited, or sets the balance (the difference is an adjustment entry).
    async fn set_credit(&self, org_id: &OrgId, credit: Credit, now: i64) -> Result<Credit>;
    /// Appends to the ledger (a grant or top-up: positive; an adjustment: either sign) and
    /// returns the credit after it. Charges come only from [`UsageLedger::record`].
    async fn add_credit(
        &self,
        org_id: &OrgId,
        kind: CreditKind,
        millis: i64,
        reference: Option<&str>,
        now: i64,
    ) -> Result<Credit>;
    /// The ledger, oldest first.
    async fn credit_entries(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<CreditEntry>>;
}

/// A rotated key: its record, the new secret (once) and the hashes whose cached answers are stale.
#[derive(Debug, Clone, PartialEq)]
pub struct RotatedKey {
    pub record: KeyRecord,
    pub secret: String,
    pub stale_hashes: Vec<String>,
}

/// What [`Accounts::sign_up`] made: the key's secret is here and never again.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedUp {
    pub user: User,
    pub org: Org,
    pub key: KeyRecord,
    pub secret: String,
}

/// A member's role in an organization.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(name: &str) -> Result<Role> {
        [Role::Owner, Role::Admin, Role::Member]
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| StoreError::Invalid(format!("unknown role {name:?} (owner, admin or member)")))
    }

    /// Owners and admins manage keys and members.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// A person who logs in (never with the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// Trimmed and lowercased: one account per address.
    pub email: String,
    /// Unix seconds.
    pub created_at: i64,
    /// A platform admin (adds credit to any organization).
    pub is_admin: bool,
}

/// A user in an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: User,
    pub role: Role,
    /// Unix seconds.
    pub added_at: i64,
}

/// An email address as accounts keep it; `Invalid` unless it looks like one.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(StoreError::Invalid("an email address is needed".to_owned()))
    }
}

/// People, their sessions and their memberships: the platform's accounts. Passwords and session
/// tokens reach the store only as hashes the caller computed.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// A new user; `Conflict` when an account has this email already.
    async fn create_user(&self, email: &str, password_hash: &str, now: i64) -> Result<User>;
    /// A signup, all or nothing: the user, an organization they own with `credit`, and its first
    /// key. `Conflict` (email taken) or `Invalid` (email, name, key) change nothing.
    #[allow(clippy::too_many_arguments)]
    async fn sign_up(
        &self,
        email: &str,
        password_hash: &str,
        org_name: &str,
        credit: Credit,
        key: NewKey,
        now: i64,
    ) -> Result<SignedUp>;
    async fn user(&self, user_id: &UserId) -> Result<Option<User>>;
    /// The user with this email and their password hash.
    async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>>;
    async fn set_password(&self, user_id: &UserId, password_hash: &str) -> Result<()>;
    async fn set_admin(&self, user_id: &UserId, is_admin: bool) -> Result<()>;
    /// A one-time password reset of the user, known by the hash of its token until `expires_at`;
    /// one issued before for the same user stops working. `NotFound` without the user.
    async fn create_password_reset(&self, user_id: &UserId, token_hash: &str, expires_at: i64) -> Result<()>;
    /// The user of a reset that has not expired at `now`, used up by this call (a second call
    /// answers `None`).
    async fn take_password_reset(&self, token_hash: &str, now: i64) -> Result<Option<UserId>>;
    /// A session of `user_id` known by the hash of its token until `expires_at`.
    async fn create_session(&self, user_id: &UserId, token_hash: &str, now: i64, expires_at: i64) -> Result<()>;
    /// The user of a session that has not expired at `now` nor ended.
    async fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<User>>;
    /// Ends a session; whether there was one.
    async fn end_session(&self, token_hash: &str) -> Result<bool>;
    /// Ends every session of a user (a password reset); how many.
    async fn end_sessions(&self, user_id: &UserId) -> Result<u64>;
    /// `Conflict` when the user is a member already; `NotFound` without such org or user.
    async fn add_member(&self, org_id: &OrgId, user_id: &UserId, role: Role, now: i64) -> Result<()>;
    /// `NotFound` when not a member; `Conflict` when it would leave the organization without an owner.
    async fn set_role(&self, org_id: &OrgId, user_id: &UserId, role: Role) -> Result<()>;
    /// `NotFound` when not a member; `Conflict` when it would leave the organization without an owner.
    async fn remove_member(&self, org_id: &OrgId, user_id: &UserId) -> Result<()>;
    /// The user's role in the organization; `None` for no member (the one place tenancy is decided).
    async fn role(&self, org_id: &OrgId, user_id: &UserId) -> Result<Option<Role>>;
    /// The user's organizations, oldest membership first.
    async fn memberships(&self, user_id: &UserId) -> Result<Vec<(Org, Role)>>;
    /// An organization's members, oldest first.
    async fn members(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<Member>>;
}

/// `Invalid` unless `millis` fits `kind`: grants and top-ups add (> 0), an adjustment is not 0, and
/// charges come only from recorded usage.
pub fn check_credit_change(kind: CreditKind, millis: i64) -> Result<()> {
    match kind {
        CreditKind::Grant | CreditKind::TopUp if millis <= 0 => {
            Err(StoreError::Invalid("credit added must be more than zero".to_owned()))
        }
        CreditKind::Adjustment if millis == 0 => Err(StoreError::Invalid("an adjustment of zero".to_owned())),
        _ if millis.unsigned_abs() > 1_000_000_000_000_000 => {
            Err(StoreError::Invalid("credit changes are at most 10^15 ms".to_owned()))
        }
        CreditKind::Charge => Err(StoreError::Invalid("charges come from recorded usage only".to_owned())),
        _ => Ok(()),
    }
}

/// The organization a name or id stands for: an id, or a name that only one organization has.
pub async fn resolve_org(keys: &dyn Keys, id_or_name: &str) -> Result<Option<Org>> {
    if let Some(org) = keys.org(&OrgId::from(id_or_name)).await? {
        return Ok(Some(org));
    }
    let mut named = keys.orgs_named(id_or_name).await?;
    match named.len() {
        0 => Ok(None),
        1 => Ok(named.pop()),
        n => Err(StoreError::Conflict(format!("{n} organizations are named {id_or_name:?}: give the id"))),
    }
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

/// Usage is rolled up per hour (UTC) as it is recorded: queries resolve to whole hours.
pub const USAGE_BUCKET_SECONDS: i64 = 3600;

/// How a usage query groups its series.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroup {
    /// The UTC day, `YYYY-MM-DD`.
    Day,
    Key,
    Model,
    /// `rest` or `stream`.
    Kind,
}

impl UsageGroup {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroup::Day => "day",
            UsageGroup::Key => "key",
            UsageGroup::Model => "model",
            UsageGroup::Kind => "kind",
        }
    }

    pub fn parse(name: &str) -> Result<UsageGroup> {
        match name {
            "day" => Ok(UsageGroup::Day),
            "key" => Ok(UsageGroup::Key),
            "model" => Ok(UsageGroup::Model),
            "kind" => Ok(UsageGroup::Kind),
            other => Err(StoreError::Invalid(format!("group_by {other:?}: day, key, model or kind"))),
        }
    }
}

/// Usage of `[start, end)` (Unix seconds, whole hours: see [`UsageQuery::new`]) grouped by `group_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    pub start: i64,
    pub end: i64,
    pub group_by: UsageGroup,
}

impl UsageQuery {
    /// The range widened to whole hours (`start` down, `end` up); `Invalid` when it is empty.
    pub fn new(start: i64, end: i64, group_by: UsageGroup) -> Result<UsageQuery> {
        let start = start.div_euclid(USAGE_BUCKET_SECONDS) * USAGE_BUCKET_SECONDS;
        let end = end.saturating_add(USAGE_BUCKET_SECONDS - 1).div_euclid(USAGE_BUCKET_SECONDS) * USAGE_BUCKET_SECONDS;
        if end <= start {
            return Err(StoreError::Invalid("the usage range ends before it starts".to_owned()));
        }
        Ok(UsageQuery { start, end, group_by })
    }
}

/// One group of a usage series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The day (`YYYY-MM-DD`), key id, model or kind.
    pub group: String,
    /// Requests (uploads and streams) whose final event falls in the range.
    pub requests: u64,
    /// Of those, streams.
    pub streams: u64,
    /// Audio of every event in the range.
    pub audio_millis: i64,
}

/// The roll-up hour (Unix seconds) of an event that ended at `ended_at_ms`.
pub fn usage_hour(ended_at_ms: i64) -> i64 {
    ended_at_ms.div_euclid(USAGE_BUCKET_SECONDS * 1000) * USAGE_BUCKET_SECONDS
}

/// The UTC day (`YYYY-MM-DD`) of Unix seconds.
pub fn utc_day(seconds: i64) -> String {
    // Days to civil date (H. Hinnant's algorithm).
    let z = seconds.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// One request or stream as the request log shows it (never its audio or transcript).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub request_id: String,
    pub key_id: KeyId,
    pub model: String,
    pub kind: UsageKind,
    /// Unix milliseconds: the first event's start and the last recorded event's end.
    pub started_at: i64,
    pub ended_at: i64,
    pub audio_millis: i64,
    /// The HTTP status of an upload, the close code of a stream (the latest event's until the
    /// final one is recorded).
    pub status: u16,
    /// Whether its final event is recorded.
    pub complete: bool,
}

/// Totals recorded for an organization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Requests and streams whose final event is recorded.
    pub requests: u64,
    pub audio_millis: i64,
    pub events: u64,
}

/// Where usage is recorded: each `event_id` counts once, and the organization's credit (unless
/// unlimited) is charged its audio milliseconds in the same transaction (a ledger entry whose
/// reference is the event id).
#[async_trait]
pub trait UsageLedger: Send + Sync + 'static {
    /// `true` when the event was new, `false` when it had been recorded already.
    async fn record(&self, event: &UsageEvent) -> Result<bool>;
    /// [`UsageLedger::record`] for each event, all or nothing (an adapter writes them in one
    /// transaction): whether each was new. A duplicate inside the batch is recorded once.
    async fn record_batch(&self, events: &[UsageEvent]) -> Result<Vec<bool>> {
        let mut new = Vec::with_capacity(events.len());
        for event in events {
            new.push(self.record(event).await?);
        }
        Ok(new)
    }
    async fn totals(&self, org_id: &OrgId) -> Result<UsageTotals>;
}

/// What the usage API reads: the roll-ups [`UsageLedger::record`] keeps in the same transaction
/// as each event (per organization, hour, key, model and kind; one row per request), so reports
/// stay fast however many events there are.
#[async_trait]
pub trait UsageReports: Send + Sync + 'static {
    /// The organization's usage in the query's range, one row per group, ordered by group.
    async fn usage(&self, org_id: &OrgId, query: &UsageQuery) -> Result<Vec<UsageRow>>;
    /// Its requests, newest first (by start), at most `limit` ([`MAX_PAGE`]) before the cursor a
    /// previous page returned in `next`.
    async fn requests(&self, org_id: &OrgId, limit: u32, before: Option<&str>) -> Result<Page<RequestRecord>>;
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

    #[test]
    fn scopes_cursors_and_milliseconds() {
        assert_eq!(Scope::join(&[Scope::Manage, Scope::Listen, Scope::Manage]), "listen manage");
        assert_eq!(Scope::split_known("manage listen"), [Scope::Manage, Scope::Listen]);
        assert!(matches!(Scope::parse("admin"), Err(StoreError::Invalid(_))));
        assert_eq!(serde_json::to_string(&[Scope::Listen]).unwrap(), r#"["listen"]"#);
        assert_eq!(parse_page_cursor(&page_cursor(17, "a:b")).unwrap(), (17, "a:b".to_owned()));
        for bad in ["", "17", "x:y", "17:"] {
            assert!(parse_page_cursor(bad).is_err(), "{bad:?}");
        }
        assert_eq!(audio_millis(1.2345), 1235);
        assert_eq!(audio_millis(f64::NAN), 0);
        assert_eq!(audio_millis(-3.0), 0, "an event never adds credit");
        assert_eq!(audio_millis(1e300), MAX_EVENT_MILLIS);
        assert_eq!(Scope::split_known("listen transcribe manage"), [Scope::Listen, Scope::Manage]);
        assert!(!Credit::Millis(0).allows_requests() && !Credit::Millis(-5).allows_requests());
        assert!(Credit::Millis(1).allows_requests() && Credit::Unlimited.allows_requests());
        assert_eq!(serde_json::to_string(&OrgId::from("o1")).unwrap(), r#""o1""#);
    }

    #[test]
    fn days_and_usage_ranges() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_796_256_000 - 1), "2026-12-02");
        assert_eq!(utc_day(1_796_256_000), "2026-12-03");
        assert_eq!(utc_day(-1), "1969-12-31");
        let q = UsageQuery::new(3_601, 7_201, UsageGroup::Day).unwrap();
        assert_eq!((q.start, q.end), (3_600, 10_800), "whole hours, widened");
        assert_eq!(UsageQuery::new(3_600, 7_200, UsageGroup::Key).unwrap().end, 7_200);
        assert!(UsageQuery::new(7_200, 7_200, UsageGroup::Day).is_err());
        assert!(UsageGroup::parse("week").is_err());
    }
}
