//! PostgreSQL: the store several Posta nodes share, selected by
//! `[database] url`.
//!
//! The schema and its migrations (`schema`), every store operation behind
//! `Store`, node membership with heartbeats and a local fence (`nodes`),
//! pacers every node obeys (`pacer`), the scheduler's leader lock
//! (`leader`) and the delivery queue — cursor batches claimed in turn,
//! messages leased to a node, outcomes accepted only under the lease,
//! expired leases re-delivered as possible duplicates (`queue`) — and
//! status changes reaching every node (`watch`: LISTEN/NOTIFY, with a poll
//! as the safety net). ARCHITECTURE.md, "PostgreSQL", has the design.

mod accounts;
mod bounces;
mod campaigns;
mod leader;
mod lists;
mod member;
mod nodes;
mod pacer;
mod providers;
mod queue;
pub mod schema;
mod segments;
mod suppressions;
#[cfg(any(test, feature = "test-support"))]
pub mod test_server;
mod tracking;
mod warmups;
mod watch;
mod webhooks;

pub use leader::Leader;
pub use nodes::{Node, NodeId};
pub use pacer::SharedPacer;
pub use queue::{Claimed, Recorded};
pub use watch::CampaignWatch;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{Result, StoreError};

/// Table keys are `bigint`; Posta's ids stay below 2^63. An id above that
/// comes only from a client (a path or body naming a row that cannot
/// exist): it maps to a negative key, which no row has, so it is not found,
/// as on redb, instead of panicking.
fn key(id: u64) -> i64 {
    id as i64
}

/// A page from rows read in key order, as redb's `page_filtered` makes
/// one: up to `limit` items `keep` accepts, looking at no more than
/// `SCAN_LIMIT` rows; when it stops early the cursor is the last row looked
/// at, so the next page goes on from there.
fn scan_page<K, T>(
    rows: &[tokio_postgres::Row],
    limit: usize,
    cursor: impl Fn(&tokio_postgres::Row) -> K,
    keep: impl Fn(&tokio_postgres::Row) -> Option<T>,
) -> (Vec<T>, Option<K>) {
    let (mut items, mut last) = (Vec::new(), None);
    for (looked, row) in rows.iter().enumerate() {
        if items.len() == limit || looked == super::SCAN_LIMIT {
            return (items, last);
        }
        last = Some(cursor(row));
        items.extend(keep(row));
    }
    (items, None)
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if server_absent(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Db(e.to_string())
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e @ deadpool_postgres::PoolError::Timeout(_) => StoreError::Unavailable(e.to_string()),
            e => StoreError::Db(e.to_string()),
        }
    }
}

impl From<schema::MigrateError> for StoreError {
    fn from(e: schema::MigrateError) -> Self {
        match e {
            schema::MigrateError::Db(e) => e.into(),
            e => StoreError::Db(e.to_string()),
        }
    }
}

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// When an idle connection starts TCP keepalive probes (libpq's default is
/// the system's two hours).
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether `e` means the server is not there (yet) — down, starting,
/// shutting down, out of reach — rather than refusing us: only an error
/// the server sent, other than those, is an answer.
pub(crate) fn server_absent(e: &tokio_postgres::Error) -> bool {
    use std::error::Error;
    use tokio_postgres::error::SqlState;
    match e.code() {
        // Not the server's answer: a lost or refused connection (an I/O
        // error underneath), or no answer in time; client-side errors
        // (types, row counts) are bugs, not outages.
        None => {
            e.is_closed()
                || e.source().is_some_and(|s| s.is::<std::io::Error>())
                || e.to_string().starts_with("timeout")
        }
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code),
    }
}

/// How long the server lets a transaction wait on a Posta node.
const IDLE_IN_TRANSACTION_MS: u32 = 5_000;

/// A connection pool on one Posta database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The node incarnation this process's webhook deliverer claims
    /// deliveries for (`deliver_as`), shared by every clone.
    deliverer: std::sync::Arc<parking_lot::RwLock<Option<i64>>>,
    /// Whether this process's loops reach the database.
    health: std::sync::Arc<crate::store::health::Health>,
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL or a libpq key/value string)
    /// and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: usize) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Db(format!("database url: {e}")))?;
        // A node frozen (or cut off) inside a transaction would hold its
        // row locks — a campaign's, during a claim — and stall every other
        // node. No Posta transaction waits on its client for long, so the
        // server ends one idle this long (the CSV export, which waits on
        // its HTTP reader, lifts it for its read-only snapshot).
        let options = format!(
            "{} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim());
        // A server that went away without closing its sockets (a host
        // lost, a network cut) must fail connects and queries, not hang
        // them: the loops then retry, and the fence stops calls meanwhile.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives_idle(config.get_keepalives_idle().min(KEEPALIVE_IDLE));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Db(e.to_string()))?;
        let health = std::sync::Arc::new(crate::store::health::Health::default());
        // A node started while the database is down waits for it (a
        // cluster's nodes and its database often start together); a
        // refusal from a server that answers (no such database, a wrong
        // password) is an operator's mistake and fails at once.
        let mut backoff = crate::store::health::Backoff::new(std::time::Duration::from_secs(5));
        loop {
            let tried = match pool.get().await {
                Ok(mut client) => schema::migrate(&mut client).await.map(drop).map_err(StoreError::from),
                Err(e) => Err(e.into()),
            };
            let waiting = match tried {
                Ok(()) => break,
                Err(StoreError::Unavailable(e)) => e,
                Err(e) => return Err(e),
            };
            health.failed("connect", &waiting);
            tokio::time::sleep(backoff.next_wait()).await;
        }
        health.ok("connect");
        Ok(PgStore {
            pool,
            config,
            deliverer: Default::default(),
            health,
        })
    }

    /// What this process's loops last found the database to be.
    pub fn health(&self) -> &std::sync::Arc<crate::store::health::Health> {
        &self.health
    }

    /// The database this store is connected to.
    pub fn database_name(&self) -> String {
        self.config.get_dbname().unwrap_or_default().to_string()
    }

    /// A 32-byte secret by name, created randomly the first time (by
    /// whichever node asks first; the others read it).
    pub async fn secret(&self, name: &str) -> Result<[u8; 32]> {
        let client = self.pool.get().await?;
        let fresh: [u8; 32] = rand::random();
        let row = client
            .query_one(
                "WITH made AS (
                     INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING value)
                 SELECT value FROM made UNION ALL SELECT value FROM secrets WHERE name = $1 LIMIT 1",
                &[&name, &fresh.as_slice()],
            )
            .await?;
        let value: Vec<u8> = row.get(0);
        <[u8; 32]>::try_from(value).map_err(|_| StoreError::Corrupt(format!("secret {name}: not 32 bytes")))
    }

    /// A connection of its own, outside the pool: for what is bound to a
    /// session (the leader's advisory lock, LISTEN).
    async fn dedicated(&self) -> Result<tokio_postgres::Client> {
        let (client, conn) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "dedicated database connection ended");
            }
        });
        Ok(client)
    }
}

#[cfg(test)]
mod tests;
