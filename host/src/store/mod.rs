//! redb storage: one file, one writer at a time, every multi-record change
//! in one transaction so that a crash never leaves counters and records
//! disagreeing.
//!
//! Values are JSON (self-describing, so records can gain fields without a
//! migration); keys are redb tuples so that ranges serve paging and the
//! delivery cursor.

mod accounts;
mod bounces;
mod campaigns;
mod delivery;
mod lists;
mod suppressions;
mod webhooks;

pub use accounts::KeyInfo;
pub use bounces::BounceReport;
pub use delivery::{Enqueued, Job, MessageBounce, MessageRecord, MessageStatus, Outcome, OutcomeKind};
pub use lists::{RowError, UpsertReport};
pub use suppressions::{SuppressReport, SuppressionPage};
pub(crate) use webhooks::Events;
pub use webhooks::{Attempt, Delivery, DeliveryState, DueDelivery};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{ArcMutexGuard, FairMutex, RawFairMutex};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::{FieldError, TransitionError};

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
/// sha256(api key) → user id.
pub(crate) const API_KEYS: TableDefinition<&[u8], u64> = TableDefinition::new("api_keys");
/// (user, key id) → key record (its hash, when it was issued): a user's
/// keys, so an admin can list and revoke them without knowing them.
pub(crate) const USER_KEYS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("user_keys");
pub(crate) const LISTS: TableDefinition<u64, &[u8]> = TableDefinition::new("lists");
/// (user, list) → (): a user's lists in id order.
pub(crate) const USER_LISTS: TableDefinition<(u64, u64), ()> = TableDefinition::new("user_lists");
/// (list, subscriber) → subscriber.
pub(crate) const SUBSCRIBERS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("subscribers");
/// (list, email) → subscriber id: upsert by email.
pub(crate) const SUBSCRIBER_EMAILS: TableDefinition<(u64, &str), u64> = TableDefinition::new("subscriber_emails");
pub(crate) const CAMPAIGNS: TableDefinition<u64, &[u8]> = TableDefinition::new("campaigns");
pub(crate) const USER_CAMPAIGNS: TableDefinition<(u64, u64), ()> = TableDefinition::new("user_campaigns");
/// (campaign, subscriber) → message.
pub(crate) const MESSAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("messages");
/// (campaign, subscriber) → (): messages queued without a final outcome.
/// After a crash these are the ones whose delivery may have happened.
pub(crate) const IN_FLIGHT: TableDefinition<(u64, u64), ()> = TableDefinition::new("in_flight");
/// (campaign, subscriber) → (): queued messages whose retry a clean stop
/// put off. No transport call was under way for them, so the next start
/// delivers them again without flagging them.
pub(crate) const DEFERRED: TableDefinition<(u64, u64), ()> = TableDefinition::new("deferred");

/// (campaign, due unix millis, subscriber) → (): local-time messages not
/// yet due, in due order.
pub(crate) const DUE: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("due");

/// campaign → list, kept when a campaign is deleted: the unsubscribe links
/// in mail it already sent must keep working (RFC 8058).
pub(crate) const DELETED_CAMPAIGNS: TableDefinition<u64, u64> = TableDefinition::new("deleted_campaigns");

/// (user, lower-case email) → suppression: addresses none of the user's
/// campaigns mail.
pub(crate) const SUPPRESSIONS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("suppressions");

/// (user, lower-case email, bounce id) → bounce: an address's bounces, for
/// the soft-bounce window.
pub(crate) const BOUNCES: TableDefinition<(u64, &str, u64), &[u8]> = TableDefinition::new("bounces");

/// (user, report Message-ID) → when it was read: a DSN or ARF report
/// posted twice counts once, even when it names no Posta message.
pub(crate) const REPORTS: TableDefinition<(u64, &str), i64> = TableDefinition::new("reports");

/// Server secrets, generated on first use (unsubscribe link signing).
pub(crate) const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Db(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

macro_rules! db_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A page of results: `next_after` is the cursor for the next page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<u64>,
}

/// redb's page cache unless `[server] db_cache_mib` says otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 12 << 20;

