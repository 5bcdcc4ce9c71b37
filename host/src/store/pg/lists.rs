//! Lists and their subscribers on PostgreSQL: the same operations and
//! answers as redb's `store::redb::lists` (the conformance tests run both).

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use deadpool_postgres::GenericClient;
use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::webhooks::Events;
use super::{PgStore, key, scan_page};
use crate::domain::webhook::{EventKind, unsubscribed_data};
use crate::domain::{
    CampaignId, List, ListId, NewSubscriber, Status, Subscriber, SubscriberId, SubscriberPatch, SubscriberStatus,
    UserId,
};
use crate::store::{Page, Result, SCAN_LIMIT, StoreError, UpsertReport};

/// The list, if `user` owns it (another user's list is as missing as one
/// that never was). `lock` is a row-lock clause (`FOR NO KEY UPDATE`).
pub(super) async fn owned_list(db: &impl GenericClient, user: UserId, list: ListId, lock: &str) -> Result<List> {
    let row = db
        .query_opt(
            &format!("SELECT record FROM lists WHERE id = $1 AND user_id = $2 {lock}"),
            &[&key(list.get()), &key(user.get())],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.get::<_, Json<List>>(0).0)
}

async fn save_list(tx: &Transaction<'_>, list: &List) -> Result<()> {
    tx.execute(
        "UPDATE lists SET record = $2 WHERE id = $1",
        &[&key(list.id.get()), &Json(list)],
    )
    .await?;
    Ok(())
}

impl PgStore {
    pub async fn create_list(&self, user: UserId, name: String) -> Result<List> {
        let name = name.as_str();
        // Checked before an id is taken.
        let mut list = List::new(ListId::new(0), user, name, Utc::now())?;
        let client = self.pool.get().await?;
        let id: i64 = client.query_one("SELECT nextval('list_ids')", &[]).await?.get(0);
        list.id = ListId::new(id as u64);
        client
            .execute(
                "INSERT INTO lists (id, user_id, record) VALUES ($1, $2, $3)",
                &[&id, &key(user.get()), &Json(&list)],
            )
            .await?;
        Ok(list)
    }

    pub async fn list(&self, user: UserId, list: ListId) -> Result<List> {
        owned_list(&self.pool.get().await?, user, list, "").await
    }

