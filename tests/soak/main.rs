//! `just soak MINUTES`: many clients drive lifecycle actions on many
//! campaigns while they send, through the real binary; then every campaign
//! is settled and the invariants are checked:
//!
//! - no request got a 5xx and the server log has no panic;
//! - every campaign ends sent or cancelled with nothing pending or queued;
//! - stats equal the message counts by status;
//! - each message id appears in the outbox at most once, and a campaign's
//!   outbox lines equal its `sent` count.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posta_e2e::{Api, Server, Value, json};

const LISTS: usize = 5;
const SUBSCRIBERS: usize = 2_000;
const CLIENTS: usize = 8;
/// Campaigns created (new or duplicated): enough that new ones keep
/// starting through the whole run, as earlier ones finish.
fn max_campaigns(minutes: f64) -> usize {
    40 + (30.0 * minutes) as usize
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[derive(Default)]
struct Tally {
    /// (action, status code) → count
    actions: BTreeMap<(String, u16), u64>,
    violations: Vec<String>,
}

fn main() {
    let minutes: f64 = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(1.0);
    let (server, key, _) = Server::with_config("[delivery]\nwindow = 256\n");
    let api = server.api(&key);
    let lists: Vec<u64> = (0..LISTS)
        .map(|i| api.list_of(&format!("l{i}x"), SUBSCRIBERS))
        .collect();
    let campaigns: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    println!("soak: {CLIENTS} clients for {minutes} min against {}", server.base);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let api = server.api(&key);
            let (campaigns, tally, stop, lists) = (campaigns.clone(), tally.clone(), stop.clone(), lists.clone());
            let cap = max_campaigns(minutes);
            let load = deadline - started;
            std::thread::spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((n as u64 + 1) * 0x9e37_79b9));
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    // New campaigns are spread over the run, so some are
                    // always sending while the clients act on them.
                    let share = started.elapsed().as_secs_f64() / load.as_secs_f64();
                    let cap = 10 + (cap as f64 * share.min(1.0)) as usize;
                    drive(&api, &mut rng, &lists, &campaigns, &tally, cap);
                    std::thread::sleep(Duration::from_millis(rng.next() % 50));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let ids = campaigns.lock().unwrap().clone();
    println!(
        "soak: load phase done after {:.0} s; settling {} campaigns",
        started.elapsed().as_secs_f64(),
        ids.len()
    );

    // Settle: resume what is paused and wait for every campaign to finish.
    for &id in &ids {
        let c = api.ok_get(&format!("/campaigns/{id}"));
        if c["status"] == "paused" {
            api.post(&format!("/campaigns/{id}/resume"), json!({}));
        }
    }
    let mut sent_total = 0;
    let mut t = tally.lock().unwrap();
    for &id in &ids {
        let c = api.wait_campaign(id, Duration::from_secs(600), |c| {
            matches!(c["status"].as_str(), Some("sent" | "cancelled" | "draft"))
                && c["stats"]["queued"] == 0
                && c["stats"]["pending"] == 0
        });
        sent_total += c["stats"]["sent"].as_u64().unwrap_or(0);
        check_campaign(&api, &c, &mut t.violations);
    }
    check_outbox(&server, &ids, &api, &mut t.violations);
    let log = server.log();
    if log.contains("panicked") {
        t.violations.push("the server log has a panic".into());
    }
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    if errors > 0 {
        t.violations.push(format!("{errors} ERROR lines in the server log"));
    }

    println!("soak summary");
    println!(
        "  duration: {:.1} min (load {minutes} min + settling)",
        started.elapsed().as_secs_f64() / 60.0
    );
    println!("  campaigns: {}, messages sent: {sent_total}", ids.len());
    println!("  server RSS at the end: {} MiB", server.rss_kib() / 1024);
    println!("  requests by action and status:");
    for ((action, status), n) in &t.actions {
        println!("    {action:<10} {status}  {n}");
    }
    if t.violations.is_empty() {
        println!("  invariants: all held");
    } else {
        println!("  VIOLATIONS ({}):", t.violations.len());
        for v in &t.violations {
            println!("    {v}");
        }
        std::process::exit(1);
    }
}

fn record(tally: &Mutex<Tally>, action: &str, status: u16, body: &Value) {
    let mut t = tally.lock().unwrap();
    *t.actions.entry((action.to_string(), status)).or_default() += 1;
    if status >= 500 {
        t.violations.push(format!("{action}: {status} {body}"));
    }
}

