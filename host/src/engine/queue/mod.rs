//! The engine's side of the delivery queue: the `Queue` contract the
//! drivers and the outcome collector use, on redb (`local`: this process
//! is the only sender) or PostgreSQL (`shared`: one node of several).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::CampaignId;
use crate::domain::message::{Job, Outcome};
use crate::store::fence::Fence;
use crate::store::{Enqueued, Store, StoreError};

mod local;
mod shared;

/// One step's messages and who claimed them.
pub(super) struct Step {
    pub(super) enqueued: Enqueued,
    pub(super) claim: Claim,
}

/// Who claimed a message: its outcomes are stored under that claim, and on
/// PostgreSQL the claim's fence is when its transport calls must start by.
#[derive(Clone)]
pub(super) enum Claim {
    /// redb: this process, the only sender.
    Local,
    /// PostgreSQL: one registration of this node. A registration that
    /// lapsed stays the claim of the messages it took, so their outcomes
    /// are refused even after the process registered again.
    Node(Arc<crate::store::pg::Node>),
}

impl Claim {
    /// When the claim's transport calls must have started by, if ever.
    pub(super) fn fence(&self) -> Option<&Arc<Fence>> {
        match self {
            Claim::Local => None,
            Claim::Node(node) => Some(&node.fence),
        }
    }

    /// Whether `self` and `other` are one claim (outcomes are stored per
    /// claim).
    pub(super) fn same(&self, other: &Claim) -> bool {
        match (self, other) {
            (Claim::Local, Claim::Local) => true,
            (Claim::Node(a), Claim::Node(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The delivery queue as the engine drives it: steps of a campaign's
/// messages, their outcomes, and what the backend's queue needs of the
/// process around it.
#[async_trait::async_trait]
pub(super) trait Queue: Send + Sync {
    /// Messages a crash or stop left in flight, to deliver again first.
    async fn recover(&self, id: CampaignId, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError>;

    /// Queues up to `batch` more messages of campaign `id`.
    async fn step(&self, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step, StoreError>;

    /// Stores a batch of outcomes of messages `claim` took. Shared, not
    /// copied, into the storage thread: a receipt may be megabytes until
    /// the store clips it, and the caller keeps the batch to try again.
    async fn record(&self, claim: &Claim, outcomes: &Arc<Vec<Outcome>>, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Whether this process runs the timers of scheduled campaigns itself
    /// (the only sender); else the scheduler's leader among the nodes
    /// fires them.
    fn runs_schedules(&self) -> bool;

    /// How long a driver with nothing in flight may wait for a wake-up
    /// before it steps again, if its own outcomes are not all that moves a
    /// send on.
    fn idle_poll(&self) -> Option<Duration>;

    /// After a clean stop: hands this process's queued messages to others.
    async fn leave(&self);
}

/// The queue on `store`'s backend; on PostgreSQL this registers the node
/// and starts its heartbeats on `rt`. The one place the engine tells the
/// backends apart.
pub(super) async fn open(
    store: &Store,
    cfg: &crate::config::Database,
    rt: &tokio::runtime::Handle,
) -> Result<Arc<dyn Queue>, StoreError> {
    Ok(match store {
        Store::Redb(r) => Arc::new(local::Local(r.clone())),
        Store::Pg(pg) => {
            let member = shared::Member::join(pg.store.clone(), cfg).await?;
            rt.spawn(member.clone().keep_alive());
            member
        }
    })
}