#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<Database>,
    /// Taken before every write transaction, first come first served. The
    /// engine commits batches back to back from two threads; redb's own
    /// lock would let them take turns while an API request waits.
    writers: Arc<FairMutex<()>>,
    /// Interactive writers (API requests) waiting for or holding a turn;
    /// bulk writers (the engine's batches) hold back while there are any.
    interactive: Arc<AtomicUsize>,
    /// Signalled after a commit that wrote webhook events.
    outbox: Arc<tokio::sync::Notify>,
}

/// A write transaction holding its turn at the writer queue until commit.
pub(crate) struct WriteTx {
    tx: redb::WriteTransaction,
    /// For a bulk transaction, the interactive writers' counter: it should
    /// commit what it has as soon as one is waiting.
    yield_to: Option<Arc<AtomicUsize>>,
    _turn: ArcMutexGuard<RawFairMutex, ()>,
}

impl WriteTx {
    /// Whether a bulk transaction should stop at the next consistent point
    /// and commit: an API write is waiting for the writer.
    pub(crate) fn yield_requested(&self) -> bool {
        self.yield_to.as_ref().is_some_and(|n| n.load(Ordering::Acquire) > 0)
    }

    pub(crate) fn commit(self) -> std::result::Result<(), redb::CommitError> {
        let started = std::time::Instant::now();
        let kind = if self.yield_to.is_some() { "bulk" } else { "interactive" };
        let r = self.tx.commit();
        metrics::histogram!(crate::metrics::DB_COMMIT, "kind" => kind).record(started.elapsed());
        r
    }
}

impl std::ops::Deref for WriteTx {
    type Target = redb::WriteTransaction;

    fn deref(&self) -> &redb::WriteTransaction {
        &self.tx
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the database with a page cache of `cache_bytes`. redb's own
    /// default (1 GiB) would let a large database grow the process by as
    /// much; pages not cached are read through the OS page cache anyway.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Store> {
        let db = redb::Builder::new().set_cache_size(cache_bytes).create(path)?;
        let tx = db.begin_write()?;
        {
            // Create every table up front so readers never miss one.
            tx.open_table(META)?;
            tx.open_table(USERS)?;
            tx.open_table(API_KEYS)?;
            accounts::index_keys(&tx)?;
            tx.open_table(LISTS)?;
            tx.open_table(USER_LISTS)?;
            tx.open_table(SUBSCRIBERS)?;
            tx.open_table(SUBSCRIBER_EMAILS)?;
            tx.open_table(CAMPAIGNS)?;
            tx.open_table(USER_CAMPAIGNS)?;
            tx.open_table(MESSAGES)?;
            tx.open_table(IN_FLIGHT)?;
            tx.open_table(DEFERRED)?;
            tx.open_table(DELETED_CAMPAIGNS)?;
            tx.open_table(SECRETS)?;
            tx.open_table(DUE)?;
            tx.open_table(SUPPRESSIONS)?;
            tx.open_table(BOUNCES)?;
            tx.open_table(REPORTS)?;
            webhooks::create_tables(&tx)?;
        }
        tx.commit()?;
        Ok(Store {
            db: Arc::new(db),
            writers: Arc::new(FairMutex::new(())),
            interactive: Arc::new(AtomicUsize::new(0)),
            outbox: Arc::default(),
        })
    }

    /// A 32-byte secret by name, created randomly the first time.
    pub fn secret(&self, name: &str) -> Result<[u8; 32]> {
        let tx = self.write()?;
        let secret = {
            let mut table = tx.open_table(SECRETS)?;
            let existing = table.get(name)?.map(|v| v.value().to_vec());
            match existing.and_then(|v| <[u8; 32]>::try_from(v).ok()) {
                Some(s) => s,
                None => {
                    let mut s = [0u8; 32];
                    rand::RngCore::fill_bytes(&mut rand::rng(), &mut s);
                    table.insert(name, s.as_slice())?;
                    s
                }
            }
        };
        tx.commit()?;
        Ok(secret)
    }

    pub(crate) fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// A write transaction for a request someone is waiting on: it goes
    /// ahead of queued bulk writes.
    pub(crate) fn write(&self) -> Result<WriteTx> {
        self.interactive.fetch_add(1, Ordering::AcqRel);
        let turn = self.writers.lock_arc();
        self.interactive.fetch_sub(1, Ordering::AcqRel);
        Ok(WriteTx {
            yield_to: None,
            tx: self.db.begin_write()?,
            _turn: turn,
        })
    }

