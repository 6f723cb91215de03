//! The behaviour every adapter of a port must have, as async checks that panic on a violation. Each
//! adapter's tests call them (in-memory here, SQLite/PostgreSQL in aldea-store-sql, Redis and Redis
//! Cluster in aldea-store-redis). Names are random so that runs sharing a server never collide.

use std::collections::HashSet;
use std::time::Duration;

use crate::{
    hash_key, CachedGrant, Credit, KeyCache, KeyGrant, KeyLimits, Keys, Limits, NewKey, RateDecision, UsageEvent,
    UsageKind, UsageLedger, UsageQueue,
};

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// Organizations, keys, verification, revocation, expiry and credit.
pub async fn keys(store: &dyn Keys) {
    let now = crate::unix_now();
    let name = unique("acme");
    let org = store.ensure_org(&name, Credit::Seconds(60.0)).await.unwrap();
    assert_eq!(org.name, name);
    let again = store.ensure_org(&name, Credit::Unlimited).await.unwrap();
    assert_eq!(again.id, org.id, "ensure_org finds the existing organization");
    assert_eq!(store.credit(&org.id).await.unwrap(), Credit::Seconds(60.0), "an existing org keeps its credit");
    assert_eq!(store.org_by_name(&name).await.unwrap().map(|o| o.id), Some(org.id.clone()));
    assert_eq!(store.org_by_name(&unique("nobody")).await.unwrap(), None);
    assert!(store.ensure_org("  ", Credit::Unlimited).await.is_err(), "an empty name is refused");

    let limits = KeyLimits { max_streams: Some(3), requests_per_minute: Some(100) };
    let (record, secret) = store.create_key(&org.id, NewKey { limits, ..NewKey::listen("ci") }, now).await.unwrap();
    assert!(secret.starts_with(crate::KEY_PREFIX));
    assert_eq!(record.prefix, crate::display_prefix(&secret));
    assert!(!serde_json::to_string(&record).unwrap().contains(&secret), "a record never holds the secret");
    let grant = store.verify(&hash_key(&secret), now).await.unwrap().expect("a new key verifies");
    assert_eq!(
        grant,
        KeyGrant {
            org_id: org.id.clone(),
            key_id: record.id.clone(),
            scopes: vec!["listen".to_owned()],
            limits,
            credit_ok: true,
            expires_at: None,
        }
    );
    assert_eq!(store.verify(&hash_key("org_unknown"), now).await.unwrap(), None);
    assert_eq!(store.grant_by_id(&record.id, now).await.unwrap(), Some(grant.clone()), "by id: the same grant");
    assert_eq!(store.grant_by_id(&unique("no-key"), now).await.unwrap(), None);
    assert!(store.create_key(&unique("no-org"), NewKey::listen("x"), now).await.is_err(), "unknown org");

    // Expiry is judged at the time asked.
    let (expiring, expiring_secret) =
        store.create_key(&org.id, NewKey { expires_at: Some(now + 10), ..NewKey::listen("short") }, now).await.unwrap();
    assert!(store.verify(&hash_key(&expiring_secret), now).await.unwrap().is_some());
    assert_eq!(store.verify(&hash_key(&expiring_secret), now + 10).await.unwrap(), None);
    assert!(store.grant_by_id(&expiring.id, now).await.unwrap().is_some());
    assert_eq!(store.grant_by_id(&expiring.id, now + 10).await.unwrap(), None);

    let listed = store.list_keys(Some(&org.id)).await.unwrap();
    assert_eq!(listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), [record.id.as_str(), expiring.id.as_str()]);
    assert!(store.list_keys(None).await.unwrap().len() >= 2);

    // Credit: exhausted credit still verifies, but says so.
    store.set_credit(&org.id, Credit::Seconds(0.0)).await.unwrap();
    assert!(!store.verify(&hash_key(&secret), now).await.unwrap().unwrap().credit_ok);
    assert!(!store.grant_by_id(&record.id, now).await.unwrap().unwrap().credit_ok);
    store.set_credit(&org.id, Credit::Unlimited).await.unwrap();
    assert_eq!(store.credit(&org.id).await.unwrap(), Credit::Unlimited);
    assert!(store.verify(&hash_key(&secret), now).await.unwrap().unwrap().credit_ok);
    assert!(store.set_credit(&unique("no-org"), Credit::Unlimited).await.is_err());

    // Revocation: once, and the key stops verifying.
    assert_eq!(store.revoke_key(&record.id, now + 1).await.unwrap(), Some(hash_key(&secret)));
    assert_eq!(store.revoke_key(&record.id, now + 2).await.unwrap(), None, "already revoked");
    assert_eq!(store.verify(&hash_key(&secret), now + 1).await.unwrap(), None);
    assert_eq!(store.grant_by_id(&record.id, now + 1).await.unwrap(), None, "a revoked key has no grant by id");
    let listed = store.list_keys(Some(&org.id)).await.unwrap();
    assert_eq!(listed[0].revoked_at, Some(now + 1));
    assert_eq!(store.revoke_key(&unique("no-key"), now).await.unwrap(), None);
}

