//! The queue on PostgreSQL: this process is one node of several. It
//! claims steps under its registration's lease (`store::pg::queue`), which
//! a heartbeat task keeps; the messages a claim hands out carry that
//! registration's fence, and a node whose lease lapsed joins again as a
//! new registration. There is nothing to recover at start: other nodes'
//! claims take over lapsed leases, ours included.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;

use super::{Claim, Queue, Step};
use crate::domain::CampaignId;
use crate::domain::message::Job;
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

    fn poll(&self) -> Duration {
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
        let mut backoff = Backoff::new(self.poll());
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

    async fn claim(&self, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step, StoreError> {
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
    async fn record_as(&self, node: &Node, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<(), StoreError> {
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
}

#[async_trait::async_trait]
impl Queue for Member {
    async fn recover(&self, _: CampaignId, _: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        Ok(Vec::new())
    }

    async fn step(&self, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step, StoreError> {
        self.claim(id, batch, now).await
    }

    async fn record(&self, claim: &Claim, outcomes: &Arc<Vec<Outcome>>, now: DateTime<Utc>) -> Result<(), StoreError> {
        match claim {
            Claim::Node(node) => self.record_as(node, outcomes, now).await,
            Claim::Local => unreachable!("a node's messages are claimed by a registration"),
        }
    }

    fn runs_schedules(&self) -> bool {
        false
    }

    /// Other nodes' outcomes, lapsed leases and their messages' takeover
    /// move a send on too.
    fn idle_poll(&self) -> Option<Duration> {
        Some(self.poll())
    }

    async fn leave(&self) {
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
