//! Usage: audio minutes and requests per day (or by key or model) over a date range, as charts
//! with the table under them, and the latest requests.

use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Days, NaiveDate, Utc};
use maud::html;
use serde::Deserialize;

use super::{html, layout, when, Ctx};
use crate::chart::{self, number};
use crate::error::PageError;
use crate::session::Session;
use crate::AppState;

/// The longest range a page shows (a chart of more days is unreadable).
const MAX_DAYS: i64 = 400;

#[derive(Deserialize, Default)]
pub(crate) struct UsageQuery {
    start: Option<String>,
    end: Option<String>,
    group_by: Option<String>,
}

/// A `YYYY-MM-DD` date from 1970 to 9999.
fn date(text: Option<&str>) -> Result<Option<NaiveDate>, PageError> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    let bad = || PageError::BadRequest(format!("{t:?} is not a date (YYYY-MM-DD, 1970 to 9999)."));
    let parsed = NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad())?;
    if !(1970..=9999).contains(&parsed.year()) {
        return Err(bad());
    }
    Ok(Some(parsed))
}

/// The range and grouping asked for: `(start, end, group_by)`, dates as `YYYY-MM-DD`.
fn range(query: &UsageQuery) -> Result<(String, String, &'static str), PageError> {
    let today = Utc::now().date_naive();
    let end = date(query.end.as_deref())?.unwrap_or(today);
    let start = match date(query.start.as_deref())? {
        Some(start) => start,
        None => end.checked_sub_days(Days::new(29)).unwrap_or(end),
    };
    if start > end {
        return Err(PageError::BadRequest("The range starts after it ends.".to_owned()));
    }
    if (end - start).num_days() > MAX_DAYS {
        return Err(PageError::BadRequest(format!("A range covers at most {MAX_DAYS} days.")));
    }
    let group_by = match query.group_by.as_deref() {
        Some("key") => "key",
        Some("model") => "model",
        _ => "day",
    };
    Ok((start.format("%Y-%m-%d").to_string(), end.format("%Y-%m-%d").to_string(), group_by))
}

/// `GET /usage.csv`: the same report as the platform's CSV, as a download.
pub(crate) async fn csv(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    let (start, end, group_by) = range(&query)?;
    let (body, disposition) = state.platform().usage_csv(ctx.token(), &org.id, &start, &end, group_by).await?;
    let disposition = disposition.unwrap_or_else(|| "attachment; filename=\"usage.csv\"".to_owned());
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let ctx = Ctx::load(&state, session).await?;
    let org = ctx.org()?;
    let (start_s, end_s, group_by) = range(&query)?;
    let platform = state.platform();
    let (report, requests) = tokio::join!(
        platform.usage(ctx.token(), &org.id, &start_s, &end_s, group_by),
        platform.requests(ctx.token(), &org.id, 20),
    );
    let (report, requests) = (report?, requests?);
    // Key names where the person may list keys; ids otherwise.
    let keys = if org.manages() { platform.keys(ctx.token(), &org.id).await.unwrap_or_default() } else { Vec::new() };
    let key_name = |id: &str| keys.iter().find(|k| k.id == id).map_or_else(|| id.to_owned(), |k| k.name.clone());
    let label = |group: &str| if group_by == "key" { key_name(group) } else { group.to_owned() };
    let minutes: Vec<(String, f64)> = report.series.iter().map(|p| (label(&p.group), p.audio_seconds / 60.0)).collect();
    let counts: Vec<(String, f64)> =
        report.series.iter().map(|p| (label(&p.group), (p.requests + p.streams) as f64)).collect();
    let empty = report.totals.requests == 0 && report.totals.streams == 0 && report.totals.audio_seconds == 0.0;
    let heading = match group_by {
        "key" => "Key",
        "model" => "Model",
        _ => "Day",
    };
    let per = match group_by {
        "key" => "per key",
        "model" => "per model",
        _ => "per day",
    };
    Ok(html(layout::page(
        &ctx,
        "/usage",
        "Usage",
        &[],
        html! {
            form method="get" action="/usage" class="inline filters" {
                label for="start" { "From" }
                input id="start" name="start" type="date" value=(start_s);
                label for="end" { "To" }
                input id="end" name="end" type="date" value=(end_s);
                label for="group_by" { "Group by" }
                select id="group_by" name="group_by" {
                    option value="day" selected[group_by == "day"] { "day" }
                    option value="key" selected[group_by == "key"] { "key" }
                    option value="model" selected[group_by == "model"] { "model" }
                }
                button type="submit" { "Show" }
                a class="button secondary" href={ "/usage.csv?start=" (start_s) "&end=" (end_s) "&group_by=" (group_by) } download { "Download CSV" }
            }
            dl class="totals" {
                div { dt { "Audio minutes" } dd { (number(report.totals.audio_seconds / 60.0)) } }
                div { dt { "Requests" } dd { (report.totals.requests) } }
                div { dt { "Streams" } dd { (report.totals.streams) } }
            }
            @if empty {
                p class="empty" { "No usage from " (start_s) " to " (end_s) " yet. Transcribe something in the " a href="/playground" { "Playground" } " or call the API with a key, and it shows here within seconds." }
            } @else {
                div class="charts" {
                    (chart::bars(&format!("Audio minutes {per}"), "minutes", &minutes))
                    (chart::bars(&format!("Requests and streams {per}"), "requests", &counts))
                }
                div class="table-wrap" role="region" aria-label="Usage table" tabindex="0" {
                    table {
                        caption { "Usage " (per) ", " (when(&report.start)) " to " (when(&report.end)) }
                        thead { tr { th scope="col" { (heading) } th scope="col" class="num" { "Requests" } th scope="col" class="num" { "Streams" } th scope="col" class="num" { "Audio minutes" } } }
                        tbody {
                            @for p in &report.series {
                                tr { th scope="row" { (label(&p.group)) } td class="num" { (p.requests) } td class="num" { (p.streams) } td class="num" { (number(p.audio_seconds / 60.0)) } }
                            }
                        }
                        tfoot { tr { th scope="row" { "Total" } td class="num" { (report.totals.requests) } td class="num" { (report.totals.streams) } td class="num" { (number(report.totals.audio_seconds / 60.0)) } } }
                    }
                }
            }
            h2 { "Recent requests" }
            @if requests.requests.is_empty() {
                p class="empty" { "No requests yet." }
            } @else {
                div class="table-wrap" role="region" aria-label="Recent requests" tabindex="0" {
                    table {
                        thead { tr { th scope="col" { "Started" } th scope="col" { "Key" } th scope="col" { "Kind" } th scope="col" { "Model" } th scope="col" class="num" { "Audio seconds" } th scope="col" class="num" { "Status" } th scope="col" { "Request id" } } }
                        tbody {
                            @for r in &requests.requests {
                                tr {
                                    td { time datetime=(r.started_at) { (when(&r.started_at)) } }
                                    td { (key_name(&r.key_id)) }
                                    td { (r.kind) }
                                    td { (r.model) }
                                    td class="num" { (number(r.audio_seconds)) }
                                    td class="num" { (r.status) }
                                    td class="mono small" { (r.request_id) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )))
}
