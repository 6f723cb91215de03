//! The handlers: JSON in (read whole, within the body limit, parsed here so that every malformed
//! body gets the contract's 400), JSON out in the spec's shapes.

use aldea_store::{
    hash_key, Credit, KeyId, KeyLimits, NewKey, Org, OrgId, PageRequest, RateDecision, Role, Scope, User, UserId,
};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{self, Caller};
use crate::views::{
    BalanceView, KeyView, ListenTokenView, LoginView, MeView, MemberUserView, MemberView, MembersPage, OrgView,
    SignupView, UserView,
};
use crate::{ApiError, AppState};

/// A JSON body: 413 over the limit, 400 when it is not the expected JSON.
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Body<T>, ApiError> {
        // Only JSON: a cross-site form (text/plain, no preflight) cannot post here.
        let json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::UnsupportedMediaType("send the body as Content-Type: application/json".to_owned()));
        }
        let timeout = state.config.body_timeout;
        let read = tokio::time::timeout(timeout, Bytes::from_request(request, state)).await.map_err(|_| {
            ApiError::RequestTimeout(format!("the body did not arrive within {} s", timeout.as_secs_f64()))
        })?;
        let bytes = read.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!("the body is larger than {} bytes", state.config.max_body_bytes))
            } else {
                ApiError::BadRequest(format!("unreadable body: {e}"))
            }
        })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// RFC 3339 (UTC) of Unix seconds.
pub(crate) fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The session cookies a login sets (the session, and the CSRF token the page sends back).
fn session_cookies(state: &AppState, token: &str, csrf: &str) -> Result<HeaderMap, ApiError> {
    let secure = if state.config.secure_cookies { "; Secure" } else { "" };
    let max_age = state.config.session_ttl.as_secs();
    let mut headers = HeaderMap::new();
    for cookie in [
        format!("{}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}", auth::SESSION_COOKIE),
        format!("{}={csrf}; Path=/; SameSite=Lax; Max-Age={max_age}{secure}", auth::CSRF_COOKIE),
    ] {
        let value = HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(format!("cookie: {e}")))?;
        headers.append(SET_COOKIE, value);
    }
    Ok(headers)
}

/// Starts a session for `user`: its token (in clear, once) and the cookies that carry it.
async fn start_session(state: &AppState, user: &User) -> Result<(String, HeaderMap), ApiError> {
    let token = auth::random_token()?;
    let now = aldea_store::unix_now();
    let expires_at = now + state.config.session_ttl.as_secs() as i64;
    state.deps.accounts.create_session(&user.id, &hash_key(&token), now, expires_at).await?;
    let cookies = session_cookies(state, &token, &auth::csrf_token(&token))?;
    Ok((token, cookies))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignupBody {
    #[schema(format = Email)]
    email: String,
    /// 8 characters or more (at most 1024 bytes).
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// The first organization's name (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200)]
    org_name: String,
}

pub(crate) fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < 8 {
        return Err(ApiError::BadRequest("a password has at least 8 characters".to_owned()));
    }
    if password.len() > 1024 {
        return Err(ApiError::BadRequest("a password has at most 1024 bytes".to_owned()));
    }
    Ok(())
}

fn check_name(name: &str, what: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("{what} has 1 to 200 printable characters")));
    }
    Ok(name.to_owned())
}

#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", security(()), request_body = SignupBody,
    responses((status = 201, description = "Signed up and logged in (the session cookies are set too); `key.key` is the first API key's secret, shown once", body = SignupView)))]
pub(crate) async fn signup(State(state): State<AppState>, Body(body): Body<SignupBody>) -> Result<Response, ApiError> {
    check_password(&body.password)?;
    let org_name = check_name(&body.org_name, "an organization name")?;
    let now = aldea_store::unix_now();
    let password_hash = hash_password_off_thread(&state, body.password).await?;
    let signed = state
        .deps
        .accounts
        .sign_up(&body.email, &password_hash, &org_name, state.config.signup_credit, NewKey::listen("default"), now)
        .await?;
    let aldea_store::SignedUp { user, org, key, secret } = signed;
    let (token, cookies) = start_session(&state, &user).await?;
    tracing::info!(user_id = %user.id, org_id = %org.id, "signed up");
    let body = SignupView {
        user: UserView::from(&user),
        org: OrgView::new(&org, Role::Owner),
        key: KeyView::with_secret(&key, secret),
        token,
    };
    Ok((StatusCode::CREATED, cookies, Json(body)).into_response())
}

