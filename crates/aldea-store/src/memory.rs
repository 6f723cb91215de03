//! In-process adapters: one process's state behind a mutex. They are the embedded default for the
//! cache, limits and queue, and the reference the conformance suite checks other adapters against.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, Notify};

use crate::{
    display_prefix, generate_key, hash_key, Accounts, CachedGrant, Credit, CreditEntry, CreditKind, DeadLetter,
    Delivery, KeyCache, KeyGrant, KeyId, KeyRecord, KeyVerifier, Keys, Limits, Member, NewKey, Org, OrgId, Page,
    PageRequest, RateDecision, RequestRecord, Result, Role, RotatedKey, StoreError, UsageEvent, UsageGroup,
    UsageLedger, UsageQuery, UsageQueue, UsageReports, UsageRow, UsageTotals, User, UserId,
};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct KeysState {
    orgs: Vec<Org>,
    credit: HashMap<OrgId, Credit>,
    ledger: Vec<CreditEntry>,
    keys: Vec<StoredKey>,
    /// Recorded event ids, and the roll-ups the SQL adapters keep: per (org, hour, key, model,
    /// kind) and per (org, request).
    events: std::collections::HashSet<String>,
    hourly: BTreeMap<(OrgId, i64, String, String, &'static str), Hourly>,
    requests: HashMap<(OrgId, String), RequestRecord>,
    users: Vec<(User, String)>,
    /// Token hash → (user, expiry).
    sessions: HashMap<String, (UserId, i64)>,
    /// Reset token hash → (user, expiry).
    resets: HashMap<String, (UserId, i64)>,
    /// In the order they were added.
    members: Vec<(OrgId, UserId, Role, i64)>,
}

struct StoredKey {
    record: KeyRecord,
    hash: String,
    /// The hash before the last rotation (works until `record.previous_until`).
    previous: Option<String>,
}

#[derive(Default)]
struct Hourly {
    requests: u64,
    audio_millis: i64,
    events: u64,
}

impl KeysState {
    fn key_mut(&mut self, org_id: &OrgId, key_id: &KeyId) -> Result<&mut StoredKey> {
        self.keys
            .iter_mut()
            .find(|k| &k.record.id == key_id && &k.record.org_id == org_id)
            .ok_or_else(|| StoreError::NotFound(format!("key {key_id}")))
    }

    /// A key's grant at `now`, unless it is revoked or expired.
    fn grant(&self, record: &KeyRecord, now: i64) -> Option<KeyGrant> {
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        let credit = self.credit.get(&record.org_id).copied().unwrap_or(Credit::Millis(0));
        Some(KeyGrant {
            org_id: record.org_id.clone(),
            key_id: record.id.clone(),
            scopes: record.scopes.clone(),
            limits: record.limits,
            credit_ok: credit.allows_requests(),
            expires_at: record.expires_at,
        })
    }

    fn credit_of(&self, org_id: &OrgId) -> Result<Credit> {
        self.credit.get(org_id).copied().ok_or_else(|| StoreError::NotFound(format!("organization {org_id}")))
    }

    /// Appends a ledger entry and moves the balance with it (an unlimited organization's entries
    /// are kept, its balance moves too, for the day it becomes metered).
    fn append(&mut self, org_id: &OrgId, kind: CreditKind, millis: i64, reference: Option<&str>, now: i64) -> Credit {
        let balance = self.balance(org_id).saturating_add(millis);
        self.ledger.push(CreditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            org_id: org_id.clone(),
            kind,
            millis,
            reference: reference.map(str::to_owned),
            at: now,
            balance_after: balance,
        });
        let credit = self.credit.entry(org_id.clone()).or_insert(Credit::Millis(0));
        if let Credit::Millis(left) = credit {
            *left = balance;
        }
        *credit
    }

    fn user_index(&self, user_id: &UserId) -> Result<usize> {
        self.users
            .iter()
            .position(|(u, _)| &u.id == user_id)
            .ok_or_else(|| StoreError::NotFound(format!("user {user_id}")))
    }

    fn member_index(&self, org_id: &OrgId, user_id: &UserId) -> Result<usize> {
        self.members
            .iter()
            .position(|(o, u, _, _)| o == org_id && u == user_id)
            .ok_or_else(|| StoreError::NotFound(format!("member {user_id}")))
    }

    /// `Conflict` when the organization's only owner would stop being one.
    fn keeps_an_owner(&self, org_id: &OrgId, leaving: &UserId) -> Result<()> {
        let others = self.members.iter().any(|(o, u, r, _)| o == org_id && u != leaving && *r == Role::Owner);
        let leaving_owner = self.members.iter().any(|(o, u, r, _)| o == org_id && u == leaving && *r == Role::Owner);
        if leaving_owner && !others {
            return Err(StoreError::Conflict("an organization keeps at least one owner".to_owned()));
        }
        Ok(())
    }

    fn balance(&self, org_id: &OrgId) -> i64 {
        self.ledger.iter().rev().find(|e| &e.org_id == org_id).map_or(0, |e| e.balance_after)
    }
}

