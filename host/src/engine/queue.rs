//! The engine's side of the delivery queue, on either backend.
//!
//! redb: this process is the only sender; a step is `Redb::enqueue` and
//! a crash leaves `in_flight` entries that the next start re-delivers.
//! PostgreSQL: this process is one node of several. It claims steps under
//! its incarnation's lease (`store::pg::queue`), which a heartbeat task
//! keeps; the messages a claim hands out carry that incarnation's fence,
//! and a node whose lease lapsed joins again as a new incarnation. There
//! is nothing to recover at start: other nodes' claims take over lapsed
//! leases, ours included.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::CampaignId;
use crate::domain::message::{Job, Outcome};
use crate::store::fence::Fence;
use crate::store::{Enqueued, Redb, Store, StoreError};

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

#[derive(Clone)]
pub(super) enum Queue {
    Local(Redb),
    Shared(Arc<shared::Member>),
}

impl Queue {
    /// The queue on `store`'s backend; on PostgreSQL this registers the
    /// node and starts its heartbeats on `rt`.
    pub(super) async fn open(
        store: &Store,
        cfg: &crate::config::Database,
        rt: &tokio::runtime::Handle,
    ) -> Result<Queue, StoreError> {
        match store {
            Store::Redb(r) => {
                let _ = (cfg, rt);
                Ok(Queue::Local(r.clone()))
            }
            Store::Pg(pg) => {
                let member = shared::Member::join(pg.store.clone(), cfg).await?;
                rt.spawn(member.clone().keep_alive());
                Ok(Queue::Shared(member))
            }
        }
    }

    /// Messages a crash or stop left in flight, to deliver again first.
    pub(super) async fn recover(&self, id: CampaignId, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        match self {
            Queue::Local(r) => {
                let r = r.clone();
                blocking(move || r.recover_in_flight(id, now)).await
            }
            Queue::Shared(_) => Ok(Vec::new()),
        }
    }

    /// Queues up to `batch` more messages of campaign `id`.
    pub(super) async fn step(&self, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step, StoreError> {
        match self {
            Queue::Local(r) => {
                let r = r.clone();
                let enqueued = blocking(move || r.enqueue(id, batch, now)).await?;
                Ok(Step {
                    enqueued,
                    claim: Claim::Local,
                })
            }
            Queue::Shared(m) => m.claim(id, batch, now).await,
        }
    }

    /// Stores a batch of outcomes of messages `claim` took. Shared, not
    /// copied, into the storage thread: a receipt may be megabytes until
    /// the store clips it, and the caller keeps the batch to try again.
    pub(super) async fn record(
        &self,
        claim: &Claim,
        outcomes: &Arc<Vec<Outcome>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match (self, claim) {
            (Queue::Local(r), _) => {
                let (r, outcomes) = (r.clone(), outcomes.clone());
                blocking(move || r.record_outcomes(&outcomes, now).map(drop)).await
            }
            (Queue::Shared(m), Claim::Node(node)) => m.record(node, outcomes, now).await,
            (Queue::Shared(_), Claim::Local) => unreachable!("a node's messages are claimed by a registration"),
        }
    }

    /// Whether this process is the only sender (redb): it then runs its
    /// own timers for scheduled campaigns; on PostgreSQL the scheduler's
    /// leader fires them.
    pub(super) fn is_local(&self) -> bool {
        matches!(self, Queue::Local(_))
    }

    /// How long a driver with nothing in flight may wait for a wake-up
    /// before it claims again: never on redb, where only this process's
    /// outcomes move a send on; on PostgreSQL other nodes' outcomes, lapsed
    /// leases and their messages' takeover do too.
    pub(super) fn idle_poll(&self) -> Option<Duration> {
        match self {
            Queue::Local(_) => None,
            Queue::Shared(m) => Some(m.idle_poll()),
        }
    }

    /// After a clean stop: hands this node's queued messages to the others
    /// at once (redb: nothing to do).
    pub(super) async fn leave(&self) {
        if let Queue::Shared(m) = self {
            m.leave().await;
        }
    }
}

/// Runs a redb call off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Db(format!("storage task failed: {e}")))?
}

mod shared {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use parking_lot::RwLock;

    use super::{Claim, Step};
    use crate::domain::CampaignId;
    use crate::domain::message::Outcome;
    use crate::store::health::Backoff;
    use crate::store::pg::{Node, PgStore};
    use crate::store::{Enqueued, StoreError};