/// argon2id takes tens of milliseconds of CPU: off the async threads, one per core at a time.
pub(crate) async fn hash_password_off_thread(state: &AppState, password: String) -> Result<String, ApiError> {
    let _permit = state.hashing.acquire().await.map_err(|e| ApiError::Internal(format!("hashing: {e}")))?;
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing: {e}")))?
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", security(()), request_body = LoginBody,
    responses((status = 200, description = "Logged in: the session token (also set as the `aldea_session` cookie, with `aldea_csrf`)", body = LoginView)))]
pub(crate) async fn login(State(state): State<AppState>, Body(body): Body<LoginBody>) -> Result<Response, ApiError> {
    let email = body.email.trim().to_lowercase();
    let bucket = format!("login:{}", hash_key(&email));
    if let RateDecision::Limited { retry_after_s } =
        state.deps.limits.hit(&bucket, state.config.login_attempts_per_minute).await?
    {
        return Err(ApiError::TooManyRequests(format!("too many logins for this account: retry in {retry_after_s} s")));
    }
    let found = state.deps.accounts.user_by_email(&email).await?;
    let (user, stored) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, auth::DUMMY_HASH.to_owned()),
    };
    let password = body.password;
    let _permit = state.hashing.acquire().await.map_err(|e| ApiError::Internal(format!("hashing: {e}")))?;
    let matches = tokio::task::spawn_blocking(move || auth::password_matches(&password, &stored))
        .await
        .map_err(|e| ApiError::Internal(format!("password check: {e}")))?;
    let user = user.filter(|_| matches).ok_or_else(|| ApiError::Unauthorized("wrong email or password".to_owned()))?;
    let (token, cookies) = start_session(&state, &user).await?;
    tracing::info!(user_id = %user.id, "logged in");
    Ok((cookies, Json(LoginView { token, user: UserView::from(&user) })).into_response())
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("session" = []), ("session_cookie" = [])),
    responses((status = 204, description = "The session is over and its cookies cleared")))]
pub(crate) async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let Caller::Session { token_hash, .. } = &caller else {
        return Err(ApiError::Forbidden("an API key has no session to end".to_owned()));
    };
    state.deps.accounts.end_session(token_hash).await?;
    let secure = if state.config.secure_cookies { "; Secure" } else { "" };
    let mut headers = HeaderMap::new();
    for name in [auth::SESSION_COOKIE, auth::CSRF_COOKIE] {
        let cookie = format!("{name}=; Path=/; Max-Age=0; SameSite=Lax{secure}");
        headers.append(SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("session" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The logged-in user and their organizations", body = MeView)))]
pub(crate) async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<MeView>, ApiError> {
    let user = caller.user()?;
    let orgs =
        state.deps.accounts.memberships(&user.id).await?.iter().map(|(org, role)| OrgView::new(org, *role)).collect();
    Ok(Json(MeView { user: UserView::from(user), orgs }))
}

#[utoipa::path(get, path = "/v1/orgs", tag = "organizations", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])),
    responses((status = 200, description = "The caller's organizations (a manage key: its own)", body = Vec<OrgView>)))]
pub(crate) async fn list_orgs(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<OrgView>>, ApiError> {
    let orgs = match &caller {
        Caller::Session { user, .. } => state
            .deps
            .accounts
            .memberships(&user.id)
            .await?
            .iter()
            .map(|(org, role)| OrgView::new(org, *role))
            .collect(),
        Caller::Key(grant) => {
            let org = state.deps.keys.org(&grant.org_id).await?;
            org.iter().map(|org| OrgView::new(org, Role::Admin)).collect()
        }
    };
    Ok(Json(orgs))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrgBody {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

#[utoipa::path(post, path = "/v1/orgs", tag = "organizations", security(("session" = []), ("session_cookie" = [])), request_body = OrgBody,
    responses((status = 201, description = "The new organization; the caller owns it", body = OrgView)))]
pub(crate) async fn create_org(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<OrgBody>,
) -> Result<Response, ApiError> {
    let user = caller.user()?;
    let name = check_name(&body.name, "an organization name")?;
    let now = aldea_store::unix_now();
    // Only the organization made at signup gets the signup credit: more organizations are no way
    // to more free credit.
    let org = state.deps.keys.create_org(&name, Credit::Millis(0), now).await?;
    state.deps.accounts.add_member(&org.id, &user.id, Role::Owner, now).await?;
    Ok((StatusCode::CREATED, Json(OrgView::new(&org, Role::Owner))).into_response())
}

async fn org_of(state: &AppState, org_id: &OrgId) -> Result<Org, ApiError> {
    state.deps.keys.org(org_id).await?.ok_or_else(|| ApiError::NotFound(format!("organization {org_id} not found")))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}", tag = "organizations", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id")),
    responses((status = 200, description = "The organization", body = OrgView)))]
