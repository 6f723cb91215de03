//! The adapter's statements, written once for SQLite and PostgreSQL: `sql_store!(Store, Db, Row)`
//! implements `KeyVerifier`, `Keys` and `UsageLedger` for a `Store` holding a `pool` of `Db`, whose
//! rows are `Row`. Placeholders are `$N` in order of first use (SQLite numbers them the same way);
//! only SQL both databases read (no `::` casts, `NOT flag` for booleans, `CAST(… AS BIGINT)` for sums).

macro_rules! sql_store {
    ($store:ident, $db:ty, $row:ty) => {
        use aldea_store::{
            CreditEntry, CreditKind, KeyGrant, KeyId, KeyLimits, KeyRecord, KeyVerifier, Keys, NewKey, Org, OrgId,
            Scope, UsageEvent, UsageLedger, UsageTotals,
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
                scopes: Scope::split(&scopes).map_err(|e| StoreError::Backend(format!("a stored key's scopes: {e}")))?,
                limits: KeyLimits {
                    max_streams: row.get::<Option<i64>, _>("max_streams").map(|n| n as u32),
                    requests_per_minute: row.get::<Option<i64>, _>("requests_per_minute").map(|n| n as u32),
                },
                created_at: row.get("created_at"),
                expires_at: row.get("expires_at"),
                revoked_at: row.get("revoked_at"),
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
                self.grant_where("k.key_hash = $1", key_hash, now).await
            }

            async fn grant_by_id(&self, key_id: &KeyId, now: i64) -> Result<Option<KeyGrant>> {
                self.grant_where("k.id = $1", key_id.as_str(), now).await
            }
        }

        #[async_trait]
        impl Keys for $store {
            async fn create_org(&self, name: &str, credit: Credit, now: i64) -> Result<Org> {
                if name.trim().is_empty() {
                    return Err(StoreError::Invalid("an organization needs a name".to_owned()));
                }
                let org = Org { id: OrgId::random(), name: name.to_owned(), created_at: now };
                let mut tx = self.pool.begin().await.map_err(backend)?;
                sqlx::query("INSERT INTO orgs (id, name, created_at, credit_unlimited, credit_millis) VALUES ($1, $2, $3, $4, 0)")
                    .bind(org.id.as_str())
                    .bind(name)
                    .bind(now)
                    .bind(credit == Credit::Unlimited)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                if let Credit::Millis(ms) = credit {
                    if ms != 0 {
                        Self::append(&mut tx, &org.id, CreditKind::Grant, ms, None, now).await?;
                    }
                }
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
                key.check()?;
                let secret = aldea_store::generate_key()?;
                let mut scopes = key.scopes;
                scopes.sort();
                scopes.dedup();
                let record = KeyRecord {
                    id: KeyId::random(),
                    org_id: org_id.clone(),
                    name: key.name,
                    prefix: aldea_store::display_prefix(&secret),
                    scopes,
                    limits: key.limits,
                    created_at: now,
                    expires_at: key.expires_at,
                    revoked_at: None,
                };
                let inserted = sqlx::query(
                    "INSERT INTO api_keys (id, org_id, name, prefix, key_hash, scopes, max_streams, requests_per_minute,
                                           created_at, expires_at)
                     SELECT $1, id, $2, $3, $4, $5, $6, $7, $8, $9 FROM orgs WHERE id = $10",
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
                .bind(org_id.as_str())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("organization {org_id}")));
                }
                Ok((record, secret))
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

            async fn revoke_key(&self, org_id: &OrgId, key_id: &KeyId, now: i64) -> Result<String> {
                let mut tx = self.pool.begin().await.map_err(backend)?;
                let row = sqlx::query("SELECT key_hash, revoked_at FROM api_keys WHERE id = $1 AND org_id = $2")
                    .bind(key_id.as_str())
                    .bind(org_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::NotFound(format!("key {key_id}")))?;
                if row.get::<Option<i64>, _>("revoked_at").is_some() {
                    return Err(StoreError::Conflict(format!("key {key_id} is revoked already")));
                }
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(key_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(row.get("key_hash"))
            }

            async fn credit(&self, org_id: &OrgId) -> Result<Credit> {
                let mut tx = self.pool.begin().await.map_err(backend)?;
                Self::credit_in(&mut tx, org_id).await
            }

            async fn set_credit(&self, org_id: &OrgId, credit: Credit, now: i64) -> Result<Credit> {
                let mut tx = self.pool.begin().await.map_err(backend)?;
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
                let mut tx = self.pool.begin().await.map_err(backend)?;
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
                let mut tx = self.pool.begin().await.map_err(backend)?;
                let kind = match event.kind {
                    aldea_store::UsageKind::Rest => "rest",
                    aldea_store::UsageKind::Stream => "stream",
                };
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
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                if inserted.rows_affected() == 0 {
                    return Ok(false);
                }
                let org_id = OrgId::from(event.org_id.as_str());
                let metered: Option<bool> = sqlx::query_scalar("SELECT NOT credit_unlimited FROM orgs WHERE id = $1")
                    .bind(org_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                if metered == Some(true) && millis != 0 {
                    Self::append(&mut tx, &org_id, CreditKind::Charge, -millis, Some(&event.event_id), event.ended_at / 1000)
                        .await?;
                }
                tx.commit().await.map_err(backend)?;
                Ok(true)
            }

            async fn totals(&self, org_id: &OrgId) -> Result<UsageTotals> {
                let row = sqlx::query(
                    "SELECT COUNT(DISTINCT request_id) AS requests, CAST(COALESCE(SUM(audio_millis), 0) AS BIGINT) AS millis,
                            COUNT(*) AS events
                     FROM usage_events WHERE org_id = $1",
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
    };
}
