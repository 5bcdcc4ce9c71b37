//! One behaviour, two backends: each scenario is written once against
//! `Store`, the contract the server calls, and runs with it on redb and on
//! PostgreSQL (`store::pg`, against the test server).

use chrono::{Duration, Utc};

use super::DueDelivery;
use super::{BounceReport, Redb, Result, Store, StoreError, UpsertReport};
use crate::domain::bounce::{Bounce, BouncePolicy, BounceType};
use crate::domain::message::{Job, MessageStatus, Outcome, OutcomeKind};
use crate::domain::suppression::{Suppression, SuppressionReason};
use crate::domain::webhook::{Attempt, DeliveryState};
use crate::domain::webhook::{EventKind, Webhook};
use crate::domain::{
    Action, Campaign, CampaignDraft, CampaignId, CampaignPatch, Email, ListId, NewSubscriber, Status, SubscriberId,
    SubscriberPatch, SubscriberStatus, UserId,
};
use crate::domain::{DeliveryId, MessageId, WebhookId};
use chrono::DateTime;

/// The store under test: the contract the server calls (`Store`), plus
/// the backend's own queue operations, whose answers (the campaigns an
/// outcome settled) the engine's `store::queue::Queue` does not pass on
/// (redb's `enqueue`, a PostgreSQL node's claims), and shorthands the
/// scenarios use (now, the default bounce policy, a webhook's URL and
/// secret). Inherent methods come before `Store`'s, so a shorthand named
/// like an operation stands in for it.
struct Subject {
    store: Store,
    backing: Backing,
}

enum Backing {
    Redb(Redb),
    Pg(Box<crate::store::pg::PgStore>),
}

impl std::ops::Deref for Subject {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Subject {
    async fn step(&self, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step> {
        match &self.backing {
            Backing::Redb(r) => redb_queue::step(r, id, batch, now),
            Backing::Pg(pg) => pg_queue::step(pg, id, batch, now).await,
        }
    }

    async fn settle(&self, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<Vec<Campaign>> {
        match &self.backing {
            Backing::Redb(r) => redb_queue::settle(r, outcomes, now),
            Backing::Pg(pg) => pg_queue::settle(pg, outcomes, now).await,
        }
    }

    /// The messages a clean stop deferred, handed out again: after the
    /// next start on redb (`recover_in_flight`), by the next claim on
    /// PostgreSQL (they were left unleased).
    async fn resume_deferred(&self, id: CampaignId) -> Result<Vec<Job>> {
        match &self.backing {
            Backing::Redb(r) => r.recover_in_flight(id, Utc::now()),
            Backing::Pg(_) => Ok(self.step(id, 100, Utc::now()).await?.jobs),
        }
    }

    async fn create_campaign(&self, user: UserId, draft: CampaignDraft, transport: String) -> Result<Campaign> {
        self.store.create_campaign(user, draft, transport, Utc::now()).await
    }

    async fn act(&self, user: UserId, id: CampaignId, action: Action) -> Result<Campaign> {
        self.store.act(user, id, action, Utc::now()).await
    }

    async fn edit(&self, user: UserId, id: CampaignId, patch: CampaignPatch) -> Result<Campaign> {
        self.store.edit_campaign(user, id, patch, Utc::now()).await
    }

    async fn duplicate_campaign(&self, user: UserId, id: CampaignId) -> Result<Campaign> {
        self.store.duplicate_campaign(user, id, Utc::now()).await
    }

    async fn record_bounce(&self, user: UserId, bounce: Bounce, message: Option<MessageId>) -> Result<BounceReport> {
        self.store
            .record_bounce(user, bounce, message, BouncePolicy::default(), Utc::now())
            .await
    }

    async fn record_report(
        &self,
        user: UserId,
        report_id: Option<&str>,
        bounces: Vec<(Bounce, Option<MessageId>)>,
    ) -> Result<Vec<BounceReport>> {
        self.store
            .record_report(
                user,
                report_id.map(String::from),
                bounces,
                BouncePolicy::default(),
                Utc::now(),
            )
            .await
    }

    /// The first `stop_after` subscribers a scan hands over.
    async fn scan(&self, user: UserId, list: ListId, stop_after: usize) -> Result<Vec<SubscriberId>> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let visit = seen.clone();
        self.store
            .scan_subscribers(
                user,
                list,
                Box::new(move |sub| {
                    let mut seen = visit.lock().unwrap();
                    seen.push(sub.id);
                    Ok(seen.len() < stop_after)
                }),
            )
            .await?;
        Ok(std::mem::take(&mut *seen.lock().unwrap()))
    }

    async fn create_webhook(&self, user: UserId, events: Vec<EventKind>) -> Result<Webhook> {
        let url = "https://hooks.example.com/".to_string();
        self.store
            .create_webhook(user, url, events, "0123456789abcdef".into(), Utc::now())
            .await
    }

    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        room: usize,
        busy: Option<DeliveryId>,
    ) -> Result<(Vec<DueDelivery>, Option<DateTime<Utc>>)> {
        self.store
            .due_deliveries(now, Box::new(move |_| room), Box::new(move |d| Some(d) == busy))
            .await
    }

    async fn upsert(&self, user: UserId, list: ListId, batch: Vec<NewSubscriber>) -> Result<UpsertReport> {
        self.store.upsert_subscribers(user, list, batch).await
    }
}

/// One step of a campaign's send, as the engine sees it on either backend.
struct Step {
    jobs: Vec<Job>,
    progressed: bool,
    next_due: Option<DateTime<Utc>>,
    campaign: Campaign,
}

/// redb's queue: `enqueue` and `record_outcomes`.
mod redb_queue {
    use super::*;

