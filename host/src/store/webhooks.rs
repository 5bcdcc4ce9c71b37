//! Event webhooks and their durable outbox. An event is written — one
//! delivery row per subscribed webhook plus an `OUTBOX` entry keyed by
//! when it is due — by `Events::emit` inside the transaction of the change
//! it reports, so it commits with that change or not at all. The
//! deliverer (`crate::webhooks`) takes due entries, and `finish_attempt`
//! stores each attempt and moves or removes the entry in one transaction.
//! A crash during an attempt leaves the entry as it was: the event is
//! delivered again after the restart, with the same id.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, Result, Store, StoreError, decode, encode, next_id, page_records};
use crate::domain::webhook::{EventKind, MAX_PER_USER, Webhook, event_body};

use redb::TableDefinition;

/// (user, webhook) → Webhook.
pub(crate) const WEBHOOKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("webhooks");
/// (webhook, delivery) → Delivery: one event for one webhook, with its
/// attempts.
pub(crate) const DELIVERIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("webhook_deliveries");
/// (due unix ms, delivery) → (user, webhook): deliveries still to attempt.
pub(crate) const OUTBOX: TableDefinition<(u64, u64), (u64, u64)> = TableDefinition::new("webhook_outbox");

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(WEBHOOKS)?;
    tx.open_table(DELIVERIES)?;
    tx.open_table(OUTBOX)?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not yet accepted; `next_attempt_at` says when it is tried.
    Pending,
    /// A 2xx answer.
    Delivered,
    /// Every attempt failed; no more are made.
    Failed,
}

/// One attempt to deliver an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One event for one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: u64,
    pub webhook_id: u64,
    /// The event's id, the same on every attempt and for every webhook it
    /// went to: receivers deduplicate by it.
    pub event_id: String,
    pub event: EventKind,
    pub state: DeliveryState,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
    /// The JSON body POSTed, byte for byte.
    pub body: String,
}

fn due_key(at: DateTime<Utc>) -> u64 {
    at.timestamp_millis().max(0) as u64
}

/// Writes events into the outbox of the transaction it was made for.
/// Each user's webhooks are read once per transaction; an event nobody
/// subscribed to costs that one range read.
pub(crate) struct Events<'tx> {
    tx: &'tx WriteTransaction,
    hooks: HashMap<u64, Vec<Webhook>>,
    written: usize,
}

impl<'tx> Events<'tx> {
    pub(crate) fn new(tx: &'tx WriteTransaction) -> Events<'tx> {
        Events {
            tx,
            hooks: HashMap::new(),
            written: 0,
        }
    }

    /// Records `kind` for `user_id`'s webhooks that want it; `data` is
    /// built only if one does.
    pub(crate) fn emit(
        &mut self,
        user_id: u64,
        kind: EventKind,
        now: DateTime<Utc>,
        data: impl FnOnce() -> serde_json::Value,
    ) -> Result<()> {
        if !self.hooks.contains_key(&user_id) {
            let table = self.tx.open_table(WEBHOOKS)?;
            let mut found = Vec::new();
            for entry in table.range((user_id, 0)..=(user_id, u64::MAX))? {
                found.push(decode::<Webhook>(entry?.1.value())?);
            }
            self.hooks.insert(user_id, found);
        }
        let targets: Vec<(u64, u64)> = self.hooks[&user_id]
            .iter()
            .filter(|w| w.wants(kind))
            .map(|w| (w.id, w.user_id))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let event_id = format!("evt_{}", hex::encode(rand::random::<[u8; 16]>()));
        let body = event_body(&event_id, kind, now, &data());
        for (webhook_id, user_id) in targets {
            let id = next_id(self.tx, "webhook_delivery")?;
            let d = Delivery {
                id,
                webhook_id,
                event_id: event_id.clone(),
                event: kind,
                state: DeliveryState::Pending,
                created_at: now,
                next_attempt_at: Some(now),
                attempts: Vec::new(),
                body: body.clone(),
            };
            self.tx
                .open_table(DELIVERIES)?
                .insert((webhook_id, id), encode(&d).as_slice())?;
            self.tx
                .open_table(OUTBOX)?
                .insert((due_key(now), id), (user_id, webhook_id))?;
            self.written += 1;
        }
        Ok(())
    }

    /// Whether anything was written; after the commit, pass it to
    /// `Store::wake_deliverer`. (Taking `self` ends the borrow of the
    /// transaction, so it can commit.)
    pub(crate) fn into_written(self) -> bool {
        self.written > 0
    }
}

/// A delivery whose time has come, with the webhook it goes to.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub webhook: Webhook,
}