    /// This process's membership: the node incarnation it claims as.
    pub(crate) struct Member {
        store: PgStore,
        name: String,
        ttl: Duration,
        margin: Duration,
        node: RwLock<Arc<Node>>,
        /// Taken while joining again, so a lapse noticed by several tasks
        /// at once registers one new incarnation.
        rejoining: tokio::sync::Mutex<()>,
    }

    impl Member {
        pub(super) async fn join(store: PgStore, cfg: &crate::config::Database) -> Result<Arc<Member>, StoreError> {
            let name = cfg.node_name.clone().unwrap_or_else(default_name);
            let ttl = Duration::from_millis(cfg.lease_ms);
            let margin = Duration::from_millis(cfg.fence_margin_ms);
            let mut backoff = Backoff::new(Duration::from_secs(1));
            let node = loop {
                match store.register_node(&name, ttl, margin).await {
                    Ok(node) => break node,
                    Err(e) => {
                        store.health().failed("join", &e);
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
            };
            store.health().ok("join");
            tracing::info!(node = node.id.0, name, "joined the cluster");
            store.deliver_as(&node);
            Ok(Arc::new(Member {
                store,
                name,
                ttl,
                margin,
                node: RwLock::new(Arc::new(node)),
                rejoining: tokio::sync::Mutex::new(()),
            }))
        }

        fn node(&self) -> Arc<Node> {
            self.node.read().clone()
        }

        pub(super) fn idle_poll(&self) -> Duration {
            (self.ttl / 4).min(Duration::from_secs(1))
        }

        /// Heartbeats for as long as the process runs, joining again
        /// whenever the lease lapsed (a freeze, a lost database).
        pub(super) async fn keep_alive(self: Arc<Self>) {
            loop {
                let node = self.node();
                let lapsed = self.store.keep_alive(&node).await;
                tracing::warn!(node = node.id.0, "{lapsed}: its messages go to other nodes, flagged");
                self.rejoin(&node).await;
            }
        }

        /// Registers a new incarnation in place of `lapsed`, unless that
        /// was done meanwhile; retries until the database answers.
        async fn rejoin(&self, lapsed: &Arc<Node>) {
            let _turn = self.rejoining.lock().await;
            if !Arc::ptr_eq(&self.node(), lapsed) {
                return;
            }
            let mut backoff = Backoff::new(self.idle_poll());
            loop {
                match self.store.register_node(&self.name, self.ttl, self.margin).await {
                    Ok(node) => {
                        self.store.health().ok("join");
                        tracing::info!(node = node.id.0, "joined the cluster again");
                        self.store.deliver_as(&node);
                        *self.node.write() = Arc::new(node);
                        return;
                    }
                    Err(e) => {
                        self.store.health().failed("join", &e);
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
            }
        }

        pub(super) async fn claim(&self, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step, StoreError> {
            loop {
                let node = self.node();
                match self.store.claim(&node, id, batch, now).await {
                    Ok(c) => {
                        if c.taken_over > 0 {
                            tracing::warn!(
                                campaign = id.get(),
                                count = c.taken_over,
                                "re-delivering messages of a node whose lease lapsed (flagged possible duplicates)"
                            );
                        }
                        return Ok(Step {
                            enqueued: Enqueued {
                                jobs: c.jobs,
                                progressed: c.progressed,
                                next_due: c.next_due,
                                campaign: c.campaign,
                            },
                            claim: Claim::Node(node),
                        });
                    }
                    Err(StoreError::LeaseLapsed) => self.rejoin(&node).await,
                    Err(e) => return Err(e),
                }
            }
        }

        /// Stores outcomes of messages `node` claimed: refused if that
        /// registration lapsed, whatever this process registered since.
        pub(super) async fn record(
            &self,
            node: &Node,
            outcomes: &[Outcome],
            now: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            let recorded = self.store.record_outcomes(node, outcomes, now).await?;
            if recorded.rejected > 0 {
                // Their messages were or will be taken over and delivered
                // again by a node holding a lease, flagged.
                tracing::warn!(
                    count = recorded.rejected,
                    "outcomes refused: this node's lease had lapsed"
                );
            }
            Ok(())
        }

        pub(super) async fn leave(&self) {
            if let Err(e) = self.store.retire_node(&self.node()).await {
                tracing::warn!("cannot hand this node's messages over: {e}");
            }
        }
    }

    fn default_name() -> String {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "posta".into());
        format!("{host}:{}", std::process::id())
    }
}
