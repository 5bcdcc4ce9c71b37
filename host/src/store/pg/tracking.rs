//! Opens and clicks on PostgreSQL: the same operations and answers as
//! redb's `store::redb::tracking`. A batch is one transaction: per
//! campaign (in id order, under its row lock, as the engine's claims take
//! it) its messages and subscribers are read in one query each, the hits
//! applied by `domain::tracking::record`, and the changed rows written
//! back in one statement each.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::types::Json;

use super::campaigns::{lock_campaign, save_campaign};
use super::webhooks::Events;
use super::{PgStore, key};
use crate::domain::message::MessageRecord;
use crate::domain::segment::Engaged;
use crate::domain::tracking::{Hit, LinkCount, Links, record};
use crate::domain::{Campaign, CampaignId, CampaignRun, Subscriber, UserId};
use crate::store::{Result, StoreError};

/// Writes `records` back to `table`'s rows (`scope`, `ids[i]`), in one
/// statement.
async fn rewrite<T: serde::Serialize + std::fmt::Debug + Sync>(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    scope_column: &str,
    id_column: &str,
    scope: i64,
    ids: &[i64],
    records: &[Json<T>],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE {table} t SET record = u.record FROM unnest($2::bigint[], $3::jsonb[]) AS u(id, record)
         WHERE t.{scope_column} = $1 AND t.{id_column} = u.id"
    );
    tx.execute(&sql, &[&scope, &ids, &records]).await?;
    Ok(())
}

impl PgStore {
    pub async fn record_hits(&self, hits: Vec<Hit>) -> Result<usize> {
        let mut by_campaign: BTreeMap<CampaignId, Vec<Hit>> = BTreeMap::new();
        for h in hits {
            by_campaign.entry(h.campaign).or_default().push(h);
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut events = Events::default();
        let mut counted = 0;
        for (id, hits) in by_campaign {
            let mut run: CampaignRun = match lock_campaign(&tx, id).await {
                Ok(run) => run,
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let links = Links::of_campaign(&run);
            let ids: Vec<i64> = hits.iter().map(|h| key(h.subscriber.get())).collect();
            let mut messages: HashMap<i64, MessageRecord> = tx
                .query(
                    "SELECT subscriber_id, record FROM messages WHERE campaign_id = $1 AND subscriber_id = ANY($2)
                     ORDER BY subscriber_id FOR UPDATE",
                    &[&key(id.get()), &ids],
                )
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get::<_, Json<MessageRecord>>(1).0))
                .collect();
            let list = key(run.list_id.get());
            let mut subs: HashMap<i64, Subscriber> = tx
                .query(
                    "SELECT id, record FROM subscribers WHERE list_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
                    &[&list, &ids],
                )
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get::<_, Json<Subscriber>>(1).0))
                .collect();
            let (mut changed_messages, mut changed_subs) = (Vec::new(), Vec::new());
            for hit in &hits {
                let sub = key(hit.subscriber.get());
                let Some(message) = messages.get_mut(&sub) else {
                    continue;
                };
                let Some(done) = record(hit, message, &mut run, &links) else {
                    continue;
                };
                counted += 1;
                changed_messages.push(sub);
                if let Some(s) = subs.get_mut(&sub)
                    && s.engaged(done.opened, done.clicked, hit.at)
                {
                    changed_subs.push(sub);
                }
                for (kind, data) in done.events {
                    events.emit(&tx, run.user_id, kind, hit.at, || data).await?;
                }
            }
            changed_messages.sort_unstable();
            changed_messages.dedup();
            changed_subs.sort_unstable();
            changed_subs.dedup();
            let records: Vec<Json<&MessageRecord>> = changed_messages.iter().map(|s| Json(&messages[s])).collect();
            rewrite(
                &tx,
                "messages",
                "campaign_id",
                "subscriber_id",
                key(id.get()),
                &changed_messages,
                &records,
            )
            .await?;
            let records: Vec<Json<&Subscriber>> = changed_subs.iter().map(|s| Json(&subs[s])).collect();
            rewrite(&tx, "subscribers", "list_id", "id", list, &changed_subs, &records).await?;
            save_campaign(&tx, &run).await?;
        }
        tx.commit().await?;
        Ok(counted)
    }

    pub async fn engaged(&self, user: UserId, id: CampaignId) -> Result<Engaged> {
        let client = self.pool.get().await?;
        let owned = client
            .query_opt(
                "SELECT 1 FROM campaigns WHERE id = $1 AND user_id = $2",
                &[&key(id.get()), &key(user.get())],
            )
            .await?;
        if owned.is_none() {
            return Err(StoreError::NotFound);
        }
        // Streamed: a million messages never sit in memory as rows.
        let campaign = key(id.get());
        let rows = client
            .query_raw(
                "SELECT subscriber_id,
                        record->'engagement'->'first_opened_at' IS NOT NULL,
                        coalesce((record->'engagement'->>'clicks')::bigint, 0) > 0
                 FROM messages WHERE campaign_id = $1 AND status = 'sent'",
                [&campaign],
            )
            .await?;
        futures_util::pin_mut!(rows);
        let mut e = Engaged::default();
        while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
            let sub = row.get::<_, i64>(0) as u64;
            e.received.push(sub);
            if row.get(1) {
                e.opened.push(sub);
            }
            if row.get(2) {
                e.clicked.push(sub);
            }
        }
        Ok(e)
    }

    pub async fn link_clicks(&self, user: UserId, id: CampaignId) -> Result<(Campaign, Vec<LinkCount>)> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT run FROM campaigns WHERE id = $1 AND user_id = $2",
                &[&key(id.get()), &key(user.get())],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        let Json(run): Json<CampaignRun> = row.get(0);
        Ok((run.campaign, run.link_clicks))
    }
}
