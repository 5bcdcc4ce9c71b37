//! Event webhooks and their durable outbox. An event is written — one
//! delivery row per subscribed webhook plus an entry in that webhook's
//! queue (`OUTBOX`) keyed by when it is due — by `Events::emit` inside the transaction of the change
//! it reports, so it commits with that change or not at all. The
//! deliverer (`crate::webhooks`) takes due entries, and `finish_attempt`
//! stores each attempt and moves or removes the entry in one transaction.
//! A crash during an attempt leaves the entry as it was: the event is
//! delivered again after the restart, with the same id.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redb::{ReadableTable, WriteTransaction};

use super::{Page, Redb, Result, StoreError, decode, encode, next_id, page_records};
use crate::domain::webhook::{
    Attempt, Delivery, DeliveryState, EventKind, MAX_PER_USER, Webhook, event_body, new_event_id, wanting,
};
use crate::domain::{DeliveryId, UserId, WebhookId};
use crate::store::DueDelivery;

use redb::TableDefinition;

/// (user, webhook) → Webhook.
pub(crate) const WEBHOOKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("webhooks");
/// (webhook, delivery) → Delivery: one event for one webhook, with its
/// attempts.
pub(crate) const DELIVERIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("webhook_deliveries");
/// (webhook, due unix ms, delivery) → (): deliveries still to attempt, a
/// queue per webhook, so a webhook with a million events waiting (its
/// receiver down) is one queue among others, not the head of a shared one.
pub(crate) const OUTBOX: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("webhook_queue");

pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(WEBHOOKS)?;
    tx.open_table(DELIVERIES)?;
    tx.open_table(OUTBOX)?;
    Ok(())
}

impl Delivery {
    /// A new event's delivery to one webhook, due at once.
    pub(crate) fn pending(
        id: DeliveryId,
        webhook_id: WebhookId,
        event_id: &str,
        event: EventKind,
        body: &str,
        now: DateTime<Utc>,
    ) -> Delivery {
        Delivery {
            id,
            webhook_id,
            event_id: event_id.to_string(),
            event,
            state: DeliveryState::Pending,
            created_at: now,
            next_attempt_at: Some(now),
            attempts: Vec::new(),
            body: body.to_string(),
        }
    }
}

/// A user's webhooks, in id order (at most `MAX_PER_USER`).
fn webhooks_of(table: &impl ReadableTable<(u64, u64), &'static [u8]>, user_id: UserId) -> Result<Vec<Webhook>> {
    let mut out = Vec::new();
    for entry in table.range((user_id.get(), 0)..=(user_id.get(), u64::MAX))? {
        out.push(decode(entry?.1.value())?);
    }
    Ok(out)
}

fn due_key(at: DateTime<Utc>) -> u64 {
    at.timestamp_millis().max(0) as u64
}

/// Writes events into the outbox of the transaction it was made for.
/// Each user's webhooks are read once per transaction; an event nobody
/// subscribed to costs that one range read.
pub(crate) struct Events<'tx> {
    tx: &'tx WriteTransaction,
    hooks: HashMap<UserId, Vec<Webhook>>,
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
        user_id: UserId,
        kind: EventKind,
        now: DateTime<Utc>,
        data: impl FnOnce() -> serde_json::Value,
    ) -> Result<()> {
        if !self.hooks.contains_key(&user_id) {
            let found = webhooks_of(&self.tx.open_table(WEBHOOKS)?, user_id)?;
            self.hooks.insert(user_id, found);
        }
        let targets = wanting(&self.hooks[&user_id], kind);
        if targets.is_empty() {
            return Ok(());
        }
        let event_id = new_event_id();
        let body = event_body(&event_id, kind, now, &data());
        for webhook_id in targets {
            let id = DeliveryId::new(next_id(self.tx, "webhook_delivery")?);
            let d = Delivery::pending(id, webhook_id, &event_id, kind, &body, now);
            self.tx
                .open_table(DELIVERIES)?
                .insert((webhook_id.get(), id.get()), encode(&d).as_slice())?;
            self.tx
                .open_table(OUTBOX)?
                .insert((webhook_id.get(), due_key(now), id.get()), ())?;
            self.written += 1;
        }
        Ok(())
    }

    /// Whether anything was written; after the commit, pass it to
    /// `Redb::wake_deliverer`. (Taking `self` ends the borrow of the
    /// transaction, so it can commit.)
    pub(crate) fn into_written(self) -> bool {
        self.written > 0
    }
}

