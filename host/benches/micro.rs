//! Micro benchmarks (criterion): what one plugin call and one storage batch
//! cost. `just bench` runs them with the end-to-end benchmarks.
//!
//! - instantiate: a fresh store + instance of the personalizer, against a
//!   call on a reused instance (what the pools buy);
//! - personalize: one call of the bundled personalizer;
//! - deliver: one call of the bundled log transport (a file in a temp dir);
//! - with `--features native-bench`, both again as native code (the same
//!   source compiled into the host), for the Wasm/native ratio;
//! - storage: one outcome batch of 256 messages committed to redb.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use posta::config::Config;
use posta::plugins::Plugins;
use posta::plugins::bindings::types;

fn campaign() -> Arc<types::Campaign> {
    Arc::new(types::Campaign {
        id: 1,
        name: "Bench".into(),
        subject: posta::demo::SUBJECT.into(),
        from_email: "news@example.org".into(),
        from_name: "Posta".into(),
        html: posta::demo::HTML.into(),
        text: posta::demo::TEXT.into(),
    })
}

fn subscriber(i: u64) -> types::Subscriber {
    types::Subscriber {
        id: i,
        email: format!("reader{i}@example.org"),
        name: format!("Reader {i}"),
        timezone: Some("Europe/Paris".into()),
        attributes: r#"{"plan":"pro"}"#.into(),
    }
}

fn envelope(i: u64) -> types::Envelope {
    types::Envelope {
        message_id: format!("posta.1.{i}@example.org"),
        unsubscribe_url: format!("http://127.0.0.1:8080/unsubscribe/1/{i}/0123456789abcdef"),
    }
}

fn plugins(dir: &std::path::Path) -> Plugins {
    let mut cfg = Config::load(None).expect("defaults");
    cfg.server.data_dir = dir.to_path_buf();
    Plugins::load(&cfg, dir).expect("bundled plugins load")
}

fn bench_plugins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugins = rt.block_on(async { plugins(dir.path()) });
    let camp = campaign();
    let message = rt
        .block_on(plugins.personalize(camp.clone(), subscriber(1), envelope(1)))
        .unwrap()
        .unwrap();

    let mut g = c.benchmark_group("plugins");
    g.bench_function("instantiate personalizer (fresh store + instance)", |b| {
        b.iter(|| rt.block_on(plugins.personalizer.pool().instantiate()).unwrap())
    });
    g.bench_function("validate on a reused instance", |b| {
        b.iter(|| rt.block_on(plugins.validate((*camp).clone())).unwrap().unwrap())
    });
    let mut i = 0;
    g.bench_function("personalize (wasm)", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(plugins.personalize(camp.clone(), subscriber(i), envelope(i)))
                .unwrap()
                .unwrap()
        })
    });
    let fresh = plugins.personalizer.pool().without_reuse();
    g.bench_function("personalize (wasm, fresh instance per call)", |b| {
        b.iter(|| {
            i += 1;
            let (c, s, e) = (camp.clone(), subscriber(i), envelope(i));
            rt.block_on(
                fresh.call(move |p, store| Box::pin(async move { p.call_personalize(store, &c, &s, &e).await })),
            )
            .unwrap()
            .unwrap()
        })
    });
    let log = plugins.transport("log").unwrap().clone();
    let shared = std::sync::Arc::new(message.clone());
    g.bench_function("deliver log (wasm)", |b| {
        b.iter(|| rt.block_on(log.deliver(shared.clone())).unwrap().unwrap())
    });
    // The same code compiled natively, called the same way (block_on of a
    // future that completes at once), for the Wasm/native ratio.
    #[cfg(feature = "native-bench")]
    {
        use posta::plugins::native;
        g.bench_function("personalize (native)", |b| {
            b.iter(|| {
                i += 1;
                let limits = posta::config::Limits::default();
                rt.block_on(async { native::personalize(&camp, subscriber(i), envelope(i), &limits) })
                    .unwrap()
            })
        });
        let writer = native::LogWriter::open(&dir.path().join("native.jsonl")).unwrap();
        g.bench_function("deliver log (native)", |b| {
            b.iter(|| rt.block_on(async { writer.deliver(&message.clone()) }).unwrap())
        });
    }
    g.finish();
}

fn bench_storage(c: &mut Criterion) {
    use posta::domain::message::{Outcome, OutcomeKind};
    use posta::domain::{CampaignDraft, NewSubscriber};
    use posta::store::Redb;
    let dir = tempfile::tempdir().unwrap();
    let store = Redb::open(&dir.path().join("posta.redb")).unwrap();
    let (user, _) = store.create_user("bench@example.org".into()).unwrap();
    let list = store.create_list(user.id, "bench".into()).unwrap();
    const N: usize = 200_000;
    let people: Vec<NewSubscriber> = (0..N)
        .map(|i| NewSubscriber {
            email: posta::domain::Email::parse(&format!("r{i}@example.org")).unwrap(),
            name: format!("R {i}"),
            timezone: None,
            attributes: Default::default(),
            status: Default::default(),
        })
        .collect();
    for chunk in people.chunks(10_000) {
        store.upsert_subscribers(user.id, list.id, chunk.to_vec()).unwrap();
    }
    let new_campaign = || {
        let draft = CampaignDraft {
            html: "h".into(),
            ..CampaignDraft::minimal(list.id)
        };
        let c = store.create_campaign(user.id, draft, "log".into(), Utc::now()).unwrap();
        store.send(user.id, c.id, Utc::now()).unwrap().id
    };
    let mut campaign = new_campaign();
    let mut g = c.benchmark_group("storage");
    // One round: enqueue 256 subscribers, then store their outcomes; each
    // benchmark times one half. A new campaign starts when the list runs out.
    let mut round = |time_enqueue: bool| -> Duration {
        let start = Instant::now();
        let step = store.enqueue(campaign, 256, Utc::now()).unwrap();
        let enqueued = start.elapsed();
        let outcomes: Vec<Outcome> = step
            .jobs
            .iter()
            .map(|j| Outcome {
                campaign_id: j.campaign_id,
                subscriber_id: j.subscriber.id,
                attempts: 1,
                kind: OutcomeKind::Sent { remote_id: None },
            })
            .collect();
        let start = Instant::now();
        store.record_outcomes(&outcomes, Utc::now()).unwrap();
        let recorded = start.elapsed();
        if step.jobs.len() < 256 {
            campaign = new_campaign();
        }
        if time_enqueue { enqueued } else { recorded }
    };
    g.bench_function("enqueue 256 + commit", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| round(true)).sum())
    });
    g.bench_function("record 256 outcomes + commit", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| round(false)).sum())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = bench_plugins, bench_storage
}
criterion_main!(benches);
