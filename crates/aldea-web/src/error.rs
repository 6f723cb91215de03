//! `PageError`: what a page shows when it cannot show what was asked: the login form for a
//! signed-out person, a short page with the reason otherwise. Logged once, without secrets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use crate::pages::layout;
use crate::platform::PlatformError;
use crate::session::{set_cookie, SESSION_COOKIE};

#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// No session, or the platform no longer knows it.
    #[error("signed out")]
    SignedOut,
    /// A state change without this page's CSRF token, or from another site.
    #[error("the form expired or came from another site")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

impl PageError {
    /// The answer to a script's `fetch` (the playground's): the status and the error body, never
    /// a redirect to a page.
    pub(crate) fn into_json(self) -> Response {
        let (status, code, message) = match &self {
            PageError::SignedOut => {
                (StatusCode::UNAUTHORIZED, "SIGNED_OUT", "Your session ended: log in again.".to_owned())
            }
            PageError::Csrf => (StatusCode::FORBIDDEN, "CSRF", self.to_string()),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "BAD_REQUEST", m.clone()),
            PageError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", self.to_string()),
            PageError::Platform(PlatformError::Refused { status: 401, .. }) => {
                (StatusCode::UNAUTHORIZED, "SIGNED_OUT", "Your session ended: log in again.".to_owned())
            }
            PageError::Platform(PlatformError::Refused { status, code, message }) => {
                (StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY), code.as_str(), message.clone())
            }
            PageError::Platform(e @ PlatformError::Unavailable(_)) => {
                tracing::warn!(error = %e, "the platform API did not answer");
                (StatusCode::BAD_GATEWAY, "PLATFORM_UNAVAILABLE", "The platform is unavailable right now.".to_owned())
            }
        };
        (status, axum::Json(serde_json::json!({ "err_code": code, "err_msg": message }))).into_response()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            PageError::SignedOut => return signed_out(),
            PageError::Platform(e) if e.status() == Some(401) => return signed_out(),
            PageError::Platform(PlatformError::Refused { status: 404, .. }) => (
                StatusCode::NOT_FOUND,
                "That does not exist (any more), or belongs to an organization you are not in.".to_owned(),
            ),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form expired or was sent from another site. Go back, reload the page and try again.".to_owned(),
            ),
            PageError::BadRequest(message) => (StatusCode::BAD_REQUEST, message.clone()),
            PageError::NotFound => (StatusCode::NOT_FOUND, "There is no such page.".to_owned()),
            PageError::Platform(PlatformError::Refused { status, message, .. }) => {
                (StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY), message.clone())
            }
            PageError::Platform(e @ PlatformError::Unavailable(_)) => {
                tracing::warn!(error = %e, "the platform API did not answer");
                (StatusCode::BAD_GATEWAY, "The platform is unavailable right now. Try again in a moment.".to_owned())
            }
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let page =
            layout::bare(title, html! { p role="alert" { (message) } p { a href="/" { "Back to the dashboard" } } });
        (status, crate::pages::html(page)).into_response()
    }
}

/// To the login form, forgetting the session.
fn signed_out() -> Response {
    let mut response = Redirect::to("/login").into_response();
    let (name, value) = set_cookie(SESSION_COOKIE, None, false);
    response.headers_mut().append(name, value);
    response
}