impl Redb {
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
        user_id: UserId,
        url: String,
        events: Vec<EventKind>,
        secret: String,
        now: DateTime<Utc>,
    ) -> Result<Webhook> {
        let tx = self.write()?;
        let hook = {
            let mut table = tx.open_table(WEBHOOKS)?;
            if webhooks_of(&table, user_id)?.len() >= MAX_PER_USER {
                return Err(StoreError::Conflict(format!(
                    "at most {MAX_PER_USER} webhooks per user; delete one first"
                )));
            }
            let mut events = events;
            events.sort_by_key(|k| k.as_str());
            events.dedup();
            let hook = Webhook {
                id: WebhookId::new(next_id(&tx, "webhook")?),
                user_id,
                url,
                events,
                secret,
                created_at: now,
            };
            table.insert((user_id.get(), hook.id.get()), encode(&hook).as_slice())?;
            hook
        };
        tx.commit()?;
        Ok(hook)
    }

    pub fn webhooks(&self, user_id: UserId) -> Result<Vec<Webhook>> {
        webhooks_of(&self.read()?.open_table(WEBHOOKS)?, user_id)
    }

    pub fn webhook(&self, user_id: UserId, id: WebhookId) -> Result<Webhook> {
        let tx = self.read()?;
        let v = tx
            .open_table(WEBHOOKS)?
            .get((user_id.get(), id.get()))?
            .ok_or(StoreError::NotFound)?;
        decode(v.value())
    }

    /// Deletes a webhook with its deliveries; pending ones are dropped.
    pub fn delete_webhook(&self, user_id: UserId, id: WebhookId) -> Result<()> {
        let tx = self.write()?;
        {
            if tx.open_table(WEBHOOKS)?.remove((user_id.get(), id.get()))?.is_none() {
                return Err(StoreError::NotFound);
            }
            let id = id.get();
            tx.open_table(OUTBOX)?
                .retain_in((id, 0, 0)..=(id, u64::MAX, u64::MAX), |_, _| false)?;
            tx.open_table(DELIVERIES)?
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A webhook's deliveries, oldest first.
    pub fn deliveries(
        &self,
        user_id: UserId,
        webhook_id: WebhookId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Delivery>> {
        let tx = self.read()?;
        tx.open_table(WEBHOOKS)?
            .get((user_id.get(), webhook_id.get()))?
            .ok_or(StoreError::NotFound)?;
        page_records(&tx.open_table(DELIVERIES)?, webhook_id.get(), after, limit)
    }

    /// Deliveries due at `now`: from each webhook's queue, oldest due
    /// first, as many as `room(webhook)` allows and none that `busy`
    /// names (under way); with when the next one not yet due is. Every
    /// webhook gets its turn whatever the others have waiting.
    pub fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        room: crate::store::contract::Room,
        busy: crate::store::contract::Busy,
    ) -> Result<(Vec<DueDelivery>, Option<DateTime<Utc>>)> {
        let tx = self.read()?;
        let outbox = tx.open_table(OUTBOX)?;
        let hooks = tx.open_table(WEBHOOKS)?;
        let deliveries = tx.open_table(DELIVERIES)?;
        let now_key = due_key(now);
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for hook in hooks.iter()? {
            let (k, v) = hook?;
            let webhook_id = WebhookId::new(k.value().1);
            let mut room = room(webhook_id);
            let mut found = Vec::new();
            for entry in outbox.range((webhook_id.get(), 0, 0)..=(webhook_id.get(), u64::MAX, u64::MAX))? {
                let (_, at, id) = entry?.0.value();
                if at > now_key {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    break;
                }
                if room == 0 {
                    // The deliverer looks again when one of this
                    // webhook's requests finishes.
                    break;
                }
                if busy(DeliveryId::new(id)) {
                    continue;
                }
                if let Some(d) = deliveries.get((webhook_id.get(), id))? {
                    found.push(decode::<Delivery>(d.value())?);
                    room -= 1;
                }
            }
            if !found.is_empty() {
                let webhook: Webhook = decode(v.value())?;
                due.extend(found.into_iter().map(|delivery| DueDelivery {
                    delivery,
                    webhook: webhook.clone(),
                }));
            }
        }
        Ok((due, next.and_then(|ms| DateTime::from_timestamp_millis(ms as i64))))
    }

    /// Stores one attempt: the delivery is done (`next` None: delivered
    /// if `delivered`, else failed for good) or due again at `next`.
    pub fn finish_attempt(
        &self,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
        attempt: Attempt,
        delivered: bool,
        next: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let tx = self.write()?;
        let (webhook_id, delivery_id) = (webhook_id.get(), delivery_id.get());
        {
            let mut deliveries = tx.open_table(DELIVERIES)?;
            let Some(v) = deliveries.get((webhook_id, delivery_id))?.map(|v| v.value().to_vec()) else {
                // The webhook was deleted meanwhile.
                return Ok(());
            };
            let mut d: Delivery = decode(&v)?;
            let was_due = d.next_attempt_at;
            if !d.record_attempt(attempt, delivered, next) {
                return Ok(());
            }
            let mut outbox = tx.open_table(OUTBOX)?;
            if let Some(was_due) = was_due {
                outbox.remove((webhook_id, due_key(was_due), delivery_id))?;
            }
            if let Some(at) = d.next_attempt_at {
                outbox.insert((webhook_id, due_key(at), delivery_id), ())?;
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
                        old.push(d.id.get());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A webhook whose receiver is down piles up events; another user's
    /// webhook must still get its turn at once.
    #[test]
    fn a_backlog_on_one_webhook_does_not_hold_up_another() {
        let (_dir, store) = crate::store::redb::temp_store();
        let (a, _) = store.create_user("a@example.org".into()).unwrap();
        let (b, _) = store.create_user("b@example.org".into()).unwrap();
        let now = Utc::now();
        let hook = |user: UserId| {
            store
                .create_webhook(
                    user,
                    "https://hooks.example.com/".into(),
                    vec![EventKind::MessageFailed],
                    "0123456789abcdef".into(),
                    now,
                )
                .unwrap()
        };
        let (hook_a, hook_b) = (hook(a.id), hook(b.id));
        let tx = store.write().unwrap();
        let mut events = Events::new(&tx);
        for _ in 0..5000 {
            events
                .emit(a.id, EventKind::MessageFailed, now, || serde_json::json!({}))
                .unwrap();
        }
        let later = now + chrono::Duration::milliseconds(1);
        events
            .emit(b.id, EventKind::MessageFailed, later, || serde_json::json!({}))
            .unwrap();
        // Not subscribed: written nowhere.
        events
            .emit(b.id, EventKind::CampaignSent, later, || serde_json::json!({}))
            .unwrap();
        assert!(events.into_written());
        tx.commit().unwrap();

        let (due, _) = store
            .due_deliveries(later, Box::new(|_| 2), Box::new(|_| false))
            .unwrap();
        let count = |id| due.iter().filter(|d| d.webhook.id == id).count();
        assert_eq!((count(hook_a.id), count(hook_b.id)), (2, 1));
        // Under way ones are passed over; nothing is due before its time.
        let first = due.iter().find(|d| d.webhook.id == hook_a.id).unwrap().delivery.id;
        let (again, _) = store
            .due_deliveries(later, Box::new(|_| 2), Box::new(move |d| d == first))
            .unwrap();
        assert!(again.iter().all(|d| d.delivery.id != first));
        let (early, next) = store.due_deliveries(now, Box::new(|_| 2), Box::new(|_| false)).unwrap();
        assert_eq!(early.iter().filter(|d| d.webhook.id == hook_b.id).count(), 0);
        assert_eq!(next.map(|t| t.timestamp_millis()), Some(later.timestamp_millis()));

        // An attempt that failed moves the delivery back in its queue.
        let d = &due.iter().find(|x| x.webhook.id == hook_a.id).unwrap().delivery;
        let attempt = Attempt {
            at: later,
            status: Some(500),
            error: Some("HTTP 500".into()),
            duration_ms: 1,
        };
        let retry_at = later + chrono::Duration::seconds(10);
        store
            .finish_attempt(d.webhook_id, d.id, attempt, false, Some(retry_at))
            .unwrap();
        let (due_now, _) = store
            .due_deliveries(later, Box::new(|_| 10_000), Box::new(|_| false))
            .unwrap();
        assert!(due_now.iter().all(|x| x.delivery.id != d.id));
        let page = store.deliveries(a.id, hook_a.id, None, 10).unwrap();
        let stored = page.items.iter().find(|x| x.id == d.id).unwrap();
        assert_eq!((stored.state, stored.attempts.len()), (DeliveryState::Pending, 1));
        // Deleting the webhook empties its queue.
        store.delete_webhook(a.id, hook_a.id).unwrap();
        let (left, _) = store
            .due_deliveries(retry_at, Box::new(|_| 10_000), Box::new(|_| false))
            .unwrap();
        assert!(left.iter().all(|x| x.webhook.id == hook_b.id));
    }
}
