//! The delivery queue several nodes share.
//!
//! - A node *claims* a step of a campaign's send in one transaction under
//!   the campaign's row lock, as redb's `Redb::enqueue` does under its one
//!   writer: messages whose node's lease lapsed (or that a clean stop left
//!   unleased) come first, then the next cursor batch of the list (or the
//!   local-time entries that came due). Messages it queues are leased to
//!   it. Nodes take turns on the lock, so each subscriber gets one message.
//! - A node registration's outcomes are accepted only for messages still
//!   leased to it (checked under the same campaign lock a takeover needs),
//!   so an outcome and a takeover never both count. Once another node took
//!   a message over, the old registration's outcome for it is refused; one
//!   that arrives after its lease lapsed but before any takeover (every
//!   node lost the database, say) is kept: its call started before the
//!   fence, and refusing it would only make the message go out twice.
//! - A message taken over from a node whose lease lapsed may have been
//!   delivered already: it is flagged `possible_duplicate` and counted.
//!
//! The rules are the domain's (`MessageRecord::create`, `settle`,
//! `CampaignRun::complete_if_done`); this module stores what they decide.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use tokio_postgres::types::Json;

use super::bounces::file_bounce;
use super::campaigns::{lock_campaign, save_campaign};
use super::webhooks::Events;
use super::{Node, PgStore, key, scan_page};
use crate::domain::ab::Pick;
use crate::domain::bounce::BouncePolicy;
use crate::domain::message::{Job, MessageRecord, MessageStatus, Outcome, OutcomeKind, Settled};
use crate::domain::suppression::{Suppression, SuppressionReason};
use crate::domain::webhook::{EventKind, campaign_data};
use crate::domain::{Campaign, CampaignId, CampaignRun, Email, Status, Subscriber, UserId, schedule};
use crate::store::{Page, Result, SCAN_LIMIT, StoreError};

/// What one claim did.
#[derive(Debug)]
pub struct Claimed {
    /// Messages this node now delivers.
    pub jobs: Vec<Job>,
    /// Of those, taken over from a node whose lease lapsed.
    pub taken_over: usize,
    /// Whether the step changed anything.
    pub progressed: bool,
    /// When the next local-time entry comes due, if one waits.
    pub next_due: Option<DateTime<Utc>>,
    /// The campaign after the step.
    pub campaign: Campaign,
}

/// What storing a batch of outcomes did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Campaigns a final outcome counted into, after it.
    pub campaigns: Vec<Campaign>,
    /// Outcomes refused: the message is no longer this node's (its lease
    /// lapsed and it was or will be delivered again, flagged).
    pub rejected: usize,
}

impl PgStore {
    /// One step of a campaign's send for `node` (see the module's docs).
    pub async fn claim(&self, node: &Node, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Claimed> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut c = lock_campaign(&tx, id).await?;
        if !lease_holds(&tx, node).await? {
            return Err(StoreError::LeaseLapsed);
        }
        let mut step = Claimed {
            jobs: Vec::new(),
            taken_over: 0,
            progressed: false,
            next_due: None,
            campaign: c.campaign.clone(),
        };
        if matches!(c.status, Status::Sending | Status::Cancelled) {
            take_over(&tx, node, &mut c, batch, now, &mut step).await?;
            step.progressed |= c.advance_ab(now);
            let room = batch.saturating_sub(step.jobs.len()).max(1);
            let mut fresh = Vec::new();
            if c.progress.cursor < c.progress.last_subscriber {
                walk_list(&tx, &mut c, room, now, &mut fresh).await?;
                step.progressed = true;
            } else if c.progress.planned > 0 {
                step.progressed |= release_due(&tx, &mut c, room, now, &mut fresh).await?;
                if !step.progressed {
                    step.next_due = tx
                        .query_one("SELECT min(due_at) FROM due WHERE campaign_id = $1", &[&key(id.get())])
                        .await?
                        .get(0);
                }
            }
            step.next_due = step.next_due.or(c.ab_due());
            insert_messages(&tx, node, id, &fresh).await?;
            step.jobs.extend(
                fresh
                    .into_iter()
                    .filter_map(|(m, sub)| leased(&m).then(|| Job::of(id, &m, sub))),
            );
            c.stats = c.stats.with_pending();
        }
        if c.complete_if_done(now) {
            Events::default()
                .emit(&tx, c.user_id, EventKind::CampaignSent, now, || campaign_data(&c))
                .await?;
        }
        save_campaign(&tx, &c).await?;
        tx.commit().await?;
        step.campaign = c.campaign;
        Ok(step)
    }