/// Each event counts once; credit goes down by the audio seconds, never below zero, and an
/// unlimited organization stays unlimited.
pub async fn usage_ledger(keys: &dyn Keys, ledger: &dyn UsageLedger) {
    let org = keys.ensure_org(&unique("metered"), Credit::Seconds(10.0)).await.unwrap();
    let free = keys.ensure_org(&unique("free"), Credit::Unlimited).await.unwrap();
    let event = |org_id: &str, request_id: &str, seq: u32, audio_seconds: f64| UsageEvent {
        event_id: UsageEvent::event_id(request_id, seq),
        request_id: request_id.to_owned(),
        seq,
        org_id: org_id.to_owned(),
        key_id: "key".to_owned(),
        kind: UsageKind::Rest,
        model: "tiny.en".to_owned(),
        audio_seconds,
        started_at: 1_000,
        ended_at: 2_000,
        is_final: true,
        status: 200,
    };
    let (r1, r2) = (unique("r"), unique("r"));
    assert!(ledger.record(&event(&org.id, &r1, 0, 2.5)).await.unwrap());
    assert!(!ledger.record(&event(&org.id, &r1, 0, 2.5)).await.unwrap(), "a duplicate changes nothing");
    assert!(ledger.record(&event(&org.id, &r1, 1, 1.5)).await.unwrap());
    assert!(ledger.record(&event(&org.id, &r2, 0, 1.0)).await.unwrap());
    let totals = ledger.totals(&org.id).await.unwrap();
    assert_eq!((totals.requests, totals.events), (2, 3));
    assert!((totals.audio_seconds - 5.0).abs() < 1e-9);
    assert_eq!(keys.credit(&org.id).await.unwrap(), Credit::Seconds(5.0));
    assert!(ledger.record(&event(&org.id, &r2, 1, 7.0)).await.unwrap());
    assert_eq!(keys.credit(&org.id).await.unwrap(), Credit::Seconds(0.0), "credit stops at zero");
    assert!(ledger.record(&event(&free.id, &unique("r"), 0, 100.0)).await.unwrap());
    assert_eq!(keys.credit(&free.id).await.unwrap(), Credit::Unlimited);
    assert_eq!(ledger.totals(&unique("nobody")).await.unwrap(), crate::UsageTotals::default());
}

