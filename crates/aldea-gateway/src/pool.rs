//! The stt replicas: the configured URLs, each host name re-resolved periodically (a headless
//! Service name gives one replica per address), and what each said of its capacity. A background
//! task reads every replica's `/v1/capacity` ([`aldea_proto::Capacity`]) together every
//! [`CAPACITY_FRESH`]; [`SttPool::ordered`] orders the replicas from the last readings, on the
//! spot, by the free stream slots and queue depth they reported.
//!
//! Invariant: no request waits on a capacity reading (only `serve`'s start waits for the first
//! round, bounded by [`CAPACITY_TIMEOUT`]); the replicas are reached without a proxy, and the
//! readings on their own connections (never on those of the requests); a replica chosen first is
//! counted as one slot fuller until a reading asked for after the choice replaces that, and one
//! that refused work as full for a reading period at least, then until a reading asked for after it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aldea_proto::Capacity;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::Config;

/// How often every replica's capacity is read.
const CAPACITY_FRESH: Duration = Duration::from_millis(250);
/// How long a replica may take to answer its capacity.
const CAPACITY_TIMEOUT: Duration = Duration::from_millis(500);
/// How often host names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// One replica's base URL with what is known of its load.
#[derive(Debug, Clone)]
struct Replica {
    base: Url,
    /// Which configured URL it came from (a name may give several replicas).
    source: usize,
    load: Load,
}

/// A replica's load: its last reading and what this gateway did since.
#[derive(Debug, Clone, Default)]
struct Load {
    /// The last reading and when it was asked for; `None`: never read, or the replica did not
    /// answer.
    reading: Option<(Capacity, Asked)>,
    /// Times the replica was the first choice.
    chosen: u64,
    /// Its last refusal of work (503): when, and `chosen` then.
    refused: Option<(Instant, u64)>,
}

/// When a reading was asked for, and how many times its replica had been chosen by then (the
/// choices after are not in it).
#[derive(Debug, Clone, Copy)]
struct Asked {
    at: Instant,
    chosen: u64,
}

/// Where a replica stands in the order: ready ones by the most free slots (then the shortest
/// queue) first, unknown or unreachable ones next, unready ones last.
type Rank = (u8, i64, u64);

impl Load {
    fn rank(&self) -> Rank {
        let Some((capacity, asked)) = &self.reading else { return (1, 0, 0) };
        if !capacity.ready {
            return (2, 0, 0);
        }
        let free = match self.refused {
            // A refusal stands for a reading period at least, then until a reading asked after
            // that: full, less the choices made since.
            Some((at, chosen)) if asked.at < at + CAPACITY_FRESH => -count(self.chosen - chosen),
            _ => count(capacity.free_stream_slots) - count(self.chosen - asked.chosen),
        };
        (0, -free, capacity.queue_depth)
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) struct SttPool {
    configured: Vec<Url>,
    replicas: Mutex<Vec<Replica>>,
    /// For the requests: uploads and readiness.
    client: reqwest::Client,
    /// For the capacity readings, on connections of their own.
    readings: reqwest::Client,
    token: Option<SecretString>,
}

#[derive(Debug, thiserror::Error)]
#[error("stt pool: {0}")]
pub(crate) struct PoolError(String);

impl SttPool {
    pub(crate) fn new(config: &Config) -> Result<SttPool, PoolError> {
        let configured = config
            .stt_urls
            .iter()
            .map(|u| Url::parse(u).map_err(|e| PoolError(format!("{u:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        // stt replicas are the cluster's own services: never reached through a proxy the
        // environment may name for outbound traffic. TCP user timeout 120 s, not reqwest's 30 s:
        // a replica starved of CPU may leave an upload's bytes unacknowledged longer than 30 s and
        // must not be given up for it; a replica gone mid-body is still found within 2 minutes.
        let client = || {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .tcp_user_timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| PoolError(e.to_string()))
        };
        let replicas = configured
            .iter()
            .enumerate()
            .map(|(source, base)| Replica { base: base.clone(), source, load: Load::default() })
            .collect();
        Ok(SttPool {
            configured,
            replicas: Mutex::new(replicas),
            client: client()?,
            readings: client()?,
            token: config.service_token.clone(),
        })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.expose_secret())
    }

    /// Starts the background work until `stop`: host names resolved again every few seconds, every
    /// replica's capacity read every [`CAPACITY_FRESH`]. Returns once the first capacity round is
    /// in (or [`CAPACITY_TIMEOUT`] has passed), so the first requests are ordered by readings.
    pub(crate) async fn start(self: &Arc<Self>, stop: CancellationToken) {
        let pool = self.clone();
        let stop_resolving = stop.clone();
        tokio::spawn(async move {
            loop {
                pool.resolve().await;
                tokio::select! {
                    _ = stop_resolving.cancelled() => return,
                    _ = tokio::time::sleep(RESOLVE_EVERY) => {}
                }
            }
        });
        let (first_round, first_read) = tokio::sync::oneshot::channel();
        let pool = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CAPACITY_FRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut first_round = Some(first_round);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                pool.read_capacities().await;
                if let Some(done) = first_round.take() {
                    let _ = done.send(());
                }
            }
        });
        let _ = tokio::time::timeout(CAPACITY_TIMEOUT, first_read).await;
    }

