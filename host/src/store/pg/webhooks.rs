//! Webhooks and their outbox on PostgreSQL: `Events::emit` writes an
//! event's deliveries in the transaction of the change it reports, as
//! redb's `store::Events` does, so it commits with that change or not at
//! all. (The deliverer's side — due deliveries, attempts — is still
//! redb's alone.)

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::PgStore;
use super::key;
use crate::domain::webhook::{EventKind, MAX_PER_USER, Webhook, event_body};
use crate::domain::{DeliveryId, UserId, WebhookId};
use crate::store::{Delivery, DeliveryState, Result, StoreError};

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
        let targets: Vec<WebhookId> = self.hooks[&user]
            .iter()
            .filter(|w| w.wants(kind))
            .map(|w| w.id)
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let event_id = format!("evt_{}", hex::encode(rand::random::<[u8; 16]>()));
        let body = event_body(&event_id, kind, now, &data());
        for webhook_id in targets {
            let id: i64 = tx
                .query_one("SELECT nextval('webhook_delivery_ids')", &[])
                .await?
                .get(0);
            let d = Delivery {
                id: DeliveryId::new(id as u64),
                webhook_id,
                event_id: event_id.clone(),
                event: kind,
                state: DeliveryState::Pending,
                created_at: now,
                next_attempt_at: Some(now),
                attempts: Vec::new(),
                body: body.clone(),
            };
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
