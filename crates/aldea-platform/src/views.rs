//! The response bodies of the platform API, in the spec's shapes. They are types (not `json!`) so
//! that `/openapi.json` describes exactly what the handlers send.

use aldea_store::{
    Credit, KeyId, KeyLimits, KeyRecord, Org, OrgId, RequestRecord, Role, Scope, UsageGroup, User, UserId,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::rfc3339;

/// Audio seconds of integer milliseconds.
pub(crate) fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

/// A user as they see themselves.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserView {
    id: UserId,
    email: String,
    #[schema(format = DateTime)]
    created_at: String,
    /// A platform admin (adds credit to any organization).
    is_admin: bool,
}

impl From<&User> for UserView {
    fn from(user: &User) -> UserView {
        UserView {
            id: user.id.clone(),
            email: user.email.clone(),
            created_at: rfc3339(user.created_at),
            is_admin: user.is_admin,
        }
    }
}

/// A user as other members see them.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemberUserView {
    id: UserId,
    email: String,
}

impl From<&User> for MemberUserView {
    fn from(user: &User) -> MemberUserView {
        MemberUserView { id: user.id.clone(), email: user.email.clone() }
    }
}

/// An organization, with the caller's role in it.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrgView {
    id: OrgId,
    name: String,
    role: Role,
    #[schema(format = DateTime)]
    created_at: String,
}

impl OrgView {
    pub(crate) fn new(org: &Org, role: Role) -> OrgView {
        OrgView { id: org.id.clone(), name: org.name.clone(), role, created_at: rfc3339(org.created_at) }
    }
}

/// An API key. `key`, the secret, is there only in the answer that made it (create, rotate,
/// signup): it is never shown again.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyView {
    id: KeyId,
    name: String,
    /// The secret's first characters, to recognise it.
    prefix: String,
    scopes: Vec<Scope>,
    #[schema(format = DateTime)]
    created_at: String,
    created_by: Option<UserId>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// Until when the secret the key had before its last rotation still works.
    #[schema(format = DateTime)]
    previous_key_expires_at: Option<String>,
    /// The platform's own key for browser tokens; its secret is never shown.
    system: bool,
    limits: KeyLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl KeyView {
    pub(crate) fn new(key: &KeyRecord) -> KeyView {
        KeyView {
            id: key.id.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            scopes: key.scopes.clone(),
            created_at: rfc3339(key.created_at),
            created_by: key.created_by.clone(),
            last_used_at: key.last_used_at.map(rfc3339),
            expires_at: key.expires_at.map(rfc3339),
            revoked_at: key.revoked_at.map(rfc3339),
            previous_key_expires_at: key.previous_until.map(rfc3339),
            system: key.system,
            limits: key.limits,
            key: None,
        }
    }

    /// The key with its secret (shown once).
    pub(crate) fn with_secret(key: &KeyRecord, secret: String) -> KeyView {
        KeyView { key: Some(secret), ..KeyView::new(key) }
    }
}

/// `POST /v1/auth/signup`: the new user, their organization, its first key (with the secret) and a
/// session token.
#[derive(Serialize, ToSchema)]
pub(crate) struct SignupView {
    pub(crate) user: UserView,
    pub(crate) org: OrgView,
    pub(crate) key: KeyView,
    pub(crate) token: String,
}

/// `POST /v1/auth/login`: a session token (also set as cookies) and the user.
#[derive(Serialize, ToSchema)]
pub(crate) struct LoginView {
    pub(crate) token: String,
    pub(crate) user: UserView,
}

/// `GET /v1/me`.
#[derive(Serialize, ToSchema)]
pub(crate) struct MeView {
    pub(crate) user: UserView,
    pub(crate) orgs: Vec<OrgView>,
}

/// A member of an organization.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemberView {
    pub(crate) user: MemberUserView,
    pub(crate) role: Role,
    #[schema(format = DateTime)]
    pub(crate) added_at: String,
}

/// A page of members; `next_after` is the cursor of the next page (null on the last).
#[derive(Serialize, ToSchema)]
pub(crate) struct MembersPage {
    pub(crate) members: Vec<MemberView>,
    pub(crate) next_after: Option<String>,
}

/// What the organization may still use.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Plan {
    Unlimited,
    Prepaid,
}

/// `GET …/balance`.
#[derive(Serialize, ToSchema)]
pub(crate) struct BalanceView {
    plan: Plan,
    /// Audio seconds left (below zero after an overage); null when unlimited.
    credit_seconds_remaining: Option<f64>,
    /// The organization's stream limit; null: the gateway's default.
    max_streams: Option<u32>,
}

impl From<Credit> for BalanceView {
    fn from(credit: Credit) -> BalanceView {
        let (plan, remaining) = match credit {
            Credit::Unlimited => (Plan::Unlimited, None),
            Credit::Millis(ms) => (Plan::Prepaid, Some(seconds(ms))),
        };
        BalanceView { plan, credit_seconds_remaining: remaining, max_streams: None }
    }
}

/// A short-lived token for the Speech API (scope `listen`), for a browser.
#[derive(Serialize, ToSchema)]
pub(crate) struct ListenTokenView {
    pub(crate) access_token: String,
    /// Seconds it stays valid.
    pub(crate) expires_in: i64,
}

/// Sums of a usage report.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageTotals {
    pub(crate) requests: u64,
    pub(crate) streams: u64,
    pub(crate) audio_seconds: f64,
}

/// One group of a usage report: a day (`YYYY-MM-DD`), a key id, a model or a kind.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsagePoint {
    pub(crate) group: String,
    pub(crate) requests: u64,
    pub(crate) streams: u64,
    pub(crate) audio_seconds: f64,
}

/// `GET …/usage`.
#[derive(Serialize, ToSchema)]
pub(crate) struct UsageReport {
    #[schema(format = DateTime)]
    pub(crate) start: String,
    #[schema(format = DateTime)]
    pub(crate) end: String,
    pub(crate) group_by: UsageGroup,
    pub(crate) totals: UsageTotals,
    pub(crate) series: Vec<UsagePoint>,
}

/// A request in the log: an upload or a stream, from its usage events.
#[derive(Serialize, ToSchema)]
pub(crate) struct RequestView {
    request_id: String,
    key_id: KeyId,
    model: String,
    kind: aldea_store::UsageKind,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    ended_at: String,
    audio_seconds: f64,
    /// The HTTP status of an upload, the close code of a stream.
    status: u16,
    /// Whether its final usage event is recorded.
    complete: bool,
}

impl RequestView {
    pub(crate) fn new(request: &RequestRecord) -> RequestView {
        let millis = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        RequestView {
            request_id: request.request_id.clone(),
            key_id: request.key_id.clone(),
            model: request.model.clone(),
            kind: request.kind,
            started_at: millis(request.started_at),
            ended_at: millis(request.ended_at),
            audio_seconds: seconds(request.audio_millis),
            status: request.status,
            complete: request.complete,
        }
    }
}

/// A page of the request log, newest first; `next_before` is the cursor of the next page.
#[derive(Serialize, ToSchema)]
pub(crate) struct RequestsPage {
    pub(crate) requests: Vec<RequestView>,
    pub(crate) next_before: Option<String>,
}
