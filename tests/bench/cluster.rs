//! The PostgreSQL delivery queue (`posta::store::pg`) with 1, 2 and 3
//! nodes in this process, each with its own pool, lease, claim loop,
//! transport workers and outcome writer, against a PostgreSQL server the
//! harness starts with default durability (fsync and synchronous commit
//! on). Two transports: none at all (what the queue itself sustains on
//! this machine: the Postgres-bound ceiling) and a fixed 20 ms per call
//! with 32 calls in flight per node (so the nodes, not the two cores, are
//! the limit and throughput should grow with them).
//!
//! Then the same with real nodes: `posta serve` processes sharing one
//! database, delivering through the bundled `webhook` transport to a
//! receiver that answers each request after 20 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use posta::domain::message::{Job, Outcome, OutcomeKind};
use posta::domain::{CampaignDraft, CampaignId, Email, NewSubscriber, Status, SubscriberStatus, UserId};
use posta::store::pg::test_server::TestServer;
use posta::store::pg::{Node, PgStore};
use tokio::sync::mpsc;

use super::delivery::Receiver;
use super::{Report, send_and_wait};
use posta_e2e::cluster::Cluster;
use posta_e2e::{Value, json};

const CALLS_PER_NODE: usize = 32;

pub fn cluster(r: &mut Report, ceiling_n: usize, paced_n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    r.section("PostgreSQL delivery queue: 1, 2 and 3 nodes (in one process)");
    let mut ceiling = Vec::new();
    for nodes in 1..=3 {
        let (rate, note) = rt.block_on(run(nodes, ceiling_n, None));
        r.line(&format!(
            "- no transport, {nodes} node(s), {ceiling_n} messages: **{rate:.0} messages/s** ({note})"
        ));
        ceiling.push(rate);
    }
    let mut paced = Vec::new();
    for nodes in 1..=3 {
        let (rate, note) = rt.block_on(run(nodes, paced_n, Some(Duration::from_millis(20))));
        r.line(&format!(
            "- 20 ms per call, {CALLS_PER_NODE} calls in flight per node, {nodes} node(s), {paced_n} messages: \
             **{rate:.0} messages/s** ({note})"
        ));
        paced.push(rate);
    }
    let best = ceiling.iter().cloned().fold(0.0, f64::max);
    r.line("");
    r.line(&format!(
        "Ceiling on this machine: {best:.0} messages/s through claim + outcome transactions (durable commits). \
         With a 20 ms transport, 2 and 3 nodes reach {:.2}× and {:.2}× one node's throughput \
         (ideal 2× and 3×: {} calls in flight per node / 20 ms = {} messages/s per node).",
        paced[1] / paced[0],
        paced[2] / paced[0],
        CALLS_PER_NODE,
        CALLS_PER_NODE * 50
    ));
    r.line(
        "Each node claims batches of 500 (cursor, messages and counters in one transaction under the \
         campaign's row lock), leases them to itself, and stores outcomes in batches of up to 500 under its \
         lease. Checked after each run: every subscriber has one message, sent, and the counters agree.",
    );
    r.target(
        "PostgreSQL queue, 3 nodes / 1 node at 20 ms per call",
        "≥ 2.5×",
        format!("{:.2}×", paced[2] / paced[0]),
        paced[2] / paced[0] >= 2.5,
    );
}

/// 1, 2 and 3 `posta serve` nodes on one durable database, each with a
/// `webhook` transport of `CALLS_PER_NODE` calls in flight to a receiver
/// that answers after 20 ms.
pub fn real_nodes(r: &mut Report, n: usize) {
    r.section("PostgreSQL: 1, 2 and 3 real nodes, 20 ms per transport call");
    let receiver = Receiver::answering_after(Duration::from_millis(20));
    let port = receiver.port;
    let toml = format!(
        r#"
default_transport = "slow"
[transports.slow]
component = "webhook"
config = {{ url = "http://127.0.0.1:{port}/hook", secret = "bench-secret" }}
capabilities = {{ http = ["http://127.0.0.1:{port}"] }}
max_in_flight = {CALLS_PER_NODE}
[database]
max_connections = 16
"#
    );
    let mut rates = Vec::new();
    for nodes in 1..=3 {
        let c = Cluster::start_on(TestServer::durable(), nodes, &toml);
        let api = c.nodes[0].api(&c.key);
        let list = api.list_of("n", n);
        let id = api.campaign(list, json!({}));
        let mut done = Value::Null;
        let took = send_and_wait(&api, id, Duration::from_millis(10), |c| done = c.clone()).as_secs_f64();
        let stats = &done["stats"];
        assert_eq!(stats["sent"].as_u64().unwrap() as usize, n, "{stats}");
        let counted = c.count(&format!(
            "SELECT count(*) FROM messages WHERE campaign_id = {id} AND status = 'sent'"
        ));
        assert_eq!(counted as usize, n, "messages stored as sent");
        let rate = n as f64 / took;
        r.line(&format!(
            "- {nodes} node(s), {n} messages: **{rate:.0} messages/s** ({took:.1} s from send to sent; \
             {} flagged possible duplicates)",
            stats["possible_duplicates"]
        ));
        rates.push(rate);
    }
    r.line("");
    r.line(&format!(
        "2 and 3 nodes reach {:.2}× and {:.2}× one node's throughput (ideal 2× and 3×: {CALLS_PER_NODE} calls in \
         flight per node / 20 ms = {} messages/s per node). Every node is a release `posta serve` with the \
         bundled personalizer and `webhook` transport (Wasm), all on this machine's two cores with PostgreSQL \
         and the receiver.",
        rates[1] / rates[0],
        rates[2] / rates[0],
        CALLS_PER_NODE * 50
    ));
    r.target(
        "Real nodes, 3 / 1 at 20 ms per call",
        "≥ 2.5×",
        format!("{:.2}×", rates[2] / rates[0]),
        rates[2] / rates[0] >= 2.5,
    );
}

