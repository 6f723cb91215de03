//! The adapter's statements, written once for SQLite and PostgreSQL: `sql_store!(Store, Db, Row)`
//! implements `KeyVerifier`, `Keys`, `Accounts`, `UsageLedger` and `UsageReports` for a `Store` holding a `pool` of `Db`, whose
//! rows are `Row`. Placeholders are `$N` in order of first use (SQLite numbers them the same way);
//! only SQL both databases read (no `::` casts, `NOT flag` for booleans, `CAST(… AS BIGINT)` for sums).

macro_rules! sql_store {
    ($store:ident, $db:ty, $row:ty, $begin:expr) => {
        use aldea_store::{
            Accounts, CreditEntry, CreditKind, KeyGrant, KeyId, KeyLimits, KeyRecord, KeyVerifier, Keys, Member, NewKey,
            Org, OrgId, Page, RequestRecord, Role, RotatedKey, Scope, UsageEvent, UsageGroup, UsageKind, UsageLedger,
            UsageQuery, UsageRow, UsageTotals, User, UserId,
        };
        use async_trait::async_trait;
        use sqlx::Row;

        fn org_from(row: &$row) -> Org {
            Org { id: OrgId::from(row.get::<String, _>("id")), name: row.get("name"), created_at: row.get("created_at") }
        }

        fn key_from(row: &$row) -> Result<KeyRecord> {
            let scopes: String = row.get("scopes");
            Ok(KeyRecord {
                id: KeyId::from(row.get::<String, _>("id")),
                org_id: OrgId::from(row.get::<String, _>("org_id")),
                name: row.get("name"),
                prefix: row.get("prefix"),
                scopes: Scope::split_known(&scopes),
                limits: KeyLimits {
                    max_streams: row.get::<Option<i64>, _>("max_streams").map(|n| n as u32),
                    requests_per_minute: row.get::<Option<i64>, _>("requests_per_minute").map(|n| n as u32),
                },
                created_at: row.get("created_at"),
                created_by: row.get::<Option<String>, _>("created_by").map(UserId::from),
                last_used_at: row.get("last_used_at"),
                expires_at: row.get("expires_at"),
                revoked_at: row.get("revoked_at"),
                previous_until: row.get("previous_until"),
                system: row.get("system"),
            })
        }

        fn request_from(row: &$row) -> Result<RequestRecord> {
            let kind = match row.get::<String, _>("kind").as_str() {
                "rest" => UsageKind::Rest,
                "stream" => UsageKind::Stream,
                other => return Err(StoreError::Backend(format!("a stored usage kind {other:?}"))),
            };
            Ok(RequestRecord {
                request_id: row.get("request_id"),
                key_id: KeyId::from(row.get::<String, _>("key_id")),
                model: row.get("model"),
                kind,
                started_at: row.get("started_at"),
                ended_at: row.get("ended_at"),
                audio_millis: row.get("audio_millis"),
                status: u16::try_from(row.get::<i64, _>("status")).unwrap_or(0),
                complete: row.get("complete"),
            })
        }

        fn entry_from(row: &$row) -> Result<CreditEntry> {
            Ok(CreditEntry {
                id: row.get("id"),
                org_id: OrgId::from(row.get::<String, _>("org_id")),
                kind: CreditKind::parse(row.get("kind"))?,
                millis: row.get("millis"),
                reference: row.get("reference"),
                at: row.get("at"),
                balance_after: row.get("balance_after"),
            })
        }

        impl $store {
            /// The grant of the one live key matching `condition` (a column compared with `value`).
            async fn grant_where(&self, condition: &'static str, value: &str, now: i64) -> Result<Option<KeyGrant>> {
                let sql = format!(
                    "SELECT k.*, o.credit_unlimited, o.credit_millis FROM api_keys k JOIN orgs o ON o.id = k.org_id
                     WHERE {condition} AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)"
                );
                let row = sqlx::query(&sql).bind(value).bind(now).fetch_optional(&self.pool).await.map_err(backend)?;
                let Some(row) = row else { return Ok(None) };
                let record = key_from(&row)?;
                let credit = credit_from(row.get("credit_unlimited"), row.get("credit_millis"));
                Ok(Some(KeyGrant {
                    org_id: record.org_id,
                    key_id: record.id,
                    scopes: record.scopes,
                    limits: record.limits,
                    credit_ok: credit.allows_requests(),
                    expires_at: record.expires_at,
                }))
            }

            /// Records one event inside `tx`: `false` when its id was recorded already.
            pub(crate) async fn record_in(tx: &mut sqlx::Transaction<'_, $db>, event: &UsageEvent) -> Result<bool> {
                let kind = event.kind.as_str();
                let millis = aldea_store::audio_millis(event.audio_seconds);
                let inserted = sqlx::query(
                    "INSERT INTO usage_events (event_id, request_id, seq, org_id, key_id, kind, model, audio_seconds,
                                               audio_millis, started_at, ended_at, is_final, status)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(&event.event_id)
                .bind(&event.request_id)
                .bind(i64::from(event.seq))
                .bind(&event.org_id)
                .bind(&event.key_id)
                .bind(kind)
                .bind(&event.model)
                .bind(event.audio_seconds)
                .bind(millis)
                .bind(event.started_at)
                .bind(event.ended_at)
                .bind(event.is_final)
                .bind(i64::from(event.status))
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Ok(false);
                }
                // The organization's row first (a no-op update: locked until commit, also where
                // its credit is unlimited), then the roll-up rows: every writer takes an
                // organization's rows in this order, so concurrent writers queue, never deadlock.
                let org_id = OrgId::from(event.org_id.as_str());
                let metered: Option<bool> = sqlx::query_scalar(
                    "UPDATE orgs SET credit_millis = credit_millis WHERE id = $1 RETURNING NOT credit_unlimited",
                )
                .bind(org_id.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(backend)?;
                if metered == Some(true) && millis != 0 {
                    Self::append(tx, &org_id, CreditKind::Charge, -millis, Some(&event.event_id), event.ended_at / 1000)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO usage_hourly (org_id, hour, key_id, model, kind, requests, audio_millis, events)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
                     ON CONFLICT (org_id, hour, key_id, model, kind) DO UPDATE SET
                         requests = usage_hourly.requests + excluded.requests,
                         audio_millis = usage_hourly.audio_millis + excluded.audio_millis,
                         events = usage_hourly.events + 1",
                )
                .bind(&event.org_id)
                .bind(aldea_store::usage_hour(event.ended_at))
                .bind(&event.key_id)
                .bind(&event.model)
                .bind(kind)
                .bind(i64::from(event.is_final))
                .bind(millis)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
                // CASE rather than MIN/LEAST: the one spelling both databases read.
                sqlx::query(
                    "INSERT INTO usage_requests (org_id, request_id, key_id, model, kind, started_at, ended_at,
                                                 audio_millis, status, complete)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (org_id, request_id) DO UPDATE SET
                         started_at = CASE WHEN excluded.started_at < usage_requests.started_at
                                      THEN excluded.started_at ELSE usage_requests.started_at END,
                         ended_at = CASE WHEN excluded.ended_at > usage_requests.ended_at
                                    THEN excluded.ended_at ELSE usage_requests.ended_at END,
                         audio_millis = usage_requests.audio_millis + excluded.audio_millis,
                         status = CASE WHEN usage_requests.complete THEN usage_requests.status ELSE excluded.status END,
                         complete = usage_requests.complete OR excluded.complete",
                )
                .bind(&event.org_id)
                .bind(&event.request_id)
                .bind(&event.key_id)
                .bind(&event.model)
                .bind(kind)
                .bind(event.started_at)
                .bind(event.ended_at)
                .bind(millis)
                .bind(i64::from(event.status))
                .bind(event.is_final)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
                let used_at = event.ended_at.div_euclid(1000);
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $1
                     WHERE id = $2 AND org_id = $3 AND (last_used_at IS NULL OR last_used_at < $4)",
                )
                .bind(used_at)
                .bind(&event.key_id)
                .bind(&event.org_id)
                .bind(used_at)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
                Ok(true)
            }

            /// Inserts an organization inside `tx` (a positive credit is its first ledger entry).
            async fn insert_org(tx: &mut sqlx::Transaction<'_, $db>, name: &str, credit: Credit, now: i64) -> Result<Org> {
                if name.trim().is_empty() {
                    return Err(StoreError::Invalid("an organization needs a name".to_owned()));
                }
                if matches!(credit, Credit::Millis(ms) if ms < 0) {
                    return Err(StoreError::Invalid("an organization starts with zero credit or more".to_owned()));
                }
                let org = Org { id: OrgId::random(), name: name.to_owned(), created_at: now };
                sqlx::query("INSERT INTO orgs (id, name, created_at, credit_unlimited, credit_millis) VALUES ($1, $2, $3, $4, 0)")
                    .bind(org.id.as_str())
                    .bind(name)
                    .bind(now)
                    .bind(credit == Credit::Unlimited)
                    .execute(&mut **tx)
                    .await
                    .map_err(backend)?;
                if let Credit::Millis(ms) = credit {
                    if ms != 0 {
                        Self::append(tx, &org.id, CreditKind::Grant, ms, None, now).await?;
                    }
                }
                Ok(org)
            }

            /// Inserts a key of `org_id` inside `tx`; the record and its secret.
            async fn insert_key(
                tx: &mut sqlx::Transaction<'_, $db>,
                org_id: &OrgId,
                key: NewKey,
                now: i64,
            ) -> Result<(KeyRecord, String)> {
                key.check()?;

                let secret = aldea_store::generate_key()?;
                let record = key.record(org_id, &secret, now);
                let inserted = sqlx::query(
                    "INSERT INTO api_keys (id, org_id, name, prefix, key_hash, scopes, max_streams, requests_per_minute,
                                           created_at, expires_at, created_by, system)
                     SELECT $1, id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM orgs WHERE id = $12",
                )
                .bind(record.id.as_str())
                .bind(&record.name)
                .bind(&record.prefix)
                .bind(aldea_store::hash_key(&secret))
                .bind(Scope::join(&record.scopes))
                .bind(record.limits.max_streams.map(i64::from))
                .bind(record.limits.requests_per_minute.map(i64::from))
                .bind(record.created_at)
                .bind(record.expires_at)
                .bind(record.created_by.as_ref().map(|u| u.as_str()))
                .bind(record.system)
                .bind(org_id.as_str())
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("organization {org_id}")));
                }
                Ok((record, secret))
            }

            /// Inserts a user inside `tx`; `Conflict` when the email has an account.
            async fn insert_user(
                tx: &mut sqlx::Transaction<'_, $db>,
                email: &str,
                password_hash: &str,
                now: i64,
            ) -> Result<User> {
                let email = aldea_store::normalize_email(email)?;
                let user = User { id: UserId::random(), email, created_at: now, is_admin: false };
                let inserted = sqlx::query(
                    "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (email) DO NOTHING",
                )
                .bind(user.id.as_str())
                .bind(&user.email)
                .bind(password_hash)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::Conflict("an account with this email exists".to_owned()));
                }
                Ok(user)
            }

            /// The credit of an organization inside `tx`.
            async fn credit_in(tx: &mut sqlx::Transaction<'_, $db>, org_id: &OrgId) -> Result<Credit> {
                let row = sqlx::query("SELECT credit_unlimited, credit_millis FROM orgs WHERE id = $1")
                    .bind(org_id.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::NotFound(format!("organization {org_id}")))?;
                Ok(credit_from(row.get("credit_unlimited"), row.get("credit_millis")))
            }

            /// Appends a ledger entry and moves the balance with it, inside `tx` (an unlimited
            /// organization's balance moves too, for the day it becomes metered).
            async fn append(
                tx: &mut sqlx::Transaction<'_, $db>,
                org_id: &OrgId,
                kind: CreditKind,
                millis: i64,
                reference: Option<&str>,
                now: i64,
            ) -> Result<i64> {
                let balance: i64 =
                    sqlx::query_scalar("UPDATE orgs SET credit_millis = credit_millis + $1 WHERE id = $2 RETURNING credit_millis")
                        .bind(millis)
                        .bind(org_id.as_str())
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(backend)?
                        .ok_or_else(|| StoreError::NotFound(format!("organization {org_id}")))?;
                sqlx::query(
                    "INSERT INTO credit_ledger (id, org_id, kind, millis, reference, at, balance_after)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(org_id.as_str())
                .bind(kind.as_str())
                .bind(millis)
                .bind(reference)
                .bind(now)
                .bind(balance)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
                Ok(balance)
            }
        }

        #[async_trait]
        impl KeyVerifier for $store {
            async fn verify(&self, key_hash: &str, now: i64) -> Result<Option<KeyGrant>> {
                if let Some(grant) = self.grant_where("k.key_hash = $1", key_hash, now).await? {
                    return Ok(Some(grant));
                }
                // The secret before a rotation, during its grace: the grant ends with the grace.
                let until: Option<i64> =
                    sqlx::query_scalar("SELECT previous_until FROM api_keys WHERE previous_hash = $1 AND previous_until > $2")
                        .bind(key_hash)
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(backend)?
                        .flatten();
                let Some(until) = until else { return Ok(None) };
                let grant = self.grant_where("k.previous_hash = $1", key_hash, now).await?;
                Ok(grant.map(|mut grant| {
                    grant.expires_at = Some(grant.expires_at.map_or(until, |at| at.min(until)));
                    grant
                }))
            }

            async fn grant_by_id(&self, key_id: &KeyId, now: i64) -> Result<Option<KeyGrant>> {
                self.grant_where("k.id = $1", key_id.as_str(), now).await
            }
        }

        #[async_trait]
        impl Keys for $store {
            async fn create_org(&self, name: &str, credit: Credit, now: i64) -> Result<Org> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                let org = Self::insert_org(&mut tx, name, credit, now).await?;
                tx.commit().await.map_err(backend)?;
                Ok(org)
            }

            async fn org(&self, org_id: &OrgId) -> Result<Option<Org>> {
                let row = sqlx::query("SELECT id, name, created_at FROM orgs WHERE id = $1")
                    .bind(org_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(row.as_ref().map(org_from))
            }

            async fn rename_org(&self, org_id: &OrgId, name: &str) -> Result<Org> {
                if name.trim().is_empty() {
                    return Err(StoreError::Invalid("an organization needs a name".to_owned()));
                }
                let row = sqlx::query("UPDATE orgs SET name = $1 WHERE id = $2 RETURNING id, name, created_at")
                    .bind(name)
                    .bind(org_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                row.as_ref().map(org_from).ok_or_else(|| StoreError::NotFound(format!("organization {org_id}")))
            }

            async fn orgs_named(&self, name: &str) -> Result<Vec<Org>> {
                let rows = sqlx::query("SELECT id, name, created_at FROM orgs WHERE name = $1 ORDER BY created_at, id")
                    .bind(name)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(rows.iter().map(org_from).collect())
            }

            async fn orgs(&self, page: &PageRequest) -> Result<Page<Org>> {
                let (created, id) = after(page)?;
                let rows = sqlx::query(
                    "SELECT id, name, created_at FROM orgs WHERE created_at > $1 OR (created_at = $2 AND id > $3)
                     ORDER BY created_at, id LIMIT $4",
                )
                .bind(created)
                .bind(created)
                .bind(id)
                .bind(i64::from(page.limit()) + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                let orgs = rows.iter().map(org_from).collect();
                Ok(page_from(orgs, page, |o: &Org| aldea_store::page_cursor(o.created_at, o.id.as_str())))
            }

            async fn create_key(&self, org_id: &OrgId, key: NewKey, now: i64) -> Result<(KeyRecord, String)> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                let made = Self::insert_key(&mut tx, org_id, key, now).await?;
                tx.commit().await.map_err(backend)?;
                Ok(made)
            }

            async fn key(&self, org_id: &OrgId, key_id: &KeyId) -> Result<Option<KeyRecord>> {
                let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1 AND org_id = $2")
                    .bind(key_id.as_str())
                    .bind(org_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                row.as_ref().map(key_from).transpose()
            }

            async fn key_org(&self, key_id: &KeyId) -> Result<Option<OrgId>> {
                let org: Option<String> = sqlx::query_scalar("SELECT org_id FROM api_keys WHERE id = $1")
                    .bind(key_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(org.map(OrgId::from))
            }

            async fn list_keys(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<KeyRecord>> {
                let (created, id) = after(page)?;
                let rows = sqlx::query(
                    "SELECT * FROM api_keys WHERE org_id = $1 AND (created_at > $2 OR (created_at = $3 AND id > $4))
                     ORDER BY created_at, id LIMIT $5",
                )
                .bind(org_id.as_str())
                .bind(created)
                .bind(created)
                .bind(id)
                .bind(i64::from(page.limit()) + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                let keys = rows.iter().map(key_from).collect::<Result<Vec<_>>>()?;
                Ok(page_from(keys, page, |k| aldea_store::page_cursor(k.created_at, k.id.as_str())))
            }

            async fn revoke_key(&self, org_id: &OrgId, key_id: &KeyId, now: i64) -> Result<Vec<String>> {
                // One statement: of two revocations racing, one revokes and the other is told.
                let hashes: Option<(String, Option<String>)> = sqlx::query_as(
                    "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL
                     RETURNING key_hash, previous_hash",
                )
                .bind(now)
                .bind(key_id.as_str())
                .bind(org_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
                if let Some((hash, previous)) = hashes {
                    return Ok([Some(hash), previous].into_iter().flatten().collect());
                }
                match self.key(org_id, key_id).await? {
                    Some(_) => Err(StoreError::Conflict(format!("key {key_id} is revoked already"))),
                    None => Err(StoreError::NotFound(format!("key {key_id}"))),
                }
            }

            async fn credit(&self, org_id: &OrgId) -> Result<Credit> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                Self::credit_in(&mut tx, org_id).await
            }

            async fn live_key_hashes(&self, org_id: &OrgId) -> Result<Vec<String>> {
                let rows: Vec<(String, Option<String>)> =
                    sqlx::query_as("SELECT key_hash, previous_hash FROM api_keys WHERE org_id = $1 AND revoked_at IS NULL")
                        .bind(org_id.as_str())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(backend)?;
                Ok(rows.into_iter().flat_map(|(hash, previous)| std::iter::once(hash).chain(previous)).collect())
            }

            async fn system_key(&self, org_id: &OrgId, name: &str, now: i64) -> Result<KeyRecord> {
                let live = || async {
                    let row = sqlx::query(
                        "SELECT * FROM api_keys WHERE org_id = $1 AND name = $2 AND system AND revoked_at IS NULL",
                    )
                    .bind(org_id.as_str())
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                    row.as_ref().map(key_from).transpose()
                };
                if let Some(record) = live().await? {
                    return Ok(record);
                }
                let new = NewKey { system: true, ..NewKey::listen(name) };
                match self.create_key(org_id, new, now).await {
                    Ok((record, _)) => Ok(record),
                    // Another caller made it first (the unique index on live system keys).
                    Err(e) => live().await?.ok_or(e),
                }
            }

            async fn rotate_key(
                &self,
                org_id: &OrgId,
                key_id: &KeyId,
                previous_until: i64,
                now: i64,
            ) -> Result<RotatedKey> {
                let secret = aldea_store::generate_key()?;
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                let old: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT key_hash, previous_hash, revoked_at FROM api_keys WHERE id = $1 AND org_id = $2",
                )
                .bind(key_id.as_str())
                .bind(org_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
                let Some((hash, previous, revoked_at)) = old else {
                    return Err(StoreError::NotFound(format!("key {key_id}")));
                };
                if revoked_at.is_some() {
                    return Err(StoreError::Conflict(format!("key {key_id} is revoked")));
                }
                let keep = previous_until > now;
                // The old hash is compared too: of two rotations racing, one rotates and the other
                // is told (PostgreSQL's READ COMMITTED re-checks the row it waited for).
                let row = sqlx::query(
                    "UPDATE api_keys SET key_hash = $1, prefix = $2, previous_hash = $3, previous_until = $4
                     WHERE id = $5 AND org_id = $6 AND key_hash = $7 AND revoked_at IS NULL RETURNING *",
                )
                .bind(aldea_store::hash_key(&secret))
                .bind(aldea_store::display_prefix(&secret))
                .bind(keep.then_some(hash.as_str()))
                .bind(keep.then_some(previous_until))
                .bind(key_id.as_str())
                .bind(org_id.as_str())
                .bind(hash.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .ok_or_else(|| StoreError::Conflict(format!("key {key_id} changed while rotating")))?;
                let record = key_from(&row)?;
                tx.commit().await.map_err(backend)?;
                Ok(RotatedKey { record, secret, stale_hashes: [Some(hash), previous].into_iter().flatten().collect() })
            }

            async fn set_credit(&self, org_id: &OrgId, credit: Credit, now: i64) -> Result<Credit> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                Self::credit_in(&mut tx, org_id).await?;
                sqlx::query("UPDATE orgs SET credit_unlimited = $1 WHERE id = $2")
                    .bind(credit == Credit::Unlimited)
                    .bind(org_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                if let Credit::Millis(target) = credit {
                    let balance: i64 = sqlx::query_scalar("SELECT credit_millis FROM orgs WHERE id = $1")
                        .bind(org_id.as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if target != balance {
                        Self::append(&mut tx, org_id, CreditKind::Adjustment, target - balance, None, now).await?;
                    }
                }
                let after = Self::credit_in(&mut tx, org_id).await?;
                tx.commit().await.map_err(backend)?;
                Ok(after)
            }

            async fn add_credit(
                &self,
                org_id: &OrgId,
                kind: CreditKind,
                millis: i64,
                reference: Option<&str>,
                now: i64,
            ) -> Result<Credit> {
                aldea_store::check_credit_change(kind, millis)?;
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                Self::append(&mut tx, org_id, kind, millis, reference, now).await?;
                let after = Self::credit_in(&mut tx, org_id).await?;
                tx.commit().await.map_err(backend)?;
                Ok(after)
            }

            async fn credit_entries(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<CreditEntry>> {
                let (seq, _) = after(page)?;
                let rows = sqlx::query("SELECT * FROM credit_ledger WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                    .bind(org_id.as_str())
                    .bind(seq)
                    .bind(i64::from(page.limit()) + 1)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let entries = rows
                    .iter()
                    .map(|row| Ok((row.get::<i64, _>("seq"), entry_from(row)?)))
                    .collect::<Result<Vec<(i64, CreditEntry)>>>()?;
                let page = page_from(entries, page, |(seq, e)| aldea_store::page_cursor(*seq, &e.id));
                Ok(Page { items: page.items.into_iter().map(|(_, e)| e).collect(), next: page.next })
            }
        }

        #[async_trait]
        impl UsageLedger for $store {
            async fn record(&self, event: &UsageEvent) -> Result<bool> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                let new = Self::record_in(&mut tx, event).await?;
                tx.commit().await.map_err(backend)?;
                Ok(new)
            }

            async fn record_batch(&self, events: &[UsageEvent]) -> Result<Vec<bool>> {
                // One transaction (one commit) for the batch. Its organizations' rows are locked
                // first, in id order: a writer holding one waits for no other row of another
                // writer's organizations, so workers with overlapping batches queue instead of
                // deadlocking. Then the events in id order.
                let mut orgs: Vec<&str> = events.iter().map(|e| e.org_id.as_str()).collect();
                orgs.sort_unstable();
                orgs.dedup();
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                for org in orgs {
                    sqlx::query("UPDATE orgs SET credit_millis = credit_millis WHERE id = $1")
                        .bind(org)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                }
                let mut order: Vec<usize> = (0..events.len()).collect();
                order.sort_by(|a, b| events[*a].event_id.cmp(&events[*b].event_id));
                let new = Self::record_ordered(&mut tx, events, &order).await?;
                tx.commit().await.map_err(backend)?;
                Ok(new)
            }

            async fn totals(&self, org_id: &OrgId) -> Result<UsageTotals> {
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests,
                            CAST(COALESCE(SUM(audio_millis), 0) AS BIGINT) AS millis,
                            CAST(COALESCE(SUM(events), 0) AS BIGINT) AS events
                     FROM usage_hourly WHERE org_id = $1",
                )
                .bind(org_id.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
                Ok(UsageTotals {
                    requests: row.get::<i64, _>("requests") as u64,
                    audio_millis: row.get("millis"),
                    events: row.get::<i64, _>("events") as u64,
                })
            }

        }

        #[async_trait]
        impl aldea_store::UsageReports for $store {
            async fn usage(&self, org_id: &OrgId, query: &UsageQuery) -> Result<Vec<UsageRow>> {
                let group = match query.group_by {
                    UsageGroup::Day => "CAST(hour - hour % 86400 AS TEXT)",
                    UsageGroup::Key => "key_id",
                    UsageGroup::Model => "model",
                    UsageGroup::Kind => "kind",
                };
                let sql = format!(
                    "SELECT {group} AS grp, CAST(SUM(requests) AS BIGINT) AS requests,
                            CAST(SUM(CASE WHEN kind = 'stream' THEN requests ELSE 0 END) AS BIGINT) AS streams,
                            CAST(SUM(audio_millis) AS BIGINT) AS millis
                     FROM usage_hourly WHERE org_id = $1 AND hour >= $2 AND hour < $3 GROUP BY {group}"
                );
                let rows = sqlx::query(&sql)
                    .bind(org_id.as_str())
                    .bind(query.start)
                    .bind(query.end)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let mut usage = rows
                    .iter()
                    .map(|row| {
                        let group: String = row.get("grp");
                        let group = match query.group_by {
                            UsageGroup::Day => aldea_store::utc_day(
                                group.parse().map_err(|_| StoreError::Backend(format!("a usage day {group:?}")))?,
                            ),
                            _ => group,
                        };
                        Ok(UsageRow {
                            group,
                            requests: row.get::<i64, _>("requests") as u64,
                            streams: row.get::<i64, _>("streams") as u64,
                            audio_millis: row.get("millis"),
                        })
                    })
                    .collect::<Result<Vec<UsageRow>>>()?;
                usage.sort_by(|a, b| a.group.cmp(&b.group));
                Ok(usage)
            }

            async fn requests(&self, org_id: &OrgId, limit: u32, before: Option<&str>) -> Result<Page<RequestRecord>> {
                let (at, id) = match before {
                    Some(cursor) => aldea_store::parse_page_cursor(cursor)?,
                    None => (i64::MAX, String::new()),
                };
                let limit = limit.clamp(1, aldea_store::MAX_PAGE);
                // Without a cursor every start is before i64::MAX; with one, ties on the start
                // are ordered by request id.
                let rows = sqlx::query(
                    "SELECT * FROM usage_requests WHERE org_id = $1 AND (started_at < $2 OR (started_at = $3 AND request_id < $4))
                     ORDER BY started_at DESC, request_id DESC LIMIT $5",
                )
                .bind(org_id.as_str())
                .bind(at)
                .bind(at)
                .bind(id)
                .bind(i64::from(limit) + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                let mut items = rows.iter().map(request_from).collect::<Result<Vec<_>>>()?;
                let next = (items.len() > limit as usize)
                    .then(|| aldea_store::page_cursor(items[limit as usize - 1].started_at, &items[limit as usize - 1].request_id));
                items.truncate(limit as usize);
                Ok(Page { items, next })
            }
        }
        fn stored_role(text: &str) -> Result<Role> {
            Role::parse(text).map_err(|e| StoreError::Backend(format!("a stored role: {e}")))
        }

        fn user_from(row: &$row) -> User {
            User {
                id: UserId::from(row.get::<String, _>("id")),
                email: row.get("email"),
                created_at: row.get("created_at"),
                is_admin: row.get("is_admin"),
            }
        }

        impl $store {
            /// Takes the organization's row lock until the transaction ends (a no-op update: both
            /// databases lock the row, where only PostgreSQL has `FOR UPDATE`), so that two role
            /// changes cannot each see another owner and leave none.
            async fn lock_org(tx: &mut sqlx::Transaction<'_, $db>, org_id: &OrgId) -> Result<()> {
                let locked = sqlx::query("UPDATE orgs SET credit_millis = credit_millis WHERE id = $1")
                    .bind(org_id.as_str())
                    .execute(&mut **tx)
                    .await
                    .map_err(backend)?;
                if locked.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("organization {org_id}")));
                }
                Ok(())
            }

            /// The member's role, inside `tx`; `NotFound` for no member. `Conflict` when `leaving`
            /// the owner role would leave the organization without one.
            async fn member_role(
                tx: &mut sqlx::Transaction<'_, $db>,
                org_id: &OrgId,
                user_id: &UserId,
                leaving_owner: bool,
            ) -> Result<Role> {
                Self::lock_org(tx, org_id).await?;
                let role: String = sqlx::query_scalar("SELECT role FROM members WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id.as_str())
                    .bind(user_id.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::NotFound(format!("member {user_id}")))?;
                let role = stored_role(&role)?;
                if role == Role::Owner && leaving_owner {
                    let others: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM members WHERE org_id = $1 AND role = 'owner' AND user_id <> $2",
                    )
                    .bind(org_id.as_str())
                    .bind(user_id.as_str())
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(backend)?;
                    if others == 0 {
                        return Err(StoreError::Conflict("an organization keeps at least one owner".to_owned()));
                    }
                }
                Ok(role)
            }
        }

        #[async_trait]
        impl Accounts for $store {
            async fn create_user(&self, email: &str, password_hash: &str, now: i64) -> Result<User> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                let user = Self::insert_user(&mut tx, email, password_hash, now).await?;
                tx.commit().await.map_err(backend)?;
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
            ) -> Result<aldea_store::SignedUp> {
                // One transaction: a failure anywhere leaves no account without its organization.
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                let user = Self::insert_user(&mut tx, email, password_hash, now).await?;
                let org = Self::insert_org(&mut tx, org_name, credit, now).await?;
                sqlx::query("INSERT INTO members (org_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)")
                    .bind(org.id.as_str())
                    .bind(user.id.as_str())
                    .bind(Role::Owner.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                let (key, secret) = Self::insert_key(&mut tx, &org.id, key, now).await?;
                tx.commit().await.map_err(backend)?;
                Ok(aldea_store::SignedUp { user, org, key, secret })
            }

            async fn user(&self, user_id: &UserId) -> Result<Option<User>> {
                let row = sqlx::query("SELECT id, email, created_at, is_admin FROM users WHERE id = $1")
                    .bind(user_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(row.as_ref().map(user_from))
            }

            async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>> {
                let Ok(email) = aldea_store::normalize_email(email) else { return Ok(None) };
                let row =
                    sqlx::query("SELECT id, email, created_at, is_admin, password_hash FROM users WHERE email = $1")
                        .bind(email)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(backend)?;
                Ok(row.map(|row| (user_from(&row), row.get("password_hash"))))
            }

            async fn set_password(&self, user_id: &UserId, password_hash: &str) -> Result<()> {
                let updated = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(user_id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("user {user_id}")));
                }
                Ok(())
            }

            async fn set_admin(&self, user_id: &UserId, is_admin: bool) -> Result<()> {
                let updated = sqlx::query("UPDATE users SET is_admin = $1 WHERE id = $2")
                    .bind(is_admin)
                    .bind(user_id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                if updated.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("user {user_id}")));
                }
                Ok(())
            }

            async fn create_password_reset(&self, user_id: &UserId, token_hash: &str, expires_at: i64) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                sqlx::query("DELETE FROM password_resets WHERE user_id = $1")
                    .bind(user_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                let inserted = sqlx::query(
                    "INSERT INTO password_resets (token_hash, user_id, expires_at) SELECT $1, id, $2 FROM users WHERE id = $3",
                )
                .bind(token_hash)
                .bind(expires_at)
                .bind(user_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("user {user_id}")));
                }
                tx.commit().await.map_err(backend)
            }

            async fn take_password_reset(&self, token_hash: &str, now: i64) -> Result<Option<UserId>> {
                // One statement: of two resets racing with one token, one gets the user.
                let taken: Option<(String, i64)> =
                    sqlx::query_as("DELETE FROM password_resets WHERE token_hash = $1 RETURNING user_id, expires_at")
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(backend)?;
                Ok(taken.filter(|(_, expires_at)| *expires_at > now).map(|(user, _)| UserId::from(user)))
            }

            async fn create_session(&self, user_id: &UserId, token_hash: &str, now: i64, expires_at: i64) -> Result<()> {
                let inserted = sqlx::query(
                    "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)
                     SELECT $1, id, $2, $3 FROM users WHERE id = $4",
                )
                .bind(token_hash)
                .bind(now)
                .bind(expires_at)
                .bind(user_id.as_str())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("user {user_id}")));
                }
                Ok(())
            }

            async fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<User>> {
                let row = sqlx::query(
                    "SELECT u.id, u.email, u.created_at, u.is_admin FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.token_hash = $1 AND s.expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
                Ok(row.as_ref().map(user_from))
            }

            async fn end_session(&self, token_hash: &str) -> Result<bool> {
                let deleted = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(deleted.rows_affected() > 0)
            }

            async fn end_sessions(&self, user_id: &UserId) -> Result<u64> {
                let deleted = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(user_id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(deleted.rows_affected())
            }

            async fn add_member(&self, org_id: &OrgId, user_id: &UserId, role: Role, now: i64) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                Self::lock_org(&mut tx, org_id).await?;
                let user: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                    .bind(user_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                if user.is_none() {
                    return Err(StoreError::NotFound(format!("user {user_id}")));
                }
                let inserted = sqlx::query(
                    "INSERT INTO members (org_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (org_id, user_id) DO NOTHING",
                )
                .bind(org_id.as_str())
                .bind(user_id.as_str())
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::Conflict("already a member".to_owned()));
                }
                tx.commit().await.map_err(backend)
            }

            async fn set_role(&self, org_id: &OrgId, user_id: &UserId, role: Role) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                Self::member_role(&mut tx, org_id, user_id, role != Role::Owner).await?;
                sqlx::query("UPDATE members SET role = $1 WHERE org_id = $2 AND user_id = $3")
                    .bind(role.as_str())
                    .bind(org_id.as_str())
                    .bind(user_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)
            }

            async fn remove_member(&self, org_id: &OrgId, user_id: &UserId) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await.map_err(backend)?;
                Self::member_role(&mut tx, org_id, user_id, true).await?;
                sqlx::query("DELETE FROM members WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id.as_str())
                    .bind(user_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)
            }

            async fn role(&self, org_id: &OrgId, user_id: &UserId) -> Result<Option<Role>> {
                let role: Option<String> =
                    sqlx::query_scalar("SELECT role FROM members WHERE org_id = $1 AND user_id = $2")
                        .bind(org_id.as_str())
                        .bind(user_id.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(backend)?;
                role.as_deref().map(stored_role).transpose()
            }

            async fn memberships(&self, user_id: &UserId) -> Result<Vec<(Org, Role)>> {
                let rows = sqlx::query(
                    "SELECT o.id, o.name, o.created_at, m.role FROM members m JOIN orgs o ON o.id = m.org_id
                     WHERE m.user_id = $1 ORDER BY m.seq",
                )
                .bind(user_id.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                rows.iter()
                    .map(|row| {
                        let role = stored_role(row.get("role"))?;
                        Ok((org_from(row), role))
                    })
                    .collect()
            }

            async fn members(&self, org_id: &OrgId, page: &PageRequest) -> Result<Page<Member>> {
                let (seq, _) = after(page)?;
                let rows = sqlx::query(
                    "SELECT m.seq, m.role, m.added_at, u.id, u.email, u.created_at, u.is_admin
                     FROM members m JOIN users u ON u.id = m.user_id
                     WHERE m.org_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
                )
                .bind(org_id.as_str())
                .bind(seq)
                .bind(i64::from(page.limit()) + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                let members = rows
                    .iter()
                    .map(|row| {
                        let role = stored_role(row.get("role"))?;
                        let member = Member { user: user_from(row), role, added_at: row.get("added_at") };
                        Ok((row.get::<i64, _>("seq"), member))
                    })
                    .collect::<Result<Vec<(i64, Member)>>>()?;
                let page = page_from(members, page, |(seq, m)| aldea_store::page_cursor(*seq, m.user.id.as_str()));
                Ok(Page { items: page.items.into_iter().map(|(_, m)| m).collect(), next: page.next })
            }
        }
    };
}