    /// Stores `node`'s outcomes, campaign by campaign in id order (the
    /// order every writer locks campaigns in), each campaign's in one
    /// transaction with its counters.
    pub async fn record_outcomes(&self, node: &Node, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<Recorded> {
        let mut by_campaign: BTreeMap<CampaignId, Vec<&Outcome>> = BTreeMap::new();
        for o in outcomes {
            by_campaign.entry(o.campaign_id).or_default().push(o);
        }
        let mut recorded = Recorded::default();
        let mut client = self.pool.get().await?;
        for (id, outcomes) in by_campaign {
            let tx = client.transaction().await?;
            let mut c = match lock_campaign(&tx, id).await {
                Ok(c) => c,
                // Deleted meanwhile: nothing left to count into.
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let ids: Vec<i64> = outcomes.iter().map(|o| key(o.subscriber_id.get())).collect();
            let rows = tx
                .query(
                    "SELECT subscriber_id, record FROM messages
                     WHERE campaign_id = $1 AND subscriber_id = ANY($2) AND status = 'queued' AND lease_node = $3
                     FOR UPDATE",
                    &[&key(id.get()), &ids, &node.id.0],
                )
                .await?;
            let mut records: HashMap<i64, MessageRecord> = rows
                .into_iter()
                .map(|r| (r.get(0), r.get::<_, Json<MessageRecord>>(1).0))
                .collect();
            let mut any_final = false;
            let mut updates = Updates::default();
            let mut events = Events::default();
            for o in outcomes {
                let sub = key(o.subscriber_id.get());
                let Some(mut record) = records.remove(&sub) else {
                    recorded.rejected += 1;
                    continue;
                };
                let lease = match record.settle(o, &mut c.stats, now) {
                    None => continue,
                    Some(Settled::Retrying) => Some(node.id.0),
                    Some(Settled::Deferred) => None,
                    Some(Settled::Final(ended)) => {
                        any_final = true;
                        if let Some(bounce) = &ended.bounce {
                            file_bounce(&tx, c.user_id, bounce, &BouncePolicy::default(), now).await?;
                        }
                        for (kind, data) in ended.events {
                            events.emit(&tx, c.user_id, kind, now, || data).await?;
                        }
                        None
                    }
                };
                updates.push(sub, lease, record);
            }
            updates.write(&tx, id).await?;
            if any_final {
                c.stats = c.stats.with_pending();
                if c.complete_if_done(now) {
                    events
                        .emit(&tx, c.user_id, EventKind::CampaignSent, now, || campaign_data(&c))
                        .await?;
                }
                save_campaign(&tx, &c).await?;
                recorded.campaigns.push(c.campaign);
            }
            tx.commit().await?;
        }
        Ok(recorded)
    }
}

impl PgStore {
    /// A campaign's messages in subscriber order, optionally by status;
    /// like redb's, a status filter reads at most `SCAN_LIMIT` messages per
    /// page and the cursor is the last one read.
    pub async fn messages(
        &self,
        user: UserId,
        id: CampaignId,
        status: Option<MessageStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<MessageRecord>> {
        let client = self.pool.get().await?;
        let owner = client
            .query_opt("SELECT user_id FROM campaigns WHERE id = $1", &[&key(id.get())])
            .await?;
        if owner.map(|r| r.get::<_, i64>(0)) != Some(key(user.get())) {
            return Err(StoreError::NotFound);
        }
        let window = if status.is_some() { SCAN_LIMIT } else { limit };
        let rows = client
            .query(
                "SELECT subscriber_id, status, record FROM messages
                 WHERE campaign_id = $1 AND subscriber_id > $2 ORDER BY subscriber_id LIMIT $3",
                &[&key(id.get()), &key(after.unwrap_or(0)), &(window as i64 + 1)],
            )
            .await?;
        let (items, next_after) = scan_page(
            &rows,
            limit,
            |row| row.get::<_, i64>(0) as u64,
            |row| {
                status
                    .is_none_or(|s| s.as_str() == row.get::<_, &str>(1))
                    .then(|| row.get::<_, Json<MessageRecord>>(2).0)
            },
        );
        Ok(Page { items, next_after })
    }
}

/// Whether `node`'s lease holds, on the database's clock.
async fn lease_holds(tx: &Transaction<'_>, node: &Node) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM nodes WHERE id = $1 AND lease_until > clock_timestamp()",
            &[&node.id.0],
        )
        .await?
        .is_some())
}

/// Which `nodes` rows' messages a claim may take over: those whose lease
/// lapsed — but not within one lease of the database server's own start.
/// A database restart lapses every registration at once while their
/// nodes live on, holding outcomes of calls already made; each stores
/// them (kept: no one took the messages over) or hands its fenced messages
/// back within a lease of the database's return. Taken over at once, they
/// would all go out a second time, flagged.
const LAPSED: &str = "greatest(lease_until, pg_postmaster_start_time() + make_interval(secs => ttl_ms / 1000.0))
                      <= clock_timestamp()";

/// Takes over queued messages of lapsed nodes (flagged: their delivery
/// may have happened) and unleased ones (not flagged: a clean stop put
/// them off before any call). A cancelled campaign's are cancelled instead.
async fn take_over(
    tx: &Transaction<'_>,
    node: &Node,
    c: &mut CampaignRun,
    batch: usize,
    now: DateTime<Utc>,
    step: &mut Claimed,
) -> Result<()> {
    let rows = tx
        .query(
            &format!(
                "SELECT m.subscriber_id, m.lease_node, m.record, s.record
             FROM messages m LEFT JOIN subscribers s ON s.list_id = $2 AND s.id = m.subscriber_id
             WHERE m.campaign_id = $1 AND m.status = 'queued'
               AND (m.lease_node IS NULL OR m.lease_node IN (SELECT id FROM nodes WHERE {LAPSED}))
             ORDER BY m.subscriber_id
             LIMIT $3
             FOR UPDATE OF m"
            ),
            &[&key(c.id.get()), &key(c.list_id.get()), &(batch as i64)],
        )
        .await?;
    let mut updates = Updates::default();
    for row in rows {
        let sub_id: i64 = row.get(0);
        let was_leased = row.get::<_, Option<i64>>(1).is_some();
        let Json(mut record): Json<MessageRecord> = row.get(2);
        let sub: Option<Json<Subscriber>> = row.get(3);
        record.updated_at = now;
        let lease = match sub {
            Some(Json(sub)) if c.status != Status::Cancelled => {
                if was_leased && !record.possible_duplicate {
                    record.possible_duplicate = true;
                    c.stats.possible_duplicates += 1;
                }
                step.jobs.push(Job::of(c.id, &record, sub));
                step.taken_over += 1;
                Some(node.id.0)
            }
            // Cancelled, or the subscriber is gone (its list was deleted):
            // nothing is left to deliver.
            _ => {
                let settle = Outcome {
                    campaign_id: c.id,
                    subscriber_id: record.subscriber_id,
                    attempts: record.attempts,
                    kind: OutcomeKind::Cancelled,
                };
                record.settle(&settle, &mut c.stats, now);
                None
            }
        };
        updates.push(sub_id, lease, record);
        step.progressed = true;
    }
    updates.write(tx, c.id).await
}

/// Changed messages of one campaign, written in one statement.
#[derive(Default)]
struct Updates {
    subs: Vec<i64>,
    leases: Vec<Option<i64>>,
    records: Vec<MessageRecord>,
}

impl Updates {
    fn push(&mut self, sub: i64, lease: Option<i64>, record: MessageRecord) {
        self.subs.push(sub);
        self.leases.push(lease);
        self.records.push(record);
    }

