//! Usage reports (series by day, key, model or kind; as JSON or CSV) and the request log, read from
//! the roll-ups the usage consumer keeps. Any member of an organization may read its usage.

use aldea_store::{OrgId, UsageGroup, UsageQuery, UsageRow};
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::rfc3339;
use crate::auth::Caller;
use crate::views::{seconds, RequestView, RequestsPage, UsagePoint, UsageReport, UsageTotals};
use crate::{ApiError, AppState};

const DAY: i64 = 86_400;
/// The longest range one report covers (a bit over ten years of days).
const MAX_RANGE_DAYS: i64 = 3_700;
/// Days of the default range, today included.
const DEFAULT_DAYS: i64 = 30;

/// The range and grouping of a usage report.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageParams {
    /// An RFC 3339 time or a date (`YYYY-MM-DD`, UTC); default: 30 days before `end`.
    start: Option<String>,
    /// An RFC 3339 time or a date (inclusive); default: the end of today (UTC).
    end: Option<String>,
    /// `day` (default; every day of the range, zeros included), `key`, `model` or `kind`.
    #[param(pattern = "^(day|key|model|kind)$")]
    group_by: Option<String>,
}

/// Which end of a range a date names: a bare date is its whole day, so an end date is inclusive.
#[derive(Clone, Copy)]
enum Edge {
    Start,
    End,
}

/// Unix seconds of an RFC 3339 time or a `YYYY-MM-DD` date (UTC midnight; the next midnight for an
/// end).
fn parse_time(text: &str, edge: Edge, name: &str) -> Result<i64, ApiError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        ApiError::BadRequest(format!("{name} is neither an RFC 3339 time nor a date (YYYY-MM-DD): {text:?}"))
    })?;
    let midnight = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or_default();
    Ok(match edge {
        Edge::Start => midnight,
        Edge::End => midnight + DAY,
    })
}

impl UsageParams {
    /// The query the parameters ask for: by default the last 30 days (today included) by day;
    /// times widen to whole hours.
    fn query(&self, now: i64) -> Result<UsageQuery, ApiError> {
        let group_by = UsageGroup::parse(self.group_by.as_deref().unwrap_or("day"))?;
        let end = match &self.end {
            Some(text) => parse_time(text, Edge::End, "end")?,
            None => now - now.rem_euclid(DAY) + DAY,
        };
        let start = match &self.start {
            Some(text) => parse_time(text, Edge::Start, "start")?,
            None => end - DEFAULT_DAYS * DAY,
        };
        if end <= start {
            return Err(ApiError::BadRequest("end is not after start".to_owned()));
        }
        if end - start > MAX_RANGE_DAYS * DAY {
            return Err(ApiError::BadRequest(format!("a report covers at most {MAX_RANGE_DAYS} days")));
        }
        Ok(UsageQuery::new(start, end, group_by)?)
    }
}

/// The series of a report: by day every day of the range is there (zeros included), so a chart
/// has no gaps; other groups list what was used.
async fn report(
    state: &AppState,
    caller: &Caller,
    org_id: &OrgId,
    params: &UsageParams,
) -> Result<(UsageQuery, Vec<UsageRow>), ApiError> {
    caller.org_role(state, org_id, false).await?;
    let query = params.query(aldea_store::unix_now())?;
    let rows = state.deps.usage.usage(org_id, &query).await?;
    if query.group_by != UsageGroup::Day {
        return Ok((query, rows));
    }
    let mut rows = rows.into_iter().peekable();
    let mut series = Vec::new();
    let mut day = query.start - query.start.rem_euclid(DAY);
    while day < query.end {
        let group = aldea_store::utc_day(day);
        match rows.next_if(|row| row.group == group) {
            Some(row) => series.push(row),
            None => series.push(UsageRow { group, requests: 0, streams: 0, audio_millis: 0 }),
        }
        day += DAY;
    }
    Ok((query, series))
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/usage", tag = "usage", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), UsageParams),
    responses((status = 200, description = "Audio seconds, requests and streams over the range, grouped", body = UsageReport)))]
