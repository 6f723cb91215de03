//! Members: who is in the organization with which role; owners and admins add people (by the
//! email of an existing account) and remove them; anyone may make a new organization.

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{html, layout, when, Ctx};
use crate::error::PageError;
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
        Some("added") => Some("The member was added."),
        Some("removed") => Some("The member was removed."),
        Some("org") => Some("The organization was created; it is the one shown now."),
        _ => None,
    };
    let org = ctx.org.clone();
    let members = match &org {
        Some(org) => state.platform().members(ctx.token(), &org.id).await?.members,
        None => Vec::new(),
    };
    let manages = org.as_ref().is_some_and(|o| o.manages());
    Ok(html(layout::page(
        &ctx,
        "/members",
        "Members",
        &[],
        html! {
            (layout::notice(notice))
            @if let Some(org) = &org {
                @if manages {
                    section class="card" aria-labelledby="add-title" {
                        h2 id="add-title" { "Add a member" }
                        p class="hint" { "They need an Aldea account already (they sign up themselves)." }
                        form method="post" action="/members" class="inline" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            label for="member-email" { "Member email" }
                            input id="member-email" name="email" type="email" required autocomplete="off";
                            label for="role" { "Role" }
                            select id="role" name="role" {
                                option value="member" { "member" }
                                option value="admin" { "admin" }
                                option value="owner" { "owner" }
                            }
                            button type="submit" { "Add member" }
                        }
                    }
                }
                h2 { "Members of " (org.name) }
                div class="table-wrap" role="region" aria-label="Members" tabindex="0" {
                    table {
                        thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Added" } th scope="col" { span class="visually-hidden" { "Actions" } } } }
                        tbody {
                            @for m in &members {
                                tr {
                                    th scope="row" { (m.user.email) }
                                    td { (m.role) }
                                    td { time datetime=(m.added_at) { (when(&m.added_at)) } }
                                    td class="actions" {
                                        @if manages && m.user.email != ctx.me.user.email {
                                            form method="get" action={ "/members/" (m.user.id) "/remove" } { button type="submit" class="danger" { "Remove" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p class="hint" { "Roles: owners and admins manage keys and members; members see usage and use the playground." }
            } @else {
                p { "You are not in any organization yet." }
            }
            section class="card" aria-labelledby="org-title" {
                h2 id="org-title" { "New organization" }
                form method="post" action="/orgs" class="inline" {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    label for="new-org" { "New organization name" }
                    input id="new-org" name="name" type="text" required maxlength="200";
                    button type="submit" class="secondary" { "Create organization" }
                }
            }
        },
    )))
}

#[derive(Deserialize)]
pub(crate) struct AddForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn add(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<AddForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    let role = if form.role.is_empty() { "member" } else { form.role.as_str() };
    state.platform().add_member(ctx.token(), &org.id, form.email.trim(), role).await?;
    Ok(Redirect::to("/members?done=added").into_response())
}

pub(crate) async fn confirm_remove(
    State(state): State<AppState>,
    session: Session,
    Path(user_id): Path<String>,
) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    let members = state.platform().members(ctx.token(), &org.id).await?.members;
    let member = members.iter().find(|m| m.user.id == user_id).ok_or(PageError::NotFound)?;
    Ok(html(layout::confirm(
        &ctx,
        "/members",
        "Remove a member",
        html! { "Remove " strong { (member.user.email) } " (" (member.role) ") from " (org.name) "? They lose access to its keys, usage and playground at once." },
        &format!("/members/{}/remove", member.user.id),
        "Remove",
    )))
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    session: Session,
    Path(user_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    state.platform().remove_member(ctx.token(), &org.id, &user_id).await?;
    Ok(Redirect::to("/members?done=removed").into_response())
}
