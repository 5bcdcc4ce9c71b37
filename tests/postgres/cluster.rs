//! Three real nodes on one PostgreSQL database, each with its own
//! log-transport outbox: what one node's crash, freeze, pause, cancel,
//! shared rate or lost leadership does to a send, read from the outboxes
//! (the transport calls made) and from the database (what was stored).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use posta_e2e::cluster::Cluster;
use posta_e2e::peers::HttpPeer;
use posta_e2e::{Api, Value, json};

/// `[delivery] window`: what one node may have queued without outcomes.
const WINDOW: i64 = 1024;
/// The leases these tests run with (long enough that three nodes and the
/// database on two cores keep them; short enough for a test).
const LEASES: &str = "[database]\nlease_ms = 4000\nfence_margin_ms = 1500\n";
const MARGIN_MS: i64 = 1500;

/// One cluster at a time: three nodes and the database already fill the
/// two cores, and timing checks (rate windows, fences) measured beside a
/// second cluster would measure that crowding instead.
fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn sent(api: &Api, id: u64) -> u64 {
    api.ok_get(&format!("/campaigns/{id}"))["stats"]["sent"]
        .as_u64()
        .unwrap()
}

fn wait_sent(api: &Api, id: u64, n: u64) {
    api.wait_campaign(id, Duration::from_secs(180), |c| {
        c["stats"]["sent"].as_u64().unwrap() >= n || c["status"] == "sent"
    });
}