/// One page of `items` (sorted by cursor key) after `page.after`.
fn page_of<T: Clone>(items: Vec<T>, page: &PageRequest, key: impl Fn(&T) -> (i64, String)) -> Result<Page<T>> {
    let after = page.after.as_deref().map(crate::parse_page_cursor).transpose()?;
    let mut rest: Vec<T> = items.into_iter().filter(|item| after.as_ref().is_none_or(|a| key(item) > *a)).collect();
    let limit = page.limit() as usize;
    let next = (rest.len() > limit).then(|| {
        let (created, id) = key(&rest[limit - 1]);
        crate::page_cursor(created, &id)
    });
    rest.truncate(limit);
    Ok(Page { items: rest, next })
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
impl KeyVerifier for MemoryKeys {
    async fn verify(&self, key_hash: &str, now: i64) -> Result<Option<KeyGrant>> {
        let state = lock(&self.state);
        if let Some(key) = state.keys.iter().find(|k| k.hash == key_hash) {
            return Ok(state.grant(&key.record, now));
        }
        // The secret before a rotation, during its grace: the grant ends with the grace.
        let Some(key) = state.keys.iter().find(|k| k.previous.as_deref() == Some(key_hash)) else { return Ok(None) };
        let Some(until) = key.record.previous_until.filter(|until| *until > now) else { return Ok(None) };
        Ok(state.grant(&key.record, now).map(|mut grant| {
            grant.expires_at = Some(grant.expires_at.map_or(until, |at| at.min(until)));
            grant
        }))
    }

    async fn grant_by_id(&self, key_id: &KeyId, now: i64) -> Result<Option<KeyGrant>> {
        let state = lock(&self.state);
        Ok(state.keys.iter().find(|k| &k.record.id == key_id).and_then(|k| state.grant(&k.record, now)))
    }
}

#[async_trait]
impl Keys for MemoryKeys {
    async fn create_org(&self, name: &str, credit: Credit, now: i64) -> Result<Org> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("an organization needs a name".to_owned()));
        }
        if matches!(credit, Credit::Millis(ms) if ms < 0) {
            return Err(StoreError::Invalid("an organization starts with zero credit or more".to_owned()));
        }
        let mut state = lock(&self.state);
        let org = Org { id: OrgId::random(), name: name.to_owned(), created_at: now };
        state.orgs.push(org.clone());
        match credit {
            Credit::Unlimited => {
                state.credit.insert(org.id.clone(), Credit::Unlimited);
            }
            Credit::Millis(ms) => {
                state.credit.insert(org.id.clone(), Credit::Millis(0));
                if ms != 0 {
                    state.append(&org.id, CreditKind::Grant, ms, None, now);
                }
            }
        }
        Ok(org)
    }

    async fn org(&self, org_id: &OrgId) -> Result<Option<Org>> {
        Ok(lock(&self.state).orgs.iter().find(|o| &o.id == org_id).cloned())
    }

    async fn rename_org(&self, org_id: &OrgId, name: &str) -> Result<Org> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("an organization needs a name".to_owned()));
        }
        let mut state = lock(&self.state);
        let org = state
            .orgs
            .iter_mut()
            .find(|o| &o.id == org_id)
            .ok_or_else(|| StoreError::NotFound(format!("organization {org_id}")))?;
        org.name = name.to_owned();
        Ok(org.clone())
    }

    async fn orgs_named(&self, name: &str) -> Result<Vec<Org>> {
        let mut named: Vec<Org> = lock(&self.state).orgs.iter().filter(|o| o.name == name).cloned().collect();
        named.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        Ok(named)
    }

    async fn orgs(&self, page: &PageRequest) -> Result<Page<Org>> {
        let mut orgs = lock(&self.state).orgs.clone();
        orgs.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        page_of(orgs, page, |o| (o.created_at, o.id.to_string()))
    }

    async fn create_key(&self, org_id: &OrgId, key: NewKey, now: i64) -> Result<(KeyRecord, String)> {
        key.check()?;
        let secret = generate_key()?;
        let mut state = lock(&self.state);
        if !state.orgs.iter().any(|o| &o.id == org_id) {
            return Err(StoreError::NotFound(format!("organization {org_id}")));
        }
        let record = key.record(org_id, &secret, now);
        state.keys.push(StoredKey { record: record.clone(), hash: hash_key(&secret), previous: None });
        Ok((record, secret))
    }

    async fn key(&self, org_id: &OrgId, key_id: &KeyId) -> Result<Option<KeyRecord>> {
        let state = lock(&self.state);
        Ok(state.keys.iter().map(|k| &k.record).find(|r| &r.id == key_id && &r.org_id == org_id).cloned())
    }

    async fn key_org(&self, key_id: &KeyId) -> Result<Option<OrgId>> {
        Ok(lock(&self.state).keys.iter().find(|k| &k.record.id == key_id).map(|k| k.record.org_id.clone()))
    }

    async fn list_keys(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<KeyRecord>> {
        let mut keys: Vec<KeyRecord> = {
            let state = lock(&self.state);
            state.keys.iter().map(|k| &k.record).filter(|r| &r.org_id == org_id).cloned().collect()
        };
        keys.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
        page_of(keys, page, |k| (k.created_at, k.id.to_string()))
    }

    async fn revoke_key(&self, org_id: &OrgId, key_id: &KeyId, now: i64) -> Result<Vec<String>> {
        let mut state = lock(&self.state);
        let key = state.key_mut(org_id, key_id)?;
        if key.record.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!("key {key_id} is revoked already")));
        }
        key.record.revoked_at = Some(now);
        Ok([Some(key.hash.clone()), key.previous.clone()].into_iter().flatten().collect())
    }

    async fn live_key_hashes(&self, org_id: &OrgId) -> Result<Vec<String>> {
        let state = lock(&self.state);
        let live = state.keys.iter().filter(|k| &k.record.org_id == org_id && k.record.revoked_at.is_none());
        Ok(live.flat_map(|k| std::iter::once(k.hash.clone()).chain(k.previous.clone())).collect())
    }

    async fn system_key(&self, org_id: &OrgId, name: &str, now: i64) -> Result<KeyRecord> {
        let live = |state: &KeysState| {
            state
                .keys
                .iter()
                .map(|k| &k.record)
                .find(|r| &r.org_id == org_id && r.system && r.name == name && r.revoked_at.is_none())
                .cloned()
        };
        if let Some(record) = live(&lock(&self.state)) {
            return Ok(record);
        }
        NewKey::listen(name).check()?;
        // One lock from the check to the push: two callers make one key.
        let secret = generate_key()?;
        let mut state = lock(&self.state);
        if let Some(record) = live(&state) {
            return Ok(record);
        }
        if !state.orgs.iter().any(|o| &o.id == org_id) {
            return Err(StoreError::NotFound(format!("organization {org_id}")));
        }
        let record = NewKey { system: true, ..NewKey::listen(name) }.record(org_id, &secret, now);
        state.keys.push(StoredKey { record: record.clone(), hash: hash_key(&secret), previous: None });
        Ok(record)
    }

    async fn rotate_key(&self, org_id: &OrgId, key_id: &KeyId, previous_until: i64, now: i64) -> Result<RotatedKey> {
        let secret = generate_key()?;
        let mut state = lock(&self.state);
        let key = state.key_mut(org_id, key_id)?;
        if key.record.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!("key {key_id} is revoked")));
        }
        let stale_hashes = [Some(key.hash.clone()), key.previous.clone()].into_iter().flatten().collect();
        let old = std::mem::replace(&mut key.hash, hash_key(&secret));
        key.previous = (previous_until > now).then_some(old);
        key.record.previous_until = key.previous.as_ref().map(|_| previous_until);
        key.record.prefix = display_prefix(&secret);
        Ok(RotatedKey { record: key.record.clone(), secret, stale_hashes })
    }

    async fn credit(&self, org_id: &OrgId) -> Result<Credit> {
        lock(&self.state).credit_of(org_id)
    }

    async fn set_credit(&self, org_id: &OrgId, credit: Credit, now: i64) -> Result<Credit> {
        let mut state = lock(&self.state);
        state.credit_of(org_id)?;
        match credit {
            Credit::Unlimited => {
                state.credit.insert(org_id.clone(), Credit::Unlimited);
                Ok(Credit::Unlimited)
            }
            Credit::Millis(target) => {
                let balance = state.balance(org_id);
                state.credit.insert(org_id.clone(), Credit::Millis(balance));
                if target == balance {
                    return Ok(Credit::Millis(balance));
                }
                Ok(state.append(org_id, CreditKind::Adjustment, target - balance, None, now))
            }
        }
    }

    async fn add_credit(
        &self,
        org_id: &OrgId,
        kind: CreditKind,
        millis: i64,
        reference: Option<&str>,
        now: i64,
    ) -> Result<Credit> {
        crate::check_credit_change(kind, millis)?;
        let mut state = lock(&self.state);
        state.credit_of(org_id)?;
        Ok(state.append(org_id, kind, millis, reference, now))
    }

    async fn credit_entries(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<CreditEntry>> {
        let entries: Vec<(usize, CreditEntry)> = {
            let state = lock(&self.state);
            state.ledger.iter().enumerate().filter(|(_, e)| &e.org_id == org_id).map(|(i, e)| (i, e.clone())).collect()
        };
        // Entries in the order they were appended: the position is the cursor's "created".
        let page = page_of(entries, page, |(i, e)| (*i as i64, e.id.clone()))?;
        Ok(Page { items: page.items.into_iter().map(|(_, e)| e).collect(), next: page.next })
    }
}