/// Positive and negative entries, expiry, invalidation seen by subscribers.
pub async fn key_cache(cache: &dyn KeyCache) {
    let hash = hash_key(&unique("org_key"));
    assert_eq!(cache.get(&hash).await.unwrap(), None);
    let grant = CachedGrant::Valid(KeyGrant {
        org_id: "o".to_owned(),
        key_id: "k".to_owned(),
        scopes: vec!["listen".to_owned()],
        limits: KeyLimits::default(),
        credit_ok: true,
        expires_at: Some(1),
    });
    cache.put(&hash, &grant, Duration::from_secs(30)).await.unwrap();
    assert_eq!(cache.get(&hash).await.unwrap(), Some(grant.clone()));

    let negative = hash_key(&unique("org_bad"));
    cache.put(&negative, &CachedGrant::Invalid, Duration::from_millis(300)).await.unwrap();
    assert_eq!(cache.get(&negative).await.unwrap(), Some(CachedGrant::Invalid));
    let expired = crate::conformance::eventually(Duration::from_secs(3), || async {
        cache.get(&negative).await.unwrap().is_none()
    })
    .await;
    assert!(expired, "a negative entry expires");

    let mut invalidations = cache.subscribe().await.unwrap();
    cache.invalidate(&hash).await.unwrap();
    assert_eq!(cache.get(&hash).await.unwrap(), None, "invalidated");
    let seen = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match invalidations.recv().await {
                Some(h) if h == hash => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(seen, Ok(true), "subscribers hear of the invalidation");
}

/// Leases: the limit holds, renewal, release, expiry of a dead holder's lease; rates per minute.
pub async fn limits(limits: &dyn Limits) {
    let scope = unique("streams:org");
    let ttl = Duration::from_secs(15);
    assert!(limits.acquire(&scope, "a", 2, ttl).await.unwrap());
    assert!(limits.acquire(&scope, "b", 2, ttl).await.unwrap());
    assert!(!limits.acquire(&scope, "c", 2, ttl).await.unwrap(), "the third of two is refused");
    assert!(limits.acquire(&scope, "a", 2, ttl).await.unwrap(), "a holder re-acquiring renews");
    assert_eq!(limits.held(&scope).await.unwrap(), 2);
    assert!(limits.renew(&scope, "a", ttl).await.unwrap());
    assert!(!limits.renew(&scope, "nobody", ttl).await.unwrap());
    limits.release(&scope, "a").await.unwrap();
    limits.release(&scope, "a").await.unwrap();
    assert_eq!(limits.held(&scope).await.unwrap(), 1);
    assert!(limits.acquire(&scope, "c", 2, ttl).await.unwrap(), "a released slot is free");

    // A holder that stops renewing loses its slot after the TTL.
    let short = unique("streams:dead");
    assert!(limits.acquire(&short, "dead", 1, Duration::from_millis(300)).await.unwrap());
    assert!(!limits.acquire(&short, "live", 1, ttl).await.unwrap());
    let freed = crate::conformance::eventually(Duration::from_secs(3), || async {
        limits.acquire(&short, "live", 1, ttl).await.unwrap()
    })
    .await;
    assert!(freed, "an expired lease frees its slot");
    assert!(!limits.renew(&short, "dead", ttl).await.unwrap(), "an expired lease cannot be renewed");

    // Independent scopes under concurrency: exactly `limit` winners.
    let race = unique("streams:race");
    let winners = futures_util::future::join_all((0..8).map(|i| {
        let race = race.clone();
        async move { limits.acquire(&race, &format!("h{i}"), 3, ttl).await.unwrap() }
    }))
    .await;
    assert_eq!(winners.iter().filter(|w| **w).count(), 3);

    let bucket = unique("rpm:key");
    let mut allowed = 0;
    let mut limited = None;
    for _ in 0..5 {
        match limits.hit(&bucket, 3).await.unwrap() {
            RateDecision::Allowed { .. } => allowed += 1,
            RateDecision::Limited { retry_after_s } => limited = Some(retry_after_s),
        }
    }
    // A minute boundary inside the loop can reset the window once.
    assert!((3..=5).contains(&allowed), "{allowed} of 5 allowed at 3 per minute");
    if allowed < 5 {
        let retry = limited.unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
}

/// At-least-once delivery, acknowledgement, redelivery of what a dead consumer held.
pub async fn usage_queue(queue: &dyn UsageQueue) {
    let request_id = unique("req");
    let events: Vec<UsageEvent> = (0..5)
        .map(|seq| UsageEvent {
            event_id: UsageEvent::event_id(&request_id, seq),
            request_id: request_id.clone(),
            seq,
            org_id: "org".to_owned(),
            key_id: "key".to_owned(),
            kind: UsageKind::Stream,
            model: "tiny.en".to_owned(),
            audio_seconds: 1.25,
            started_at: 1,
            ended_at: 2,
            is_final: seq == 4,
            status: 1000,
        })
        .collect();
    for event in &events {
        queue.publish(event).await.unwrap();
    }
    let long = Duration::from_secs(600);
    // The queue may hold other runs' entries (a shared server): keep only ours.
    let mut ours = Vec::new();
    let mut others = Vec::new();
    for _ in 0..50 {
        let batch = queue.take("c1", 3, Duration::from_millis(200), long).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for delivery in batch {
            if delivery.event.request_id == request_id {
                ours.push(delivery);
            } else {
                others.push(delivery.id);
            }
        }
        if ours.len() == events.len() {
            break;
        }
    }
    queue.ack(&others).await.unwrap();
    assert_eq!(ours.iter().map(|d| d.event.clone()).collect::<Vec<_>>(), events, "in publish order, unchanged");
    let ids: HashSet<&String> = ours.iter().map(|d| &d.id).collect();
    assert_eq!(ids.len(), events.len(), "queue ids are unique");

    // c1 acknowledges two and dies; its other three go to c2 once reclaimable.
    queue.ack(&[ours[0].id.clone(), ours[1].id.clone()]).await.unwrap();
    let none = queue.take("c2", 10, Duration::from_millis(50), long).await.unwrap();
    assert!(none.iter().all(|d| d.event.request_id != request_id), "held entries are not handed out early");
    let reclaimed = queue.take("c2", 10, Duration::from_millis(50), Duration::ZERO).await.unwrap();
    let mine: Vec<&crate::Delivery> = reclaimed.iter().filter(|d| d.event.request_id == request_id).collect();
    assert_eq!(mine.iter().map(|d| d.event.seq).collect::<Vec<_>>(), [2, 3, 4], "unacknowledged entries come back");
    queue.ack(&reclaimed.iter().map(|d| d.id.clone()).collect::<Vec<_>>()).await.unwrap();
    let after = queue.take("c3", 10, Duration::from_millis(50), Duration::ZERO).await.unwrap();
    assert!(after.iter().all(|d| d.event.request_id != request_id), "acknowledged entries are gone");
    queue.ack(&after.iter().map(|d| d.id.clone()).collect::<Vec<_>>()).await.unwrap();

    // A consumer waiting for entries is woken by a publish.
    let late = UsageEvent { event_id: UsageEvent::event_id(&request_id, 9), seq: 9, ..events[0].clone() };
    let (taken, ()) = tokio::join!(queue.take("c4", 1, Duration::from_secs(5), long), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        queue.publish(&late).await.unwrap();
    });
    let taken = taken.unwrap();
    assert!(taken.iter().any(|d| d.event == late), "a waiting consumer gets a new entry");
    queue.ack(&taken.iter().map(|d| d.id.clone()).collect::<Vec<_>>()).await.unwrap();

    // Deliveries are counted, and a dead letter is kept and never handed out again.
    let poison = UsageEvent { event_id: UsageEvent::event_id(&request_id, 10), seq: 10, ..events[0].clone() };
    queue.publish(&poison).await.unwrap();
    let dead_before = queue.dead_letter_count().await.unwrap();
    let mut first = None;
    for _ in 0..50 {
        let batch = queue.take("c5", 10, Duration::from_millis(100), long).await.unwrap();
        let (mine, rest): (Vec<_>, Vec<_>) = batch.into_iter().partition(|d| d.event == poison);
        queue.ack(&rest.iter().map(|d| d.id.clone()).collect::<Vec<_>>()).await.unwrap();
        if let Some(delivery) = mine.into_iter().next() {
            first = Some(delivery);
            break;
        }
    }
    let first = first.expect("the entry is delivered");
    assert_eq!(first.deliveries, 1, "a first delivery counts 1");
    let again = queue.take("c6", 10, Duration::from_millis(50), Duration::ZERO).await.unwrap();
    let again = again.into_iter().find(|d| d.id == first.id).expect("reclaimed");
    assert_eq!(again.deliveries, 2, "a reclaimed delivery counts again");
    queue.dead_letter(&again, "cannot be recorded").await.unwrap();
    assert_eq!(queue.dead_letter_count().await.unwrap(), dead_before + 1);
    let letters = queue.dead_letters(10_000).await.unwrap();
    let letter = letters.iter().find(|l| l.id == first.id).expect("the dead letter is kept");
    assert_eq!(letter.reason, "cannot be recorded");
    assert_eq!(serde_json::from_str::<UsageEvent>(&letter.payload).unwrap(), poison);
    let after = queue.take("c7", 10, Duration::from_millis(50), Duration::ZERO).await.unwrap();
    assert!(after.iter().all(|d| d.id != first.id), "a dead letter is not delivered again");
    queue.ack(&after.iter().map(|d| d.id.clone()).collect::<Vec<_>>()).await.unwrap();
}

/// Polls `check` until it holds (`true`) or `within` passes (`false`).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
