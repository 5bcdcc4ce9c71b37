//! Lists and their subscribers.

use chrono::Utc;
use redb::ReadableTable;

use super::{
    CAMPAIGNS, Events, LISTS, Page, Redb, Result, SCAN_LIMIT, SUBSCRIBER_EMAILS, SUBSCRIBERS, StoreError,
    USER_CAMPAIGNS, USER_LISTS, decode, encode, next_id, page_filtered, page_ids, subscriber_codec,
};
use crate::domain::webhook::{EventKind, unsubscribed_data};
use crate::domain::{Campaign, List, NewSubscriber, Subscriber, SubscriberPatch, SubscriberStatus};
use crate::domain::{CampaignId, ListId, SubscriberId, UserId};
use crate::store::UpsertReport;

pub(super) fn owned_list(
    tx_lists: &impl ReadableTable<u64, &'static [u8]>,
    user_id: UserId,
    list_id: ListId,
) -> Result<List> {
    let list: List = match tx_lists.get(list_id.get())? {
        Some(v) => decode(v.value())?,
        None => return Err(StoreError::NotFound),
    };
    // Another user's list is indistinguishable from a missing one.
    if list.user_id != user_id {
        return Err(StoreError::NotFound);
    }
    Ok(list)
}

impl Redb {
    pub fn create_list(&self, user_id: UserId, name: String) -> Result<List> {
        let name = name.as_str();
        // Checked before an id is taken.
        let mut list = List::new(ListId::new(0), user_id, name, Utc::now())?;
        let tx = self.write()?;
        let id = ListId::new(next_id(&tx, "list")?);
        list.id = id;
        tx.open_table(LISTS)?.insert(id.get(), encode(&list).as_slice())?;
        tx.open_table(USER_LISTS)?.insert((user_id.get(), id.get()), ())?;
        tx.commit()?;
        Ok(list)
    }

    pub fn list(&self, user_id: UserId, list_id: ListId) -> Result<List> {
        let tx = self.read()?;
        owned_list(&tx.open_table(LISTS)?, user_id, list_id)
    }

    pub fn lists(&self, user_id: UserId, after: Option<u64>, limit: usize) -> Result<Page<List>> {
        let tx = self.read()?;
        let Page { items: ids, next_after } = page_ids(&tx.open_table(USER_LISTS)?, user_id.get(), after, limit)?;
        let lists = tx.open_table(LISTS)?;
        let items = ids
            .into_iter()
            .map(|id| owned_list(&lists, user_id, ListId::new(id)))
            .collect::<Result<_>>()?;
        Ok(Page { items, next_after })
    }

    /// Deletes a list with its subscribers; refused while a campaign that is
    /// not finished uses it.
    pub fn delete_list(&self, user_id: UserId, list_id: ListId) -> Result<()> {
        let tx = self.write()?;
        {
            let mut lists = tx.open_table(LISTS)?;
            owned_list(&lists, user_id, list_id)?;
            let campaigns = tx.open_table(CAMPAIGNS)?;
            for entry in tx
                .open_table(USER_CAMPAIGNS)?
                .range((user_id.get(), 0)..=(user_id.get(), u64::MAX))?
            {
                let id = entry?.0.value().1;
                if let Some(v) = campaigns.get(id)? {
                    let c: Campaign = decode(v.value())?;
                    if c.list_id == list_id && c.status.is_under_way() {
                        return Err(StoreError::Conflict(format!(
                            "list {list_id} is used by campaign {} which is {}",
                            c.id, c.status
                        )));
                    }
                }
            }
            let list = list_id.get();
            lists.remove(list)?;
            tx.open_table(USER_LISTS)?.remove((user_id.get(), list))?;
            let mut subs = tx.open_table(SUBSCRIBERS)?;
            let mut emails = tx.open_table(SUBSCRIBER_EMAILS)?;
            subs.retain_in((list, 0)..=(list, u64::MAX), |_, _| false)?;
            emails.retain_in((list, "")..=(list, "\u{10ffff}"), |_, _| false)?;
        }
        super::segments::drop_of_list(&tx, user_id, list_id)?;
        tx.commit()?;
        Ok(())
    }

