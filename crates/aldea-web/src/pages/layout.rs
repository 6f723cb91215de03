//! The page frame: head (stylesheet, scripts, CSRF meta), the header with the navigation, the
//! organization switcher and log out, and the main landmark.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::Ctx;
use crate::assets;

/// The navigation's entries: (path, accessible name).
pub(crate) const NAV: &[(&str, &str)] = &[
    ("/keys", "API keys"),
    ("/usage", "Usage"),
    ("/playground", "Playground"),
    ("/members", "Members"),
    ("/billing", "Billing"),
    ("/docs", "Docs"),
];

fn head(title: &str, csrf: Option<&str>, scripts: &[&str]) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Aldea" }
            link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
            link rel="stylesheet" href=(assets::url("app.css"));
            @if let Some(csrf) = csrf { meta name="csrf-token" content=(csrf); }
            script src=(assets::url("app.js")) defer {}
            @for script in scripts { script src=(assets::url(script)) defer {} }
        }
    }
}

/// A signed-in page: `active` is the navigation entry's path.
pub(crate) fn page(ctx: &Ctx, active: &str, title: &str, scripts: &[&str], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(&ctx.csrf), scripts))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    div class="bar" {
                        a class="brand" href="/keys" { (logo()) span { "Aldea" } }
                        nav aria-label="Main" {
                            ul {
                                @for (path, name) in NAV {
                                    li { a href=(path) aria-current=[(*path == active).then_some("page")] { (name) } }
                                }
                            }
                        }
                        div class="account" {
                            @if ctx.me.orgs.len() > 1 {
                                form method="post" action="/org" class="org-switch" {
                                    input type="hidden" name="csrf" value=(ctx.csrf);
                                    input type="hidden" name="back" value=(active);
                                    label for="org-switch" { "Organization" }
                                    select id="org-switch" name="org_id" {
                                        @for org in &ctx.me.orgs {
                                            option value=(org.id) selected[ctx.org.as_ref().is_some_and(|o| o.id == org.id)] { (org.name) }
                                        }
                                    }
                                    button type="submit" class="secondary" { "Switch" }
                                }
                            } @else if let Some(org) = &ctx.org {
                                span class="org-name" title="Organization" { (org.name) }
                            }
                            span class="email" { (ctx.me.user.email) }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                button type="submit" class="secondary" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page outside the session (landing, sign-up, login, errors).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None, &[]))
            body class="bare" {
                header class="top" {
                    div class="bar" { a class="brand" href="/" { (logo()) span { "Aldea" } } }
                }
                main id="main" class="narrow" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The brand mark: a small waveform (decorative).
fn logo() -> Markup {
    PreEscaped(
        r##"<svg aria-hidden="true" focusable="false" width="24" height="24" viewBox="0 0 24 24"><rect x="2" y="9" width="3" height="6" rx="1.5" fill="currentColor"/><rect x="7" y="5" width="3" height="14" rx="1.5" fill="currentColor"/><rect x="12" y="2" width="3" height="20" rx="1.5" fill="currentColor"/><rect x="17" y="7" width="3" height="10" rx="1.5" fill="currentColor"/></svg>"##
            .to_owned(),
    )
}

/// A one-line notice (`role=status`) above a page's content.
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! { @if let Some(text) = text { p class="notice" role="status" { (text) } } }
}

/// A form's error (`role=alert`).
pub(crate) fn alert(text: Option<&str>) -> Markup {
    html! { @if let Some(text) = text { p class="alert" role="alert" { (text) } } }
}

/// A confirmation page: the question, then a form that POSTs to `action` with the CSRF token, its
/// (danger) button named `button`, and a Cancel link back to `active`.
pub(crate) fn confirm(ctx: &Ctx, active: &str, title: &str, question: Markup, action: &str, button: &str) -> Markup {
    page(
        ctx,
        active,
        title,
        &[],
        html! {
            p { (question) }
            form method="post" action=(action) class="inline" {
                input type="hidden" name="csrf" value=(ctx.csrf);
                button type="submit" class="danger" { (button) }
                a class="button secondary" href=(active) { "Cancel" }
            }
        },
    )
}
