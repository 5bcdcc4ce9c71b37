//! Warm-up caps with an injected clock: a transport with `warmup = [3, 4]`
//! hands out 3 messages on its first UTC day and 4 on its second; the
//! campaign stays `sending` while capped, nothing fails, and once the
//! schedule is over the rest goes at once; a pool holds each member to
//! its own cap. On redb and PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use posta::config::Config;
use posta::domain::message::MessageStatus;
use posta::domain::{CampaignDraft, CampaignId, Status, UserId};
use posta::engine::clock::ManualClock;
use posta::store::Store;

use crate::support::{self, Running, t};

async fn sent(store: &Store, user: UserId, id: CampaignId) -> usize {
    store
        .messages(user, id, Some(MessageStatus::Sent), None, 1000)
        .await
        .unwrap()
        .items
        .len()
}

/// Waits until `n` are sent, then checks no more come within a second
/// and a half.
async fn settle_at(store: &Store, user: UserId, id: CampaignId, n: usize) {
    let start = Instant::now();
    while sent(store, user, id).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "fewer than {n} sent after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sent(store, user, id).await, n, "more than the day's cap");
}

/// An engine on redb or PostgreSQL with the clock at 2026-06-01 10:00 UTC,
/// `configure` applied to the default configuration, and a campaign of 10
/// subscribers through `transport` started.
struct Sending {
    store: Store,
    clock: Arc<ManualClock>,
    user: UserId,
    id: CampaignId,
    _running: Running,
}

async fn start(postgres: bool, transport: &str, configure: impl FnOnce(&mut Config)) -> Sending {
    let running = support::running(postgres, "2026-06-01T10:00:00Z", configure).await;
    let (store, engine) = (&running.store, &running.engine);
    let (user, list) = support::readers(store, "warm@example.org", 10).await;
    let draft = CampaignDraft {
        from_email: "a@example.org".into(),
        ..CampaignDraft::minimal(list)
    };
    let c = store
        .create_campaign(user, draft, transport.into(), engine.now())
        .await
        .unwrap();
    let c = store.send(user, c.id, engine.now()).await.unwrap();
    engine.kick(&c);
    Sending {
        store: store.clone(),
        clock: running.clock.clone(),
        user,
        id: c.id,
        _running: running,
    }
}

async fn caps_hold_day_by_day(postgres: bool) {
    let s = start(postgres, "log", |cfg| {
        let log = cfg.transports.get_mut("log").unwrap();
        log.warmup = vec![3, 4];
        log.warmup_start = Some("2026-06-01".into());
    })
    .await;
    let (store, user, id) = (&s.store, s.user, s.id);

    settle_at(store, user, id, 3).await;
    let capped = store.campaign(user, id).await.unwrap();
    assert_eq!(
        (capped.status, capped.stats.failed, capped.stats.pending),
        (Status::Sending, 0, 7)
    );

    s.clock.set(t("2026-06-02T00:00:01Z"));
    settle_at(store, user, id, 7).await;
    assert_eq!(store.campaign(user, id).await.unwrap().status, Status::Sending);

    // The schedule is over: no cap.
    s.clock.set(t("2026-06-03T08:00:00Z"));
    settle_at(store, user, id, 10).await;
    let done = store.campaign(user, id).await.unwrap();
    assert_eq!((done.status, done.stats.sent, done.stats.failed), (Status::Sent, 10, 0));
}

/// A pool of two warming-up transports (caps 3 and 2 on the first day):
/// each takes no more than its cap, the pool stops at 5 with the campaign
/// still `sending`; the next day one member's schedule is over and the
/// rest goes.
async fn a_pool_holds_each_members_cap(postgres: bool) {
    let s = start(postgres, "main", |cfg| {
        let mut spare = cfg.transports["log"].clone();
        spare.warmup = vec![2];
        spare.warmup_start = Some("2026-06-01".into());
        cfg.transports.insert("spare".into(), spare);
        let log = cfg.transports.get_mut("log").unwrap();
        log.warmup = vec![3, 4];
        log.warmup_start = Some("2026-06-01".into());
        cfg.pools.insert(
            "main".into(),
            posta::config::Pool {
                transports: vec!["log".into(), "spare".into()],
                weights: None,
            },
        );
    })
    .await;
    let (store, user, id) = (&s.store, s.user, s.id);
    settle_at(store, user, id, 5).await;
    let capped = store.campaign(user, id).await.unwrap();
    assert_eq!(
        (capped.status, capped.stats.failed, capped.stats.pending),
        (Status::Sending, 0, 5)
    );
    let day = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
    assert_eq!(store.warmup_used("log".into(), day).await.unwrap(), 3);
    assert_eq!(store.warmup_used("spare".into(), day).await.unwrap(), 2);

    s.clock.set(t("2026-06-02T00:00:01Z"));
    settle_at(store, user, id, 10).await;
    let done = store.campaign(user, id).await.unwrap();
    assert_eq!((done.status, done.stats.sent, done.stats.failed), (Status::Sent, 10, 0));
    let next = day.succ_opt().unwrap();
    assert!(store.warmup_used("log".into(), next).await.unwrap() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_caps_hold_day_by_day_on_redb() {
    caps_hold_day_by_day(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_caps_hold_day_by_day_on_postgres() {
    caps_hold_day_by_day(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_holds_each_members_warmup_cap_on_redb() {
    a_pool_holds_each_members_cap(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_holds_each_members_warmup_cap_on_postgres() {
    a_pool_holds_each_members_cap(true).await
}
