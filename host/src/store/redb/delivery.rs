//! What the delivery engine reads and writes: turning subscribers into
//! queued messages (cursor and messages in one transaction), storing
//! outcomes in batches, and finding the messages a crash left in flight.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redb::ReadableTable;

use super::bounces::file_bounce;
use super::campaigns::{load, save};
use super::members::MEMBERS;
use super::suppressions::suppressed;
use super::{
    CAMPAIGNS, DEFERRED, DUE, Events, IN_FLIGHT, MESSAGES, Page, Redb, Result, SCAN_LIMIT, SUBSCRIBERS, SUPPRESSIONS,
    StoreError, message_codec, page_filtered, subscriber_codec,
};
use crate::domain::ab::Pick;
use crate::domain::bounce::BouncePolicy;
use crate::domain::message::{Job, MessageRecord, MessageStatus, Outcome, Settled};
use crate::domain::webhook::{EventKind, campaign_data};
use crate::domain::{Campaign, CampaignId, CampaignRun, Status, Subscriber, UserId, schedule};

use crate::store::Enqueued;

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
    fn message(
        &mut self,
        c: &mut Campaign,
        sub: Subscriber,
        pick: Pick,
        due_at: Option<DateTime<Utc>>,
    ) -> Result<Option<Job>> {
        let suppressions = &self.suppressions;
        let user_id = c.user_id;
        let record = MessageRecord::create(
            c,
            &sub,
            pick,
            || suppressed(suppressions, user_id, &sub.email),
            due_at,
            self.now,
        )?;
        let key = (c.id.get(), sub.id.get());
        self.messages.insert(key, message_codec::encode(&record).as_slice())?;
        if record.status != MessageStatus::Queued {
            return Ok(None);
        }
        self.in_flight.insert(key, ())?;
        Ok(Some(Job::of(c.id, &record, sub)))
    }
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// Subscriber ids in order, each with its record (none: deleted since).
type Recipients<'a> = Box<dyn Iterator<Item = Result<(u64, Option<Subscriber>)>> + 'a>;

/// The campaign's recipients after its cursor, up to `last_subscriber`,
/// in id order, each with its subscriber record: the list's subscribers,
/// or a segment campaign's frozen members (`members`), where one deleted
/// since comes without a record.
fn recipients_after<'a>(
    c: &CampaignRun,
    subs: &'a impl ReadableTable<(u64, u64), &'static [u8]>,
    members: &'a impl ReadableTable<(u64, u64), ()>,
) -> Result<Recipients<'a>> {
    let (list, from, to) = (c.list_id.get(), c.progress.cursor + 1, c.progress.last_subscriber);
    Ok(if c.segment_id.is_some() {
        let id = c.id.get();
        Box::new(members.range((id, from)..=(id, to))?.map(move |entry| {
            let sub_id = entry?.0.value().1;
            let sub = subs
                .get((list, sub_id))?
                .map(|v| subscriber_codec::decode(v.value()))
                .transpose()?;
            Ok((sub_id, sub))
        }))
    } else {
        Box::new(subs.range((list, from)..=(list, to))?.map(|entry| {
            let (k, v) = entry?;
            Ok((k.value().1, Some(subscriber_codec::decode(v.value())?)))
        }))
    })
}

/// Moves the cursor over the next `batch` recipients.
#[allow(clippy::too_many_arguments)]
fn walk_list(
    c: &mut CampaignRun,
    subs: &impl ReadableTable<(u64, u64), &'static [u8]>,
    members: &impl ReadableTable<(u64, u64), ()>,
    due: &mut redb::Table<(u64, u64, u64), ()>,
    w: &mut Writer<'_>,
    batch: usize,
    step: &mut Enqueued,
    yield_requested: &dyn Fn() -> bool,
) -> Result<()> {
    let local_at = c.scheduled_at.filter(|_| c.send_at_local_time);
    let mut seen = 0;
    let mut stopped = false;
    let id = c.id.get();
    for entry in recipients_after(c, subs, members)? {
        let (sub_id, sub) = entry?;
        let pick = match sub {
            Some(_) => c.pick(crate::domain::SubscriberId::new(sub_id), || {
                Ok::<_, StoreError>(w.messages.get((id, sub_id))?.is_some())
            })?,
            None => None,
        };
        if let (Some(sub), Some(pick)) = (sub, pick) {
            let due_at = local_at.map(|at| schedule::due_at(at, schedule::parse_tz(sub.timezone.as_deref())));
            match due_at {
                Some(d) if d > w.now && c.status != Status::Cancelled => {
                    due.insert((c.id.get(), millis(d), sub_id), ())?;
                    c.progress.planned += 1;
                }
                _ => step.jobs.extend(w.message(c, sub, pick, due_at)?),
            }
        }
        c.progress.cursor = sub_id;
        seen += 1;
        if seen == batch || yield_requested() {
            stopped = true;
            break;
        }
    }
    if !stopped {
        // The range ran out: subscribers up to `last_subscriber` that were
        // removed leave no entry to move the cursor over.
        c.progress.cursor = c.progress.last_subscriber;
    }
    step.progressed = true;
    Ok(())
}

