//! Real nodes on one PostgreSQL database, each with its own log-transport
//! outbox: what one node's crash, freeze, pause, cancel, shared rate or
//! lost leadership, and the database's own restarts and outages, do to a
//! send, read from the outboxes (the transport calls made) and from the
//! database (what was stored).
//!
//! A binary of its own: cargo runs test binaries one after another, so
//! these timing checks never share the two cores with other suites.

mod outage;
mod providers;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// The campaign, waiting through answers other than 200 (a node whose
/// database just came back may answer 503 once or twice).
fn poll_campaign(api: &Api, id: u64, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        let (status, c) = api.get(&format!("/campaigns/{id}"));
        if status == 200 {
            if pred(&c) {
                return c;
            }
            last = c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("campaign {id} never reached the expected state: {last}");
}

fn sent(api: &Api, id: u64) -> u64 {
    poll_campaign(api, id, Duration::from_secs(30), |_| true)["stats"]["sent"]
        .as_u64()
        .unwrap()
}

fn wait_sent(api: &Api, id: u64, n: u64) {
    poll_campaign(api, id, Duration::from_secs(180), |c| {
        c["stats"]["sent"].as_u64().unwrap() >= n || c["status"] == "sent"
    });
}

/// What a finished send did.
struct Delivered {
    /// Deliveries beyond one per subscriber (whole outbox lines).
    extra: i64,
    /// Outbox lines a SIGKILL cut short.
    torn: usize,
    /// Messages flagged as possible duplicates.
    flagged: i64,
    /// Node registrations whose lease ended (killed, frozen, cut off).
    lapsed: i64,
}

impl std::fmt::Display for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} extra deliveries, {} torn lines, {} flagged, {} lapsed registrations",
            self.extra, self.torn, self.flagged, self.lapsed
        )
    }
}

/// Checks a finished campaign of `n` subscribers against what the nodes
/// did, recipient by recipient: every subscriber's message went out; every
/// subscriber reached more than once has its message flagged as a possible
/// duplicate; a torn line (a call cut by a kill) is no more than the
/// flagged messages; no registration that lapsed left more than the
/// window flagged; the counters equal a count over the stored messages.
fn check_complete(c: &Cluster, api: &Api, id: u64, n: usize) -> Delivered {
    let campaign = poll_campaign(api, id, Duration::from_secs(240), |c| c["status"] == "sent");
    let prefix = format!("posta.{id}.");
    let mut per: HashMap<String, i64> = HashMap::new();
    // Where and when each recipient's calls were made, to explain a failure.
    let mut calls: HashMap<String, Vec<(usize, i64)>> = HashMap::new();
    let mut torn = 0;
    for (i, node) in c.nodes.iter().enumerate() {
        let (lines, cut) = node.outbox_lenient();
        torn += cut;
        for l in lines
            .iter()
            .filter(|l| l["message_id"].as_str().unwrap().starts_with(&prefix))
        {
            let to = l["to"].as_str().unwrap().to_string();
            *per.entry(to.clone()).or_default() += 1;
            calls
                .entry(to)
                .or_default()
                .push((i, l["logged_at_ms"].as_i64().unwrap()));
        }
    }
    assert_eq!(per.len(), n, "subscribers reached");
    let flagged: HashSet<String> = c
        .sql(&format!(
            "SELECT record->>'email' FROM messages WHERE campaign_id = {id} AND (record->>'possible_duplicate')::boolean"
        ))
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let unflagged: Vec<(&String, &i64)> = per.iter().filter(|(to, k)| **k > 1 && !flagged.contains(*to)).collect();
    if !unflagged.is_empty() {
        let shown: Vec<String> = unflagged
            .iter()
            .take(5)
            .map(|(to, _)| {
                let row = c.sql(&format!(
                    "SELECT lease_node, record::text FROM messages WHERE campaign_id = {id} AND record->>'email' = '{to}'"
                ));
                format!("{to}: calls (node, ms) {:?}, stored {row:?}", calls[*to])
            })
            .collect();
        let nodes = c.sql("SELECT id, name, lease_until, ttl_ms FROM nodes ORDER BY id");
        panic!(
            "{} subscribers reached more than once without a flag:\n{}\nregistrations: {nodes:?}",
            unflagged.len(),
            shown.join("\n")
        );
    }
    let flagged = flagged.len() as i64;
    assert!(torn as i64 <= flagged, "{torn} torn lines, {flagged} flagged");
    let lapsed = c.count("SELECT count(*) FROM nodes WHERE lease_until <= clock_timestamp()");
    assert!(
        flagged <= WINDOW * lapsed,
        "{flagged} flagged, more than the window ({WINDOW}) for each of {lapsed} lapsed registrations"
    );
    let q = |cond: &str| {
        c.count(&format!(
            "SELECT count(*) FROM messages WHERE campaign_id = {id} AND {cond}"
        ))
    };
    let stats = &campaign["stats"];
    assert_eq!(stats["sent"].as_i64().unwrap(), q("status = 'sent'"), "{stats}");
    assert_eq!(stats["failed"].as_i64().unwrap(), q("status = 'failed'"), "{stats}");
    assert_eq!(stats["possible_duplicates"].as_i64().unwrap(), flagged, "{stats}");
    assert_eq!(stats["sent"].as_u64().unwrap() as usize, n, "{stats}");
    assert_eq!(q("status = 'queued'"), 0);
    Delivered {
        extra: per.values().map(|k| k - 1).sum(),
        torn,
        flagged,
        lapsed,
    }
}

