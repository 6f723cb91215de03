//! Prometheus metrics of the service (`prometheus-client`), served as OpenMetrics text. Counters and
//! gauges are atomics; the live gauges (`ready`, free slots, queue depth, the GPU's memory and
//! utilisation) are set at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const LATENCY_BOUNDS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];
const RTF_BOUNDS: &[f64] = &[0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0];
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AudioKind {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GpuLabels {
    gpu: String,
    name: String,
}

/// What the accelerator's runtime tells of the device the model runs on, read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReading {
    /// The device's index as the runtime numbers it.
    pub index: u32,
    pub name: String,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// The share of the last sample period in which a kernel ran (0 to 1), where the runtime tells.
    pub utilization: Option<f64>,
}

/// A source of [`DeviceReading`]s (NVML for NVIDIA GPUs, chosen by the binary).
pub trait DeviceMonitor: Send + Sync {
    fn read(&self) -> Vec<DeviceReading>;
}

/// Every metric of the stt service, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub active_streams: Gauge<i64, AtomicI64>,
    pub active_uploads: Gauge<i64, AtomicI64>,
    /// Uploads waiting for a slot.
    pub queued_uploads: Gauge<i64, AtomicI64>,
    pub streams_total: Counter,
    pub streams_rejected_total: Counter,
    pub uploads_total: Counter,
    pub uploads_rejected_total: Counter,
    /// Audio received, by kind: the family's two counters, taken once (a stream adds to it per
    /// audio frame).
    stream_audio_seconds: Counter<f64, AtomicU64>,
    upload_audio_seconds: Counter<f64, AtomicU64>,
    /// Processing time / audio duration of each upload.
    pub upload_rtf: Histogram,
    /// Wall time from an endpoint (or Finalize) to its final.
    pub final_latency: Histogram,
    /// Queue wait plus model time of a stream's window.
    pub stream_window_seconds: Histogram,
    pub upload_window_seconds: Histogram,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
    ready: Gauge<i64, AtomicI64>,
    free_stream_slots: Gauge<i64, AtomicI64>,
    queue_depth: Gauge<i64, AtomicI64>,
    gpu_memory_used: Family<GpuLabels, Gauge<i64, AtomicI64>>,
    gpu_memory_total: Family<GpuLabels, Gauge<i64, AtomicI64>>,
    gpu_utilization: Family<GpuLabels, Gauge<f64, AtomicU64>>,
    device_monitor: OnceLock<Arc<dyn DeviceMonitor>>,
}

