//! `aldea keys create|list|revoke` and `aldea credit set`: organizations, keys and credit in the
//! database under `$ALDEA_HOME`, whether or not `aldea all` is running (SQLite in WAL mode lets
//! both write; the running gateway sees a change within its key-cache TTL).

use std::process::ExitCode;

use aldea_store::{Credit, KeyLimits, Keys, NewKey};
use anyhow::{bail, Context};
use clap::Subcommand;

use crate::{output, stores, Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Creates a key for the Speech API (and the organization, with unlimited credit, when new);
    /// the key is the last line of stdout and is shown only this once.
    Create {
        #[arg(long)]
        org: String,
        /// A name for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Concurrent streams for this key (only stricter than the organization's).
        #[arg(long)]
        max_streams: Option<u32>,
        /// Requests per minute for this key.
        #[arg(long)]
        rpm: Option<u32>,
    },
    /// Lists keys (never their secrets).
    List {
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
    /// Sets an organization's credit: audio seconds, or `unlimited`.
    Set {
        #[arg(long)]
        org: String,
        amount: String,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

pub(crate) fn run_keys(settings: &Settings, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = stores::open_sql(settings).await?;
        let now = aldea_store::unix_now();
        match command {
            KeysCommand::Create { org, name, max_streams, rpm } => {
                if max_streams == &Some(0) || rpm == &Some(0) {
                    bail!("--max-streams and --rpm must be at least 1");
                }
                let org = store.ensure_org(org, Credit::Unlimited).await?;
                let new = NewKey {
                    limits: KeyLimits { max_streams: *max_streams, requests_per_minute: *rpm },
                    ..NewKey::listen(name)
                };
                let (record, secret) = store.create_key(&org.id, new, now).await?;
                output::info(&format!("created key {} ({}…) for organization {}", record.id, record.prefix, org.name));
                output::result_line(&secret);
            }
            KeysCommand::List { org } => {
                let org_id = match org {
                    Some(name) => {
                        Some(store.org_by_name(name).await?.with_context(|| format!("no organization {name:?}"))?.id)
                    }
                    None => None,
                };
                for key in store.list_keys(org_id.as_deref()).await? {
                    let state = if key.revoked_at.is_some() { "revoked" } else { "active" };
                    let limits = format!(
                        "max_streams={} rpm={}",
                        key.limits.max_streams.map_or("-".to_owned(), |n| n.to_string()),
                        key.limits.requests_per_minute.map_or("-".to_owned(), |n| n.to_string())
                    );
                    output::result_line(&format!(
                        "{}\t{}\t{}…\t{}\t{}\t{}",
                        key.id, key.org_id, key.prefix, key.name, state, limits
                    ));
                }
            }
            KeysCommand::Revoke { id, redis } => match store.revoke_key(id, now).await? {
                Some(hash) => {
                    if let Some(spec) = redis.as_deref().filter(|s| !s.is_empty()) {
                        let target = aldea_store_redis::RedisTarget::parse(spec).context("parsing the Redis URL")?;
                        let cache =
                            aldea_store_redis::RedisStore::connect(target).await.context("connecting to Redis")?;
                        aldea_store::KeyCache::invalidate(&cache, &hash).await.context("telling the gateways")?;
                    }
                    output::info(&format!("revoked {id}"));
                }
                None => bail!("no active key {id:?}"),
            },
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn run_credit(settings: &Settings, command: &CreditCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = stores::open_sql(settings).await?;
        let CreditCommand::Set { org, amount } = command;
        let credit = if amount.eq_ignore_ascii_case("unlimited") {
            Credit::Unlimited
        } else {
            let seconds: f64 =
                amount.parse().with_context(|| format!("{amount:?} is neither seconds nor `unlimited`"))?;
            if !seconds.is_finite() || seconds < 0.0 {
                bail!("credit must be zero or more seconds");
            }
            Credit::Seconds(seconds)
        };
        let org = store.org_by_name(org).await?.with_context(|| format!("no organization {org:?}"))?;
        store.set_credit(&org.id, credit).await?;
        output::info(&format!("credit of {} set to {amount}", org.name));
        Ok(ExitCode::SUCCESS)
    })
}
