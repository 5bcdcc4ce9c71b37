//! SMTP into Postfix's own `smtpd` (#35): a private Postfix instance on
//! loopback whose every transport is `discard`, so each message goes the
//! real way (smtpd, cleanup writing and syncing a queue file, qmgr, discard)
//! and is then thrown away. Unlike `smtp-sink` it offers CHUNKING, so this
//! is where Posta's `BDAT … LAST` is measured beside its `DATA`, with
//! `smtp-source -d` (connections kept, no pipelining, DATA) as the limit.
//!
//! Starting a Postfix master needs root (it switches to the `postfix`
//! user); without root the section says so and is skipped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use posta_e2e::{Server, json};

use super::delivery::{calibrate, chmod, free_port, is_root, postfix_tool, smtp_source, wait_listening};
use super::{Report, campaign, import, median, send_and_wait};

/// A Postfix instance of its own (config, queue and data under a temp
/// dir), listening on `127.0.0.1:port`; stopped on drop.
struct Smtpd {
    dir: tempfile::TempDir,
    port: u16,
}

impl Smtpd {
    fn start() -> Smtpd {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Postfix's daemons run as `postfix` and must reach the queue.
        chmod("755", root);
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let chown = Command::new("chown").arg("postfix").arg(root.join("data")).status();
        assert!(
            chown.is_ok_and(|s| s.success()),
            "chown postfix (is postfix installed?)"
        );
        let port = free_port();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {root}/queue\n\
             data_directory = {root}/data\n\
             maillog_file_prefixes = {root}\n\
             maillog_file = {root}/maillog\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = bench.localdomain\n\
             mydestination =\n\
             relayhost =\n\
             mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             default_transport = discard:bench\n\
             relay_transport = discard:bench\n\
             local_transport = discard:bench\n",
            root = root.display()
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).unwrap();
        // Debian's master.cf with the smtp service moved to our port.
        let master = std::fs::read_to_string("/etc/postfix/master.cf").expect("/etc/postfix/master.cf");
        let master: String = master
            .lines()
            .map(|l| match l.strip_prefix("smtp      inet") {
                Some(rest) => format!("127.0.0.1:{port} inet{rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        assert!(
            master.contains(&format!("127.0.0.1:{port} inet")),
            "no smtp service in master.cf"
        );
        std::fs::write(root.join("etc/master.cf"), master).unwrap();
        let smtpd = Smtpd { dir, port };
        let out = smtpd.postfix("start");
        assert!(
            out.status.success(),
            "postfix start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            smtpd.log_tail()
        );
        wait_listening(port, || format!("Postfix smtpd did not listen: {}", smtpd.log_tail()));
        smtpd
    }

    fn postfix(&self, verb: &str) -> std::process::Output {
        Command::new(postfix_tool("postfix"))
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg(verb)
            .output()
            .expect("run postfix")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The SMTP commands smtpd counted on connections that have ended
    /// (its `disconnect from … mail=N rcpt=N bdat=N …` lines), summed.
    fn commands(&self) -> std::collections::BTreeMap<String, u64> {
        let log = std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for line in log.lines().filter(|l| l.contains("disconnect from")) {
            for (word, n) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
                if let Ok(n) = n.parse::<u64>() {
                    *counts.entry(word.to_string()).or_insert(0) += n;
                }
            }
        }
        counts
    }

    /// Waits until the queue is empty: every accepted message discarded.
    fn drained(&self) {
        let start = Instant::now();
        let queued = |sub: &str| walk(&self.dir.path().join("queue").join(sub));
        while queued("incoming") + queued("active") + queued("deferred") + queued("maildrop") > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "Postfix never drained its queue"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Files under `dir`, recursively.
fn walk(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path()),
            _ => 1,
        })
        .sum()
}

/// CPU seconds the whole machine has been busy (`/proc/stat`), every
/// process together.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and
    // iowait, in clock ticks (100 a second on Linux).
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum::<f64>() / 100.0
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.postfix("stop");
    }
}

fn config(port: u16, connections: &[usize]) -> String {
    let mut toml = String::from("[server]\nmax_body_bytes = 16777216\n");
    for &c in connections {
        for (name, chunking) in [("bdat", true), ("data", false)] {
            toml.push_str(&format!(
                r#"
[transports.{name}{c}]
component = "smtp"
config = {{ host = "127.0.0.1", port = {port}, tls = "none", chunking = {chunking} }}
capabilities = {{ connect = ["127.0.0.1:{port}"] }}
max_in_flight = {c}
"#
            ));
        }
    }
    toml
}

