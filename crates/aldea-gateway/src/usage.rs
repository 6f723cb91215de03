//! Usage metering: events go onto the usage queue at once; while the queue is unreachable they wait
//! in a bounded buffer and are retried in order. Each event keeps its `event_id`, so a retry that
//! reaches the queue twice is still counted once by the consumer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aldea_store::{UsageEvent, UsageQueue};
use tokio_util::sync::CancellationToken;

/// Events kept while the queue is down (about 1 KB each).
const MAX_PENDING: usize = 100_000;
const RETRY_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct UsageSink {
    queue: Arc<dyn UsageQueue>,
    pending: Arc<Mutex<VecDeque<UsageEvent>>>,
    /// Serializes publishing so buffered events go out before newer ones.
    publishing: tokio::sync::Mutex<()>,
}

impl UsageSink {
    pub(crate) fn new(queue: Arc<dyn UsageQueue>) -> UsageSink {
        UsageSink { queue, pending: Arc::default(), publishing: tokio::sync::Mutex::new(()) }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Publishes `event`, or keeps it for the retry loop when the queue is unreachable.
    pub(crate) async fn record(&self, event: UsageEvent) {
        let _turn = self.publishing.lock().await;
        let backlog = self.pending() > 0;
        if !backlog {
            match self.queue.publish(&event).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, event_id = %event.event_id, "usage queue unavailable; buffering"),
            }
        }
        if let Ok(mut pending) = self.pending.lock() {
            if pending.len() >= MAX_PENDING {
                tracing::error!(event_id = %event.event_id, "usage buffer full; dropping the oldest event");
                pending.pop_front();
            }
            pending.push_back(event);
        }
    }

    /// Sends what is buffered, oldest first, until the queue fails again.
    pub(crate) async fn flush(&self) {
        let _turn = self.publishing.lock().await;
        loop {
            let Some(event) = self.pending.lock().ok().and_then(|p| p.front().cloned()) else { return };
            if self.queue.publish(&event).await.is_err() {
                return;
            }
            if let Ok(mut pending) = self.pending.lock() {
                pending.pop_front();
            }
        }
    }

    pub(crate) fn spawn_retry(self: &Arc<Self>, stop: CancellationToken) {
        let sink = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                }
                if sink.pending() > 0 {
                    sink.flush().await;
                }
            }
        });
    }
}

/// The events of one request: deltas of audio seconds, numbered from 0.
pub(crate) struct Meter {
    pub(crate) request_id: String,
    pub(crate) org_id: String,
    pub(crate) key_id: String,
    pub(crate) kind: aldea_store::UsageKind,
    pub(crate) model: String,
    /// When the interval of the next event began (Unix ms).
    last_at: i64,
    seq: u32,
    reported: f64,
}

impl Meter {
    pub(crate) fn new(
        request_id: &str,
        grant: &aldea_store::KeyGrant,
        kind: aldea_store::UsageKind,
        model: &str,
    ) -> Meter {
        let now = unix_ms();
        Meter {
            request_id: request_id.to_owned(),
            org_id: grant.org_id.to_string(),
            key_id: grant.key_id.to_string(),
            kind,
            model: model.to_owned(),
            last_at: now,
            seq: 0,
            reported: 0.0,
        }
    }

    /// The next event given the total audio seconds so far (`None` for an interval with no new audio).
    pub(crate) fn event(&mut self, total_seconds: f64, is_final: bool, status: u16) -> Option<UsageEvent> {
        let delta = (total_seconds - self.reported).max(0.0);
        if delta <= 0.0 && !is_final {
            return None;
        }
        let now = unix_ms();
        let event = UsageEvent {
            event_id: UsageEvent::event_id(&self.request_id, self.seq),
            request_id: self.request_id.clone(),
            seq: self.seq,
            org_id: self.org_id.clone(),
            key_id: self.key_id.clone(),
            kind: self.kind,
            model: self.model.clone(),
            audio_seconds: (delta * 1000.0).round() / 1000.0,
            started_at: self.last_at,
            ended_at: now,
            is_final,
            status,
        };
        self.seq += 1;
        self.reported += delta;
        self.last_at = now;
        Some(event)
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_to_the_total_and_ids_are_distinct() {
        let grant = aldea_store::KeyGrant {
            org_id: "o".into(),
            key_id: "k".into(),
            scopes: vec![aldea_store::Scope::Listen],
            limits: Default::default(),
            credit_ok: true,
            expires_at: None,
        };
        let mut meter = Meter::new("r", &grant, aldea_store::UsageKind::Stream, "tiny.en");
        let a = meter.event(60.5, false, 0).unwrap();
        assert!(meter.event(60.5, false, 0).is_none());
        let b = meter.event(90.25, false, 0).unwrap();
        let c = meter.event(90.25, true, 1000).unwrap();
        assert_eq!([a.seq, b.seq, c.seq], [0, 1, 2]);
        assert_eq!([a.event_id.as_str(), b.event_id.as_str(), c.event_id.as_str()], ["r:0", "r:1", "r:2"]);
        assert!((a.audio_seconds + b.audio_seconds + c.audio_seconds - 90.25).abs() < 1e-9);
        assert!(c.is_final && c.audio_seconds == 0.0 && c.status == 1000);
    }
}
