//! The landing page, sign-up, login, logout, and picking or making an organization.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::{html, layout, local_path, Ctx};
use crate::error::PageError;
use crate::platform::PlatformError;
use crate::session::{self, cookie, set_cookie, CsrfForm, Session, CSRF_COOKIE, ORG_COOKIE, SESSION_COOKIE};
use crate::AppState;

pub(crate) async fn home(headers: HeaderMap) -> Response {
    if cookie(&headers, SESSION_COOKIE).is_some_and(|t| !t.is_empty()) {
        return Redirect::to("/keys").into_response();
    }
    html(layout::bare(
        "Speech to text you run yourself",
        html! {
            p class="lead" {
                "Aldea turns speech into text on your own machines: upload a file or stream live audio, "
                "with an API that Deepgram and OpenAI clients already speak."
            }
            p class="cta" {
                a class="button" href="/signup" { "Sign up" }
                a class="button secondary" href="/login" { "Log in" }
            }
            ul class="features" {
                li { "API keys per application, revoked in a second" }
                li { "Usage in audio minutes per day, key and model" }
                li { "A playground for files and your microphone" }
            }
        },
    ))
}

/// The double-submit token of the logged-out forms: the cookie's when there is one, else a new
/// one (set with the page).
fn form_token(
    headers: &HeaderMap,
    secure: bool,
) -> (String, Option<(axum::http::HeaderName, axum::http::HeaderValue)>) {
    match cookie(headers, CSRF_COOKIE).filter(|t| t.len() >= 32) {
        Some(token) => (token, None),
        None => {
            let token = session::random_token();
            let header = set_cookie(CSRF_COOKIE, Some(&token), secure);
            (token, Some(header))
        }
    }
}

fn with_cookie(
    status: StatusCode,
    page: Markup,
    cookie: Option<(axum::http::HeaderName, axum::http::HeaderValue)>,
) -> Response {
    let mut response = (status, html(page)).into_response();
    if let Some((name, value)) = cookie {
        response.headers_mut().append(name, value);
    }
    response
}

#[derive(Deserialize, Default)]
pub(crate) struct SignupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    org_name: String,
    #[serde(default)]
    csrf: String,
}

fn signup_page(token: &str, form: &SignupForm, error: Option<&str>) -> Markup {
    layout::bare(
        "Sign up",
        html! {
            (layout::alert(error))
            form method="post" action="/signup" class="stack" {
                input type="hidden" name="csrf" value=(token);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="email" required value=(form.email);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="new-password" minlength="8" required aria-describedby="password-hint";
                p id="password-hint" class="hint" { "At least 8 characters." }
                label for="org_name" { "Organization name" }
                input id="org_name" name="org_name" type="text" autocomplete="organization" required maxlength="200" value=(form.org_name);
                button type="submit" { "Sign up" }
            }
            p { "Already have an account? " a href="/login" { "Log in" } }
        },
    )
}

pub(crate) async fn signup_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (token, cookie) = form_token(&headers, state.config().secure_cookies);
    with_cookie(StatusCode::OK, signup_page(&token, &SignupForm::default(), None), cookie)
}

pub(crate) async fn signup(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignupForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return PageError::BadRequest("The form was incomplete.".to_owned()).into_response();
    };
    if let Err(e) =
        session::same_origin_headers(&headers).and_then(|()| session::check_double_submit(&headers, &form.csrf))
    {
        return e.into_response();
    }
    match state.platform().signup(form.email.trim(), &form.password, form.org_name.trim()).await {
        Ok(signup) => {
            let secure = state.config().secure_cookies;
            let session = Session { token: signup.token.clone(), org: Some(signup.org.id.clone()) };
            let page = match Ctx::load(&state, session).await {
                Ok(ctx) => {
                    super::keys::render(
                        &state,
                        &ctx,
                        Some(&signup.key),
                        Some("Welcome! This is your organization's first API key."),
                    )
                    .await
                }
                Err(e) => return e.into_response(),
            };
            let mut response = match page {
                Ok(page) => page,
                Err(e) => e.into_response(),
            };
            let headers = response.headers_mut();
            let (name, value) = set_cookie(SESSION_COOKIE, Some(&signup.token), secure);
            headers.append(name, value);
            let (name, value) = set_cookie(ORG_COOKIE, Some(&signup.org.id), secure);
            headers.append(name, value);
            response
        }
        Err(PlatformError::Refused { status, message, .. }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            with_cookie(status, signup_page(&form.csrf, &form, Some(&message)), None)
        }
        Err(e) => PageError::Platform(e).into_response(),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn login_page(token: &str, email: &str, error: Option<&str>) -> Markup {
    layout::bare(
        "Log in",
        html! {
            (layout::alert(error))
            form method="post" action="/login" class="stack" {
                input type="hidden" name="csrf" value=(token);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required value=(email);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
            p { "New here? " a href="/signup" { "Sign up" } }
        },
    )
}

pub(crate) async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (token, cookie) = form_token(&headers, state.config().secure_cookies);
    with_cookie(StatusCode::OK, login_page(&token, "", None), cookie)
}

pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return PageError::BadRequest("The form was incomplete.".to_owned()).into_response();
    };
    if let Err(e) =
        session::same_origin_headers(&headers).and_then(|()| session::check_double_submit(&headers, &form.csrf))
    {
        return e.into_response();
    }
    match state.platform().login(form.email.trim(), &form.password).await {
        Ok(login) => {
            let mut response = Redirect::to("/keys").into_response();
            let (name, value) = set_cookie(SESSION_COOKIE, Some(&login.token), state.config().secure_cookies);
            response.headers_mut().append(name, value);
            response
        }
        Err(PlatformError::Refused { status, message, .. }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            with_cookie(status, login_page(&form.csrf, form.email.trim(), Some(&message)), None)
        }
        Err(e) => PageError::Platform(e).into_response(),
    }
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    // Ended on the platform too; a platform that is down still lets the browser forget it.
    if let Err(e) = state.platform().logout(&session.token).await {
        tracing::warn!(error = %e, "ending the session on the platform");
    }
    let mut response = Redirect::to("/").into_response();
    let secure = state.config().secure_cookies;
    for name in [SESSION_COOKIE, ORG_COOKIE] {
        let (header, value) = set_cookie(name, None, secure);
        response.headers_mut().append(header, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct SwitchForm {
    #[serde(default)]
    org_id: String,
    #[serde(default)]
    back: Option<String>,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn switch_org(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<SwitchForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let me = state.platform().me(&session.token).await?;
    if !me.orgs.iter().any(|o| o.id == form.org_id) {
        return Err(PageError::NotFound);
    }
    let mut response = Redirect::to(&local_path(form.back.as_deref())).into_response();
    let (name, value) = set_cookie(ORG_COOKIE, Some(&form.org_id), state.config().secure_cookies);
    response.headers_mut().append(name, value);
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct NewOrgForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn create_org(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<NewOrgForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let org = state.platform().create_org(&session.token, form.name.trim()).await?;
    let mut response = Redirect::to("/members?done=org").into_response();
    let (name, value) = set_cookie(ORG_COOKIE, Some(&org.id), state.config().secure_cookies);
    response.headers_mut().append(name, value);
    Ok(response)
}
