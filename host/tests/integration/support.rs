//! What the in-process engine tests share: an engine with a manual clock
//! on redb or PostgreSQL, and a user with a list of readers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use posta::config::Config;
use posta::domain::{ListId, NewSubscriber, UserId};
use posta::engine::Engine;
use posta::engine::clock::ManualClock;
use posta::plugins::Plugins;
use posta::store::Store;

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A started engine over its own store (a temp dir's redb, or a fresh
/// database of the test PostgreSQL server), the clock at `at`.
pub struct Running {
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub engine: Engine,
    pub _dir: tempfile::TempDir,
}

/// `configure` is applied to the default configuration first.
pub async fn running(postgres: bool, at: &str, configure: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let mut cfg = Config::load(None).unwrap();
    cfg.server.data_dir = data.clone();
    configure(&mut cfg);
    let store = if postgres {
        let db = posta::store::pg::test_server::TestServer::get().database();
        Store::connect(&db.url, 8).await.unwrap()
    } else {
        Store::open(&data.join("posta.redb")).unwrap()
    };
    let plugins = Arc::new(Plugins::load(&cfg, &data).unwrap());
    let clock = Arc::new(ManualClock::new(t(at)));
    let engine = Engine::start(store.clone(), plugins, &cfg, clock.clone())
        .await
        .unwrap();
    Running {
        store,
        clock,
        engine,
        _dir: dir,
    }
}

/// A new user `email` with one list of `n` subscribed readers,
/// r0@example.org onwards.
pub async fn readers(store: &Store, email: &str, n: usize) -> (UserId, ListId) {
    let (user, _) = store.create_user(email.into()).await.unwrap();
    let list = store.create_list(user.id, "l".into()).await.unwrap();
    let subs = (0..n)
        .map(|i| NewSubscriber {
            email: posta::domain::Email::parse(&format!("r{i}@example.org")).unwrap(),
            name: String::new(),
            timezone: None,
            attributes: Default::default(),
            status: Default::default(),
        })
        .collect();
    store.upsert_subscribers(user.id, list.id, subs).await.unwrap();
    (user.id, list.id)
}
