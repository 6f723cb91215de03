//! `POST /v1/auth/grant`: a short-lived HS256 token for browsers (which cannot set headers on a
//! WebSocket), for a caller holding an API key.
//!
//! Invariant: a token is granted for an API key only (never for another token), scoped to listen,
//! with the key's limits, for the configured lifetime; the token is never logged.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use crate::auth::{self, Credential};
use crate::error::ApiError;
use crate::AppState;

/// `POST /v1/auth/grant`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct GrantView {
    /// An HS256 JWT for `Authorization: Bearer` or the `bearer` WebSocket subprotocol.
    access_token: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

#[utoipa::path(post, path = "/v1/auth/grant", tag = "auth", security(("token" = [])),
    responses((status = 200, description = "A short-lived token scoped to listen, with the key's limits", body = GrantView)))]
pub(crate) async fn grant(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<GrantView>, ApiError> {
    let (credential, _) = auth::credential(&headers)
        .ok_or_else(|| ApiError::Unauthorized("missing credentials: send Authorization: Token <key>".to_owned()))?;
    if !matches!(credential, Credential::Key(_)) {
        return Err(ApiError::Unauthorized("a token is granted for an API key only".to_owned()));
    }
    let grant = state.0.auth.authenticate(&credential).await?;
    let (token, expires_in) = state.0.auth.grant_jwt(&grant, state.config().jwt_ttl)?;
    Ok(Json(GrantView { access_token: token, expires_in }))
}
