//! Node membership: each node incarnation has a row whose `lease_until`
//! its heartbeats move on the database's clock. While the lease holds, the
//! node's queued messages are its own; once it lapses, any node may take
//! them over (flagged as possible duplicates) and the old incarnation's
//! outcomes are refused.
//!
//! The fence is the node's own side of that bargain: it may start a
//! transport call only before `sent + ttl - margin`, where `sent` is the
//! local time a successful heartbeat was sent. The database set the lease
//! to its own `now + ttl` after that moment, so the fence always falls
//! before the lease can lapse (by `margin`, which also covers a call in
//! progress when the fence falls); a node that froze wakes up fenced and
//! makes no call until a heartbeat succeeds, which it cannot once the lease
//! has lapsed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PgStore;
use crate::store::fence::Fence;
use crate::store::{Result, StoreError};

/// Moves `node`'s lease on, unless it lapsed; moves its fence with it.
async fn renew(client: &tokio_postgres::Client, node: &Node) -> Result<bool> {
    let sent = Instant::now();
    let renewed = client
        .execute(
            "UPDATE nodes SET lease_until = clock_timestamp() + make_interval(secs => $2)
             WHERE id = $1 AND lease_until > clock_timestamp()",
            &[&node.id.0, &node.ttl.as_secs_f64()],
        )
        .await?
        == 1;
    if renewed {
        node.fence.extend(sent + node.ttl - node.margin);
    }
    Ok(renewed)
}

/// A node incarnation's id (its `nodes` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub i64);

/// This process's membership in the cluster.
pub struct Node {
    pub id: NodeId,
    pub ttl: Duration,
    pub margin: Duration,
    pub fence: Arc<Fence>,
}

impl PgStore {
    /// Registers a new incarnation named `name` with a lease of `ttl`; its
    /// fence opens for `ttl - margin`.
    pub async fn register_node(&self, name: &str, ttl: Duration, margin: Duration) -> Result<Node> {
        assert!(margin < ttl, "the fence margin must be shorter than the lease");
        let client = self.pool.get().await?;
        let sent = Instant::now();
        let row = client
            .query_one(
                "INSERT INTO nodes (name, lease_until, ttl_ms)
                 VALUES ($1, clock_timestamp() + make_interval(secs => $2), $3)
                 RETURNING id",
                &[&name, &ttl.as_secs_f64(), &(ttl.as_millis() as i64)],
            )
            .await?;
        Ok(Node {
            id: NodeId(row.get(0)),
            ttl,
            margin,
            fence: Arc::new(Fence::new(sent + ttl - margin)),
        })
    }

    /// Renews `node`'s lease; false when it had already lapsed (the
    /// incarnation is over: its messages belong to whoever takes them, and
    /// the process must register again to go on).
    pub async fn heartbeat(&self, node: &Node) -> Result<bool> {
        let client = self.pool.get().await?;
        renew(&client, node).await
    }

    /// Heartbeats `node` four times per lease until the lease lapses
    /// (then returns: the incarnation is over). A failed heartbeat is
    /// retried at the next beat; meanwhile the fence, not this loop, keeps
    /// the node from calling transports on a lease it may have lost.
    ///
    /// Heartbeats go over a connection of their own, each within half a
    /// lease: behind the pool they would queue after the claims and
    /// outcomes waiting there (on a campaign's lock, say), and the lease
    /// would lapse because the node was busy.
    pub async fn keep_alive(&self, node: &Node) -> StoreError {
        let mut beat = tokio::time::interval(node.ttl / 4);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<tokio_postgres::Client> = None;
        loop {
            beat.tick().await;
            let renewed = tokio::time::timeout(node.ttl / 2, async {
                let client = match conn.take().filter(|c| !c.is_closed()) {
                    Some(c) => c,
                    None => self.dedicated().await?,
                };
                let renewed = renew(&client, node).await?;
                conn = Some(client);
                Ok::<_, StoreError>(renewed)
            })
            .await
            .unwrap_or_else(|_| Err(StoreError::Db("no answer within half a lease".into())));
            match renewed {
                Ok(true) => self.health.ok("heartbeat"),
                Ok(false) => return StoreError::LeaseLapsed,
                Err(e) => self.health.failed("heartbeat", &e),
            }
        }
    }

    /// Claims webhook deliveries for `node` from now on: held while its
    /// lease holds, due again for the others once it lapses.
    pub fn deliver_as(&self, node: &Node) {
        *self.deliverer.write() = Some(node.id.0);
    }

    /// Ends `node`'s lease now (a clean stop), so others take over its
    /// queued messages without waiting for it to lapse.
    pub async fn retire_node(&self, node: &Node) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                // No grace after a database restart either (`queue::LAPSED`):
                // a node that left has nothing more to report.
                "UPDATE nodes SET lease_until = clock_timestamp(), ttl_ms = 0 WHERE id = $1",
                &[&node.id.0],
            )
            .await?;
        Ok(())
    }
}
