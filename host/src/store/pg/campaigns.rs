//! Campaign records and their lifecycle on PostgreSQL: the same operations
//! and answers as redb's `store::redb::campaigns`. Every change of a campaign
//! takes its row lock, so a lifecycle action, a node's claim and a batch of
//! outcomes never interleave; each committed change of status is announced
//! to the other nodes (`watch`).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::webhooks::Events;
use super::{PgStore, key};
use crate::domain::campaign::audience_list;
use crate::domain::lifecycle::transition;
use crate::domain::segment::{Segment, unknown_campaign};
use crate::domain::webhook::campaign_data;
use crate::domain::{
    Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, CampaignRun, FieldError, List, ListId, Status,
    Subscriber, UserId,
};
use crate::store::{Page, Result, StoreError};

/// The campaign's run under its row lock.
pub(super) async fn lock_campaign(tx: &Transaction<'_>, id: CampaignId) -> Result<CampaignRun> {
    let row = tx
        .query_opt("SELECT run FROM campaigns WHERE id = $1 FOR UPDATE", &[&key(id.get())])
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.get::<_, Json<CampaignRun>>(0).0)
}

/// Writes the whole run (never a bare campaign: its progress stays).
pub(super) async fn save_campaign(tx: &Transaction<'_>, c: &CampaignRun) -> Result<()> {
    tx.execute(
        "UPDATE campaigns SET status = $2, run = $3 WHERE id = $1",
        &[&key(c.id.get()), &c.status.as_str(), &Json(c)],
    )
    .await?;
    Ok(())
}

/// The list, if `user` owns it; else the field error redb gives. `lock` is
/// a row-lock clause: a send reads it `FOR SHARE` (see the 0002 migration).
async fn check_list(db: &impl GenericClient, user: UserId, list: ListId, lock: &str) -> Result<List> {
    let row = db
        .query_opt(
            &format!("SELECT record FROM lists WHERE id = $1 AND user_id = $2 {lock}"),
            &[&key(list.get()), &key(user.get())],
        )
        .await?;
    match row {
        Some(r) => Ok(r.get::<_, Json<List>>(0).0),
        None => Err(FieldError::new("list_id", format!("list {list} does not exist")).into()),
    }
}

async fn owned(db: &impl GenericClient, user: UserId, id: CampaignId) -> Result<CampaignRun> {
    let row = db
        .query_opt(
            "SELECT run FROM campaigns WHERE id = $1 AND user_id = $2",
            &[&key(id.get()), &key(user.get())],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.get::<_, Json<CampaignRun>>(0).0)
}

impl PgStore {
    /// Stores a new draft.
    pub async fn create_campaign(
        &self,
        user: UserId,
        draft: CampaignDraft,
        transport: String,
        now: DateTime<Utc>,
    ) -> Result<Campaign> {
        let client = self.pool.get().await?;
        check_list(&client, user, audience_list(draft.list_id, None)?, "").await?;
        let id: i64 = client.query_one("SELECT nextval('campaign_ids')", &[]).await?.get(0);
        let c = Campaign::from_draft(CampaignId::new(id as u64), user, draft, transport, now);
        c.validate()?;
        insert(&client, &CampaignRun::from(c.clone())).await?;
        Ok(c)
    }

