//! `Store`: one backend behind an `Arc`, chosen by the configuration —
//! redb in the data directory (the default) or PostgreSQL
//! (`[database] url`). A `Store` derefs to `dyn Backend`, whose methods
//! (the contract's, `store::contract`) need no import.

use std::sync::Arc;

use tokio::runtime::Handle;

use super::contract::{Accounts, Audience, Bounces, Campaigns, Engagements, Segments, Suppressions, Warmups, Webhooks};
use super::health::Health;
use super::pg::PgStore;
use super::queue::{Now, Queue, SharedPace};
use super::{Redb, Result};
use crate::config::Database;

/// Everything storage does for the process: the contract's operations,
/// and what the process around it needs to know of the backend.
#[async_trait::async_trait]
pub trait Backend:
    Accounts + Campaigns + Audience + Segments + Engagements + Suppressions + Bounces + Webhooks + Warmups + 'static
{
    /// What the process's loops last found storage to be (`health`).
    fn health(&self) -> &Arc<Health>;

    /// Resolves when webhook events may have been written since the last
    /// call.
    async fn outbox_written(&self);

    /// This process's delivery queue (which belongs to a process, not to
    /// the database); on PostgreSQL this registers the node and starts its
    /// heartbeats, its watch of other nodes and its turns at the scheduler
    /// on `rt`.
    async fn open_queue(&self, cfg: &Database, rt: &Handle, now: Now) -> Result<Arc<dyn Queue>>;

    /// The rate named `name` at `per_minute`, shared by every process on
    /// this storage; none when this process is the only sender (it paces
    /// alone).
    async fn shared_pace(&self, name: &str, per_minute: u32) -> Result<Option<Box<dyn SharedPace>>>;
}

#[async_trait::async_trait]
impl Backend for Redb {
    fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// redb signals its own commits.
    async fn outbox_written(&self) {
        Redb::outbox_written(self).await
    }

    async fn open_queue(&self, _: &Database, _: &Handle, _: Now) -> Result<Arc<dyn Queue>> {
        Ok(Arc::new(super::redb::sending::Local(self.clone())))
    }

    async fn shared_pace(&self, _: &str, _: u32) -> Result<Option<Box<dyn SharedPace>>> {
        Ok(None)
    }
}

#[async_trait::async_trait]
impl Backend for PgStore {
    fn health(&self) -> &Arc<Health> {
        PgStore::health(self)
    }

    /// Any node may have written them, so the deliverer looks every quarter
    /// second (an indexed query for due rows; the events' wait is bounded
    /// by it).
    async fn outbox_written(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await
    }

    async fn open_queue(&self, cfg: &Database, rt: &Handle, now: Now) -> Result<Arc<dyn Queue>> {
        Ok(PgStore::start_member(self.clone(), cfg, rt, now).await?)
    }

    async fn shared_pace(&self, name: &str, per_minute: u32) -> Result<Option<Box<dyn SharedPace>>> {
        Ok(Some(Box::new(
            super::pg::SharedPacer::new(self, name, per_minute).await?,
        )))
    }
}

#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.0
    }
}

impl From<Redb> for Store {
    fn from(r: Redb) -> Store {
        Store(Arc::new(r))
    }
}

impl From<PgStore> for Store {
    fn from(pg: PgStore) -> Store {
        Store(Arc::new(pg))
    }
}

impl Store {
    /// redb at `path`, with the default page cache.
    pub fn open(path: &std::path::Path) -> Result<Store> {
        Redb::open(path).map(Store::from)
    }

    pub fn open_with_cache(path: &std::path::Path, cache_bytes: usize) -> Result<Store> {
        Redb::open_with_cache(path, cache_bytes).map(Store::from)
    }

    /// The PostgreSQL database at `url`, its schema brought up to date.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Store> {
        PgStore::connect(url, max_connections).await.map(Store::from)
    }
}
