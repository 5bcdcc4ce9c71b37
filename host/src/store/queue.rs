//! The delivery queue's contract, as the engine drives it: steps of a
//! campaign's messages, their outcomes, and what the backend's queue needs
//! of the process around it. A queue belongs to a process, not to the
//! database: redb's (`redb::sending`) serves the only sender; PostgreSQL's
//! (`pg::member`) one node of several, under a lease.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::StoreError;
use super::fence::Fence;
use crate::domain::backoff::{Event, Gate};
use crate::domain::message::{Job, Outcome};
use crate::domain::{Campaign, CampaignId};

/// The result of one step.
#[derive(Debug)]
pub struct Enqueued {
    pub jobs: Vec<Job>,
    /// Whether the step changed anything (created messages or due entries).
    pub progressed: bool,
    /// When the next due entry comes due, if one waits.
    pub next_due: Option<DateTime<Utc>>,
    /// The campaign after the step (status, cursor, stats).
    pub campaign: Campaign,
}

/// One step's messages and who claimed them.
pub struct Step {
    pub enqueued: Enqueued,
    pub claim: Claim,
}

/// Who claimed a message: its outcomes are stored under that claim, and
/// the claim's fence, if it has one, is when its transport calls must
/// start by. On PostgreSQL a claim is one registration of the node: a
/// registration that lapsed stays the claim of the messages it took, so
/// their outcomes are refused even after the process registered again.
#[derive(Clone)]
pub struct Claim {
    fence: Option<Arc<Fence>>,
    /// The queue's own record of the claim (opaque to the engine).
    holder: Option<Arc<dyn Any + Send + Sync>>,
}

impl Claim {
    /// The only sender's claim: no lease, no fence.
    pub fn alone() -> Claim {
        Claim {
            fence: None,
            holder: None,
        }
    }

    /// A claim held as `holder`, fenced by `fence`.
    pub fn held<T: Any + Send + Sync>(holder: Arc<T>, fence: Arc<Fence>) -> Claim {
        Claim {
            fence: Some(fence),
            holder: Some(holder),
        }
    }

    /// The holder a queue made this claim with.
    pub fn holder<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.holder.clone()?.downcast().ok()
    }

    /// When the claim's transport calls must have started by, if ever.
    pub fn fence(&self) -> Option<&Arc<Fence>> {
        self.fence.as_ref()
    }

    /// Whether `self` and `other` are one claim (outcomes are stored per
    /// claim).
    pub fn same(&self, other: &Claim) -> bool {
        match (&self.holder, &other.holder) {
            (None, None) => true,
            (Some(a), Some(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            _ => false,
        }
    }
}

/// A campaign to drive because of something outside this process's own
/// steps: a send another node started, paused or cancelled, or a schedule
/// this node fired as the scheduler's leader.
pub struct Wake {
    pub id: CampaignId,
    pub cancelled: bool,
    /// The campaign as just stored, when the queue has it.
    pub campaign: Option<Campaign>,
}

/// The engine's clock, for a queue that fires schedules itself.
pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[async_trait::async_trait]
pub trait Queue: Send + Sync {
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
    /// fires them and says so through `wakes`.
    fn runs_schedules(&self) -> bool;

    /// How long a driver with nothing in flight may wait for a wake-up
    /// before it steps again, if its own outcomes are not all that moves a
    /// send on.
    fn idle_poll(&self) -> Option<Duration>;

    /// Campaigns to drive that this process did not start (taken once;
    /// none for the only sender).
    fn wakes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wake>>;

    /// After a clean stop: hands this process's queued messages to others.
    async fn leave(&self);

    /// The mailbox provider `name`'s state shared by every process on the
    /// storage (its in-flight slots, at most `max_in_flight`, and its
    /// backoff); none when this process is the only sender.
    async fn provider(
        &self,
        name: &str,
        max_in_flight: Option<u32>,
    ) -> Result<Option<Arc<dyn SharedProvider>>, StoreError> {
        let _ = (name, max_in_flight);
        Ok(None)
    }
}

/// A mailbox provider as every process on one database sees it, so its
/// `max_in_flight` and its backoff hold for the cluster, not per node.
#[async_trait::async_trait]
pub trait SharedProvider: Send + Sync {
    /// One of the provider's in-flight slots, if one is free (held by no
    /// process whose lease holds): its number.
    async fn take_slot(&self) -> Result<Option<i32>, StoreError>;

    /// Gives back slot `slot`.
    async fn give_slot(&self, slot: i32) -> Result<(), StoreError>;

    /// Applies `event` to the provider's backoff on the storage's clock:
    /// for a turn, the gate it gets; else what a message would find. Waits
    /// are answered as durations from the storage's now.
    async fn backoff(&self, event: Event) -> Result<Looked, StoreError>;
}

/// The shared backoff after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Looked {
    pub gate: Gate<Duration>,
    pub backoffs: u64,
}

/// A rate every process on one database shares: a limit holds for the
/// cluster, not per node.
#[async_trait::async_trait]
pub trait SharedPace: Send + Sync {
    /// Waits for this caller's slot; returns the latest instant its send
    /// may start (a slot holds the limit only when each send starts on
    /// its own).
    async fn acquire(&self) -> Result<std::time::Instant, StoreError>;
}
