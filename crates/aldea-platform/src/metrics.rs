//! Prometheus metrics of the platform (`prometheus-client`, OpenMetrics text on `/metrics`): every
//! request counted by route template (never the ids in it), method and status, with its latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

/// The content type of `/metrics`.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Route {
    /// The route's template (`/v1/orgs/{org_id}/keys`), or `unmatched`.
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

/// Every metric of the platform, registered once.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Route, Counter>,
    latency: Family<RouteOnly, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<Route, Counter>::default();
        // 1 ms to ~4 s.
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 13))
        });
        let mut registry = Registry::with_prefix("aldea_platform");
        registry.register("http_requests", "Requests answered, by route template, method and status", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer, by route template", latency.clone());
        Metrics { registry, requests, latency }
    }
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Counts and times every request (the middleware around the routes).
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics.latency.get_or_create(&RouteOnly { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    metrics.requests.get_or_create(&Route { route, method, status: response.status().as_u16() }).inc();
    response
}

#[utoipa::path(get, path = "/metrics", tag = "probes", security(()),
    responses((status = 200, description = "OpenMetrics text exposition", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render()).into_response()
}
