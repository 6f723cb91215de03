//! Prometheus metrics of the gateway (`prometheus-client`), served as OpenMetrics text: counters
//! and gauges registered once, refusals counted by status, the usage queue's gauges set at scrape
//! time (its dead letters shown only when the queue answered).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`].
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The statuses refusals are counted by (each shown from the start, at 0).
const REFUSAL_STATUSES: [u16; 4] = [401, 402, 429, 503];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Refusal {
    status: u16,
}

/// Values read when the metrics are rendered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauges {
    pub(crate) pending_usage: usize,
    /// `None` when the queue did not answer.
    pub(crate) usage_dead_letters: Option<u64>,
}

/// Every metric of the gateway, registered once.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// The usage queue's dead letters, apart: rendered only when the queue answered.
    queue: Registry,
    pub(crate) active_streams: Gauge,
    pub(crate) streams_total: Counter,
    pub(crate) uploads_total: Counter,
    /// Requests refused before any work, by the status they got.
    refused: Family<Refusal, Counter>,
    /// Times an stt replica refused (503) or could not be reached and the next one was tried.
    pub(crate) upstream_retries: Counter,
    pub(crate) frames_relayed: Counter,
    /// Streams moved to another replica after theirs was lost.
    pub(crate) failovers: Counter,
    audio_seconds: Counter<f64, AtomicU64>,
    /// Operations the in-process limiter answered because the limits store failed (counted by
    /// `admission::WithFallback`, which holds a clone).
    pub(crate) limits_fallbacks: Counter,
    usage_pending: Gauge,
    usage_dead_letters: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            queue: Registry::default(),
            active_streams: Gauge::default(),
            streams_total: Counter::default(),
            uploads_total: Counter::default(),
            refused: Family::default(),
            upstream_retries: Counter::default(),
            frames_relayed: Counter::default(),
            failovers: Counter::default(),
            audio_seconds: Counter::default(),
            limits_fallbacks: Counter::default(),
            usage_pending: Gauge::default(),
            usage_dead_letters: Gauge::default(),
        };
        for status in REFUSAL_STATUSES {
            let _shown_at_zero = metrics.refused.get_or_create(&Refusal { status });
        }
        // Help texts get their final period, and counters their `_total` suffix, when written.
        let r = &mut metrics.registry;
        r.register("aldea_gateway_active_streams", "Streams open now", metrics.active_streams.clone());
        let counters = [
            ("aldea_gateway_streams", "Streams accepted", &metrics.streams_total),
            ("aldea_gateway_uploads", "Uploads accepted", &metrics.uploads_total),
            (
                "aldea_gateway_upstream_retries",
                "stt replicas skipped because they were full or unreachable",
                &metrics.upstream_retries,
            ),
            (
                "aldea_gateway_failovers",
                "Streams moved to another stt replica after theirs was lost",
                &metrics.failovers,
            ),
            ("aldea_gateway_frames_relayed", "WebSocket frames relayed in either direction", &metrics.frames_relayed),
            (
                "aldea_gateway_limits_fallbacks",
                "Limit checks this process's own limiter answered because the limits store failed",
                &metrics.limits_fallbacks,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        r.register("aldea_gateway_audio_seconds", "Audio seconds metered", metrics.audio_seconds.clone());
        r.register(
            "aldea_gateway_usage_pending",
            "Usage events waiting for the usage queue",
            metrics.usage_pending.clone(),
        );
        r.register("aldea_gateway_refused", "Requests refused before any work", metrics.refused.clone());
        metrics.queue.register(
            "aldea_usage_dead_letters",
            "Usage events the consumer could not record, kept in the queue's dead letters",
            metrics.usage_dead_letters.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Counts a refusal with one of [`REFUSAL_STATUSES`]; other statuses are not counted.
    pub(crate) fn count_refusal(&self, status: u16) {
        if REFUSAL_STATUSES.contains(&status) {
            self.refused.get_or_create(&Refusal { status }).inc();
        }
    }

    pub(crate) fn add_audio(&self, seconds: f64) {
        self.audio_seconds.inc_by(seconds.max(0.0));
    }

    /// Every metric as OpenMetrics text ([`CONTENT_TYPE`]), with the gauges of `gauges`.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        self.usage_pending.set(i64::try_from(gauges.pending_usage).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        if let Some(dead) = gauges.usage_dead_letters {
            self.usage_dead_letters.set(i64::try_from(dead).unwrap_or(i64::MAX));
            let _ = encode_registry(&mut out, &self.queue);
        }
        let _ = encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the operators' dashboards and the tests read, as they were before OpenMetrics.
    #[test]
    fn every_metric_keeps_its_name() {
        let metrics = Metrics::default();
        metrics.active_streams.inc();
        metrics.streams_total.inc();
        metrics.failovers.inc();
        metrics.limits_fallbacks.inc_by(5);
        metrics.add_audio(1.5);
        metrics.count_refusal(401);
        metrics.count_refusal(503);
        metrics.count_refusal(503);
        metrics.count_refusal(415);
        let text = metrics.render(&Gauges { pending_usage: 4, usage_dead_letters: Some(0) });
        for line in [
            "aldea_gateway_active_streams 1",
            "aldea_gateway_streams_total 1",
            "aldea_gateway_uploads_total 0",
            "aldea_gateway_upstream_retries_total 0",
            "aldea_gateway_failovers_total 1",
            "aldea_gateway_frames_relayed_total 0",
            "aldea_gateway_audio_seconds_total 1.5",
            "aldea_gateway_usage_pending 4",
            "aldea_gateway_limits_fallbacks_total 5",
            "aldea_usage_dead_letters 0",
            "aldea_gateway_refused_total{status=\"401\"} 1",
            "aldea_gateway_refused_total{status=\"402\"} 0",
            "aldea_gateway_refused_total{status=\"429\"} 0",
            "aldea_gateway_refused_total{status=\"503\"} 2",
            "# HELP aldea_gateway_refused Requests refused before any work.",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{line} in {text}");
        }
        assert!(!text.contains("415"), "{text}");
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        // A queue that did not answer: its gauge is left out rather than shown as 0.
        let text = metrics.render(&Gauges { pending_usage: 0, usage_dead_letters: None });
        assert!(!text.contains("aldea_usage_dead_letters"), "{text}");
        assert!(text.contains("\naldea_gateway_usage_pending 0\n") && text.ends_with("\n# EOF\n"), "{text}");
    }
}