    /// Inserts or updates subscribers by email, all in one transaction: a
    /// bad entry refuses the whole batch and nothing is stored.
    pub fn upsert_subscribers(
        &self,
        user_id: UserId,
        list_id: ListId,
        batch: Vec<NewSubscriber>,
    ) -> Result<UpsertReport> {
        let now = Utc::now();
        let tx = self.write()?;
        let mut report = UpsertReport::for_batch(batch.len());
        {
            let mut lists = tx.open_table(LISTS)?;
            let mut list = owned_list(&lists, user_id, list_id)?;
            let mut subs = tx.open_table(SUBSCRIBERS)?;
            let mut emails = tx.open_table(SUBSCRIBER_EMAILS)?;
            let list_key = list_id.get();
            for new in batch {
                let existing = emails.get((list_key, new.email.as_str()))?.map(|v| v.value());
                let sub = match existing {
                    Some(id) => {
                        let old = match subs.get((list_key, id))? {
                            Some(v) => subscriber_codec::decode(v.value())?,
                            None => return Err(StoreError::Corrupt(format!("subscriber {id} indexed but missing"))),
                        };
                        report.updated += 1;
                        let (sub, kept) = old.reimported(new, now);
                        report.kept_unsubscribed += u64::from(kept);
                        sub
                    }
                    None => {
                        let id = next_id(&tx, "subscriber")?;
                        emails.insert((list_key, new.email.as_str()), id)?;
                        report.created += 1;
                        list.subscriber_count += 1;
                        Subscriber::imported(SubscriberId::new(id), list_id, new, now)
                    }
                };
                subs.insert((list_key, sub.id.get()), subscriber_codec::encode(&sub).as_slice())?;
                report.subscribers.push(sub);
            }
            lists.insert(list_key, encode(&list).as_slice())?;
        }
        tx.commit()?;
        Ok(report)
    }

    /// Changes one subscriber; the only way to re-subscribe someone.
    pub fn update_subscriber(
        &self,
        user_id: UserId,
        list_id: ListId,
        subscriber_id: SubscriberId,
        patch: SubscriberPatch,
    ) -> Result<Subscriber> {
        let tx = self.write()?;
        let mut events = Events::new(&tx);
        let sub = {
            owned_list(&tx.open_table(LISTS)?, user_id, list_id)?;
            let mut subs = tx.open_table(SUBSCRIBERS)?;
            let key = (list_id.get(), subscriber_id.get());
            let old = match subs.get(key)? {
                Some(v) => subscriber_codec::decode(v.value())?,
                None => return Err(StoreError::NotFound),
            };
            let now = Utc::now();
            let sub = patch.apply(&old, now)?;
            subs.insert(key, subscriber_codec::encode(&sub).as_slice())?;
            if old.status == SubscriberStatus::Subscribed && sub.status == SubscriberStatus::Unsubscribed {
                events.emit(user_id, EventKind::SubscriberUnsubscribed, now, || {
                    unsubscribed_data(&sub, "api", None)
                })?;
            }
            sub
        };
        let wrote = events.into_written();
        tx.commit()?;
        self.wake_deliverer(wrote);
        Ok(sub)
    }

    /// One subscriber of one of the user's lists.
    pub fn subscriber(&self, user_id: UserId, list_id: ListId, subscriber_id: SubscriberId) -> Result<Subscriber> {
        let tx = self.read()?;
        owned_list(&tx.open_table(LISTS)?, user_id, list_id)?;
        let subs = tx.open_table(SUBSCRIBERS)?;
        let v = subs
            .get((list_id.get(), subscriber_id.get()))?
            .ok_or(StoreError::NotFound)?;
        subscriber_codec::decode(v.value())
    }