pub(crate) async fn get_org(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
) -> Result<Json<OrgView>, ApiError> {
    let role = caller.org_role(&state, &org_id, false).await?;
    Ok(Json(OrgView::new(&org_of(&state, &org_id).await?, role)))
}

#[utoipa::path(patch, path = "/v1/orgs/{org_id}", tag = "organizations", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id")),
    request_body = OrgBody, responses((status = 200, description = "Renamed (owners and admins)", body = OrgView)))]
pub(crate) async fn rename_org(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Body(body): Body<OrgBody>,
) -> Result<Json<OrgView>, ApiError> {
    let role = caller.org_role(&state, &org_id, true).await?;
    let name = check_name(&body.name, "an organization name")?;
    let org = state.deps.keys.rename_org(&org_id, &name).await?;
    Ok(Json(OrgView::new(&org, role)))
}

/// A page of a list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// At most this many (default 100; a page holds 1 to 500, larger values are read as 500).
    limit: Option<u32>,
    /// The cursor of the previous page's end (`x-next-after` or `next_after`).
    after: Option<String>,
}

impl PageQuery {
    fn page(self) -> PageRequest {
        PageRequest { limit: self.limit.unwrap_or(100), after: self.after }
    }
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/keys", tag = "keys", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), PageQuery),
    responses((status = 200, description = "The organization's keys, oldest first (owners and admins)", body = Vec<KeyView>,
        headers(("x-next-after" = String, description = "The cursor of the next page, when there is one")))))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    caller.org_role(&state, &org_id, true).await?;
    let page = state.deps.keys.list_keys(&org_id, &page.page()).await?;
    let keys: Vec<KeyView> = page.items.iter().map(KeyView::new).collect();
    let mut response = Json(keys).into_response();
    if let Some(next) = page.next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        // The list is the spec's array; the next page's cursor travels beside it.
        response.headers_mut().insert("x-next-after", next);
    }
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyBody {
    name: Option<String>,
    scopes: Option<Vec<Scope>>,
    /// RFC 3339; none: the key does not expire.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    limits: Option<KeyLimits>,
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/keys", tag = "keys", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id")),
    request_body = NewKeyBody,
    responses((status = 201, description = "The new key; `key` is its secret, shown this once", body = KeyView)))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Body(body): Body<NewKeyBody>,
) -> Result<Response, ApiError> {
    caller.org_role(&state, &org_id, true).await?;
    let now = aldea_store::unix_now();
    let name = match body.name {
        Some(name) => check_name(&name, "a key name")?,
        None => {
            let existing = state.deps.keys.list_keys(&org_id, &PageRequest::first(aldea_store::MAX_PAGE)).await?;
            format!("Key {}", existing.items.len() + 1)
        }
    };
    let expires_at = match body.expires_at {
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(&text)
                .map_err(|e| ApiError::BadRequest(format!("expires_at is not an RFC 3339 time: {e}")))?
                .timestamp();
            if at <= now {
                return Err(ApiError::BadRequest("expires_at is in the past".to_owned()));
            }
            Some(at)
        }
        None => None,
    };
    let created_by = match &caller {
        Caller::Session { user, .. } => Some(user.id.clone()),
        Caller::Key(_) => None,
    };
    let new = NewKey {
        name,
        scopes: body.scopes.unwrap_or_else(|| vec![Scope::Listen]),
        limits: body.limits.unwrap_or_default(),
        expires_at,
        created_by,
        system: false,
    };
    let (record, secret) = state.deps.keys.create_key(&org_id, new, now).await?;
    tracing::info!(org_id = %org_id, key_id = %record.id, "key created");
    Ok((StatusCode::CREATED, Json(KeyView::with_secret(&record, secret))).into_response())
}

