//! Prometheus counters and gauges of the gateway, rendered by hand in the text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Values read when the metrics are rendered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauges {
    pub(crate) pending_usage: usize,
    pub(crate) limits_fallbacks: u64,
    /// `None` when the queue did not answer.
    pub(crate) usage_dead_letters: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) active_streams: AtomicU64,
    pub(crate) streams_total: AtomicU64,
    pub(crate) uploads_total: AtomicU64,
    /// Requests refused before any work, by the status they got.
    pub(crate) refused_401: AtomicU64,
    pub(crate) refused_402: AtomicU64,
    pub(crate) refused_429: AtomicU64,
    pub(crate) refused_503: AtomicU64,
    /// Times an stt replica refused (503) or could not be reached and the next one was tried.
    pub(crate) upstream_retries: AtomicU64,
    pub(crate) frames_relayed: AtomicU64,
    /// Streams moved to another replica after theirs was lost.
    pub(crate) failovers: AtomicU64,
    /// Milliseconds of audio metered (integer, to stay atomic).
    pub(crate) audio_ms: AtomicU64,
}

impl Metrics {
    pub(crate) fn count_refusal(&self, status: u16) {
        let counter = match status {
            401 => &self.refused_401,
            402 => &self.refused_402,
            429 => &self.refused_429,
            503 => &self.refused_503,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let Gauges { pending_usage, limits_fallbacks, usage_dead_letters } = *gauges;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        line("aldea_gateway_active_streams", "gauge", "Streams open now.", get(&self.active_streams).to_string());
        line("aldea_gateway_streams_total", "counter", "Streams accepted.", get(&self.streams_total).to_string());
        line("aldea_gateway_uploads_total", "counter", "Uploads accepted.", get(&self.uploads_total).to_string());
        line(
            "aldea_gateway_upstream_retries_total",
            "counter",
            "stt replicas skipped because they were full or unreachable.",
            get(&self.upstream_retries).to_string(),
        );
        line(
            "aldea_gateway_failovers_total",
            "counter",
            "Streams moved to another stt replica after theirs was lost.",
            get(&self.failovers).to_string(),
        );
        line(
            "aldea_gateway_frames_relayed_total",
            "counter",
            "WebSocket frames relayed in either direction.",
            get(&self.frames_relayed).to_string(),
        );
        line(
            "aldea_gateway_audio_seconds_total",
            "counter",
            "Audio seconds metered.",
            format!("{:.3}", get(&self.audio_ms) as f64 / 1000.0),
        );
        line(
            "aldea_gateway_usage_pending",
            "gauge",
            "Usage events waiting for the usage queue.",
            pending_usage.to_string(),
        );
        line(
            "aldea_gateway_limits_fallbacks_total",
            "counter",
            "Limit checks this process's own limiter answered because the limits store failed.",
            limits_fallbacks.to_string(),
        );
        if let Some(dead) = usage_dead_letters {
            line(
                "aldea_usage_dead_letters",
                "gauge",
                "Usage events the consumer could not record, kept in the queue's dead letters.",
                dead.to_string(),
            );
        }
        let _ = writeln!(out, "# HELP aldea_gateway_refused_total Requests refused before any work.");
        let _ = writeln!(out, "# TYPE aldea_gateway_refused_total counter");
        for (status, counter) in
            [(401, &self.refused_401), (402, &self.refused_402), (429, &self.refused_429), (503, &self.refused_503)]
        {
            let _ = writeln!(out, "aldea_gateway_refused_total{{status=\"{status}\"}} {}", get(counter));
        }
        out
    }
}
