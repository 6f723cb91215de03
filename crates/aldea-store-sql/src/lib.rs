//! The system of record in SQL: organizations, API keys (by hash), credit and recorded usage.
//! SQLite is the embedded single-machine store (`$ALDEA_HOME/aldea.db`): a key created by the CLI
//! while `aldea all` runs is seen by the next request, since both open the same file.
//!
//! Invariant: secrets never reach the database (only [`aldea_store::hash_key`]); an event id is
//! recorded once, and its credit charge happens in the same transaction; the schema is created and
//! upgraded by [`SqlStore::open`] (sqlx's migrator over `migrations/sqlite/`, each step applied once).
#![forbid(unsafe_code)]

use std::path::Path;
use std::str::FromStr;

use aldea_store::{
    Credit, KeyGrant, KeyLimits, KeyRecord, Keys, NewKey, Org, Result, StoreError, UsageEvent, UsageLedger, UsageTotals,
};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// The schema, one numbered SQL file per step under `migrations/sqlite/`, embedded at compile time;
/// sqlx records each applied step (with its checksum) in `_sqlx_migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

fn backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Backend(other.to_string()),
    }
}

/// Organizations, keys, credit and usage in SQLite.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: SqlitePool,
}

impl SqlStore {
    /// Opens (creating when missing) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqlStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL lets the CLI write while a running server reads; a writer waits for the other.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        SqlStore::connect(options).await
    }

    /// A private in-memory database (tests).
    pub async fn in_memory() -> Result<SqlStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(backend)?.foreign_keys(true);
        SqlStore::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<SqlStore> {
        // One connection: SQLite serializes writers anyway, and an in-memory database lives in it.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(backend)?;
        let store = SqlStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => backend(e),
            other => StoreError::Backend(format!("schema migration: {other}")),
        })
    }
}

fn credit_columns(credit: Credit) -> (bool, f64) {
    match credit {
        Credit::Unlimited => (true, 0.0),
        Credit::Seconds(s) => (false, s.max(0.0)),
    }
}

fn credit_from(unlimited: bool, seconds: f64) -> Credit {
    if unlimited {
        Credit::Unlimited
    } else {
        Credit::Seconds(seconds)
    }
}

fn org_from(row: &sqlx::sqlite::SqliteRow) -> Org {
    Org { id: row.get("id"), name: row.get("name"), created_at: row.get("created_at") }
}

fn key_from(row: &sqlx::sqlite::SqliteRow) -> KeyRecord {
    let scopes: String = row.get("scopes");
    KeyRecord {
        id: row.get("id"),
        org_id: row.get("org_id"),
        name: row.get("name"),
        prefix: row.get("prefix"),
        scopes: scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        limits: KeyLimits {
            max_streams: row.get::<Option<i64>, _>("max_streams").map(|n| n as u32),
            requests_per_minute: row.get::<Option<i64>, _>("requests_per_minute").map(|n| n as u32),
        },
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        revoked_at: row.get("revoked_at"),
    }
}

impl SqlStore {
    /// The grant of the one live key matching `condition` (a column compared with `value`).
    async fn grant_where(&self, condition: &'static str, value: &str, now: i64) -> Result<Option<KeyGrant>> {
        let sql = format!(
            "SELECT k.*, o.credit_unlimited, o.credit_seconds FROM api_keys k JOIN orgs o ON o.id = k.org_id
             WHERE {condition} AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?)"
        );
        let row = sqlx::query(&sql).bind(value).bind(now).fetch_optional(&self.pool).await.map_err(backend)?;
        Ok(row.map(|row| {
            let record = key_from(&row);
            let credit = credit_from(row.get("credit_unlimited"), row.get("credit_seconds"));
            KeyGrant {
                org_id: record.org_id,
                key_id: record.id,
                scopes: record.scopes,
                limits: record.limits,
                credit_ok: credit.allows_requests(),
                expires_at: record.expires_at,
            }
        }))
    }
}