/// Turns due entries whose time has come (all of them once cancelled)
/// into messages.
fn release_due(
    c: &mut CampaignRun,
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
        .range((c.id.get(), 0, 0)..=(c.id.get(), until, u64::MAX))?
        .take(batch)
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<std::result::Result<_, _>>()?;
    for key in &keys {
        due.remove(key)?;
        c.progress.planned -= 1;
        let (_, due_ms, sub_id) = *key;
        let Some(sub) = subs
            .get((c.list_id.get(), sub_id))?
            .map(|v| subscriber_codec::decode(v.value()))
            .transpose()?
        else {
            c.stats.total = c.stats.total.saturating_sub(1);
            continue;
        };
        let due_at = DateTime::from_timestamp_millis(due_ms as i64);
        // A/B tests never send at local times: nothing to pick here.
        step.jobs.extend(w.message(c, sub, Pick::default(), due_at)?);
        if yield_requested() {
            break;
        }
    }
    step.progressed = !keys.is_empty();
    if !step.progressed {
        step.next_due = due
            .range((c.id.get(), 0, 0)..=(c.id.get(), u64::MAX, u64::MAX))?
            .next()
            .transpose()?
            .and_then(|(k, _)| DateTime::from_timestamp_millis(k.value().1 as i64));
    }
    Ok(())
}

