//! The system of record in SQL: organizations, API keys (by hash), the credit ledger and recorded
//! usage. SQLite ([`SqlStore`]) is the embedded single-machine store (`$ALDEA_HOME/aldea.db`): a key
//! created by the CLI while `aldea all` runs is seen by the next request, since both open the same
//! file. PostgreSQL ([`PgStore`]) is the production one.
//!
//! Both run the same statements (written once, in `statements.rs`'s `sql_store!`; `$N`
//! placeholders, which SQLite reads too), each database with its own migrations
//! (`migrations/sqlite/`, `migrations/postgres/`).
//!
//! Invariant: secrets never reach the database (only [`aldea_store::hash_key`]); an event id is
//! recorded once, and its credit charge happens in the same transaction; the schema is created and
//! upgraded on connecting (sqlx's migrator, each step applied once, forward only; on PostgreSQL under
//! its advisory lock, so replicas starting together migrate once).
#![forbid(unsafe_code)]

use std::path::Path;
use std::str::FromStr;

use aldea_store::{Credit, Page, PageRequest, Result, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

#[macro_use]
mod statements;

mod sqlite_statements {
    use super::*;
    // IMMEDIATE: a transaction that reads before it writes takes the write lock first, so a
    // writer in another process (the CLI beside `aldea all`) makes it wait, never fail.
    sql_store!(SqlStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow, "BEGIN IMMEDIATE");
}

mod pg_batch;

mod pg_statements {
    use super::*;
    sql_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow, "BEGIN");
}

/// The schema, one numbered SQL file per step under `migrations/sqlite/`, embedded at compile time;
/// sqlx records each applied step (with its checksum) in `_sqlx_migrations`. Steps a newer release
/// applied that this one does not know are tolerated: during a rolling update the old replicas keep
/// starting against the new schema. From step 4 on, steps only add what a release before does not
/// read; step 3 rebuilt `orgs`, and the releases before it (whose migrator refuses unknown steps)
/// do not start against it.
fn sqlite_migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// The PostgreSQL schema (`migrations/postgres/`), as [`sqlite_migrator`]; sqlx's migrator holds an
/// advisory lock while it runs.
fn pg_migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

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
        sqlite_migrator().run(&self.pool).await.map_err(migrate_error)
    }
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => backend(e),
        other => StoreError::Backend(format!("schema migration: {other}")),
    }
}

/// Organizations, keys, credit and usage in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects (`postgres://…`, at most `max_connections`) and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Invalid(format!("database URL: {e}")))?;
        PgStore::connect_with(options, max_connections).await
    }

    /// [`PgStore::connect`] with options built by the caller (a schema on the search path, say).
    pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        pg_migrator().run(&pool).await.map_err(migrate_error)?;
        Ok(PgStore { pool })
    }
}

pub(crate) fn credit_from(unlimited: bool, millis: i64) -> Credit {
    if unlimited {
        Credit::Unlimited
    } else {
        Credit::Millis(millis)
    }
}

/// The (created, id) after which a page starts; `(i64::MIN, "")` for the first page.
pub(crate) fn after(page: &PageRequest) -> Result<(i64, String)> {
    match page.after.as_deref() {
        Some(cursor) => aldea_store::parse_page_cursor(cursor),
        None => Ok((i64::MIN, String::new())),
    }
}

