//! What the delivery engine reads and writes: turning subscribers into
//! queued messages (cursor and messages in one transaction), storing
//! outcomes in batches, and finding the messages a crash left in flight.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounces::{file_bounce, mark_message};
use super::campaigns::{load, save};
use super::suppressions::suppressed;
use super::{
    CAMPAIGNS, DEFERRED, DUE, Events, IN_FLIGHT, MESSAGES, Page, Result, SUBSCRIBERS, SUPPRESSIONS, Store, StoreError,
    decode, encode,
};
use crate::domain::bounce::{Bounce, BouncePolicy, BounceType};
use crate::domain::lifecycle::transition;
use crate::domain::suppression::normalize;
use crate::domain::webhook::{EventKind, bounce_data, campaign_data};
use crate::domain::{Action, Campaign, Status, Subscriber, SubscriberStatus, schedule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Queued,
    Sent,
    Failed,
    Skipped,
    Cancelled,
}

impl MessageStatus {
    pub fn parse(s: &str) -> Option<MessageStatus> {
        match s {
            "queued" => Some(MessageStatus::Queued),
            "sent" => Some(MessageStatus::Sent),
            "failed" => Some(MessageStatus::Failed),
            "skipped" => Some(MessageStatus::Skipped),
            "cancelled" => Some(MessageStatus::Cancelled),
            _ => None,
        }
    }
}

/// One subscriber's message of one campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageRecord {
    pub subscriber_id: u64,
    pub email: String,
    pub message_id: String,
    pub status: MessageStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The transport's id for the delivery, when it gave one.
    pub remote_id: Option<String>,
    /// Set when a crash interrupted this message's delivery, so the
    /// transport may have been called more than once.
    #[serde(default)]
    pub possible_duplicate: bool,
    /// For local-time campaigns: when the subscriber's wall clock showed
    /// the campaign's time.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// Why a `skipped` message was not sent: the subscriber's status in
    /// the list (`unsubscribed`, `bounced`, …) or the user's suppression
    /// list (`suppressed: REASON`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Bounces and complaints reported for this message, at most one of
    /// each type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounces: Vec<MessageBounce>,
    pub updated_at: DateTime<Utc>,
}

/// A bounce or complaint on its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageBounce {
    #[serde(rename = "type")]
    pub kind: crate::domain::bounce::BounceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A message handed to the delivery workers.
#[derive(Debug, Clone)]
pub struct Job {
    pub campaign_id: u64,
    pub subscriber: Subscriber,
    /// Transport calls already made for this message (before a stop or
    /// crash): `max_attempts` counts them too.
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    Sent {
        remote_id: Option<String>,
    },
    Failed {
        error: String,
    },
    /// Failed because the receiving server refused the recipient for good;
    /// also recorded as a hard bounce of the address.
    Rejected {
        error: String,
    },
    /// The campaign was cancelled before the transport was called.
    Cancelled,
    /// Not final: a transient failure, retried after a backoff. Stores the
    /// attempts so far, so a restart does not start counting again.
    Retrying {
        error: String,
    },
    /// Not final: the server is stopping and the retry was put off before
    /// it called the transport; the message leaves `in_flight` for
    /// `deferred` and is delivered again, unflagged, after the next start.
    Deferred,
}

