//! In-process adapters: one process's state behind a mutex. They are the embedded default for the
//! cache, limits and queue, and the reference the conformance suite checks other adapters against.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, Notify};

use crate::{
    display_prefix, generate_key, hash_key, CachedGrant, Credit, DeadLetter, Delivery, KeyCache, KeyGrant, KeyRecord,
    Keys, Limits, NewKey, Org, RateDecision, Result, StoreError, UsageEvent, UsageLedger, UsageQueue, UsageTotals,
};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct KeysState {
    orgs: Vec<Org>,
    credit: HashMap<String, Credit>,
    keys: Vec<(KeyRecord, String)>,
    /// Recorded event ids, and per organization the requests seen and the totals.
    events: std::collections::HashSet<String>,
    requests: std::collections::HashSet<(String, String)>,
    totals: HashMap<String, UsageTotals>,
}

impl KeysState {
    /// A key's grant at `now`, unless it is revoked or expired.
    fn grant(&self, record: &KeyRecord, now: i64) -> Option<KeyGrant> {
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        let credit = self.credit.get(&record.org_id).copied().unwrap_or(Credit::Seconds(0.0));
        Some(KeyGrant {
            org_id: record.org_id.clone(),
            key_id: record.id.clone(),
            scopes: record.scopes.clone(),
            limits: record.limits,
            credit_ok: credit.allows_requests(),
            expires_at: record.expires_at,
        })
    }
}

/// Organizations, keys and credit in memory (tests; the SQLite adapter is the embedded default).
#[derive(Default)]
pub struct MemoryKeys {
    state: Mutex<KeysState>,
}

impl MemoryKeys {
    pub fn new() -> MemoryKeys {
        MemoryKeys::default()
    }
}

#[async_trait]
impl Keys for MemoryKeys {
    async fn ensure_org(&self, name: &str, credit: Credit) -> Result<Org> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("an organization needs a name".to_owned()));
        }
        let mut state = lock(&self.state);
        if let Some(org) = state.orgs.iter().find(|o| o.name == name) {
            return Ok(org.clone());
        }
        let org = Org { id: uuid::Uuid::new_v4().to_string(), name: name.to_owned(), created_at: crate::unix_now() };
        state.credit.insert(org.id.clone(), credit);
        state.orgs.push(org.clone());
        Ok(org)
    }

    async fn org_by_name(&self, name: &str) -> Result<Option<Org>> {
        Ok(lock(&self.state).orgs.iter().find(|o| o.name == name).cloned())
    }

    async fn create_key(&self, org_id: &str, key: NewKey, now: i64) -> Result<(KeyRecord, String)> {
        let secret = generate_key()?;
        let mut state = lock(&self.state);
        if !state.orgs.iter().any(|o| o.id == org_id) {
            return Err(StoreError::NotFound(format!("organization {org_id}")));
        }
        let record = KeyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            org_id: org_id.to_owned(),
            name: key.name,
            prefix: display_prefix(&secret),
            scopes: key.scopes,
            limits: key.limits,
            created_at: now,
            expires_at: key.expires_at,
            revoked_at: None,
        };
        state.keys.push((record.clone(), hash_key(&secret)));
        Ok((record, secret))
    }

    async fn verify(&self, key_hash: &str, now: i64) -> Result<Option<KeyGrant>> {
        let state = lock(&self.state);
        Ok(state.keys.iter().find(|(_, hash)| hash == key_hash).and_then(|(record, _)| state.grant(record, now)))
    }

    async fn grant_by_id(&self, key_id: &str, now: i64) -> Result<Option<KeyGrant>> {
        let state = lock(&self.state);
        Ok(state.keys.iter().find(|(record, _)| record.id == key_id).and_then(|(record, _)| state.grant(record, now)))
    }

    async fn list_keys(&self, org_id: Option<&str>) -> Result<Vec<KeyRecord>> {
        let state = lock(&self.state);
        Ok(state
            .keys
            .iter()
            .map(|(record, _)| record)
            .filter(|r| org_id.is_none_or(|id| r.org_id == id))
            .cloned()
            .collect())
    }

    async fn revoke_key(&self, key_id: &str, now: i64) -> Result<Option<String>> {
        let mut state = lock(&self.state);
        let Some((record, hash)) = state.keys.iter_mut().find(|(r, _)| r.id == key_id && r.revoked_at.is_none()) else {
            return Ok(None);
        };
        record.revoked_at = Some(now);
        Ok(Some(hash.clone()))
    }

    async fn set_credit(&self, org_id: &str, credit: Credit) -> Result<()> {
        let mut state = lock(&self.state);
        if !state.orgs.iter().any(|o| o.id == org_id) {
            return Err(StoreError::NotFound(format!("organization {org_id}")));
        }
        state.credit.insert(org_id.to_owned(), credit);
        Ok(())
    }

    async fn credit(&self, org_id: &str) -> Result<Credit> {
        lock(&self.state)
            .credit
            .get(org_id)
            .copied()
            .ok_or_else(|| StoreError::NotFound(format!("organization {org_id}")))
    }
}

