//! A mailbox provider two nodes send to, against a real SMTP peer
//! (aiosmtpd) that answers `421 4.7.28` to its domain for 8 s and then
//! takes each of its messages slowly: its `max_in_flight` and its backoff
//! hold for the cluster, not per node.

use std::time::Duration;

use posta_e2e::cluster::Cluster;
use posta_e2e::peers::{QUICK_RETRIES, SmtpPeer, TestCa, metric, scrape, smtp_transport, to_domain};
use posta_e2e::{Value, json};

use super::{LEASES, one_cluster_at_a_time, poll_campaign};

/// The most transactions (MAIL FROM to the reply to DATA) the peer had
/// open at once among `records`.
fn most_at_once(records: &[&Value]) -> usize {
    let mut edges: Vec<(f64, i32)> = records
        .iter()
        .flat_map(|m| [(m["started"].as_f64().unwrap(), 1), (m["at"].as_f64().unwrap(), -1)])
        .collect();
    // An end before a start at the same instant: back to back is not at once.
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut open, mut most) = (0, 0);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    most as usize
}

#[test]
fn a_providers_max_in_flight_and_backoff_hold_across_two_nodes() {
    let _serial = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let peer = SmtpPeer::start_deferring_slowly(dir.path(), &ca, "pw", "slow.example", 8, 150);
    let c = Cluster::start(
        2,
        &format!(
            "{QUICK_RETRIES}\n{}\n[providers.slow]\ndomains = [\"slow.example\"]\nmax_in_flight = 1\n{LEASES}",
            smtp_transport("smtp", peer.plain)
        ),
    );
    let api = c.nodes[0].api(&c.key);
    let list = api.ok_post("/lists", json!({"name": "mixed"}))["id"].as_u64().unwrap();
    // Every fourth a recipient at the provider, so both nodes' steps hold
    // some; the campaign's rate keeps each node's window small, so both
    // nodes take part.
    let people: Vec<Value> = (0..160)
        .map(|i| match i % 4 {
            0 => json!({"email": format!("r{i}@slow.example")}),
            _ => json!({"email": format!("r{i}@fast.example")}),
        })
        .collect();
    api.ok_post(&format!("/lists/{list}/subscribers"), Value::Array(people));
    let id = api.send_campaign(list, json!({"transport": "smtp", "send_rate": 3000}));
    let done = poll_campaign(&api, id, Duration::from_secs(150), |c| c["status"] == "sent");
    assert_eq!(
        (done["stats"]["sent"].as_u64(), done["stats"]["failed"].as_u64()),
        (Some(160), Some(0)),
        "{done}"
    );

    let received = peer.wait_once_each(160);
    let slow = to_domain(&received, "slow.example");
    let fast = to_domain(&received, "fast.example");
    // Each held 150 ms: two nodes with a slot each would overlap often.
    let slow_at_once = most_at_once(&slow);
    println!(
        "provider with max_in_flight 1 on 2 nodes: at most {slow_at_once} at once (the other domain: {})",
        most_at_once(&fast)
    );
    assert_eq!(slow_at_once, 1, "max_in_flight holds for the cluster");

    // While it deferred: the first call and the calls racing it (a node
    // goes by a clear backoff it saw up to 0.5 s before), then one probe
    // per backoff for the whole cluster: 1, 2, 4 s apart.
    let deferred: Vec<f64> = peer.deferred().iter().map(|d| d["at"].as_f64().unwrap()).collect();
    let first = deferred.iter().copied().fold(f64::MAX, f64::min);
    let probes = deferred.iter().filter(|&&t| t > first + 1.5).count();
    println!("deferrals: {} in all, {probes} after the first 1.5 s", deferred.len());
    assert!(probes <= 3, "one probe per backoff for both nodes: {deferred:?}");
    let charged = api.attempts(id);
    assert!(
        charged.iter().all(|&n| n == 1),
        "deferrals are not charged: {charged:?}"
    );

    // Both nodes sent to the provider (else one node alone would pass).
    let took: Vec<f64> = c
        .nodes
        .iter()
        .map(|n| {
            metric(
                &scrape(n, None),
                "posta_provider_delivered_total",
                &[("provider", "slow")],
            )
        })
        .collect();
    println!("each node's messages to the provider: {took:?}");
    assert!(took.iter().all(|&n| n > 0.0), "{took:?}");
    assert_eq!(took.iter().sum::<f64>(), 40.0);
    assert_eq!(
        c.count("SELECT count(*) FROM provider_slots"),
        0,
        "every slot given back"
    );
}