    /// Expands every configured URL whose host is a name into one URL per address it resolves to;
    /// a name that does not resolve keeps its previous replicas.
    async fn resolve(&self) {
        let mut bases: Vec<(usize, Url)> = Vec::new();
        for (source, url) in self.configured.iter().enumerate() {
            let Some(host) = url.host_str() else { continue };
            let is_literal = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
            if is_literal || host == "localhost" {
                bases.push((source, url.clone()));
                continue;
            }
            let port = url.port_or_known_default().unwrap_or(80);
            match tokio::net::lookup_host((host, port)).await {
                Ok(addrs) => {
                    let mut found: Vec<Url> = Vec::new();
                    for addr in addrs {
                        let mut each = url.clone();
                        if each.set_ip_host(addr.ip()).is_ok() && !found.contains(&each) {
                            found.push(each);
                        }
                    }
                    if found.is_empty() {
                        bases.push((source, url.clone()));
                    }
                    bases.extend(found.into_iter().map(|base| (source, base)));
                }
                Err(e) => {
                    tracing::warn!(host, error = %e, "cannot resolve an stt host; keeping what it had");
                    let kept: Vec<(usize, Url)> =
                        self.snapshot().into_iter().filter(|r| r.source == source).map(|r| (source, r.base)).collect();
                    if kept.is_empty() {
                        bases.push((source, url.clone()));
                    } else {
                        bases.extend(kept);
                    }
                }
            }
        }
        if let Ok(mut replicas) = self.replicas.lock() {
            let old = std::mem::take(&mut *replicas);
            *replicas = bases
                .into_iter()
                .map(|(source, base)| {
                    old.iter().find(|r| r.base == base).cloned().unwrap_or(Replica {
                        base,
                        source,
                        load: Load::default(),
                    })
                })
                .collect();
        }
    }

