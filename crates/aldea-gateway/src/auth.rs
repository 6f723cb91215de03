//! Who is calling: the credential forms of the contract (`Authorization: Token|Bearer`, the
//! `token, <key>` / `bearer, <jwt>` WebSocket subprotocols), key verification through a small
//! in-process cache in front of the shared cache in front of the system of record, and the HS256
//! JWTs of `/v1/auth/grant`.
//!
//! This process keeps (`moka`) each verify answer by key hash, a known key's for `key_cache_ttl`
//! and an unknown one's for `negative_cache_ttl`, and each grant by key id (browser tokens, stream
//! rechecks) for at most a second, up to `L1_CAPACITY` entries each. Requests for one key that
//! arrive while it is not cached wait for one lookup; a failed lookup is not kept (the next request
//! asks again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aldea_http::jwt::{decode_jwt, issue_jwt, JwtClaims};
use aldea_store::{
    hash_key, CachedGrant, KeyCache, KeyGrant, KeyId, KeyLimits, KeyVerifier, Scope, StoreError, KEY_PREFIX,
};
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::HeaderMap;
use moka::future::Cache;
use moka::Expiry;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::Config;

/// Keys remembered in this process (and, apart, grants by key id).
const L1_CAPACITY: u64 = 10_000;

/// A credential as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Credential {
    Key(String),
    Jwt(String),
}

/// How the credential came: a subprotocol must be echoed on the upgrade.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Via {
    Header,
    Subprotocol(&'static str),
}

/// Finds the credential in the headers: `Authorization` first, then the WebSocket subprotocols.
pub(crate) fn credential(headers: &HeaderMap) -> Option<(Credential, Via)> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = value.trim().split_once(' ')?;
        let secret = rest.trim();
        if secret.is_empty() {
            return None;
        }
        return match scheme.to_ascii_lowercase().as_str() {
            "token" => Some((Credential::Key(secret.to_owned()), Via::Header)),
            "bearer" if secret.starts_with(KEY_PREFIX) => Some((Credential::Key(secret.to_owned()), Via::Header)),
            "bearer" => Some((Credential::Jwt(secret.to_owned()), Via::Header)),
            _ => None,
        };
    }
    // Browsers cannot set headers on a WebSocket: `new WebSocket(url, ["token", key])` sends
    // `Sec-WebSocket-Protocol: token, <key>`.
    let protocols: Vec<&str> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let position = |name: &str| protocols.iter().position(|p| p.eq_ignore_ascii_case(name));
    if let Some(i) = position("token") {
        let secret = protocols.get(i + 1)?;
        return Some((Credential::Key((*secret).to_owned()), Via::Subprotocol("token")));
    }
    if let Some(i) = position("bearer") {
        let secret = protocols.get(i + 1)?;
        let credential = if secret.starts_with(KEY_PREFIX) {
            Credential::Key((*secret).to_owned())
        } else {
            Credential::Jwt((*secret).to_owned())
        };
        return Some((credential, Via::Subprotocol("bearer")));
    }
    None
}

/// How long this process keeps a verify answer: a known key's for the key cache's TTL, an unknown
/// one's for the (shorter) negative TTL.
struct AnswerExpiry {
    positive: Duration,
    negative: Duration,
}

impl AnswerExpiry {
    fn ttl(&self, answer: &CachedGrant) -> Duration {
        match answer {
            CachedGrant::Valid(_) => self.positive,
            CachedGrant::Invalid => self.negative,
        }
    }
}

impl Expiry<String, CachedGrant> for AnswerExpiry {
    fn expire_after_create(&self, _: &String, answer: &CachedGrant, _: Instant) -> Option<Duration> {
        Some(self.ttl(answer))
    }

    fn expire_after_update(
        &self,
        _: &String,
        answer: &CachedGrant,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(answer))
    }
}