impl Redb {
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
    pub fn enqueue(&self, campaign_id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Enqueued> {
        let tx = self.write_bulk()?;
        let mut events = Events::new(&tx);
        let step = {
            let mut campaigns = tx.open_table(CAMPAIGNS)?;
            let mut c: CampaignRun = load(&campaigns, campaign_id)?;
            let mut step = Enqueued {
                jobs: Vec::new(),
                progressed: false,
                next_due: None,
                campaign: c.campaign.clone(),
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
                let members = tx.open_table(MEMBERS)?;
                let yield_requested = || tx.yield_requested();
                step.progressed |= c.advance_ab(now);
                if c.progress.cursor < c.progress.last_subscriber {
                    walk_list(
                        &mut c,
                        &subs,
                        &members,
                        &mut due,
                        &mut w,
                        batch,
                        &mut step,
                        &yield_requested,
                    )?;
                } else if c.progress.planned > 0 {
                    release_due(&mut c, &subs, &mut due, &mut w, batch, &mut step, &yield_requested)?;
                }
                step.next_due = step.next_due.or(c.ab_due());
                c.stats = c.stats.with_pending();
            }
            if c.complete_if_done(now) {
                events.emit(c.user_id, EventKind::CampaignSent, now, || campaign_data(&c))?;
            }
            save(&mut campaigns, &c)?;
            step.campaign = c.campaign;
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
    ///
    /// While a step holds the writer, the outcomes ride on its commit
    /// instead (`write_riding_bulk`): one fsync for both.
    pub fn record_outcomes(&self, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<Vec<Campaign>> {
        let riding = self.write_riding_bulk(|| {
            let carried = outcomes.to_vec();
            move |tx: &redb::WriteTransaction| {
                let (_, touched, wrote) = Redb::record_in(tx, &carried, now, &|| false)?;
                Ok((touched, wrote))
            }
        });
        if let Some(r) = riding {
            let (touched, wrote) = r?;
            self.wake_deliverer(wrote);
            return Ok(touched);
        }
        let mut rest = outcomes;
        let mut touched: HashMap<CampaignId, Campaign> = HashMap::new();
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
        let (done, touched, wrote) = Redb::record_in(&tx, outcomes, now, &|| tx.yield_requested())?;
        tx.commit()?;
        self.wake_deliverer(wrote);
        Ok((done, touched))
    }

    /// Stores outcomes from the front of `outcomes` in `tx` until done or
    /// `yield_now`; returns how many it took, the campaigns it counted
    /// into and whether it wrote events.
    fn record_in(
        tx: &redb::WriteTransaction,
        outcomes: &[Outcome],
        now: DateTime<Utc>,
        yield_now: &dyn Fn() -> bool,
    ) -> Result<(usize, Vec<Campaign>, bool)> {
        let mut events = Events::new(tx);
        let mut done = 0;
        let touched = {
            let mut campaigns = tx.open_table(CAMPAIGNS)?;
            let mut messages = tx.open_table(MESSAGES)?;
            let mut in_flight = tx.open_table(IN_FLIGHT)?;
            let mut deferred = tx.open_table(DEFERRED)?;
            // Campaigns loaded for this batch; those a final outcome counted
            // into are saved and returned.
            let mut touched: HashMap<CampaignId, CampaignRun> = HashMap::new();
            let mut changed = std::collections::HashSet::new();
            for o in outcomes {
                if done > 0 && yield_now() {
                    break;
                }
                done += 1;
                let key = (o.campaign_id.get(), o.subscriber_id.get());
                let record = messages
                    .get(key)?
                    .map(|v| message_codec::decode(v.value()))
                    .transpose()?;
                let Some(mut record) = record else {
                    continue;
                };
                let c = match touched.entry(o.campaign_id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => match load(&campaigns, o.campaign_id) {
                        Ok(c) => e.insert(c),
                        Err(StoreError::NotFound) => continue,
                        Err(err) => return Err(err),
                    },
                };
                match record.settle(o, &mut c.stats, now) {
                    None => continue,
                    Some(Settled::Retrying) => {
                        messages.insert(key, message_codec::encode(&record).as_slice())?;
                        continue;
                    }
                    Some(Settled::Deferred) => {
                        messages.insert(key, message_codec::encode(&record).as_slice())?;
                        in_flight.remove(key)?;
                        deferred.insert(key, ())?;
                        continue;
                    }
                    Some(Settled::Final(ended)) => {
                        changed.insert(o.campaign_id);
                        if let Some(bounce) = &ended.bounce {
                            file_bounce(tx, c.user_id, bounce, &BouncePolicy::default(), now)?;
                        }
                        for (kind, data) in ended.events {
                            events.emit(c.user_id, kind, now, || data)?;
                        }
                    }
                }
                messages.insert(key, message_codec::encode(&record).as_slice())?;
                in_flight.remove(key)?;
            }
            touched.retain(|id, _| changed.contains(id));
            for c in touched.values_mut() {
                c.stats = c.stats.with_pending();
                if c.complete_if_done(now) {
                    events.emit(c.user_id, EventKind::CampaignSent, now, || campaign_data(c))?;
                }
                save(&mut campaigns, c)?;
            }
            touched.into_values().map(|run| run.campaign).collect()
        };
        Ok((done, touched, events.into_written()))
    }

    /// Messages of a campaign that were queued when the server stopped.
    /// Those in flight may already have been delivered, so they are marked
    /// as possible duplicates before they are delivered again; those a
    /// clean stop deferred were not under way and are not marked. A
    /// cancelled campaign's are cancelled instead.
    pub fn recover_in_flight(&self, campaign_id: CampaignId, now: DateTime<Utc>) -> Result<Vec<Job>> {
        let tx = self.write_bulk()?;
        let jobs = {
            let mut campaigns = tx.open_table(CAMPAIGNS)?;
            let mut c: CampaignRun = load(&campaigns, campaign_id)?;
            let mut in_flight = tx.open_table(IN_FLIGHT)?;
            let mut deferred = tx.open_table(DEFERRED)?;
            let mut messages = tx.open_table(MESSAGES)?;
            let subs = tx.open_table(SUBSCRIBERS)?;
            let range = (campaign_id.get(), 0)..=(campaign_id.get(), u64::MAX);
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
                    .map(|v| message_codec::decode(v.value()))
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
                        .get((c.list_id.get(), key.1))?
                        .map(|v| subscriber_codec::decode(v.value()))
                        .transpose()?
                    else {
                        continue;
                    };
                    if maybe_delivered && !record.possible_duplicate {
                        record.possible_duplicate = true;
                        c.stats.possible_duplicates += 1;
                    }
                    in_flight.insert(key, ())?;
                    jobs.push(Job::of(campaign_id, &record, sub));
                }
                messages.insert(key, message_codec::encode(&record).as_slice())?;
            }
            c.stats = c.stats.with_pending();
            save(&mut campaigns, &c)?;
            jobs
        };
        tx.commit()?;
        Ok(jobs)
    }

    /// A campaign's messages in subscriber order, optionally by status. A
    /// status filter reads at most `SCAN_LIMIT` messages per page, then
    /// answers with fewer items and a cursor.
    pub fn messages(
        &self,
        user_id: UserId,
        campaign_id: CampaignId,
        status: Option<MessageStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<MessageRecord>> {
        let tx = self.read()?;
        let c: Campaign = load(&tx.open_table(CAMPAIGNS)?, campaign_id)?;
        if c.user_id != user_id {
            return Err(StoreError::NotFound);
        }
        let table = tx.open_table(MESSAGES)?;
        page_filtered(&table, campaign_id.get(), after, limit, SCAN_LIMIT, |_, v| {
            let wanted = match status {
                None => true,
                Some(s) => message_codec::status(v.value())? == s,
            };
            wanted.then(|| message_codec::decode(v.value())).transpose()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::message::OutcomeKind;
    use crate::domain::{CampaignDraft, NewSubscriber, SubscriberId, SubscriberStatus};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Redb,
        user: UserId,
        campaign: CampaignId,
    }

    /// A campaign sending to `n` subscribers, the last one unsubscribed.
    fn sending(n: usize) -> Fixture {
        let (dir, store) = crate::store::redb::temp_store();
        let (user, _) = store.create_user("a@example.org".into()).unwrap();
        let list = store.create_list(user.id, "l".into()).unwrap();
        let subs = (0..n)
            .map(|i| NewSubscriber {
                email: crate::domain::Email::parse(&format!("s{i}@example.org")).unwrap(),
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

    fn message(f: &Fixture, sub: SubscriberId) -> MessageRecord {
        f.store
            .messages(f.user, f.campaign, None, Some(sub.get() - 1), 1)
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
            email: crate::domain::Email::parse("S1@Example.ORG").unwrap(),
            reason: Some(SuppressionReason::Bounced),
            detail: Some("550 5.1.1".into()),
        }
        .validate("", Utc::now())
        .unwrap();
        let report = f.store.suppress(f.user, [s.clone(), s].to_vec()).unwrap();
        assert_eq!((report.added, report.unchanged), (1, 1), "{report:?}");
        let rest = f.store.enqueue(f.campaign, 10, Utc::now()).unwrap();
        let queued: Vec<&str> = rest.jobs.iter().map(|j| j.subscriber.email.as_str()).collect();
        assert_eq!(queued, ["s2@example.org"]);
        let c = rest.campaign;
        assert_eq!((c.stats.queued, c.stats.skipped), (2, 2));
        let skipped = message(&f, SubscriberId::new(first.jobs[0].subscriber.id.get() + 1));
        assert_eq!(
            (skipped.status, skipped.skip_reason.as_deref()),
            (MessageStatus::Skipped, Some("suppressed: bounced"))
        );
        let unsubscribed = message(&f, SubscriberId::new(first.jobs[0].subscriber.id.get() + 3));
        assert_eq!(unsubscribed.skip_reason.as_deref(), Some("unsubscribed"));

        f.store.unsuppress(f.user, "s1@example.org".into()).unwrap();
        assert!(matches!(
            f.store.unsuppress(f.user, "s1@example.org".into()),
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
        let ids: Vec<SubscriberId> = jobs.iter().map(|j| j.subscriber.id).collect();
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
        let subs = f.store.subscribers(f.user, list, None, None, 10).unwrap().items;
        assert_eq!(subs[0].status, SubscriberStatus::Unsubscribed);
    }
}