    /// A campaign whoever owns it: for the engine, never for the API.
    pub async fn campaign_by_id(&self, id: CampaignId) -> Result<Campaign> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT run FROM campaigns WHERE id = $1", &[&key(id.get())])
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.get::<_, Json<Campaign>>(0).0)
    }

    pub async fn campaign(&self, user: UserId, id: CampaignId) -> Result<Campaign> {
        Ok(owned(&self.pool.get().await?, user, id).await?.campaign)
    }

    /// A user's campaigns in id order, optionally of one status.
    pub async fn campaigns(
        &self,
        user: UserId,
        status: Option<Status>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Campaign>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT run FROM campaigns WHERE user_id = $1 AND id > $2 AND ($3::text IS NULL OR status = $3)
                 ORDER BY id LIMIT $4",
                &[
                    &key(user.get()),
                    &key(after.unwrap_or(0)),
                    &status.map(Status::as_str),
                    &(limit as i64 + 1),
                ],
            )
            .await?;
        let items = rows.into_iter().map(|r| r.get::<_, Json<Campaign>>(0).0).collect();
        Ok(super::lists::page(items, limit, |c: &Campaign| c.id.get()))
    }

    /// Applies a lifecycle action in one transaction.
    pub async fn act(&self, user: UserId, id: CampaignId, action: Action, now: DateTime<Utc>) -> Result<Campaign> {
        self.apply(Some(user), id, |_| action, now, |_| {}).await
    }

    /// PATCH of a draft: the edit applied, validated and saved.
    pub async fn edit_campaign(
        &self,
        user: UserId,
        id: CampaignId,
        patch: CampaignPatch,
        now: DateTime<Utc>,
    ) -> Result<Campaign> {
        self.apply(Some(user), id, |_| Action::Edit, now, |c| c.apply(patch))
            .await
    }

    /// POST …/send: scheduled when the campaign's start lies ahead of
    /// `now`, else sending with the recipients fixed.
    pub async fn send(&self, user: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign> {
        self.apply(Some(user), id, |c| c.send_action(now), now, |_| {}).await
    }

    pub async fn duplicate_campaign(&self, user: UserId, id: CampaignId, now: DateTime<Utc>) -> Result<Campaign> {
        let client = self.pool.get().await?;
        let c = owned(&client, user, id).await?;
        transition(c.status, Action::Duplicate)?;
        let new_id: i64 = client.query_one("SELECT nextval('campaign_ids')", &[]).await?.get(0);
        let copy = c.duplicate(CampaignId::new(new_id as u64), now);
        insert(&client, &CampaignRun::from(copy.clone())).await?;
        Ok(copy)
    }

    /// Deletes a campaign and all its messages; its list stays known to
    /// the unsubscribe links it sent.
    pub async fn delete_campaign(&self, user: UserId, id: CampaignId) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let c = lock_campaign(&tx, id).await?;
        if c.user_id != user {
            return Err(StoreError::NotFound);
        }
        transition(c.status, Action::Delete)?;
        let k = key(id.get());
        tx.execute(
            "INSERT INTO deleted_campaigns (id, list_id) VALUES ($1, $2)",
            &[&k, &key(c.list_id.get())],
        )
        .await?;
        tx.execute("DELETE FROM messages WHERE campaign_id = $1", &[&k]).await?;
        tx.execute("DELETE FROM due WHERE campaign_id = $1", &[&k]).await?;
        tx.execute("DELETE FROM campaign_members WHERE campaign_id = $1", &[&k])
            .await?;
        tx.execute("DELETE FROM campaigns WHERE id = $1", &[&k]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Campaigns the engine must drive (`CampaignRun::needs_driving`; the
    /// query only skips those that never need it).
    pub async fn active_campaigns(&self) -> Result<Vec<Campaign>> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT run FROM campaigns WHERE status NOT IN ('draft', 'sent')", &[])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| r.get::<_, Json<CampaignRun>>(0).0)
            .filter(CampaignRun::needs_driving)
            .map(|c| c.campaign)
            .collect())
    }

    /// Starts every scheduled campaign whose time has come; the transition
    /// is the guard, so a campaign starts once however many nodes try.
    pub async fn fire_due(&self, now: DateTime<Utc>) -> Result<Vec<Campaign>> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT run FROM campaigns WHERE status = 'scheduled'", &[])
            .await?;
        drop(client);
        let mut fired = Vec::new();
        for row in rows {
            let Json(c): Json<CampaignRun> = row.get(0);
            if c.starts_after(now) {
                continue;
            }
            match self.apply(None, c.id, |_| Action::Fire, now, |_| {}).await {
                Ok(c) => fired.push(c),
                // Another node fired it first, or it was cancelled.
                Err(StoreError::Transition(_)) => {}
                // It cannot start (its segment was deleted): it waits,
                // and the others still fire.
                Err(StoreError::Invalid(e)) => {
                    tracing::warn!(campaign = c.id.get(), "cannot start scheduled campaign: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(fired)
    }

    /// A lifecycle action under the campaign's row lock, for its owner
    /// (`None`: the scheduler, for whoever owns it). Starting to send fixes
    /// the recipients; the other nodes hear of the new status at commit.
    async fn apply(
        &self,
        user: Option<UserId>,
        id: CampaignId,
        action: impl FnOnce(&Campaign) -> Action,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut Campaign),
    ) -> Result<Campaign> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut c = lock_campaign(&tx, id).await?;
        if user.is_some_and(|u| u != c.user_id) {
            return Err(StoreError::NotFound);
        }
        let change = c.begin(action(&c), f)?;
        // FOR SHARE waits for imports under way (they hold the list row)
        // and holds off new ones until the commit: the recipients are the
        // subscribers stored before this moment.
        let sending = change.fixes_recipients();
        let list = check_list(&tx, c.user_id, c.list_id, if sending { "FOR SHARE" } else { "" }).await?;
        let recipients = if sending && c.segment_id.is_some() {
            Some(self.freeze_members(&tx, &c).await?)
        } else if sending {
            let last: i64 = tx
                .query_one(
                    "SELECT coalesce(max(id), 0) FROM subscribers WHERE list_id = $1",
                    &[&key(c.list_id.get())],
                )
                .await?
                .get(0);
            Some((last as u64, list.subscriber_count))
        } else {
            None
        };
        let event = c.finish(change, recipients, now)?;
        save_campaign(&tx, &c).await?;
        if let Some(kind) = event {
            Events::default()
                .emit(&tx, c.user_id, kind, now, || campaign_data(&c))
                .await?;
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&super::watch::CHANNEL, &super::watch::payload(c.id, c.status)],
        )
        .await?;
        tx.commit().await?;
        Ok(c.campaign)
    }

    /// Stores a run as it is, bypassing every rule: for tests that need a
    /// state the API cannot make.
    #[cfg(test)]
    pub(super) async fn put_campaign(&self, run: &CampaignRun) -> Result<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE campaigns SET status = $2, run = $3 WHERE id = $1",
                &[&key(run.id.get()), &run.status.as_str(), &Json(run)],
            )
            .await?;
        Ok(())
    }
}

