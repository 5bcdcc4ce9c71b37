//! The queue on PostgreSQL: this process is one node of several. It
//! claims steps under its registration's lease (`store::pg::queue`), which
//! a heartbeat task keeps; the messages a claim hands out carry that
//! registration's fence, and a node whose lease lapsed joins again as a
//! new registration. There is nothing to recover at start: other nodes'
//! claims take over lapsed leases, ours included.
//!
//! Besides its own steps a node follows the status changes other nodes
//! make (so a pause or cancel through any node stops this one's sends, and
//! a send started anywhere is driven here too), and fires scheduled
//! campaigns while it is the scheduler's leader; both reach the engine as
//! `Wake`s.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;

use tokio::sync::mpsc;

use super::{Node, PgStore};
use crate::domain::message::{Job, Outcome};
use crate::domain::{CampaignId, Status};
use crate::store::queue::{Claim, Now, Queue, SharedProvider, Step, Wake};
use crate::store::{Enqueued, StoreError};

/// The watch's safety-net poll: a change whose notification was lost (a
/// dropped LISTEN connection) reaches this node within it.
const WATCH_POLL: Duration = Duration::from_secs(2);

/// How often the leader looks for scheduled campaigns come due (how late
/// one may start).
const SCHEDULER_TICK: Duration = Duration::from_millis(500);

/// How often the other nodes try to take the lead (each try opens a
/// connection): a dead leader's campaigns start at most this much late.
const LEAD_RETRY: Duration = Duration::from_secs(2);

/// This process's membership: the node incarnation it claims as.
pub(crate) struct Member {
    store: PgStore,
    name: String,
    ttl: Duration,
    margin: Duration,
    /// Shared with the providers' slots, which are held as this node.
    node: Arc<RwLock<Arc<Node>>>,
    /// Taken while joining again, so a lapse noticed by several tasks
    /// at once registers one new incarnation.
    rejoining: tokio::sync::Mutex<()>,
    wakes: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Wake>>>,
}

impl Member {
    /// Joins the cluster and starts, on `rt`, the heartbeats, the watch
    /// of other nodes' changes and the turns at leading the scheduler
    /// (which fires schedules by `now`).
    pub(super) async fn start(
        store: PgStore,
        cfg: &crate::config::Database,
        rt: &tokio::runtime::Handle,
        now: Now,
    ) -> Result<Arc<Member>, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let member = Member::join(store.clone(), cfg, rx).await?;
        rt.spawn(member.clone().keep_alive());
        rt.spawn(follow(store.clone(), tx.clone()));
        rt.spawn(schedule(store, tx, now));
        Ok(member)
    }

    async fn join(
        store: PgStore,
        cfg: &crate::config::Database,
        wakes: mpsc::UnboundedReceiver<Wake>,
    ) -> Result<Arc<Member>, StoreError> {
        let name = cfg.node_name.clone().unwrap_or_else(default_name);
        let ttl = Duration::from_millis(cfg.lease_ms);
        let margin = Duration::from_millis(cfg.fence_margin_ms);
        let node = (store.health())
            .until_ok("join", Duration::from_secs(1), || {
                store.register_node(&name, ttl, margin)
            })
            .await;
        tracing::info!(node = node.id.0, name, "joined the cluster");
        store.deliver_as(&node);
        Ok(Arc::new(Member {
            store,
            name,
            ttl,
            margin,
            node: Arc::new(RwLock::new(Arc::new(node))),
            rejoining: tokio::sync::Mutex::new(()),
            wakes: parking_lot::Mutex::new(Some(wakes)),
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
    async fn keep_alive(self: Arc<Self>) {
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
        let node = (self.store.health())
            .until_ok("join", self.poll(), || {
                self.store.register_node(&self.name, self.ttl, self.margin)
            })
            .await;
        tracing::info!(node = node.id.0, "joined the cluster again");
        self.store.deliver_as(&node);
        *self.node.write() = Arc::new(node);
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
                    let fence = node.fence.clone();
                    return Ok(Step {
                        enqueued: Enqueued {
                            jobs: c.jobs,
                            progressed: c.progressed,
                            next_due: c.next_due,
                            campaign: c.campaign,
                        },
                        claim: Claim::held(node, fence),
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
        let node = claim
            .holder::<Node>()
            .expect("a node's messages are claimed by a registration");
        self.record_as(&node, outcomes, now).await
    }

    fn runs_schedules(&self) -> bool {
        false
    }

    /// Other nodes' outcomes, lapsed leases and their messages' takeover
    /// move a send on too.
    fn idle_poll(&self) -> Option<Duration> {
        Some(self.poll())
    }

    fn wakes(&self) -> Option<mpsc::UnboundedReceiver<Wake>> {
        self.wakes.lock().take()
    }

    async fn leave(&self) {
        if let Err(e) = self.store.retire_node(&self.node()).await {
            tracing::warn!("cannot hand this node's messages over: {e}");
        }
    }

    async fn provider(
        &self,
        name: &str,
        max_in_flight: Option<u32>,
    ) -> Result<Option<Arc<dyn SharedProvider>>, StoreError> {
        let provider = super::providers::PgProvider::new(&self.store, name, max_in_flight, self.node.clone()).await?;
        Ok(Some(Arc::new(provider)))
    }
}

/// Follows the status changes any node makes: a campaign with messages to
/// settle is driven here too (a cancel settles them).
async fn follow(pg: PgStore, wakes: mpsc::UnboundedSender<Wake>) {
    loop {
        match pg.watch_campaigns(WATCH_POLL).await {
            Ok(mut watch) => {
                pg.health().ok("watch");
                while let Some((id, status)) = watch.next().await {
                    if status.has_messages_to_settle() {
                        let wake = Wake {
                            id,
                            cancelled: status == Status::Cancelled,
                            campaign: None,
                        };
                        if wakes.send(wake).is_err() {
                            return;
                        }
                    }
                }
                tracing::warn!("campaign watch ended; watching again");
            }
            Err(e) => pg.health().failed("watch", &e),
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}

/// Takes turns at leading the scheduler; the leader fires the scheduled
/// campaigns come due.
async fn schedule(pg: PgStore, wakes: mpsc::UnboundedSender<Wake>, now: Now) {
    loop {
        match pg.try_lead().await {
            Ok(Some(leader)) => {
                tracing::info!("leading the scheduler");
                while leader.holds() {
                    match pg.fire_due(now()).await {
                        Ok(fired) => {
                            pg.health().ok("scheduler");
                            for c in fired {
                                let wake = Wake {
                                    id: c.id,
                                    cancelled: false,
                                    campaign: Some(c),
                                };
                                if wakes.send(wake).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => pg.health().failed("scheduler", &e),
                    }
                    tokio::time::sleep(SCHEDULER_TICK).await;
                }
                tracing::warn!("lost the scheduler's lead");
            }
            Ok(None) => pg.health().ok("scheduler"),
            Err(e) => pg.health().failed("scheduler", &e),
        }
        tokio::time::sleep(LEAD_RETRY).await;
    }
}

impl PgStore {
    /// This node's queue: see `Member::start`.
    pub(crate) async fn start_member(
        self,
        cfg: &crate::config::Database,
        rt: &tokio::runtime::Handle,
        now: Now,
    ) -> Result<Arc<Member>, StoreError> {
        Member::start(self, cfg, rt, now).await
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
