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

pub(crate) async fn grant(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (credential, _) = auth::credential(&headers)
        .ok_or_else(|| ApiError::Unauthorized("missing credentials: send Authorization: Token <key>".to_owned()))?;
    if !matches!(credential, Credential::Key(_)) {
        return Err(ApiError::Unauthorized("a token is granted for an API key only".to_owned()));
    }
    let grant = state.0.auth.authenticate(&credential).await?;
    let (token, expires_in) = state.0.auth.grant_jwt(&grant, state.config().jwt_ttl)?;
    Ok(Json(serde_json::json!({ "access_token": token, "expires_in": expires_in })))
}