impl std::fmt::Debug for dyn DeviceMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceMonitor")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram = |bounds: &[f64]| Histogram::new(bounds.iter().copied());
        let audio_seconds = Family::<AudioKind, Counter<f64, AtomicU64>>::default();
        let stream_audio_seconds = audio_seconds.get_or_create(&AudioKind { kind: "stream" }).clone();
        let upload_audio_seconds = audio_seconds.get_or_create(&AudioKind { kind: "upload" }).clone();
        let mut metrics = Metrics {
            registry: Registry::default(),
            active_streams: Gauge::default(),
            active_uploads: Gauge::default(),
            queued_uploads: Gauge::default(),
            streams_total: Counter::default(),
            streams_rejected_total: Counter::default(),
            uploads_total: Counter::default(),
            uploads_rejected_total: Counter::default(),
            stream_audio_seconds,
            upload_audio_seconds,
            upload_rtf: histogram(RTF_BOUNDS),
            final_latency: histogram(LATENCY_BOUNDS),
            stream_window_seconds: histogram(LATENCY_BOUNDS),
            upload_window_seconds: histogram(LATENCY_BOUNDS),
            batch_size: histogram(BATCH_BOUNDS),
            batch_seconds: histogram(LATENCY_BOUNDS),
            ready: Gauge::default(),
            free_stream_slots: Gauge::default(),
            queue_depth: Gauge::default(),
            gpu_memory_used: Family::default(),
            gpu_memory_total: Family::default(),
            gpu_utilization: Family::default(),
            device_monitor: OnceLock::new(),
        };
        let r = &mut metrics.registry;
        r.register("aldea_stt_ready", "1 when the model is loaded and warm", metrics.ready.clone());
        r.register("aldea_stt_active_streams", "Streams being recognized", metrics.active_streams.clone());
        r.register("aldea_stt_active_uploads", "Uploads being transcribed", metrics.active_uploads.clone());
        r.register("aldea_stt_queued_uploads", "Uploads waiting for a slot", metrics.queued_uploads.clone());
        r.register(
            "aldea_stt_free_stream_slots",
            "Streams this replica still admits",
            metrics.free_stream_slots.clone(),
        );
        r.register("aldea_stt_queue_depth", "Windows waiting for the model", metrics.queue_depth.clone());
        // Counters are written with the `_total` suffix.
        r.register("aldea_stt_streams", "Streams accepted", metrics.streams_total.clone());
        r.register(
            "aldea_stt_streams_rejected",
            "Streams refused for capacity (503)",
            metrics.streams_rejected_total.clone(),
        );
        r.register("aldea_stt_uploads", "Uploads accepted", metrics.uploads_total.clone());
        r.register(
            "aldea_stt_uploads_rejected",
            "Uploads refused for capacity (503)",
            metrics.uploads_rejected_total.clone(),
        );
        r.register("aldea_stt_audio_seconds", "Seconds of audio received", audio_seconds);
        r.register(
            "aldea_stt_upload_rtf",
            "Processing time over audio duration per upload",
            metrics.upload_rtf.clone(),
        );
        r.register(
            "aldea_stt_final_latency_seconds",
            "Wall time from an endpoint or Finalize to its final result",
            metrics.final_latency.clone(),
        );
        r.register(
            "aldea_stt_stream_window_seconds",
            "Queue wait plus model time of a stream's window",
            metrics.stream_window_seconds.clone(),
        );
        r.register(
            "aldea_stt_upload_window_seconds",
            "Queue wait plus model time of an upload's window",
            metrics.upload_window_seconds.clone(),
        );
        r.register("aldea_stt_batch_size", "Windows per batched model call", metrics.batch_size.clone());
        r.register("aldea_stt_batch_seconds", "Model time per batch", metrics.batch_seconds.clone());
        r.register(
            "aldea_stt_gpu_memory_used_bytes",
            "Memory in use on the GPU the model runs on (every process's)",
            metrics.gpu_memory_used.clone(),
        );
        r.register("aldea_stt_gpu_memory_total_bytes", "Memory of the GPU", metrics.gpu_memory_total.clone());
        r.register(
            "aldea_stt_gpu_utilization_ratio",
            "Share of the last sample period in which the GPU ran a kernel",
            metrics.gpu_utilization.clone(),
        );
        metrics
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
    pub fn add_stream_audio(&self, seconds: f64) {
        self.stream_audio_seconds.inc_by(seconds.max(0.0));
    }

    pub fn add_upload_audio(&self, seconds: f64) {
        self.upload_audio_seconds.inc_by(seconds.max(0.0));
    }

    /// Reads the device the model runs on at every scrape (set once; later calls are ignored).
    pub fn set_device_monitor(&self, monitor: Arc<dyn DeviceMonitor>) {
        let _ = self.device_monitor.set(monitor);
    }

    /// Every metric as OpenMetrics text ([`CONTENT_TYPE`]), with the live gauges of `snapshot`.
    pub fn render(&self, snapshot: Snapshot) -> String {
        if let Some(monitor) = self.device_monitor.get() {
            for reading in monitor.read() {
                let labels = GpuLabels { gpu: reading.index.to_string(), name: reading.name };
                let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
                self.gpu_memory_used.get_or_create(&labels).set(bytes(reading.memory_used_bytes));
                self.gpu_memory_total.get_or_create(&labels).set(bytes(reading.memory_total_bytes));
                if let Some(utilization) = reading.utilization {
                    self.gpu_utilization.get_or_create(&labels).set(utilization);
                }
            }
        }
        self.ready.set(i64::from(snapshot.ready));
        self.free_stream_slots.set(i64::try_from(snapshot.free_stream_slots).unwrap_or(i64::MAX));
        self.queue_depth.set(i64::try_from(snapshot.queue_depth).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The `_sum / _count` of a histogram in rendered metrics text (benchmarks read means this way).
pub fn mean_of(text: &str, histogram: &str) -> Option<f64> {
    let value = |suffix: &str| {
        let prefix = format!("{histogram}{suffix} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse::<f64>().ok())
    };
    let (sum, count) = (value("_sum")?, value("_count")?);
    (count > 0.0).then(|| sum / count)
}

/// The `_count` of a histogram in rendered metrics text.
pub fn count_of(text: &str, histogram: &str) -> Option<u64> {
    let prefix = format!("{histogram}_count ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedGpu;

    impl DeviceMonitor for FixedGpu {
        fn read(&self) -> Vec<DeviceReading> {
            vec![DeviceReading {
                index: 1,
                name: "Test GPU".to_owned(),
                memory_used_bytes: 3 << 30,
                memory_total_bytes: 80 << 30,
                utilization: Some(0.42),
            }]
        }
    }

    #[test]
    fn a_device_monitor_is_read_at_every_scrape() {
        let metrics = Metrics::default();
        let snapshot = Snapshot { free_stream_slots: 1, queue_depth: 0, ready: true };
        assert!(!metrics.render(snapshot).contains("aldea_stt_gpu_memory_used_bytes{"));
        metrics.set_device_monitor(Arc::new(FixedGpu));
        let text = metrics.render(snapshot);
        assert!(text.contains("aldea_stt_gpu_memory_used_bytes{gpu=\"1\",name=\"Test GPU\"} 3221225472\n"), "{text}");
        assert!(text.contains("aldea_stt_gpu_memory_total_bytes{gpu=\"1\",name=\"Test GPU\"} 85899345920\n"), "{text}");
        assert!(text.contains("aldea_stt_gpu_utilization_ratio{gpu=\"1\",name=\"Test GPU\"} 0.42\n"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.final_latency.observe(0.25);
        metrics.final_latency.observe(2.5);
        metrics.streams_rejected_total.inc();
        metrics.add_upload_audio(1.5);
        let text = metrics.render(Snapshot { free_stream_slots: 3, queue_depth: 1, ready: true });
        assert!(text.contains("aldea_stt_final_latency_seconds_bucket{le=\"0.3\"} 1\n"), "{text}");
        assert!(text.contains("aldea_stt_final_latency_seconds_bucket{le=\"3.0\"} 2\n"), "{text}");
        assert!(text.contains("aldea_stt_final_latency_seconds_count 2\n"), "{text}");
        assert!(text.contains("aldea_stt_free_stream_slots 3\n"), "{text}");
        assert!(text.contains("aldea_stt_ready 1\n"), "{text}");
        assert!(text.contains("aldea_stt_streams_rejected_total 1\n"), "{text}");
        assert!(text.contains("aldea_stt_audio_seconds_total{kind=\"upload\"} 1.5\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(count_of(&text, "aldea_stt_final_latency_seconds"), Some(2));
        assert!((mean_of(&text, "aldea_stt_final_latency_seconds").unwrap() - 1.375).abs() < 1e-9);
    }
}