fn drive(api: &Api, rng: &mut Rng, lists: &[u64], campaigns: &Mutex<Vec<u64>>, tally: &Mutex<Tally>, cap: usize) {
    let known = campaigns.lock().unwrap().clone();
    let roll = rng.next() % 100;
    if known.is_empty() || (roll < 10 && known.len() < cap) {
        let rate = match rng.pick(&[0, 6_000, 30_000, 120_000]) {
            0 => Value::Null,
            n => json!(n),
        };
        let (status, c) = api.post(
            "/campaigns",
            json!({"name": "soak", "subject": "Hi {{ subscriber.email }}", "from_email": "s@example.org",
                   "list_id": rng.pick(lists), "text": "t", "send_rate": rate}),
        );
        record(tally, "create", status, &c);
        if let Some(id) = c["id"].as_u64() {
            let (status, body) = api.post(&format!("/campaigns/{id}/send"), json!({}));
            record(tally, "send", status, &body);
            campaigns.lock().unwrap().push(id);
        }
        return;
    }
    let id = rng.pick(&known);
    let mut action = rng.pick(&[
        "pause",
        "resume",
        "resume",
        "pause",
        "get",
        "messages",
        "duplicate",
        "cancel",
    ]);
    if action == "duplicate" && known.len() >= cap {
        action = "get";
    }
    let (status, body) = match action {
        "get" => api.get(&format!("/campaigns/{id}")),
        "messages" => api.get(&format!("/campaigns/{id}/messages?limit=100")),
        "cancel" if !rng.next().is_multiple_of(4) => return, // rarer than the rest
        "duplicate" => {
            let r = api.post(&format!("/campaigns/{id}/duplicate"), json!({}));
            if let Some(copy) = r.1["id"].as_u64() {
                let (s, b) = api.post(&format!("/campaigns/{copy}/send"), json!({}));
                record(tally, "send", s, &b);
                campaigns.lock().unwrap().push(copy);
            }
            r
        }
        other => api.post(&format!("/campaigns/{id}/{other}"), json!({})),
    };
    record(tally, action, status, &body);
}

fn check_campaign(api: &Api, c: &Value, violations: &mut Vec<String>) {
    let id = c["id"].as_u64().unwrap();
    let stats = &c["stats"];
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    if n("total") != n("sent") + n("failed") + n("skipped") + n("cancelled") {
        violations.push(format!("campaign {id}: stats do not add up: {stats}"));
    }
    let mut counted: HashMap<String, u64> = HashMap::new();
    for m in api.all_messages(id, "") {
        *counted.entry(m["status"].as_str().unwrap().to_string()).or_default() += 1;
    }
    for k in ["queued", "sent", "failed", "skipped", "cancelled"] {
        let got = counted.get(k).copied().unwrap_or(0);
        if got != n(k) {
            violations.push(format!(
                "campaign {id}: stats.{k} = {} but {got} messages are {k}",
                n(k)
            ));
        }
    }
}

fn check_outbox(server: &Server, ids: &[u64], api: &Api, violations: &mut Vec<String>) {
    let mut per_message: HashMap<String, u64> = HashMap::new();
    let mut per_campaign: HashMap<u64, u64> = HashMap::new();
    for line in server.outbox() {
        let mid = line["message_id"].as_str().unwrap().to_string();
        // posta.CAMPAIGN.SUBSCRIBER@domain
        if let Some(c) = mid.split('.').nth(1).and_then(|c| c.parse().ok()) {
            *per_campaign.entry(c).or_default() += 1;
        }
        *per_message.entry(mid).or_default() += 1;
    }
    let twice: Vec<_> = per_message.iter().filter(|(_, n)| **n > 1).collect();
    if !twice.is_empty() {
        violations.push(format!(
            "{} messages delivered more than once, e.g. {:?}",
            twice.len(),
            twice[0]
        ));
    }
    for &id in ids {
        let c = api.ok_get(&format!("/campaigns/{id}"));
        let sent = c["stats"]["sent"].as_u64().unwrap_or(0);
        let lines = per_campaign.get(&id).copied().unwrap_or(0);
        if sent != lines {
            violations.push(format!("campaign {id}: {sent} sent but {lines} outbox lines"));
        }
    }
}
