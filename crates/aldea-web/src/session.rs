//! Who is looking: the platform session token the dashboard keeps in an HttpOnly cookie, the
//! organization picked, and CSRF tokens.
//!
//! CSRF: a signed-in form carries a token derived from the session (SHA-256 of a label and the
//! session token, which the page's origin alone can read back from the page); sign-up and login
//! forms carry a random token that must equal the `aldea_csrf` cookie (double submit). Either way a
//! cross-site POST also fails the `Origin` check when the browser sends one.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::PageError;
use crate::AppState;

pub(crate) const SESSION_COOKIE: &str = "aldea_session";
pub(crate) const ORG_COOKIE: &str = "aldea_org";
pub(crate) const CSRF_COOKIE: &str = "aldea_csrf";
/// How long the browser keeps the session cookie (the platform's session may end sooner).
const SESSION_MAX_AGE_S: u64 = 7 * 24 * 3600;

/// A form that carries nothing but its CSRF token (logout, revoke, remove).
#[derive(serde::Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// A signed-in person: the platform session token and the organization picked (if any).
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) org: Option<String>,
}

impl Session {
    pub(crate) fn csrf(&self) -> String {
        derived_csrf(&self.token)
    }

    /// Whether `given` is this session's CSRF token.
    pub(crate) fn check_csrf(&self, given: &str) -> Result<(), PageError> {
        if constant_time_eq(given.as_bytes(), self.csrf().as_bytes()) {
            Ok(())
        } else {
            Err(PageError::Csrf)
        }
    }
}

pub(crate) fn derived_csrf(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"aldea-web csrf\0");
    hash.update(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.finalize())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Session, PageError> {
        let token = cookie(&parts.headers, SESSION_COOKIE).filter(|t| !t.is_empty()).ok_or(PageError::SignedOut)?;
        same_origin(parts)?;
        let org = cookie(&parts.headers, ORG_COOKIE).filter(|o| !o.is_empty());
        Ok(Session { token, org })
    }
}

/// A state change from another site: refused when the browser says where the request comes from
/// and it is not this host (`Origin` is sent on every cross-origin POST).
pub(crate) fn same_origin(parts: &Parts) -> Result<(), PageError> {
    if parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD {
        return Ok(());
    }
    same_origin_headers(&parts.headers)
}

/// [`same_origin`] for a POST's headers.
pub(crate) fn same_origin_headers(headers: &HeaderMap) -> Result<(), PageError> {
    let (Some(origin), Some(host)) = (headers.get(ORIGIN), headers.get(HOST)) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let host = host.to_str().unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(PageError::Csrf)
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// `Set-Cookie` for one of the dashboard's cookies (HttpOnly, SameSite=Lax, whole site);
/// `value: None` deletes it.
pub(crate) fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> (axum::http::HeaderName, HeaderValue) {
    let secure = if secure { "; Secure" } else { "" };
    let text = match value {
        Some(value) if name == SESSION_COOKIE => {
            format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_MAX_AGE_S}{secure}")
        }
        Some(value) => format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    };
    (SET_COOKIE, HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("")))
}

/// A fresh random token (32 bytes, base64url).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator; it failing is beyond recovery for a login form.
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether the form's token is the `aldea_csrf` cookie's (sign-up and login forms).
pub(crate) fn check_double_submit(headers: &HeaderMap, given: &str) -> Result<(), PageError> {
    match cookie(headers, CSRF_COOKIE) {
        Some(expected) if !expected.is_empty() && constant_time_eq(expected.as_bytes(), given.as_bytes()) => Ok(()),
        _ => Err(PageError::Csrf),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; aldea_session=tok; b=2"));
        headers.append(COOKIE, HeaderValue::from_static("aldea_org=org_9"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&headers, ORG_COOKIE).as_deref(), Some("org_9"));
        assert_eq!(cookie(&headers, "aldea"), None);
    }

    #[test]
    fn csrf_tokens_differ_by_session_and_compare_exactly() {
        let one = derived_csrf("session-one");
        assert_ne!(one, derived_csrf("session-two"));
        let session = Session { token: "session-one".to_owned(), org: None };
        assert!(session.check_csrf(&one).is_ok());
        assert!(session.check_csrf(&one[..one.len() - 1]).is_err());
        assert!(session.check_csrf("").is_err());
    }

    #[test]
    fn double_submit_needs_the_cookie() {
        let mut headers = HeaderMap::new();
        assert!(check_double_submit(&headers, "x").is_err());
        headers.insert(COOKIE, HeaderValue::from_static("aldea_csrf=abc"));
        assert!(check_double_submit(&headers, "abc").is_ok());
        assert!(check_double_submit(&headers, "abd").is_err());
    }

    #[test]
    fn session_cookies_are_http_only_and_same_site() {
        let (_, value) = set_cookie(SESSION_COOKIE, Some("t"), true);
        let value = value.to_str().unwrap();
        assert!(value.contains("HttpOnly") && value.contains("SameSite=Lax") && value.contains("Secure"));
        let (_, gone) = set_cookie(ORG_COOKIE, None, false);
        assert!(gone.to_str().unwrap().contains("Max-Age=0"));
    }
}