impl OutcomeKind {
    /// Whether the message's job ends with this outcome (the engine counts
    /// it out of the campaign's in-flight messages once stored).
    pub fn ends_job(&self) -> bool {
        !matches!(self, OutcomeKind::Retrying { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub campaign_id: u64,
    pub subscriber_id: u64,
    pub attempts: u32,
    pub kind: OutcomeKind,
}

/// The result of one enqueue step.
#[derive(Debug)]
pub struct Enqueued {
    pub jobs: Vec<Job>,
    /// Whether the step changed anything (created messages or due entries).
    pub progressed: bool,
    /// When the next due entry comes due, if one waits.
    pub next_due: Option<DateTime<Utc>>,
    /// The campaign after the step (status, cursor, stats).
    pub campaign: Campaign,
}

/// The tables a step writes messages to.
struct Writer<'t> {
    messages: redb::Table<'t, (u64, u64), &'static [u8]>,
    in_flight: redb::Table<'t, (u64, u64), ()>,
    suppressions: redb::Table<'t, (u64, &'static str), &'static [u8]>,
    now: DateTime<Utc>,
}

impl Writer<'_> {
    /// Creates the campaign's message for `sub`: cancelled if the campaign
    /// is, skipped if the subscriber is not subscribed or the address is on
    /// the user's suppression list, queued otherwise.
    fn message(&mut self, c: &mut Campaign, sub: Subscriber, due_at: Option<DateTime<Utc>>) -> Result<Option<Job>> {
        let skip_reason = if c.status == Status::Cancelled {
            None
        } else if sub.status != SubscriberStatus::Subscribed {
            Some(sub.status.as_str().to_string())
        } else {
            suppressed(&self.suppressions, c.user_id, &sub.email)?.map(|r| format!("suppressed: {}", r.as_str()))
        };
        let status = if c.status == Status::Cancelled {
            c.stats.cancelled += 1;
            MessageStatus::Cancelled
        } else if skip_reason.is_none() {
            c.stats.queued += 1;
            self.in_flight.insert((c.id, sub.id), ())?;
            MessageStatus::Queued
        } else {
            c.stats.skipped += 1;
            MessageStatus::Skipped
        };
        let record = MessageRecord {
            subscriber_id: sub.id,
            email: sub.email.clone(),
            message_id: c.message_id(sub.id),
            status,
            attempts: 0,
            last_error: None,
            remote_id: None,
            possible_duplicate: false,
            due_at,
            skip_reason,
            bounces: Vec::new(),
            updated_at: self.now,
        };
        self.messages.insert((c.id, sub.id), encode(&record).as_slice())?;
        Ok((status == MessageStatus::Queued).then_some(Job {
            campaign_id: c.id,
            subscriber: sub,
            attempts: 0,
        }))
    }
}

/// Longest remote id or error text stored on a message.
pub const MAX_STORED_TEXT: usize = 1024;

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// Moves the cursor over the next `batch` subscribers of the list.
fn walk_list(
    c: &mut Campaign,
    subs: &impl ReadableTable<(u64, u64), &'static [u8]>,
    due: &mut redb::Table<(u64, u64, u64), ()>,
    w: &mut Writer<'_>,
    batch: usize,
    step: &mut Enqueued,
    yield_requested: &dyn Fn() -> bool,
) -> Result<()> {
    let local_at = c.scheduled_at.filter(|_| c.send_at_local_time);
    let mut seen = 0;
    let mut stopped = false;
    for entry in subs.range((c.list_id, c.cursor + 1)..=(c.list_id, c.last_subscriber))? {
        let (k, v) = entry?;
        let sub: Subscriber = decode(v.value())?;
        let sub_id = k.value().1;
        let due_at = local_at.map(|at| schedule::due_at(at, schedule::parse_tz(sub.timezone.as_deref())));
        match due_at {
            Some(d) if d > w.now && c.status != Status::Cancelled => {
                due.insert((c.id, millis(d), sub_id), ())?;
                c.planned += 1;
            }
            _ => step.jobs.extend(w.message(c, sub, due_at)?),
        }
        c.cursor = sub_id;
        seen += 1;
        if seen == batch || yield_requested() {
            stopped = true;
            break;
        }
    }
    if !stopped {
        // The range ran out: subscribers up to `last_subscriber` that were
        // removed leave no entry to move the cursor over.
        c.cursor = c.last_subscriber;
    }
    step.progressed = true;
    Ok(())
}