/// Members written per statement.
const MEMBER_CHUNK: usize = 10_000;

/// Fixes who a segment campaign sends to, in the transaction starting its
/// send: the segment's rules over the list's subscribers as they are now
/// (the list is held FOR SHARE, so no import lands meanwhile), written to
/// `campaign_members`. Returns `(the list's newest subscriber id, count)`.
/// The scan holds this campaign's row and the list's share lock for its
/// seconds on a million subscribers; nothing else waits on either.
impl PgStore {
    async fn freeze_members(&self, tx: &Transaction<'_>, c: &CampaignRun) -> Result<(u64, u64)> {
        let segment_id = c.segment_id.expect("a segment campaign");
        let row = tx
            .query_opt(
                "SELECT record FROM segments WHERE user_id = $1 AND id = $2",
                &[&key(c.user_id.get()), &key(segment_id.get())],
            )
            .await?
            .ok_or_else(|| FieldError::new("segment_id", format!("segment {} no longer exists", segment_id.get())))?;
        let Json(segment): Json<Segment> = row.get(0);
        if segment.list_id != c.list_id {
            return Err(FieldError::new("segment_id", "the segment is of another list").into());
        }
        let mut filter = segment.filter()?;
        for (rule, campaign) in filter.needs() {
            match self.engaged(c.user_id, campaign).await {
                Ok(e) => filter.provide(campaign, e),
                Err(StoreError::NotFound) => return Err(unknown_campaign(rule, campaign).into()),
                Err(e) => return Err(e),
            }
        }
        let campaign = key(c.id.get());
        tx.execute("DELETE FROM campaign_members WHERE campaign_id = $1", &[&campaign])
            .await?;
        let statement = tx
            .prepare("SELECT id, record FROM subscribers WHERE list_id = $1 ORDER BY id")
            .await?;
        let list_key = key(c.list_id.get());
        let portal = tx.bind(&statement, &[&list_key]).await?;
        let (mut members, mut last, mut count) = (Vec::with_capacity(MEMBER_CHUNK), 0i64, 0u64);
        loop {
            let rows = tx.query_portal(&portal, 1_000).await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                last = row.get(0);
                if filter.matches(&row.get::<_, Json<Subscriber>>(1).0) {
                    members.push(last);
                }
            }
            if members.len() >= MEMBER_CHUNK {
                count += insert_members(tx, campaign, &mut members).await?;
            }
        }
        count += insert_members(tx, campaign, &mut members).await?;
        Ok((last as u64, count))
    }
}

/// Writes (and empties) `members`; returns how many.
async fn insert_members(tx: &Transaction<'_>, campaign: i64, members: &mut Vec<i64>) -> Result<u64> {
    if members.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO campaign_members (campaign_id, subscriber_id) SELECT $1, unnest($2::bigint[])",
        &[&campaign, &*members],
    )
    .await?;
    let n = members.len() as u64;
    members.clear();
    Ok(n)
}

async fn insert(db: &impl GenericClient, c: &CampaignRun) -> Result<()> {
    db.execute(
        "INSERT INTO campaigns (id, user_id, status, run) VALUES ($1, $2, $3, $4)",
        &[&key(c.id.get()), &key(c.user_id.get()), &c.status.as_str(), &Json(c)],
    )
    .await?;
    Ok(())
}
