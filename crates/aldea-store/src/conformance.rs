//! The behaviour every adapter of a port must have, as async checks that panic on a violation. Each
//! adapter's tests call them (in-memory here, SQLite/PostgreSQL in aldea-store-sql, Redis and Redis
//! Cluster in aldea-store-redis). Names are random so that runs sharing a server never collide.

use std::collections::HashSet;
use std::time::Duration;

use crate::{
    hash_key, Accounts, CachedGrant, Credit, CreditKind, KeyCache, KeyGrant, KeyId, KeyLimits, Keys, Limits, NewKey,
    Org, OrgId, PageRequest, RateDecision, Role, Scope, StoreError, UsageEvent, UsageGroup, UsageKind, UsageLedger,
    UsageQuery, UsageQueue, UsageTotals, UserId,
};

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// Organizations, keys, verification, tenancy, revocation, expiry, pagination.
pub async fn keys(store: &dyn Keys) {
    let now = crate::unix_now();
    let name = unique("acme");
    let org = store.create_org(&name, Credit::Millis(60_000), now).await.unwrap();
    assert_eq!(org.name, name);
    assert_eq!(store.org(&org.id).await.unwrap().as_ref(), Some(&org));
    assert_eq!(store.org(&OrgId::random()).await.unwrap(), None);
    assert_eq!(store.orgs_named(&name).await.unwrap(), std::slice::from_ref(&org));
    let twin = store.create_org(&name, Credit::Unlimited, now + 1).await.unwrap();
    assert_ne!(twin.id, org.id, "names need not be unique");
    assert_eq!(store.orgs_named(&name).await.unwrap(), [org.clone(), twin.clone()], "oldest first");
    assert!(matches!(crate::resolve_org(store, &name).await, Err(StoreError::Conflict(_))), "ambiguous name");
    assert_eq!(crate::resolve_org(store, org.id.as_str()).await.unwrap(), Some(org.clone()));
    let lone = store.create_org(&unique("lone"), Credit::Unlimited, now).await.unwrap();
    let renamed = store.rename_org(&lone.id, &unique("renamed")).await.unwrap();
    assert_eq!((&renamed.id, renamed.created_at), (&lone.id, lone.created_at));
    assert_eq!(store.org(&lone.id).await.unwrap().unwrap().name, renamed.name);
    let lone = renamed;
    assert!(matches!(store.rename_org(&OrgId::random(), "x").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.rename_org(&lone.id, " ").await, Err(StoreError::Invalid(_))));
    assert_eq!(crate::resolve_org(store, &lone.name).await.unwrap(), Some(lone.clone()));
    assert_eq!(crate::resolve_org(store, &unique("nobody")).await.unwrap(), None);
    assert!(matches!(store.create_org("  ", Credit::Unlimited, now).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.create_org("x", Credit::Millis(-5), now).await, Err(StoreError::Invalid(_))));
    // Every organization, a page at a time (other tests' organizations may be there too).
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let orgs = store.orgs(&page).await.unwrap();
        assert!(orgs.items.len() <= 2);
        seen.extend(orgs.items.into_iter().map(|o| o.id));
        match orgs.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    for id in [&org.id, &twin.id, &lone.id] {
        assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "each organization once");
    }

    let limits = KeyLimits { max_streams: Some(3), requests_per_minute: Some(100) };
    let (record, secret) = store.create_key(&org.id, NewKey { limits, ..NewKey::listen("ci") }, now).await.unwrap();
    assert!(secret.starts_with(crate::KEY_PREFIX));
    assert_eq!(record.prefix, crate::display_prefix(&secret));
    assert_eq!(record.scopes, [Scope::Listen]);
    assert!(!serde_json::to_string(&record).unwrap().contains(&secret), "a record never holds the secret");
    let grant = store.verify(&hash_key(&secret), now).await.unwrap().expect("a new key verifies");
    assert_eq!(
        grant,
        KeyGrant {
            org_id: org.id.clone(),
            key_id: record.id.clone(),
            scopes: vec![Scope::Listen],
            limits,
            credit_ok: true,
            expires_at: None,
        }
    );
    assert_eq!(store.verify(&hash_key("org_unknown"), now).await.unwrap(), None);
    assert_eq!(store.grant_by_id(&record.id, now).await.unwrap(), Some(grant.clone()), "by id: the same grant");
    assert_eq!(store.grant_by_id(&KeyId::random(), now).await.unwrap(), None);
    assert!(matches!(store.create_key(&OrgId::random(), NewKey::listen("x"), now).await, Err(StoreError::NotFound(_))));
    for bad in [
        NewKey::listen(" "),
        NewKey { scopes: vec![], ..NewKey::listen("x") },
        NewKey { limits: KeyLimits { max_streams: Some(0), requests_per_minute: None }, ..NewKey::listen("x") },
    ] {
        assert!(matches!(store.create_key(&org.id, bad, now).await, Err(StoreError::Invalid(_))));
    }
    let both = NewKey { scopes: vec![Scope::Manage, Scope::Listen], ..NewKey::listen("ops") };
    let (ops, ops_secret) = store.create_key(&org.id, both, now + 1).await.unwrap();
    assert_eq!(ops.scopes, [Scope::Listen, Scope::Manage]);
    assert_eq!(
        store.verify(&hash_key(&ops_secret), now).await.unwrap().unwrap().scopes,
        [Scope::Listen, Scope::Manage]
    );

    // Tenancy: another organization's key is not there for this one.
    assert_eq!(store.key(&org.id, &record.id).await.unwrap(), Some(record.clone()));
    assert_eq!(store.key(&twin.id, &record.id).await.unwrap(), None);
    assert_eq!(store.key_org(&record.id).await.unwrap(), Some(org.id.clone()));
    assert_eq!(store.key_org(&KeyId::random()).await.unwrap(), None);
    assert!(matches!(store.revoke_key(&twin.id, &record.id, now).await, Err(StoreError::NotFound(_))));
    assert!(store.list_keys(&twin.id, &PageRequest::first(10)).await.unwrap().items.is_empty());

    // Expiry is judged at the time asked.
    let (expiring, expiring_secret) = store
        .create_key(&org.id, NewKey { expires_at: Some(now + 10), ..NewKey::listen("short") }, now + 2)
        .await
        .unwrap();
    assert!(store.verify(&hash_key(&expiring_secret), now).await.unwrap().is_some());
    assert_eq!(store.verify(&hash_key(&expiring_secret), now + 10).await.unwrap(), None);
    assert!(store.grant_by_id(&expiring.id, now).await.unwrap().is_some());
    assert_eq!(store.grant_by_id(&expiring.id, now + 10).await.unwrap(), None);

    // Pages, oldest first.
    let all = store.list_keys(&org.id, &PageRequest::first(10)).await.unwrap();
    let ids: Vec<&KeyId> = all.items.iter().map(|k| &k.id).collect();
    assert_eq!(ids, [&record.id, &ops.id, &expiring.id]);
    assert_eq!(all.next, None);
    let first = store.list_keys(&org.id, &PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let cursor = first.next.clone().expect("a second page");
    let second = store.list_keys(&org.id, &PageRequest { limit: 2, after: Some(cursor) }).await.unwrap();
    assert_eq!(second.items.iter().map(|k| &k.id).collect::<Vec<_>>(), [&expiring.id]);
    assert_eq!(second.next, None);
    // Keys made in the same second page by id, each once.
    let tied = store.create_org(&unique("tied"), Credit::Unlimited, now).await.unwrap();
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(store.create_key(&tied.id, NewKey::listen(&format!("k{i}")), now).await.unwrap().0.id);
    }
    made.sort();
    let mut paged = Vec::new();
    let mut page = PageRequest::first(1);
    loop {
        let keys = store.list_keys(&tied.id, &page).await.unwrap();
        paged.extend(keys.items.into_iter().map(|k| k.id));
        match keys.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, made);
    assert_eq!(store.list_keys(&tied.id, &PageRequest::first(0)).await.unwrap().items.len(), 1, "limit 0 is 1");
    let bad_cursor = PageRequest { limit: 2, after: Some("nonsense".to_owned()) };
    assert!(matches!(store.list_keys(&org.id, &bad_cursor).await, Err(StoreError::Invalid(_))));

    // Revocation: once, and the key stops verifying.
    assert_eq!(store.revoke_key(&org.id, &record.id, now + 1).await.unwrap(), [hash_key(&secret)]);
    assert!(matches!(store.revoke_key(&org.id, &record.id, now + 2).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.verify(&hash_key(&secret), now + 1).await.unwrap(), None);
    assert_eq!(store.grant_by_id(&record.id, now + 1).await.unwrap(), None, "a revoked key has no grant by id");
    assert_eq!(store.key(&org.id, &record.id).await.unwrap().unwrap().revoked_at, Some(now + 1));
    assert!(matches!(store.revoke_key(&org.id, &KeyId::random(), now).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.rotate_key(&org.id, &record.id, now + 60, now).await, Err(StoreError::Conflict(_))));
    rotation(store).await;
    system_keys(store).await;
}