    async fn write(self, tx: &Transaction<'_>, id: CampaignId) -> Result<()> {
        if self.subs.is_empty() {
            return Ok(());
        }
        let statuses: Vec<&str> = self.records.iter().map(|r| r.status.as_str()).collect();
        let records: Vec<Json<&MessageRecord>> = self.records.iter().map(Json).collect();
        tx.execute(
            "UPDATE messages m SET status = u.status, lease_node = u.lease, record = u.record
             FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::jsonb[]) AS u(sub, status, lease, record)
             WHERE m.campaign_id = $1 AND m.subscriber_id = u.sub",
            &[&key(id.get()), &self.subs, &statuses, &self.leases, &records],
        )
        .await?;
        Ok(())
    }
}

/// Moves the cursor over the next `batch` subscribers: messages for those
/// whose time is now, due entries for local-time ones still ahead.
async fn walk_list(
    tx: &Transaction<'_>,
    c: &mut CampaignRun,
    batch: usize,
    now: DateTime<Utc>,
    out: &mut Vec<(MessageRecord, Subscriber)>,
) -> Result<()> {
    let (list, cursor, last, limit) = (
        key(c.list_id.get()),
        key(c.progress.cursor),
        key(c.progress.last_subscriber),
        batch as i64,
    );
    // After an A/B test, the walk over the rest passes over whoever
    // already has a message (`CampaignRun::pick`); here, in the query.
    let rest = if c.ab_rest() {
        "AND NOT EXISTS (SELECT 1 FROM messages x WHERE x.campaign_id = $5 AND x.subscriber_id = s.id)"
    } else {
        ""
    };
    let rows = if c.segment_id.is_some() {
        // A segment campaign walks its frozen members; one deleted since
        // has no row to join and is passed over.
        tx.query(
            &format!(
                "SELECT s.record FROM campaign_members m JOIN subscribers s ON s.list_id = $1 AND s.id = m.subscriber_id
                 WHERE m.campaign_id = $5 AND m.subscriber_id > $2 AND m.subscriber_id <= $3 {rest}
                 ORDER BY m.subscriber_id LIMIT $4"
            ),
            &[&list, &cursor, &last, &limit, &key(c.id.get())],
        )
        .await?
    } else {
        let campaign = key(c.id.get());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&list, &cursor, &last, &limit, &campaign];
        tx.query(
            &format!(
                "SELECT s.record FROM subscribers s WHERE s.list_id = $1 AND s.id > $2 AND s.id <= $3 {rest}
                 ORDER BY s.id LIMIT $4"
            ),
            &params[..if rest.is_empty() { 4 } else { 5 }],
        )
        .await?
    };
    let subs: Vec<Subscriber> = rows.into_iter().map(|r| r.get::<_, Json<Subscriber>>(0).0).collect();
    let suppressed = suppressions_of(tx, c.user_id, subs.iter().map(|s| &s.email)).await?;
    let local_at = c.scheduled_at.filter(|_| c.send_at_local_time);
    let (mut due_subs, mut due_times) = (Vec::new(), Vec::new());
    let full = subs.len() == batch;
    for sub in subs {
        c.progress.cursor = sub.id.get();
        let Some(pick) = c
            .pick(sub.id, || Ok::<_, std::convert::Infallible>(false))
            .unwrap_or_else(|never| match never {})
        else {
            continue;
        };
        let due_at = local_at.map(|at| schedule::due_at(at, schedule::parse_tz(sub.timezone.as_deref())));
        match due_at {
            Some(d) if d > now && c.status != Status::Cancelled => {
                due_subs.push(key(sub.id.get()));
                due_times.push(d);
                c.progress.planned += 1;
            }
            _ => out.push(new_message(c, sub, pick, &suppressed, due_at, now)),
        }
    }
    if !full {
        // The list ran out: subscribers up to `last_subscriber` that were
        // removed leave no row to move the cursor over.
        c.progress.cursor = c.progress.last_subscriber;
    }
    if !due_subs.is_empty() {
        tx.execute(
            "INSERT INTO due (campaign_id, due_at, subscriber_id) SELECT $1, * FROM unnest($2::timestamptz[], $3::bigint[])",
            &[&key(c.id.get()), &due_times, &due_subs],
        )
        .await?;
    }
    Ok(())
}

