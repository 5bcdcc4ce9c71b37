//! Webhooks and their outbox on PostgreSQL: `Events::emit` writes an
//! event's deliveries in the transaction of the change it reports, as
//! redb's `store::Events` does, so it commits with that change or not at
//! all.
//!
//! Several nodes' deliverers share the outbox: `due_deliveries` takes what
//! it returns (`FOR UPDATE SKIP LOCKED`) and claims it for the node
//! (`PgStore::deliver_as`) until `finish_attempt`, so two nodes never
//! attempt one delivery at once; one whose node died is due again once
//! that node's lease lapses — delivered at least once, with the same event
//! id for the receiver to deduplicate. A store with no node (no engine
//! joined) claims for `CLAIM` instead, well past an attempt's timeout.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::PgStore;
use super::key;
use crate::domain::webhook::{EventKind, MAX_PER_USER, Webhook, event_body, new_event_id, wanting};
use crate::domain::{DeliveryId, UserId, WebhookId};

/// How long a delivery taken by a store with no node is kept from the
/// other deliverers: well past an attempt's timeout.
const CLAIM: chrono::Duration = chrono::Duration::minutes(2);
use crate::domain::webhook::{Attempt, Delivery};
use crate::store::{DueDelivery, Page, Result, StoreError};

/// Writes events into the outbox of one transaction. Each user's webhooks
/// are read once per transaction.
#[derive(Default)]
pub(super) struct Events {
    hooks: HashMap<UserId, Vec<Webhook>>,
    pub written: usize,
}

impl Events {
    /// Records `kind` for `user`'s webhooks that want it; `data` is built
    /// only if one does.
    pub async fn emit(
        &mut self,
        tx: &Transaction<'_>,
        user: UserId,
        kind: EventKind,
        now: DateTime<Utc>,
        data: impl FnOnce() -> serde_json::Value,
    ) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.hooks.entry(user) {
            let rows = tx
                .query(
                    "SELECT record FROM webhooks WHERE user_id = $1 ORDER BY id",
                    &[&key(user.get())],
                )
                .await?;
            let found = rows.into_iter().map(|r| r.get::<_, Json<Webhook>>(0).0).collect();
            e.insert(found);
        }
        let targets = wanting(&self.hooks[&user], kind);
        if targets.is_empty() {
            return Ok(());
        }
        let event_id = new_event_id();
        let body = event_body(&event_id, kind, now, &data());
        for webhook_id in targets {
            let id: i64 = tx
                .query_one("SELECT nextval('webhook_delivery_ids')", &[])
                .await?
                .get(0);
            let d = Delivery::pending(DeliveryId::new(id as u64), webhook_id, &event_id, kind, &body, now);
            tx.execute(
                "INSERT INTO webhook_deliveries (webhook_id, id, due_at, record) VALUES ($1, $2, $3, $4)",
                &[&key(webhook_id.get()), &id, &now, &Json(&d)],
            )
            .await?;
            self.written += 1;
        }
        Ok(())
    }
}