    fn snapshot(&self) -> Vec<Replica> {
        self.replicas.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// One round: every replica's capacity, read together; each reading replaces the replica's
    /// last one.
    async fn read_capacities(&self) {
        let asked: Vec<(Url, Asked)> = self
            .snapshot()
            .into_iter()
            .map(|r| (r.base, Asked { at: Instant::now(), chosen: r.load.chosen }))
            .collect();
        let readings =
            futures_util::future::join_all(asked.iter().map(|(base, _)| self.read_capacity(base.clone()))).await;
        for ((base, asked), reading) in asked.into_iter().zip(readings) {
            self.record(&base, reading, asked);
        }
    }

    fn record(&self, base: &Url, reading: Option<Capacity>, asked: Asked) {
        if let Ok(mut replicas) = self.replicas.lock() {
            if let Some(replica) = replicas.iter_mut().find(|r| &r.base == base) {
                replica.load.reading = reading.map(|capacity| (capacity, asked));
            }
        }
    }

    async fn read_capacity(&self, base: Url) -> Option<Capacity> {
        let url = base.join("/v1/capacity").ok()?;
        let mut request = self.readings.get(url).timeout(CAPACITY_TIMEOUT);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json::<Capacity>().await.ok()
    }

    /// Replicas in the order to try them (see [`Load::rank`]), from the last readings; the first
    /// is counted as taken until a reading asked for after this, so that requests arriving together
    /// spread over the replicas instead of all taking the one that looked freest.
    pub(crate) fn ordered(&self) -> Vec<Url> {
        let Ok(mut replicas) = self.replicas.lock() else { return Vec::new() };
        let mut order: Vec<(Rank, usize)> = replicas.iter().enumerate().map(|(i, r)| (r.load.rank(), i)).collect();
        order.sort();
        if let Some(&(_, first)) = order.first() {
            replicas[first].load.chosen += 1;
        }
        order.into_iter().map(|(_, i)| replicas[i].base.clone()).collect()
    }

    /// Marks a replica as just having refused work, so the next request prefers the others.
    pub(crate) fn note_full(&self, base: &Url) {
        if let Ok(mut replicas) = self.replicas.lock() {
            if let Some(r) = replicas.iter_mut().find(|r| &r.base == base) {
                r.load.refused = Some((Instant::now(), r.load.chosen));
            }
        }
    }

    /// Whether any replica says it is ready.
    pub(crate) async fn any_ready(&self) -> bool {
        let replicas = self.snapshot();
        let answers = futures_util::future::join_all(replicas.iter().map(|r| async {
            let url = r.base.join("/ready").ok()?;
            let response = self.client.get(url).timeout(CAPACITY_TIMEOUT).send().await.ok()?;
            Some(response.status().is_success())
        }))
        .await;
        answers.into_iter().any(|a| a == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> (SttPool, Vec<Url>) {
        let stt_urls: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{}:8800", i + 1)).collect();
        let pool = SttPool::new(&Config { stt_urls: stt_urls.clone(), ..Config::default() }).unwrap();
        (pool, stt_urls.iter().map(|u| Url::parse(u).unwrap()).collect())
    }

    fn capacity(free_stream_slots: u64, queue_depth: u64, ready: bool) -> Capacity {
        Capacity { active_streams: 0, free_stream_slots, max_streams: 4, queue_depth, queued_uploads: 0, ready }
    }

    /// A reading of `base` asked for now (or `later` after now), as the background round records it.
    fn read(pool: &SttPool, base: &Url, reading: Option<Capacity>, later: Duration) {
        let chosen = pool.snapshot().iter().find(|r| &r.base == base).unwrap().load.chosen;
        pool.record(base, reading, Asked { at: Instant::now() + later, chosen });
    }

    #[test]
    fn replicas_are_ordered_by_free_slots_then_queue_with_unknown_and_unready_after() {
        let (pool, urls) = pool(5);
        read(&pool, &urls[0], Some(capacity(1, 0, true)), Duration::ZERO);
        read(&pool, &urls[1], Some(capacity(3, 0, false)), Duration::ZERO);
        // urls[2]: never answered.
        read(&pool, &urls[3], Some(capacity(3, 5, true)), Duration::ZERO);
        read(&pool, &urls[4], Some(capacity(3, 1, true)), Duration::ZERO);
        assert_eq!(pool.ordered(), [&urls[4], &urls[3], &urls[0], &urls[2], &urls[1]].map(Url::clone));
    }

    #[test]
    fn the_first_choice_counts_as_taken_until_a_reading_asked_after_it() {
        let (pool, urls) = pool(2);
        for url in &urls {
            read(&pool, url, Some(capacity(2, 0, true)), Duration::ZERO);
        }
        // Requests arriving together spread: each first choice is one slot fuller.
        let firsts: Vec<Url> = (0..4).map(|_| pool.ordered().remove(0)).collect();
        assert_eq!(firsts, [&urls[0], &urls[1], &urls[0], &urls[1]].map(Url::clone));
        // A reading asked for before those choices (still on its way) does not undo them...
        pool.record(&urls[0], Some(capacity(2, 0, true)), Asked { at: Instant::now(), chosen: 0 });
        read(&pool, &urls[1], Some(capacity(2, 0, true)), Duration::ZERO);
        assert_eq!(pool.ordered()[0], urls[1]);
        // ...one asked for after them replaces them: the replica says what it has.
        read(&pool, &urls[0], Some(capacity(2, 0, true)), Duration::ZERO);
        assert_eq!(pool.ordered()[0], urls[0]);
    }

    #[test]
    fn a_replica_that_refused_is_full_for_a_reading_period_then_until_its_next_reading() {
        let (pool, urls) = pool(2);
        read(&pool, &urls[0], Some(capacity(4, 0, true)), Duration::ZERO);
        read(&pool, &urls[1], Some(capacity(2, 0, true)), Duration::ZERO);
        assert_eq!(pool.ordered()[0], urls[0]);
        pool.note_full(&urls[0]);
        assert_eq!(pool.ordered()[0], urls[1]);
        // A reading asked for within the period does not undo the refusal.
        read(&pool, &urls[0], Some(capacity(4, 0, true)), Duration::ZERO);
        assert_eq!(pool.ordered(), [&urls[1], &urls[0]].map(Url::clone));
        // One asked for after it does.
        read(&pool, &urls[0], Some(capacity(4, 0, true)), CAPACITY_FRESH);
        assert_eq!(pool.ordered()[0], urls[0]);
        // A replica that stops answering is unknown: after those that answer.
        read(&pool, &urls[0], None, CAPACITY_FRESH);
        assert_eq!(pool.ordered(), [&urls[1], &urls[0]].map(Url::clone));
    }
}
