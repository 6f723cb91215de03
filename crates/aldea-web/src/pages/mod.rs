//! The dashboard's pages. Each handler asks the platform for what it shows (as the signed-in
//! person) and renders it with `layout`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::Markup;

use crate::error::PageError;
use crate::platform::{Me, Org};
use crate::session::Session;
use crate::AppState;

pub(crate) mod auth;
pub(crate) mod billing;
pub(crate) mod keys;
pub(crate) mod layout;
pub(crate) mod members;
pub(crate) mod playground;
pub(crate) mod usage;

/// What every signed-in page knows: who, in which organization, and the CSRF token of its forms.
pub(crate) struct Ctx {
    pub(crate) session: Session,
    pub(crate) me: Me,
    /// The organization picked (the cookie's, else the first); none when the person is in none.
    pub(crate) org: Option<Org>,
    pub(crate) csrf: String,
}

impl Ctx {
    pub(crate) async fn load(state: &AppState, session: Session) -> Result<Ctx, PageError> {
        let me = state.platform().me(&session.token).await?;
        let org = session
            .org
            .as_deref()
            .and_then(|id| me.orgs.iter().find(|o| o.id == id))
            .or_else(|| me.orgs.first())
            .cloned();
        let csrf = session.csrf();
        Ok(Ctx { session, me, org, csrf })
    }

    /// The organization picked, or the page that says there is none.
    pub(crate) fn org(&self) -> Result<&Org, PageError> {
        self.org.as_ref().ok_or_else(|| {
            PageError::BadRequest("You are not in any organization: create one on the Members page.".to_owned())
        })
    }

    pub(crate) fn token(&self) -> &str {
        &self.session.token
    }
}

pub(crate) fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    if state.platform().live().await {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the platform API does not answer").into_response()
    }
}

pub(crate) async fn not_found() -> PageError {
    PageError::NotFound
}

/// An RFC 3339 time as people read it: `2026-12-04 21:40 UTC`.
pub(crate) fn when(rfc3339: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => rfc3339.to_owned(),
    }
}

/// A redirect target from a form: one of the navigation's pages, else `/keys`.
pub(crate) fn local_path(back: Option<&str>) -> String {
    match back {
        Some(path) if layout::NAV.iter().any(|(p, _)| *p == path) => path.to_owned(),
        _ => "/keys".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc_minutes() {
        assert_eq!(super::when("2026-12-04T22:40:05+01:00"), "2026-12-04 21:40 UTC");
        assert_eq!(super::when("not a time"), "not a time");
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(super::local_path(Some("/usage")), "/usage");
        assert_eq!(super::local_path(Some("/\t/evil.example")), "/keys");
        assert_eq!(super::local_path(Some("//evil.example")), "/keys");
        assert_eq!(super::local_path(Some("https://evil.example")), "/keys");
        assert_eq!(super::local_path(None), "/keys");
    }
}