    /// A list's subscribers in id order after `after`, optionally with one
    /// status. There is no index by status: a filtered page reads past the
    /// others (their status field only), at most `SCAN_LIMIT` entries, then
    /// answers with fewer items and a cursor.
    pub fn subscribers(
        &self,
        user_id: UserId,
        list_id: ListId,
        status: Option<SubscriberStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Subscriber>> {
        let tx = self.read()?;
        owned_list(&tx.open_table(LISTS)?, user_id, list_id)?;
        let subs = tx.open_table(SUBSCRIBERS)?;
        page_filtered(&subs, list_id.get(), after, limit, SCAN_LIMIT, |_, v| {
            let wanted = match status {
                None => true,
                Some(s) => subscriber_codec::status(v.value())? == s,
            };
            wanted.then(|| subscriber_codec::decode(v.value())).transpose()
        })
    }

    /// Calls `f` with every subscriber of the list in id order, from one
    /// snapshot, until it returns false.
    pub fn scan_subscribers(
        &self,
        user_id: UserId,
        list_id: ListId,
        mut f: crate::store::contract::Visit,
    ) -> Result<()> {
        let tx = self.read()?;
        owned_list(&tx.open_table(LISTS)?, user_id, list_id)?;
        let subs = tx.open_table(SUBSCRIBERS)?;
        for entry in subs.range((list_id.get(), 0)..=(list_id.get(), u64::MAX))? {
            let (_, v) = entry?;
            if !f(subscriber_codec::decode(v.value())?)? {
                break;
            }
        }
        Ok(())
    }

    /// Marks the subscriber a campaign was sent to as unsubscribed, also
    /// after the campaign was deleted. A subscriber who is no longer
    /// subscribed is left as is, without a write: the link is public, and
    /// repeating it must cost a read, not a commit.
    pub fn unsubscribe(&self, campaign_id: CampaignId, subscriber_id: SubscriberId) -> Result<()> {
        let list_of = |tx: &redb::ReadTransaction| -> Result<u64> {
            match super::campaigns::load::<crate::domain::Campaign>(&tx.open_table(CAMPAIGNS)?, campaign_id) {
                Ok(c) => Ok(c.list_id.get()),
                Err(StoreError::NotFound) => tx
                    .open_table(super::DELETED_CAMPAIGNS)?
                    .get(campaign_id.get())?
                    .map(|v| v.value())
                    .ok_or(StoreError::NotFound),
                Err(e) => Err(e),
            }
        };
        let (key, mut sub) = {
            let tx = self.read()?;
            let key = (list_of(&tx)?, subscriber_id.get());
            let sub = match tx.open_table(SUBSCRIBERS)?.get(key)? {
                Some(v) => subscriber_codec::decode(v.value())?,
                None => return Err(StoreError::NotFound),
            };
            (key, sub)
        };
        if sub.status != SubscriberStatus::Subscribed {
            return Ok(());
        }
        let tx = self.write()?;
        let mut events = Events::new(&tx);
        {
            let mut subs = tx.open_table(SUBSCRIBERS)?;
            // Re-read under the write lock: an import may have changed it.
            if let Some(v) = subs.get(key)? {
                sub = subscriber_codec::decode(v.value())?;
            }
            if sub.status != SubscriberStatus::Subscribed {
                return Ok(());
            }
            let now = Utc::now();
            sub.set_status(SubscriberStatus::Unsubscribed, "unsubscribe_link", now);
            sub.updated_at = now;
            subs.insert(key, subscriber_codec::encode(&sub).as_slice())?;
            let owner = tx
                .open_table(LISTS)?
                .get(key.0)?
                .map(|v| decode::<List>(v.value()))
                .transpose()?;
            if let Some(list) = owner {
                events.emit(list.user_id, EventKind::SubscriberUnsubscribed, now, || {
                    unsubscribed_data(&sub, "unsubscribe_link", Some(campaign_id))
                })?;
            }
        }
        let wrote = events.into_written();
        tx.commit()?;
        self.wake_deliverer(wrote);
        Ok(())
    }
}