#[utoipa::path(delete, path = "/v1/orgs/{org_id}/keys/{key_id}", tag = "keys", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), ("key_id" = KeyId, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked: refused by every gateway within a second, its open streams closed")))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_id, key_id)): Path<(OrgId, KeyId)>,
) -> Result<Response, ApiError> {
    caller.org_role(&state, &org_id, true).await?;
    let hashes = state.deps.keys.revoke_key(&org_id, &key_id, aldea_store::unix_now()).await?;
    invalidate(&state, &hashes, "revoked key").await;
    tracing::info!(org_id = %org_id, key_id = %key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every gateway drops its cached answers for these hashes now (the periodic recheck is only the
/// fallback when this fails).
pub(crate) async fn invalidate(state: &AppState, hashes: &[String], what: &str) {
    for hash in hashes {
        if let Err(e) = state.deps.key_cache.invalidate(hash).await {
            tracing::warn!(error = %e, what, "key changed; gateways see it within their cache lifetime");
            return;
        }
    }
}

/// The longest grace a rotated secret may keep (30 days).
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// How long the current secret keeps working; none: at once.
    grace_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/keys/{key_id}/rotate", tag = "keys", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), ("key_id" = KeyId, Path, description = "The key's id")),
    request_body = RotateBody,
    responses((status = 200, description = "The key with its new secret in `key` (shown once); the old one works for the grace", body = KeyView)))]
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_id, key_id)): Path<(OrgId, KeyId)>,
    Body(body): Body<RotateBody>,
) -> Result<Response, ApiError> {
    caller.org_role(&state, &org_id, true).await?;
    let grace = body.grace_seconds.unwrap_or(0);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::BadRequest(format!("grace_seconds is at most {MAX_GRACE_SECONDS} (30 days)")));
    }
    let key = state
        .deps
        .keys
        .key(&org_id, &key_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("key {key_id} not found")))?;
    if key.system {
        return Err(ApiError::Conflict(
            "this is the platform's own dashboard key, whose secret is never shown: revoke it instead (the next browser token makes a new one)".to_owned(),
        ));
    }
    let now = aldea_store::unix_now();
    let rotated = state.deps.keys.rotate_key(&org_id, &key_id, now + grace as i64, now).await?;
    // Cached answers of the old secrets are stale: the one in grace now expires with it.
    invalidate(&state, &rotated.stale_hashes, "rotated key").await;
    tracing::info!(org_id = %org_id, key_id = %key_id, grace_seconds = grace, "key rotated");
    Ok(Json(KeyView::with_secret(&rotated.record, rotated.secret)).into_response())
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/members", tag = "members", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), PageQuery),
    responses((status = 200, description = "The organization's members", body = MembersPage)))]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Query(page): Query<PageQuery>,
) -> Result<Json<MembersPage>, ApiError> {
    caller.org_role(&state, &org_id, false).await?;
    let page = state.deps.accounts.members(&org_id, &page.page()).await?;
    let members = page
        .items
        .iter()
        .map(|m| MemberView { user: MemberUserView::from(&m.user), role: m.role, added_at: rfc3339(m.added_at) })
        .collect();
    Ok(Json(MembersPage { members, next_after: page.next }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberBody {
    email: String,
    role: Option<Role>,
}

#[utoipa::path(post, path = "/v1/orgs/{org_id}/members", tag = "members", security(("session" = []), ("session_cookie" = [])), params(("org_id" = OrgId, Path, description = "The organization's id")),
    request_body = MemberBody,
    responses((status = 201, description = "The user (who has an account) is a member now", body = MemberView)))]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Body(body): Body<MemberBody>,
) -> Result<Response, ApiError> {
    // A person, not a key, adds people: a leaked manage key cannot leave lasting access behind.
    caller.user()?;
    let caller_role = caller.org_role(&state, &org_id, true).await?;
    let role = body.role.unwrap_or(Role::Member);
    if role == Role::Owner && caller_role != Role::Owner {
        return Err(ApiError::Forbidden("only owners make owners".to_owned()));
    }
    let (user, _) = state
        .deps
        .accounts
        .user_by_email(&body.email)
        .await?
        .ok_or_else(|| ApiError::NotFound("no account has this email (they sign up first)".to_owned()))?;
    let now = aldea_store::unix_now();
    state.deps.accounts.add_member(&org_id, &user.id, role, now).await?;
    let view = MemberView { user: MemberUserView::from(&user), role, added_at: rfc3339(now) };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(delete, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "members", security(("session" = []), ("session_cookie" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), ("user_id" = UserId, Path, description = "The member's user id")),
    responses((status = 204, description = "No longer a member")))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_id, user_id)): Path<(OrgId, UserId)>,
) -> Result<Response, ApiError> {
    caller.user()?;
    let caller_role = caller.org_role(&state, &org_id, true).await?;
    let target = state.deps.accounts.role(&org_id, &user_id).await?;
    if target == Some(Role::Owner) && caller_role != Role::Owner {
        return Err(ApiError::Forbidden("only owners remove owners".to_owned()));
    }
    state.deps.accounts.remove_member(&org_id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/balance", tag = "billing", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id")),
    responses((status = 200, description = "The plan and the credit left", body = BalanceView)))]