impl PgStore {
    /// Adds a webhook for `user` (at most `MAX_PER_USER`; the count is
    /// checked under a lock on the user's webhooks, so two at once cannot
    /// both pass it).
    pub async fn create_webhook(
        &self,
        user: UserId,
        url: String,
        mut events: Vec<EventKind>,
        secret: String,
        now: DateTime<Utc>,
    ) -> Result<Webhook> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(WEBHOOK_LOCK ^ key(user.get()))])
            .await?;
        let count: i64 = tx
            .query_one("SELECT count(*) FROM webhooks WHERE user_id = $1", &[&key(user.get())])
            .await?
            .get(0);
        if count as usize >= MAX_PER_USER {
            return Err(StoreError::Conflict(format!(
                "at most {MAX_PER_USER} webhooks per user; delete one first"
            )));
        }
        events.sort_by_key(|k| k.as_str());
        events.dedup();
        let id: i64 = tx.query_one("SELECT nextval('webhook_ids')", &[]).await?.get(0);
        let hook = Webhook {
            id: WebhookId::new(id as u64),
            user_id: user,
            url,
            events,
            secret,
            created_at: now,
        };
        tx.execute(
            "INSERT INTO webhooks (user_id, id, record) VALUES ($1, $2, $3)",
            &[&key(user.get()), &id, &Json(&hook)],
        )
        .await?;
        tx.commit().await?;
        Ok(hook)
    }

    pub async fn webhook(&self, user: UserId, id: WebhookId) -> Result<Webhook> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT record FROM webhooks WHERE user_id = $1 AND id = $2",
                &[&key(user.get()), &key(id.get())],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get::<_, Json<Webhook>>(0).0)
    }

    /// Deletes a webhook with its deliveries; pending ones are dropped.
    pub async fn delete_webhook(&self, user: UserId, id: WebhookId) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let gone = tx
            .execute(
                "DELETE FROM webhooks WHERE user_id = $1 AND id = $2",
                &[&key(user.get()), &key(id.get())],
            )
            .await?;
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
            &[&key(id.get())],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A webhook's deliveries, oldest first.
    pub async fn deliveries(
        &self,
        user: UserId,
        webhook: WebhookId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Delivery>> {
        let client = self.pool.get().await?;
        client
            .query_opt(
                "SELECT 1 FROM webhooks WHERE user_id = $1 AND id = $2",
                &[&key(user.get()), &key(webhook.get())],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let rows = client
            .query(
                "SELECT record FROM webhook_deliveries WHERE webhook_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&key(webhook.get()), &key(after.unwrap_or(0)), &(limit as i64 + 1)],
            )
            .await?;
        let items = rows.into_iter().map(|r| r.get::<_, Json<Delivery>>(0).0).collect();
        Ok(super::lists::page(items, limit, |d: &Delivery| d.id.get()))
    }

    /// Deliveries due at `now`, taken for this deliverer (see the module's
    /// docs): from each webhook's queue, oldest due first, as many as
    /// `room(webhook)` allows and none that `busy` names; with when the
    /// next one not yet due is. Every webhook gets its turn whatever the
    /// others have waiting.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        room: crate::store::contract::Room,
        busy: crate::store::contract::Busy,
    ) -> Result<(Vec<DueDelivery>, Option<DateTime<Utc>>)> {
        let node = *self.deliverer.read();
        let mut client = self.pool.get().await?;
        let hooks: Vec<Webhook> = client
            .query("SELECT record FROM webhooks ORDER BY user_id, id", &[])
            .await?
            .into_iter()
            .map(|r| r.get::<_, Json<Webhook>>(0).0)
            .collect();
        let mut due = Vec::new();
        let tx = client.transaction().await?;
        for webhook in hooks {
            let room = room(webhook.id);
            if room == 0 {
                continue;
            }
            let rows = tx
                .query(
                    "SELECT d.id, d.record FROM webhook_deliveries d
                     WHERE d.webhook_id = $1 AND d.due_at <= $2
                       AND (d.claimed_by IS NULL OR NOT EXISTS (
                            SELECT 1 FROM nodes n WHERE n.id = d.claimed_by AND n.lease_until > clock_timestamp()))
                     ORDER BY d.due_at, d.id LIMIT $3
                     FOR UPDATE OF d SKIP LOCKED",
                    &[&key(webhook.id.get()), &now, &(room as i64 * 2)],
                )
                .await?;
            let taken: Vec<Delivery> = rows
                .into_iter()
                .map(|r| r.get::<_, Json<Delivery>>(1).0)
                .filter(|d| !busy(d.id))
                .take(room)
                .collect();
            let ids: Vec<i64> = taken.iter().map(|d| key(d.id.get())).collect();
            match node {
                Some(node) => {
                    tx.execute(
                        "UPDATE webhook_deliveries SET claimed_by = $3 WHERE webhook_id = $1 AND id = ANY($2)",
                        &[&key(webhook.id.get()), &ids, &node],
                    )
                    .await?
                }
                None => {
                    tx.execute(
                        "UPDATE webhook_deliveries SET due_at = $3 WHERE webhook_id = $1 AND id = ANY($2)",
                        &[&key(webhook.id.get()), &ids, &(now + CLAIM)],
                    )
                    .await?
                }
            };
            due.extend(taken.into_iter().map(|delivery| DueDelivery {
                delivery,
                webhook: webhook.clone(),
            }));
        }
        let next: Option<DateTime<Utc>> = tx
            .query_one("SELECT min(due_at) FROM webhook_deliveries WHERE due_at > $1", &[&now])
            .await?
            .get(0);
        tx.commit().await?;
        Ok((due, next))
    }

    /// Stores one attempt: the delivery is done (`next` None: delivered if
    /// `delivered`, else failed for good) or due again at `next`.
    pub async fn finish_attempt(
        &self,
        webhook: WebhookId,
        id: DeliveryId,
        attempt: Attempt,
        delivered: bool,
        next: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT record FROM webhook_deliveries WHERE webhook_id = $1 AND id = $2 FOR UPDATE",
                &[&key(webhook.get()), &key(id.get())],
            )
            .await?;
        // The webhook was deleted meanwhile.
        let Some(row) = row else {
            return Ok(());
        };
        let mut d = row.get::<_, Json<Delivery>>(0).0;
        if !d.record_attempt(attempt, delivered, next) {
            return Ok(());
        }
        tx.execute(
            "UPDATE webhook_deliveries SET due_at = $3, record = $4, claimed_by = NULL WHERE webhook_id = $1 AND id = $2",
            &[&key(webhook.get()), &key(id.get()), &d.next_attempt_at, &Json(&d)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops finished deliveries created before `cutoff`; returns how many.
    pub async fn prune_deliveries(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let client = self.pool.get().await?;
        // 10,000 rows a statement, as redb prunes: a backlog of millions
        // never becomes one long transaction holding its locks.
        let mut pruned = 0;
        loop {
            let gone = client
                .execute(
                    "DELETE FROM webhook_deliveries WHERE (webhook_id, id) IN (
                         SELECT webhook_id, id FROM webhook_deliveries
                         WHERE due_at IS NULL AND (record->>'created_at')::timestamptz < $1
                         LIMIT 10000)",
                    &[&cutoff],
                )
                .await? as usize;
            pruned += gone;
            if gone < 10_000 {
                return Ok(pruned);
            }
        }
    }

    /// A user's webhooks in id order.
    pub async fn webhooks(&self, user: UserId) -> Result<Vec<Webhook>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT record FROM webhooks WHERE user_id = $1 ORDER BY id",
                &[&key(user.get())],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get::<_, Json<Webhook>>(0).0).collect())
    }
}

/// Per-user advisory lock keys for webhook creation ("posta_wh" xor user).
const WEBHOOK_LOCK: i64 = 0x706f_7374_615f_7768;