/// Turns due entries whose time has come (all of them once cancelled)
/// into messages.
fn release_due(
    c: &mut Campaign,
    subs: &impl ReadableTable<(u64, u64), &'static [u8]>,
    due: &mut redb::Table<(u64, u64, u64), ()>,
    w: &mut Writer<'_>,
    batch: usize,
    step: &mut Enqueued,
    yield_requested: &dyn Fn() -> bool,
) -> Result<()> {
    let until = if c.status == Status::Cancelled {
        u64::MAX
    } else {
        millis(w.now)
    };
    let keys: Vec<(u64, u64, u64)> = due
        .range((c.id, 0, 0)..=(c.id, until, u64::MAX))?
        .take(batch)
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<std::result::Result<_, _>>()?;
    for key in &keys {
        due.remove(key)?;
        c.planned -= 1;
        let (_, due_ms, sub_id) = *key;
        let Some(sub) = subs
            .get((c.list_id, sub_id))?
            .map(|v| decode::<Subscriber>(v.value()))
            .transpose()?
        else {
            c.stats.total = c.stats.total.saturating_sub(1);
            continue;
        };
        let due_at = DateTime::from_timestamp_millis(due_ms as i64);
        step.jobs.extend(w.message(c, sub, due_at)?);
        if yield_requested() {
            break;
        }
    }
    step.progressed = !keys.is_empty();
    if !step.progressed {
        step.next_due = due
            .range((c.id, 0, 0)..=(c.id, u64::MAX, u64::MAX))?
            .next()
            .transpose()?
            .and_then(|(k, _)| DateTime::from_timestamp_millis(k.value().1 as i64));
    }
    Ok(())
}

/// The `data` of `message.failed`.
fn message_data(campaign_id: u64, m: &MessageRecord) -> serde_json::Value {
    serde_json::json!({
        "campaign_id": campaign_id,
        "subscriber_id": m.subscriber_id,
        "email": m.email,
        "message_id": m.message_id,
        "attempts": m.attempts,
        "error": m.last_error,
    })
}

impl Campaign {
    /// Every subscriber has a message and no message waits for an outcome.
    pub fn exhausted(&self) -> bool {
        self.cursor >= self.last_subscriber && self.planned == 0 && self.stats.queued == 0
    }

    /// Turns a sending campaign that is exhausted into sent; says whether
    /// it did.
    fn complete_if_done(&mut self, now: DateTime<Utc>) -> bool {
        if self.status == Status::Sending && self.exhausted() {
            self.status = transition(self.status, Action::Complete).expect("sending → sent");
            self.completed_at = Some(now);
            self.updated_at = now;
            return true;
        }
        false
    }
}

impl Store {
    /// One step of a campaign's run, in one transaction:
    ///
    /// - while the cursor has not reached the end of the list, the next
    ///   `batch` subscribers become messages (queued for subscribed ones,
    ///   skipped for the rest), or, for local-time campaigns, due entries for
    ///   those whose time has not come;
    /// - after that, due entries whose time has come become messages;
    /// - for a cancelled campaign, everything left becomes cancelled messages.
    ///
    /// The cursor and due entries move in the same transaction as the
    /// messages they produce, so a crash can neither skip nor repeat a
    /// subscriber.
    pub fn enqueue(&self, campaign_id: u64, batch: usize, now: DateTime<Utc>) -> Result<Enqueued> {
        let tx = self.write_bulk()?;
        let mut events = Events::new(&tx);
        let step = {
            let mut campaigns = tx.open_table(CAMPAIGNS)?;
            let mut c = load(&campaigns, campaign_id)?;
            let mut step = Enqueued {
                jobs: Vec::new(),
                progressed: false,
                next_due: None,
                campaign: c.clone(),
            };
            if matches!(c.status, Status::Sending | Status::Cancelled) {
                let mut w = Writer {
                    messages: tx.open_table(MESSAGES)?,
                    in_flight: tx.open_table(IN_FLIGHT)?,
                    suppressions: tx.open_table(SUPPRESSIONS)?,
                    now,
                };
                let mut due = tx.open_table(DUE)?;
                let subs = tx.open_table(SUBSCRIBERS)?;
                let yield_requested = || tx.yield_requested();
                if c.cursor < c.last_subscriber {
                    walk_list(&mut c, &subs, &mut due, &mut w, batch, &mut step, &yield_requested)?;
                } else if c.planned > 0 {
                    release_due(&mut c, &subs, &mut due, &mut w, batch, &mut step, &yield_requested)?;
                }
                c.stats = c.stats.with_pending();
            }
            if c.complete_if_done(now) {
                events.emit(c.user_id, EventKind::CampaignSent, now, || campaign_data(&c))?;
            }
            save(&mut campaigns, &c)?;
            step.campaign = c;
            step
        };
        let wrote = events.into_written();
        tx.commit()?;
        self.wake_deliverer(wrote);
        Ok(step)
    }