/// Checks a finished campaign of `n` subscribers against what the nodes
/// did: every subscriber's message went out, deliveries beyond one per
/// subscriber are no more than the messages flagged as possible
/// duplicates, and the counters equal a count over the stored messages.
/// Returns (extra deliveries, flagged).
fn check_complete(c: &Cluster, api: &Api, id: u64, n: usize) -> (i64, i64) {
    let campaign = api.wait_campaign(id, Duration::from_secs(240), |c| c["status"] == "sent");
    let lines: Vec<Value> = c.outboxes().into_iter().map(|(_, l)| l).collect();
    let mut per: HashMap<&str, i64> = HashMap::new();
    for l in lines
        .iter()
        .filter(|l| l["message_id"].as_str().unwrap().starts_with(&format!("posta.{id}.")))
    {
        *per.entry(l["to"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(per.len(), n, "subscribers reached");
    let extra: i64 = per.values().map(|k| k - 1).sum();
    let q = |cond: &str| {
        c.count(&format!(
            "SELECT count(*) FROM messages WHERE campaign_id = {id} AND {cond}"
        ))
    };
    let flagged = q("(record->>'possible_duplicate')::boolean");
    assert!(extra <= flagged, "{extra} extra deliveries, {flagged} flagged");
    let stats = &campaign["stats"];
    assert_eq!(stats["sent"].as_i64().unwrap(), q("status = 'sent'"), "{stats}");
    assert_eq!(stats["failed"].as_i64().unwrap(), q("status = 'failed'"), "{stats}");
    assert_eq!(stats["possible_duplicates"].as_i64().unwrap(), flagged, "{stats}");
    assert_eq!(stats["sent"].as_u64().unwrap() as usize, n, "{stats}");
    assert_eq!(q("status = 'queued'"), 0);
    (extra, flagged)
}

#[test]
fn a_node_killed_three_times_mid_send_loses_nothing() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 100_000;
    let mut c = Cluster::start(3, LEASES);
    let api = c.nodes[0].api(&c.key);
    let list = api.list_of("k", N);
    let id = api.send_campaign(list, json!({}));
    for kill in 1..=3u64 {
        wait_sent(&api, id, kill * 20_000);
        c.nodes[2].kill();
        std::thread::sleep(Duration::from_millis(300));
        c.nodes[2].start_again();
    }
    let (extra, flagged) = check_complete(&c, &api, id, N);
    println!(
        "3 kills: {extra} extra deliveries, {flagged} flagged (bound {})",
        3 * WINDOW
    );
    assert!(flagged <= 3 * WINDOW, "{flagged} flagged after 3 kills");
    let per_node: Vec<usize> = c.nodes.iter().map(|n| n.outbox_lenient().0.len()).collect();
    assert!(per_node.iter().all(|&k| k > 0), "every node delivered: {per_node:?}");
}

#[test]
fn a_frozen_node_calls_nothing_past_its_fence_and_its_late_outcomes_are_refused() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 30_000;
    let c = Cluster::start(3, LEASES);
    let api = c.nodes[0].api(&c.key);
    let list = api.list_of("f", N);
    // Paced, so every node is mid-send when one freezes.
    let id = api.send_campaign(list, json!({"send_rate": 240_000}));
    wait_sent(&api, id, 3_000);
    let frozen = &c.nodes[2];
    frozen.signal("STOP");
    let stopped_at = now_ms();
    // Its last heartbeat is in the database: its fence falls at least the
    // margin before that lease's end.
    std::thread::sleep(Duration::from_millis(200));
    let pid = frozen.pid();
    let lease_until = c.count(&format!(
        "SELECT (extract(epoch FROM lease_until) * 1000)::bigint FROM nodes WHERE name LIKE '%:{pid}' ORDER BY id DESC LIMIT 1"
    ));
    let fence = lease_until - MARGIN_MS;
    // The others take its messages over once its lease lapses and finish.
    api.wait_campaign(id, Duration::from_secs(120), |c| c["status"] == "sent");
    let frozen_for = now_ms() - stopped_at;
    std::thread::sleep(Duration::from_millis(15_000u64.saturating_sub(frozen_for as u64)));
    frozen.signal("CONT");
    std::thread::sleep(Duration::from_secs(3));
    let late: Vec<i64> = frozen
        .outbox_lenient()
        .0
        .iter()
        .map(|l| l["logged_at_ms"].as_i64().unwrap())
        .filter(|&t| t > fence)
        .collect();
    assert!(
        late.is_empty(),
        "{} calls after the fence ({fence}, frozen at {stopped_at}): {late:?}",
        late.len()
    );
    assert!(
        frozen.log().contains("outcomes refused"),
        "the frozen node's late outcomes were not refused:\n{}",
        frozen.log()
    );
    let (extra, flagged) = check_complete(&c, &api, id, N);
    println!(
        "frozen 15 s: fence {} ms after the freeze; {extra} extra, {flagged} flagged",
        fence - stopped_at
    );
}

#[test]
fn pause_through_one_node_stops_all_and_cancel_stops_every_call_within_a_second() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 40_000;
    let c = Cluster::start(3, LEASES);
    let apis: Vec<Api> = c.nodes.iter().map(|n| n.api(&c.key)).collect();
    let list = apis[0].list_of("p", N);
    let id = apis[0].send_campaign(list, json!({"send_rate": 60_000}));
    wait_sent(&apis[0], id, 2_000);
    let messages = || c.count(&format!("SELECT count(*) FROM messages WHERE campaign_id = {id}"));

    assert_eq!(apis[0].post(&format!("/campaigns/{id}/pause"), json!({})).0, 200);
    let queued_at_pause = messages();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(messages(), queued_at_pause, "a node queued messages after the pause");
    let before = sent(&apis[1], id);

    assert_eq!(apis[1].post(&format!("/campaigns/{id}/resume"), json!({})).0, 200);
    wait_sent(&apis[1], id, before + 2_000);

    let asked = now_ms();
    assert_eq!(apis[2].post(&format!("/campaigns/{id}/cancel"), json!({})).0, 200);
    let answered = now_ms();
    std::thread::sleep(Duration::from_secs(3));
    let mut last = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let t = node
            .outbox_lenient()
            .0
            .iter()
            .map(|l| l["logged_at_ms"].as_i64().unwrap())
            .max()
            .unwrap_or_else(|| panic!("node {i} made no call"));
        last.push(t - answered);
    }
    println!(
        "cancel answered {} ms after it was asked; each node's last call, ms after the answer: {last:?}",
        answered - asked
    );
    assert!(last.iter().all(|&t| t <= 1_000), "{last:?}");
    let done = apis[0].wait_campaign(id, Duration::from_secs(30), |c| {
        c["status"] == "cancelled" && c["stats"]["pending"] == 0
    });
    assert!(done["stats"]["cancelled"].as_u64().unwrap() > 0, "{done}");
}

