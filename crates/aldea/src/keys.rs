//! `aldea keys create|list|revoke` and `aldea credit set|add`: organizations, keys and credit in the
//! database under `$ALDEA_HOME`, whether or not `aldea all` is running (SQLite in WAL mode lets
//! both write; the running gateway sees a change within its key-cache TTL). An organization is
//! named by its id, or by its name when only one organization has it.

use std::process::ExitCode;

use aldea_store::{Credit, CreditKind, KeyId, KeyLimits, Keys, NewKey, Org, PageRequest, Scope};
use anyhow::{bail, Context};
use clap::Subcommand;

use crate::{output, stores, Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Creates a key for the Speech API (and the organization, with unlimited credit, when no
    /// organization has this id or name); the key is the last line of stdout and is shown only
    /// this once.
    Create {
        /// The organization's id, or its name when only one organization has it.
        #[arg(long)]
        org: String,
        /// A name for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        /// What the key may do: `listen` (the Speech API), `manage` (the platform API); repeatable.
        #[arg(long = "scope", default_value = "listen", value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// Concurrent streams for this key (only stricter than the organization's).
        #[arg(long)]
        max_streams: Option<u32>,
        /// Requests per minute for this key.
        #[arg(long)]
        rpm: Option<u32>,
    },
    /// Lists keys, oldest first (never their secrets): one organization's, or every one's.
    List {
        /// The organization's id, or its name when only one organization has it.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revokes a key by id. With `--redis` (the gateways' Redis) the gateways drop their cached
    /// answer at once; otherwise they see the revocation within their cache lifetime (a second).
    Revoke {
        id: String,
        #[arg(long, env = "ALDEA_REDIS_URL")]
        redis: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CreditCommand {
    /// Sets an organization's credit: audio seconds, or `unlimited` (the difference to the balance
    /// is an adjustment in its credit ledger).
    Set {
        /// The organization's id, or its name when only one organization has it.
        #[arg(long)]
        org: String,
        amount: String,
    },
    /// Adds audio seconds to an organization's credit (a top-up in its ledger).
    Add {
        /// The organization's id, or its name when only one organization has it.
        #[arg(long)]
        org: String,
        seconds: String,
        /// Why, kept with the ledger entry.
        #[arg(long)]
        note: Option<String>,
    },
}

fn parse_scope(name: &str) -> Result<Scope, String> {
    Scope::parse(name).map_err(|e| e.to_string())
}

/// Seconds as given on the command line, in milliseconds.
fn seconds_millis(text: &str) -> anyhow::Result<i64> {
    let seconds: f64 = text.parse().with_context(|| format!("{text:?} is not a number of seconds"))?;
    if !seconds.is_finite() || !(0.0..=1e12).contains(&seconds) {
        bail!("credit must be zero or more seconds");
    }
    Ok(aldea_store::audio_millis(seconds))
}

/// The organization an id or an unambiguous name stands for.
async fn org_named(store: &dyn Keys, org: &str) -> anyhow::Result<Org> {
    aldea_store::resolve_org(store, org).await?.with_context(|| format!("no organization {org:?}"))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

pub(crate) fn run_keys(
    settings: &Settings,
    database: &stores::DatabaseArgs,
    command: &KeysCommand,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = stores::open_database(settings, database).await?.keys;
        let store = store.as_ref();
        let now = aldea_store::unix_now();
        match command {
            KeysCommand::Create { org, name, scopes, max_streams, rpm } => {
                if max_streams == &Some(0) || rpm == &Some(0) {
                    bail!("--max-streams and --rpm must be at least 1");
                }
                let org = match aldea_store::resolve_org(store, org).await? {
                    Some(found) => found,
                    None => store.create_org(org, Credit::Unlimited, now).await?,
                };
                let new = NewKey {
                    scopes: scopes.clone(),
                    limits: KeyLimits { max_streams: *max_streams, requests_per_minute: *rpm },
                    ..NewKey::listen(name)
                };
                let (record, secret) = store.create_key(&org.id, new, now).await?;
                output::info(&format!("created key {} ({}…) for organization {}", record.id, record.prefix, org.name));
                output::result_line(&secret);
            }
            KeysCommand::List { org: Some(org) } => {
                let org = org_named(store, org).await?;
                print_keys(store, &org).await?;
            }
            KeysCommand::List { org: None } => {
                let mut page = PageRequest::first(aldea_store::MAX_PAGE);
                loop {
                    let orgs = store.orgs(&page).await?;
                    for org in &orgs.items {
                        print_keys(store, org).await?;
                    }
                    match orgs.next {
                        Some(next) => page.after = Some(next),
                        None => break,
                    }
                }
            }
            KeysCommand::Revoke { id, redis } => {
                let key_id = KeyId::from(id.as_str());
                let org_id = store.key_org(&key_id).await?.with_context(|| format!("no key {id:?}"))?;
                let hashes = store.revoke_key(&org_id, &key_id, now).await?;
                if let Some(spec) = redis.as_deref().filter(|s| !s.is_empty()) {
                    let target = aldea_store_redis::RedisTarget::parse(spec).context("parsing the Redis URL")?;
                    let cache = aldea_store_redis::RedisStore::connect(target).await.context("connecting to Redis")?;
                    for hash in &hashes {
                        aldea_store::KeyCache::invalidate(&cache, hash).await.context("telling the gateways")?;
                    }
                }
                output::info(&format!("revoked {id}"));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Every key of `org`, a page at a time.
async fn print_keys(store: &dyn Keys, org: &Org) -> anyhow::Result<()> {
    let mut page = PageRequest::first(aldea_store::MAX_PAGE);
    loop {
        let keys = store.list_keys(&org.id, &page).await?;
        for key in &keys.items {
            print_key(key);
        }
        match keys.next {
            Some(next) => page.after = Some(next),
            None => return Ok(()),
        }
    }
}

/// One line of `aldea keys list`.
fn print_key(key: &aldea_store::KeyRecord) {
    let state = if key.revoked_at.is_some() { "revoked" } else { "active" };
    let limits = format!(
        "max_streams={} rpm={}",
        key.limits.max_streams.map_or("-".to_owned(), |n| n.to_string()),
        key.limits.requests_per_minute.map_or("-".to_owned(), |n| n.to_string())
    );
    output::result_line(&format!(
        "{}\t{}\t{}…\t{}\t{}\t{}\t{}",
        key.id,
        key.org_id,
        key.prefix,
        key.name,
        Scope::join(&key.scopes).replace(' ', ","),
        state,
        limits
    ));
}

pub(crate) fn run_credit(
    settings: &Settings,
    database: &stores::DatabaseArgs,
    command: &CreditCommand,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = stores::open_database(settings, database).await?.keys;
        let store = store.as_ref();
        let now = aldea_store::unix_now();
        match command {
            CreditCommand::Set { org, amount } => {
                let credit = if amount.eq_ignore_ascii_case("unlimited") {
                    Credit::Unlimited
                } else {
                    Credit::Millis(seconds_millis(amount)?)
                };
                let org = org_named(store, org).await?;
                store.set_credit(&org.id, credit, now).await?;
                output::info(&format!("credit of {} ({}) set to {amount}", org.name, org.id));
            }
            CreditCommand::Add { org, seconds, note } => {
                let millis = seconds_millis(seconds)?;
                let org = org_named(store, org).await?;
                let after = store.add_credit(&org.id, CreditKind::TopUp, millis, note.as_deref(), now).await?;
                let left = match after {
                    Credit::Unlimited => "unlimited".to_owned(),
                    Credit::Millis(ms) => format!("{:.3} s", ms as f64 / 1000.0),
                };
                output::info(&format!("added {seconds} s to {} ({}): {left} left", org.name, org.id));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn run_migrate(settings: &Settings, database: &stores::DatabaseArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        // Opening applies every migration not yet applied (and refuses a database migrated by a
        // newer binary, whose steps this one does not know).
        let opened = stores::open_database(settings, database).await?;
        output::info(&format!("schema of {} is up to date", opened.describe));
        Ok(ExitCode::SUCCESS)
    })
}
