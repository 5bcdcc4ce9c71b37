//! A transport call with a start-by time (a shared rate slot's): made when
//! it can start in time, not at all when it cannot. Checked with the
//! bundled log transport, whose outbox shows which calls were made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use posta::config::Config;
use posta::plugins::Plugins;
use posta::plugins::bindings::types;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_start_by_time_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let mut cfg = Config::load(None).unwrap();
    cfg.server.data_dir = data.clone();
    let plugins = Plugins::load(&cfg, &data).unwrap();
    let campaign = Arc::new(types::Campaign {
        id: 1,
        name: "Start by".into(),
        subject: "Hi {{ subscriber.name }}".into(),
        from_email: "news@example.org".into(),
        from_name: "Posta".into(),
        html: String::new(),
        text: "Hello".into(),
    });
    let message = |i: u64| {
        let plugins = &plugins;
        let campaign = campaign.clone();
        async move {
            let subscriber = types::Subscriber {
                id: i,
                email: format!("reader{i}@example.org"),
                name: format!("Reader {i}"),
                timezone: None,
                attributes: "{}".into(),
            };
            let envelope = types::Envelope {
                message_id: format!("posta.1.{i}@example.org"),
                unsubscribe_url: format!("http://127.0.0.1/unsubscribe/1/{i}/x"),
            };
            let m = plugins.personalize(campaign, subscriber, envelope).await;
            Arc::new(m.unwrap().unwrap())
        }
    };
    let log = plugins.transport("log").unwrap().clone();

    let late = Instant::now() - Duration::from_millis(1);
    let missed = log.deliver_by(message(1).await, Some(late)).await.unwrap();
    assert!(missed.is_none(), "a call past its start-by time is not made");
    let in_time = Instant::now() + Duration::from_secs(5);
    let made = log.deliver_by(message(2).await, Some(in_time)).await.unwrap();
    assert!(matches!(made, Some(Ok(_))), "{made:?}");
    let unbound = log.deliver_by(message(3).await, None).await.unwrap();
    assert!(matches!(unbound, Some(Ok(_))), "{unbound:?}");

    let outbox = std::fs::read_to_string(data.join("outbox/outbox.jsonl")).unwrap();
    let to: Vec<&str> = outbox
        .lines()
        .map(|l| {
            if l.contains("reader2@") {
                "2"
            } else if l.contains("reader3@") {
                "3"
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(to, ["2", "3"], "{outbox}");
}