/// A page from `limit + 1` rows (the extra one says there is a next page).
pub(crate) fn page_from<T>(mut items: Vec<T>, page: &PageRequest, cursor: impl Fn(&T) -> String) -> Page<T> {
    let limit = page.limit() as usize;
    let next = (items.len() > limit).then(|| cursor(&items[limit - 1]));
    items.truncate(limit);
    Page { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aldea_store::{CreditKind, KeyId, KeyVerifier, Keys, NewKey, OrgId, UsageEvent, UsageLedger, UsageTotals};

    /// A schema of its own on the PostgreSQL of this machine (`ALDEA_TEST_POSTGRES_URL`): tests
    /// sharing the server never meet, and every run starts from an empty schema.
    struct PgSchema {
        admin: PgPool,
        name: String,
        options: PgConnectOptions,
    }

    impl PgSchema {
        async fn new() -> PgSchema {
            let url = std::env::var("ALDEA_TEST_POSTGRES_URL")
                .expect("ALDEA_TEST_POSTGRES_URL must name a PostgreSQL database (scripts/test.sh sets it)");
            let options = PgConnectOptions::from_str(&url).unwrap();
            let admin = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await.unwrap();
            let name = format!("aldea_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::raw_sql(&format!("CREATE SCHEMA {name}")).execute(&admin).await.unwrap();
            let options = options.options([("search_path", name.as_str())]);
            PgSchema { admin, name, options }
        }

        async fn store(&self) -> PgStore {
            PgStore::connect_with(self.options.clone(), 4).await.unwrap()
        }

        async fn drop(self) {
            sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", self.name)).execute(&self.admin).await.unwrap();
        }
    }

    #[tokio::test]
    async fn postgres_conformance() {
        let schema = PgSchema::new().await;
        let store = schema.store().await;
        aldea_store::conformance::keys(&store).await;
        aldea_store::conformance::credit(&store).await;
        aldea_store::conformance::accounts(&store, &store).await;
        aldea_store::conformance::usage_ledger(&store, &store, &store).await;
        store.pool.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn postgres_replicas_starting_together_migrate_once() {
        let schema = PgSchema::new().await;
        let stores = futures_util::future::join_all((0..4).map(|_| schema.store())).await;
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&stores[0].pool)
            .await
            .unwrap();
        assert_eq!(applied, pg_migrator().iter().count() as i64);
        // Each replica sees what another wrote.
        let org = stores[1].create_org("acme", Credit::Unlimited, 1).await.unwrap();
        let (_, secret) = stores[2].create_key(&org.id, NewKey::listen("k"), 1).await.unwrap();
        let grant = stores[3].verify(&aldea_store::hash_key(&secret), 2).await.unwrap();
        assert_eq!(grant.map(|g| g.org_id), Some(org.id));
        for store in stores {
            store.pool.close().await;
        }
        schema.drop().await;
    }

    #[tokio::test]
    async fn a_charge_racing_a_top_up_loses_neither() {
        // Two handles on one database, as a usage worker and the platform are.
        let schema = PgSchema::new().await;
        let (worker, platform) = (schema.store().await, schema.store().await);
        let org = platform.create_org("racing", Credit::Millis(100_000), 1).await.unwrap();
        let charges = async {
            for i in 0..50 {
                let event = UsageEvent {
                    event_id: UsageEvent::event_id("r", i),
                    request_id: "r".to_owned(),
                    seq: i,
                    org_id: org.id.to_string(),
                    key_id: "k".to_owned(),
                    kind: aldea_store::UsageKind::Stream,
                    model: "tiny.en".to_owned(),
                    audio_seconds: 1.0,
                    started_at: 0,
                    ended_at: 1_000,
                    is_final: i == 49,
                    status: 1000,
                };
                assert!(worker.record(&event).await.unwrap());
            }
        };
        let top_ups = async {
            for _ in 0..50 {
                platform.add_credit(&org.id, CreditKind::TopUp, 500, None, 2).await.unwrap();
            }
        };
        tokio::join!(charges, top_ups);
        assert_eq!(platform.credit(&org.id).await.unwrap(), Credit::Millis(100_000 - 50_000 + 25_000));
        let entries = platform.credit_entries(&org.id, &PageRequest::first(500)).await.unwrap().items;
        assert_eq!(entries.len(), 101);
        let mut balance = 0;
        for entry in &entries {
            balance += entry.millis;
            assert_eq!(entry.balance_after, balance, "each entry's balance follows the one before");
        }
        assert_eq!(
            worker.totals(&org.id).await.unwrap(),
            UsageTotals { requests: 1, audio_millis: 50_000, events: 50 }
        );
        worker.pool.close().await;
        platform.pool.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn keys_conformance() {
        aldea_store::conformance::keys(&SqlStore::in_memory().await.unwrap()).await;
    }

    #[tokio::test]
    async fn accounts_conformance() {
        let store = SqlStore::in_memory().await.unwrap();
        aldea_store::conformance::accounts(&store, &store).await;
    }

    #[tokio::test]
    async fn credit_conformance() {
        aldea_store::conformance::credit(&SqlStore::in_memory().await.unwrap()).await;
    }

    #[tokio::test]
    async fn usage_ledger_conformance() {
        let store = SqlStore::in_memory().await.unwrap();
        aldea_store::conformance::usage_ledger(&store, &store, &store).await;
    }

    #[tokio::test]
    async fn a_database_a_newer_release_migrated_still_opens() {
        // Rolling updates: an old replica restarts after the new one applied its step.
        let schema = PgSchema::new().await;
        let store = schema.store().await;
        sqlx::raw_sql(
            "CREATE TABLE from_the_future (id BIGINT);
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (999999, 'from the future', TRUE, '\\x00', 1);",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.pool.close().await;
        let again = schema.store().await;
        assert!(again.org(&OrgId::random()).await.unwrap().is_none());
        again.pool.close().await;
        schema.drop().await;
    }

    #[tokio::test]
    async fn a_key_created_through_one_handle_is_seen_by_another() {
        // The CLI and a running `aldea all` open the same file.
        let dir = std::env::temp_dir().join(format!("aldea-sql-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("aldea.db");
        let server = SqlStore::open(&path).await.unwrap();
        let cli = SqlStore::open(&path).await.unwrap();
        let org = cli.create_org("acme", Credit::Unlimited, 1).await.unwrap();
        let (_, secret) = cli.create_key(&org.id, NewKey::listen("k"), 1).await.unwrap();
        let grant = server.verify(&aldea_store::hash_key(&secret), 2).await.unwrap();
        assert_eq!(grant.map(|g| g.org_id), Some(org.id.clone()));
        drop((server, cli));
        // Reopening applies no migration twice and keeps the data.
        let again = SqlStore::open(&path).await.unwrap();
        assert_eq!(again.list_keys(&org.id, &PageRequest::first(10)).await.unwrap().items.len(), 1);
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
             VALUES ('org-1', 'acme', 1, 0, 90.0);
             INSERT INTO api_keys (id, org_id, name, prefix, key_hash, scopes, created_at)
             VALUES ('key-1', 'org-1', 'old', 'org_abcdefgh', 'hash-1', 'listen', 1);
             INSERT INTO usage_events (event_id, request_id, seq, org_id, key_id, kind, model, audio_seconds,
                                       started_at, ended_at, is_final, status)
             VALUES ('r:0', 'r', 0, 'org-1', 'key-1', 'rest', 'tiny.en', 2.5, 1000, 2000, 1, 200);",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = SqlStore::open(&path).await.unwrap();
        let org = aldea_store::resolve_org(&store, "acme").await.unwrap().expect("the organization is kept");
        assert_eq!(org.id, OrgId::from("org-1"));
        assert_eq!(store.credit(&org.id).await.unwrap(), Credit::Millis(90_000));
        let ledger = store.credit_entries(&org.id, &PageRequest::first(10)).await.unwrap().items;
        assert_eq!(ledger.len(), 1, "the balance from before the ledger is its first entry");
        assert_eq!(
            (ledger[0].kind, ledger[0].millis, ledger[0].balance_after),
            (CreditKind::Adjustment, 90_000, 90_000)
        );
        assert_eq!(store.grant_by_id(&KeyId::from("key-1"), 2).await.unwrap().map(|g| g.org_id), Some(org.id.clone()));
        let totals = store.totals(&org.id).await.unwrap();
        assert_eq!(totals, UsageTotals { requests: 1, audio_millis: 2_500, events: 1 });
        // Names need not be unique any more.
        store.create_org("acme", Credit::Unlimited, 3).await.unwrap();
        assert_eq!(store.orgs_named("acme").await.unwrap().len(), 2);
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
        assert_eq!(applied, sqlite_migrator().iter().count() as i64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
