//! Operators' and platform admins' use cases: marking admins and issuing password resets (the
//! binary's `aldea users …` calls these, so the rules live once, here), resetting a password with
//! such a token, and adding credit to any organization.

use aldea_store::{hash_key, Accounts, Credit, CreditKind, OrgId, User};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::{check_password, hash_password_off_thread, Body};
use crate::auth::{self, Caller};
use crate::views::BalanceView;
use crate::{ApiError, AppState};

/// How long a password reset token works.
pub const RESET_TTL_SECONDS: i64 = 3600;

async fn user_by_email(accounts: &dyn Accounts, email: &str) -> Result<User, ApiError> {
    accounts
        .user_by_email(email)
        .await?
        .map(|(user, _)| user)
        .ok_or_else(|| ApiError::NotFound("no account has this email".to_owned()))
}

/// Makes the user with this email a platform admin (or no longer one); the user.
pub async fn set_admin(accounts: &dyn Accounts, email: &str, is_admin: bool) -> Result<User, ApiError> {
    let user = user_by_email(accounts, email).await?;
    accounts.set_admin(&user.id, is_admin).await?;
    tracing::info!(user_id = %user.id, is_admin, "platform admin changed");
    Ok(User { is_admin, ..user })
}

/// A one-time token that sets a new password for the user with this email within
/// [`RESET_TTL_SECONDS`] (`POST /v1/auth/reset-password`); one issued before stops working. Only
/// its hash is stored: the token is shown to the operator here, once.
pub async fn issue_password_reset(accounts: &dyn Accounts, email: &str, now: i64) -> Result<(User, String), ApiError> {
    let user = user_by_email(accounts, email).await?;
    let token = auth::random_token()?;
    accounts.create_password_reset(&user.id, &hash_key(&token), now + RESET_TTL_SECONDS).await?;
    tracing::info!(user_id = %user.id, "password reset issued");
    Ok((user, token))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetBody {
    /// The token `aldea users reset-password EMAIL` printed.
    token: String,
    /// 8 characters or more (at most 1024 bytes).
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
}

/// Sets the password of the reset token's user and ends every session they had.
#[utoipa::path(post, path = "/v1/auth/reset-password", tag = "auth", security(()), request_body = ResetBody,
    responses((status = 204, description = "The password is set; every session of the user has ended")))]
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    Body(body): Body<ResetBody>,
) -> Result<Response, ApiError> {
    check_password(&body.password)?;
    let now = aldea_store::unix_now();
    let user_id = state
        .deps
        .accounts
        .take_password_reset(&hash_key(&body.token), now)
        .await?
        .ok_or_else(|| ApiError::BadRequest("the reset token is unknown, used or expired".to_owned()))?;
    let password_hash = hash_password_off_thread(&state, body.password).await?;
    state.deps.accounts.set_password(&user_id, &password_hash).await?;
    let ended = state.deps.accounts.end_sessions(&user_id).await?;
    tracing::info!(user_id = %user_id, sessions_ended = ended, "password reset");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreditsBody {
    /// Audio seconds to add (positive), or to take away as an adjustment (negative).
    seconds: Option<f64>,
    /// `true` makes the organization unlimited (`aldea credit set` meters it again).
    unlimited: Option<bool>,
    /// Why (kept in the ledger).
    note: Option<String>,
}

/// The most credit one call adds or takes (ten million seconds).
const MAX_CREDIT_SECONDS: f64 = 1e7;

/// Adds credit to an organization (platform admins only, any organization).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/credits", tag = "billing", security(("session" = []), ("session_cookie" = [])),
    params(("org_id" = OrgId, Path, description = "The organization's id")), request_body = CreditsBody,
    responses((status = 200, description = "The balance after the change", body = BalanceView)))]
pub(crate) async fn add_credits(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Body(body): Body<CreditsBody>,
) -> Result<Json<BalanceView>, ApiError> {
    let user = caller.user()?;
    if !user.is_admin {
        // A member learns it needs an admin; anyone else, that there is nothing here.
        caller.org_role(&state, &org_id, false).await?;
        return Err(ApiError::Forbidden("only platform admins add credit".to_owned()));
    }
    state
        .deps
        .keys
        .org(&org_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("organization {org_id} not found")))?;
    let note = body.note.map(|n| n.chars().take(200).collect::<String>());
    let now = aldea_store::unix_now();
    let keys = &state.deps.keys;
    let credit = match (body.seconds, body.unlimited) {
        (None, Some(true)) => keys.set_credit(&org_id, Credit::Unlimited, now).await?,
        (Some(seconds), None) => {
            if !seconds.is_finite() || seconds == 0.0 || seconds.abs() > MAX_CREDIT_SECONDS {
                return Err(ApiError::BadRequest(format!(
                    "seconds is a non-zero number of at most {MAX_CREDIT_SECONDS} in size"
                )));
            }
            let millis = (seconds * 1000.0).round() as i64;
            let kind = if millis > 0 { CreditKind::TopUp } else { CreditKind::Adjustment };
            let reference = format!("admin {}{}", user.id, note.map(|n| format!(": {n}")).unwrap_or_default());
            keys.add_credit(&org_id, kind, millis, Some(&reference), now).await?
        }
        _ => return Err(ApiError::BadRequest("send either seconds or \"unlimited\": true".to_owned())),
    };
    // Every cached answer of the organization's keys carries its credit: gateways drop them now.
    let hashes = keys.live_key_hashes(&org_id).await?;
    crate::api::invalidate(&state, &hashes, "credit").await;
    tracing::info!(org_id = %org_id, admin = %user.id, "credit changed");
    Ok(Json(BalanceView::from(credit)))
}