impl Store {
    /// Wakes the deliverer after a commit that wrote events.
    pub(crate) fn wake_deliverer(&self, wrote: bool) {
        if wrote {
            self.outbox.notify_one();
        }
    }

    /// Resolves when events were committed since the last call.
    pub async fn outbox_written(&self) {
        self.outbox.notified().await
    }

    pub fn create_webhook(
        &self,
        user_id: u64,
        url: String,
        events: Vec<EventKind>,
        secret: String,
        now: DateTime<Utc>,
    ) -> Result<Webhook> {
        let tx = self.write()?;
        let hook = {
            let mut table = tx.open_table(WEBHOOKS)?;
            let count = table.range((user_id, 0)..=(user_id, u64::MAX))?.count();
            if count >= MAX_PER_USER {
                return Err(StoreError::Conflict(format!(
                    "at most {MAX_PER_USER} webhooks per user; delete one first"
                )));
            }
            let mut events = events;
            events.sort_by_key(|k| k.as_str());
            events.dedup();
            let hook = Webhook {
                id: next_id(&tx, "webhook")?,
                user_id,
                url,
                events,
                secret,
                created_at: now,
            };
            table.insert((user_id, hook.id), encode(&hook).as_slice())?;
            hook
        };
        tx.commit()?;
        Ok(hook)
    }

    pub fn webhooks(&self, user_id: u64) -> Result<Vec<Webhook>> {
        let tx = self.read()?;
        let table = tx.open_table(WEBHOOKS)?;
        let mut out = Vec::new();
        for entry in table.range((user_id, 0)..=(user_id, u64::MAX))? {
            out.push(decode(entry?.1.value())?);
        }
        Ok(out)
    }

    pub fn webhook(&self, user_id: u64, id: u64) -> Result<Webhook> {
        let tx = self.read()?;
        let v = tx
            .open_table(WEBHOOKS)?
            .get((user_id, id))?
            .ok_or(StoreError::NotFound)?;
        decode(v.value())
    }

