//! The stt replicas: the configured URLs, each host name re-resolved periodically (a headless
//! Service name gives one replica per address), ordered for each request by the free stream slots
//! and queue depth their `/v1/capacity` reports.

use secrecy::{ExposeSecret, SecretString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::Config;

/// How long a capacity reading is trusted before it is asked again.
const CAPACITY_FRESH: Duration = Duration::from_millis(250);
/// How long a replica may take to answer its capacity.
const CAPACITY_TIMEOUT: Duration = Duration::from_millis(500);
/// How often host names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Deserialize)]
struct Capacity {
    free_stream_slots: i64,
    queue_depth: i64,
    ready: bool,
}

/// One replica's base URL with what it last said.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) base: Url,
    /// Which configured URL it came from (a name may give several replicas).
    source: usize,
    capacity: Option<Capacity>,
    read_at: Option<Instant>,
}

pub(crate) struct SttPool {
    configured: Vec<Url>,
    replicas: Mutex<Vec<Replica>>,
    client: reqwest::Client,
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
        // environment may name for outbound traffic.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| PoolError(e.to_string()))?;
        let replicas = configured
            .iter()
            .enumerate()
            .map(|(source, base)| Replica { base: base.clone(), source, capacity: None, read_at: None })
            .collect();
        Ok(SttPool { configured, replicas: Mutex::new(replicas), client, token: config.service_token.clone() })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.expose_secret())
    }

    /// Resolves the configured host names again every few seconds.
    pub(crate) fn spawn_refresh(self: &std::sync::Arc<Self>, stop: CancellationToken) {
        let pool = self.clone();
        tokio::spawn(async move {
            loop {
                pool.resolve().await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RESOLVE_EVERY) => {}
                }
            }
        });
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
                        capacity: None,
                        read_at: None,
                    })
                })
                .collect();
        }
    }

    fn snapshot(&self) -> Vec<Replica> {
        self.replicas.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Replicas in the order to try them: ready ones with the most free slots (then the shortest
    /// queue) first, unknown ones next, unready or unreachable ones last.
    pub(crate) async fn ordered(&self) -> Vec<Url> {
        let mut replicas = self.snapshot();
        let stale: Vec<usize> = (0..replicas.len())
            .filter(|&i| replicas[i].read_at.is_none_or(|at| at.elapsed() > CAPACITY_FRESH))
            .collect();
        let readings =
            futures_util::future::join_all(stale.iter().map(|&i| self.read_capacity(replicas[i].base.clone()))).await;
        for (&i, reading) in stale.iter().zip(readings) {
            replicas[i].capacity = reading;
            replicas[i].read_at = Some(Instant::now());
        }
        let Ok(mut shared) = self.replicas.lock() else { return replicas.into_iter().map(|r| r.base).collect() };
        for &i in &stale {
            let fresh = &replicas[i];
            // A reading another request merged meanwhile (with the choices made since) wins.
            let still_stale = |r: &Replica| r.read_at.is_none_or(|at| at.elapsed() > CAPACITY_FRESH);
            if let Some(r) = shared.iter_mut().find(|r| r.base == fresh.base && still_stale(r)) {
                r.capacity = fresh.capacity.clone();
                r.read_at = fresh.read_at;
            }
        }
        let mut order: Vec<Replica> = shared.clone();
        order.sort_by_key(|r| match &r.capacity {
            Some(c) if c.ready => (0, -c.free_stream_slots, c.queue_depth),
            Some(_) => (2, 0, 0),
            None => (1, 0, 0),
        });
        // The first choice is counted as taken until its next reading, so that requests arriving
        // together spread over the replicas instead of all taking the one that looked freest.
        if let Some(first) = order.first() {
            if let Some(c) = shared.iter_mut().find(|r| r.base == first.base).and_then(|r| r.capacity.as_mut()) {
                c.free_stream_slots -= 1;
            }
        }
        order.into_iter().map(|r| r.base).collect()
    }

    /// Marks a replica as just having refused work, so the next request prefers the others.
    pub(crate) fn note_full(&self, base: &Url) {
        if let Ok(mut replicas) = self.replicas.lock() {
            if let Some(r) = replicas.iter_mut().find(|r| &r.base == base) {
                if let Some(c) = r.capacity.as_mut() {
                    c.free_stream_slots = 0;
                }
                r.read_at = Some(Instant::now());
            }
        }
    }

    async fn read_capacity(&self, base: Url) -> Option<Capacity> {
        let url = base.join("/v1/capacity").ok()?;
        let mut request = self.client.get(url).timeout(CAPACITY_TIMEOUT);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json::<Capacity>().await.ok()
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