    /// A write transaction for the engine's batches. It waits while
    /// interactive writers are queued, so an API write waits for at most
    /// the one batch already committing (about 2 ms), not for every batch
    /// queued ahead of it. The wait is bounded (`BULK_MAX_YIELD`): under a
    /// flood of API writes the batch then queues like any writer, and the
    /// fair lock hands it a turn after the writers already waiting. That
    /// is the engine's minimum share of the writer.
    pub(crate) fn write_bulk(&self) -> Result<WriteTx> {
        let started = std::time::Instant::now();
        while self.interactive.load(Ordering::Acquire) > 0 && started.elapsed() < BULK_MAX_YIELD {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let turn = self.writers.lock_arc();
        Ok(WriteTx {
            yield_to: Some(self.interactive.clone()),
            tx: self.db.begin_write()?,
            _turn: turn,
        })
    }
}

/// Longest an engine batch steps aside for API writes before it takes its
/// place in the queue.
const BULK_MAX_YIELD: std::time::Duration = std::time::Duration::from_millis(20);

/// Allocates the next id of a kind inside the caller's transaction.
pub(crate) fn next_id(tx: &redb::WriteTransaction, kind: &str) -> Result<u64> {
    let mut meta = tx.open_table(META)?;
    let id = meta.get(kind)?.map(|v| v.value()).unwrap_or(0) + 1;
    meta.insert(kind, id)?;
    Ok(id)
}

/// Reads up to `limit` entries of a table keyed (owner, id) after the id
/// `after`, each made an item by `item(id, value)`.
fn page_by<V: redb::Value + 'static, T>(
    table: &impl ReadableTable<(u64, u64), V>,
    owner: u64,
    after: Option<u64>,
    limit: usize,
    mut item: impl FnMut(u64, redb::AccessGuard<'_, V>) -> Result<T>,
) -> Result<Page<T>> {
    let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
    let mut items = Vec::with_capacity(limit.min(1024));
    let mut last = None;
    let mut more = false;
    for entry in table.range((owner, start)..=(owner, u64::MAX))? {
        let (k, v) = entry?;
        if items.len() == limit {
            more = true;
            break;
        }
        let id = k.value().1;
        last = Some(id);
        items.push(item(id, v)?);
    }
    Ok(Page {
        items,
        next_after: if more { last } else { None },
    })
}

/// Reads up to `limit` records of a table keyed (owner, id), after `after`.
pub(crate) fn page_records<T: DeserializeOwned>(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    owner: u64,
    after: Option<u64>,
    limit: usize,
) -> Result<Page<T>> {
    page_by(table, owner, after, limit, |_, v| decode(v.value()))
}

/// Reads up to `limit` ids from an index keyed (owner, id), after `after`.
pub(crate) fn page_ids(
    table: &impl ReadableTable<(u64, u64), ()>,
    owner: u64,
    after: Option<u64>,
    limit: usize,
) -> Result<Page<u64>> {
    page_by(table, owner, after, limit, |id, _| Ok(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// API writes arriving back to back (there is always one queued) must
    /// not stop the engine's batches: each still gets a turn.
    #[test]
    fn bulk_writes_progress_under_a_flood_of_interactive_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("posta.redb")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flood: Vec<_> = (0..4)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut writes = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let tx = store.write().unwrap();
                        next_id(&tx, "flood").unwrap();
                        tx.commit().unwrap();
                        writes += 1;
                    }
                    writes
                })
            })
            .collect();
        let (done, finished) = std::sync::mpsc::channel();
        let bulk = {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let tx = store.write_bulk().unwrap();
                    next_id(&tx, "bulk").unwrap();
                    tx.commit().unwrap();
                }
                done.send(()).unwrap();
            })
        };
        // Generous: 20 batches take well under a second; without a
        // minimum share they never finish.
        let progressed = finished.recv_timeout(Duration::from_secs(60));
        stop.store(true, Ordering::Release);
        let writes: u64 = flood.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(
            progressed.is_ok(),
            "bulk writes starved behind {writes} interactive writes"
        );
        bulk.join().unwrap();
        assert!(writes > 0);
    }
}
