//! The database itself going away mid-send: restarted (as a crash or a
//! failover does) for longer than the lease, and down for over a minute
//! with a node started meanwhile. Each cluster runs on a PostgreSQL server
//! of its own, so the outage takes no other test's database with it.

use std::time::{Duration, Instant};

use posta::store::pg::test_server::TestServer;
use posta_e2e::cluster::Cluster;
use posta_e2e::{Value, json};

use super::{LEASES, check_complete, now_ms, one_cluster_at_a_time, wait_sent};

/// The first transport call any node made at or after `since_ms`, in ms
/// after it.
fn first_call_after(c: &Cluster, since_ms: i64) -> Option<i64> {
    c.outboxes()
        .iter()
        .map(|(_, l)| l["logged_at_ms"].as_i64().unwrap())
        .filter(|&t| t >= since_ms)
        .min()
        .map(|t| t - since_ms)
}

/// Calls made by any node while the database was down (`from`..`to`).
fn calls_between(c: &Cluster, from: i64, to: i64) -> usize {
    c.outboxes()
        .iter()
        .map(|(_, l)| l["logged_at_ms"].as_i64().unwrap())
        .filter(|&t| t > from && t < to)
        .count()
}

fn health(node: &posta_e2e::Server) -> Value {
    let (status, body) = node.anonymous().get_abs(&format!("{}/api/v1/health", node.base));
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn a_database_restart_longer_than_the_lease_pauses_the_send_and_strands_nothing() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 20_000;
    let server = TestServer::private();
    let c = Cluster::start_on(server, 2, LEASES);
    let api = c.nodes[0].api(&c.key);
    let list = api.list_of("d", N);
    // Paced at 2,000/s: about ten seconds of sending around the outage.
    let id = api.send_campaign(list, json!({"send_rate": 120_000}));
    wait_sent(&api, id, 3_000);
    server.stop_immediately();
    let down = now_ms();
    // Longer than the lease (4 s): every registration lapses meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    let degraded = health(&c.nodes[1]);
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    server.start_again();
    let up = now_ms();
    let d = check_complete(&c, &api, id, N);
    let resumed = first_call_after(&c, up).expect("no call after the database came back");
    let finished = now_ms() - up;
    // Calls in the first moments of the outage are those already under way
    // or whose fence had not fallen yet; none starts past a fence.
    let during = calls_between(&c, down + 2_500, up);
    assert_eq!(during, 0, "{during} calls while the database was down");
    assert!(d.lapsed >= 2, "the outage outlasted the lease: {d}");
    std::thread::sleep(Duration::from_secs(1));
    for node in &c.nodes {
        assert_eq!(health(node)["status"], "ok");
    }
    println!(
        "database down 6 s under 2 nodes: first call {resumed} ms after it came back, sent {finished} ms after; {d}"
    );
}

#[test]
fn a_database_down_over_a_minute_with_a_node_started_meanwhile_finishes_the_send() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 20_000;
    let server = TestServer::private();
    let mut c = Cluster::start_on(server, 3, LEASES);
    let api = c.nodes[0].api(&c.key);
    let list = api.list_of("m", N);
    let id = api.send_campaign(list, json!({"send_rate": 120_000}));
    wait_sent(&api, id, 3_000);
    server.stop_immediately();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    // A node dies during the outage and is started again while the
    // database is still away: it waits for it, then joins.
    c.nodes[2].kill();
    let (started, nodes) = c.nodes.split_at_mut(2);
    let up = std::thread::scope(|s| {
        let late = s.spawn(|| nodes[0].start_again());
        std::thread::sleep(Duration::from_secs(5));
        let degraded = health(&started[0]);
        assert_eq!(degraded["status"], "degraded", "{degraded}");
        let (_, metrics) = started[1].anonymous().get_abs(&format!("{}/metrics", started[1].base));
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        assert!(metrics.contains("posta_storage_up 0"), "{metrics}");
        let (status, body) = started[0].api(&c.key).get(&format!("/campaigns/{id}"));
        assert_eq!(
            (status, &body["error"]["code"]),
            (503, &json!("storage_unavailable")),
            "{body}"
        );
        std::thread::sleep(Duration::from_secs(65).saturating_sub(down.elapsed()));
        server.start_again();
        let up = now_ms();
        late.join().expect("the late node started");
        up
    });
    let d = check_complete(&c, &api, id, N);
    let resumed = first_call_after(&c, up).expect("no call after the database came back");
    let log = c.nodes[2].log();
    let waited = log.rfind("storage unreachable; retrying until it answers");
    let joined = log.rfind("joined the cluster");
    assert!(
        waited.is_some() && joined > waited,
        "the late node did not wait for the database and then join:\n{log}"
    );
    assert!(
        c.nodes[2]
            .outbox_lenient()
            .0
            .iter()
            .any(|l| l["logged_at_ms"].as_i64().unwrap() >= up),
        "the late node made no call after joining"
    );
    // One line per loop (driver, outcomes, heartbeat, join, notifications,
    // status poll, scheduler, pacer, webhooks) at most, however many tries.
    let repeated = c.nodes[0].log().matches("retrying until it answers").count();
    assert!(
        repeated <= 9,
        "an outage is logged once per loop, not per attempt: {repeated} lines"
    );
    println!(
        "database down 65 s under 3 nodes (one started meanwhile): first call {resumed} ms after it came back; {d}"
    );
}
