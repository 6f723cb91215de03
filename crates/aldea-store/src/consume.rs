//! Moving usage from the queue into the ledger: what the platform's consumer does, and what
//! `aldea all` runs in-process. Recording is idempotent by `event_id`, so an entry redelivered after
//! a consumer died between `record` and `ack` changes nothing. An entry that fails to record is
//! delivered again; after [`MAX_DELIVERIES`] it goes to the queue's dead letters (kept for an
//! operator, counted) instead of holding up the entries behind it forever.

use std::time::Duration;

use crate::{Result, StoreError, UsageEvent, UsageLedger, UsageQueue};

/// How long an entry may stay taken but unacknowledged before another consumer reclaims it.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(30);

/// Deliveries of an entry that failed to record after which it becomes a dead letter.
pub const MAX_DELIVERIES: u32 = 5;

/// What one [`consume_usage`] call did.
#[derive(Debug, Default)]
pub struct Consumed {
    /// Entries recorded (or found recorded already) and acknowledged.
    pub recorded: usize,
    /// Entries moved to the dead letters.
    pub dead_lettered: usize,
    /// Entries that failed to record and stay in the queue for another try; the last error.
    pub failed: usize,
    pub last_error: Option<StoreError>,
}

impl Consumed {
    /// Entries that left the queue.
    pub fn moved(&self) -> usize {
        self.recorded + self.dead_lettered
    }
}

