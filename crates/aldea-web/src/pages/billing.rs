//! Billing: the organization's plan and the credit left, in audio hours and minutes.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{html, layout, Ctx};
use crate::chart::number;
use crate::error::PageError;
use crate::session::Session;
use crate::AppState;

/// Seconds as `H h MM min` (negative after an overage).
fn duration(seconds: f64) -> String {
    let sign = if seconds < 0.0 { "−" } else { "" };
    let total = (seconds.abs() / 60.0).floor() as u64;
    format!("{sign}{} h {:02} min", total / 60, total % 60)
}

pub(crate) async fn page(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    let balance = state.platform().balance(ctx.token(), &org.id).await?;
    Ok(html(layout::page(
        &ctx,
        "/billing",
        "Billing",
        &[],
        html! {
            dl class="totals" {
                div { dt { "Plan" } dd { (balance.plan) } }
                div {
                    dt { "Credit left" }
                    dd {
                        @match balance.credit_seconds_remaining {
                            Some(s) => { (duration(s)) br; span class="hint" { (number(s)) " audio seconds" } },
                            None => "unlimited",
                        }
                    }
                }
                div { dt { "Concurrent streams" } dd { @match balance.max_streams { Some(n) => (n), None => "the gateway's default" } } }
            }
            @if balance.credit_seconds_remaining.is_some_and(|s| s <= 0.0) {
                p class="alert" role="alert" { "The credit is used up: the API answers 402 to new requests until a platform admin adds credit." }
            }
            p { "Usage is metered in seconds of audio, uploads and streams alike; a prepaid plan's credit goes down as requests finish. A platform admin adds credit with " code { "aldea credit" } " or the platform API." }
        },
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_in_hours_and_minutes() {
        assert_eq!(super::duration(3600.0), "1 h 00 min");
        assert_eq!(super::duration(3599.0), "0 h 59 min");
        assert_eq!(super::duration(-90.0), "−0 h 01 min");
    }
}
