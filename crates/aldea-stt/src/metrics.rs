//! Prometheus metrics of the service, rendered in the text exposition format. Counters, gauges and
//! fixed-bucket histograms on atomics: recording never locks and never allocates.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A histogram with fixed upper bounds (seconds or counts).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in millionths.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

const LATENCY_BOUNDS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];
const RTF_BOUNDS: &[f64] = &[0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0];
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if value <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Mean of the observed values (0 before any).
    pub fn mean(&self) -> f64 {
        let count = self.count();
        if count == 0 {
            return 0.0;
        }
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6 / count as f64
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Every metric of the stt service.
#[derive(Debug)]
pub struct Metrics {
    pub active_streams: AtomicI64,
    pub active_uploads: AtomicI64,
    /// Uploads waiting for a slot.
    pub queued_uploads: AtomicI64,
    pub streams_total: AtomicU64,
    pub streams_rejected_total: AtomicU64,
    pub uploads_total: AtomicU64,
    pub uploads_rejected_total: AtomicU64,
    /// Audio received, in millionths of a second, by kind.
    stream_audio_micros: AtomicU64,
    upload_audio_micros: AtomicU64,
    /// Processing time / audio duration of each upload.
    pub upload_rtf: Histogram,
    /// Wall time from an endpoint (or Finalize) to its final.
    pub final_latency: Histogram,
    /// Queue wait plus model time of a stream's window.
    pub stream_window_seconds: Histogram,
    pub upload_window_seconds: Histogram,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            active_streams: AtomicI64::new(0),
            active_uploads: AtomicI64::new(0),
            queued_uploads: AtomicI64::new(0),
            streams_total: AtomicU64::new(0),
            streams_rejected_total: AtomicU64::new(0),
            uploads_total: AtomicU64::new(0),
            uploads_rejected_total: AtomicU64::new(0),
            stream_audio_micros: AtomicU64::new(0),
            upload_audio_micros: AtomicU64::new(0),
            upload_rtf: Histogram::new(RTF_BOUNDS),
            final_latency: Histogram::new(LATENCY_BOUNDS),
            stream_window_seconds: Histogram::new(LATENCY_BOUNDS),
            upload_window_seconds: Histogram::new(LATENCY_BOUNDS),
            batch_size: Histogram::new(BATCH_BOUNDS),
            batch_seconds: Histogram::new(LATENCY_BOUNDS),
        }
    }
}

/// Gauges read from the live state at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub free_stream_slots: usize,
    pub queue_depth: usize,
    pub ready: bool,
}

impl Metrics {
    /// Mean windows per batched model call so far.
    pub fn batch_size_mean(&self) -> f64 {
        self.batch_size.mean()
    }

    pub fn add_stream_audio(&self, seconds: f64) {
        self.stream_audio_micros.fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn add_upload_audio(&self, seconds: f64) {
        self.upload_audio_micros.fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self, snapshot: Snapshot) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        let counter = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        gauge(
            &mut out,
            "aldea_stt_ready",
            "1 when the model is loaded and warm.",
            u8::from(snapshot.ready).to_string(),
        );
        gauge(
            &mut out,
            "aldea_stt_active_streams",
            "Streams being recognized.",
            self.active_streams.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "aldea_stt_active_uploads",
            "Uploads being transcribed.",
            self.active_uploads.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "aldea_stt_queued_uploads",
            "Uploads waiting for a slot.",
            self.queued_uploads.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "aldea_stt_free_stream_slots",
            "Streams this replica still admits.",
            snapshot.free_stream_slots.to_string(),
        );
        gauge(&mut out, "aldea_stt_queue_depth", "Windows waiting for the model.", snapshot.queue_depth.to_string());
        counter(
            &mut out,
            "aldea_stt_streams_total",
            "Streams accepted.",
            self.streams_total.load(Ordering::Relaxed).to_string(),
        );
        counter(
            &mut out,
            "aldea_stt_streams_rejected_total",
            "Streams refused for capacity (503).",
            self.streams_rejected_total.load(Ordering::Relaxed).to_string(),
        );
        counter(
            &mut out,
            "aldea_stt_uploads_total",
            "Uploads accepted.",
            self.uploads_total.load(Ordering::Relaxed).to_string(),
        );
        counter(
            &mut out,
            "aldea_stt_uploads_rejected_total",
            "Uploads refused for capacity (503).",
            self.uploads_rejected_total.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP aldea_stt_audio_seconds_total Seconds of audio received.\n# TYPE aldea_stt_audio_seconds_total counter"
        );
        let _ = writeln!(
            out,
            "aldea_stt_audio_seconds_total{{kind=\"stream\"}} {}",
            self.stream_audio_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "aldea_stt_audio_seconds_total{{kind=\"upload\"}} {}",
            self.upload_audio_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        self.upload_rtf.render(&mut out, "aldea_stt_upload_rtf", "Processing time over audio duration per upload.");
        self.final_latency.render(
            &mut out,
            "aldea_stt_final_latency_seconds",
            "Wall time from an endpoint or Finalize to its final result.",
        );
        self.stream_window_seconds.render(
            &mut out,
            "aldea_stt_stream_window_seconds",
            "Queue wait plus model time of a stream's window.",
        );
        self.upload_window_seconds.render(
            &mut out,
            "aldea_stt_upload_window_seconds",
            "Queue wait plus model time of an upload's window.",
        );
        self.batch_size.render(&mut out, "aldea_stt_batch_size", "Windows per batched model call.");
        self.batch_seconds.render(&mut out, "aldea_stt_batch_seconds", "Model time per batch.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.final_latency.observe(0.25);
        metrics.final_latency.observe(2.5);
        let text = metrics.render(Snapshot { free_stream_slots: 3, queue_depth: 1, ready: true });
        assert!(text.contains("aldea_stt_final_latency_seconds_bucket{le=\"0.3\"} 1\n"));
        assert!(text.contains("aldea_stt_final_latency_seconds_bucket{le=\"3\"} 2\n"));
        assert!(text.contains("aldea_stt_final_latency_seconds_count 2\n"));
        assert!(text.contains("aldea_stt_free_stream_slots 3\n"));
        assert!(text.contains("aldea_stt_ready 1\n"));
    }
}