/// Takes up to `max` entries (waiting at most `wait`), records them in the ledger (in one batch;
/// one by one when the batch is refused), then acknowledges those recorded. An entry whose recording fails stays unacknowledged and is
/// delivered again later (once `reclaim_after` has passed: [`RECLAIM_AFTER`] in production), unless it has been delivered
/// [`MAX_DELIVERIES`] times: then it is a dead letter. A failing entry never stops the others of the
/// batch. `Err` only when the queue itself fails.
pub async fn consume_usage(
    queue: &dyn UsageQueue,
    ledger: &dyn UsageLedger,
    consumer: &str,
    max: usize,
    wait: Duration,
    reclaim_after: Duration,
) -> Result<Consumed> {
    let deliveries = queue.take(consumer, max, wait, reclaim_after).await?;
    let mut done: Vec<String> = Vec::with_capacity(deliveries.len());
    let mut consumed = Consumed::default();
    if deliveries.is_empty() {
        return Ok(consumed);
    }
    // The whole batch in one write; only when that fails for a reason other than an outage is
    // each event tried alone, so that one bad event is found and the others go through.
    let events: Vec<UsageEvent> = deliveries.iter().map(|d| d.event.clone()).collect();
    match ledger.record_batch(&events).await {
        Ok(_) => {
            consumed.recorded = deliveries.len();
            queue.ack(&deliveries.into_iter().map(|d| d.id).collect::<Vec<_>>()).await?;
            return Ok(consumed);
        }
        Err(e) if matches!(e, StoreError::Unavailable(_)) => {
            consumed.failed = deliveries.len();
            consumed.last_error = Some(e);
            return Ok(consumed);
        }
        Err(e) => tracing::warn!(error = %e, events = deliveries.len(), "usage batch refused; recording one by one"),
    }
    for delivery in deliveries {
        match ledger.record(&delivery.event).await {
            Ok(_) => done.push(delivery.id),
            // A ledger that is down says nothing about the event: it is tried again, never
            // dead-lettered for it.
            Err(e) if matches!(e, StoreError::Unavailable(_)) => {
                consumed.failed += 1;
                consumed.last_error = Some(e);
            }
            Err(e) if delivery.deliveries >= MAX_DELIVERIES => {
                tracing::error!(
                    entry = %delivery.id,
                    event_id = %delivery.event.event_id,
                    deliveries = delivery.deliveries,
                    error = %e,
                    "usage event could not be recorded; moved to the dead letters"
                );
                queue.dead_letter(&delivery, &e.to_string()).await?;
                consumed.dead_lettered += 1;
            }
            Err(e) => {
                consumed.failed += 1;
                consumed.last_error = Some(e);
            }
        }
    }
    consumed.recorded = done.len();
    if !done.is_empty() {
        queue.ack(&done).await?;
    }
    Ok(consumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credit, Keys, MemoryKeys, MemoryUsageQueue, OrgId, UsageEvent, UsageKind};

    fn event(request: &str, seq: u32, org_id: &OrgId, seconds: f64) -> UsageEvent {
        UsageEvent {
            event_id: UsageEvent::event_id(request, seq),
            request_id: request.to_owned(),
            seq,
            org_id: org_id.to_string(),
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
        let org = ledger.create_org("acme", Credit::Millis(100_000), 0).await.unwrap();
        for e in [event("r1", 0, &org.id, 2.5), event("r1", 0, &org.id, 2.5), event("r2", 0, &org.id, 1.0)] {
            queue.publish(&e).await.unwrap();
        }
        let mut moved = 0;
        while moved < 3 {
            moved += consume_usage(&queue, &ledger, "c1", 10, Duration::from_millis(10), RECLAIM_AFTER)
                .await
                .unwrap()
                .moved();
        }
        let totals = ledger.totals(&org.id).await.unwrap();
        assert_eq!((totals.events, totals.requests, totals.audio_millis), (2, 2, 3_500));
        assert_eq!(ledger.credit(&org.id).await.unwrap(), Credit::Millis(96_500));
        assert_eq!(
            consume_usage(&queue, &ledger, "c1", 10, Duration::from_millis(10), RECLAIM_AFTER).await.unwrap().moved(),
            0
        );
    }

    /// A ledger that refuses one organization's events (as a constraint or a bug would).
    struct RefusingLedger {
        inner: MemoryKeys,
        refused_org: String,
    }

    #[async_trait::async_trait]
    impl UsageLedger for RefusingLedger {
        async fn record(&self, event: &UsageEvent) -> Result<bool> {
            if event.org_id == self.refused_org {
                return Err(StoreError::Backend("constraint violated".to_owned()));
            }
            self.inner.record(event).await
        }
        async fn totals(&self, org_id: &OrgId) -> Result<crate::UsageTotals> {
            self.inner.totals(org_id).await
        }
    }

    #[tokio::test]
    async fn an_event_that_never_records_becomes_a_dead_letter_and_holds_nothing_up() {
        let queue = MemoryUsageQueue::default();
        let ledger = RefusingLedger { inner: MemoryKeys::default(), refused_org: "poison".to_owned() };
        let org = ledger.inner.create_org("acme", Credit::Unlimited, 0).await.unwrap();
        queue.publish(&event("bad", 0, &OrgId::from("poison"), 1.0)).await.unwrap();
        for i in 0..3 {
            queue.publish(&event(&format!("good{i}"), 0, &org.id, 1.0)).await.unwrap();
        }
        // The poison entry comes back on every call (reclaimable at once here); the good ones are
        // recorded on the first call all the same, and the poison one is a dead letter after its
        // last delivery.
        let mut recorded = 0;
        let mut dead = 0;
        for call in 1..=MAX_DELIVERIES {
            let consumed = consume_usage(&queue, &ledger, "c1", 10, Duration::ZERO, Duration::ZERO).await.unwrap();
            recorded += consumed.recorded;
            dead += consumed.dead_lettered;
            assert_eq!(consumed.failed + consumed.dead_lettered, 1, "call {call}");
        }
        assert_eq!((recorded, dead), (3, 1));
        assert_eq!(queue.dead_letter_count().await.unwrap(), 1);
        let letters = queue.dead_letters(10).await.unwrap();
        assert!(letters[0].payload.contains("poison") && letters[0].reason.contains("constraint"));
        assert!(queue.take("c1", 10, Duration::ZERO, Duration::ZERO).await.unwrap().is_empty(), "nothing redelivered");
        assert_eq!(ledger.totals(&org.id).await.unwrap().events, 3);
    }

    #[tokio::test]
    async fn the_consumer_records_the_rest_of_a_batch_and_dead_letters_a_poison_event() {
        let queue = MemoryUsageQueue::default();
        let ledger = RefusingLedger { inner: MemoryKeys::default(), refused_org: "poison".to_owned() };
        let org = ledger.inner.create_org("acme", Credit::Unlimited, 0).await.unwrap();
        queue.publish(&event("bad", 0, &OrgId::from("poison"), 1.0)).await.unwrap();
        queue.publish(&event("good", 0, &org.id, 1.0)).await.unwrap();
        let first = consume_usage(&queue, &ledger, "c1", 10, Duration::ZERO, RECLAIM_AFTER).await.unwrap();
        assert_eq!((first.recorded, first.failed, first.dead_lettered), (1, 1, 0), "the good one is not held up");
        assert!(first.last_error.is_some());
        assert_eq!(ledger.totals(&org.id).await.unwrap().events, 1);
        assert_eq!(queue.dead_letter_count().await.unwrap(), 0, "not before the last delivery");
    }

    /// A ledger that is down.
    struct DownLedger;

    #[async_trait::async_trait]
    impl UsageLedger for DownLedger {
        async fn record(&self, _: &UsageEvent) -> Result<bool> {
            Err(StoreError::Unavailable("down".to_owned()))
        }
        async fn totals(&self, _: &OrgId) -> Result<crate::UsageTotals> {
            Err(StoreError::Unavailable("down".to_owned()))
        }
    }

    #[tokio::test]
    async fn a_ledger_outage_dead_letters_nothing() {
        let queue = MemoryUsageQueue::default();
        queue.publish(&event("r", 0, &OrgId::from("acme"), 1.0)).await.unwrap();
        for _ in 0..2 * MAX_DELIVERIES {
            let consumed = consume_usage(&queue, &DownLedger, "c1", 10, Duration::ZERO, Duration::ZERO).await.unwrap();
            assert_eq!((consumed.failed, consumed.dead_lettered), (1, 0));
        }
        assert_eq!(queue.dead_letter_count().await.unwrap(), 0, "the event waits for the ledger");
    }
}