/// Verifies credentials.
pub(crate) struct Authenticator {
    keys: Arc<dyn KeyVerifier>,
    shared: Arc<dyn KeyCache>,
    /// Verify answers by key hash.
    local: Cache<String, CachedGrant>,
    /// Grants by key id (browser tokens and live streams are checked by id), kept briefly.
    by_id: Cache<KeyId, Option<KeyGrant>>,
    negative_ttl: Duration,
    shared_ttl: Duration,
    jwt_secret: Option<SecretString>,
    /// Counts the invalidations received: live streams watch it and recheck their key at once.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Authenticator {
    pub(crate) fn new(config: &Config, keys: Arc<dyn KeyVerifier>, shared: Arc<dyn KeyCache>) -> Authenticator {
        let expiry = AnswerExpiry { positive: config.key_cache_ttl, negative: config.negative_cache_ttl };
        Authenticator {
            keys,
            shared,
            local: Cache::builder().max_capacity(L1_CAPACITY).expire_after(expiry).build(),
            by_id: Cache::builder()
                .max_capacity(L1_CAPACITY)
                .time_to_live(config.key_cache_ttl.min(Duration::from_secs(1)))
                .build(),
            negative_ttl: config.negative_cache_ttl,
            shared_ttl: config.shared_cache_ttl,
            jwt_secret: config.jwt_secret.clone(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes each time an invalidation arrives (a key revoked or rotated, credit changed
    /// elsewhere): a live stream rechecks its key then, instead of at its next periodic check.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Drops this process's copy of every key another replica (or the platform) invalidated.
    pub(crate) fn spawn_invalidation_listener(&self, stop: CancellationToken) {
        let shared = self.shared.clone();
        let local = self.local.clone();
        let by_id = self.by_id.clone();
        let changed = self.changed.clone();
        tokio::spawn(async move {
            loop {
                let mut rx = match shared.subscribe().await {
                    Ok(rx) => rx,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to key invalidations; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                };
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        hash = rx.recv() => match hash {
                            Some(hash) => {
                                local.invalidate(&hash).await;
                                // Grants by id are not known by hash: drop them all (they live a
                                // second at most), and have the live streams recheck now.
                                by_id.invalidate_all();
                                changed.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            None => break,
                        }
                    }
                }
                // The subscription ended (a lost connection): forget everything this process
                // holds, since invalidations may have been missed, and subscribe again.
                local.invalidate_all();
                by_id.invalidate_all();
                changed.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
    }

    /// The grant behind a credential, or the contract's 401/403/402.
    pub(crate) async fn authenticate(&self, credential: &Credential) -> Result<KeyGrant, ApiError> {
        let grant = match credential {
            Credential::Key(secret) => self.verify_key(secret).await?,
            Credential::Jwt(token) => self.verify_jwt(token).await?,
        };
        if !grant.scopes.contains(&Scope::Listen) {
            return Err(ApiError::Forbidden("this key lacks the listen scope".to_owned()));
        }
        if !grant.credit_ok {
            return Err(ApiError::PaymentRequired("the organization has no credit left".to_owned()));
        }
        Ok(grant)
    }

    /// A key's grant: this process's cache, then the shared cache, then the system of record.
    pub(crate) async fn verify_key(&self, secret: &str) -> Result<KeyGrant, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid credentials: unknown, revoked or expired key".to_owned());
        if !secret.starts_with(KEY_PREFIX) || secret.len() < KEY_PREFIX.len() + 32 || secret.len() > 256 {
            return Err(invalid());
        }
        let hash = hash_key(secret);
        let now = aldea_store::unix_now();
        // Concurrent requests for a key not cached here wait for the one lookup the first starts.
        let entry =
            self.local.try_get_with_by_ref(&hash, self.look_up(&hash, now)).await.map_err(|e| ApiError::from(&*e))?;
        match entry {
            CachedGrant::Valid(grant) if grant.expires_at.is_none_or(|at| at > now) => Ok(grant),
            _ => Err(invalid()),
        }
    }

    /// A verify answer from the shared cache, else from the system of record (then kept in the
    /// shared cache too).
    async fn look_up(&self, hash: &str, now: i64) -> Result<CachedGrant, StoreError> {
        if let Ok(Some(entry)) = self.shared.get(hash).await {
            return Ok(entry);
        }
        let entry = match self.keys.verify(hash, now).await? {
            Some(grant) => CachedGrant::Valid(grant),
            None => CachedGrant::Invalid,
        };
        let ttl = match entry {
            CachedGrant::Valid(_) => self.shared_ttl,
            CachedGrant::Invalid => self.negative_ttl,
        };
        if let Err(e) = self.shared.put(hash, &entry, ttl).await {
            tracing::warn!(error = %e, "shared key cache unavailable");
        }
        Ok(entry)
    }

    /// A browser token's grant: the signature and expiry, then the key it was granted for as it is
    /// now (a token outlives neither its key nor its organization's credit), narrowed to the
    /// token's scopes.
    async fn verify_jwt(&self, token: &str) -> Result<KeyGrant, ApiError> {
        let secret = self
            .jwt_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or_else(|| ApiError::Unauthorized("invalid credentials: tokens are not enabled here".to_owned()))?;
        let claims = decode_jwt(token, secret.as_bytes(), aldea_store::unix_now())
            .map_err(|e| ApiError::Unauthorized(format!("invalid credentials: {e}")))?;
        let mut grant = self
            .grant_by_id(&KeyId::from(claims.sub.as_str()))
            .await?
            .filter(|grant| grant.org_id.as_str() == claims.org)
            .ok_or_else(|| ApiError::Unauthorized("invalid credentials: the token's key was revoked".to_owned()))?;
        let token_scopes: Vec<&str> = claims.scope.split(' ').collect();
        grant.scopes.retain(|s| token_scopes.contains(&s.as_str()));
        grant.limits = KeyLimits {
            max_streams: stricter(grant.limits.max_streams, claims.max_streams),
            requests_per_minute: stricter(grant.limits.requests_per_minute, claims.rpm),
        };
        Ok(grant)
    }

    /// The current grant of the key with this id (`None`: revoked, expired or unknown), from the
    /// system of record at most once a second per key.
    async fn grant_by_id(&self, key_id: &KeyId) -> Result<Option<KeyGrant>, ApiError> {
        self.by_id
            .try_get_with_by_ref(key_id, self.keys.grant_by_id(key_id, aldea_store::unix_now()))
            .await
            .map_err(|e| ApiError::from(&*e))
    }

    /// Whether a live stream admitted with `grant` may go on: its key still valid and its
    /// organization still in credit. A stream opened with an API key is checked by that key's
    /// hash (a secret rotated away stops at the end of its grace, as it does for requests), one
    /// opened with a browser token by the key's id. An unreachable store lets it go on (the next
    /// check decides).
    pub(crate) async fn recheck(&self, grant: &KeyGrant, key_hash: Option<&str>) -> Result<(), ApiError> {
        let current = match key_hash {
            Some(hash) => {
                let now = aldea_store::unix_now();
                self.local
                    .try_get_with_by_ref(hash, self.look_up(hash, now))
                    .await
                    .map_err(|e| ApiError::from(&*e))
                    .map(|entry| match entry {
                        CachedGrant::Valid(current) if current.expires_at.is_none_or(|at| at > now) => Some(current),
                        _ => None,
                    })
            }
            None => self.grant_by_id(&grant.key_id).await,
        };
        match current {
            Ok(Some(current)) if !current.credit_ok => {
                Err(ApiError::PaymentRequired("the organization has no credit left".to_owned()))
            }
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                Err(ApiError::Unauthorized("the API key is no longer valid (revoked, rotated or expired)".to_owned()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "key store unavailable; the stream goes on until the next check");
                Ok(())
            }
        }
    }

    /// A token for browsers, scoped to listen, carrying the key's identity and limits.
    pub(crate) fn grant_jwt(&self, grant: &KeyGrant, ttl: Duration) -> Result<(String, u64), ApiError> {
        let secret = self
            .jwt_secret
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or_else(|| ApiError::BadRequest("temporary tokens are not enabled on this server".to_owned()))?;
        let now = aldea_store::unix_now();
        let ttl_s = ttl.as_secs().max(1);
        let claims = JwtClaims {
            sub: grant.key_id.to_string(),
            org: grant.org_id.to_string(),
            scope: Scope::Listen.as_str().to_owned(),
            iat: now,
            exp: now + ttl_s as i64,
            max_streams: grant.limits.max_streams,
            rpm: grant.limits.requests_per_minute,
        };
        Ok((issue_jwt(&claims, secret.as_bytes()), ttl_s))
    }
}

/// The stricter of two optional limits (`None`: no limit).
fn stricter(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use aldea_store::{Credit, KeyRecord, Keys, MemoryKeyCache, MemoryKeys, NewKey};
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn every_credential_form_of_the_contract() {
        let key = "org_abcdefghijklmnopqrstuvwxyz0123456789";
        type Case<'a> = (&'a [(&'static str, &'a str)], Option<(Credential, Via)>);
        let cases: &[Case<'_>] = &[
            (&[("authorization", "Token org_x")], Some((Credential::Key("org_x".into()), Via::Header))),
            (&[("authorization", "Bearer org_x")], Some((Credential::Key("org_x".into()), Via::Header))),
            (&[("authorization", "bearer eyJ.a.b")], Some((Credential::Jwt("eyJ.a.b".into()), Via::Header))),
            (&[("authorization", "Basic abc")], None),
            (&[("authorization", "Token ")], None),
            (
                &[("sec-websocket-protocol", "token, org_y")],
                Some((Credential::Key("org_y".into()), Via::Subprotocol("token"))),
            ),
            (
                &[("sec-websocket-protocol", "bearer, eyJ.x.y")],
                Some((Credential::Jwt("eyJ.x.y".into()), Via::Subprotocol("bearer"))),
            ),
            (&[("sec-websocket-protocol", "token")], None),
            (&[], None),
        ];
        for (given, expected) in cases {
            assert_eq!(&credential(&headers(given)), expected, "{given:?}");
        }
        // Two header lines are one list.
        let split = headers(&[("sec-websocket-protocol", "token"), ("sec-websocket-protocol", key)]);
        assert_eq!(credential(&split), Some((Credential::Key(key.into()), Via::Subprotocol("token"))));
    }

    /// The in-memory store behind a store's round trip, counting the lookups that reach it; while
    /// `down`, every lookup fails as an unreachable store does.
    #[derive(Default)]
    struct CountingKeys {
        inner: MemoryKeys,
        verifies: AtomicUsize,
        by_id: AtomicUsize,
        down: AtomicBool,
    }

    impl CountingKeys {
        async fn lookup(&self, counter: &AtomicUsize) -> aldea_store::Result<()> {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".to_owned()));
            }
            Ok(())
        }

        fn verifies(&self) -> usize {
            self.verifies.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl KeyVerifier for CountingKeys {
        async fn verify(&self, key_hash: &str, now: i64) -> aldea_store::Result<Option<KeyGrant>> {
            self.lookup(&self.verifies).await?;
            self.inner.verify(key_hash, now).await
        }
        async fn grant_by_id(&self, key_id: &KeyId, now: i64) -> aldea_store::Result<Option<KeyGrant>> {
            self.lookup(&self.by_id).await?;
            self.inner.grant_by_id(key_id, now).await
        }
    }

    /// A shared cache that never holds anything: every miss of this process's cache reaches `Keys`.
    struct NoSharedCache;

    #[async_trait::async_trait]
    impl KeyCache for NoSharedCache {
        async fn get(&self, _: &str) -> aldea_store::Result<Option<CachedGrant>> {
            Ok(None)
        }
        async fn put(&self, _: &str, _: &CachedGrant, _: Duration) -> aldea_store::Result<()> {
            Ok(())
        }
        async fn invalidate(&self, _: &str) -> aldea_store::Result<()> {
            Ok(())
        }
        async fn subscribe(&self) -> aldea_store::Result<tokio::sync::mpsc::Receiver<String>> {
            Err(StoreError::Unavailable("no pub/sub".to_owned()))
        }
    }

    /// An authenticator over a counting store holding one listen key (its secret and record returned).
    async fn counting(
        config: Config,
        shared: Arc<dyn KeyCache>,
    ) -> (Authenticator, Arc<CountingKeys>, String, KeyRecord) {
        let keys = Arc::new(CountingKeys::default());
        let org = keys.inner.create_org("acme", Credit::Unlimited, 0).await.unwrap();
        let (record, secret) =
            keys.inner.create_key(&org.id, NewKey::listen("k"), aldea_store::unix_now()).await.unwrap();
        (Authenticator::new(&config, keys.clone(), shared), keys, secret, record)
    }

    /// A well-formed key the store does not know.
    const UNKNOWN: &str = "org_0000000000000000000000000000000000000000";

    /// Long TTLs (the negative one the longest allowed): no answer expires while a test runs.
    fn long_ttls() -> Config {
        Config {
            key_cache_ttl: Duration::from_secs(30),
            negative_cache_ttl: Duration::from_secs(1),
            ..Config::default()
        }
    }

    /// Requests for one key that arrive together while it is not cached make one store lookup,
    /// for a known key and an unknown one alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_for_one_key_make_one_store_lookup() {
        let (auth, keys, secret, record) = counting(long_ttls(), Arc::new(NoSharedCache)).await;
        let auth = Arc::new(auth);
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let (auth, secret) = (auth.clone(), if i % 2 == 0 { secret.clone() } else { UNKNOWN.to_owned() });
                tokio::spawn(async move { auth.authenticate(&Credential::Key(secret)).await.map(|g| g.key_id) })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(id) => assert!(i % 2 == 0 && id == record.id, "{i}: {id}"),
                Err(e) => assert!(i % 2 == 1 && matches!(e, ApiError::Unauthorized(_)), "{i}: {e:?}"),
            }
        }
        assert_eq!(keys.verifies(), 2, "one lookup for the known key, one for the unknown");
    }

    /// Live streams of one key rechecked together make one lookup by id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rechecks_of_one_key_make_one_store_lookup() {
        let (auth, keys, secret, _) = counting(long_ttls(), Arc::new(NoSharedCache)).await;
        let auth = Arc::new(auth);
        let grant = auth.verify_key(&secret).await.unwrap();
        let rechecks: Vec<_> = (0..50)
            .map(|_| {
                let (auth, grant) = (auth.clone(), grant.clone());
                tokio::spawn(async move { auth.recheck(&grant, None).await.is_ok() })
            })
            .collect();
        for recheck in rechecks {
            assert!(recheck.await.unwrap());
        }
        assert_eq!(keys.by_id.load(Ordering::SeqCst), 1);
    }

    /// Each answer lives as long as its kind: an unknown key is asked again once its short TTL has
    /// passed, while a known key's answer is still kept.
    #[tokio::test]
    async fn a_negative_answer_expires_before_a_positive_one() {
        let config = Config {
            key_cache_ttl: Duration::from_secs(30),
            negative_cache_ttl: Duration::from_millis(150),
            ..Config::default()
        };
        let (auth, keys, secret, _) = counting(config, Arc::new(NoSharedCache)).await;
        assert!(auth.verify_key(&secret).await.is_ok());
        assert!(auth.verify_key(UNKNOWN).await.is_err());
        assert!(auth.verify_key(&secret).await.is_ok());
        assert!(auth.verify_key(UNKNOWN).await.is_err());
        assert_eq!(keys.verifies(), 2, "both answers are cached");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(auth.verify_key(&secret).await.is_ok());
        assert_eq!(keys.verifies(), 2, "the known key's answer is still cached");
        assert!(auth.verify_key(UNKNOWN).await.is_err());
        assert_eq!(keys.verifies(), 3, "the unknown key's answer expired");
    }

    /// An unreachable store is asked again on the next request: its error is not cached.
    #[tokio::test]
    async fn store_errors_are_not_cached() {
        let (auth, keys, secret, record) = counting(Config::default(), Arc::new(NoSharedCache)).await;
        keys.down.store(true, Ordering::SeqCst);
        for _ in 0..2 {
            assert!(matches!(auth.verify_key(&secret).await, Err(ApiError::NoCapacity(_))));
        }
        assert_eq!(keys.verifies(), 2);
        assert!(auth.grant_by_id(&record.id).await.is_err());
        keys.down.store(false, Ordering::SeqCst);
        assert_eq!(auth.verify_key(&secret).await.unwrap().key_id, record.id);
        assert_eq!(keys.verifies(), 3);
        assert!(auth.grant_by_id(&record.id).await.unwrap().is_some());
        assert_eq!(keys.by_id.load(Ordering::SeqCst), 2);
    }

    /// An invalidation published on the shared cache drops this process's copy: the next request
    /// reads the store again.
    #[tokio::test]
    async fn an_invalidated_key_is_read_again() {
        let shared = Arc::new(MemoryKeyCache::new());
        let (auth, keys, secret, _) = counting(long_ttls(), shared.clone()).await;
        let stop = CancellationToken::new();
        auth.spawn_invalidation_listener(stop.clone());
        // The listener subscribes before the invalidation is published.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(auth.verify_key(&secret).await.is_ok());
        assert!(auth.verify_key(&secret).await.is_ok());
        assert_eq!(keys.verifies(), 1);
        shared.invalidate(&hash_key(&secret)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(auth.verify_key(&secret).await.is_ok());
        assert_eq!(keys.verifies(), 2, "the invalidated entry was dropped from both caches");
        stop.cancel();
    }
}