#[test]
fn a_transport_rate_limit_is_shared_exactly_by_three_nodes() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 1_500;
    let c = Cluster::start(
        3,
        &format!(
            r#"
default_transport = "paced"
[transports.paced]
component = "log"
rate_limit = 6000
config = {{ path = "{{data_dir}}/outbox/outbox.jsonl" }}
capabilities = {{ dirs = ["{{data_dir}}/outbox"] }}
{LEASES}"#
        ),
    );
    let api = c.nodes[0].api(&c.key);
    let list = api.list_of("r", N);
    let id = api.send_campaign(list, json!({}));
    check_complete(&c, &api, id, N);
    let outboxes = c.outboxes();
    let mut times: Vec<i64> = outboxes
        .iter()
        .map(|(_, l)| l["logged_at_ms"].as_i64().unwrap())
        .collect();
    times.sort_unstable();
    let per_node: Vec<usize> = (0..3)
        .map(|i| outboxes.iter().filter(|(n, _)| *n == i).count())
        .collect();
    let busiest = times
        .iter()
        .map(|&t| times.partition_point(|&u| u < t + 1000) - times.partition_point(|&u| u < t))
        .max()
        .unwrap();
    let span = (times[N - 1] - times[0]) as f64 / 1000.0;
    let per_minute = (N - 1) as f64 / span * 60.0;
    println!("6,000/min over 3 nodes: {per_minute:.1}/min, busiest second {busiest}, per node {per_node:?}");
    assert!(per_node.iter().all(|&k| k > 0), "every node sent: {per_node:?}");
    assert!(busiest <= 101, "{busiest} calls within one second");
    assert!(
        (per_minute - 6000.0).abs() <= 6000.0 * 0.02,
        "{per_minute:.1}/min is not within 2% of 6,000/min"
    );
}

#[test]
fn a_scheduled_campaign_fires_once_when_its_leader_is_killed() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 500;
    let mut c = Cluster::start(3, &format!("[webhooks]\nallow_private = true\n{LEASES}"));
    let leader = c.leader();
    let other = (leader + 1) % 3;
    let api = c.nodes[other].api(&c.key);
    let peer = HttpPeer::start(&c.nodes[other].data_dir);
    let (status, hook) = api.post(
        "/webhooks",
        json!({"url": peer.url("/events"), "events": ["campaign.started"]}),
    );
    assert_eq!(status, 201, "{hook}");
    let list = api.list_of("s", N);
    let at = chrono::Utc::now() + chrono::Duration::seconds(4);
    let id = api.campaign(list, json!({"scheduled_at": at.to_rfc3339()}));
    let (status, body) = api.post(&format!("/campaigns/{id}/send"), json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "scheduled");
    c.nodes[leader].kill();
    api.wait_campaign(id, Duration::from_secs(30), |c| c["status"] != "scheduled");
    println!(
        "leader killed; the campaign fired {:.1} s after its time",
        (chrono::Utc::now() - at).num_milliseconds() as f64 / 1000.0
    );
    assert_eq!(check_complete(&c, &api, id, N), (0, 0));
    // One start: a second firing would have reported a second one.
    std::thread::sleep(Duration::from_secs(2));
    let starts: Vec<Value> = peer.requests().into_iter().filter(|r| r["path"] == "/events").collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    let leaders = (0..3)
        .filter(|&i| i != leader)
        .filter(|&i| c.nodes[i].log().contains("leading the scheduler"));
    assert_eq!(leaders.count(), 1, "one surviving node took the lead");
}
