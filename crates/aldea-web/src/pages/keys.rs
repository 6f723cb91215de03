//! API keys: the list, a new key (its secret shown once, with a copy button), rotation and
//! revocation, each behind a confirmation page.

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::{html, layout, when, Ctx};
use crate::error::PageError;
use crate::platform::Key;
use crate::session::{CsrfForm, Session};
use crate::AppState;

#[derive(Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let notice = match done.done.as_deref() {
        Some("revoked") => Some("The key was revoked: the API refuses it from now on."),
        _ => None,
    };
    render(&state, &ctx, None, notice).await
}

/// The keys page, with `new_key`'s secret when one was just made.
pub(crate) async fn render(
    state: &AppState,
    ctx: &Ctx,
    new_key: Option<&Key>,
    notice: Option<&str>,
) -> Result<Response, PageError> {
    let org = ctx.org()?;
    if !org.manages() {
        return Ok(html(layout::page(
            ctx,
            "/keys",
            "API keys",
            &[],
            html! { p { "Only the organization's owners and admins manage its API keys. Ask one of them for a key, or try the Playground." } },
        )));
    }
    let keys = state.platform().keys(ctx.token(), &org.id).await?;
    let api = state.api_base();
    Ok(html(layout::page(
        ctx,
        "/keys",
        "API keys",
        &[],
        html! {
            (layout::notice(notice))
            @if let Some(key) = new_key {
                @if let Some(secret) = &key.key {
                    section class="card new-key" aria-labelledby="new-key-title" {
                        h2 id="new-key-title" { "Your new key “" (key.name) "”" }
                        p { "Copy it now: it is not shown again. Keep it out of web pages and source code." }
                        div class="copy-row" {
                            label for="new-key" class="visually-hidden" { "New API key" }
                            input id="new-key" type="text" readonly value=(secret) class="mono" spellcheck="false" autocomplete="off";
                            button type="button" data-copy="new-key" { "Copy" }
                            span class="copy-status" role="status" {}
                        }
                        p class="hint" { "Try it:" }
                        pre class="code" tabindex="0" { code { "curl -X POST '" (api) "/v1/listen' \\\n  -H 'Authorization: Token " (secret) "' \\\n  -H 'Content-Type: audio/wav' --data-binary @audio.wav" } }
                    }
                }
            }
            section aria-labelledby="create-title" class="card" {
                h2 id="create-title" { "Create a key" }
                form method="post" action="/keys" class="inline" {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    label for="key-name" { "Key name" }
                    input id="key-name" name="name" type="text" maxlength="100" placeholder="optional, e.g. mobile-app";
                    button type="submit" { "Create key" }
                }
            }
            h2 { "Keys of " (org.name) }
            @if keys.is_empty() {
                p { "No keys yet." }
            } @else {
                div class="table-wrap" role="region" aria-label="Keys" tabindex="0" {
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Key" } th scope="col" { "Scopes" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "Status" } th scope="col" { span class="visually-hidden" { "Actions" } } } }
                        tbody {
                            @for key in &keys { (row(key)) }
                        }
                    }
                }
            }
        },
    )))
}

fn row(key: &Key) -> Markup {
    let status = if key.revoked_at.is_some() {
        "revoked"
    } else if key
        .expires_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t < chrono::Utc::now())
    {
        "expired"
    } else {
        "active"
    };
    html! {
        tr {
            th scope="row" { (key.name) @if key.system { " " span class="tag" { "dashboard" } } }
            td class="mono" { (key.prefix) "…" }
            td { (key.scopes.join(", ")) }
            td { time datetime=(key.created_at) { (when(&key.created_at)) } }
            td { @match &key.last_used_at { Some(t) => time datetime=(t) { (when(t)) }, None => span class="muted" { "never" } } }
            td { @match &key.expires_at { Some(t) => time datetime=(t) { (when(t)) }, None => span class="muted" { "never" } } }
            td {
                span class={ "status " (status) } { (status) }
                @if let (None, Some(t)) = (&key.revoked_at, &key.previous_key_expires_at) {
                    br; span class="hint" { "old secret until " (when(t)) }
                }
            }
            td class="actions" {
                @if key.revoked_at.is_none() {
                    @if !key.system {
                        form method="get" action={ "/keys/" (key.id) "/rotate" } { button type="submit" class="secondary" { "Rotate" } }
                    }
                    form method="get" action={ "/keys/" (key.id) "/revoke" } { button type="submit" class="danger" { "Revoke" } }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct NewKeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<NewKeyForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    let name = form.name.trim();
    let key = state.platform().create_key(ctx.token(), &org.id, (!name.is_empty()).then_some(name)).await?;
    render(&state, &ctx, Some(&key), None).await
}

/// The key named in a confirmation, looked up in the organization's list.
async fn find(state: &AppState, ctx: &Ctx, key_id: &str) -> Result<Key, PageError> {
    let org = ctx.org()?;
    let keys = state.platform().keys(ctx.token(), &org.id).await?;
    keys.into_iter().find(|k| k.id == key_id).ok_or(PageError::NotFound)
}

pub(crate) async fn confirm_revoke(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let key = find(&state, &ctx, &key_id).await?;
    Ok(html(layout::confirm(
        &ctx,
        "/keys",
        "Revoke a key",
        html! { "Revoke “" strong { (key.name) } "” (" span class="mono" { (key.prefix) "…" } ")? Requests with it are refused within a second, and its open streams close. This cannot be undone." },
        &format!("/keys/{}/revoke", key.id),
        "Revoke",
    )))
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    state.platform().revoke_key(ctx.token(), &org.id, &key_id).await?;
    Ok(Redirect::to("/keys?done=revoked").into_response())
}

pub(crate) async fn confirm_rotate(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let key = find(&state, &ctx, &key_id).await?;
    Ok(html(layout::page(
        &ctx,
        "/keys",
        "Rotate a key",
        &[],
        html! {
            p { "Make a new secret for “" strong { (key.name) } "” (" span class="mono" { (key.prefix) "…" } "). Its name, scopes and limits stay." }
            form method="post" action={ "/keys/" (key.id) "/rotate" } class="stack" {
                input type="hidden" name="csrf" value=(ctx.csrf);
                label for="grace" { "The old secret keeps working for" }
                select id="grace" name="grace_seconds" {
                    option value="0" { "no time: stop it now" }
                    option value="3600" selected { "1 hour" }
                    option value="86400" { "24 hours" }
                    option value="604800" { "7 days" }
                }
                div class="inline" {
                    button type="submit" { "Rotate" }
                    a class="button secondary" href="/keys" { "Cancel" }
                }
            }
        },
    )))
}

#[derive(Deserialize)]
pub(crate) struct RotateForm {
    #[serde(default)]
    grace_seconds: u64,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn rotate(
    State(state): State<AppState>,
    session: Session,
    Path(key_id): Path<String>,
    Form(form): Form<RotateForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    let key = state.platform().rotate_key(ctx.token(), &org.id, &key_id, form.grace_seconds.min(30 * 86400)).await?;
    render(&state, &ctx, Some(&key), Some("The key was rotated.")).await
}