#[async_trait]
impl Accounts for MemoryKeys {
    async fn create_user(&self, email: &str, password_hash: &str, now: i64) -> Result<User> {
        let email = crate::normalize_email(email)?;
        let mut state = lock(&self.state);
        if state.users.iter().any(|(u, _)| u.email == email) {
            return Err(StoreError::Conflict("an account with this email exists".to_owned()));
        }
        let user = User { id: UserId::random(), email, created_at: now, is_admin: false };
        state.users.push((user.clone(), password_hash.to_owned()));
        Ok(user)
    }

    async fn sign_up(
        &self,
        email: &str,
        password_hash: &str,
        org_name: &str,
        credit: Credit,
        key: NewKey,
        now: i64,
    ) -> Result<crate::SignedUp> {
        // Everything that can refuse is checked before anything is made.
        crate::normalize_email(email)?;
        key.check()?;
        if org_name.trim().is_empty() || matches!(credit, Credit::Millis(ms) if ms < 0) {
            return Err(StoreError::Invalid("an organization needs a name and zero credit or more".to_owned()));
        }
        let user = self.create_user(email, password_hash, now).await?;
        let org = self.create_org(org_name, credit, now).await?;
        self.add_member(&org.id, &user.id, Role::Owner, now).await?;
        let (key, secret) = self.create_key(&org.id, key, now).await?;
        Ok(crate::SignedUp { user, org, key, secret })
    }

