//! Mailbox providers as every node shares them: `provider_slots` holds
//! the in-flight slots (a slot is taken by inserting its row, or by taking
//! over the row of a node whose lease lapsed, so a dead node's slots come
//! free with its lease and two nodes never hold one), `provider_backoffs`
//! the backoff, changed under its row lock by `domain::backoff` on the
//! database's clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;

use super::{Node, PgStore};
use crate::domain::backoff::{Backoff, Event};
use crate::store::Result;
use crate::store::queue::{Looked, SharedProvider};

pub(super) struct PgProvider {
    store: PgStore,
    name: String,
    max_in_flight: i32,
    /// This process's current registration, whose lease the slots it
    /// takes live by.
    node: Arc<RwLock<Arc<Node>>>,
}

impl PgProvider {
    pub(super) async fn new(
        store: &PgStore,
        name: &str,
        max_in_flight: Option<u32>,
        node: Arc<RwLock<Arc<Node>>>,
    ) -> Result<PgProvider> {
        let (state, _, wait, backoffs) = Backoff::<DateTime<Utc>>::default().parts();
        let client = store.pool.get().await?;
        client
            .execute(
                "INSERT INTO provider_backoffs (provider, state, wait_ms, backoffs) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (provider) DO NOTHING",
                &[&name, &state, &(wait.as_millis() as i64), &(backoffs as i64)],
            )
            .await?;
        Ok(PgProvider {
            store: store.clone(),
            name: name.to_string(),
            max_in_flight: max_in_flight.unwrap_or(0).clamp(1, i32::MAX as u32) as i32,
            node,
        })
    }
}

#[async_trait::async_trait]
impl SharedProvider for PgProvider {
    async fn take_slot(&self) -> Result<Option<i32>> {
        let node = self.node.read().id.0;
        let client = self.store.pool.get().await?;
        // The lowest slot no live node holds. Two nodes after the same one
        // meet on its row: the second's conflict finds the first alive and
        // takes nothing (it looks again).
        let row = client
            .query_opt(
                "INSERT INTO provider_slots (provider, slot, node)
                 SELECT $1, s, $3 FROM generate_series(0, $2 - 1) AS s
                 WHERE NOT EXISTS (
                     SELECT 1 FROM provider_slots p JOIN nodes n ON n.id = p.node
                     WHERE p.provider = $1 AND p.slot = s AND n.lease_until > clock_timestamp())
                 ORDER BY s LIMIT 1
                 ON CONFLICT (provider, slot) DO UPDATE SET node = EXCLUDED.node
                 WHERE NOT EXISTS (
                     SELECT 1 FROM nodes n
                     WHERE n.id = provider_slots.node AND n.lease_until > clock_timestamp())
                 RETURNING slot",
                &[&self.name, &self.max_in_flight, &node],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn give_slot(&self, slot: i32) -> Result<()> {
        let client = self.store.pool.get().await?;
        // Whichever registration of this process took it: a slot taken
        // over by another node is not ours to free.
        let node = self.node.read().id.0;
        client
            .execute(
                "DELETE FROM provider_slots WHERE provider = $1 AND slot = $2 AND node = $3",
                &[&self.name, &slot, &node],
            )
            .await?;
        Ok(())
    }

    async fn backoff(&self, event: Event) -> Result<Looked> {
        let mut client = self.store.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                "SELECT state, at, wait_ms, backoffs, clock_timestamp() FROM provider_backoffs
                 WHERE provider = $1 FOR UPDATE",
                &[&self.name],
            )
            .await?;
        let now: DateTime<Utc> = row.get(4);
        let before = Backoff::from_parts(
            row.get::<_, &str>(0),
            row.get(1),
            Duration::from_millis(row.get::<_, i64>(2).max(0) as u64),
            row.get::<_, i64>(3).max(0) as u64,
        );
        let mut after = before.clone();
        let gate = after.apply(event, now);
        if after != before {
            let (state, at, wait, backoffs) = after.parts();
            tx.execute(
                "UPDATE provider_backoffs SET state = $2, at = $3, wait_ms = $4, backoffs = $5 WHERE provider = $1",
                &[&self.name, &state, &at, &(wait.as_millis() as i64), &(backoffs as i64)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Looked {
            gate: gate.map(|at| (at - now).to_std().unwrap_or_default()),
            backoffs: after.backoffs,
        })
    }
}