/// The platform's own keys: made once per organization and name, listed, made again after a
/// revocation.
async fn system_keys(store: &dyn Keys) {
    let now = crate::unix_now();
    let org = store.create_org(&unique("dashboarded"), Credit::Unlimited, now).await.unwrap();
    let other = store.create_org(&unique("other"), Credit::Unlimited, now).await.unwrap();
    let first = store.system_key(&org.id, "dashboard", now).await.unwrap();
    assert!(first.system && first.scopes == [Scope::Listen] && first.name == "dashboard");
    assert_eq!(store.system_key(&org.id, "dashboard", now + 1).await.unwrap(), first, "made once");
    assert_ne!(store.system_key(&other.id, "dashboard", now).await.unwrap().id, first.id);
    // A key a person named the same is not the system key.
    let (named, _) = store.create_key(&org.id, NewKey::listen("dashboard"), now).await.unwrap();
    assert!(!named.system);
    assert_eq!(store.system_key(&org.id, "dashboard", now).await.unwrap().id, first.id);
    let listed = store.list_keys(&org.id, &PageRequest::first(10)).await.unwrap().items;
    assert!(listed.contains(&first), "listed like any key");
    assert!(store.verify(&hash_key("dashboard"), now).await.unwrap().is_none());
    assert!(store.grant_by_id(&first.id, now).await.unwrap().is_some(), "tokens name it by id");
    store.revoke_key(&org.id, &first.id, now).await.unwrap();
    let again = store.system_key(&org.id, "dashboard", now + 2).await.unwrap();
    assert_ne!(again.id, first.id, "a revoked one is replaced");
    assert!(matches!(store.system_key(&OrgId::random(), "dashboard", now).await, Err(StoreError::NotFound(_))));
}