pub fn chunking(r: &mut Report, n: usize, runs: usize) {
    r.section(&format!(
        "SMTP into Postfix's own smtpd (discard transport): BDAT beside DATA, {n} messages"
    ));
    if !is_root() {
        r.line("Skipped: starting a Postfix instance needs root.");
        return;
    }
    let (size, payload) = calibrate();
    let smtpd = Smtpd::start();
    let connections = [1usize, 8];
    let (server, key, _) = Server::with_config(&config(smtpd.port, &connections));
    let api = server.api(&key);
    let (list, _) = import(&api, "smtpd", n);
    r.line(
        "| connections | smtp-source -d (DATA) | Posta, DATA | Posta, BDAT (CHUNKING) | BDAT / DATA | Posta BDAT / \
         smtp-source -d | Posta's CPU per message, DATA / BDAT | machine CPU per message, smtp-source's run |",
    );
    r.line("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let run = |transport: String| {
        let id = campaign(
            &api,
            list,
            json!({"transport": transport, "from_email": "news@example.org"}),
        );
        let cpu = server.cpu_seconds();
        let took = send_and_wait(&api, id, Duration::from_millis(10), |_| {});
        let cpu = (server.cpu_seconds() - cpu) / n as f64 * 1e6;
        let stats = api.ok_get(&format!("/campaigns/{id}"))["stats"].clone();
        assert_eq!(
            stats["sent"],
            n as u64,
            "every message accepted: {stats}\n{}",
            smtpd.log_tail()
        );
        smtpd.drained();
        (n as f64 / took.as_secs_f64(), cpu)
    };
    for c in connections {
        let (mut source, mut data, mut bdat) = (Vec::new(), Vec::new(), Vec::new());
        let (mut data_cpu, mut bdat_cpu, mut machine_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let busy = machine_busy();
            source.push(smtp_source(smtpd.port, c, n, payload, true));
            smtpd.drained();
            machine_cpu.push((machine_busy() - busy) / n as f64 * 1e6);
            let (rate, cpu) = run(format!("data{c}"));
            data.push(rate);
            data_cpu.push(cpu);
            let (rate, cpu) = run(format!("bdat{c}"));
            bdat.push(rate);
            bdat_cpu.push(cpu);
        }
        let (source, data, bdat) = (median(source), median(data), median(bdat));
        r.line(&format!(
            "| {c} | {source:.0} msg/s | {data:.0} msg/s | **{bdat:.0} msg/s** | {:.2} | {:.2} | {:.0} µs / {:.0} µs | \
             {:.0} µs |",
            bdat / data,
            bdat / source,
            median(data_cpu),
            median(bdat_cpu),
            median(machine_cpu)
        ));
    }
    // Posta's connections end with the server; then smtpd has logged
    // what each connection carried.
    drop(server);
    let start = Instant::now();
    let (bdat, data) = loop {
        let counts = smtpd.commands();
        let get = |k: &str| counts.get(k).copied().unwrap_or(0);
        let expected = (n * runs * connections.len()) as u64;
        if (get("bdat") >= expected && get("data") >= 2 * expected) || start.elapsed() > Duration::from_secs(10) {
            break (get("bdat"), get("data"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    r.line("");
    r.line(&format!(
        "smtpd counted {bdat} BDAT and {data} DATA commands over all runs (smtp-source and Posta's DATA column: \
         {} each; Posta's BDAT column: {}).",
        n * runs * connections.len(),
        n * runs * connections.len()
    ));
    r.line(&format!(
        "Median of {runs} runs each, the three senders alternating into one Postfix 3.7 instance (smtpd, cleanup, \
         qmgr, `discard`; its queue files are written and synced as for real mail). Message size {size} bytes (as the \
         smtp-sink section). Each run waits for Postfix's queue to empty before the next. smtp-source cannot \
         pipeline or chunk; Posta's DATA column is the same transport with `chunking = false` (still pipelined). \
         Postfix's own processes share the two cores with the sender: the machine's CPU per message while \
         smtp-source sends (smtp-source itself takes little) is what Postfix costs, and Posta's CPU per message \
         (its server process over the send) comes on top of it."
    ));
}