#[async_trait]
impl UsageLedger for MemoryKeys {
    async fn record(&self, event: &UsageEvent) -> Result<bool> {
        let mut state = lock(&self.state);
        if !state.events.insert(event.event_id.clone()) {
            return Ok(false);
        }
        let new_request = state.requests.insert((event.org_id.clone(), event.request_id.clone()));
        let totals = state.totals.entry(event.org_id.clone()).or_default();
        totals.events += 1;
        totals.audio_seconds += event.audio_seconds;
        totals.requests += u64::from(new_request);
        if let Some(Credit::Seconds(left)) = state.credit.get_mut(&event.org_id) {
            *left = (*left - event.audio_seconds).max(0.0);
        }
        Ok(true)
    }

    async fn totals(&self, org_id: &str) -> Result<UsageTotals> {
        Ok(lock(&self.state).totals.get(org_id).copied().unwrap_or_default())
    }
}

/// Verify answers in memory, with expiry; invalidations reach this process's subscribers.
pub struct MemoryKeyCache {
    entries: Mutex<HashMap<String, (CachedGrant, Instant)>>,
    invalidations: broadcast::Sender<String>,
}

impl Default for MemoryKeyCache {
    fn default() -> Self {
        MemoryKeyCache { entries: Mutex::new(HashMap::new()), invalidations: broadcast::channel(1024).0 }
    }
}

impl MemoryKeyCache {
    pub fn new() -> MemoryKeyCache {
        MemoryKeyCache::default()
    }
}