    /// Deletes a webhook with its deliveries; pending ones are dropped.
    pub fn delete_webhook(&self, user_id: u64, id: u64) -> Result<()> {
        let tx = self.write()?;
        {
            if tx.open_table(WEBHOOKS)?.remove((user_id, id))?.is_none() {
                return Err(StoreError::NotFound);
            }
            let mut deliveries = tx.open_table(DELIVERIES)?;
            let mut outbox = tx.open_table(OUTBOX)?;
            let mut pending = Vec::new();
            for entry in deliveries.range((id, 0)..=(id, u64::MAX))? {
                let d: Delivery = decode(entry?.1.value())?;
                if let Some(at) = d.next_attempt_at {
                    pending.push((due_key(at), d.id));
                }
            }
            for key in pending {
                outbox.remove(key)?;
            }
            deliveries.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A webhook's deliveries, oldest first.
    pub fn deliveries(
        &self,
        user_id: u64,
        webhook_id: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Delivery>> {
        let tx = self.read()?;
        tx.open_table(WEBHOOKS)?
            .get((user_id, webhook_id))?
            .ok_or(StoreError::NotFound)?;
        page_records(&tx.open_table(DELIVERIES)?, webhook_id, after, limit)
    }

    /// Up to `limit` deliveries due at `now`, oldest due first, passing
    /// over those `skip(webhook, delivery)` names (under way, or their
    /// webhook busy), and when the next one not yet due is. At most
    /// `MAX_SCAN` entries are read per call.
    pub fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        skip: impl Fn(u64, u64) -> bool,
    ) -> Result<(Vec<DueDelivery>, Option<DateTime<Utc>>)> {
        const MAX_SCAN: usize = 10_000;
        let tx = self.read()?;
        let outbox = tx.open_table(OUTBOX)?;
        let hooks = tx.open_table(WEBHOOKS)?;
        let deliveries = tx.open_table(DELIVERIES)?;
        let mut due = Vec::new();
        let mut next = None;
        for entry in outbox.iter()?.take(MAX_SCAN) {
            let (k, v) = entry?;
            let ((at, id), (user_id, webhook_id)) = (k.value(), v.value());
            if at > due_key(now) {
                next = DateTime::from_timestamp_millis(at as i64);
                break;
            }
            if due.len() == limit {
                next = Some(now);
                break;
            }
            if skip(webhook_id, id) {
                continue;
            }
            let (Some(h), Some(d)) = (hooks.get((user_id, webhook_id))?, deliveries.get((webhook_id, id))?) else {
                continue;
            };
            due.push(DueDelivery {
                delivery: decode(d.value())?,
                webhook: decode(h.value())?,
            });
        }
        Ok((due, next))
    }

    /// Stores one attempt: the delivery is done (`next` None: delivered
    /// if `delivered`, else failed for good) or due again at `next`.
    pub fn finish_attempt(
        &self,
        webhook_id: u64,
        delivery_id: u64,
        attempt: Attempt,
        delivered: bool,
        next: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let tx = self.write()?;
        {
            let mut deliveries = tx.open_table(DELIVERIES)?;
            let Some(v) = deliveries.get((webhook_id, delivery_id))?.map(|v| v.value().to_vec()) else {
                // The webhook was deleted meanwhile.
                return Ok(());
            };
            let mut d: Delivery = decode(&v)?;
            let Some(was_due) = d.next_attempt_at else {
                return Ok(());
            };
            let mut outbox = tx.open_table(OUTBOX)?;
            let owner = outbox.remove((due_key(was_due), delivery_id))?.map(|v| v.value());
            d.attempts.push(attempt);
            d.next_attempt_at = if delivered { None } else { next };
            d.state = match (delivered, d.next_attempt_at) {
                (true, _) => DeliveryState::Delivered,
                (false, Some(_)) => DeliveryState::Pending,
                (false, None) => DeliveryState::Failed,
            };
            if let (Some(at), Some(owner)) = (d.next_attempt_at, owner) {
                outbox.insert((due_key(at), delivery_id), owner)?;
            }
            deliveries.insert((webhook_id, delivery_id), encode(&d).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops finished deliveries created before `cutoff`, oldest first;
    /// returns how many.
    pub fn prune_deliveries(&self, cutoff: DateTime<Utc>) -> Result<usize> {
        let hooks: Vec<u64> = {
            let tx = self.read()?;
            let table = tx.open_table(WEBHOOKS)?;
            let mut ids = Vec::new();
            for entry in table.iter()? {
                ids.push(entry?.0.value().1);
            }
            ids
        };
        let mut pruned = 0;
        for webhook_id in hooks {
            let tx = self.write_bulk()?;
            {
                let mut deliveries = tx.open_table(DELIVERIES)?;
                let mut old = Vec::new();
                for entry in deliveries.range((webhook_id, 0)..=(webhook_id, u64::MAX))? {
                    let d: Delivery = decode(entry?.1.value())?;
                    if d.created_at >= cutoff || old.len() >= 10_000 {
                        break;
                    }
                    if d.state != DeliveryState::Pending {
                        old.push(d.id);
                    }
                }
                pruned += old.len();
                for id in old {
                    deliveries.remove((webhook_id, id))?;
                }
            }
            tx.commit()?;
        }
        Ok(pruned)
    }
}