/// Rotation: a new secret, the old one kept for the grace, a third rotation ends the first's grace
/// at once, revocation ends them all; who made a key is kept.
async fn rotation(store: &dyn Keys) {
    let now = crate::unix_now();
    let org = store.create_org(&unique("rotating"), Credit::Unlimited, now).await.unwrap();
    let other = store.create_org(&unique("other"), Credit::Unlimited, now).await.unwrap();
    let maker = UserId::random();
    let new = NewKey { created_by: Some(maker.clone()), expires_at: Some(now + 1_000), ..NewKey::listen("rotated") };
    let (key, first) = store.create_key(&org.id, new, now).await.unwrap();
    assert_eq!((key.created_by.as_ref(), key.last_used_at, key.previous_until), (Some(&maker), None, None));
    assert!(matches!(store.rotate_key(&other.id, &key.id, now + 60, now).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.rotate_key(&org.id, &KeyId::random(), now + 60, now).await, Err(StoreError::NotFound(_))));

    let rotated = store.rotate_key(&org.id, &key.id, now + 60, now).await.unwrap();
    let second = rotated.secret.clone();
    assert_ne!(second, first);
    assert_eq!(rotated.stale_hashes, [hash_key(&first)]);
    assert_eq!((rotated.record.id.clone(), rotated.record.previous_until), (key.id.clone(), Some(now + 60)));
    assert_eq!(rotated.record.prefix, crate::display_prefix(&second));
    assert_eq!(store.key(&org.id, &key.id).await.unwrap().unwrap(), rotated.record);
    let new_grant = store.verify(&hash_key(&second), now).await.unwrap().expect("the new secret works");
    assert_eq!((new_grant.key_id.clone(), new_grant.expires_at), (key.id.clone(), Some(now + 1_000)));
    let old_grant = store.verify(&hash_key(&first), now + 59).await.unwrap().expect("the old one, in its grace");
    assert_eq!(
        (old_grant.key_id, old_grant.expires_at),
        (key.id.clone(), Some(now + 60)),
        "the grant ends with the grace"
    );
    assert_eq!(store.verify(&hash_key(&first), now + 60).await.unwrap(), None, "and not after it");

    // Rotating again: the first secret stops at once, the second keeps a grace of its own.
    let third = store.rotate_key(&org.id, &key.id, now + 30, now + 1).await.unwrap();
    assert_eq!(third.stale_hashes, [hash_key(&second), hash_key(&first)]);
    assert_eq!(store.verify(&hash_key(&first), now + 2).await.unwrap(), None);
    assert!(store.verify(&hash_key(&second), now + 2).await.unwrap().is_some());
    assert!(store.verify(&hash_key(&third.secret), now + 2).await.unwrap().is_some());
    // No grace: the old secret stops at once.
    let fourth = store.rotate_key(&org.id, &key.id, now + 2, now + 2).await.unwrap();
    assert_eq!(fourth.record.previous_until, None);
    assert_eq!(store.verify(&hash_key(&third.secret), now + 2).await.unwrap(), None);
    assert_eq!(store.verify(&hash_key(&second), now + 2).await.unwrap(), None);
    // Revoking ends every secret it had, the one in grace too.
    let fifth = store.rotate_key(&org.id, &key.id, now + 100, now + 3).await.unwrap();
    let (_, other_secret) = store.create_key(&org.id, NewKey::listen("other"), now).await.unwrap();
    let mut live = store.live_key_hashes(&org.id).await.unwrap();
    live.sort();
    let mut expected = vec![hash_key(&fifth.secret), hash_key(&fourth.secret), hash_key(&other_secret)];
    expected.sort();
    assert_eq!(live, expected, "every secret that opens a live key, the one in grace too");
    let revoked = store.revoke_key(&org.id, &key.id, now + 4).await.unwrap();
    assert_eq!(revoked, [hash_key(&fifth.secret), hash_key(&fourth.secret)]);
    assert_eq!(store.verify(&hash_key(&fourth.secret), now + 5).await.unwrap(), None);
    assert_eq!(store.verify(&hash_key(&fifth.secret), now + 5).await.unwrap(), None);
}