    pub fn step(s: &Redb, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step> {
        let e = s.enqueue(id, batch, now)?;
        Ok(Step {
            jobs: e.jobs,
            progressed: e.progressed,
            next_due: e.next_due,
            campaign: e.campaign,
        })
    }

    pub fn settle(s: &Redb, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<Vec<Campaign>> {
        s.record_outcomes(outcomes, now)
    }
}

/// PostgreSQL's queue: one node per test database claims and settles.
mod pg_queue {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use super::*;
    use crate::store::pg::{Node, PgStore};

    async fn node(s: &PgStore) -> Arc<Node> {
        static NODES: OnceLock<Mutex<HashMap<String, Arc<Node>>>> = OnceLock::new();
        let db = s.database_name();
        if let Some(n) = NODES.get_or_init(Default::default).lock().unwrap().get(&db) {
            return n.clone();
        }
        let ttl = std::time::Duration::from_secs(60);
        let node = Arc::new(s.register_node("conformance", ttl, ttl / 4).await.unwrap());
        NODES.get().unwrap().lock().unwrap().insert(db, node.clone());
        node
    }

    pub async fn step(s: &PgStore, id: CampaignId, batch: usize, now: DateTime<Utc>) -> Result<Step> {
        let c = s.claim(&*node(s).await, id, batch, now).await?;
        Ok(Step {
            jobs: c.jobs,
            progressed: c.progressed,
            next_due: c.next_due,
            campaign: c.campaign,
        })
    }

    pub async fn settle(s: &PgStore, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<Vec<Campaign>> {
        // Outcomes refused (for messages already settled) count nothing,
        // as redb ignores them.
        Ok(s.record_outcomes(&*node(s).await, outcomes, now).await?.campaigns)
    }
}

fn sent(id: CampaignId, jobs: &[Job]) -> Vec<Outcome> {
    outcomes(id, jobs, |_| OutcomeKind::Sent { remote_id: None })
}

fn outcomes(id: CampaignId, jobs: &[Job], kind: impl Fn(&Job) -> OutcomeKind) -> Vec<Outcome> {
    jobs.iter()
        .map(|j| Outcome {
            campaign_id: id,
            subscriber_id: j.subscriber.id,
            attempts: 1,
            kind: kind(j),
        })
        .collect()
}

/// Every message of a sending campaign sent, step by step.
async fn deliver_all(s: &Subject, id: CampaignId) {
    loop {
        let step = s.step(id, 100, Utc::now()).await.unwrap();
        s.settle(&sent(id, &step.jobs), Utc::now()).await.unwrap();
        if !step.progressed && step.jobs.is_empty() {
            return;
        }
    }
}

const ALICE: UserId = UserId::new(1);
const BOB: UserId = UserId::new(2);

fn new(email: &str, status: SubscriberStatus) -> NewSubscriber {
    NewSubscriber {
        email: Email::parse(email).unwrap(),
        name: format!("name of {email}"),
        timezone: None,
        attributes: Default::default(),
        status,
    }
}

async fn lists_belong_to_their_user(s: &Subject) {
    let a1 = s.create_list(ALICE, "  Weekly  ".into()).await.unwrap();
    let a2 = s.create_list(ALICE, "Monthly".into()).await.unwrap();
    let b1 = s.create_list(BOB, "Bob's".into()).await.unwrap();
    assert_eq!(a1.name, "Weekly");
    assert!(a1.id < a2.id);
    let page = s.lists(ALICE, None, 1).await.unwrap();
    assert_eq!(page.items.iter().map(|l| l.id).collect::<Vec<_>>(), [a1.id]);
    let rest = s.lists(ALICE, page.next_after, 10).await.unwrap();
    assert_eq!(rest.items.iter().map(|l| l.id).collect::<Vec<_>>(), [a2.id]);
    assert_eq!(rest.next_after, None);
    assert!(matches!(s.list(ALICE, b1.id).await, Err(StoreError::NotFound)));
    assert!(matches!(s.delete_list(BOB, a1.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        s.create_list(ALICE, "   ".into()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_list(ALICE, "x".repeat(257)).await,
        Err(StoreError::Invalid(_))
    ));
    s.delete_list(ALICE, a1.id).await.unwrap();
    assert!(matches!(s.list(ALICE, a1.id).await, Err(StoreError::NotFound)));
    assert_eq!(s.lists(ALICE, None, 10).await.unwrap().items.len(), 1);
}

async fn segments_belong_to_their_user_and_list(s: &Subject) {
    use crate::domain::SegmentId;
    use crate::domain::segment::{Match, SegmentDraft, SegmentPatch};
    let now = Utc::now();
    let list = s.create_list(ALICE, "Readers".into()).await.unwrap();
    let other = s.create_list(ALICE, "Others".into()).await.unwrap();
    let bobs = s.create_list(BOB, "Bob's".into()).await.unwrap();
    let rules = |json: serde_json::Value| serde_json::from_value(json).unwrap();
    let draft = |list: ListId| SegmentDraft {
        name: " Pro ".into(),
        list_id: list,
        match_: Match::All,
        rules: rules(serde_json::json!([{"field": "attributes.plan", "op": "eq", "value": "pro"}])),
    };
    let pro = s.create_segment(ALICE, draft(list.id), now).await.unwrap();
    assert_eq!(pro.name, "Pro");
    assert_eq!((pro.user_id, pro.list_id), (ALICE, list.id));
    let second = s.create_segment(ALICE, draft(other.id), now).await.unwrap();
    assert!(pro.id < second.id);
    // Another user's list, or their segment, is as missing as none.
    assert!(matches!(
        s.create_segment(ALICE, draft(bobs.id), now).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(s.segment(BOB, pro.id).await, Err(StoreError::NotFound)));
    assert!(matches!(s.delete_segment(BOB, pro.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        s.update_segment(BOB, pro.id, SegmentPatch::default(), now).await,
        Err(StoreError::NotFound)
    ));
    // Bad rules are refused naming the rule, and nothing is stored.
    let mut bad = draft(list.id);
    bad.rules = rules(serde_json::json!([{"field": "status", "op": "gt", "value": "x"}]));
    match s.create_segment(ALICE, bad, now).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "rules[0]"),
        other => panic!("{other:?}"),
    }
    let page = s.segments(ALICE, None, 1).await.unwrap();
    assert_eq!(page.items.iter().map(|x| x.id).collect::<Vec<_>>(), [pro.id]);
    let rest = s.segments(ALICE, page.next_after, 10).await.unwrap();
    assert_eq!(rest.items.iter().map(|x| x.id).collect::<Vec<_>>(), [second.id]);
    assert_eq!(rest.next_after, None);
    assert!(s.segments(BOB, None, 10).await.unwrap().items.is_empty());

    let later = now + Duration::seconds(5);
    let patch = SegmentPatch {
        match_: Some(Match::Any),
        rules: Some(rules(serde_json::json!([{"field": "name", "op": "exists"}]))),
        ..Default::default()
    };
    let edited = s.update_segment(ALICE, pro.id, patch, later).await.unwrap();
    assert_eq!(
        (edited.match_, edited.name.as_str(), edited.list_id),
        (Match::Any, "Pro", list.id)
    );
    assert_eq!(edited.updated_at.timestamp(), later.timestamp());
    assert_eq!(s.segment(ALICE, pro.id).await.unwrap(), edited);
    let blank = SegmentPatch {
        name: Some("  ".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.update_segment(ALICE, pro.id, blank, later).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        s.segment(ALICE, pro.id).await.unwrap(),
        edited,
        "a refused edit changes nothing"
    );

    // A list's segments go with it; the others stay.
    s.delete_list(ALICE, other.id).await.unwrap();
    assert!(matches!(s.segment(ALICE, second.id).await, Err(StoreError::NotFound)));
    s.delete_segment(ALICE, pro.id).await.unwrap();
    assert!(matches!(s.segment(ALICE, pro.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        s.delete_segment(ALICE, SegmentId::new(999_999)).await,
        Err(StoreError::NotFound)
    ));
}

/// A campaign naming a segment sends to the subscribers its rules matched
/// when the send started: later edits to subscribers or rules, new
/// subscribers and steps of any size change nobody's membership.
async fn segment_campaigns_send_to_the_audience_fixed_at_start(s: &Subject) {
    use crate::domain::segment::{Match, SegmentDraft, SegmentPatch};
    use crate::domain::{SegmentId, SubscriberPatch};
    use SubscriberStatus::{Subscribed, Unsubscribed};
    let now = Utc::now();
    let list = s.create_list(ALICE, "Readers".into()).await.unwrap();
    let plan = |i: usize| if i % 2 == 1 { "pro" } else { "free" };
    let batch = (1..=10)
        .map(|i| NewSubscriber {
            attributes: serde_json::from_value(serde_json::json!({"plan": plan(i)})).unwrap(),
            ..new(&format!("s{i}@x.org"), if i == 9 { Unsubscribed } else { Subscribed })
        })
        .collect();
    s.upsert(ALICE, list.id, batch).await.unwrap();
    let ids = s.scan(ALICE, list.id, usize::MAX).await.unwrap();
    let rules = |json: serde_json::Value| serde_json::from_value(json).unwrap();
    let pro = SegmentDraft {
        name: "Pro".into(),
        list_id: list.id,
        match_: Match::All,
        rules: rules(serde_json::json!([{"field": "attributes.plan", "op": "eq", "value": "pro"}])),
    };
    let segment = s.create_segment(ALICE, pro.clone(), now).await.unwrap();
    let draft = CampaignDraft {
        segment_id: Some(segment.id),
        ..CampaignDraft::minimal(list.id)
    };
    let c = s.create_campaign(ALICE, draft.clone(), "log".into()).await.unwrap();
    assert_eq!(c.segment_id, Some(segment.id));
    let c = s.send(ALICE, c.id, Utc::now()).await.unwrap();
    assert_eq!((c.status, c.stats.total, c.stats.pending), (Status::Sending, 5, 5));

    // After the start: a new pro subscriber, a free one turned pro, a pro
    // one turned free, and rules that now match everyone.
    let late = NewSubscriber {
        attributes: serde_json::from_value(serde_json::json!({"plan": "pro"})).unwrap(),
        ..new("late@x.org", Subscribed)
    };
    s.upsert(ALICE, list.id, vec![late]).await.unwrap();
    let attrs = |p: &str| Some(serde_json::from_value(serde_json::json!({"plan": p})).unwrap());
    for (i, p) in [(1, "pro"), (2, "free")] {
        let patch = SubscriberPatch {
            attributes: attrs(p),
            ..Default::default()
        };
        s.update_subscriber(ALICE, list.id, ids[i], patch).await.unwrap();
    }
    let everyone = SegmentPatch {
        rules: Some(rules(
            serde_json::json!([{"field": "email", "op": "contains", "value": "@"}]),
        )),
        ..Default::default()
    };
    s.update_segment(ALICE, segment.id, everyone, Utc::now()).await.unwrap();

    let mut delivered = Vec::new();
    loop {
        let step = s.step(c.id, 2, Utc::now()).await.unwrap();
        delivered.extend(step.jobs.iter().map(|j| j.subscriber.email.to_string()));
        s.settle(&sent(c.id, &step.jobs), Utc::now()).await.unwrap();
        if !step.progressed && step.jobs.is_empty() {
            break;
        }
    }
    // s3 turned free after the start and is still in; s2 turned pro and is
    // not; s9 is in but unsubscribed, so skipped.
    assert_eq!(delivered, ["s1@x.org", "s3@x.org", "s5@x.org", "s7@x.org"]);
    let done = s.campaign(ALICE, c.id).await.unwrap();
    assert_eq!(
        (done.status, done.stats.total, done.stats.sent, done.stats.skipped),
        (Status::Sent, 5, 4, 1)
    );

    // A scheduled campaign holds its segment; a sent one does not.
    let later = CampaignDraft {
        scheduled_at: Some(Utc::now() + chrono::Duration::days(1)),
        ..draft.clone()
    };
    let scheduled = s.create_campaign(ALICE, later, "log".into()).await.unwrap();
    let scheduled = s.send(ALICE, scheduled.id, Utc::now()).await.unwrap();
    assert_eq!(scheduled.status, Status::Scheduled);
    match s.delete_segment(ALICE, segment.id).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains(&scheduled.id.get().to_string()), "{m}"),
        other => panic!("deleted a scheduled campaign's segment: {other:?}"),
    }
    // It fires with the rules as they are then (everyone now: 11, the late
    // subscriber among them).
    let fired = s.act(ALICE, scheduled.id, Action::Fire).await.unwrap();
    assert_eq!((fired.status, fired.stats.total), (Status::Sending, 11));
    s.delete_segment(ALICE, segment.id).await.unwrap();

    // A draft naming a segment that is gone, or another user's, cannot start.
    let gone = s.create_campaign(ALICE, draft.clone(), "log".into()).await.unwrap();
    assert!(matches!(
        s.send(ALICE, gone.id, Utc::now()).await,
        Err(StoreError::Invalid(e)) if e.field == "segment_id"
    ));
    let bobs_list = s.create_list(BOB, "Bob's".into()).await.unwrap();
    let bobs = s
        .create_segment(
            BOB,
            SegmentDraft {
                list_id: bobs_list.id,
                ..pro
            },
            now,
        )
        .await
        .unwrap();
    let foreign = CampaignDraft {
        segment_id: Some(bobs.id),
        ..CampaignDraft::minimal(list.id)
    };
    let foreign = s.create_campaign(ALICE, foreign, "log".into()).await.unwrap();
    assert!(matches!(
        s.send(ALICE, foreign.id, Utc::now()).await,
        Err(StoreError::Invalid(e)) if e.field == "segment_id"
    ));
    assert!(matches!(
        s.delete_segment(ALICE, SegmentId::new(bobs.id.get())).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.campaign(ALICE, foreign.id).await.unwrap().status, Status::Draft);
}

/// Opens and clicks: each counted once per person in the unique counts,
/// every time in the totals; a scanner on arrival, an unknown link, a
/// message or campaign that is not there count nothing; the subscriber's
/// last times move and each first open and first click of a link is an
/// event.
/// Steps campaign `id` at `at` until a step changes nothing, delivering
/// what it queues; returns the jobs.
async fn deliver_at(s: &Subject, id: CampaignId, at: chrono::DateTime<Utc>) -> Vec<crate::domain::message::Job> {
    let mut jobs = Vec::new();
    loop {
        let step = s.step(id, 7, at).await.unwrap();
        s.settle(&sent(id, &step.jobs), at).await.unwrap();
        let done = !step.progressed && step.jobs.is_empty();
        jobs.extend(step.jobs);
        if done {
            return jobs;
        }
    }
}

async fn ab_tests_send_the_test_then_the_winner_once_each(s: &Subject) {
    use crate::domain::ab::{AbTestSetup, Decision, Metric, Variant};
    use crate::domain::tracking::{Action::Open, Hit};
    let list = s.create_list(ALICE, "Readers".into()).await.unwrap();
    let people = (0..100).map(|i| new(&format!("r{i}@x.org"), SubscriberStatus::Subscribed));
    s.upsert(ALICE, list.id, people.collect()).await.unwrap();
    let subject = |t: &str| Variant {
        subject: Some(t.into()),
        ..Variant::default()
    };
    let draft = CampaignDraft {
        track_opens: true,
        ab_test: Some(AbTestSetup {
            variants: vec![subject("A"), subject("B")],
            test_share: 0.2,
            metric: Metric::Opens,
            wait_minutes: 30,
        }),
        ..CampaignDraft::minimal(list.id)
    };
    let c = s.create_campaign(ALICE, draft, "log".into()).await.unwrap();
    let t0 = Utc::now();
    s.send(ALICE, c.id, t0).await.unwrap();

    // The test: 20 recipients, 10 per variant; then the wait.
    let test = deliver_at(s, c.id, t0).await;
    let per = |v| test.iter().filter(|j| j.variant == Some(v)).count();
    assert_eq!((test.len(), per(0), per(1)), (20, 10, 10));
    let waiting = s.campaign(ALICE, c.id).await.unwrap();
    let ab = waiting.ab_test.clone().unwrap();
    assert_eq!(waiting.status, Status::Sending, "the test holds completion back");
    assert_eq!(ab.decides_at, Some(t0 + Duration::minutes(30)));
    assert_eq!(ab.results.iter().map(|r| r.recipients).collect::<Vec<_>>(), [10, 10]);
    // Pausing and resuming in the wait changes nothing.
    s.act(ALICE, c.id, Action::Pause).await.unwrap();
    s.act(ALICE, c.id, Action::Resume).await.unwrap();
    assert!(deliver_at(s, c.id, t0 + Duration::minutes(29)).await.is_empty());

    // Two of B's recipients open, one of A's (twice).
    let (a, b): (Vec<_>, Vec<_>) = test.iter().partition(|j| j.variant == Some(0));
    let open = |j: &crate::domain::message::Job, mins| Hit {
        campaign: c.id,
        subscriber: j.subscriber.id,
        action: Open,
        at: t0 + Duration::minutes(mins),
    };
    let hits = vec![open(a[0], 1), open(a[0], 2), open(b[0], 3), open(b[1], 4)];
    assert_eq!(s.record_hits(hits).await.unwrap(), 4);
    let ab = s.campaign(ALICE, c.id).await.unwrap().ab_test.unwrap();
    assert_eq!(
        ab.results.iter().map(|r| (r.opened, r.rate)).collect::<Vec<_>>(),
        [(1, 0.1), (2, 0.2)]
    );

    // After the wait, B wins and the other 80 get it, none twice.
    let rest = deliver_at(s, c.id, t0 + Duration::minutes(30)).await;
    assert_eq!(rest.len(), 80);
    assert!(rest.iter().all(|j| j.variant == Some(1)));
    let mut everyone: Vec<_> = test.iter().chain(&rest).map(|j| j.subscriber.id).collect();
    everyone.sort();
    everyone.dedup();
    assert_eq!(everyone.len(), 100);
    let done = s.campaign(ALICE, c.id).await.unwrap();
    let ab = done.ab_test.unwrap();
    assert_eq!((ab.winner, ab.decided_by), (Some(1), Some(Decision::Metric)));
    assert_eq!((done.status, done.stats.sent), (Status::Sent, 100));

    // Picked by choice mid-test: the test members not yet reached get the
    // winner with the rest; still one message each.
    let draft = CampaignDraft {
        ab_test: Some(AbTestSetup {
            variants: vec![subject("A"), subject("B"), subject("C")],
            test_share: 0.5,
            metric: Metric::Clicks,
            wait_minutes: 1,
        }),
        track_clicks: true,
        ..CampaignDraft::minimal(list.id)
    };
    let c = s.create_campaign(ALICE, draft, "log".into()).await.unwrap();
    s.send(ALICE, c.id, Utc::now()).await.unwrap();
    let first = s.step(c.id, 30, Utc::now()).await.unwrap();
    s.settle(&sent(c.id, &first.jobs), Utc::now()).await.unwrap();
    assert!(matches!(
        s.act(ALICE, c.id, Action::PickWinner { variant: 3 }).await,
        Err(StoreError::Invalid(_))
    ));
    let picked = s.act(ALICE, c.id, Action::PickWinner { variant: 2 }).await.unwrap();
    assert_eq!(picked.ab_test.unwrap().decided_by, Some(Decision::Choice));
    let rest = deliver_at(s, c.id, Utc::now()).await;
    assert!(rest.iter().all(|j| j.variant == Some(2)));
    assert_eq!(first.jobs.len() + rest.len(), 100);
    assert_eq!(s.campaign(ALICE, c.id).await.unwrap().status, Status::Sent);

    // Cancelled during the test: everyone left gets a cancelled message.
    let c = s
        .create_campaign(
            ALICE,
            CampaignDraft {
                ab_test: Some(AbTestSetup {
                    variants: vec![subject("A"), subject("B")],
                    test_share: 0.1,
                    metric: Metric::Opens,
                    wait_minutes: 1,
                }),
                track_opens: true,
                ..CampaignDraft::minimal(list.id)
            },
            "log".into(),
        )
        .await
        .unwrap();
    s.send(ALICE, c.id, Utc::now()).await.unwrap();
    let first = s.step(c.id, 5, Utc::now()).await.unwrap();
    s.act(ALICE, c.id, Action::Cancel).await.unwrap();
    s.settle(&sent(c.id, &first.jobs), Utc::now()).await.unwrap();
    assert!(deliver_at(s, c.id, Utc::now()).await.is_empty());
    let cancelled = s.campaign(ALICE, c.id).await.unwrap();
    assert_eq!(
        cancelled.stats.finished(),
        100,
        "every recipient is accounted for: {:?}",
        cancelled.stats
    );
}

async fn warmup_days_hand_out_their_cap_once(s: &Subject) {
    let day: chrono::NaiveDate = "2026-06-01".parse().unwrap();
    let next = day.succ_opt().unwrap();
    let take = |t: &str, d, want| s.take_warmup(t.into(), d, 10, want);
    assert_eq!(take("a", day, 4).await.unwrap(), 4);
    assert_eq!(take("a", day, 4).await.unwrap(), 4);
    assert_eq!(take("a", day, 4).await.unwrap(), 2, "the cap's last two");
    assert_eq!(take("a", day, 4).await.unwrap(), 0);
    s.give_back_warmup("a".into(), day, 3).await.unwrap();
    assert_eq!(s.warmup_used("a".into(), day).await.unwrap(), 7);
    assert_eq!(take("a", day, 5).await.unwrap(), 3);
    assert_eq!(take("a", next, 5).await.unwrap(), 5, "a new day");
    assert_eq!(take("b", day, 5).await.unwrap(), 5, "another transport");
    s.give_back_warmup("c".into(), day, 3).await.unwrap();
    assert_eq!(s.warmup_used("c".into(), day).await.unwrap(), 0, "never below nothing");
}

async fn opens_and_clicks_count_once_per_person(s: &Subject) {
    use crate::domain::tracking::{Action::*, Hit};
    use SubscriberStatus::Subscribed;
    let list = s.create_list(ALICE, "Readers".into()).await.unwrap();
    s.upsert(
        ALICE,
        list.id,
        vec![new("a@x.org", Subscribed), new("b@x.org", Subscribed)],
    )
    .await
    .unwrap();
    let ids = s.scan(ALICE, list.id, usize::MAX).await.unwrap();
    let (a, b) = (ids[0], ids[1]);
    let hook = s
        .create_webhook(ALICE, vec![EventKind::MessageOpened, EventKind::MessageClicked])
        .await
        .unwrap();
    let draft = CampaignDraft {
        html: r#"<a href="https://one.example/">1</a> <a href="https://two.example/?a=1&amp;b=2">2</a>"#.into(),
        track_opens: true,
        track_clicks: true,
        ..CampaignDraft::minimal(list.id)
    };
    let c = s.create_campaign(ALICE, draft, "log".into()).await.unwrap();
    s.send(ALICE, c.id, Utc::now()).await.unwrap();
    deliver_all(s, c.id).await;
    let later = |secs| Utc::now() + Duration::seconds(secs);
    let hit = |subscriber, action, at| Hit {
        campaign: c.id,
        subscriber,
        action,
        at,
    };
    let hits = vec![
        hit(a, Open, Utc::now()), // on arrival: a scanner
        hit(a, Open, later(5)),
        hit(a, Open, later(6)),
        hit(a, Click(1), later(10)),
        hit(a, Click(1), later(11)),
        hit(b, Click(0), later(12)), // images off: the click is an open
        hit(b, Click(7), later(13)), // no such link
        hit(SubscriberId::new(999_999), Open, later(14)),
        Hit {
            campaign: CampaignId::new(999_999),
            ..hit(a, Open, later(14))
        },
    ];
    assert_eq!(s.record_hits(hits).await.unwrap(), 5);
    let stats = s.campaign(ALICE, c.id).await.unwrap().stats;
    assert_eq!(
        (stats.opened, stats.opens, stats.clicked, stats.clicks),
        (2, 2, 2, 3),
        "{stats:?}"
    );
    let (_, links) = s.link_clicks(ALICE, c.id).await.unwrap();
    assert_eq!(
        links.iter().map(|l| (l.clicks, l.unique)).collect::<Vec<_>>(),
        [(1, 1), (2, 1)]
    );
    assert!(matches!(s.link_clicks(BOB, c.id).await, Err(StoreError::NotFound)));
    let sub_a = s.subscriber(ALICE, list.id, a).await.unwrap();
    assert!(sub_a.last_opened_at.is_some() && sub_a.last_clicked_at.is_some());
    assert!(sub_a.last_clicked_at > sub_a.last_opened_at.map(|t| t - Duration::seconds(1)));
    let page = s.messages(ALICE, c.id, None, None, 10).await.unwrap();
    let engagement = page.items[0].engagement.clone().unwrap();
    assert_eq!((engagement.opens, engagement.clicks, engagement.links), (2, 2, vec![1]));
    // A later batch counts on from there.
    assert_eq!(s.record_hits(vec![hit(b, Open, later(20))]).await.unwrap(), 1);
    let stats = s.campaign(ALICE, c.id).await.unwrap().stats;
    assert_eq!((stats.opened, stats.opens), (2, 3), "b had opened by clicking");
    let events = s.deliveries(ALICE, hook.id, None, 100).await.unwrap().items;
    let kinds: Vec<_> = events.iter().map(|d| d.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["message.opened", "message.clicked", "message.opened", "message.clicked"],
        "first open and first click of each link, per message"
    );
    assert!(events[3].body.contains("https://one.example/"), "{}", events[3].body);
}

async fn upserts_create_update_and_keep_unsubscribes(s: &Subject) {
    use SubscriberStatus::*;
    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    let first = s
        .upsert(
            ALICE,
            list.id,
            vec![
                new("a@x.org", Subscribed),
                new("b@x.org", Unsubscribed),
                new("a@x.org", Subscribed),
            ],
        )
        .await
        .unwrap();
    assert_eq!((first.created, first.updated, first.kept_unsubscribed), (2, 1, 0));
    assert_eq!(
        first.subscribers[0].id, first.subscribers[2].id,
        "one address, one subscriber"
    );
    assert_eq!(s.list(ALICE, list.id).await.unwrap().subscriber_count, 2);

    let again = s
        .upsert(
            ALICE,
            list.id,
            vec![new("b@x.org", Subscribed), new("c@x.org", Bounced)],
        )
        .await
        .unwrap();
    assert_eq!((again.created, again.updated, again.kept_unsubscribed), (1, 1, 1));
    let b = s.subscriber(ALICE, list.id, again.subscribers[0].id).await.unwrap();
    assert_eq!(b.status, Unsubscribed, "an import never re-subscribes");
    assert_eq!(s.list(ALICE, list.id).await.unwrap().subscriber_count, 3);

    let patch = SubscriberPatch {
        name: None,
        timezone: Some("Europe/Paris".into()),
        attributes: None,
        status: Some(Subscribed),
    };
    let b = s.update_subscriber(ALICE, list.id, b.id, patch.clone()).await.unwrap();
    assert_eq!((b.status, b.timezone.as_deref()), (Subscribed, Some("Europe/Paris")));
    assert_eq!(b.status_changed.as_ref().map(|c| c.by.as_str()), Some("api"));
    assert_eq!(s.subscriber(ALICE, list.id, b.id).await.unwrap(), b);

    let missing = SubscriberId::new(b.id.get() + 1_000);
    assert!(matches!(
        s.subscriber(ALICE, list.id, missing).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.update_subscriber(ALICE, list.id, missing, patch.clone()).await,
        Err(StoreError::NotFound)
    ));
    // Another user's list: as missing as a list that never was.
    assert!(matches!(
        s.subscriber(BOB, list.id, b.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.upsert(BOB, list.id, vec![new("d@x.org", Subscribed)]).await,
        Err(StoreError::NotFound)
    ));
    let bad = SubscriberPatch {
        timezone: Some("Mars/Base".into()),
        ..patch
    };
    assert!(matches!(
        s.update_subscriber(ALICE, list.id, b.id, bad).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn subscriber_pages_and_status_filters(s: &Subject) {
    use SubscriberStatus::*;
    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    let batch = (0..12)
        .map(|i| {
            new(
                &format!("s{i}@x.org"),
                if i % 4 == 0 { Unsubscribed } else { Subscribed },
            )
        })
        .collect();
    let stored = s.upsert(ALICE, list.id, batch).await.unwrap().subscribers;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.subscribers(ALICE, list.id, None, after, 5).await.unwrap();
        seen.extend(page.items.iter().map(|s| s.id));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen, stored.iter().map(|s| s.id).collect::<Vec<_>>());
    let unsubscribed = s
        .subscribers(ALICE, list.id, Some(Unsubscribed), None, 10)
        .await
        .unwrap();
    let expected: Vec<_> = stored
        .iter()
        .filter(|s| s.status == Unsubscribed)
        .map(|s| s.id)
        .collect();
    assert_eq!(unsubscribed.items.iter().map(|s| s.id).collect::<Vec<_>>(), expected);
    assert_eq!(unsubscribed.next_after, None);
    let two = s
        .subscribers(ALICE, list.id, Some(Unsubscribed), None, 2)
        .await
        .unwrap();
    assert_eq!(two.items.len(), 2);
    assert_eq!(
        two.next_after,
        Some(expected[1].get()),
        "the cursor is the last row looked at"
    );
    assert!(matches!(
        s.subscribers(BOB, list.id, None, None, 10).await,
        Err(StoreError::NotFound)
    ));
    let all: Vec<_> = stored.iter().map(|s| s.id).collect();
    assert_eq!(s.scan(ALICE, list.id, usize::MAX).await.unwrap(), all);
    assert_eq!(s.scan(ALICE, list.id, 3).await.unwrap(), all[..3]);
    assert!(matches!(s.scan(BOB, list.id, 1).await, Err(StoreError::NotFound)));
}

async fn users_and_their_keys(s: &Subject) {
    assert_eq!(s.user_count().await.unwrap(), 0);
    let (first, key1) = s.create_user_as("Ann@Example.org".into(), false).await.unwrap();
    assert!(first.admin, "the first user is the admin");
    let (second, key2) = s.create_user_as("bo@example.org".into(), false).await.unwrap();
    assert!(!second.admin);
    assert!(matches!(
        s.create_user_as("ann@example.org".into(), false).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_user_as("nope".into(), false).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.user_by_key(key1.clone()).await.unwrap(), Some(first.clone()));
    assert_eq!(s.user_by_key("posta_unknown".into()).await.unwrap(), None);

    let (_, key3) = s.new_key("ANN@example.org".into()).await.unwrap();
    let (key4, info4) = s.issue_key(first.id).await.unwrap();
    let keys = s.keys(first.id).await.unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys.last().map(|k| k.id), Some(info4.id));
    assert!(
        keys.iter()
            .all(|k| k.hint.starts_with("posta_") && key1.starts_with("posta_"))
    );
    s.revoke_key(first.id, info4.id).await.unwrap();
    assert_eq!(s.user_by_key(key4.clone()).await.unwrap(), None);
    assert!(matches!(
        s.revoke_key(second.id, keys[0].id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.revoke(key3.clone()).await.unwrap(), 1);
    assert_eq!(s.revoke("ann@example.org".into()).await.unwrap(), 1, "the one key left");
    assert_eq!(s.user_by_key(key1.clone()).await.unwrap(), None);
    assert_eq!(s.user_by_key(key2.clone()).await.unwrap(), Some(second.clone()));
    assert!(matches!(
        s.revoke("who@example.org".into()).await,
        Err(StoreError::NotFound)
    ));

    let page = s.users(None, 1).await.unwrap();
    assert_eq!(page.items, std::slice::from_ref(&first));
    assert_eq!(
        s.users(page.next_after, 5).await.unwrap().items,
        std::slice::from_ref(&second)
    );
    assert_eq!(s.user(second.id).await.unwrap(), second);
    assert!(matches!(s.user(UserId::new(999)).await, Err(StoreError::NotFound)));
    assert!(matches!(s.keys(UserId::new(999)).await, Err(StoreError::NotFound)));
    assert_eq!(s.user_count().await.unwrap(), 2);
}

async fn sender_domains_per_user(s: &Subject) {
    let (ann, _) = s.create_user_as("ann@example.org".into(), false).await.unwrap();
    let (bo, _) = s.create_user_as("bo@example.org".into(), false).await.unwrap();
    let at = |secs| chrono::DateTime::from_timestamp(secs, 0).unwrap();
    let first = s.add_domain(ann.id, "example.org".into(), at(1_000)).await.unwrap();
    assert_eq!(first.added_at, at(1_000));
    assert_eq!(
        s.add_domain(ann.id, "example.org".into(), at(2_000)).await.unwrap(),
        first,
        "the first grant stays"
    );
    s.add_domain(ann.id, "a.example".into(), at(3_000)).await.unwrap();
    s.add_domain(bo.id, "example.org".into(), at(4_000)).await.unwrap();
    let names = async |u| {
        s.domains(u)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.domain)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(ann.id).await, ["a.example", "example.org"]);
    assert_eq!(names(bo.id).await, ["example.org"], "one domain may be several users'");
    s.remove_domain(ann.id, "example.org".into()).await.unwrap();
    assert_eq!(names(ann.id).await, ["a.example"]);
    assert_eq!(names(bo.id).await, ["example.org"]);
    assert!(matches!(
        s.remove_domain(ann.id, "example.org".into()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(s.domains(UserId::new(999)).await, Err(StoreError::NotFound)));
    assert!(matches!(
        s.add_domain(UserId::new(999), "x.org".into(), at(1)).await,
        Err(StoreError::NotFound)
    ));
}

fn suppression(email: &str, reason: SuppressionReason, detail: Option<&str>, minutes_ago: i64) -> Suppression {
    Suppression {
        email: Email::parse(email).unwrap().suppression_key(),
        reason,
        detail: detail.map(str::to_string),
        created_at: Utc::now() - Duration::minutes(minutes_ago),
    }
}

async fn suppression_lists(s: &Subject) {
    use SuppressionReason::*;
    let first = suppression("b@x.org", Manual, None, 10);
    let report = s
        .suppress(
            ALICE,
            [
                first.clone(),
                suppression("a@x.org", Bounced, Some("550"), 5),
                suppression("c@x.org", Manual, None, 5),
            ]
            .to_vec(),
        )
        .await
        .unwrap();
    assert_eq!((report.added, report.updated, report.unchanged), (3, 0, 0));
    let again = s
        .suppress(
            ALICE,
            [
                suppression("b@x.org", Complained, None, 0),
                suppression("c@x.org", Manual, None, 0),
            ]
            .to_vec(),
        )
        .await
        .unwrap();
    assert_eq!((again.added, again.updated, again.unchanged), (0, 1, 1));
    let b = s.suppression(ALICE, "B@X.org".into()).await.unwrap();
    assert_eq!(b.reason, Complained);
    assert_eq!(b.created_at, first.created_at, "since when is kept");
    assert!(matches!(
        s.suppression(BOB, "b@x.org".into()).await,
        Err(StoreError::NotFound)
    ));

    let page = s.suppressions(ALICE, None, None, 2).await.unwrap();
    let emails: Vec<&str> = page.items.iter().map(|s| s.email.as_str()).collect();
    assert_eq!(emails, ["a@x.org", "b@x.org"]);
    assert_eq!(page.next_after.as_deref(), Some("b@x.org"));
    let rest = s
        .suppressions(ALICE, None, page.next_after.as_deref().map(String::from), 2)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_after, None);
    let manual = s.suppressions(ALICE, Some(Manual), None, 10).await.unwrap();
    assert_eq!(
        manual.items.iter().map(|s| s.email.as_str()).collect::<Vec<_>>(),
        ["c@x.org"]
    );

    s.unsuppress(ALICE, "A@x.org".into()).await.unwrap();
    assert!(matches!(
        s.unsuppress(ALICE, "a@x.org".into()).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.suppressions(ALICE, None, None, 10).await.unwrap().items.len(), 2);
}

async fn campaigns_and_their_lifecycle(s: &Subject) {
    use SubscriberStatus::Subscribed;
    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    let bobs = s.create_list(BOB, "b".into()).await.unwrap();
    s.upsert(
        ALICE,
        list.id,
        vec![new("a@x.org", Subscribed), new("b@x.org", Subscribed)],
    )
    .await
    .unwrap();
    let draft = CampaignDraft::minimal(list.id);
    let c = s.create_campaign(ALICE, draft.clone(), "log".into()).await.unwrap();
    assert_eq!(c.status, Status::Draft);
    assert!(matches!(
        s.create_campaign(ALICE, CampaignDraft::minimal(bobs.id), "log".into()).await,
        Err(StoreError::Invalid(e)) if e.field == "list_id"
    ));
    let bad = CampaignDraft {
        subject: String::new(),
        ..draft.clone()
    };
    assert!(matches!(
        s.create_campaign(ALICE, bad, "log".into()).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.campaign(ALICE, c.id).await.unwrap(), c);
    assert!(matches!(s.campaign(BOB, c.id).await, Err(StoreError::NotFound)));
    assert_eq!(s.campaign_by_id(c.id).await.unwrap(), c);

    let edited = s
        .edit(
            ALICE,
            c.id,
            CampaignPatch {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(edited.name, "renamed");
    let invalid = s
        .edit(
            ALICE,
            c.id,
            CampaignPatch {
                subject: Some(String::new()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(invalid, Err(StoreError::Invalid(_))));
    assert_eq!(s.campaign(ALICE, c.id).await.unwrap().name, "renamed", "nothing stored");
    assert!(matches!(
        s.edit(BOB, c.id, CampaignPatch::default()).await,
        Err(StoreError::NotFound)
    ));

    let copy = s.duplicate_campaign(ALICE, c.id).await.unwrap();
    assert!(copy.id > c.id);
    assert_eq!(copy.status, Status::Draft);
    let later = Utc::now() + Duration::hours(1);
    s.edit(
        ALICE,
        copy.id,
        CampaignPatch {
            scheduled_at: Some(Some(later)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let scheduled = s.send(ALICE, copy.id, Utc::now()).await.unwrap();
    assert_eq!(scheduled.status, Status::Scheduled);

    let sending = s.send(ALICE, c.id, Utc::now()).await.unwrap();
    assert_eq!(sending.status, Status::Sending);
    assert_eq!(
        (sending.stats.total, sending.stats.pending),
        (2, 2),
        "recipients fixed at send"
    );
    assert!(sending.started_at.is_some());
    assert!(matches!(
        s.edit(ALICE, c.id, CampaignPatch::default()).await,
        Err(StoreError::Transition(_))
    ));
    assert!(matches!(
        s.delete_campaign(ALICE, c.id).await,
        Err(StoreError::Transition(_))
    ));
    let paused = s.act(ALICE, c.id, Action::Pause).await.unwrap();
    assert_eq!(paused.status, Status::Paused);

    let mut active: Vec<CampaignId> = s.active_campaigns().await.unwrap().iter().map(|c| c.id).collect();
    active.sort();
    assert_eq!(active, [c.id, copy.id]);
    let page = s.campaigns(ALICE, None, None, 1).await.unwrap();
    assert_eq!(page.items.iter().map(|c| c.id).collect::<Vec<_>>(), [c.id]);
    let rest = s.campaigns(ALICE, None, page.next_after, 5).await.unwrap();
    assert_eq!(rest.items.iter().map(|c| c.id).collect::<Vec<_>>(), [copy.id]);
    let only = s.campaigns(ALICE, Some(Status::Scheduled), None, 5).await.unwrap();
    assert_eq!(only.items.iter().map(|c| c.id).collect::<Vec<_>>(), [copy.id]);
    assert!(s.campaigns(BOB, None, None, 5).await.unwrap().items.is_empty());

    s.act(ALICE, copy.id, Action::Cancel).await.unwrap();
    s.delete_campaign(ALICE, copy.id).await.unwrap();
    assert!(matches!(s.campaign(ALICE, copy.id).await, Err(StoreError::NotFound)));
    assert!(matches!(s.delete_campaign(BOB, c.id).await, Err(StoreError::NotFound)));
}

fn bounce(email: &str, kind: BounceType) -> Bounce {
    Bounce {
        email: email.into(),
        kind,
        reason: Some("550 gone".into()),
        message_id: None,
        at: Utc::now(),
    }
}

async fn bounces_mark_messages_and_suppress(s: &Subject) {
    use SubscriberStatus::Subscribed;
    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    let subs = s
        .upsert(
            ALICE,
            list.id,
            (0..3).map(|i| new(&format!("r{i}@x.org"), Subscribed)).collect(),
        )
        .await
        .unwrap()
        .subscribers;
    let c = s
        .create_campaign(ALICE, CampaignDraft::minimal(list.id), "log".into())
        .await
        .unwrap();
    s.send(ALICE, c.id, Utc::now()).await.unwrap();
    deliver_all(s, c.id).await;
    assert_eq!(s.campaign(ALICE, c.id).await.unwrap().status, Status::Sent);
    let page = s.messages(ALICE, c.id, None, None, 2).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.next_after, Some(subs[1].id.get()));
    let rest = s.messages(ALICE, c.id, None, page.next_after, 2).await.unwrap();
    assert_eq!((rest.items.len(), rest.next_after), (1, None));
    assert!(
        s.messages(ALICE, c.id, Some(MessageStatus::Failed), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.messages(ALICE, c.id, Some(MessageStatus::Sent), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    assert!(matches!(
        s.messages(BOB, c.id, None, None, 10).await,
        Err(StoreError::NotFound)
    ));

    let of = |i: usize| MessageId {
        campaign: c.id,
        subscriber: subs[i].id,
    };
    let hard = s
        .record_bounce(ALICE, bounce("ignored@x.org", BounceType::Hard), Some(of(0)))
        .await
        .unwrap();
    assert!(!hard.duplicate);
    assert_eq!(hard.bounce.email, "r0@x.org", "the message's address");
    assert_eq!(hard.suppressed, Some(SuppressionReason::Bounced));
    let again = s
        .record_bounce(ALICE, bounce("r0@x.org", BounceType::Hard), Some(of(0)))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(s.campaign(ALICE, c.id).await.unwrap().stats.bounced, 1);
    let m0 = &s.messages(ALICE, c.id, None, None, 1).await.unwrap().items[0];
    assert_eq!(m0.bounces.len(), 1);
    assert!(matches!(
        s.record_bounce(BOB, bounce("r1@x.org", BounceType::Hard), Some(of(1)))
            .await,
        Err(StoreError::NotFound)
    ));

    let soft = s
        .record_bounce(ALICE, bounce("Soft@X.org", BounceType::Soft), None)
        .await
        .unwrap();
    assert_eq!((soft.soft_in_window, soft.suppressed), (Some(1), None));
    assert_eq!(soft.bounce.email, "soft@x.org");

    let report = vec![
        (bounce("r1@x.org", BounceType::Complaint), Some(of(1))),
        (bounce("soft@x.org", BounceType::Soft), None),
    ];
    let first = s.record_report(ALICE, Some("<r1@mx>"), report.clone()).await.unwrap();
    assert!(first.iter().all(|r| !r.duplicate));
    assert_eq!(first[0].suppressed, Some(SuppressionReason::Complained));
    assert_eq!(first[1].soft_in_window, Some(2));
    let twice = s.record_report(ALICE, Some("<r1@mx>"), report).await.unwrap();
    assert!(twice.iter().all(|r| r.duplicate));
    assert_eq!(twice[0].suppressed, Some(SuppressionReason::Complained));

    let all = s.bounces(ALICE, None, 10).await.unwrap();
    let order: Vec<(&str, BounceType)> = all.items.iter().map(|b| (b.email.as_str(), b.kind)).collect();
    assert_eq!(
        order,
        [
            ("r0@x.org", BounceType::Hard),
            ("r1@x.org", BounceType::Complaint),
            ("soft@x.org", BounceType::Soft),
            ("soft@x.org", BounceType::Soft),
        ]
    );
    let one = s.bounces(ALICE, None, 3).await.unwrap();
    let after = one.next_after.clone().expect("a cursor");
    assert_eq!(after.0, "soft@x.org");
    let last = s
        .bounces(ALICE, Some((after.0.as_str().to_owned(), after.1)), 3)
        .await
        .unwrap();
    assert_eq!((last.items.len(), last.next_after), (1, None));
    assert!(s.bounces(BOB, None, 10).await.unwrap().items.is_empty());

    let key = s.secret("unsubscribe").await.unwrap();
    assert_eq!(s.secret("unsubscribe").await.unwrap(), key);
    assert_ne!(s.secret("other").await.unwrap(), key);
}

/// Each webhook has a queue of its own: a backlog on one does not hold up
/// another, a failed attempt waits for its retry, a deleted webhook's
/// queue is gone.
async fn webhook_outboxes(s: &Subject) {
    use SubscriberStatus::{Subscribed, Unsubscribed};
    let hook_a = s
        .create_webhook(ALICE, vec![EventKind::SubscriberUnsubscribed])
        .await
        .unwrap();
    let hook_b = s
        .create_webhook(BOB, vec![EventKind::SubscriberUnsubscribed])
        .await
        .unwrap();
    let ids: Vec<WebhookId> = s.webhooks(ALICE).await.unwrap().iter().map(|w| w.id).collect();
    assert_eq!(ids, [hook_a.id]);
    let leave = async |user: UserId, n: usize| {
        let list = s.create_list(user, "l".into()).await.unwrap();
        let subs = s
            .upsert(
                user,
                list.id,
                (0..n).map(|i| new(&format!("w{i}@x.org"), Subscribed)).collect(),
            )
            .await
            .unwrap()
            .subscribers;
        for sub in subs {
            let patch = SubscriberPatch {
                name: None,
                timezone: None,
                attributes: None,
                status: Some(Unsubscribed),
            };
            s.update_subscriber(user, list.id, sub.id, patch).await.unwrap();
        }
    };
    leave(ALICE, 4).await;
    leave(BOB, 1).await;
    let now = Utc::now() + Duration::seconds(1);
    let (due, _) = s.due_deliveries(now, 2, None).await.unwrap();
    let count = |due: &[DueDelivery], id| due.iter().filter(|d| d.webhook.id == id).count();
    assert_eq!((count(&due, hook_a.id), count(&due, hook_b.id)), (2, 1));
    let first = due.iter().find(|d| d.webhook.id == hook_a.id).unwrap().delivery.clone();
    let (again, _) = s.due_deliveries(now, 10, Some(first.id)).await.unwrap();
    assert!(
        again.iter().all(|d| d.delivery.id != first.id),
        "under way: passed over"
    );

    let retry_at = now + Duration::seconds(10);
    let attempt = Attempt {
        at: now,
        status: Some(500),
        error: Some("HTTP 500".into()),
        duration_ms: 1,
    };
    s.finish_attempt(hook_a.id, first.id, attempt.clone(), false, Some(retry_at))
        .await
        .unwrap();
    let (due_now, next) = s.due_deliveries(now, 10, None).await.unwrap();
    assert!(
        due_now.iter().all(|d| d.delivery.id != first.id),
        "not before its retry"
    );
    assert!(next.is_some_and(|n| n <= retry_at));
    let page = s.deliveries(ALICE, hook_a.id, None, 10).await.unwrap();
    let stored = page.items.iter().find(|d| d.id == first.id).unwrap();
    assert_eq!((stored.state, stored.attempts.len()), (DeliveryState::Pending, 1));
    assert!(matches!(
        s.deliveries(BOB, hook_a.id, None, 10).await,
        Err(StoreError::NotFound)
    ));

    let (at_retry, _) = s.due_deliveries(retry_at, 10, None).await.unwrap();
    assert!(at_retry.iter().any(|d| d.delivery.id == first.id));
    s.finish_attempt(hook_a.id, first.id, attempt, true, None)
        .await
        .unwrap();
    let done = s.deliveries(ALICE, hook_a.id, None, 10).await.unwrap();
    let stored = done.items.iter().find(|d| d.id == first.id).unwrap();
    assert_eq!((stored.state, stored.attempts.len()), (DeliveryState::Delivered, 2));
    // Another of hook A's deliveries gives up after one attempt: failed
    // for good, never due again.
    let second = due
        .iter()
        .find(|d| d.webhook.id == hook_a.id && d.delivery.id != first.id)
        .unwrap()
        .delivery
        .clone();
    let refused = Attempt {
        at: now,
        status: Some(410),
        error: Some("HTTP 410".into()),
        duration_ms: 1,
    };
    s.finish_attempt(hook_a.id, second.id, refused, false, None)
        .await
        .unwrap();
    let page = s.deliveries(ALICE, hook_a.id, None, 10).await.unwrap();
    let stored = page.items.iter().find(|d| d.id == second.id).unwrap();
    assert_eq!((stored.state, stored.attempts.len()), (DeliveryState::Failed, 1));
    assert_eq!(stored.next_attempt_at, None);
    let (later, _) = s.due_deliveries(retry_at + Duration::hours(1), 10, None).await.unwrap();
    assert!(
        later.iter().all(|d| d.delivery.id != second.id),
        "a failed delivery is not due again"
    );
    assert_eq!(s.prune_deliveries(Utc::now() + Duration::hours(1)).await.unwrap(), 2);

    s.delete_webhook(ALICE, hook_a.id).await.unwrap();
    assert!(matches!(
        s.delete_webhook(ALICE, hook_a.id).await,
        Err(StoreError::NotFound)
    ));
    let (left, _) = s.due_deliveries(retry_at + Duration::hours(1), 10, None).await.unwrap();
    assert!(left.iter().all(|d| d.webhook.id == hook_b.id));
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A local-time campaign: each subscriber's message comes due when their
/// wall clock shows the campaign's time; until then they wait as due
/// entries, released in due order.
async fn local_time_sends_release_in_due_order(s: &Subject) {
    use SubscriberStatus::{Subscribed, Unsubscribed};
    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    let with_tz = |email: &str, tz: Option<&str>, status| NewSubscriber {
        timezone: tz.map(str::to_string),
        ..new(email, status)
    };
    let subs = s
        .upsert(
            ALICE,
            list.id,
            vec![
                with_tz("kiritimati@x.org", Some("Pacific/Kiritimati"), Subscribed),
                with_tz("pago@x.org", Some("Pacific/Pago_Pago"), Subscribed),
                with_tz("utc@x.org", None, Subscribed),
                with_tz("gone@x.org", Some("Pacific/Kiritimati"), Unsubscribed),
            ],
        )
        .await
        .unwrap()
        .subscribers;
    let draft = async || s.create_campaign(ALICE, local_draft(list.id), "log".into()).await;
    let c = draft().await.unwrap();
    // 12:00 in Kiritimati (UTC+14) is 22:00 UTC the day before: sent
    // earlier, the campaign waits as scheduled.
    let early = at("2029-12-31T21:00:00Z");
    assert_eq!(s.send(ALICE, c.id, early).await.unwrap().status, Status::Scheduled);
    s.act(ALICE, c.id, Action::Cancel).await.unwrap();
    let c = draft().await.unwrap();
    let now = at("2030-01-01T00:00:00Z");
    assert_eq!(s.send(ALICE, c.id, now).await.unwrap().status, Status::Sending);

    let first = s.step(c.id, 100, now).await.unwrap();
    let ids = |jobs: &[Job]| jobs.iter().map(|j| j.subscriber.id).collect::<Vec<_>>();
    assert_eq!(ids(&first.jobs), [subs[0].id], "only Kiritimati's time has come");
    assert_eq!(first.campaign.stats.skipped, 1);
    assert_eq!(first.campaign.stats.pending, 2, "two wait for their time");
    s.settle(&sent(c.id, &first.jobs), now).await.unwrap();
    let idle = s.step(c.id, 100, now).await.unwrap();
    assert!(idle.jobs.is_empty() && !idle.progressed);
    assert_eq!(idle.next_due, Some(at("2030-01-01T12:00:00Z")), "no timezone: UTC");

    let noon = at("2030-01-01T12:00:00Z");
    let second = s.step(c.id, 100, noon).await.unwrap();
    assert_eq!(ids(&second.jobs), [subs[2].id]);
    s.settle(&sent(c.id, &second.jobs), noon).await.unwrap();
    let idle = s.step(c.id, 100, noon).await.unwrap();
    // 12:00 in Pago Pago (UTC-11) is 23:00 UTC.
    assert_eq!(idle.next_due, Some(at("2030-01-01T23:00:00Z")));
    let late = at("2030-01-01T23:00:00Z");
    let third = s.step(c.id, 100, late).await.unwrap();
    assert_eq!(ids(&third.jobs), [subs[1].id]);
    let done = s.settle(&sent(c.id, &third.jobs), late).await.unwrap();
    assert_eq!(done[0].status, Status::Sent);
    assert_eq!(
        (done[0].stats.sent, done[0].stats.skipped, done[0].stats.pending),
        (3, 1, 0)
    );
    let due_at = async |i: usize| s.messages(ALICE, c.id, None, None, 10).await.unwrap().items[i].due_at;
    assert_eq!(due_at(1).await, Some(at("2030-01-01T23:00:00Z")));
}

/// Due at 12:00 on each subscriber's wall clock, 1 January 2030.
fn local_draft(list: ListId) -> CampaignDraft {
    CampaignDraft {
        send_at_local_time: true,
        scheduled_at: Some(at("2030-01-01T12:00:00Z")),
        ..CampaignDraft::minimal(list)
    }
}

/// Cancel mid-send: the messages not yet created are cancelled, a queued
/// one whose job reports `cancelled` is counted so, and the counters agree
/// with the messages.
async fn cancel_settles_everything_left(s: &Subject) {
    use SubscriberStatus::Subscribed;
    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    s.upsert(
        ALICE,
        list.id,
        (0..5).map(|i| new(&format!("c{i}@x.org"), Subscribed)).collect(),
    )
    .await
    .unwrap();
    let c = s
        .create_campaign(ALICE, CampaignDraft::minimal(list.id), "log".into())
        .await
        .unwrap();
    s.send(ALICE, c.id, Utc::now()).await.unwrap();
    let step = s.step(c.id, 2, Utc::now()).await.unwrap();
    assert_eq!(step.jobs.len(), 2);
    s.settle(&sent(c.id, &step.jobs[..1]), Utc::now()).await.unwrap();
    s.act(ALICE, c.id, Action::Cancel).await.unwrap();
    let rest = s.step(c.id, 100, Utc::now()).await.unwrap();
    assert!(rest.jobs.is_empty(), "nothing more is handed out");
    let after = s
        .settle(&outcomes(c.id, &step.jobs[1..], |_| OutcomeKind::Cancelled), Utc::now())
        .await
        .unwrap();
    let stats = after[0].stats;
    assert_eq!((stats.sent, stats.cancelled, stats.queued, stats.pending), (1, 4, 0, 0));
    let messages = s.messages(ALICE, c.id, None, None, 10).await.unwrap().items;
    let count = |st: MessageStatus| messages.iter().filter(|m| m.status == st).count() as u64;
    assert_eq!((count(MessageStatus::Sent), count(MessageStatus::Cancelled)), (1, 4));
    // A late outcome for a settled message counts nothing.
    let again = s.settle(&sent(c.id, &step.jobs[..1]), Utc::now()).await.unwrap();
    assert!(again.is_empty());
    assert_eq!(s.campaign(ALICE, c.id).await.unwrap().stats, stats);
}

/// Every outcome kind a delivery reports, stored alike: a sent message, a
/// failure, a refused recipient (a hard bounce, suppressed, with its
/// events), a retry (still queued, its attempt and error kept), a deferral
/// (handed out again unflagged) and a cancel; the counters agree with the
/// messages, and the campaign completes once each has a final outcome.
async fn every_outcome_kind_settles_alike(s: &Subject) {
    use SubscriberStatus::Subscribed;
    let hook = s
        .create_webhook(ALICE, vec![EventKind::MessageFailed, EventKind::MessageBounced])
        .await
        .unwrap();
    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    s.upsert(
        ALICE,
        list.id,
        (0..6).map(|i| new(&format!("o{i}@x.org"), Subscribed)).collect(),
    )
    .await
    .unwrap();
    let c = s
        .create_campaign(ALICE, CampaignDraft::minimal(list.id), "log".into())
        .await
        .unwrap();
    s.send(ALICE, c.id, Utc::now()).await.unwrap();
    let step = s.step(c.id, 100, Utc::now()).await.unwrap();
    assert_eq!(step.jobs.len(), 6);
    let error = |e: &str| e.to_string();
    let kinds = [
        OutcomeKind::Sent {
            remote_id: Some("r-0".into()),
        },
        OutcomeKind::Failed {
            error: error("554 content refused"),
        },
        OutcomeKind::Rejected {
            error: error("550 no such user"),
        },
        OutcomeKind::Retrying {
            error: error("421 try later"),
        },
        OutcomeKind::Deferred,
        OutcomeKind::Cancelled,
    ];
    let first: Vec<Outcome> = step
        .jobs
        .iter()
        .zip(kinds)
        .map(|(j, kind)| Outcome {
            campaign_id: c.id,
            subscriber_id: j.subscriber.id,
            attempts: 1,
            kind,
        })
        .collect();
    s.settle(&first, Utc::now()).await.unwrap();
    let stats = s.campaign(ALICE, c.id).await.unwrap().stats;
    assert_eq!(
        (
            stats.sent,
            stats.failed,
            stats.cancelled,
            stats.bounced,
            stats.queued,
            stats.pending
        ),
        (1, 2, 1, 1, 2, 0)
    );
    let messages = s.messages(ALICE, c.id, None, None, 10).await.unwrap().items;
    let of = |i: usize| {
        messages
            .iter()
            .find(|m| m.subscriber_id == step.jobs[i].subscriber.id)
            .unwrap()
    };
    assert_eq!(
        (of(0).status, of(0).remote_id.as_deref()),
        (MessageStatus::Sent, Some("r-0"))
    );
    assert_eq!(
        (of(1).status, of(1).last_error.as_deref()),
        (MessageStatus::Failed, Some("554 content refused"))
    );
    assert_eq!(of(2).status, MessageStatus::Failed);
    assert_eq!(of(2).bounces.len(), 1, "a refused recipient is a hard bounce");
    assert_eq!(
        s.suppression(ALICE, "o2@x.org".into()).await.unwrap().reason,
        SuppressionReason::Bounced
    );
    assert_eq!(
        (of(3).status, of(3).attempts, of(3).last_error.as_deref()),
        (MessageStatus::Queued, 1, Some("421 try later"))
    );
    assert_eq!(of(4).status, MessageStatus::Queued);
    assert_eq!(of(5).status, MessageStatus::Cancelled);
    let (due, _) = s.due_deliveries(Utc::now(), 10, None).await.unwrap();
    let mut events: Vec<EventKind> = due
        .iter()
        .filter(|d| d.webhook.id == hook.id)
        .map(|d| d.delivery.event)
        .collect();
    events.sort_by_key(|e| e.as_str());
    assert_eq!(
        events,
        [
            EventKind::MessageBounced,
            EventKind::MessageFailed,
            EventKind::MessageFailed
        ]
    );

    // The retry's next attempt succeeds; the deferred message comes back,
    // unflagged (it was never handed to a transport), and goes out.
    let retried = Outcome {
        attempts: 2,
        kind: OutcomeKind::Sent { remote_id: None },
        ..first[3].clone()
    };
    s.settle(&[retried], Utc::now()).await.unwrap();
    let again = s.resume_deferred(c.id).await.unwrap();
    let ids: Vec<SubscriberId> = again.iter().map(|j| j.subscriber.id).collect();
    assert_eq!(ids, [step.jobs[4].subscriber.id]);
    let done = s.settle(&sent(c.id, &again), Utc::now()).await.unwrap();
    let stats = done[0].stats;
    assert_eq!(done[0].status, Status::Sent);
    assert_eq!(
        (
            stats.sent,
            stats.failed,
            stats.cancelled,
            stats.queued,
            stats.possible_duplicates
        ),
        (3, 2, 1, 0, 0)
    );
    let messages = s.messages(ALICE, c.id, None, None, 10).await.unwrap().items;
    assert!(
        messages
            .iter()
            .all(|m| !m.possible_duplicate && m.status != MessageStatus::Queued)
    );
}

/// The public unsubscribe link (idempotent, one event, still working
/// after the campaign is deleted, 404 for what does not exist), the
/// first-user rule of `create_user`, a single webhook's lookup and the
/// group-committed lifecycle call (redb's `act` of pause, resume, cancel), alike on both.
async fn public_unsubscribes_and_single_lookups(s: &Subject) {
    use SubscriberStatus::{Subscribed, Unsubscribed};
    let (first, _) = s.create_user("first@x.org".into()).await.unwrap();
    let (second, _) = s.create_user("second@x.org".into()).await.unwrap();
    assert!(first.admin && !second.admin, "the first user is the admin");
    let hook = s
        .create_webhook(ALICE, vec![EventKind::SubscriberUnsubscribed])
        .await
        .unwrap();
    assert_eq!(s.webhook(ALICE, hook.id).await.unwrap().id, hook.id);
    assert!(matches!(s.webhook(BOB, hook.id).await, Err(StoreError::NotFound)));

    let list = s.create_list(ALICE, "l".into()).await.unwrap();
    let subs = s
        .upsert(
            ALICE,
            list.id,
            vec![new("u0@x.org", Subscribed), new("u1@x.org", Subscribed)],
        )
        .await
        .unwrap()
        .subscribers;
    let c = s
        .create_campaign(ALICE, CampaignDraft::minimal(list.id), "log".into())
        .await
        .unwrap();
    s.unsubscribe(c.id, subs[0].id).await.unwrap();
    s.unsubscribe(c.id, subs[0].id).await.unwrap();
    let status = async |i: usize| s.subscriber(ALICE, list.id, subs[i].id).await.unwrap().status;
    assert_eq!((status(0).await, status(1).await), (Unsubscribed, Subscribed));
    assert!(matches!(
        s.unsubscribe(CampaignId::new(999), subs[1].id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.unsubscribe(c.id, SubscriberId::new(999)).await,
        Err(StoreError::NotFound)
    ));
    let (due, _) = s
        .due_deliveries(Utc::now() + Duration::seconds(1), 10, None)
        .await
        .unwrap();
    assert_eq!(due.iter().filter(|d| d.webhook.id == hook.id).count(), 1, "one event");
    s.delete_campaign(ALICE, c.id).await.unwrap();
    s.unsubscribe(c.id, subs[1].id).await.unwrap();
    assert_eq!(status(1).await, Unsubscribed, "a deleted campaign's links still work");

    let c2 = s
        .create_campaign(ALICE, CampaignDraft::minimal(list.id), "log".into())
        .await
        .unwrap();
    s.send(ALICE, c2.id, Utc::now()).await.unwrap();
    let paused = s.store.act(ALICE, c2.id, Action::Pause, Utc::now()).await.unwrap();
    assert_eq!(paused.status, Status::Paused);
    assert!(matches!(
        s.store.act(BOB, c2.id, Action::Resume, Utc::now()).await,
        Err(StoreError::NotFound)
    ));
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (_dir, store) = crate::store::redb::temp_store();
                    let subject = super::Subject {
                        store: store.clone().into(),
                        backing: super::Backing::Redb(store),
                    };
                    super::$scenario(&subject).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = crate::store::pg::test_server::TestServer::get().database();
                    let store = crate::store::pg::PgStore::connect(&db.url, 4).await.unwrap();
                    let subject = super::Subject {
                        store: store.clone().into(),
                        backing: super::Backing::Pg(Box::new(store)),
                    };
                    super::$scenario(&subject).await;
                }
            )*
        }
    };
}

conformance!(
    every_outcome_kind_settles_alike,
    public_unsubscribes_and_single_lookups,
    local_time_sends_release_in_due_order,
    cancel_settles_everything_left,
    webhook_outboxes,
    bounces_mark_messages_and_suppress,
    campaigns_and_their_lifecycle,
    users_and_their_keys,
    sender_domains_per_user,
    suppression_lists,
    lists_belong_to_their_user,
    segments_belong_to_their_user_and_list,
    segment_campaigns_send_to_the_audience_fixed_at_start,
    opens_and_clicks_count_once_per_person,
    ab_tests_send_the_test_then_the_winner_once_each,
    warmup_days_hand_out_their_cap_once,
    upserts_create_update_and_keep_unsubscribes,
    subscriber_pages_and_status_filters,
);