/// The message `sub` gets now (the domain decides queued, skipped or
/// cancelled); only queued ones are leased.
fn new_message(
    c: &mut CampaignRun,
    sub: Subscriber,
    pick: Pick,
    suppressed: &HashMap<String, SuppressionReason>,
    due_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (MessageRecord, Subscriber) {
    let reason = suppressed.get(sub.email.suppression_key().as_str()).copied();
    let record =
        MessageRecord::create::<std::convert::Infallible>(&mut c.campaign, &sub, pick, || Ok(reason), due_at, now)
            .unwrap_or_else(|never| match never {});
    (record, sub)
}

/// The suppression reasons of those of `emails` on `user`'s list, by
/// lower-case address: one query for a batch.
async fn suppressions_of<'e>(
    tx: &Transaction<'_>,
    user: UserId,
    emails: impl Iterator<Item = &'e Email>,
) -> Result<HashMap<String, SuppressionReason>> {
    let keys: Vec<String> = emails.map(|e| e.suppression_key().as_str().to_string()).collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = tx
        .query(
            "SELECT email, record FROM suppressions WHERE user_id = $1 AND email = ANY($2)",
            &[&key(user.get()), &keys],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, Json<Suppression>>(1).0.reason))
        .collect())
}

/// Turns due entries whose time has come (all of them once cancelled)
/// into messages; says whether there were any.
async fn release_due(
    tx: &Transaction<'_>,
    c: &mut CampaignRun,
    batch: usize,
    now: DateTime<Utc>,
    out: &mut Vec<(MessageRecord, Subscriber)>,
) -> Result<bool> {
    let until = if c.status == Status::Cancelled {
        DateTime::<Utc>::MAX_UTC
    } else {
        now
    };
    let rows = tx
        .query(
            "DELETE FROM due WHERE (campaign_id, due_at, subscriber_id) IN (
                 SELECT campaign_id, due_at, subscriber_id FROM due
                 WHERE campaign_id = $1 AND due_at <= $2 ORDER BY due_at LIMIT $3)
             RETURNING due_at, (SELECT record FROM subscribers s WHERE s.list_id = $4 AND s.id = subscriber_id)",
            &[&key(c.id.get()), &until, &(batch as i64), &key(c.list_id.get())],
        )
        .await?;
    let released = !rows.is_empty();
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        c.progress.planned -= 1;
        match row.get::<_, Option<Json<Subscriber>>>(1) {
            Some(Json(sub)) => found.push((row.get::<_, DateTime<Utc>>(0), sub)),
            // Gone from the list meanwhile: no longer a recipient.
            None => c.stats.total = c.stats.total.saturating_sub(1),
        }
    }
    let suppressed = suppressions_of(tx, c.user_id, found.iter().map(|(_, s)| &s.email)).await?;
    for (due_at, sub) in found {
        // A/B tests never send at local times: nothing to pick here.
        out.push(new_message(c, sub, Pick::default(), &suppressed, Some(due_at), now));
    }
    Ok(released)
}

/// Whether a new message is leased to the node that made it: only queued
/// ones are to be delivered.
fn leased(m: &MessageRecord) -> bool {
    m.status == MessageStatus::Queued
}

/// Writes a step's new messages in one statement, the queued ones leased
/// to `node`.
async fn insert_messages(
    tx: &Transaction<'_>,
    node: &Node,
    id: CampaignId,
    fresh: &[(MessageRecord, Subscriber)],
) -> Result<()> {
    if fresh.is_empty() {
        return Ok(());
    }
    let subs: Vec<i64> = fresh.iter().map(|(m, _)| key(m.subscriber_id.get())).collect();
    let statuses: Vec<&str> = fresh.iter().map(|(m, _)| m.status.as_str()).collect();
    let leases: Vec<Option<i64>> = fresh.iter().map(|(m, _)| leased(m).then_some(node.id.0)).collect();
    let records: Vec<Json<&MessageRecord>> = fresh.iter().map(|(m, _)| Json(m)).collect();
    tx.execute(
        "INSERT INTO messages (campaign_id, subscriber_id, status, lease_node, record)
         SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::jsonb[])",
        &[&key(id.get()), &subs, &statuses, &leases, &records],
    )
    .await?;
    Ok(())
}
