//! The redb store: one file, one writer at a time, every multi-record
//! change in one transaction so that a crash never leaves counters and
//! records disagreeing. Values are JSON (self-describing, so records can
//! gain fields without a migration), except the two a send reads per
//! recipient — messages and subscribers, in `record_form`'s binary frame
//! (`message_codec`, `subscriber_codec`); keys are redb tuples so that
//! ranges serve paging and the delivery cursor.

mod accounts;
mod bounces;
mod campaigns;
mod delivery;
mod lists;
mod members;
mod message_codec;
mod record_form;
mod segments;
pub(crate) mod sending;
mod subscriber_codec;
mod suppressions;
mod tracking;
mod warmups;
mod webhooks;

pub(crate) use webhooks::Events;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::{ArcMutexGuard, FairMutex, RawFairMutex};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::health;
use super::{KeyInfo, Page, Result, SCAN_LIMIT, StoreError};

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

/// (user, domain) → when it was granted (unix seconds): the domains a
/// user's campaigns may send from (`domain::sender`).
pub(crate) const SENDER_DOMAINS: TableDefinition<(u64, &str), i64> = TableDefinition::new("sender_domains");

/// (user, lower-case email) → `SoftWindow`: the address's recent soft
/// bounces, so counting one never reads its whole history.
pub(crate) const SOFT_WINDOWS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("soft_windows");

/// (user, report Message-ID) → when it was read: a DSN or ARF report
/// posted twice counts once, even when it names no Posta message.
pub(crate) const REPORTS: TableDefinition<(u64, &str), i64> = TableDefinition::new("reports");

/// Server secrets, generated on first use (unsubscribe link signing).
pub(crate) const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

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

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A record's `status` alone: serde skips the other fields without
/// building them, so a status filter reads past non-matching records for a
/// fraction of a full decode.
#[derive(Deserialize)]
pub(crate) struct StatusOf<S> {
    pub status: S,
}

/// redb's page cache unless `[server] db_cache_mib` says otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 12 << 20;

#[derive(Clone)]
pub struct Redb {
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
    /// API writes waiting to be carried by the next commit (group commit).
    riders: Riders,
    /// Engine writes waiting to be carried by the next engine batch's
    /// commit (`write_riding_bulk`); an API write's commit does not take
    /// them, so they never add to a request's wait.
    bulk_riders: Riders,
    /// Whether an engine batch holds the writer.
    bulk_holding: Arc<AtomicBool>,
    /// Whether the engine's loops reach storage (`health`).
    pub(crate) health: Arc<health::Health>,
    /// Segment campaigns whose audience is being read (`members`).
    freezing: members::Freezing,
}

/// A write queued to run inside whichever transaction commits next; it
/// returns what to do once that commit is known to have succeeded or not.
type Rider = Box<dyn FnOnce(&redb::WriteTransaction) -> RiderDone + Send>;

/// Tells a rider the commit's outcome: its error, if any.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

struct RiderDone {
    finish: Finish,
    /// The rider's own storage failed part-way: its partial writes must
    /// not be committed, so the whole transaction is dropped.
    poisoned: bool,
}

type Riders = Arc<parking_lot::Mutex<Vec<Rider>>>;

/// A write transaction holding its turn at the writer queue until commit.
pub(crate) struct WriteTx {
    /// Taken by `commit`; still here on drop means abort.
    tx: Option<redb::WriteTransaction>,
    /// For a bulk transaction, the interactive writers' counter: it should
    /// commit what it has as soon as one is waiting.
    yield_to: Option<Arc<AtomicUsize>>,
    /// Queued API writes this transaction carries at its commit.
    riders: Riders,
    /// For a bulk transaction, the queued engine writes it carries too.
    bulk_riders: Option<Riders>,
    /// For a bulk transaction, cleared when it ends.
    _bulk: Option<BulkHolding>,
    _turn: ArcMutexGuard<RawFairMutex, ()>,
}

/// Marks the writer as held by an engine batch until dropped.
struct BulkHolding(Arc<AtomicBool>);

impl BulkHolding {
    fn new(flag: &Arc<AtomicBool>) -> BulkHolding {
        flag.store(true, Ordering::Release);
        BulkHolding(flag.clone())
    }
}

impl Drop for BulkHolding {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl WriteTx {
    /// Whether a bulk transaction should stop at the next consistent point
    /// and commit: an API write is waiting for the writer.
    pub(crate) fn yield_requested(&self) -> bool {
        self.yield_to.as_ref().is_some_and(|n| n.load(Ordering::Acquire) > 0)
    }

