//! Who is calling the platform, and what they may reach.
//!
//! A caller is a session (its token as `Authorization: Bearer <token>` or the `aldea_session`
//! cookie) or an API key with the `manage` scope (`Authorization: Token <key>`). When an
//! `Authorization` header is present it alone authenticates (cookies are ignored). A state-changing
//! request authenticated by the cookie must carry `X-CSRF-Token`: the session's CSRF token, derived
//! from the session token, which login puts in the `aldea_csrf` cookie for the page's script.
//!
//! [`Caller::org_role`] is the one place tenancy is decided: no membership (or a key of another
//! organization) is a 404, never a 403.

use aldea_store::{hash_key, KeyGrant, OrgId, Role, Scope, User, KEY_PREFIX};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::Method;

use crate::error::ApiError;
use crate::AppState;

pub(crate) const SESSION_COOKIE: &str = "aldea_session";
pub(crate) const CSRF_COOKIE: &str = "aldea_csrf";
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session: derived from its token (the `aldea_csrf` cookie holds it for the
/// page's script).
pub(crate) fn csrf_token(session_token: &str) -> String {
    hash_key(&format!("csrf:{session_token}"))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes, hex: session tokens.
pub(crate) fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// An argon2id hash (PHC string) of a password, with a random salt.
pub(crate) fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::Internal(format!("password hashing: {e}")))
}

/// Whether `password` matches the stored hash (a malformed hash matches nothing).
pub(crate) fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A password hash that matches nothing, verified when the email is unknown so that a wrong email
/// takes as long as a wrong password.
pub(crate) const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8Yq7eYV4ZSxJ2Qe7Rz0l9kqYb0dQJb3u8yZQ0m3cH2Q";

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// A session: the user and the hash of its token.
    Session { user: User, token_hash: String },
    /// An API key with the `manage` scope.
    Key(KeyGrant),
}

impl Caller {
    /// The caller's standing in an organization: 404 when they are not in it; 403 when `manage`
    /// is needed and they are a plain member.
    pub(crate) async fn org_role(&self, state: &AppState, org_id: &OrgId, manage: bool) -> Result<Role, ApiError> {
        let role = match self {
            Caller::Session { user, .. } => state.deps.accounts.role(org_id, &user.id).await?,
            // A manage key acts as an admin of its own organization.
            Caller::Key(grant) => (grant.org_id == *org_id).then_some(Role::Admin),
        };
        let role = role.ok_or_else(|| ApiError::NotFound(format!("organization {org_id} not found")))?;
        if manage && !role.manages() {
            return Err(ApiError::Forbidden("only owners and admins manage this".to_owned()));
        }
        Ok(role)
    }

    /// The user behind a session; 403 for an API key (endpoints about a person).
    pub(crate) fn user(&self) -> Result<&User, ApiError> {
        match self {
            Caller::Session { user, .. } => Ok(user),
            Caller::Key(_) => Err(ApiError::Forbidden("this needs a logged-in user, not an API key".to_owned())),
        }
    }
}

/// The value of cookie `name` in the request.
pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let now = aldea_store::unix_now();
        if let Some(header) = parts.headers.get(AUTHORIZATION) {
            let header = header.to_str().map_err(|_| ApiError::Unauthorized("unreadable Authorization".to_owned()))?;
            let (scheme, credential) = header
                .split_once(' ')
                .ok_or_else(|| ApiError::Unauthorized("Authorization: Bearer <session> or Token <key>".to_owned()))?;
            let credential = credential.trim();
            return match scheme {
                s if s.eq_ignore_ascii_case("token") && credential.starts_with(KEY_PREFIX) => {
                    key_caller(state, credential, now).await
                }
                s if s.eq_ignore_ascii_case("bearer") && credential.starts_with(KEY_PREFIX) => {
                    key_caller(state, credential, now).await
                }
                s if s.eq_ignore_ascii_case("bearer") => session_caller(state, credential, now).await,
                _ => Err(ApiError::Unauthorized("Authorization: Bearer <session> or Token <key>".to_owned())),
            };
        }
        let token = cookie(parts, SESSION_COOKIE)
            .ok_or_else(|| ApiError::Unauthorized("log in first (no session)".to_owned()))?
            .to_owned();
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            // The token is derived from the session: a cookie planted by a sibling site cannot
            // carry a matching one.
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), csrf_token(&token).as_bytes()) {
                return Err(ApiError::Forbidden("missing or wrong X-CSRF-Token".to_owned()));
            }
        }
        session_caller(state, &token, now).await
    }
}

async fn session_caller(state: &AppState, token: &str, now: i64) -> Result<Caller, ApiError> {
    let token_hash = hash_key(token);
    let user = state
        .deps
        .accounts
        .session_user(&token_hash, now)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the session expired or ended: log in again".to_owned()))?;
    Ok(Caller::Session { user, token_hash })
}

async fn key_caller(state: &AppState, secret: &str, now: i64) -> Result<Caller, ApiError> {
    let grant = state
        .deps
        .keys
        .verify(&hash_key(secret), now)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid credentials: unknown, revoked or expired key".to_owned()))?;
    if !grant.scopes.contains(&Scope::Manage) {
        return Err(ApiError::Forbidden("this key lacks the manage scope".to_owned()));
    }
    Ok(Caller::Key(grant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches("correct horse", &hash));
        assert!(!password_matches("correct hors", &hash));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
        assert!(!password_matches("anything", DUMMY_HASH));
        assert!(!password_matches("anything", "not a hash"));
        assert_eq!(random_token().unwrap().len(), 64);
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"", b"a"));
    }
}