fn subscriber(i: usize) -> NewSubscriber {
    NewSubscriber {
        email: Email::parse(&format!("s{i}@example.com")).unwrap(),
        name: String::new(),
        timezone: None,
        attributes: Default::default(),
        status: SubscriberStatus::Subscribed,
    }
}

/// One send of `n` messages by `nodes` nodes; messages per second and
/// what the check found.
async fn run(nodes: usize, n: usize, call: Option<Duration>) -> (f64, String) {
    let db = TestServer::durable().database();
    let store = PgStore::connect(&db.url, 4).await.unwrap();
    let user = UserId::new(1);
    let list = store.create_list(user, "bench".into()).await.unwrap().id;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        store
            .upsert_subscribers(user, list, chunk.iter().map(|&i| subscriber(i)).collect())
            .await
            .unwrap();
    }
    let id = store
        .create_campaign(user, CampaignDraft::minimal(list), "log".into(), Utc::now())
        .await
        .unwrap()
        .id;
    let start = Instant::now();
    store.send(user, id, Utc::now()).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..nodes {
        let (url, done) = (db.url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let store = PgStore::connect(&url, 4).await.unwrap();
            let node = Arc::new(
                store
                    .register_node(&format!("bench-{i}"), Duration::from_secs(30), Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
            node_loop(store, node, id, call, done).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    let (sent, flagged, counted): (i64, i64, i64) = {
        let client = tokio_postgres_client(&db.url).await;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'sent'),
                        count(*) FILTER (WHERE (record->>'possible_duplicate')::boolean),
                        (SELECT (run->'stats'->>'sent')::bigint FROM campaigns WHERE id = $1)
                 FROM messages WHERE campaign_id = $1",
                &[&(id.get() as i64)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        (sent, counted),
        (n as i64, n as i64),
        "every message sent once and counted"
    );
    (
        n as f64 / took.as_secs_f64(),
        format!("{:.2} s; {sent} sent, {flagged} flagged", took.as_secs_f64()),
    )
}

async fn tokio_postgres_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// A node: the claimer feeds `CALLS_PER_NODE` transport workers, whose
/// outcomes a writer stores in batches, until the campaign is sent.
async fn node_loop(store: PgStore, node: Arc<Node>, id: CampaignId, call: Option<Duration>, done: Arc<AtomicBool>) {
    let (jobs_tx, jobs_rx) = async_channel(CALLS_PER_NODE * 2);
    let (out_tx, mut out_rx) = mpsc::channel::<Outcome>(4_096);
    let mut workers = Vec::new();
    for _ in 0..CALLS_PER_NODE {
        let (jobs, out) = (jobs_rx.clone(), out_tx.clone());
        workers.push(tokio::spawn(async move {
            while let Some(job) = recv(&jobs).await {
                if let Some(d) = call {
                    tokio::time::sleep(d).await;
                }
                let outcome = Outcome {
                    campaign_id: job.campaign_id,
                    subscriber_id: job.subscriber.id,
                    attempts: 1,
                    kind: OutcomeKind::Sent { remote_id: None },
                };
                if out.send(outcome).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(out_tx);
    let writer = {
        let (store, node, done) = (store.clone(), node.clone(), done.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(500);
            while out_rx.recv_many(&mut batch, 500).await > 0 {
                let recorded = store.record_outcomes(&node, &batch, Utc::now()).await.unwrap();
                assert_eq!(recorded.rejected, 0);
                if recorded.campaigns.iter().any(|c| c.status == Status::Sent) {
                    done.store(true, Ordering::Release);
                }
                batch.clear();
            }
        })
    };
    while !done.load(Ordering::Acquire) {
        let step = store.claim(&node, id, 500, Utc::now()).await.unwrap();
        if step.campaign.status == Status::Sent {
            done.store(true, Ordering::Release);
        }
        if step.jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for job in step.jobs {
            jobs_tx.send(job).await.unwrap();
        }
    }
    drop(jobs_tx);
    for w in workers {
        w.await.unwrap();
    }
    writer.await.unwrap();
}

/// A bounded multi-consumer channel from tokio's parts: the workers share
/// one receiver behind a lock.
type JobRx = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

fn async_channel(cap: usize) -> (mpsc::Sender<Job>, JobRx) {
    let (tx, rx) = mpsc::channel(cap);
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

async fn recv(rx: &JobRx) -> Option<Job> {
    rx.lock().await.recv().await
}