#[async_trait]
impl KeyCache for MemoryKeyCache {
    async fn get(&self, key_hash: &str) -> Result<Option<CachedGrant>> {
        let mut entries = lock(&self.entries);
        match entries.get(key_hash) {
            Some((entry, expires)) if *expires > Instant::now() => Ok(Some(entry.clone())),
            Some(_) => {
                entries.remove(key_hash);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(&self, key_hash: &str, entry: &CachedGrant, ttl: Duration) -> Result<()> {
        let mut entries = lock(&self.entries);
        if entries.len() > 100_000 {
            let now = Instant::now();
            entries.retain(|_, (_, expires)| *expires > now);
        }
        entries.insert(key_hash.to_owned(), (entry.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn invalidate(&self, key_hash: &str) -> Result<()> {
        lock(&self.entries).remove(key_hash);
        // No subscriber is fine.
        let _ = self.invalidations.send(key_hash.to_owned());
        Ok(())
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<String>> {
        let mut source = self.invalidations.subscribe();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                match source.recv().await {
                    Ok(hash) => {
                        if tx.send(hash).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }
}

#[derive(Default)]
struct LimitsState {
    /// scope → holder → lease expiry.
    leases: HashMap<String, HashMap<String, Instant>>,
    /// bucket → (minute, count).
    rates: HashMap<String, (u64, u32)>,
}

/// Leases and rates of one process (the embedded default: one gateway holds them all).
#[derive(Default)]
pub struct MemoryLimits {
    state: Mutex<LimitsState>,
}

impl MemoryLimits {
    pub fn new() -> MemoryLimits {
        MemoryLimits::default()
    }
}

#[async_trait]
impl Limits for MemoryLimits {
    async fn acquire(&self, scope: &str, holder: &str, limit: u32, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let leases = state.leases.entry(scope.to_owned()).or_default();
        leases.retain(|_, expires| *expires > now);
        if !leases.contains_key(holder) && leases.len() >= limit as usize {
            return Ok(false);
        }
        leases.insert(holder.to_owned(), now + ttl);
        Ok(true)
    }

    async fn renew(&self, scope: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let Some(expires) = state.leases.get_mut(scope).and_then(|l| l.get_mut(holder)) else {
            return Ok(false);
        };
        if *expires <= now {
            return Ok(false);
        }
        *expires = now + ttl;
        Ok(true)
    }

    async fn release(&self, scope: &str, holder: &str) -> Result<()> {
        let mut state = lock(&self.state);
        if let Some(leases) = state.leases.get_mut(scope) {
            leases.remove(holder);
            if leases.is_empty() {
                state.leases.remove(scope);
            }
        }
        Ok(())
    }

    async fn held(&self, scope: &str) -> Result<u32> {
        let now = Instant::now();
        let state = lock(&self.state);
        Ok(state.leases.get(scope).map_or(0, |l| l.values().filter(|e| **e > now).count() as u32))
    }

    async fn hit(&self, bucket: &str, per_minute: u32) -> Result<RateDecision> {
        let now = crate::unix_now().max(0) as u64;
        let minute = now / 60;
        let mut state = lock(&self.state);
        let entry = state.rates.entry(bucket.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        if entry.1 > per_minute {
            return Ok(RateDecision::Limited { retry_after_s: (60 - now % 60).max(1) as u32 });
        }
        Ok(RateDecision::Allowed { remaining: per_minute - entry.1 })
    }
}

#[derive(Default)]
struct QueueState {
    next_id: u64,
    ready: VecDeque<(String, UsageEvent)>,
    /// Taken and not acknowledged: id → (event, consumer, taken at, deliveries).
    pending: BTreeMap<String, (UsageEvent, String, Instant, u32)>,
    dead: Vec<DeadLetter>,
}

/// A usage queue in memory with the same delivery rules as the Redis stream.
#[derive(Default)]
pub struct MemoryUsageQueue {
    state: Mutex<QueueState>,
    published: Notify,
}

impl MemoryUsageQueue {
    pub fn new() -> MemoryUsageQueue {
        MemoryUsageQueue::default()
    }

    fn take_now(&self, consumer: &str, max: usize, reclaim_after: Duration) -> Vec<Delivery> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let mut out = Vec::new();
        for (id, (event, owner, taken, deliveries)) in state.pending.iter_mut() {
            if out.len() >= max {
                break;
            }
            if now.duration_since(*taken) >= reclaim_after {
                *owner = consumer.to_owned();
                *taken = now;
                *deliveries += 1;
                out.push(Delivery { id: id.clone(), event: event.clone(), deliveries: *deliveries });
            }
        }
        while out.len() < max {
            let Some((id, event)) = state.ready.pop_front() else { break };
            state.pending.insert(id.clone(), (event.clone(), consumer.to_owned(), now, 1));
            out.push(Delivery { id, event, deliveries: 1 });
        }
        out
    }
}

#[async_trait]
impl UsageQueue for MemoryUsageQueue {
    async fn publish(&self, event: &UsageEvent) -> Result<()> {
        {
            let mut state = lock(&self.state);
            state.next_id += 1;
            // Zero-padded so that ids sort in publish order, as Redis stream ids do.
            let id = format!("{:020}", state.next_id);
            state.ready.push_back((id, event.clone()));
        }
        self.published.notify_waiters();
        Ok(())
    }

    async fn take(&self, consumer: &str, max: usize, wait: Duration, reclaim_after: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.published.notified();
            let out = self.take_now(consumer, max, reclaim_after);
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(self.take_now(consumer, max, reclaim_after));
            }
        }
    }

    async fn ack(&self, ids: &[String]) -> Result<()> {
        let mut state = lock(&self.state);
        for id in ids {
            state.pending.remove(id);
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let payload = serde_json::to_string(&delivery.event).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut state = lock(&self.state);
        state.pending.remove(&delivery.id);
        state.dead.push(DeadLetter { id: delivery.id.clone(), payload, reason: reason.to_owned() });
        Ok(())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>> {
        Ok(lock(&self.state).dead.iter().take(max).cloned().collect())
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        Ok(lock(&self.state).dead.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys() {
        crate::conformance::keys(&MemoryKeys::new()).await;
    }

    #[tokio::test]
    async fn usage_ledger() {
        let store = MemoryKeys::new();
        crate::conformance::usage_ledger(&store, &store).await;
    }

    #[tokio::test]
    async fn key_cache() {
        crate::conformance::key_cache(&MemoryKeyCache::new()).await;
    }

    #[tokio::test]
    async fn limits() {
        crate::conformance::limits(&MemoryLimits::new()).await;
    }

    #[tokio::test]
    async fn usage_queue() {
        crate::conformance::usage_queue(&MemoryUsageQueue::new()).await;
    }
}