    /// Commits, carrying the API writes queued meanwhile (`Redb::write_riding`):
    /// they share this commit's fsync instead of each waiting for the writer
    /// and then paying their own. The writer turn is held until every rider
    /// has been told the outcome.
    pub(crate) fn commit(mut self) -> std::result::Result<(), redb::CommitError> {
        let tx = self.tx.take().expect("committed once");
        let started = std::time::Instant::now();
        let kind = if self.yield_to.is_some() { "bulk" } else { "interactive" };
        let mut riders = std::mem::take(&mut *self.riders.lock());
        if let Some(bulk) = &self.bulk_riders {
            riders.append(&mut bulk.lock());
        }
        let mut finishes = Vec::with_capacity(riders.len());
        let mut poisoned = false;
        for rider in riders {
            let done = rider(&tx);
            poisoned |= done.poisoned;
            finishes.push(done.finish);
        }
        let r = if poisoned {
            // Dropping a write transaction aborts it.
            drop(tx);
            Err(redb::CommitError::Storage(redb::StorageError::Io(
                std::io::Error::other("a write carried by this commit failed part-way"),
            )))
        } else {
            tx.commit()
        };
        let error = r.as_ref().err().map(ToString::to_string);
        for finish in finishes {
            finish(error.as_deref());
        }
        metrics::histogram!(crate::metrics::DB_COMMIT, "kind" => kind).record(started.elapsed());
        r
    }
}

impl std::ops::Deref for WriteTx {
    type Target = redb::WriteTransaction;

    fn deref(&self) -> &redb::WriteTransaction {
        self.tx.as_ref().expect("not yet committed")
    }
}

impl Drop for WriteTx {
    /// A panic with the transaction open (a bug in our code between redb
    /// calls, reached by some input) unwinds through here. redb skips its
    /// own abort while unwinding and marks the file for repair, so every
    /// later start would rebuild the database; the panic did not come from
    /// inside redb, its state is whole, and aborting here is the rollback
    /// redb would have done.
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take()
            && std::thread::panicking()
            && let Err(e) = tx.abort()
        {
            tracing::error!("aborting a write transaction after a panic: {e}");
        }
    }
}