    pub async fn lists(&self, user: UserId, after: Option<u64>, limit: usize) -> Result<Page<List>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT record FROM lists WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&key(user.get()), &key(after.unwrap_or(0)), &(limit as i64 + 1)],
            )
            .await?;
        Ok(page(
            rows.into_iter().map(|r| r.get::<_, Json<List>>(0).0).collect(),
            limit,
            |l| l.id.get(),
        ))
    }

    /// Deletes a list with its subscribers; refused while a campaign that
    /// has started and not finished uses it.
    pub async fn delete_list(&self, user: UserId, list: ListId) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        owned_list(&tx, user, list, "FOR UPDATE").await?;
        let busy = tx
            .query_opt(
                "SELECT id, status FROM campaigns
                 WHERE user_id = $1 AND (run->>'list_id')::bigint = $2
                   AND status = ANY($3)
                 ORDER BY id LIMIT 1",
                &[
                    &key(user.get()),
                    &key(list.get()),
                    &Status::UNDER_WAY.map(Status::as_str).as_slice(),
                ],
            )
            .await?;
        if let Some(row) = busy {
            let (id, status): (i64, String) = (row.get(0), row.get(1));
            return Err(StoreError::Conflict(format!(
                "list {list} is used by campaign {id} which is {status}"
            )));
        }
        tx.execute("DELETE FROM subscribers WHERE list_id = $1", &[&key(list.get())])
            .await?;
        tx.execute("DELETE FROM segments WHERE list_id = $1", &[&key(list.get())])
            .await?;
        tx.execute("DELETE FROM lists WHERE id = $1", &[&key(list.get())])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts or updates subscribers by email in one transaction, under
    /// the list's row lock (see the migration: a send that starts meanwhile
    /// waits for it, and its recipients are exactly those stored before).
    pub async fn upsert_subscribers(
        &self,
        user: UserId,
        list_id: ListId,
        batch: Vec<NewSubscriber>,
    ) -> Result<UpsertReport> {
        let now = Utc::now();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut list = owned_list(&tx, user, list_id, "FOR NO KEY UPDATE").await?;
        let emails: Vec<&str> = batch.iter().map(|n| n.email.as_str()).collect();
        let rows = tx
            .query(
                "SELECT record FROM subscribers WHERE list_id = $1 AND email = ANY($2)",
                &[&key(list_id.get()), &emails],
            )
            .await?;
        // Everyone this batch has seen by address, stored or new: an address
        // twice in one batch is created once, then updated.
        let mut known: HashMap<String, Subscriber> = rows
            .into_iter()
            .map(|r| {
                let s = r.get::<_, Json<Subscriber>>(0).0;
                (s.email.as_str().to_string(), s)
            })
            .collect();
        let fresh = batch.iter().filter(|n| !known.contains_key(n.email.as_str())).count();
        let mut ids = tx
            .query(
                "SELECT nextval('subscriber_ids') FROM generate_series(1, $1::bigint)",
                &[&(fresh as i64)],
            )
            .await?
            .into_iter()
            .map(|r| r.get::<_, i64>(0));
        let mut report = UpsertReport::for_batch(batch.len());
        for new in batch {
            let sub = match known.get(new.email.as_str()) {
                Some(old) => {
                    report.updated += 1;
                    let (sub, kept) = old.reimported(new, now);
                    report.kept_unsubscribed += u64::from(kept);
                    sub
                }
                None => {
                    report.created += 1;
                    list.subscriber_count += 1;
                    let id = ids.next().expect("an id per new address");
                    Subscriber::imported(SubscriberId::new(id as u64), list_id, new, now)
                }
            };
            known.insert(sub.email.as_str().to_string(), sub.clone());
            report.subscribers.push(sub);
        }
        // One row per subscriber, last version wins (the batch may name
        // one twice), written in id order: rows land in the table in the
        // order a send's walk reads them.
        let mut last: BTreeMap<SubscriberId, &Subscriber> = BTreeMap::new();
        for s in &report.subscribers {
            last.insert(s.id, s);
        }
        let ids: Vec<i64> = last.keys().map(|id| key(id.get())).collect();
        let emails: Vec<&str> = last.values().map(|s| s.email.as_str()).collect();
        let records: Vec<Json<&Subscriber>> = last.values().map(|s| Json(*s)).collect();
        tx.execute(
            "INSERT INTO subscribers (list_id, id, email, record)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::jsonb[])
             ON CONFLICT (list_id, id) DO UPDATE SET record = excluded.record",
            &[&key(list_id.get()), &ids, &emails, &records],
        )
        .await?;
        save_list(&tx, &list).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Changes one subscriber; the only way to re-subscribe someone.
    pub async fn update_subscriber(
        &self,
        user: UserId,
        list: ListId,
        id: SubscriberId,
        patch: SubscriberPatch,
    ) -> Result<Subscriber> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        owned_list(&tx, user, list, "").await?;
        let old = subscriber_in(&tx, list, id, "FOR UPDATE").await?;
        let now = Utc::now();
        let sub = patch.apply(&old, now)?;
        save_subscriber(&tx, &sub).await?;
        let mut events = Events::default();
        if old.status == SubscriberStatus::Subscribed && sub.status == SubscriberStatus::Unsubscribed {
            events
                .emit(&tx, user, EventKind::SubscriberUnsubscribed, now, || {
                    unsubscribed_data(&sub, "api", None)
                })
                .await?;
        }
        tx.commit().await?;
        Ok(sub)
    }

    /// One subscriber of one of the user's lists.
    pub async fn subscriber(&self, user: UserId, list: ListId, id: SubscriberId) -> Result<Subscriber> {
        let client = self.pool.get().await?;
        owned_list(&client, user, list, "").await?;
        subscriber_in(&client, list, id, "").await
    }

    /// A list's subscribers in id order after `after`, optionally with one
    /// status; like redb's, a filtered page reads at most `SCAN_LIMIT`
    /// subscribers and then answers with fewer items and a cursor.
    pub async fn subscribers(
        &self,
        user: UserId,
        list: ListId,
        status: Option<SubscriberStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Subscriber>> {
        let client = self.pool.get().await?;
        owned_list(&client, user, list, "").await?;
        let after = key(after.unwrap_or(0));
        let Some(status) = status else {
            let rows = client
                .query(
                    "SELECT record FROM subscribers WHERE list_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&key(list.get()), &after, &(limit as i64 + 1)],
                )
                .await?;
            let items = rows.into_iter().map(|r| r.get::<_, Json<Subscriber>>(0).0).collect();
            return Ok(page(items, limit, |s| s.id.get()));
        };
        // The scanned window, then the matches in it: the same pages redb
        // gives (no index by status there either).
        let rows = client
            .query(
                "SELECT id, record->>'status' = $4, CASE WHEN record->>'status' = $4 THEN record END
                 FROM subscribers WHERE list_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&key(list.get()), &after, &((SCAN_LIMIT + 1) as i64), &status.as_str()],
            )
            .await?;
        let (items, next_after) = scan_page(
            &rows,
            limit,
            |row| row.get::<_, i64>(0) as u64,
            |row| row.get::<_, bool>(1).then(|| row.get::<_, Json<Subscriber>>(2).0),
        );
        Ok(Page { items, next_after })
    }

    /// Calls `f` with every subscriber of the list in id order, from one
    /// snapshot (a repeatable-read transaction read through a portal, 1,000
    /// rows at a time), until it returns false.
    pub async fn scan_subscribers(
        &self,
        user: UserId,
        list: ListId,
        mut f: crate::store::contract::Visit,
    ) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        // Rows are handed over as the reader takes them: a slow reader may
        // keep this snapshot idle for long, and it locks nothing.
        tx.batch_execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            .await?;
        owned_list(&tx, user, list, "").await?;
        let statement = tx
            .prepare("SELECT record FROM subscribers WHERE list_id = $1 ORDER BY id")
            .await?;
        let list_key = key(list.get());
        let portal = tx.bind(&statement, &[&list_key]).await?;
        loop {
            let rows = tx.query_portal(&portal, 1_000).await?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in rows {
                if !f(row.get::<_, Json<Subscriber>>(0).0)? {
                    return Ok(());
                }
            }
        }
    }

    /// Marks the subscriber a campaign was sent to as unsubscribed, also
    /// after the campaign was deleted; a subscriber no longer subscribed
    /// costs a read, not a write (the link is public).
    pub async fn unsubscribe(&self, campaign: CampaignId, id: SubscriberId) -> Result<()> {
        let mut client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT (run->>'list_id')::bigint FROM campaigns WHERE id = $1
                 UNION ALL SELECT list_id FROM deleted_campaigns WHERE id = $1",
                &[&key(campaign.get())],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let list = ListId::new(row.get::<_, i64>(0) as u64);
        if subscriber_in(&client, list, id, "").await?.status != SubscriberStatus::Subscribed {
            return Ok(());
        }
        let tx = client.transaction().await?;
        // Again under the row lock: an import may have changed it.
        let mut sub = subscriber_in(&tx, list, id, "FOR UPDATE").await?;
        if sub.status != SubscriberStatus::Subscribed {
            return Ok(());
        }
        let now = Utc::now();
        sub.set_status(SubscriberStatus::Unsubscribed, "unsubscribe_link", now);
        sub.updated_at = now;
        save_subscriber(&tx, &sub).await?;
        let owner = tx
            .query_opt("SELECT user_id FROM lists WHERE id = $1", &[&key(list.get())])
            .await?;
        if let Some(owner) = owner {
            let user = UserId::new(owner.get::<_, i64>(0) as u64);
            Events::default()
                .emit(&tx, user, EventKind::SubscriberUnsubscribed, now, || {
                    unsubscribed_data(&sub, "unsubscribe_link", Some(campaign))
                })
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn subscriber_in(db: &impl GenericClient, list: ListId, id: SubscriberId, lock: &str) -> Result<Subscriber> {
    let row = db
        .query_opt(
            &format!("SELECT record FROM subscribers WHERE list_id = $1 AND id = $2 {lock}"),
            &[&key(list.get()), &key(id.get())],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.get::<_, Json<Subscriber>>(0).0)
}

async fn save_subscriber(tx: &Transaction<'_>, s: &Subscriber) -> Result<()> {
    tx.execute(
        "UPDATE subscribers SET record = $3 WHERE list_id = $1 AND id = $2",
        &[&key(s.list_id.get()), &key(s.id.get()), &Json(s)],
    )
    .await?;
    Ok(())
}

/// A page from `limit + 1` rows: the extra one says there is more.
pub(super) fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> u64) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_after = if more { items.last().map(id) } else { None };
    Page { items, next_after }
}