/// When the log line containing `what` was written, in ms since the epoch
/// (the log's timestamps are UTC, RFC 3339, after colour codes).
fn logged_at(log: &str, what: &str) -> Option<i64> {
    let line = log.lines().rev().find(|l| l.contains(what))?;
    let plain: String = strip_colours(line);
    let stamp = plain.split_whitespace().next()?;
    Some(chrono::DateTime::parse_from_rfc3339(stamp).ok()?.timestamp_millis())
}

fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
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
    let d = check_complete(&c, &api, id, N);
    println!("3 kills: {d}");
    let per_node: Vec<usize> = c.nodes.iter().map(|n| n.outbox_lenient().0.len()).collect();
    assert!(per_node.iter().all(|&k| k > 0), "every node delivered: {per_node:?}");
    let took_over = c.nodes[..2]
        .iter()
        .any(|n| n.log().contains("re-delivering messages of a node whose lease lapsed"));
    assert!(took_over, "no surviving node took the killed node's messages over");
}

#[test]
fn a_frozen_node_resumed_mid_send_calls_nothing_between_its_fence_and_its_new_registration() {
    let _serial = one_cluster_at_a_time();
    const N: usize = 60_000;
    let c = Cluster::start(3, LEASES);
    let api = c.nodes[0].api(&c.key);
    let list = api.list_of("f", N);
    // Paced (~20 s at 3,000/s), so every node is mid-send when one freezes
    // and the send still runs when it wakes.
    let id = api.send_campaign(list, json!({"send_rate": 180_000}));
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
    // Frozen past its lease: the others take its messages over.
    std::thread::sleep(Duration::from_secs(9));
    let before = sent(&api, id);
    assert!((before as usize) < N, "the send ended while the node was frozen");
    let woke_at = now_ms();
    frozen.signal("CONT");
    let d = check_complete(&c, &api, id, N);
    let log = frozen.log();
    assert!(
        log.contains("outcomes refused"),
        "the frozen node's late outcomes were not refused:\n{log}"
    );
    let rejoined = logged_at(&log, "joined the cluster again").expect("the frozen node joined again");
    let calls: Vec<i64> = frozen
        .outbox_lenient()
        .0
        .iter()
        .map(|l| l["logged_at_ms"].as_i64().unwrap())
        .collect();
    let late: Vec<i64> = calls.iter().copied().filter(|&t| t > fence && t < rejoined).collect();
    // The fence bounds when a call starts. A call already past that check
    // when SIGSTOP landed (its line is stamped by the guest as it writes,
    // so at the wake) finishes when the node wakes: at most one, the log
    // transport's one worker, stamped right at the wake. Any other call
    // between the fence and the new registration started past the fence.
    let under_way = late.len() == 1 && (woke_at..woke_at + 250).contains(&late[0]);
    assert!(
        late.is_empty() || under_way,
        "{} calls between the fence ({fence}, frozen at {stopped_at}, woken at {woke_at}) and the new registration ({rejoined}): {late:?}",
        late.len()
    );
    let after = calls.iter().filter(|&&t| t >= rejoined).count();
    assert!(after > 0, "the woken node made no call under its new registration");
    println!(
        "frozen 9 s mid-send: fence {} ms after the freeze, joined again {} ms after the fence, {after} calls since; {d}",
        fence - stopped_at,
        rejoined - fence
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
    let done = poll_campaign(&apis[0], id, Duration::from_secs(30), |c| {
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
    poll_campaign(&api, id, Duration::from_secs(30), |c| c["status"] != "scheduled");
    println!(
        "leader killed; the campaign fired {:.1} s after its time",
        (chrono::Utc::now() - at).num_milliseconds() as f64 / 1000.0
    );
    let d = check_complete(&c, &api, id, N);
    assert_eq!((d.extra, d.flagged), (0, 0), "{d}");
    // One start: a second firing would have reported a second one.
    std::thread::sleep(Duration::from_secs(2));
    let starts: Vec<Value> = peer.requests().into_iter().filter(|r| r["path"] == "/events").collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    let leaders = (0..3)
        .filter(|&i| i != leader)
        .filter(|&i| c.nodes[i].log().contains("leading the scheduler"));
    assert_eq!(leaders.count(), 1, "one surviving node took the lead");
}