pub(crate) async fn balance(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
) -> Result<Json<BalanceView>, ApiError> {
    caller.org_role(&state, &org_id, false).await?;
    Ok(Json(BalanceView::from(state.deps.keys.credit(&org_id).await?)))
}

/// How long a browser token from `listen-token` lasts.
pub(crate) const LISTEN_TOKEN_SECONDS: i64 = 30;
/// The system key browser tokens are issued for.
pub(crate) const DASHBOARD_KEY: &str = "dashboard";

/// A 30-s token with scope `listen` for the organization's `dashboard` system key, so a browser
/// can open a stream on the gateway without a long-lived key in the page.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/listen-token", tag = "keys", security(("session" = []), ("session_cookie" = [])), params(("org_id" = OrgId, Path, description = "The organization's id")),
    responses((status = 200, description = "A 30-s bearer token for the Speech API (scope listen)", body = ListenTokenView)))]
pub(crate) async fn listen_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
) -> Result<Json<ListenTokenView>, ApiError> {
    caller.user()?;
    caller.org_role(&state, &org_id, false).await?;
    let secret = state.config.jwt_secret.as_ref().ok_or_else(|| {
        ApiError::BadRequest("browser tokens are not enabled: the platform has no JWT secret".to_owned())
    })?;
    let now = aldea_store::unix_now();
    let key = state.deps.keys.system_key(&org_id, DASHBOARD_KEY, now).await?;
    let claims = aldea_http::jwt::JwtClaims {
        sub: key.id.to_string(),
        org: org_id.to_string(),
        scope: Scope::Listen.as_str().to_owned(),
        iat: now,
        exp: now + LISTEN_TOKEN_SECONDS,
        max_streams: key.limits.max_streams,
        rpm: key.limits.requests_per_minute,
    };
    let token = aldea_http::jwt::issue_jwt(&claims, secrecy::ExposeSecret::expose_secret(secret).as_bytes());
    Ok(Json(ListenTokenView { access_token: token, expires_in: LISTEN_TOKEN_SECONDS }))
}

/// Alive while the process serves.
#[utoipa::path(get, path = "/live", tag = "probes", security(()),
    responses((status = 200, description = "The process serves", body = String, content_type = "text/plain")))]
pub(crate) async fn live() -> &'static str {
    "ok"
}

/// Ready when the database answers.
#[utoipa::path(get, path = "/ready", tag = "probes", security(()),
    responses((status = 200, description = "The database answers", body = String, content_type = "text/plain")))]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.deps.keys.org(&OrgId::from("readiness-probe")).await?;
    Ok("ok")
}
