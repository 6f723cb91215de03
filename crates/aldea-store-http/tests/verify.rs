//! `PlatformKeys` against the real platform router, served on a port-0 socket over in-memory
//! stores.

use std::sync::Arc;
use std::time::Duration;

use aldea_platform::{serve, AppState, Config, Deps};
use aldea_store::{hash_key, Credit, KeyId, KeyVerifier, Keys, MemoryKeys, NewKey, StoreError};
use aldea_store_http::PlatformKeys;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "service-token-for-tests-0123456789";

/// The platform on a free port; its store and base URL.
async fn platform(service_token: Option<&str>) -> (Arc<MemoryKeys>, String, CancellationToken) {
    let store = Arc::new(MemoryKeys::new());
    let deps = Deps::single_process(store.clone());
    let config = Config { service_token: service_token.map(|t| SecretString::from(t.to_owned())), ..Config::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve(AppState::new(config, deps), listener, stop.clone()));
    (store, url, stop)
}

fn client(url: &str, token: &str) -> PlatformKeys {
    PlatformKeys::new(url, SecretString::from(token.to_owned()), Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn the_gateway_verifies_keys_through_the_platform() {
    let (store, url, _stop) = platform(Some(TOKEN)).await;
    let now = aldea_store::unix_now();
    let org = store.create_org("acme", Credit::Millis(5_000), now).await.unwrap();
    let (record, secret) = store.create_key(&org.id, NewKey::listen("ci"), now).await.unwrap();
    let keys = client(&format!("{url}/"), TOKEN);

    let expected = store.verify(&hash_key(&secret), now).await.unwrap().unwrap();
    assert_eq!(keys.verify(&hash_key(&secret), now).await.unwrap(), Some(expected.clone()), "the store's grant");
    assert_eq!(keys.grant_by_id(&record.id, now).await.unwrap(), Some(expected));
    assert_eq!(keys.verify(&hash_key("org_unknown"), now).await.unwrap(), None);
    assert_eq!(keys.grant_by_id(&KeyId::random(), now).await.unwrap(), None);

    // A rotated key's old secret: granted until its grace ends, and the grant says so.
    let rotated = store.rotate_key(&org.id, &record.id, now + 30, now).await.unwrap();
    let old = keys.verify(&hash_key(&secret), now).await.unwrap().expect("in its grace");
    assert_eq!(old.expires_at, Some(now + 30));
    assert_eq!(keys.verify(&hash_key(&secret), now + 31).await.unwrap(), None, "judged at our clock too");
    // Malformed questions get the contract's 400 body.
    let http = reqwest::Client::new();
    for bad in [r#"{"key_hash": "xyz"}"#, "{}", r#"{"key_hash": "00", "key_id": "k"}"#, "not json"] {
        let answer = http
            .post(format!("{url}{}", aldea_store_http::VERIFY_PATH))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["err_code"], "INVALID_REQUEST");
    }
    store.revoke_key(&org.id, &record.id, now).await.unwrap();
    assert_eq!(keys.verify(&hash_key(&rotated.secret), now).await.unwrap(), None, "revoked: no grant");
    assert_eq!(keys.grant_by_id(&record.id, now).await.unwrap(), None);
}

#[tokio::test]
async fn a_wrong_token_or_a_platform_that_is_down_is_unavailable_never_a_refusal() {
    let (store, url, stop) = platform(Some(TOKEN)).await;
    let now = aldea_store::unix_now();
    let org = store.create_org("acme", Credit::Unlimited, now).await.unwrap();
    let (_, secret) = store.create_key(&org.id, NewKey::listen("ci"), now).await.unwrap();
    let wrong = client(&url, "not-the-token");
    assert!(matches!(wrong.verify(&hash_key(&secret), now).await, Err(StoreError::Unavailable(_))));
    stop.cancel();
    let keys = client(&url, TOKEN);
    let down = aldea_store::conformance::eventually(Duration::from_secs(5), || async {
        matches!(keys.verify(&hash_key(&secret), now).await, Err(StoreError::Unavailable(_)))
    })
    .await;
    assert!(down, "a platform that stopped is unavailable");
    // Without a service token configured nobody is let in: unavailable, not "unknown key".
    let (off_store, off_url, _off) = platform(None).await;
    let (_, off_secret) = {
        let org = off_store.create_org("acme", Credit::Unlimited, now).await.unwrap();
        off_store.create_key(&org.id, NewKey::listen("ci"), now).await.unwrap()
    };
    assert!(matches!(
        client(&off_url, TOKEN).verify(&hash_key(&off_secret), now).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(PlatformKeys::new("platform:8000", SecretString::from(TOKEN.to_owned()), Duration::from_secs(1)).is_err());
}
