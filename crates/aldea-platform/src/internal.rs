//! The internal API (service to service, never routed by the ingress): key verification for the
//! gateways, authenticated with the shared service token. Without a configured token nobody is let
//! in (401, so a gateway pointed at such a platform reports it unavailable rather than taking every
//! key for unknown).

use aldea_store::{hash_key, KeyId};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::Body;
use crate::auth::constant_time_eq;
use crate::{ApiError, AppState};

/// `Err` unless the request carries the service token (`Authorization: Bearer <token>`).
fn check_service_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.config.service_token else {
        return Err(ApiError::Unauthorized("the internal API is off: the platform has no service token".to_owned()));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Hashes of equal length, compared in constant time.
    if constant_time_eq(hash_key(given).as_bytes(), hash_key(expected.expose_secret()).as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the service token is missing or wrong".to_owned()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyBody {
    key_hash: Option<String>,
    key_id: Option<KeyId>,
}

/// `{key_hash}` or `{key_id}` → the key's grant (`expires_at` in Unix seconds; `org_limits` null:
/// the gateway's own defaults apply), or 404 for a key unknown, revoked or expired.
pub(crate) async fn verify_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<VerifyBody>,
) -> Result<Json<Value>, ApiError> {
    check_service_token(&state, &headers)?;
    let now = aldea_store::unix_now();
    let grant = match (body.key_hash, body.key_id) {
        (Some(hash), None) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            state.deps.keys.verify(&hash.to_ascii_lowercase(), now).await?
        }
        (None, Some(id)) => state.deps.keys.grant_by_id(&id, now).await?,
        _ => return Err(ApiError::BadRequest("send key_hash (64 hex digits) or key_id".to_owned())),
    };
    let grant = grant.ok_or_else(|| ApiError::NotFound("no such key (or it is revoked or expired)".to_owned()))?;
    let mut answer = serde_json::to_value(&grant).map_err(|e| ApiError::Internal(format!("grant: {e}")))?;
    answer["org_limits"] = json!({"max_streams": null, "max_uploads": null});
    Ok(Json(answer))
}