    /// Stores a batch of outcomes with the campaigns' counters, in one
    /// transaction unless asked to yield, completing campaigns whose last
    /// message this was.
    /// Outcomes for messages that are no longer queued (the campaign was
    /// deleted) are ignored.
    ///
    /// A transaction stops early when an API write is waiting (it gets the
    /// writer next) and the rest follow in further transactions; each
    /// outcome's changes and its counters still commit together.
    pub fn record_outcomes(&self, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<Vec<Campaign>> {
        let mut rest = outcomes;
        let mut touched: HashMap<u64, Campaign> = HashMap::new();
        while !rest.is_empty() {
            let (done, campaigns) = self.record_some_outcomes(rest, now)?;
            rest = &rest[done..];
            touched.extend(campaigns.into_iter().map(|c| (c.id, c)));
        }
        Ok(touched.into_values().collect())
    }

    /// Stores outcomes from the front of `outcomes` until done or asked to
    /// yield; returns how many it took.
    fn record_some_outcomes(&self, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<(usize, Vec<Campaign>)> {
        let tx = self.write_bulk()?;
        let mut events = Events::new(&tx);
        let mut done = 0;
        let touched = {
            let mut campaigns = tx.open_table(CAMPAIGNS)?;
            let mut messages = tx.open_table(MESSAGES)?;
            let mut in_flight = tx.open_table(IN_FLIGHT)?;
            let mut deferred = tx.open_table(DEFERRED)?;
            let mut touched: HashMap<u64, Campaign> = HashMap::new();
            for o in outcomes {
                if done > 0 && tx.yield_requested() {
                    break;
                }
                done += 1;
                let key = (o.campaign_id, o.subscriber_id);
                let record = messages
                    .get(key)?
                    .map(|v| decode::<MessageRecord>(v.value()))
                    .transpose()?;
                let Some(mut record) = record else {
                    continue;
                };
                if record.status != MessageStatus::Queued {
                    continue;
                }
                record.attempts = o.attempts;
                record.updated_at = now;
                // Not final: the message stays queued, only what it went
                // through is kept.
                match &o.kind {
                    OutcomeKind::Retrying { error } => {
                        record.last_error = Some(clip(error, MAX_STORED_TEXT));
                        messages.insert(key, encode(&record).as_slice())?;
                        continue;
                    }
                    OutcomeKind::Deferred => {
                        messages.insert(key, encode(&record).as_slice())?;
                        in_flight.remove(key)?;
                        deferred.insert(key, ())?;
                        continue;
                    }
                    _ => {}
                }
                let c = match touched.entry(o.campaign_id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => match load(&campaigns, o.campaign_id) {
                        Ok(c) => e.insert(c),
                        Err(StoreError::NotFound) => continue,
                        Err(err) => return Err(err),
                    },
                };
                c.stats.queued -= 1;
                match &o.kind {
                    OutcomeKind::Sent { remote_id } => {
                        record.status = MessageStatus::Sent;
                        // Whatever a plugin returns, a stored message stays small.
                        record.remote_id = remote_id.as_deref().map(|r| clip(r, MAX_STORED_TEXT));
                        c.stats.sent += 1;
                    }
                    OutcomeKind::Failed { error } => {
                        record.status = MessageStatus::Failed;
                        record.last_error = Some(clip(error, MAX_STORED_TEXT));
                        c.stats.failed += 1;
                        events.emit(c.user_id, EventKind::MessageFailed, now, || message_data(c.id, &record))?;
                    }
                    OutcomeKind::Rejected { error } => {
                        record.status = MessageStatus::Failed;
                        record.last_error = Some(clip(error, MAX_STORED_TEXT));
                        c.stats.failed += 1;
                        events.emit(c.user_id, EventKind::MessageFailed, now, || message_data(c.id, &record))?;
                        let reason = Some(clip(error, 1024));
                        if mark_message(&mut record, &mut c.stats, BounceType::Hard, reason.clone(), now) {
                            let bounce = Bounce {
                                email: normalize(&record.email),
                                kind: BounceType::Hard,
                                reason,
                                message_id: Some(record.message_id.clone()),
                                at: now,
                            };
                            // Hard bounces suppress whatever the soft window.
                            file_bounce(&tx, c.user_id, &bounce, &BouncePolicy::default(), now)?;
                            events.emit(c.user_id, EventKind::MessageBounced, now, || {
                                bounce_data(&bounce, Some((c.id, record.subscriber_id)))
                            })?;
                        }
                    }
                    OutcomeKind::Cancelled => {
                        record.status = MessageStatus::Cancelled;
                        c.stats.cancelled += 1;
                    }
                    OutcomeKind::Retrying { .. } | OutcomeKind::Deferred => unreachable!("handled above"),
                }
                messages.insert(key, encode(&record).as_slice())?;
                in_flight.remove(key)?;
            }
            for c in touched.values_mut() {
                c.stats = c.stats.with_pending();
                if c.complete_if_done(now) {
                    events.emit(c.user_id, EventKind::CampaignSent, now, || campaign_data(c))?;
                }
                save(&mut campaigns, c)?;
            }
            touched.into_values().collect()
        };
        let wrote = events.into_written();
        tx.commit()?;
        self.wake_deliverer(wrote);
        Ok((done, touched))
    }

    /// Messages of a campaign that were queued when the server stopped.
    /// Those in flight may already have been delivered, so they are marked
    /// as possible duplicates before they are delivered again; those a
    /// clean stop deferred were not under way and are not marked. A
    /// cancelled campaign's are cancelled instead.
    pub fn recover_in_flight(&self, campaign_id: u64, now: DateTime<Utc>) -> Result<Vec<Job>> {
        let tx = self.write_bulk()?;
        let jobs = {
            let mut campaigns = tx.open_table(CAMPAIGNS)?;
            let mut c = load(&campaigns, campaign_id)?;
            let mut in_flight = tx.open_table(IN_FLIGHT)?;
            let mut deferred = tx.open_table(DEFERRED)?;
            let mut messages = tx.open_table(MESSAGES)?;
            let subs = tx.open_table(SUBSCRIBERS)?;
            let range = (campaign_id, 0)..=(campaign_id, u64::MAX);
            let keys = |t: &redb::Table<(u64, u64), ()>| -> Result<Vec<(u64, u64)>> {
                Ok(t.range(range.clone())?
                    .map(|e| e.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<_, _>>()?)
            };
            let mut waiting: Vec<((u64, u64), bool)> = keys(&in_flight)?.into_iter().map(|k| (k, true)).collect();
            waiting.extend(keys(&deferred)?.into_iter().map(|k| (k, false)));
            deferred.retain_in(range.clone(), |_, _| false)?;
            let mut jobs = Vec::new();
            for (key, maybe_delivered) in waiting {
                let Some(mut record) = messages
                    .get(key)?
                    .map(|v| decode::<MessageRecord>(v.value()))
                    .transpose()?
                else {
                    in_flight.remove(key)?;
                    continue;
                };
                record.updated_at = now;
                if c.status == Status::Cancelled {
                    record.status = MessageStatus::Cancelled;
                    c.stats.queued -= 1;
                    c.stats.cancelled += 1;
                    in_flight.remove(key)?;
                } else {
                    let Some(sub) = subs
                        .get((c.list_id, key.1))?
                        .map(|v| decode::<Subscriber>(v.value()))
                        .transpose()?
                    else {
                        continue;
                    };
                    if maybe_delivered && !record.possible_duplicate {
                        record.possible_duplicate = true;
                        c.stats.possible_duplicates += 1;
                    }
                    in_flight.insert(key, ())?;
                    jobs.push(Job {
                        campaign_id,
                        subscriber: sub,
                        attempts: record.attempts,
                    });
                }
                messages.insert(key, encode(&record).as_slice())?;
            }
            c.stats = c.stats.with_pending();
            save(&mut campaigns, &c)?;
            jobs
        };
        tx.commit()?;
        Ok(jobs)
    }

    /// A campaign's messages in subscriber order, optionally by status.
    pub fn messages(
        &self,
        user_id: u64,
        campaign_id: u64,
        status: Option<MessageStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<MessageRecord>> {
        let tx = self.read()?;
        let c = load(&tx.open_table(CAMPAIGNS)?, campaign_id)?;
        if c.user_id != user_id {
            return Err(StoreError::NotFound);
        }
        let table = tx.open_table(MESSAGES)?;
        let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
        let mut items = Vec::new();
        let mut more = false;
        for entry in table.range((campaign_id, start)..=(campaign_id, u64::MAX))? {
            let (_, v) = entry?;
            let m: MessageRecord = decode(v.value())?;
            if status.is_some_and(|s| s != m.status) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(m);
        }
        let next_after = if more {
            items.last().map(|m: &MessageRecord| m.subscriber_id)
        } else {
            None
        };
        Ok(Page { items, next_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CampaignDraft, NewSubscriber};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        user: u64,
        campaign: u64,
    }

    /// A campaign sending to `n` subscribers, the last one unsubscribed.
    fn sending(n: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (user, _) = store.create_user("a@example.org").unwrap();
        let list = store.create_list(user.id, "l").unwrap();
        let subs = (0..n)
            .map(|i| NewSubscriber {
                email: format!("s{i}@example.org"),
                name: String::new(),
                timezone: None,
                attributes: Default::default(),
                status: if i == n - 1 {
                    SubscriberStatus::Unsubscribed
                } else {
                    SubscriberStatus::Subscribed
                },
            })
            .collect();
        store.upsert_subscribers(user.id, list.id, subs).unwrap();
        let draft = CampaignDraft::minimal(list.id);
        let c = store.create_campaign(user.id, draft, "log".into(), Utc::now()).unwrap();
        store.send(user.id, c.id, Utc::now()).unwrap();
        Fixture {
            _dir: dir,
            store,
            user: user.id,
            campaign: c.id,
        }
    }

    fn outcome(f: &Fixture, job: &Job, attempts: u32, kind: OutcomeKind) -> Outcome {
        Outcome {
            campaign_id: f.campaign,
            subscriber_id: job.subscriber.id,
            attempts,
            kind,
        }
    }

    fn message(f: &Fixture, sub: u64) -> MessageRecord {
        f.store
            .messages(f.user, f.campaign, None, Some(sub - 1), 1)
            .unwrap()
            .items
            .remove(0)
    }

    #[test]
    fn enqueue_moves_the_cursor_and_counts_each_subscriber_once() {
        let f = sending(5);
        let step = f.store.enqueue(f.campaign, 3, Utc::now()).unwrap();
        assert_eq!(step.jobs.len(), 3);
        let step = f.store.enqueue(f.campaign, 3, Utc::now()).unwrap();
        assert_eq!(step.jobs.len(), 1, "the fifth subscriber is unsubscribed: skipped");
        let c = step.campaign;
        assert_eq!((c.stats.total, c.stats.queued, c.stats.skipped), (5, 4, 1));
        assert_eq!(c.stats.pending, 0, "every subscriber has a message");
        let again = f.store.enqueue(f.campaign, 3, Utc::now()).unwrap();
        assert!(again.jobs.is_empty() && !again.progressed, "nobody twice");
    }

    #[test]
    fn a_suppression_during_a_send_skips_the_messages_not_yet_created() {
        use crate::domain::suppression::{NewSuppression, SuppressionReason};
        let f = sending(4);
        let first = f.store.enqueue(f.campaign, 1, Utc::now()).unwrap();
        assert_eq!(first.jobs.len(), 1);
        let s = NewSuppression {
            email: "S1@Example.ORG".into(),
            reason: Some(SuppressionReason::Bounced),
            detail: Some("550 5.1.1".into()),
        }
        .validate("", Utc::now())
        .unwrap();
        let report = f.store.suppress(f.user, &[s.clone(), s]).unwrap();
        assert_eq!((report.added, report.unchanged), (1, 1), "{report:?}");
        let rest = f.store.enqueue(f.campaign, 10, Utc::now()).unwrap();
        let queued: Vec<&str> = rest.jobs.iter().map(|j| j.subscriber.email.as_str()).collect();
        assert_eq!(queued, ["s2@example.org"]);
        let c = rest.campaign;
        assert_eq!((c.stats.queued, c.stats.skipped), (2, 2));
        let skipped = message(&f, first.jobs[0].subscriber.id + 1);
        assert_eq!(
            (skipped.status, skipped.skip_reason.as_deref()),
            (MessageStatus::Skipped, Some("suppressed: bounced"))
        );
        let unsubscribed = message(&f, first.jobs[0].subscriber.id + 3);
        assert_eq!(unsubscribed.skip_reason.as_deref(), Some("unsubscribed"));

        f.store.unsuppress(f.user, "s1@example.org").unwrap();
        assert!(matches!(
            f.store.unsuppress(f.user, "s1@example.org"),
            Err(StoreError::NotFound)
        ));
        let page = f.store.suppressions(f.user, None, None, 10).unwrap();
        assert!(page.items.is_empty() && page.next_after.is_none());
    }

    #[test]
    fn batches_yield_to_a_waiting_request_without_skipping_or_repeating() {
        let f = sending(5);
        // As if an API write were queued for the writer throughout.
        f.store.interactive.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut jobs = Vec::new();
        loop {
            let step = f.store.enqueue(f.campaign, 10, Utc::now()).unwrap();
            assert!(step.jobs.len() <= 1, "a yielding batch stops after one subscriber");
            if !step.progressed {
                break;
            }
            jobs.extend(step.jobs);
        }
        let ids: Vec<u64> = jobs.iter().map(|j| j.subscriber.id).collect();
        assert_eq!(ids.len(), 4, "every subscribed subscriber once: {ids:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let outcomes: Vec<Outcome> = jobs
            .iter()
            .map(|j| outcome(&f, j, 1, OutcomeKind::Sent { remote_id: None }))
            .collect();
        f.store.record_outcomes(&outcomes, Utc::now()).unwrap();
        f.store.interactive.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let c = f.store.campaign(f.user, f.campaign).unwrap();
        assert_eq!((c.stats.sent, c.stats.queued, c.status), (4, 0, Status::Sent));
    }

    #[test]
    fn outcomes_update_messages_and_counters_and_complete_the_campaign() {
        let f = sending(4);
        let jobs = f.store.enqueue(f.campaign, 10, Utc::now()).unwrap().jobs;
        let now = Utc::now();
        let retry = outcome(&f, &jobs[0], 1, OutcomeKind::Retrying { error: "451".into() });
        f.store.record_outcomes(&[retry], now).unwrap();
        let m = message(&f, jobs[0].subscriber.id);
        assert_eq!(
            (m.status, m.attempts),
            (MessageStatus::Queued, 1),
            "a retry is not final"
        );
        assert_eq!(m.last_error.as_deref(), Some("451"));

        let done = f
            .store
            .record_outcomes(
                &[
                    outcome(
                        &f,
                        &jobs[0],
                        2,
                        OutcomeKind::Sent {
                            remote_id: Some("q".repeat(5000)),
                        },
                    ),
                    outcome(&f, &jobs[1], 1, OutcomeKind::Failed { error: "550".into() }),
                    outcome(&f, &jobs[2], 1, OutcomeKind::Cancelled),
                ],
                now,
            )
            .unwrap();
        let c = &done[0];
        assert_eq!(
            (c.stats.sent, c.stats.failed, c.stats.cancelled, c.stats.queued),
            (1, 1, 1, 0)
        );
        assert_eq!(c.status, Status::Sent, "the last outcome completes it");
        let m = message(&f, jobs[0].subscriber.id);
        assert_eq!((m.status, m.attempts), (MessageStatus::Sent, 2));
        assert!(m.remote_id.unwrap().len() < 1100, "stored texts are clipped");
        // A second outcome for a final message changes nothing.
        let again = f
            .store
            .record_outcomes(&[outcome(&f, &jobs[1], 9, OutcomeKind::Sent { remote_id: None })], now)
            .unwrap();
        assert!(again.is_empty());
        assert_eq!(message(&f, jobs[1].subscriber.id).status, MessageStatus::Failed);
    }

    #[test]
    fn recovery_flags_in_flight_but_not_deferred_messages_and_keeps_attempts() {
        let f = sending(4);
        let jobs = f.store.enqueue(f.campaign, 10, Utc::now()).unwrap().jobs;
        let now = Utc::now();
        // One message's retry was put off by a clean stop after 2 attempts;
        // the other two were in flight when the process died.
        f.store
            .record_outcomes(&[outcome(&f, &jobs[0], 2, OutcomeKind::Deferred)], now)
            .unwrap();
        let recovered = f.store.recover_in_flight(f.campaign, now).unwrap();
        assert_eq!(recovered.len(), 3);
        let deferred = recovered
            .iter()
            .find(|j| j.subscriber.id == jobs[0].subscriber.id)
            .unwrap();
        assert_eq!(deferred.attempts, 2, "attempts count across restarts");
        assert!(!message(&f, jobs[0].subscriber.id).possible_duplicate);
        assert!(message(&f, jobs[1].subscriber.id).possible_duplicate);
        let c = f.store.campaign_by_id(f.campaign).unwrap();
        assert_eq!(c.stats.possible_duplicates, 2);
        // Recovering again flags nobody twice, and the deferred message is
        // in flight now like the others.
        let again = f.store.recover_in_flight(f.campaign, now).unwrap();
        assert_eq!(again.len(), 3);
        assert_eq!(f.store.campaign_by_id(f.campaign).unwrap().stats.possible_duplicates, 3);
    }

    #[test]
    fn deleting_a_campaign_removes_its_messages_but_keeps_its_list_for_unsubscribes() {
        let f = sending(3);
        let jobs = f.store.enqueue(f.campaign, 10, Utc::now()).unwrap().jobs;
        let now = Utc::now();
        let outcomes: Vec<Outcome> = jobs
            .iter()
            .map(|j| outcome(&f, j, 1, OutcomeKind::Sent { remote_id: None }))
            .collect();
        f.store.record_outcomes(&outcomes, now).unwrap();
        f.store.delete_campaign(f.user, f.campaign).unwrap();
        assert!(matches!(
            f.store.messages(f.user, f.campaign, None, None, 10),
            Err(StoreError::NotFound)
        ));
        f.store.unsubscribe(f.campaign, jobs[0].subscriber.id).unwrap();
        let list = f.store.lists(f.user, None, 10).unwrap().items[0].id;
        let subs = f.store.subscribers(f.user, list, None, 10).unwrap().items;
        assert_eq!(subs[0].status, SubscriberStatus::Unsubscribed);
    }
}