    async fn user(&self, user_id: &UserId) -> Result<Option<User>> {
        Ok(lock(&self.state).users.iter().find(|(u, _)| &u.id == user_id).map(|(u, _)| u.clone()))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>> {
        let Ok(email) = crate::normalize_email(email) else { return Ok(None) };
        Ok(lock(&self.state).users.iter().find(|(u, _)| u.email == email).cloned())
    }

    async fn set_password(&self, user_id: &UserId, password_hash: &str) -> Result<()> {
        let mut state = lock(&self.state);
        let index = state.user_index(user_id)?;
        state.users[index].1 = password_hash.to_owned();
        Ok(())
    }

    async fn set_admin(&self, user_id: &UserId, is_admin: bool) -> Result<()> {
        let mut state = lock(&self.state);
        let index = state.user_index(user_id)?;
        state.users[index].0.is_admin = is_admin;
        Ok(())
    }

    async fn create_password_reset(&self, user_id: &UserId, token_hash: &str, expires_at: i64) -> Result<()> {
        let mut state = lock(&self.state);
        state.user_index(user_id)?;
        state.resets.retain(|_, (user, _)| user != user_id);
        state.resets.insert(token_hash.to_owned(), (user_id.clone(), expires_at));
        Ok(())
    }

    async fn take_password_reset(&self, token_hash: &str, now: i64) -> Result<Option<UserId>> {
        let mut state = lock(&self.state);
        Ok(state.resets.remove(token_hash).filter(|(_, expires_at)| *expires_at > now).map(|(user, _)| user))
    }

    async fn create_session(&self, user_id: &UserId, token_hash: &str, _now: i64, expires_at: i64) -> Result<()> {
        let mut state = lock(&self.state);
        state.user_index(user_id)?;
        if state.sessions.contains_key(token_hash) {
            return Err(StoreError::Conflict("a session with this token exists".to_owned()));
        }
        state.sessions.insert(token_hash.to_owned(), (user_id.clone(), expires_at));
        Ok(())
    }

    async fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<User>> {
        let state = lock(&self.state);
        let Some((user_id, expires_at)) = state.sessions.get(token_hash) else { return Ok(None) };
        if *expires_at <= now {
            return Ok(None);
        }
        Ok(state.users.iter().find(|(u, _)| &u.id == user_id).map(|(u, _)| u.clone()))
    }

    async fn end_session(&self, token_hash: &str) -> Result<bool> {
        Ok(lock(&self.state).sessions.remove(token_hash).is_some())
    }

    async fn end_sessions(&self, user_id: &UserId) -> Result<u64> {
        let mut state = lock(&self.state);
        let before = state.sessions.len();
        state.sessions.retain(|_, (u, _)| u != user_id);
        Ok((before - state.sessions.len()) as u64)
    }

    async fn add_member(&self, org_id: &OrgId, user_id: &UserId, role: Role, now: i64) -> Result<()> {
        let mut state = lock(&self.state);
        state.credit_of(org_id)?;
        state.user_index(user_id)?;
        if state.member_index(org_id, user_id).is_ok() {
            return Err(StoreError::Conflict("already a member".to_owned()));
        }
        state.members.push((org_id.clone(), user_id.clone(), role, now));
        Ok(())
    }

    async fn set_role(&self, org_id: &OrgId, user_id: &UserId, role: Role) -> Result<()> {
        let mut state = lock(&self.state);
        let index = state.member_index(org_id, user_id)?;
        if role != Role::Owner {
            state.keeps_an_owner(org_id, user_id)?;
        }
        state.members[index].2 = role;
        Ok(())
    }

    async fn remove_member(&self, org_id: &OrgId, user_id: &UserId) -> Result<()> {
        let mut state = lock(&self.state);
        let index = state.member_index(org_id, user_id)?;
        state.keeps_an_owner(org_id, user_id)?;
        state.members.remove(index);
        Ok(())
    }

    async fn role(&self, org_id: &OrgId, user_id: &UserId) -> Result<Option<Role>> {
        let state = lock(&self.state);
        Ok(state.member_index(org_id, user_id).ok().map(|i| state.members[i].2))
    }

    async fn memberships(&self, user_id: &UserId) -> Result<Vec<(Org, Role)>> {
        let state = lock(&self.state);
        Ok(state
            .members
            .iter()
            .filter(|(_, u, _, _)| u == user_id)
            .filter_map(|(o, _, r, _)| state.orgs.iter().find(|org| &org.id == o).map(|org| (org.clone(), *r)))
            .collect())
    }

    async fn members(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<Member>> {
        let members: Vec<(usize, Member)> = {
            let state = lock(&self.state);
            state
                .members
                .iter()
                .enumerate()
                .filter(|(_, (o, _, _, _))| o == org_id)
                .filter_map(|(i, (_, u, role, at))| {
                    let user = state.users.iter().find(|(user, _)| &user.id == u)?.0.clone();
                    Some((i, Member { user, role: *role, added_at: *at }))
                })
                .collect()
        };
        // Members in the order they were added: the position is the cursor's "created".
        let page = page_of(members, page, |(i, m)| (*i as i64, m.user.id.to_string()))?;
        Ok(Page { items: page.items.into_iter().map(|(_, m)| m).collect(), next: page.next })
    }
}

#[async_trait]
impl UsageLedger for MemoryKeys {
    async fn record(&self, event: &UsageEvent) -> Result<bool> {
        let mut state = lock(&self.state);
        if !state.events.insert(event.event_id.clone()) {
            return Ok(false);
        }
        let org_id = OrgId::from(event.org_id.as_str());
        let millis = crate::audio_millis(event.audio_seconds);
        let hour = crate::usage_hour(event.ended_at);
        let bucket = (org_id.clone(), hour, event.key_id.clone(), event.model.clone(), event.kind.as_str());
        let hourly = state.hourly.entry(bucket).or_default();
        hourly.requests += u64::from(event.is_final);
        hourly.audio_millis += millis;
        hourly.events += 1;
        let request =
            state.requests.entry((org_id.clone(), event.request_id.clone())).or_insert_with(|| RequestRecord {
                request_id: event.request_id.clone(),
                key_id: KeyId::from(event.key_id.as_str()),
                model: event.model.clone(),
                kind: event.kind,
                started_at: event.started_at,
                ended_at: event.ended_at,
                audio_millis: 0,
                status: event.status,
                complete: false,
            });
        request.started_at = request.started_at.min(event.started_at);
        request.ended_at = request.ended_at.max(event.ended_at);
        request.audio_millis += millis;
        if !request.complete {
            request.status = event.status;
        }
        request.complete |= event.is_final;
        let used_at = event.ended_at.div_euclid(1000);
        if let Some(key) =
            state.keys.iter_mut().find(|k| k.record.id.as_str() == event.key_id && k.record.org_id == org_id)
        {
            key.record.last_used_at = Some(key.record.last_used_at.map_or(used_at, |at| at.max(used_at)));
        }
        if matches!(state.credit.get(&org_id), Some(Credit::Millis(_))) && millis != 0 {
            state.append(&org_id, CreditKind::Charge, -millis, Some(&event.event_id), event.ended_at / 1000);
        }
        Ok(true)
    }

    async fn totals(&self, org_id: &OrgId) -> Result<UsageTotals> {
        let state = lock(&self.state);
        let mut totals = UsageTotals::default();
        for (_, hourly) in state.hourly.iter().filter(|((org, ..), _)| org == org_id) {
            totals.requests += hourly.requests;
            totals.audio_millis += hourly.audio_millis;
            totals.events += hourly.events;
        }
        Ok(totals)
    }
}

#[async_trait]
impl UsageReports for MemoryKeys {
    async fn usage(&self, org_id: &OrgId, query: &UsageQuery) -> Result<Vec<UsageRow>> {
        let state = lock(&self.state);
        let mut rows: BTreeMap<String, UsageRow> = BTreeMap::new();
        for ((org, hour, key, model, kind), hourly) in &state.hourly {
            if org != org_id || *hour < query.start || *hour >= query.end {
                continue;
            }
            let group = match query.group_by {
                UsageGroup::Day => crate::utc_day(*hour),
                UsageGroup::Key => key.clone(),
                UsageGroup::Model => model.clone(),
                UsageGroup::Kind => (*kind).to_owned(),
            };
            let row = rows.entry(group.clone()).or_insert(UsageRow { group, requests: 0, streams: 0, audio_millis: 0 });
            row.requests += hourly.requests;
            row.streams += if *kind == "stream" { hourly.requests } else { 0 };
            row.audio_millis += hourly.audio_millis;
        }
        Ok(rows.into_values().collect())
    }

    async fn requests(&self, org_id: &OrgId, limit: u32, before: Option<&str>) -> Result<Page<RequestRecord>> {
        let before = before.map(crate::parse_page_cursor).transpose()?;
        let state = lock(&self.state);
        let mut requests: Vec<&RequestRecord> = state
            .requests
            .iter()
            .filter(|((org, _), _)| org == org_id)
            .map(|(_, r)| r)
            .filter(|r| before.as_ref().is_none_or(|(at, id)| (r.started_at, &r.request_id) < (*at, id)))
            .collect();
        requests.sort_by(|a, b| (b.started_at, &b.request_id).cmp(&(a.started_at, &a.request_id)));
        let limit = limit.clamp(1, crate::MAX_PAGE) as usize;
        let next = (requests.len() > limit)
            .then(|| crate::page_cursor(requests[limit - 1].started_at, &requests[limit - 1].request_id));
        Ok(Page { items: requests.into_iter().take(limit).cloned().collect(), next })
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
    async fn accounts() {
        let store = MemoryKeys::new();
        crate::conformance::accounts(&store, &store).await;
    }

    #[tokio::test]
    async fn credit() {
        crate::conformance::credit(&MemoryKeys::new()).await;
    }

    #[tokio::test]
    async fn usage_ledger() {
        let store = MemoryKeys::new();
        crate::conformance::usage_ledger(&store, &store, &store).await;
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