impl Redb {
    pub fn open(path: &Path) -> Result<Redb> {
        Redb::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the database with a page cache of `cache_bytes`. redb's own
    /// default (1 GiB) would let a large database grow the process by as
    /// much; pages not cached are read through the OS page cache anyway.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Redb> {
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
            tx.open_table(SOFT_WINDOWS)?;
            tx.open_table(SENDER_DOMAINS)?;
            webhooks::create_tables(&tx)?;
            segments::create_tables(&tx)?;
            members::create_tables(&tx)?;
            warmups::create_tables(&tx)?;
        }
        tx.commit()?;
        Ok(Redb {
            db: Arc::new(db),
            writers: Arc::new(FairMutex::new(())),
            interactive: Arc::new(AtomicUsize::new(0)),
            outbox: Arc::default(),
            riders: Riders::default(),
            bulk_riders: Riders::default(),
            bulk_holding: Arc::default(),
            health: Arc::default(),
            freezing: members::Freezing::default(),
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
        let turn = self.interactive_turn();
        self.interactive_tx(turn)
    }

    fn interactive_tx(&self, turn: ArcMutexGuard<RawFairMutex, ()>) -> Result<WriteTx> {
        Ok(WriteTx {
            yield_to: None,
            tx: Some(self.db.begin_write()?),
            riders: self.riders.clone(),
            bulk_riders: None,
            _bulk: None,
            _turn: turn,
        })
    }

    /// Waits for the writer as an interactive writer: queued bulk writers
    /// step aside and the one holding it commits at its next consistent
    /// point.
    fn interactive_turn(&self) -> ArcMutexGuard<RawFairMutex, ()> {
        self.interactive.fetch_add(1, Ordering::AcqRel);
        let asked = std::time::Instant::now();
        let turn = self.writers.lock_arc();
        metrics::histogram!(crate::metrics::DB_WRITER_WAIT).record(asked.elapsed());
        self.interactive.fetch_sub(1, Ordering::AcqRel);
        turn
    }

    /// Group commit for a request's write: `op` runs inside the next
    /// transaction to commit (most often the engine batch holding the
    /// writer, which commits early for it), or in one of its own when no
    /// one else commits first. Under a full-speed send a request then
    /// waits for one commit, not for a batch's commit and then its own.
    ///
    /// `op` shares another writer's transaction, so it must check
    /// everything before it writes: an `Err` from it must mean it wrote
    /// nothing. (A storage failure after writing drops the whole
    /// transaction rather than commit half of it.)
    pub(crate) fn write_riding<T: Send + 'static>(
        &self,
        op: impl FnOnce(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let outcome = queue_rider(&self.riders, op, |r| matches!(r, Err(StoreError::Db(_))));
        let turn = self.interactive_turn();
        self.carried(outcome, turn, |turn| self.interactive_tx(turn))
    }

    /// A queued rider's result, once this caller holds the writer `turn`.
    /// The turn passes only after a commit has told its riders, so the
    /// answer is either here now or nobody has taken the write: then the
    /// caller commits what is queued itself, in `tx`'s transaction.
    fn carried<T>(
        &self,
        outcome: std::sync::mpsc::Receiver<Result<T>>,
        turn: ArcMutexGuard<RawFairMutex, ()>,
        tx: impl FnOnce(ArcMutexGuard<RawFairMutex, ()>) -> Result<WriteTx>,
    ) -> Result<T> {
        if let Ok(r) = outcome.try_recv() {
            return r;
        }
        // Its own result arrives through the channel either way.
        let _ = tx(turn)?.commit();
        outcome.recv().unwrap_or_else(|_| {
            Err(StoreError::Db(
                "a carried write was lost (panic in its transaction)".into(),
            ))
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
        self.bulk_tx(turn)
    }

    fn bulk_tx(&self, turn: ArcMutexGuard<RawFairMutex, ()>) -> Result<WriteTx> {
        Ok(WriteTx {
            yield_to: Some(self.interactive.clone()),
            tx: Some(self.db.begin_write()?),
            riders: self.riders.clone(),
            bulk_riders: Some(self.bulk_riders.clone()),
            _bulk: Some(BulkHolding::new(&self.bulk_holding)),
            _turn: turn,
        })
    }

    /// Group commit for the engine: while another engine batch holds the
    /// writer, `op` runs inside its transaction at its commit (a step and
    /// the outcomes stored meanwhile share one fsync), or in one of its
    /// own if that batch had committed already; `None` when no engine
    /// batch holds the writer (the caller then takes a turn as usual).
    /// Any `Err` from `op` drops the whole transaction it ran in, whose
    /// holder then fails and tries again. `op` is made only when it rides
    /// (it owns a copy of what it writes).
    pub(crate) fn write_riding_bulk<T: Send + 'static, Op>(&self, op: impl FnOnce() -> Op) -> Option<Result<T>>
    where
        Op: FnOnce(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    {
        if !self.bulk_holding.load(Ordering::Acquire) {
            return None;
        }
        let outcome = queue_rider(&self.bulk_riders, op(), Result::is_err);
        let turn = self.writers.lock_arc();
        Some(self.carried(outcome, turn, |turn| self.bulk_tx(turn)))
    }
}

/// Queues `op` to run inside the next commit that takes `riders`; the
/// receiver gets its result once that commit is known. A result for which
/// `poisons` holds drops the carrying transaction (`op` may have written
/// part of itself).
fn queue_rider<T: Send + 'static>(
    riders: &Riders,
    op: impl FnOnce(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    poisons: fn(&Result<T>) -> bool,
) -> std::sync::mpsc::Receiver<Result<T>> {
    let (send, outcome) = std::sync::mpsc::sync_channel::<Result<T>>(1);
    riders.lock().push(Box::new(move |tx| {
        let r = op(tx);
        RiderDone {
            poisoned: poisons(&r),
            finish: Box::new(move |commit_error| {
                let r = match (r, commit_error) {
                    (Ok(_), Some(e)) => Err(StoreError::Db(e.to_string())),
                    (r, _) => r,
                };
                let _ = send.send(r);
            }),
        }
    }));
    outcome
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

/// Reads up to `limit` items from a table keyed (owner, id), after `after`.
fn page_by<V: redb::Value + 'static, T>(
    table: &impl ReadableTable<(u64, u64), V>,
    owner: u64,
    after: Option<u64>,
    limit: usize,
    mut item: impl FnMut(u64, redb::AccessGuard<'_, V>) -> Result<T>,
) -> Result<Page<T>> {
    page_filtered(table, owner, after, limit, usize::MAX, |id, v| item(id, v).map(Some))
}

/// Reads up to `limit` items that `keep` accepts from a table keyed
/// (owner, id), after `after`, looking at no more than `scan` entries. The
/// cursor is the last entry looked at, so the next page goes on from there.
pub(crate) fn page_filtered<V: redb::Value + 'static, T>(
    table: &impl ReadableTable<(u64, u64), V>,
    owner: u64,
    after: Option<u64>,
    limit: usize,
    scan: usize,
    mut keep: impl FnMut(u64, redb::AccessGuard<'_, V>) -> Result<Option<T>>,
) -> Result<Page<T>> {
    let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
    let mut items = Vec::with_capacity(limit.min(1024));
    let mut last = None;
    let mut more = false;
    for (looked, entry) in table.range((owner, start)..=(owner, u64::MAX))?.enumerate() {
        if items.len() == limit || looked == scan {
            more = true;
            break;
        }
        let (k, v) = entry?;
        let id = k.value().1;
        last = Some(id);
        if let Some(item) = keep(id, v)? {
            items.push(item);
        }
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

/// A store in a fresh temporary directory, for tests: the directory lives
/// as long as the returned guard.
#[cfg(test)]
pub(crate) fn temp_store() -> (tempfile::TempDir, Redb) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Redb::open(&dir.path().join("posta.redb")).expect("a new store");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while a write transaction is open (a bug reached by hostile
    /// input) aborts that transaction only: the store goes on in the same
    /// process, and the file reopens without a repair.
    #[test]
    fn a_panic_inside_a_write_transaction_needs_no_repair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("posta.redb");
        {
            let store = Redb::open(&path).unwrap();
            store.create_user("a@example.org".into()).unwrap();
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let tx = store.write().unwrap();
                tx.open_table(USERS).unwrap().insert(999, b"half".as_slice()).unwrap();
                panic!("a bug reached by hostile input");
            }));
            assert!(panicked.is_err());
            store.create_user("b@example.org".into()).unwrap();
        }
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let flag = repaired.clone();
            let db = redb::Builder::new()
                .set_repair_callback(move |_| flag.store(true, Ordering::Release))
                .create(&path)
                .unwrap();
            drop(db);
        }
        assert!(!repaired.load(Ordering::Acquire), "the file needed a repair");
        let store = Redb::open(&path).unwrap();
        assert_eq!(
            store.user_count().unwrap(),
            2,
            "the panicked write is gone, the others are kept"
        );
    }
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn a_filtered_page_reads_no_more_than_its_scan_limit_and_goes_on_from_there() {
        const T: TableDefinition<(u64, u64), ()> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for id in 1..=10 {
                t.insert((7, id), ()).unwrap();
            }
            t.insert((8, 1), ()).unwrap();
        }
        let t = tx.open_table(T).unwrap();
        fn even(id: u64, _: redb::AccessGuard<'_, ()>) -> Result<Option<u64>> {
            Ok(id.is_multiple_of(2).then_some(id))
        }
        // Four entries looked at: two kept, and a cursor to go on from.
        let p = page_filtered(&t, 7, None, 100, 4, even).unwrap();
        assert_eq!((p.items, p.next_after), (vec![2, 4], Some(4)));
        let p = page_filtered(&t, 7, Some(4), 100, 4, even).unwrap();
        assert_eq!((p.items, p.next_after), (vec![6, 8], Some(8)));
        // The end of the owner's range: no cursor, nothing of owner 8.
        let p = page_filtered(&t, 7, Some(8), 100, 4, even).unwrap();
        assert_eq!((p.items, p.next_after), (vec![10], None));
        // The page's limit still holds.
        let p = page_filtered(&t, 7, None, 2, 100, even).unwrap();
        assert_eq!((p.items, p.next_after), (vec![2, 4], Some(4)));
    }

    fn counter(store: &Redb, kind: &str) -> u64 {
        let tx = store.read().unwrap();
        let meta = tx.open_table(META).unwrap();
        meta.get(kind).unwrap().map(|v| v.value()).unwrap_or(0)
    }

    /// Holds a bulk transaction that wrote `bulk` until an interactive
    /// writer asks for the writer, then commits it (as the engine's
    /// batches do); returns the thread and the commit's result.
    fn bulk_until_asked(store: &Redb) -> std::thread::JoinHandle<(std::thread::ThreadId, bool)> {
        let store = store.clone();
        std::thread::spawn(move || {
            let tx = store.write_bulk().unwrap();
            next_id(&tx, "bulk").unwrap();
            while !tx.yield_requested() {
                std::thread::sleep(Duration::from_millis(1));
            }
            (std::thread::current().id(), tx.commit().is_ok())
        })
    }

    /// Group commit: a request's write runs inside the engine batch that
    /// holds the writer and commits with it.
    #[test]
    fn a_riding_write_commits_with_the_transaction_holding_the_writer() {
        let (_dir, store) = temp_store();
        let bulk = bulk_until_asked(&store);
        while counter(&store, "bulk") == 0 && store.writers.try_lock().is_some() {
            std::thread::yield_now();
        }
        let ran_on = store
            .write_riding(|tx| {
                next_id(tx, "rider")?;
                Ok(std::thread::current().id())
            })
            .unwrap();
        let (bulk_thread, committed) = bulk.join().unwrap();
        assert!(committed);
        assert_eq!(ran_on, bulk_thread, "the write rode the batch's commit");
        assert_eq!((counter(&store, "bulk"), counter(&store, "rider")), (1, 1));
        // With nobody else writing, it commits on its own.
        store.write_riding(|tx| next_id(tx, "rider")).unwrap();
        assert_eq!(counter(&store, "rider"), 2);
    }

    /// A carried write that fails its checks changes nothing and costs the
    /// batch nothing; one whose storage fails part-way takes the batch
    /// down with it rather than commit half of itself.
    #[test]
    fn a_failed_riding_write_is_isolated_and_a_broken_one_aborts_the_commit() {
        let (_dir, store) = temp_store();

        let bulk = bulk_until_asked(&store);
        while store.writers.try_lock().is_some() {
            std::thread::yield_now();
        }
        let r = store.write_riding(|_| Err::<(), _>(StoreError::NotFound));
        assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
        assert!(bulk.join().unwrap().1);
        assert_eq!(counter(&store, "bulk"), 1);

        let bulk = bulk_until_asked(&store);
        while store.writers.try_lock().is_some() {
            std::thread::yield_now();
        }
        let r = store.write_riding(|tx| {
            next_id(tx, "half")?;
            Err::<(), _>(StoreError::Db("disk gone".into()))
        });
        assert!(matches!(r, Err(StoreError::Db(_))), "{r:?}");
        assert!(!bulk.join().unwrap().1, "the carrying commit reports the failure");
        assert_eq!((counter(&store, "bulk"), counter(&store, "half")), (1, 0));
    }

    /// Holds a bulk transaction that wrote `bulk` until an engine write
    /// is queued to ride on it, then commits it; returns the thread and
    /// the commit's result.
    fn bulk_until_carrying(store: &Redb) -> std::thread::JoinHandle<(std::thread::ThreadId, bool)> {
        let store = store.clone();
        std::thread::spawn(move || {
            let tx = store.write_bulk().unwrap();
            next_id(&tx, "bulk").unwrap();
            while store.bulk_riders.lock().is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            (std::thread::current().id(), tx.commit().is_ok())
        })
    }

    /// Group commit within the engine: outcomes stored while a step holds
    /// the writer commit with it; with no engine batch holding it, the
    /// caller takes its own turn.
    #[test]
    fn an_engine_write_rides_the_engine_batch_holding_the_writer() {
        let (_dir, store) = temp_store();
        assert!(
            store
                .write_riding_bulk(|| |tx: &redb::WriteTransaction| next_id(tx, "rider"))
                .is_none()
        );
        let bulk = bulk_until_carrying(&store);
        while !store.bulk_holding.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let ran_on = store
            .write_riding_bulk(|| {
                |tx: &redb::WriteTransaction| {
                    next_id(tx, "rider")?;
                    Ok(std::thread::current().id())
                }
            })
            .expect("an engine batch holds the writer")
            .unwrap();
        let (bulk_thread, committed) = bulk.join().unwrap();
        assert!(committed);
        assert_eq!(ran_on, bulk_thread, "the write rode the batch's commit");
        assert_eq!((counter(&store, "bulk"), counter(&store, "rider")), (1, 1));
        assert!(!store.bulk_holding.load(Ordering::Acquire), "cleared with the batch");
    }

    /// An engine write that fails in any way may have written part of
    /// itself: the batch carrying it does not commit.
    #[test]
    fn a_failed_engine_rider_aborts_the_commit_carrying_it() {
        let (_dir, store) = temp_store();
        let bulk = bulk_until_carrying(&store);
        while !store.bulk_holding.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let r = store
            .write_riding_bulk(|| {
                |tx: &redb::WriteTransaction| {
                    next_id(tx, "half")?;
                    Err::<(), _>(StoreError::NotFound)
                }
            })
            .expect("an engine batch holds the writer");
        assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
        assert!(!bulk.join().unwrap().1, "the carrying commit reports the failure");
        assert_eq!((counter(&store, "bulk"), counter(&store, "half")), (0, 0));
    }

    /// API writes arriving back to back (there is always one queued) must
    /// not stop the engine's batches: each still gets a turn.
    #[test]
    fn bulk_writes_progress_under_a_flood_of_interactive_writes() {
        let (_dir, store) = temp_store();
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
