//! Mailbox providers against a real SMTP peer (aiosmtpd) that answers
//! `421 4.7.28` to one domain's recipients for 15 s, as Gmail does to a
//! sender going too fast: the provider backs off as a whole (a few probes
//! reach it while it defers, no message is charged an attempt for it),
//! the other domains finish first at full speed (its messages, spread
//! through the list, wait out of the campaign's window), every message is
//! delivered once, and afterwards the provider's `rate_limit` holds in
//! every second.

use std::collections::HashMap;

use posta_e2e::peers::{QUICK_RETRIES, SmtpPeer, TestCa, metric, scrape, smtp_transport, to_domain};
use posta_e2e::{Server, Value, json};

#[test]
fn a_deferring_provider_backs_off_alone_and_keeps_its_rate_after() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let peer = SmtpPeer::start_deferring(dir.path(), &ca, "pw", "slow.example", 15);
    // A small window, the provider's recipients spread through the list:
    // messages waiting for the provider must not hold the others back.
    let config = format!(
        "{QUICK_RETRIES}window = 16\n{}\n[providers.slow]\ndomains = [\"slow.example\"]\nrate_limit = 600\nmax_in_flight = 2\n",
        smtp_transport("smtp", peer.plain)
    );
    let (server, key, _) = Server::with_config(&config);
    let api = server.api(&key);
    let list = api.ok_post("/lists", json!({"name": "mixed"}))["id"].as_u64().unwrap();
    let people: Vec<Value> = (0..340)
        .map(|i| match i % 8 == 4 && i < 320 {
            true => json!({"email": format!("r{i}@slow.example")}),
            false => json!({"email": format!("r{i}@fast.example")}),
        })
        .collect();
    api.ok_post(&format!("/lists/{list}/subscribers"), Value::Array(people));
    let id = api.send_campaign(list, json!({"transport": "smtp"}));
    // GET /providers shows it backing off while it defers.
    let started = std::time::Instant::now();
    let backing_off = loop {
        let providers = api.ok_get("/providers");
        if providers[0]["backing_off"] == true {
            break providers;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "never backing off: {providers}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(backing_off[0]["name"], "slow");
    assert_eq!(backing_off[0]["domains"], json!(["slow.example"]));
    assert_eq!(
        (
            backing_off[0]["rate_limit"].as_u64(),
            backing_off[0]["max_in_flight"].as_u64()
        ),
        (Some(600), Some(2))
    );
    assert!(backing_off[0]["retry_in_seconds"].as_u64().is_some(), "{backing_off}");
    let c = api.wait_campaign(id, std::time::Duration::from_secs(120), |c| c["status"] == "sent");
    assert_eq!(
        (c["stats"]["sent"].as_u64(), c["stats"]["failed"].as_u64()),
        (Some(340), Some(0)),
        "{c}"
    );

    let received = peer.wait_once_each(340);
    let at = |m: &&Value| m["at"].as_f64().unwrap();
    let slow: Vec<f64> = to_domain(&received, "slow.example").iter().map(at).collect();
    let fast_done = to_domain(&received, "fast.example").iter().map(at).fold(0.0, f64::max);
    let slow_first = slow.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        fast_done < slow_first,
        "the other domain finished ({fast_done}) before the deferring one took its first ({slow_first})"
    );

    // While it deferred: the first calls under way, then one probe per
    // backoff (1, 2, 4, 8 s …), not a retry per message.
    let deferred = peer.deferred();
    println!("deferrals answered: {}", deferred.len());
    assert!(
        deferred.len() <= 12,
        "{} calls reached the deferring provider",
        deferred.len()
    );
    let charged = api.attempts(id);
    assert!(
        charged.iter().all(|&n| n == 1),
        "deferrals are not charged: {charged:?}"
    );

    // Afterwards: at most rate/60 + 1 in any one second.
    let mut by_second: HashMap<i64, usize> = HashMap::new();
    for t in &slow {
        *by_second.entry(t.floor() as i64).or_default() += 1;
    }
    let busiest = by_second.values().copied().max().unwrap();
    assert!(busiest <= 600 / 60 + 1, "{busiest} in one second: {by_second:?}");

    let after = api.ok_get("/providers");
    assert_eq!(after[0]["backing_off"], false, "{after}");
    assert!(after[0]["backoffs"].as_u64() >= Some(1), "{after}");
    let samples = scrape(&server, None);
    assert!(metric(&samples, "posta_provider_deferrals_total", &[("provider", "slow")]) >= 1.0);
    assert_eq!(
        metric(&samples, "posta_provider_delivered_total", &[("provider", "slow")]),
        40.0
    );
    assert_eq!(
        metric(&samples, "posta_provider_backing_off", &[("provider", "slow")]),
        0.0
    );
}