pub(crate) async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Query(params): Query<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let (query, series) = report(&state, &caller, &org_id, &params).await?;
    let totals = series
        .iter()
        .fold((0u64, 0u64, 0i64), |(r, s, a), row| (r + row.requests, s + row.streams, a + row.audio_millis));
    let series = series
        .into_iter()
        .map(|row| UsagePoint {
            group: row.group,
            requests: row.requests,
            streams: row.streams,
            audio_seconds: seconds(row.audio_millis),
        })
        .collect();
    Ok(Json(UsageReport {
        start: rfc3339(query.start),
        end: rfc3339(query.end),
        group_by: query.group_by,
        totals: UsageTotals { requests: totals.0, streams: totals.1, audio_seconds: seconds(totals.2) },
        series,
    }))
}

/// A CSV field: quoted when it must be, and never read as a formula by a spreadsheet.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/usage.csv", tag = "usage", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), UsageParams),
    responses((status = 200, description = "The same report as CSV (`group,requests,streams,audio_seconds`)", body = String, content_type = "text/csv")))]
pub(crate) async fn usage_csv(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Query(params): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let (query, series) = report(&state, &caller, &org_id, &params).await?;
    let group_by = query.group_by.as_str();
    let mut csv = format!("{group_by},requests,streams,audio_seconds\r\n");
    for row in &series {
        csv.push_str(&format!(
            "{},{},{},{:.3}\r\n",
            csv_field(&row.group),
            row.requests,
            row.streams,
            seconds(row.audio_millis)
        ));
    }
    let day = |s: i64| aldea_store::utc_day(s);
    let filename = format!("attachment; filename=\"usage-{}-{}.csv\"", day(query.start), day(query.end - 1));
    Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (CONTENT_DISPOSITION, filename)], csv).into_response())
}

/// A page of the request log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestsParams {
    /// At most this many (default 50; a page holds 1 to 500, larger values are read as 500).
    limit: Option<u32>,
    /// The cursor of the previous page (`next_before`).
    before: Option<String>,
}

#[utoipa::path(get, path = "/v1/orgs/{org_id}/requests", tag = "usage", security(("session" = []), ("session_cookie" = []), ("manage_key" = [])), params(("org_id" = OrgId, Path, description = "The organization's id"), RequestsParams),
    responses((status = 200, description = "Uploads and streams, newest first", body = RequestsPage)))]
pub(crate) async fn requests(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<OrgId>,
    Query(params): Query<RequestsParams>,
) -> Result<Json<RequestsPage>, ApiError> {
    caller.org_role(&state, &org_id, false).await?;
    let page = state.deps.usage.requests(&org_id, params.limit.unwrap_or(50), params.before.as_deref()).await?;
    let requests = page.items.iter().map(RequestView::new).collect();
    Ok(Json(RequestsPage { requests, next_before: page.next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_to_thirty_days_and_dates_are_whole_days() {
        let now = 1_796_300_000; // 2026-12-03T12:13:20Z
        let params = |start: Option<&str>, end: Option<&str>| UsageParams {
            start: start.map(str::to_owned),
            end: end.map(str::to_owned),
            group_by: None,
        };
        let q = params(None, None).query(now).unwrap();
        assert_eq!(
            (rfc3339(q.start), rfc3339(q.end)),
            ("2026-11-04T00:00:00Z".to_owned(), "2026-12-04T00:00:00Z".to_owned())
        );
        let q = params(Some("2026-12-01"), Some("2026-12-01")).query(now).unwrap();
        assert_eq!(q.end - q.start, DAY, "an end date is inclusive");
        let q = params(Some("2026-12-01T10:30:00+02:00"), Some("2026-12-01T10:00:01Z")).query(now).unwrap();
        assert_eq!(
            (rfc3339(q.start), rfc3339(q.end)),
            ("2026-12-01T08:00:00Z".to_owned(), "2026-12-01T11:00:00Z".to_owned())
        );
        for (start, end) in
            [(Some("yesterday"), None), (Some("2026-12-02"), Some("2026-12-01")), (Some("1990-01-01"), None)]
        {
            assert!(params(start, end).query(now).is_err(), "{start:?} {end:?}");
        }
        let bad_group = UsageParams { group_by: Some("week".to_owned()), ..params(None, None) };
        assert!(bad_group.query(now).is_err());
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("tiny.en"), "tiny.en");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
