//! Local-time sending with an injected clock: each subscriber's message is
//! created when their own wall clock shows the campaign's time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use posta::config::Config;
use posta::domain::message::MessageStatus;
use posta::domain::{Action, CampaignDraft, CampaignId, ListId, NewSubscriber, Status, UserId};
use posta::engine::Engine;
use posta::engine::clock::ManualClock;
use posta::plugins::Plugins;
use posta::store::Store;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const ZONES: &[(&str, Option<&str>, &str)] = &[
    // (email, timezone, due for 2026-03-08T02:30 local)
    (
        "kiritimati@example.org",
        Some("Pacific/Kiritimati"),
        "2026-03-07T12:30:00Z",
    ),
    ("kathmandu@example.org", Some("Asia/Kathmandu"), "2026-03-07T20:45:00Z"),
    ("kolkata@example.org", Some("Asia/Kolkata"), "2026-03-07T21:00:00Z"),
    ("paris@example.org", Some("Europe/Paris"), "2026-03-08T01:30:00Z"),
    ("nowhere@example.org", None, "2026-03-08T02:30:00Z"),
    // 02:30 does not exist in New York that night: moved forward to 03:30 EDT.
    ("newyork@example.org", Some("America/New_York"), "2026-03-08T07:30:00Z"),
    (
        "pagopago@example.org",
        Some("Pacific/Pago_Pago"),
        "2026-03-08T13:30:00Z",
    ),
];

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Engine,
    clock: Arc<ManualClock>,
    user: UserId,
    list: ListId,
}

/// Each test runs on redb and, built with the feature, on a database of
/// its own on the test PostgreSQL server.
#[derive(Clone, Copy)]
enum Backend {
    Redb,
    Postgres,
}

macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                super::$name(super::Backend::Redb).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    };
}

async fn fixture(now: DateTime<Utc>, backend: Backend) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let mut cfg = Config::load(None).unwrap();
    cfg.server.data_dir = data.clone();
    let store = match backend {
        Backend::Redb => Store::open(&data.join("posta.redb")).unwrap(),
        Backend::Postgres => {
            let db = posta::store::pg::test_server::TestServer::get().database();
            Store::connect(&db.url, 8).await.unwrap()
        }
    };
    let plugins = Arc::new(Plugins::load(&cfg, &data).unwrap());
    let clock = Arc::new(ManualClock::new(now));
    let engine = Engine::start(store.clone(), plugins, &cfg, clock.clone())
        .await
        .unwrap();
    let (user, _) = store.create_user("tz@example.org".into()).await.unwrap();
    let list = store.create_list(user.id, "world".into()).await.unwrap();
    let subs = ZONES
        .iter()
        .map(|(email, tz, _)| NewSubscriber {
            email: posta::domain::Email::parse(email).unwrap(),
            name: String::new(),
            timezone: tz.map(String::from),
            attributes: Default::default(),
            status: Default::default(),
        })
        .collect();
    store.upsert_subscribers(user.id, list.id, subs).await.unwrap();
    Fixture {
        _dir: dir,
        store,
        engine,
        clock,
        user: user.id,
        list: list.id,
    }
}

impl Fixture {
    async fn campaign(&self, scheduled_at: &str) -> CampaignId {
        let draft = CampaignDraft {
            from_email: "a@example.org".into(),
            subject: "s".into(),
            text: "t".into(),
            send_at_local_time: true,
            scheduled_at: Some(t(scheduled_at)),
            ..CampaignDraft::minimal(self.list)
        };
        self.store
            .create_campaign(self.user, draft, "log".into(), self.clock.now_utc())
            .await
            .unwrap()
            .id
    }

    /// Sends as the API does: scheduled if the first zone is still ahead.
    async fn send(&self, id: CampaignId) -> Status {
        let c = self.store.send(self.user, id, self.engine.now()).await.unwrap();
        self.engine.kick(&c);
        c.status
    }

    /// Recipients with a sent message, and their due times.
    async fn sent(&self, id: CampaignId) -> BTreeMap<String, DateTime<Utc>> {
        let page = self
            .store
            .messages(self.user, id, Some(MessageStatus::Sent), None, 1000)
            .await
            .unwrap();
        page.items
            .into_iter()
            .map(|m| (m.email, m.due_at.expect("due_at")))
            .collect()
    }

    async fn wait_sent(&self, id: CampaignId, n: usize) -> BTreeMap<String, DateTime<Utc>> {
        let start = Instant::now();
        loop {
            let sent = self.sent(id).await;
            if sent.len() >= n {
                // Nothing beyond the expected may arrive.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let again = self.sent(id).await;
                assert_eq!(again.len(), n, "more messages than due: {again:?}");
                return again;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "only {sent:?} after 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        posta::engine::clock::Clock::now(self)
    }
}

fn expected(upto: usize) -> BTreeMap<String, DateTime<Utc>> {
    ZONES[..upto]
        .iter()
        .map(|(e, _, due)| (e.to_string(), t(due)))
        .collect()
}

on_both!(each_subscriber_gets_it_at_their_own_wall_clock_time);
async fn each_subscriber_gets_it_at_their_own_wall_clock_time(backend: Backend) {
    let f = fixture(t("2026-03-07T12:00:00Z"), backend).await;
    let id = f.campaign("2026-03-08T02:30:00Z").await;
    assert_eq!(f.send(id).await, Status::Scheduled, "UTC+14 has not reached 02:30 yet");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(f.sent(id).await.is_empty());

    // (clock, how many of ZONES are due by then)
    for (now, due) in [
        ("2026-03-07T12:30:00.5Z", 1),
        ("2026-03-07T20:50:00Z", 2),
        ("2026-03-07T21:00:01Z", 3),
        ("2026-03-08T02:00:00Z", 4),
        ("2026-03-08T02:30:00Z", 5),
        ("2026-03-08T07:29:59Z", 5),
        ("2026-03-08T07:30:00Z", 6),
    ] {
        f.clock.set(t(now));
        assert_eq!(f.wait_sent(id, due).await, expected(due), "at {now}");
        assert_eq!(f.store.campaign(f.user, id).await.unwrap().status, Status::Sending);
    }
    f.clock.set(t("2026-03-08T13:30:00Z"));
    assert_eq!(f.wait_sent(id, ZONES.len()).await, expected(ZONES.len()));
    let start = Instant::now();
    while f.store.campaign(f.user, id).await.unwrap().status != Status::Sent {
        assert!(start.elapsed() < Duration::from_secs(10), "campaign never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both!(zones_already_past_the_hour_get_it_at_once);
async fn zones_already_past_the_hour_get_it_at_once(backend: Backend) {
    // Sent at 02:00 UTC: Kiritimati, Kathmandu, Kolkata and Paris are past
    // 02:30 local already; the rest are not.
    let f = fixture(t("2026-03-08T02:00:00Z"), backend).await;
    let id = f.campaign("2026-03-08T02:30:00Z").await;
    assert_eq!(f.send(id).await, Status::Sending);
    assert_eq!(f.wait_sent(id, 4).await, expected(4));
    let c = f.store.campaign(f.user, id).await.unwrap();
    assert_eq!((c.stats.total, c.stats.sent, c.stats.pending), (7, 4, 3));

    // Cancelling turns the waiting ones into cancelled messages.
    let c = f.store.act(f.user, id, Action::Cancel, f.engine.now()).await.unwrap();
    f.engine.kick(&c);
    let start = Instant::now();
    loop {
        let c = f.store.campaign(f.user, id).await.unwrap();
        if c.stats.cancelled == 3 {
            assert_eq!(c.stats.pending, 0);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", c.stats);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
