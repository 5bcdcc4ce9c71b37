//! Transport pools against real SMTP peers (aiosmtpd): a member whose
//! relay is down is taken out and every message goes once through the
//! other, none failed; when its relay is back, a probe brings it back and
//! messages spread over both again; `GET /transports` and the metrics
//! show each member's state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use posta_e2e::peers::{QUICK_RETRIES, SmtpPeer, TestCa, metric, scrape, smtp_transport};
use posta_e2e::{Server, Value, json};

/// A port nothing listens on (bound, then let go).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn member(server: &Server, key: &str, pool: &str, name: &str) -> Value {
    let transports = server.api(key).ok_get("/transports");
    let pool = transports
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == pool)
        .unwrap_or_else(|| panic!("no {pool} in {transports}"))
        .clone();
    pool["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no member {name} in {pool}"))
        .clone()
}

/// How many messages each recipient got, over both peers.
fn per_recipient(peers: &[&SmtpPeer]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for p in peers {
        for m in p.received() {
            *n.entry(m["to"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    n
}

#[test]
fn a_member_down_sends_everything_once_through_the_other_and_a_probe_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let a = SmtpPeer::start(&dir.path().join("a"), &ca, "pw");
    let b_port = dead_port();
    let config = format!(
        "{QUICK_RETRIES}\n{}\n{}\n[pools.main]\ntransports = [\"a\", \"b\"]\n",
        smtp_transport("a", a.plain),
        smtp_transport("b", b_port)
    );
    let (server, key, _) = Server::with_config(&config);
    let api = server.api(&key);

    // b refuses every connection: after three, it is out; each of those
    // messages went on to a within its attempt.
    let list = api.list_of("pool", 100);
    let id = api.send_campaign(list, json!({"transport": "main"}));
    let c = api.wait_status(id, "sent");
    assert_eq!(
        (c["stats"]["sent"].as_u64(), c["stats"]["failed"].as_u64()),
        (Some(100), Some(0)),
        "{c}"
    );
    a.wait_received(100);
    let counts = per_recipient(&[&a]);
    assert_eq!(counts.len(), 100);
    assert!(counts.values().all(|&n| n == 1), "once each");
    let retried: u64 = api
        .all_messages(id, "")
        .iter()
        .map(|m| m["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(retried, 100, "no message spent a second attempt on the dead member");
    let down = member(&server, &key, "main", "b");
    assert_eq!(down["state"], "down", "{down}");
    assert!(down["trips"].as_u64() >= Some(1), "{down}");
    assert_eq!(member(&server, &key, "main", "a")["state"], "up");
    let samples = scrape(&server, None);
    assert_eq!(
        metric(&samples, "posta_pool_member_up", &[("pool", "main"), ("member", "b")]),
        0.0
    );
    assert!(
        metric(
            &samples,
            "posta_pool_member_trips_total",
            &[("pool", "main"), ("member", "b")]
        ) >= 1.0
    );

    // b's relay comes back on its port; once its cool-down is over, the
    // next message probes it and the two share the work again.
    let b = SmtpPeer::start_on(&dir.path().join("b"), &ca, "pw", b_port);
    let started = Instant::now();
    while member(&server, &key, "main", "b")["retry_in_seconds"] != 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the cool-down never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = api.list_of("again", 100);
    let id = api.send_campaign(list, json!({"transport": "main"}));
    let c = api.wait_status(id, "sent");
    assert_eq!(c["stats"]["sent"], 100, "{c}");
    // One probe while the rest went to a (they were all handed out at once).
    let probed = b.wait_received(1).len();
    assert_eq!(member(&server, &key, "main", "b")["state"], "up");
    let list = api.list_of("shared", 100);
    let id = api.send_campaign(list, json!({"transport": "main"}));
    assert_eq!(api.wait_status(id, "sent")["stats"]["sent"], 100);
    let counts = per_recipient(&[&a, &b]);
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&n| n == 1), "once each");
    let shared = b.received().len() - probed;
    assert!(
        (40..=60).contains(&shared),
        "equal weights: b took {shared} of the last 100"
    );
    let samples = scrape(&server, None);
    let took = |m: &str| {
        metric(
            &samples,
            "posta_pool_member_delivered_total",
            &[("pool", "main"), ("member", m)],
        ) as usize
    };
    assert_eq!(
        (took("a"), took("b")),
        (a.received().len(), b.received().len()),
        "each member's count is what its relay took"
    );
}
