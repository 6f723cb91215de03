//! Limits before any work starts: requests per minute per key, concurrent streams and uploads per
//! organization (a key's `max_streams` only stricter), as leases with a TTL that the holder renews
//! while the request lives — a gateway that dies leaves slots that free themselves.
//!
//! When the limits store is unreachable, this process's own limiter stands in ([`WithFallback`]):
//! the limits still hold per gateway replica, and an outage of the shared cache neither takes the
//! Speech API down nor lets every request through.

use std::sync::Arc;
use std::time::Duration;

use aldea_store::{KeyGrant, Limits, MemoryLimits, RateDecision};
use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::Config;

/// The shared limits store, with an in-process limiter that answers while the store cannot: every
/// operation the store fails is done on the local one instead (counted; a lease taken locally is
/// released on both, and taken again in the store by its renewal once the store is back).
pub(crate) struct WithFallback {
    shared: Arc<dyn Limits>,
    local: MemoryLimits,
    /// Operations the local limiter answered because the store failed (`Metrics::limits_fallbacks`).
    fallbacks: Counter,
}

impl WithFallback {
    pub(crate) fn new(shared: Arc<dyn Limits>, fallbacks: Counter) -> WithFallback {
        WithFallback { shared, local: MemoryLimits::new(), fallbacks }
    }

    fn fell_back(&self, operation: &str, error: &aldea_store::StoreError) {
        if self.fallbacks.inc().is_multiple_of(100) {
            tracing::warn!(error = %error, operation, "limits store unavailable; this process's limiter stands in");
        }
    }
}

#[async_trait]
impl Limits for WithFallback {
    async fn acquire(&self, scope: &str, holder: &str, limit: u32, ttl: Duration) -> aldea_store::Result<bool> {
        match self.shared.acquire(scope, holder, limit, ttl).await {
            Err(e) => {
                self.fell_back("acquire", &e);
                self.local.acquire(scope, holder, limit, ttl).await
            }
            answer => answer,
        }
    }

    async fn renew(&self, scope: &str, holder: &str, ttl: Duration) -> aldea_store::Result<bool> {
        match self.shared.renew(scope, holder, ttl).await {
            Err(e) => {
                self.fell_back("renew", &e);
                // Not held locally (taken in the store before it failed): the lease takes it here.
                self.local.renew(scope, holder, ttl).await
            }
            answer => answer,
        }
    }

    async fn release(&self, scope: &str, holder: &str) -> aldea_store::Result<()> {
        let _ = self.local.release(scope, holder).await;
        self.shared.release(scope, holder).await
    }

    async fn held(&self, scope: &str) -> aldea_store::Result<u32> {
        match self.shared.held(scope).await {
            Err(e) => {
                self.fell_back("held", &e);
                self.local.held(scope).await
            }
            answer => answer,
        }
    }

    async fn hit(&self, bucket: &str, per_minute: u32) -> aldea_store::Result<RateDecision> {
        match self.shared.hit(bucket, per_minute).await {
            Err(e) => {
                self.fell_back("hit", &e);
                self.local.hit(bucket, per_minute).await
            }
            answer => answer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Stream,
    Upload,
}

/// Counts one request against the key's per-minute budget.
pub(crate) async fn check_rate(limits: &dyn Limits, config: &Config, grant: &KeyGrant) -> Result<(), ApiError> {
    let per_minute = grant.limits.requests_per_minute.unwrap_or(config.key_requests_per_minute);
    match limits.hit(&format!("rpm:{}", grant.key_id), per_minute).await {
        Ok(RateDecision::Allowed { .. }) => Ok(()),
        Ok(RateDecision::Limited { retry_after_s }) => Err(ApiError::RateLimited {
            message: format!("this key is limited to {per_minute} requests per minute"),
            retry_after_s,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "limits store unavailable; request admitted without a rate check");
            Ok(())
        }
    }
}

/// Slots held for one request; released on [`Lease::release`] (or by their TTL if this process dies).
pub(crate) struct Lease {
    limits: Arc<dyn Limits>,
    scopes: Vec<String>,
    holder: String,
    renewing: CancellationToken,
}

/// Takes the organization's (and the key's) slot for a stream or an upload.
pub(crate) async fn acquire(
    limits: Arc<dyn Limits>,
    config: &Config,
    grant: &KeyGrant,
    kind: Kind,
    holder: &str,
) -> Result<Lease, ApiError> {
    let ttl = config.lease_ttl;
    let mut wanted: Vec<(String, u32)> = Vec::new();
    match kind {
        Kind::Stream => {
            wanted.push((format!("org:{}:streams", grant.org_id), config.org_max_streams));
            if let Some(max) = grant.limits.max_streams {
                wanted.push((format!("key:{}:streams", grant.key_id), max.min(config.org_max_streams)));
            }
        }
        Kind::Upload => wanted.push((format!("org:{}:uploads", grant.org_id), config.org_max_uploads)),
    }
    let mut taken: Vec<String> = Vec::new();
    for (scope, limit) in wanted {
        match limits.acquire(&scope, holder, limit, ttl).await {
            Ok(true) => taken.push(scope),
            Ok(false) => {
                for scope in &taken {
                    let _ = limits.release(scope, holder).await;
                }
                let what = if kind == Kind::Stream { "streams" } else { "uploads" };
                return Err(ApiError::RateLimited {
                    message: format!("at most {limit} concurrent {what} are allowed; one must end first"),
                    retry_after_s: 1,
                });
            }
            Err(e) => tracing::warn!(error = %e, scope, "limits store unavailable; slot not counted"),
        }
    }
    let lease = Lease { limits, scopes: taken, holder: holder.to_owned(), renewing: CancellationToken::new() };
    lease.spawn_renewal(ttl);
    Ok(lease)
}

impl Lease {
    fn spawn_renewal(&self, ttl: Duration) {
        let limits = self.limits.clone();
        let scopes = self.scopes.clone();
        let holder = self.holder.clone();
        let stop = self.renewing.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for scope in &scopes {
                    // A lease lost while the store was down is taken again: the request is live.
                    match limits.renew(scope, &holder, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = limits.acquire(scope, &holder, u32::MAX, ttl).await;
                        }
                        Err(e) => tracing::warn!(error = %e, scope, "cannot renew a slot lease"),
                    }
                }
            }
        });
    }

    pub(crate) async fn release(self) {
        self.renewing.cancel();
        for scope in &self.scopes {
            if let Err(e) = self.limits.release(scope, &self.holder).await {
                tracing::warn!(error = %e, scope, "cannot release a slot lease; it expires by its TTL");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped without `release` (a cancelled task): stop renewing and let the TTL free it.
        self.renewing.cancel();
    }
}