#[async_trait]
impl Keys for SqlStore {
    async fn ensure_org(&self, name: &str, credit: Credit) -> Result<Org> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("an organization needs a name".to_owned()));
        }
        let (unlimited, seconds) = credit_columns(credit);
        sqlx::query(
            "INSERT INTO orgs (id, name, created_at, credit_unlimited, credit_seconds) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(name)
        .bind(aldea_store::unix_now())
        .bind(unlimited)
        .bind(seconds)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.org_by_name(name).await?.ok_or_else(|| StoreError::Backend("the organization vanished".to_owned()))
    }

    async fn org_by_name(&self, name: &str) -> Result<Option<Org>> {
        let row = sqlx::query("SELECT id, name, created_at FROM orgs WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.as_ref().map(org_from))
    }

    async fn create_key(&self, org_id: &str, key: NewKey, now: i64) -> Result<(KeyRecord, String)> {
        let secret = aldea_store::generate_key()?;
        let record = KeyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            org_id: org_id.to_owned(),
            name: key.name,
            prefix: aldea_store::display_prefix(&secret),
            scopes: key.scopes,
            limits: key.limits,
            created_at: now,
            expires_at: key.expires_at,
            revoked_at: None,
        };
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, prefix, key_hash, scopes, max_streams, requests_per_minute,
                                   created_at, expires_at)
             SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ? FROM orgs WHERE id = ?",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.prefix)
        .bind(aldea_store::hash_key(&secret))
        .bind(record.scopes.join(" "))
        .bind(record.limits.max_streams.map(i64::from))
        .bind(record.limits.requests_per_minute.map(i64::from))
        .bind(record.created_at)
        .bind(record.expires_at)
        .bind(org_id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("organization {org_id}")));
        }
        Ok((record, secret))
    }

    async fn verify(&self, key_hash: &str, now: i64) -> Result<Option<KeyGrant>> {
        self.grant_where("k.key_hash = ?", key_hash, now).await
    }

    async fn grant_by_id(&self, key_id: &str, now: i64) -> Result<Option<KeyGrant>> {
        self.grant_where("k.id = ?", key_id, now).await
    }

    async fn list_keys(&self, org_id: Option<&str>) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys WHERE (?1 IS NULL OR org_id = ?1) ORDER BY created_at, rowid")
            .bind(org_id)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(key_from).collect())
    }

    async fn revoke_key(&self, key_id: &str, now: i64) -> Result<Option<String>> {
        let hash: Option<String> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING key_hash",
        )
        .bind(now)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(hash)
    }

    async fn set_credit(&self, org_id: &str, credit: Credit) -> Result<()> {
        let (unlimited, seconds) = credit_columns(credit);
        let updated = sqlx::query("UPDATE orgs SET credit_unlimited = ?, credit_seconds = ? WHERE id = ?")
            .bind(unlimited)
            .bind(seconds)
            .bind(org_id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("organization {org_id}")));
        }
        Ok(())
    }

    async fn credit(&self, org_id: &str) -> Result<Credit> {
        let row = sqlx::query("SELECT credit_unlimited, credit_seconds FROM orgs WHERE id = ?")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("organization {org_id}")))?;
        Ok(credit_from(row.get("credit_unlimited"), row.get("credit_seconds")))
    }
}

#[async_trait]
impl UsageLedger for SqlStore {
    async fn record(&self, event: &UsageEvent) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let kind = match event.kind {
            aldea_store::UsageKind::Rest => "rest",
            aldea_store::UsageKind::Stream => "stream",
        };
        let inserted = sqlx::query(
            "INSERT INTO usage_events (event_id, request_id, seq, org_id, key_id, kind, model, audio_seconds,
                                       started_at, ended_at, is_final, status)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event.event_id)
        .bind(&event.request_id)
        .bind(i64::from(event.seq))
        .bind(&event.org_id)
        .bind(&event.key_id)
        .bind(kind)
        .bind(&event.model)
        .bind(event.audio_seconds)
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
        sqlx::query(
            "UPDATE orgs SET credit_seconds = MAX(0.0, credit_seconds - ?) WHERE id = ? AND credit_unlimited = 0",
        )
        .bind(event.audio_seconds)
        .bind(&event.org_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn totals(&self, org_id: &str) -> Result<UsageTotals> {
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT request_id) AS requests, COALESCE(SUM(audio_seconds), 0.0) AS seconds,
                    COUNT(*) AS events
             FROM usage_events WHERE org_id = ?",
        )
        .bind(org_id)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(UsageTotals {
            requests: row.get::<i64, _>("requests") as u64,
            audio_seconds: row.get("seconds"),
            events: row.get::<i64, _>("events") as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_conformance() {
        aldea_store::conformance::keys(&SqlStore::in_memory().await.unwrap()).await;
    }

    #[tokio::test]
    async fn usage_ledger_conformance() {
        let store = SqlStore::in_memory().await.unwrap();
        aldea_store::conformance::usage_ledger(&store, &store).await;
    }

    #[tokio::test]
    async fn a_key_created_through_one_handle_is_seen_by_another() {
        // The CLI and a running `aldea all` open the same file.
        let dir = std::env::temp_dir().join(format!("aldea-sql-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("aldea.db");
        let server = SqlStore::open(&path).await.unwrap();
        let cli = SqlStore::open(&path).await.unwrap();
        let org = cli.ensure_org("acme", Credit::Unlimited).await.unwrap();
        let (_, secret) = cli.create_key(&org.id, NewKey::listen("k"), 1).await.unwrap();
        let grant = server.verify(&aldea_store::hash_key(&secret), 2).await.unwrap();
        assert_eq!(grant.map(|g| g.org_id), Some(org.id));
        drop((server, cli));
        // Reopening applies no migration twice and keeps the data.
        let again = SqlStore::open(&path).await.unwrap();
        assert_eq!(again.list_keys(None).await.unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_database_from_the_hand_written_migrator_opens_with_its_data() {
        // Databases made before sqlx's migrator: the schema of step 1 and `schema_migrations`.
        let dir = std::env::temp_dir().join(format!("aldea-sql-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("aldea.db");
        let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let old = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        sqlx::raw_sql(include_str!("../migrations/sqlite/0001_initial.sql")).execute(&old).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY);
             INSERT INTO schema_migrations (version) VALUES (1);
             INSERT INTO orgs (id, name, created_at, credit_unlimited, credit_seconds)
             VALUES ('org-1', 'acme', 1, 0, 90.0);",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = SqlStore::open(&path).await.unwrap();
        let org = store.org_by_name("acme").await.unwrap().expect("the organization is kept");
        assert_eq!(org.id, "org-1");
        assert_eq!(store.credit("org-1").await.unwrap(), Credit::Seconds(90.0));
        let legacy: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
                .fetch_optional(&store.pool)
                .await
                .unwrap();
        assert_eq!(legacy, None, "the hand-written migration table is dropped");
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(applied, MIGRATOR.iter().count() as i64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
