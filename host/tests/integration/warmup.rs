//! Warm-up caps with an injected clock: a transport with `warmup = [3, 4]`
//! hands out 3 messages on its first UTC day and 4 on its second; the
//! campaign stays `sending` while capped, nothing fails, and once the
//! schedule is over the rest goes at once. On redb and PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use posta::config::Config;
use posta::domain::message::MessageStatus;
use posta::domain::{CampaignDraft, CampaignId, NewSubscriber, Status, UserId};
use posta::engine::Engine;
use posta::engine::clock::ManualClock;
use posta::plugins::Plugins;
use posta::store::Store;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

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

async fn caps_hold_day_by_day(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let mut cfg = Config::load(None).unwrap();
    cfg.server.data_dir = data.clone();
    let log = cfg.transports.get_mut("log").unwrap();
    log.warmup = vec![3, 4];
    log.warmup_start = Some("2026-06-01".into());
    let store = if postgres {
        let db = posta::store::pg::test_server::TestServer::get().database();
        Store::connect(&db.url, 8).await.unwrap()
    } else {
        Store::open(&data.join("posta.redb")).unwrap()
    };
    let plugins = Arc::new(Plugins::load(&cfg, &data).unwrap());
    let clock = Arc::new(ManualClock::new(t("2026-06-01T10:00:00Z")));
    let engine = Engine::start(store.clone(), plugins, &cfg, clock.clone())
        .await
        .unwrap();
    let (user, _) = store.create_user("warm@example.org".into()).await.unwrap();
    let list = store.create_list(user.id, "l".into()).await.unwrap();
    let subs = (0..10)
        .map(|i| NewSubscriber {
            email: posta::domain::Email::parse(&format!("r{i}@example.org")).unwrap(),
            name: String::new(),
            timezone: None,
            attributes: Default::default(),
            status: Default::default(),
        })
        .collect();
    store.upsert_subscribers(user.id, list.id, subs).await.unwrap();
    let draft = CampaignDraft {
        from_email: "a@example.org".into(),
        ..CampaignDraft::minimal(list.id)
    };
    let c = store
        .create_campaign(user.id, draft, "log".into(), engine.now())
        .await
        .unwrap();
    let c = store.send(user.id, c.id, engine.now()).await.unwrap();
    engine.kick(&c);

    settle_at(&store, user.id, c.id, 3).await;
    let capped = store.campaign(user.id, c.id).await.unwrap();
    assert_eq!(
        (capped.status, capped.stats.failed, capped.stats.pending),
        (Status::Sending, 0, 7)
    );

    clock.set(t("2026-06-02T00:00:01Z"));
    settle_at(&store, user.id, c.id, 7).await;
    assert_eq!(store.campaign(user.id, c.id).await.unwrap().status, Status::Sending);

    // The schedule is over: no cap.
    clock.set(t("2026-06-03T08:00:00Z"));
    settle_at(&store, user.id, c.id, 10).await;
    let done = store.campaign(user.id, c.id).await.unwrap();
    assert_eq!((done.status, done.stats.sent, done.stats.failed), (Status::Sent, 10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_caps_hold_day_by_day_on_redb() {
    caps_hold_day_by_day(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_caps_hold_day_by_day_on_postgres() {
    caps_hold_day_by_day(true).await
}
