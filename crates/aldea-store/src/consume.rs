//! Moving usage from the queue into the ledger: what the platform's consumer does, and what
//! `aldea all` runs in-process. Recording is idempotent by `event_id`, so an entry redelivered after
//! a consumer died between `record` and `ack` changes nothing.

use std::time::Duration;

use crate::{Result, UsageLedger, UsageQueue};

/// How long an entry may stay taken but unacknowledged before another consumer reclaims it.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(30);

/// Takes up to `max` entries (waiting at most `wait`), records each in the ledger, then
/// acknowledges them; the number moved. An entry whose recording fails stays unacknowledged and is
/// delivered again later.
pub async fn consume_usage(
    queue: &dyn UsageQueue,
    ledger: &dyn UsageLedger,
    consumer: &str,
    max: usize,
    wait: Duration,
) -> Result<usize> {
    let deliveries = queue.take(consumer, max, wait, RECLAIM_AFTER).await?;
    let mut done: Vec<String> = Vec::with_capacity(deliveries.len());
    let mut failure = None;
    for delivery in deliveries {
        match ledger.record(&delivery.event).await {
            Ok(_) => done.push(delivery.id),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if !done.is_empty() {
        queue.ack(&done).await?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(done.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credit, Keys, MemoryKeys, MemoryUsageQueue, UsageEvent, UsageKind};

    fn event(request: &str, seq: u32, org_id: &str, seconds: f64) -> UsageEvent {
        UsageEvent {
            event_id: UsageEvent::event_id(request, seq),
            request_id: request.to_owned(),
            seq,
            org_id: org_id.to_owned(),
            key_id: "k".to_owned(),
            kind: UsageKind::Rest,
            model: "tiny.en".to_owned(),
            audio_seconds: seconds,
            started_at: 0,
            ended_at: 1,
            is_final: true,
            status: 200,
        }
    }

    #[tokio::test]
    async fn events_published_twice_are_recorded_once() {
        let queue = MemoryUsageQueue::default();
        let ledger = MemoryKeys::default();
        let org = ledger.ensure_org("acme", Credit::Seconds(100.0)).await.unwrap();
        for e in [event("r1", 0, &org.id, 2.5), event("r1", 0, &org.id, 2.5), event("r2", 0, &org.id, 1.0)] {
            queue.publish(&e).await.unwrap();
        }
        let mut moved = 0;
        while moved < 3 {
            moved += consume_usage(&queue, &ledger, "c1", 10, Duration::from_millis(10)).await.unwrap();
        }
        let totals = ledger.totals(&org.id).await.unwrap();
        assert_eq!((totals.events, totals.requests), (2, 2));
        assert!((totals.audio_seconds - 3.5).abs() < 1e-9);
        assert_eq!(ledger.credit(&org.id).await.unwrap(), Credit::Seconds(96.5));
        assert_eq!(consume_usage(&queue, &ledger, "c1", 10, Duration::from_millis(10)).await.unwrap(), 0);
    }
}