/// Users (one per email, any case), sessions (expiry, ending one or all), memberships and roles
/// (an organization keeps an owner; another organization's member is not this one's).
pub async fn accounts(accounts: &dyn Accounts, keys: &dyn Keys) {
    let now = crate::unix_now();
    let email = format!("{}@example.com", unique("ada"));
    let ada = accounts.create_user(&format!("  {}  ", email.to_uppercase()), "hash-1", now).await.unwrap();
    assert_eq!(ada.email, email, "trimmed and lowercased");
    assert!(!ada.is_admin);
    assert!(matches!(accounts.create_user(&email, "hash-2", now).await, Err(StoreError::Conflict(_))));
    for bad in ["", "no-at-sign", "@example.com", "a@nodot", "a b@example.com"] {
        assert!(matches!(accounts.create_user(bad, "h", now).await, Err(StoreError::Invalid(_))), "{bad:?}");
    }
    assert_eq!(accounts.user(&ada.id).await.unwrap().as_ref(), Some(&ada));
    assert_eq!(accounts.user(&UserId::random()).await.unwrap(), None);
    assert_eq!(accounts.user_by_email(&email.to_uppercase()).await.unwrap(), Some((ada.clone(), "hash-1".to_owned())));
    assert_eq!(accounts.user_by_email("nobody@example.com").await.unwrap(), None);
    accounts.set_password(&ada.id, "hash-3").await.unwrap();
    assert_eq!(accounts.user_by_email(&email).await.unwrap().unwrap().1, "hash-3");
    accounts.set_admin(&ada.id, true).await.unwrap();
    assert!(accounts.user(&ada.id).await.unwrap().unwrap().is_admin);
    assert!(matches!(accounts.set_password(&UserId::random(), "h").await, Err(StoreError::NotFound(_))));

    // Sessions: by token hash, until they expire or end.
    let (token, other_token) = (unique("session"), unique("session"));
    accounts.create_session(&ada.id, &token, now, now + 60).await.unwrap();
    accounts.create_session(&ada.id, &other_token, now, now + 60).await.unwrap();
    assert_eq!(accounts.session_user(&token, now + 59).await.unwrap().map(|u| u.id), Some(ada.id.clone()));
    assert_eq!(accounts.session_user(&token, now + 60).await.unwrap(), None, "expired");
    assert_eq!(accounts.session_user(&unique("session"), now).await.unwrap(), None);
    assert!(accounts.end_session(&token).await.unwrap());
    assert!(!accounts.end_session(&token).await.unwrap(), "ended once");
    assert_eq!(accounts.session_user(&token, now).await.unwrap(), None);
    assert_eq!(accounts.end_sessions(&ada.id).await.unwrap(), 1);
    assert_eq!(accounts.session_user(&other_token, now).await.unwrap(), None);
    assert!(matches!(
        accounts.create_session(&UserId::random(), &unique("session"), now, now + 1).await,
        Err(StoreError::NotFound(_))
    ));

    // A signup: user, owned organization with its credit, first key; a refused one makes nothing.
    let signed = accounts
        .sign_up(
            &format!("{}@example.com", unique("new")),
            "h",
            "New Co",
            Credit::Millis(5_000),
            NewKey::listen("default"),
            now,
        )
        .await
        .unwrap();
    assert_eq!(accounts.role(&signed.org.id, &signed.user.id).await.unwrap(), Some(Role::Owner));
    assert_eq!(keys.credit(&signed.org.id).await.unwrap(), Credit::Millis(5_000));
    assert_eq!(keys.key(&signed.org.id, &signed.key.id).await.unwrap().as_ref(), Some(&signed.key));
    assert!(keys.verify(&hash_key(&signed.secret), now).await.unwrap().is_some());
    let taken =
        accounts.sign_up(&signed.user.email, "h", "Twin", Credit::Millis(5_000), NewKey::listen("default"), now).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))));
    assert!(keys.orgs_named("Twin").await.unwrap().is_empty(), "nothing made for a taken email");
    let fresh = format!("{}@example.com", unique("fresh"));
    let bad_key = accounts.sign_up(&fresh, "h", &unique("badkey"), Credit::Unlimited, NewKey::listen(" "), now).await;
    assert!(matches!(bad_key, Err(StoreError::Invalid(_))));
    assert_eq!(accounts.user_by_email(&fresh).await.unwrap(), None, "no account without its organization and key");

    // Password resets: one at a time per user, used once, until they expire.
    let (first, second) = (unique("reset"), unique("reset"));
    accounts.create_password_reset(&ada.id, &first, now + 60).await.unwrap();
    accounts.create_password_reset(&ada.id, &second, now + 60).await.unwrap();
    assert_eq!(accounts.take_password_reset(&first, now).await.unwrap(), None, "replaced by the second");
    assert_eq!(accounts.take_password_reset(&second, now + 59).await.unwrap(), Some(ada.id.clone()));
    assert_eq!(accounts.take_password_reset(&second, now + 59).await.unwrap(), None, "used once");
    let late = unique("reset");
    accounts.create_password_reset(&ada.id, &late, now + 60).await.unwrap();
    assert_eq!(accounts.take_password_reset(&late, now + 60).await.unwrap(), None, "expired");
    assert!(matches!(
        accounts.create_password_reset(&UserId::random(), &unique("reset"), now + 60).await,
        Err(StoreError::NotFound(_))
    ));

    // Memberships.
    let org = keys.create_org(&unique("team"), Credit::Unlimited, now).await.unwrap();
    let elsewhere = keys.create_org(&unique("elsewhere"), Credit::Unlimited, now).await.unwrap();
    let bob = accounts.create_user(&format!("{}@example.com", unique("bob")), "h", now).await.unwrap();
    accounts.add_member(&org.id, &ada.id, Role::Owner, now).await.unwrap();
    accounts.add_member(&org.id, &bob.id, Role::Member, now + 1).await.unwrap();
    accounts.add_member(&elsewhere.id, &bob.id, Role::Admin, now + 2).await.unwrap();
    assert!(matches!(accounts.add_member(&org.id, &bob.id, Role::Admin, now).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        accounts.add_member(&OrgId::random(), &bob.id, Role::Admin, now).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        accounts.add_member(&org.id, &UserId::random(), Role::Admin, now).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(accounts.role(&org.id, &ada.id).await.unwrap(), Some(Role::Owner));
    assert_eq!(accounts.role(&elsewhere.id, &ada.id).await.unwrap(), None, "not a member there");
    let bobs: Vec<(OrgId, Role)> =
        accounts.memberships(&bob.id).await.unwrap().into_iter().map(|(o, r)| (o.id, r)).collect();
    assert_eq!(bobs, [(org.id.clone(), Role::Member), (elsewhere.id.clone(), Role::Admin)]);
    let members = accounts.members(&org.id, &PageRequest::first(1)).await.unwrap();
    assert_eq!(members.items.iter().map(|m| (&m.user.id, m.role)).collect::<Vec<_>>(), [(&ada.id, Role::Owner)]);
    let rest = accounts.members(&org.id, &PageRequest { limit: 1, after: members.next }).await.unwrap();
    assert_eq!(rest.items.iter().map(|m| &m.user.id).collect::<Vec<_>>(), [&bob.id]);
    assert_eq!(rest.next, None);

    // The last owner stays.
    assert!(matches!(accounts.set_role(&org.id, &ada.id, Role::Admin).await, Err(StoreError::Conflict(_))));
    assert!(matches!(accounts.remove_member(&org.id, &ada.id).await, Err(StoreError::Conflict(_))));
    accounts.set_role(&org.id, &bob.id, Role::Owner).await.unwrap();
    accounts.set_role(&org.id, &ada.id, Role::Admin).await.unwrap();
    accounts.remove_member(&org.id, &ada.id).await.unwrap();
    assert_eq!(accounts.role(&org.id, &ada.id).await.unwrap(), None);
    assert!(matches!(accounts.remove_member(&org.id, &ada.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(accounts.set_role(&org.id, &ada.id, Role::Member).await, Err(StoreError::NotFound(_))));
}

/// The credit ledger: grants, top-ups and adjustments append entries, the balance moves with them
/// and every grant says whether requests may start.
pub async fn credit(store: &dyn Keys) {
    let now = crate::unix_now();
    let org = store.create_org(&unique("paying"), Credit::Millis(60_000), now).await.unwrap();
    assert_eq!(store.credit(&org.id).await.unwrap(), Credit::Millis(60_000));
    let (_, secret) = store.create_key(&org.id, NewKey::listen("k"), now).await.unwrap();
    let entries = store.credit_entries(&org.id, &PageRequest::first(10)).await.unwrap().items;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].kind, entries[0].millis, entries[0].balance_after), (CreditKind::Grant, 60_000, 60_000));

    let after = store.add_credit(&org.id, CreditKind::TopUp, 5_000, Some("invoice 7"), now + 1).await.unwrap();
    assert_eq!(after, Credit::Millis(65_000));
    for (kind, millis) in [(CreditKind::TopUp, 0), (CreditKind::Grant, -1), (CreditKind::Charge, -5)] {
        assert!(matches!(store.add_credit(&org.id, kind, millis, None, now).await, Err(StoreError::Invalid(_))));
    }
    assert!(matches!(
        store.add_credit(&OrgId::random(), CreditKind::TopUp, 1, None, now).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.set_credit(&org.id, Credit::Millis(0), now + 2).await.unwrap(), Credit::Millis(0));
    assert!(!store.verify(&hash_key(&secret), now).await.unwrap().unwrap().credit_ok, "no credit left");
    assert_eq!(store.set_credit(&org.id, Credit::Unlimited, now + 3).await.unwrap(), Credit::Unlimited);
    assert!(store.verify(&hash_key(&secret), now).await.unwrap().unwrap().credit_ok);
    assert!(matches!(store.set_credit(&OrgId::random(), Credit::Unlimited, now).await, Err(StoreError::NotFound(_))));
    // Back to metered: the balance the ledger holds.
    assert_eq!(store.set_credit(&org.id, Credit::Millis(1_500), now + 4).await.unwrap(), Credit::Millis(1_500));
    assert_eq!(store.set_credit(&org.id, Credit::Millis(1_500), now + 5).await.unwrap(), Credit::Millis(1_500));
    assert!(matches!(store.credit(&OrgId::random()).await, Err(StoreError::NotFound(_))));

    let ledger = store.credit_entries(&org.id, &PageRequest::first(10)).await.unwrap().items;
    let lines: Vec<(CreditKind, i64, i64)> = ledger.iter().map(|e| (e.kind, e.millis, e.balance_after)).collect();
    assert_eq!(
        lines,
        [
            (CreditKind::Grant, 60_000, 60_000),
            (CreditKind::TopUp, 5_000, 65_000),
            (CreditKind::Adjustment, -65_000, 0),
            (CreditKind::Adjustment, 1_500, 1_500),
        ]
    );
    assert_eq!(ledger[1].reference.as_deref(), Some("invoice 7"));
    let first = store.credit_entries(&org.id, &PageRequest::first(3)).await.unwrap();
    let rest = store.credit_entries(&org.id, &PageRequest { limit: 3, after: first.next.clone() }).await.unwrap();
    assert_eq!(first.items.len() + rest.items.len(), 4);
    assert_eq!(rest.items[0].id, ledger[3].id);
    let free = store.create_org(&unique("free"), Credit::Unlimited, now).await.unwrap();
    assert!(store.credit_entries(&free.id, &PageRequest::first(10)).await.unwrap().items.is_empty());
}

/// Each event counts once; the credit is charged its audio milliseconds by event id, below zero
/// when an admitted request used more than was left, and an unlimited organization stays unlimited.
pub async fn usage_ledger(keys: &dyn Keys, ledger: &dyn UsageLedger, reports: &dyn crate::UsageReports) {
    let now = crate::unix_now();
    let org = keys.create_org(&unique("metered"), Credit::Millis(10_000), now).await.unwrap();
    let free = keys.create_org(&unique("free"), Credit::Unlimited, now).await.unwrap();
    // Two events per request: the first at seq 0, the final one at seq 1.
    let event = |org_id: &OrgId, request_id: &str, seq: u32, audio_seconds: f64| UsageEvent {
        event_id: UsageEvent::event_id(request_id, seq),
        request_id: request_id.to_owned(),
        seq,
        org_id: org_id.to_string(),
        key_id: "key".to_owned(),
        kind: UsageKind::Rest,
        model: "tiny.en".to_owned(),
        audio_seconds,
        started_at: 1_000,
        ended_at: 2_000,
        is_final: seq == 1,
        status: 200,
    };
    let (r1, r2) = (unique("r"), unique("r"));
    assert!(ledger.record(&event(&org.id, &r1, 0, 2.5)).await.unwrap());
    assert!(!ledger.record(&event(&org.id, &r1, 0, 2.5)).await.unwrap(), "a duplicate changes nothing");
    assert!(ledger.record(&event(&org.id, &r1, 1, 1.5)).await.unwrap());
    assert!(ledger.record(&event(&org.id, &r2, 0, 1.0)).await.unwrap());
    let totals = ledger.totals(&org.id).await.unwrap();
    assert_eq!(totals, UsageTotals { requests: 1, audio_millis: 5_000, events: 3 }, "r2 has no final event yet");
    assert_eq!(keys.credit(&org.id).await.unwrap(), Credit::Millis(5_000));
    assert!(ledger.record(&event(&org.id, &r2, 1, 7.0)).await.unwrap());
    assert_eq!(keys.credit(&org.id).await.unwrap(), Credit::Millis(-2_000), "the overage is kept");
    let entries = keys.credit_entries(&org.id, &PageRequest::first(10)).await.unwrap().items;
    let charges: Vec<(i64, Option<String>)> =
        entries.iter().filter(|e| e.kind == CreditKind::Charge).map(|e| (e.millis, e.reference.clone())).collect();
    assert_eq!(
        charges,
        [
            (-2_500, Some(UsageEvent::event_id(&r1, 0))),
            (-1_500, Some(UsageEvent::event_id(&r1, 1))),
            (-1_000, Some(UsageEvent::event_id(&r2, 0))),
            (-7_000, Some(UsageEvent::event_id(&r2, 1))),
        ],
        "one charge per event, by event id"
    );
    assert_eq!(ledger.totals(&org.id).await.unwrap().requests, 2);
    assert!(ledger.record(&event(&free.id, &unique("r"), 0, 100.0)).await.unwrap());
    assert_eq!(keys.credit(&free.id).await.unwrap(), Credit::Unlimited);
    assert_eq!(ledger.totals(&free.id).await.unwrap().audio_millis, 100_000);
    assert_eq!(ledger.totals(&OrgId::random()).await.unwrap(), crate::UsageTotals::default());

    // A batch: each event once, whether it came before or twice within the batch.
    let batched = keys.create_org(&unique("batched"), Credit::Millis(10_000), now).await.unwrap();
    let (b1, b2) = (unique("b"), unique("b"));
    assert!(ledger.record(&event(&batched.id, &b1, 0, 1.0)).await.unwrap());
    let batch = [
        event(&batched.id, &b1, 0, 1.0),
        event(&batched.id, &b2, 1, 2.0),
        event(&batched.id, &b1, 1, 0.5),
        event(&batched.id, &b2, 1, 2.0),
    ];
    let new = ledger.record_batch(&batch).await.unwrap();
    assert_eq!(new.iter().filter(|n| **n).count(), 2, "{new:?}");
    assert_eq!((new[0], new[2]), (false, true));
    let totals = ledger.totals(&batched.id).await.unwrap();
    assert_eq!((totals.events, totals.audio_millis, totals.requests), (3, 3_500, 2));
    assert_eq!(keys.credit(&batched.id).await.unwrap(), Credit::Millis(6_500));
    assert!(ledger.record_batch(&[]).await.unwrap().is_empty());
    batches_write_what_one_by_one_writes(keys, ledger, reports).await;
    usage_queries(keys, ledger, reports).await;
}

/// The same events into two organizations, one by one in event-id order into the first, in shuffled
/// batches (with repeats, some already recorded) into the second: the same credit and ledger
/// amounts, roll-ups, request log and keys' last use.
async fn batches_write_what_one_by_one_writes(
    keys: &dyn Keys,
    ledger: &dyn UsageLedger,
    reports: &dyn crate::UsageReports,
) {
    let now = crate::unix_now();
    let mut sides = Vec::new();
    for name in ["one-by-one", "batched"] {
        let org = keys.create_org(&unique(name), Credit::Millis(20_000), now).await.unwrap();
        let mut key_ids = Vec::new();
        for k in 0..2 {
            let (key, _) = keys.create_key(&org.id, NewKey::listen(&format!("k{k}")), now).await.unwrap();
            key_ids.push(key.id);
        }
        sides.push((org, key_ids));
    }
    // 6 requests of 1 to 3 events over three hours, two keys, both kinds, some statuses changing.
    let events = |org_id: &OrgId, key_ids: &[KeyId], tag: &str| -> Vec<UsageEvent> {
        let mut all = Vec::new();
        for r in 0..6u32 {
            let count = r % 3 + 1;
            for seq in 0..count {
                let start = 3_600_000 * i64::from(r % 3) + 60_000 * i64::from(seq) + 1_000;
                all.push(UsageEvent {
                    event_id: UsageEvent::event_id(&format!("{tag}-{r}"), seq),
                    request_id: format!("{tag}-{r}"),
                    seq,
                    org_id: org_id.to_string(),
                    key_id: key_ids[(r % 2) as usize].to_string(),
                    kind: if r % 2 == 0 { UsageKind::Rest } else { UsageKind::Stream },
                    model: if r < 3 { "tiny.en" } else { "base" }.to_owned(),
                    audio_seconds: 0.25 + f64::from(r * 3 + seq) * 0.5,
                    started_at: start,
                    ended_at: start + 30_000,
                    is_final: seq + 1 == count,
                    status: if seq + 1 == count { 1000 } else { 1011 + seq as u16 },
                });
            }
        }
        // A request whose final event comes first: the later one keeps its status, widens its times.
        for (seq, is_final) in [(0, true), (1, false)] {
            all.push(UsageEvent {
                event_id: UsageEvent::event_id(&format!("{tag}-6"), seq),
                request_id: format!("{tag}-6"),
                seq,
                org_id: org_id.to_string(),
                key_id: key_ids[0].to_string(),
                kind: UsageKind::Stream,
                model: "base".to_owned(),
                audio_seconds: 1.25,
                started_at: 10_000 - 5_000 * i64::from(seq),
                ended_at: 20_000 + 5_000 * i64::from(seq),
                is_final,
                status: if is_final { 1000 } else { 1011 },
            });
        }
        all
    };
    // Event ids are unique across organizations: the same requests under two tags of equal length.
    let base = unique("same");
    let tags = [format!("{base}-a"), format!("{base}-b")];
    let (one, batched) = (&sides[0], &sides[1]);
    let mut sequential = events(&one.0.id, &one.1, &tags[0]);
    sequential.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    for event in &sequential {
        assert!(ledger.record(event).await.unwrap());
    }
    let mut shuffled = events(&batched.0.id, &batched.1, &tags[1]);
    shuffled.reverse();
    assert_eq!(shuffled.len(), 14);
    assert!(ledger.record(&shuffled[6]).await.unwrap(), "one recorded before its batch");
    // A repeat within a batch: only its first is new.
    let first = [&shuffled[..4], &shuffled[1..2]].concat();
    assert_eq!(ledger.record_batch(&first).await.unwrap(), [true, true, true, true, false]);
    assert_eq!(ledger.record_batch(&shuffled[4..8]).await.unwrap(), [true, true, false, true]);
    assert_eq!(ledger.record_batch(&shuffled[8..]).await.unwrap(), [true; 6]);
    let again = [shuffled[0].clone(), shuffled[13].clone()];
    assert_eq!(ledger.record_batch(&again).await.unwrap(), [false, false], "recorded before");
    // The same charges (by event, amount and time), each entry's balance the one before plus it.
    let charges = |org_id: OrgId, tag: String| async move {
        let entries = keys.credit_entries(&org_id, &PageRequest::first(100)).await.unwrap().items;
        let mut balance = 0;
        for entry in &entries {
            balance += entry.millis;
            assert_eq!(entry.balance_after, balance, "{entry:?}");
        }
        let mut charges: Vec<(String, i64, i64)> = entries
            .iter()
            .filter(|e| e.kind == CreditKind::Charge)
            .map(|e| (e.reference.clone().unwrap_or_default().replacen(&tag, "", 1), e.millis, e.at))
            .collect();
        charges.sort();
        assert_eq!(charges.len(), 14);
        charges
    };
    assert_eq!(charges(one.0.id.clone(), tags[0].clone()).await, charges(batched.0.id.clone(), tags[1].clone()).await);
    assert_eq!(keys.credit(&one.0.id).await.unwrap(), keys.credit(&batched.0.id).await.unwrap());
    assert_eq!(ledger.totals(&one.0.id).await.unwrap(), ledger.totals(&batched.0.id).await.unwrap());
    for group_by in [UsageGroup::Day, UsageGroup::Key, UsageGroup::Model, UsageGroup::Kind] {
        let query = UsageQuery::new(0, 86_400, group_by).unwrap();
        let mut a = reports.usage(&one.0.id, &query).await.unwrap();
        let mut b = reports.usage(&batched.0.id, &query).await.unwrap();
        for row in &mut b {
            // By key: the other organization's key of the same place.
            if let Some(k) = batched.1.iter().position(|id| id.as_str() == row.group) {
                row.group = one.1[k].to_string();
            }
        }
        a.sort_by(|x, y| x.group.cmp(&y.group));
        b.sort_by(|x, y| x.group.cmp(&y.group));
        assert!(!a.is_empty());
        assert_eq!(a, b, "{group_by:?}");
    }
    let log = |org_id: OrgId, tag: String| async move {
        let page = reports.requests(&org_id, 100, None).await.unwrap();
        page.items
            .into_iter()
            .map(|r| {
                let request = r.request_id.trim_start_matches(tag.as_str()).to_owned();
                (request, r.model, r.kind, r.started_at, r.ended_at, r.audio_millis, r.status, r.complete)
            })
            .collect::<Vec<_>>()
    };
    let sequential_log = log(one.0.id.clone(), tags[0].clone()).await;
    assert_eq!(sequential_log.len(), 7);
    let late = sequential_log.iter().find(|r| r.0 == "-6").unwrap();
    assert_eq!((late.3, late.4, late.6, late.7), (5_000, 25_000, 1000, true), "{late:?}");
    assert_eq!(sequential_log, log(batched.0.id.clone(), tags[1].clone()).await);
    for k in 0..2 {
        let used = |org: &Org, key_ids: &[KeyId]| {
            let (org_id, key_id) = (org.id.clone(), key_ids[k].clone());
            async move { keys.key(&org_id, &key_id).await.unwrap().unwrap().last_used_at }
        };
        let (a, b) = (used(&one.0, &one.1).await, used(&batched.0, &batched.1).await);
        assert!(a.is_some());
        assert_eq!(a, b, "key {k}");
    }
}

/// The roll-ups the usage API reads: series by day, key, model and kind over a range of whole
/// hours, the request log newest first with its cursor, `last_used_at` of the key.
async fn usage_queries(keys: &dyn Keys, ledger: &dyn UsageLedger, reports: &dyn crate::UsageReports) {
    const DAY: i64 = 86_400;
    let now = crate::unix_now();
    let org = keys.create_org(&unique("queried"), Credit::Unlimited, now).await.unwrap();
    let (key_a, _) = keys.create_key(&org.id, NewKey::listen("a"), now).await.unwrap();
    let (key_b, _) = keys.create_key(&org.id, NewKey::listen("b"), now).await.unwrap();
    // 2026-12-01T00:00:00Z.
    let day1 = 1_796_083_200;
    let record =
        |request: &str, seq: u32, key: &KeyId, kind: UsageKind, model: &str, at: i64, millis: i64, last: bool| {
            let event = UsageEvent {
                event_id: UsageEvent::event_id(request, seq),
                request_id: request.to_owned(),
                seq,
                org_id: org.id.to_string(),
                key_id: key.to_string(),
                kind,
                model: model.to_owned(),
                audio_seconds: millis as f64 / 1000.0,
                started_at: at * 1000 - millis,
                ended_at: at * 1000,
                is_final: last,
                status: if kind == UsageKind::Rest { 200 } else { 1000 },
            };
            async move { assert!(ledger.record(&event).await.unwrap()) }
        };
    let (up1, up2, st1) = (unique("up"), unique("up"), unique("st"));
    record(&up1, 0, &key_a.id, UsageKind::Rest, "tiny.en", day1 + 3_600 + 5, 2_000, true).await;
    // A stream across midnight: its audio goes to the hour each event ended in, the request to the
    // day of its final event.
    record(&st1, 0, &key_b.id, UsageKind::Stream, "base.en", day1 + DAY - 10, 10_000, false).await;
    record(&st1, 1, &key_b.id, UsageKind::Stream, "base.en", day1 + DAY + 20, 30_000, true).await;
    record(&up2, 0, &key_a.id, UsageKind::Rest, "tiny.en", day1 + 2 * DAY + 7_200, 500, true).await;
    // Another organization's usage is never in this one's answers.
    let stranger = keys.create_org(&unique("stranger"), Credit::Unlimited, now).await.unwrap();
    let foreign = UsageEvent {
        event_id: UsageEvent::event_id(&unique("f"), 0),
        request_id: unique("f"),
        seq: 0,
        org_id: stranger.id.to_string(),
        key_id: key_a.id.to_string(),
        kind: UsageKind::Rest,
        model: "tiny.en".to_owned(),
        audio_seconds: 9.0,
        started_at: day1 * 1000,
        ended_at: (day1 + 4_000) * 1000,
        is_final: true,
        status: 200,
    };
    assert!(ledger.record(&foreign).await.unwrap());

    let row = |group: &str, requests: u64, streams: u64, audio_millis: i64| crate::UsageRow {
        group: group.to_owned(),
        requests,
        streams,
        audio_millis,
    };
    let three_days = crate::UsageQuery::new(day1, day1 + 3 * DAY, crate::UsageGroup::Day).unwrap();
    assert_eq!(
        reports.usage(&org.id, &three_days).await.unwrap(),
        [row("2026-12-01", 1, 0, 12_000), row("2026-12-02", 1, 1, 30_000), row("2026-12-03", 1, 0, 500)]
    );
    let by = |group_by| crate::UsageQuery { group_by, ..three_days };
    let mut by_key = vec![row(key_a.id.as_str(), 2, 0, 2_500), row(key_b.id.as_str(), 1, 1, 40_000)];
    by_key.sort_by(|a, b| a.group.cmp(&b.group));
    assert_eq!(reports.usage(&org.id, &by(crate::UsageGroup::Key)).await.unwrap(), by_key);
    assert_eq!(
        reports.usage(&org.id, &by(crate::UsageGroup::Model)).await.unwrap(),
        [row("base.en", 1, 1, 40_000), row("tiny.en", 2, 0, 2_500)]
    );
    assert_eq!(
        reports.usage(&org.id, &by(crate::UsageGroup::Kind)).await.unwrap(),
        [row("rest", 2, 0, 2_500), row("stream", 1, 1, 40_000)]
    );
    // The range is of whole hours: the hour of day 1 that holds the upload, and no other.
    let one_hour = crate::UsageQuery::new(day1 + 3_600, day1 + 3_601, crate::UsageGroup::Kind).unwrap();
    assert_eq!(reports.usage(&org.id, &one_hour).await.unwrap(), [row("rest", 1, 0, 2_000)]);
    let before = crate::UsageQuery::new(day1 - DAY, day1, crate::UsageGroup::Day).unwrap();
    assert!(reports.usage(&org.id, &before).await.unwrap().is_empty());

    // The request log: newest first, by the start of the request.
    let all = reports.requests(&org.id, 10, None).await.unwrap();
    let ids: Vec<&str> = all.items.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, [up2.as_str(), st1.as_str(), up1.as_str()]);
    assert_eq!(all.next, None);
    let stream = &all.items[1];
    assert_eq!(
        (
            stream.key_id.clone(),
            stream.kind,
            stream.model.as_str(),
            stream.audio_millis,
            stream.status,
            stream.complete
        ),
        (key_b.id.clone(), UsageKind::Stream, "base.en", 40_000, 1000, true)
    );
    assert_eq!((stream.started_at, stream.ended_at), ((day1 + DAY - 10) * 1000 - 10_000, (day1 + DAY + 20) * 1000));
    let first = reports.requests(&org.id, 2, None).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = reports.requests(&org.id, 2, first.next.as_deref()).await.unwrap();
    assert_eq!(rest.items.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), [up1.as_str()]);
    assert_eq!(rest.next, None);
    assert!(matches!(reports.requests(&org.id, 2, Some("junk")).await, Err(StoreError::Invalid(_))));
    assert!(reports.requests(&OrgId::random(), 10, None).await.unwrap().items.is_empty());
    // An unfinished request is listed, not complete, with its latest status.
    let open = unique("open");
    record(&open, 0, &key_a.id, UsageKind::Stream, "tiny.en", day1 + 3 * DAY, 1_000, false).await;
    let newest = &reports.requests(&org.id, 1, None).await.unwrap().items[0];
    assert_eq!((newest.request_id.as_str(), newest.complete), (open.as_str(), false));

    // The keys' last use, from the usage recorded (never later than it was).
    let used = |key: &KeyId| {
        let key = key.clone();
        let org = org.id.clone();
        async move { keys.key(&org, &key).await.unwrap().unwrap().last_used_at }
    };
    assert_eq!(used(&key_a.id).await, Some(day1 + 3 * DAY));
    assert_eq!(used(&key_b.id).await, Some(day1 + DAY + 20));
    record(&unique("late"), 0, &key_b.id, UsageKind::Rest, "tiny.en", day1, 100, true).await;
    assert_eq!(used(&key_b.id).await, Some(day1 + DAY + 20), "an event recorded late does not move it back");
}

/// Positive and negative entries, expiry, invalidation seen by subscribers.
pub async fn key_cache(cache: &dyn KeyCache) {
    let hash = hash_key(&unique("org_key"));
    assert_eq!(cache.get(&hash).await.unwrap(), None);
    let grant = CachedGrant::Valid(KeyGrant {
        org_id: OrgId::from("o"),
        key_id: KeyId::from("k"),
        scopes: vec![Scope::Listen],
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
