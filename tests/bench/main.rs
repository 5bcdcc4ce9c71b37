//! `just bench` (scripts/bench.sh): end-to-end benchmarks against the real
//! release binary, from this separate process, and BENCHMARKS.md with the
//! results, the criterion micro benchmarks and the machine they ran on.
//!
//! Sections: unthrottled 100k throughput, Wasm and native pipelines (median
//! of 3 each); API latency while a 100k campaign sends at full speed; a
//! 1,000,000-subscriber import and send (time, peak RSS, database size);
//! send_rate accuracy at 6,000/min for 60 s; SMTP into Postfix's
//! smtp-sink beside smtp-source, BDAT beside DATA into Postfix's own
//! smtpd (`postfix`), and the webhook into a local receiver
//! beside its own limit (`delivery`); the PostgreSQL delivery queue with
//! 1, 2 and 3 nodes (`cluster`). Numbers are printed, never
//! asserted: the machine is shared and noisy.
//!
//! Needs `POSTA_BIN` pointing at a release `posta` built with
//! `--features native-bench`; scripts/bench.sh builds it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use posta_e2e::{Api, Server, Value, json};

mod cluster;
mod delivery;
mod nginx;
mod postfix;
mod tracking;

struct Args {
    out: PathBuf,
    /// Small sizes, for checking the harness itself.
    quick: bool,
    /// Run only these sections (throughput, newsletter, latency, million, csv,
    /// tracking, rate, smtp, smtpd, webhook, languages, cluster, startup,
    /// micro).
    only: Vec<String>,
}

impl Args {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn args() -> Args {
    let mut out = PathBuf::from("BENCHMARKS.md");
    let mut quick = false;
    let mut only = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().expect("--out FILE")),
            "--quick" => quick = true,
            "--only" => only.push(it.next().expect("--only SECTION")),
            other => panic!("unknown argument {other:?} (expected --out FILE, --quick, --only SECTION)"),
        }
    }
    Args { out, quick, only }
}

use posta::demo::{HTML, SUBJECT, TEXT};

fn config(native: bool) -> String {
    let (personalizer, log) = if native {
        ("native:personalize", "native:log")
    } else {
        ("personalize", "log")
    };
    format!(
        r#"
personalizer = "{personalizer}"

[server]
max_body_bytes = 16777216

[transports.log]
component = "{log}"
config = {{ path = "{{data_dir}}/outbox/outbox.jsonl" }}
capabilities = {{ dirs = ["{{data_dir}}/outbox"] }}
max_in_flight = 1
"#
    )
}

/// A list of `n` subscribers with names, zones and attributes, imported
/// 10,000 per request; returns its id and the import time.
fn import(api: &Api, name: &str, n: usize) -> (u64, Duration) {
    const ZONES: &[&str] = &["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Sydney"];
    let id = api.ok_post("/lists", json!({ "name": name }))["id"].as_u64().unwrap();
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let subs: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({
                    "email": format!("reader{i}@example.org"),
                    "name": format!("Reader {i}"),
                    "timezone": ZONES[i % ZONES.len()],
                    "attributes": {"plan": if i % 3 == 0 { "pro" } else { "free" }},
                })
            })
            .collect();
        let (status, body) = api.post(&format!("/lists/{id}/subscribers"), Value::Array(subs));
        assert!(status < 300, "import failed: {status} {body}");
    }
    (id, start.elapsed())
}

fn campaign(api: &Api, list: u64, extra: Value) -> u64 {
    let mut body = json!({
        "name": "Bench", "subject": SUBJECT, "from_email": "news@example.org", "from_name": "Posta",
        "list_id": list, "html": HTML, "text": TEXT,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    api.ok_post("/campaigns", body)["id"].as_u64().unwrap()
}

/// Sends a campaign and waits until it is sent; the time from the send
/// request to the `sent` status.
fn send_and_wait(api: &Api, id: u64, poll: Duration, mut each: impl FnMut(&Value)) -> Duration {
    let start = Instant::now();
    api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    loop {
        let c = api.ok_get(&format!("/campaigns/{id}"));
        each(&c);
        if c["status"] == "sent" {
            return start.elapsed();
        }
        std::thread::sleep(poll);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Report {
    md: String,
    targets: Vec<(String, String, String, bool)>,
}

impl Report {
    fn section(&mut self, title: &str) {
        println!("\n== {title}");
        let _ = write!(self.md, "\n## {title}\n\n");
    }

    fn line(&mut self, text: &str) {
        println!("{text}");
        self.md.push_str(text);
        self.md.push('\n');
    }

    fn target(&mut self, what: &str, target: &str, measured: String, met: bool) {
        self.targets.push((what.into(), target.into(), measured, met));
    }
}

/// Unthrottled sends through the log transport of `n` subscribers, the
/// Wasm and native pipelines alternating, `runs` each, the campaign's
/// fields overridden by `fields`; a line per run, and each pipeline's
/// rates (messages/s) and server CPU per message (µs).
fn log_sends(r: &mut Report, n: usize, runs: usize, fields: &Value) -> [(Vec<f64>, Vec<f64>); 2] {
    let mut out = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    for run in 1..=runs {
        for native in [false, true] {
            let (server, key, _) = Server::with_config(&config(native));
            let api = server.api(&key);
            let (list, _) = import(&api, "bench", n);
            let id = campaign(&api, list, fields.clone());
            let cpu = server.cpu_seconds();
            let took = send_and_wait(&api, id, Duration::from_millis(5), |_| {});
            let cpu = (server.cpu_seconds() - cpu) / n as f64 * 1e6;
            let lines = std::fs::read_to_string(server.data_dir.join("outbox/outbox.jsonl"))
                .map(|t| t.lines().count())
                .unwrap_or(0);
            assert_eq!(lines, n, "every message in the outbox");
            let rate = n as f64 / took.as_secs_f64();
            let kind = if native { "native" } else { "wasm" };
            r.line(&format!(
                "- run {run}, {kind}: {:.2} s, {rate:.0} messages/s, server CPU {cpu:.0} µs per message",
                took.as_secs_f64()
            ));
            out[native as usize].0.push(rate);
            out[native as usize].1.push(cpu);
        }
    }
    out
}

/// Unthrottled send through the log transport, Wasm and native pipelines
/// alternating, `runs` each.
fn throughput(r: &mut Report, n: usize, runs: usize) -> f64 {
    r.section(&format!(
        "End-to-end throughput: {n} subscribers, unthrottled, log transport"
    ));
    let [(wasm, _), (native, _)] = log_sends(r, n, runs, &json!({}));
    let (wasm, native) = (median(wasm), median(native));
    let ratio = wasm / native;
    r.line("");
    r.line(&format!(
        "Median: **Wasm {wasm:.0} messages/s**, native {native:.0} messages/s, ratio Wasm/native **{ratio:.2}**."
    ));
    r.line(
        "Time is from `POST /send` to the campaign reading `sent` (every outcome stored), polled every 5 ms. \
         The native pipeline is the same server with the personalize and log components' own source compiled \
         in (`--features native-bench`, `native:personalize`, `native:log`).",
    );
    // #35's bar for the log path.
    r.target(
        "End-to-end throughput (100k, unthrottled)",
        "≥ 80,000 msg/s",
        format!("{wasm:.0} msg/s"),
        wasm >= 80_000.0,
    );
    r.target("Wasm / native pipeline", "≥ 0.9", format!("{ratio:.2}"), ratio >= 0.9);
    wasm
}

/// A newsletter's HTML body of about 40 KB: 150 styled rows with a link
/// each (four attribute quotes and a line end per 270-byte row: an escape
/// in the outbox's JSON every 55 bytes, as mail templates have), and the
/// demo's personal lines.
pub(crate) fn newsletter_html() -> String {
    let mut html = String::from("<html><body><table>\n");
    for i in 0..150 {
        html.push_str(&format!(
            "<tr><td style=\"padding:12px;font-family:Arial,sans-serif;font-size:15px;color:#333\">Lorem ipsum \
             dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore \
             magna aliqua. <a href=\"https://example.org/article/{i}\">Read more</a></td></tr>\n"
        ));
    }
    html.push_str(HTML);
    html.push_str("</table></body></html>");
    html
}

/// The log path with a newsletter-sized body: what the benchmark's short
/// demo message does not show (per-byte costs: rendering, escaping the
/// outbox line, copying into and out of the components).
fn newsletter(r: &mut Report, n: usize, runs: usize) {
    let html = newsletter_html();
    r.section(&format!(
        "End-to-end throughput: a {} KB newsletter, {n} subscribers, log transport",
        html.len() / 1000
    ));
    let [(wasm, wasm_cpu), (native, native_cpu)] = log_sends(r, n, runs, &json!({ "html": html }));
    let (wasm, native) = (median(wasm), median(native));
    r.line("");
    r.line(&format!(
        "Median: **Wasm {wasm:.0} messages/s** ({:.0} µs of server CPU per message), native {native:.0} messages/s \
         ({:.0} µs), ratio Wasm/native **{:.2}**. The same campaign as above with this HTML body; every line of \
         the outbox carries it, JSON-escaped.",
        median(wasm_cpu),
        median(native_cpu),
        wasm / native
    ));
}

/// Latency of `GET` campaign and pause/resume while a 100k campaign sends
/// unthrottled; the pause/resume target is a second, slow campaign so the
/// big one keeps going at full speed.
fn api_latency(r: &mut Report, n: usize, min_samples: usize) {
    r.section(&format!(
        "API latency while a {n}-subscriber campaign sends at full speed"
    ));
    let (server, key, _) = Server::with_config(&config(false));
    let api = server.api(&key);
    let (big, _) = import(&api, "big", n);
    let small = api.ok_post("/lists", json!({"name": "small"}))["id"].as_u64().unwrap();
    let people: Vec<Value> = (0..100)
        .map(|i| json!({"email": format!("s{i}@example.org")}))
        .collect();
    api.ok_post(&format!("/lists/{small}/subscribers"), Value::Array(people));
    let slow = campaign(&api, small, json!({"send_rate": 60}));
    api.ok_post(&format!("/campaigns/{slow}/send"), json!({}));

    let (mut get, mut pause, mut resume) = (Vec::new(), Vec::new(), Vec::new());
    let mut rounds = 0;
    let mut sent_rates = Vec::new();
    while get.len() < min_samples && rounds < 10 {
        rounds += 1;
        let id = campaign(&api, big, json!({}));
        let done = AtomicBool::new(false);
        let start = Instant::now();
        api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
        std::thread::scope(|s| {
            let getter = s.spawn(|| {
                let api = server.api(&key);
                let mut lat = Vec::new();
                loop {
                    let t = Instant::now();
                    let (status, c) = api.get(&format!("/campaigns/{id}"));
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(status, 200);
                    if c["status"] == "sent" {
                        done.store(true, Ordering::Release);
                        return (lat, start.elapsed());
                    }
                }
            });
            let toggler = s.spawn(|| {
                let api = server.api(&key);
                let (mut p, mut q) = (Vec::new(), Vec::new());
                while !done.load(Ordering::Acquire) {
                    let t = Instant::now();
                    let (a, _) = api.post(&format!("/campaigns/{slow}/pause"), json!({}));
                    p.push(t.elapsed().as_secs_f64() * 1e3);
                    let t = Instant::now();
                    let (b, _) = api.post(&format!("/campaigns/{slow}/resume"), json!({}));
                    q.push(t.elapsed().as_secs_f64() * 1e3);
                    assert!(a == 200 && b == 200, "pause {a}, resume {b}");
                }
                (p, q)
            });
            let (lat, took) = getter.join().unwrap();
            let (p, q) = toggler.join().unwrap();
            get.extend(lat);
            pause.extend(p);
            resume.extend(q);
            sent_rates.push(n as f64 / took.as_secs_f64());
        });
    }
    let mut rows = Vec::new();
    let mut worst_p99: f64 = 0.0;
    for (name, mut v) in [
        ("GET /campaigns/{id}", get),
        ("POST /campaigns/{id}/pause", pause),
        ("POST /campaigns/{id}/resume", resume),
    ] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p99 = percentile(&v, 0.99);
        worst_p99 = worst_p99.max(p99);
        rows.push(format!(
            "| {name} | {} | {:.2} | {p99:.2} | {:.2} |",
            v.len(),
            percentile(&v, 0.5),
            v.last().unwrap()
        ));
    }
    r.line("| request | samples | p50 ms | p99 ms | max ms |");
    r.line("|---|---:|---:|---:|---:|");
    for row in rows {
        r.line(&row);
    }
    r.line("");
    r.line(&format!(
        "{rounds} round(s) of a {n}-subscriber campaign; throughput meanwhile: {}. Two client threads in this \
         separate process, one request at a time each: one reads the sending campaign, the other pauses and \
         resumes a second, rate-limited campaign.",
        sent_rates
            .iter()
            .map(|r| format!("{r:.0} msg/s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    server_side_profile(r, &server);
    r.target(
        "API p99 while sending at full speed",
        "< 10 ms",
        format!("{worst_p99:.2} ms (worst of the three requests)"),
        worst_p99 < 10.0,
    );
}

/// Where the write requests' time goes, from the server's own histograms
/// (`/metrics`): the commit of each kind of writer, and the pause/resume
/// requests as the server timed them (no client or loopback in them).
fn server_side_profile(r: &mut Report, server: &Server) {
    let text = reqwest::blocking::get(format!("{}/metrics", server.base))
        .and_then(|r| r.text())
        .unwrap_or_default();
    let series = [
        (
            "commit, API writes",
            "posta_db_commit_seconds_bucket",
            "kind=\"interactive\"",
        ),
        (
            "commit, engine batches",
            "posta_db_commit_seconds_bucket",
            "kind=\"bulk\"",
        ),
        ("writer wait, API writes", "posta_db_writer_wait_seconds_bucket", ""),
        ("POST pause (server)", "posta_http_request_seconds_bucket", "/pause\""),
        ("POST resume (server)", "posta_http_request_seconds_bucket", "/resume\""),
    ];
    let bounds = ["0.001", "0.0025", "0.005", "0.01", "0.025", "+Inf"];
    r.line("");
    r.line("Server side, from `/metrics` (share of events at or under each bound; all rounds):");
    r.line("");
    r.line("| series | count | ≤ 1 ms | ≤ 2.5 ms | ≤ 5 ms | ≤ 10 ms | ≤ 25 ms |");
    r.line("|---|---:|---:|---:|---:|---:|---:|");
    for (name, metric, label) in series {
        let bucket = |le: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(metric) && l.contains(label) && l.contains(&format!("le=\"{le}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let total = bucket("+Inf");
        if total == 0.0 {
            continue;
        }
        let cells: Vec<String> = bounds[..5]
            .iter()
            .map(|le| format!("{:.1}%", 100.0 * bucket(le) / total))
            .collect();
        r.line(&format!("| {name} | {total:.0} | {} |", cells.join(" | ")));
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn million(r: &mut Report, n: usize) {
    r.section(&format!("{n} subscribers: import, send, memory, disk"));
    let (server, key, _) = Server::with_config(&config(false));
    let api = server.api(&key);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("million.csv");
    write_csv(&file, n);
    let rss_idle = server.rss_kib();
    // Streamed, as a user imports a list this size (`posta import`); the
    // JSON bulk import's speed is in the throughput section's setup.
    let list = api.ok_post("/lists", json!({"name": "million"}))["id"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let report = server.import_csv(&key, list, &file);
    let import_time = started.elapsed();
    assert_eq!(report["created"], n as u64, "{report}");
    let rss_after_import = server.rss_kib();
    let id = campaign(&api, list, json!({}));
    let mut max_sampled = 0;
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    let took = send_and_wait(&api, id, Duration::from_millis(20), |_| {
        if last_sample.elapsed() >= Duration::from_millis(100) {
            max_sampled = max_sampled.max(server.rss_kib());
            last_sample = Instant::now();
        }
    });
    let peak = server.peak_rss_kib();
    let db = file_size(&server.data_dir.join("posta.redb"));
    let outbox = file_size(&server.data_dir.join("outbox/outbox.jsonl"));
    let mib = |kib: u64| kib as f64 / 1024.0;
    r.line(&format!(
        "- import: {:.1} s ({:.0} subscribers/s, streamed CSV through `posta import`)",
        import_time.as_secs_f64(),
        n as f64 / import_time.as_secs_f64()
    ));
    r.line(&format!(
        "- send: {:.1} s ({:.0} messages/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    ));
    r.line(&format!(
        "- server RSS: {:.0} MiB idle, {:.0} MiB after the import, {:.0} MiB highest sampled while sending \
         (every 100 ms), **{:.0} MiB peak** over the whole run (VmHWM)",
        mib(rss_idle),
        mib(rss_after_import),
        mib(max_sampled),
        mib(peak)
    ));
    r.line(&format!(
        "- database on disk: {:.0} MiB (posta.redb); outbox {:.0} MiB",
        db as f64 / 1048576.0,
        outbox as f64 / 1048576.0
    ));
    r.target(
        "Peak RSS, 1M-subscriber send",
        "< 100 MB",
        format!("{:.0} MiB ({:.0} MB)", mib(peak), mb(peak)),
        mb(peak) < 100.0,
    );
    dashboard_pages(r, &server, &key, list, id, n);
}

/// The dashboard's pages over the list and campaign just sent: each read
/// `ROUNDS` times by a signed-in browser's requests, timed from request to
/// the last byte over loopback (the server's render plus a local round
/// trip). The status filters that match nothing are the worst case: a page
/// reads up to its scan limit.
fn dashboard_pages(r: &mut Report, server: &Server, key: &str, list: u64, campaign: u64, n: usize) {
    const ROUNDS: usize = 20;
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie_of = |res: &reqwest::blocking::Response, name: &str| -> String {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(&format!("{name}="))
                    .map(|v| v.split(';').next().unwrap().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} cookie"))
    };
    let form = http.get(format!("{}/signin", server.base)).send().unwrap();
    let signin = cookie_of(&form, "posta_signin");
    let res = http
        .post(format!("{}/signin", server.base))
        .header("cookie", format!("posta_signin={signin}"))
        .form(&[("csrf", signin.as_str()), ("key", key)])
        .send()
        .unwrap();
    let session = format!("posta_session={}", cookie_of(&res, "posta_session"));
    // A fresh server numbers the list's subscribers 1..=n.
    let subscriber = n as u64 / 2;
    let pages = [
        ("campaigns", "/campaigns".to_string()),
        ("campaign, first messages", format!("/campaigns/{campaign}")),
        (
            "campaign, messages from the middle",
            format!("/campaigns/{campaign}?after={subscriber}"),
        ),
        (
            "campaign, failed messages (none)",
            format!("/campaigns/{campaign}?status=failed"),
        ),
        (
            "campaign, preview for a subscriber",
            format!("/campaigns/{campaign}?preview={subscriber}"),
        ),
        ("lists", "/lists".to_string()),
        ("list, first subscribers", format!("/lists/{list}")),
        (
            "list, subscribers from the middle",
            format!("/lists/{list}?after={subscriber}"),
        ),
        (
            "list, bounced subscribers (none)",
            format!("/lists/{list}?status=bounced"),
        ),
        ("suppressions", "/suppressions".to_string()),
    ];
    r.line("");
    r.line(&format!(
        "Dashboard pages over this list and campaign, each read {ROUNDS} times by a signed-in client \
         (request to last byte over loopback):"
    ));
    r.line("");
    r.line("| page | p50 ms | max ms | bytes |");
    r.line("|---|---:|---:|---:|");
    let mut worst = 0.0f64;
    for (name, path) in pages {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut bytes = 0;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let res = http
                .get(format!("{}{path}", server.base))
                .header("cookie", &session)
                .send()
                .unwrap();
            assert_eq!(res.status(), 200, "{path}");
            bytes = res.bytes().unwrap().len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let max = *times.last().unwrap();
        worst = worst.max(max);
        r.line(&format!("| {name} | {:.2} | {:.2} | {bytes} |", times[ROUNDS / 2], max));
    }
    r.target(
        "Dashboard page at 1M subscribers / messages (slowest read)",
        "< 50 ms",
        format!("{worst:.1} ms"),
        worst < 50.0,
    );
}

/// KiB as decimal megabytes, the targets' unit.
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// `n` subscribers as a CSV file: names, zones and two attributes.
fn write_csv(file: &Path, n: usize) {
    use std::io::Write;
    const ZONES: &[&str] = &["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Sydney"];
    let mut w = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    writeln!(w, "email,name,timezone,plan,city").unwrap();
    for i in 0..n {
        writeln!(
            w,
            "reader{i}@example.org,Reader {i},{},{},City {}",
            ZONES[i % ZONES.len()],
            ["free", "pro"][i % 2],
            i % 1000
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// A CSV file of `n` subscribers streamed in by `posta import` (the CLI a
/// user runs), then streamed out again.
fn csv_import(r: &mut Report, n: usize) {
    r.section(&format!(
        "CSV: {n} rows imported with `posta import`, exported again, counted through a segment"
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("subscribers.csv");
    write_csv(&file, n);
    let bytes = file_size(&file);
    let (server, key, _) = Server::with_config(&config(false));
    let api = server.api(&key);
    let list = api.ok_post("/lists", json!({"name": "csv"}))["id"].as_u64().unwrap();
    let rss_idle = server.rss_kib();
    let started = Instant::now();
    let report = server.import_csv(&key, list, &file);
    let took = started.elapsed();
    assert_eq!(report["created"], n as u64, "{report}");
    let peak = server.peak_rss_kib();
    let started = Instant::now();
    let exported = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{}/api/v1/users/me/lists/{list}/subscribers.csv", server.base))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let export_took = started.elapsed();
    let lines = exported.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(lines, n + 1, "every row and the header");
    let peak_after_export = server.peak_rss_kib();
    let mib = |kib: u64| kib as f64 / 1024.0;
    r.line(&format!(
        "- import: {:.1} s ({:.0} rows/s) for a {:.0} MiB file, streamed by `posta import` (batches of 1,000 rows \
         per transaction)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        bytes as f64 / 1048576.0
    ));
    r.line(&format!(
        "- export: {:.1} s ({:.0} rows/s, {:.0} MiB streamed)",
        export_took.as_secs_f64(),
        n as f64 / export_took.as_secs_f64(),
        exported.len() as f64 / 1048576.0
    ));
    r.line(&format!(
        "- server RSS: {:.0} MiB idle, **{:.0} MiB peak** through the import (VmHWM), {:.0} MiB peak after the export",
        mib(rss_idle),
        mib(peak),
        mib(peak_after_export)
    ));
    r.target(
        "Peak RSS, 1M-row CSV import",
        "< 100 MB",
        format!("{:.0} MiB ({:.0} MB)", mib(peak), mb(peak)),
        mb(peak) < 100.0,
    );

    // A segment over the imported list: pro readers in America (a quarter
    // of the rows), counted by scanning the list through the rules.
    let segment = api.ok_post(
        "/segments",
        json!({"name": "pro in America", "list_id": list, "match": "all", "rules": [
            {"field": "attributes.plan", "op": "eq", "value": "pro"},
            {"field": "timezone", "op": "starts_with", "value": "america/"},
        ]}),
    )["id"]
        .as_u64()
        .unwrap();
    server.reset_peak_rss();
    let rss_before = server.rss_kib();
    let mut took = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let count = api.ok_get(&format!("/segments/{segment}/count"));
        took.push(started.elapsed().as_secs_f64());
        assert_eq!(count["count"], (n / 4) as u64, "{count}");
    }
    let peak_count = server.peak_rss_kib();
    let took = median(took);
    r.line(&format!(
        "- segment count (2 rules, {} of {n} match): **{took:.2} s** (median of 3), server RSS {:.0} MiB before, \
         {:.0} MiB peak while counting",
        n / 4,
        mib(rss_before),
        mib(peak_count)
    ));
    r.target(
        "Segment count over a 1M-subscriber list",
        "≤ 5 s, peak RSS < 100 MB",
        format!("{took:.2} s, {:.0} MB", mb(peak_count)),
        took <= 5.0 && mb(peak_count) < 100.0,
    );

    // Starting a campaign to that segment: its members read and stored
    // before the send answers, while another client keeps writing (its
    // slowest write shows whether the freeze held the writer).
    let id = api.ok_post(
        "/campaigns",
        json!({"name": "pro in America", "subject": "Hi", "from_email": "news@example.org", "text": "Hi",
               "segment_id": segment, "send_rate": 1}),
    )["id"]
        .as_u64()
        .unwrap();
    server.reset_peak_rss();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (api, stop) = (server.api(&key), stop.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                api.ok_post("/lists", json!({"name": format!("side {n}")}));
                slowest = slowest.max(started.elapsed());
                n += 1;
            }
            (slowest, n)
        })
    };
    let started = Instant::now();
    let sent = api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    let freeze = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (slowest, writes) = writer.join().unwrap();
    assert_eq!(sent["stats"]["total"], (n / 4) as u64, "{sent}");
    let peak_freeze = server.peak_rss_kib();
    api.ok_post(&format!("/campaigns/{id}/cancel"), json!({}));
    r.line(&format!(
        "- send to that segment: **{freeze:.2} s** to fix its {} members and answer, {:.0} MiB peak RSS; \
         another client's {writes} list creations meanwhile: slowest {:.1} ms",
        n / 4,
        mib(peak_freeze),
        slowest.as_secs_f64() * 1000.0
    ));
}

fn rate(r: &mut Report, per_minute: u32, seconds: u32) {
    let n = (per_minute / 60 * seconds) as usize;
    r.section(&format!("Rate accuracy: send_rate {per_minute}/min for {seconds} s"));
    let (server, key, _) = Server::with_config(&config(false));
    let api = server.api(&key);
    let (list, _) = import(&api, "rate", n);
    let id = campaign(&api, list, json!({"send_rate": per_minute}));
    send_and_wait(&api, id, Duration::from_millis(200), |_| {});
    let mut times: Vec<u64> = server
        .outbox()
        .iter()
        .map(|l| l["logged_at_ms"].as_u64().unwrap())
        .collect();
    times.sort_unstable();
    let span_ms = (times[times.len() - 1] - times[0]) as f64;
    let achieved = (times.len() - 1) as f64 / span_ms * 60_000.0;
    let error = (achieved / per_minute as f64 - 1.0) * 100.0;
    let mut burst = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= 1000 {
            lo += 1;
        }
        burst = burst.max(hi - lo + 1);
    }
    let share = per_minute as f64 / 60.0;
    r.line(&format!(
        "- {} messages over {:.2} s: **{achieved:.1}/min ({error:+.2}%)**",
        times.len(),
        span_ms / 1000.0
    ));
    r.line(&format!(
        "- largest count in any 1-second window: **{burst}** (one second's share is {share:.0})"
    ));
    r.line("- measured on the log transport's `logged_at_ms`, the moment each line was written");
    r.target(
        "Rate accuracy at 6,000/min",
        "within ±2%",
        format!("{error:+.2}%"),
        error.abs() <= 2.0,
    );
    r.target(
        "Largest 1-second burst",
        &format!("≤ {:.0}", share + 1.0),
        burst.to_string(),
        burst as f64 <= share + 1.0,
    );
}

/// Seconds from starting `posta serve` on a fresh data directory to its
/// "listening" line, with the compile cache at `cache` ("" for none) and
/// the configuration `config` (none: the defaults).
fn time_to_listen(cache: &Path, config: Option<&Path>) -> f64 {
    use std::io::BufRead as _;
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut cmd = std::process::Command::new(posta_e2e::posta_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let mut child = cmd
        .env("POSTA_COMPILE_CACHE", cache)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn posta serve");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let listening = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("posta listening on "));
    let took = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "posta serve exited before listening");
    took
}

/// Start-up with the bundled components: compiled at start (no cache),
/// into an empty cache, and from a warm one, alternating.
fn startup(r: &mut Report, runs: usize) {
    r.section("Start-up: `posta serve` to listening, bundled components");
    let (mut none, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let cache = tempfile::tempdir().unwrap();
        none.push(time_to_listen(Path::new(""), None));
        cold.push(time_to_listen(cache.path(), None));
        warm.push(time_to_listen(cache.path(), None));
    }
    let (none, cold, warm) = (median(none), median(cold), median(warm));
    r.line(&format!(
        "- median of {runs}: no cache **{none:.2} s**, empty cache **{cold:.2} s**, warm cache **{warm:.2} s** \
         ({:.2}× of no cache)",
        warm / none
    ));
    r.line(
        "- each start on a fresh data directory; the cache is wasmtime's (`server.compile_cache`, \
         `{data_dir}/compiled` by default), keyed by the component's bytes, the engine's settings and \
         wasmtime's version",
    );
    r.target(
        "Start-up with a warm compile cache / without",
        "≤ 0.25×",
        format!("{:.2}×", warm / none),
        warm / none <= 0.25,
    );

    // The same with a Python and a JavaScript transport loaded as well
    // (scripts/scaffolds.sh builds them), each with 8 instances created at
    // start.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("posta.toml");
    let mut toml = String::new();
    for lang in ["python", "js"] {
        toml.push_str(&format!(
            "[transports.{lang}]\ncomponent = \"{}\"\nconfig = {{ url = \"http://127.0.0.1:9/\" }}\n\
             capabilities = {{ http = [\"http://127.0.0.1:9\"] }}\nmax_in_flight = 8\n",
            posta_e2e::scaffold_plugin(lang).display()
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let (mut none_with, mut warm_with) = (Vec::new(), Vec::new());
    let cache = tempfile::tempdir().unwrap();
    time_to_listen(cache.path(), Some(&config));
    for _ in 0..runs {
        none_with.push(time_to_listen(Path::new(""), Some(&config)));
        warm_with.push(time_to_listen(cache.path(), Some(&config)));
    }
    let (none_with, warm_with) = (median(none_with), median(warm_with));
    r.line(&format!(
        "- with a Python (componentize-py, {:.0} MiB) and a JavaScript (ComponentizeJS, {:.0} MiB) transport as \
         well, 8 instances each created at start: no cache **{none_with:.2} s**, warm cache **{warm_with:.2} s** \
         (+{:.2} s over the bundled components alone, warm)",
        file_size(&posta_e2e::scaffold_plugin("python")) as f64 / f64::from(1 << 20),
        file_size(&posta_e2e::scaffold_plugin("js")) as f64 / f64::from(1 << 20),
        warm_with - warm
    ));
    r.target(
        "Start-up with Python + JS transports, warm cache, over none loaded",
        "≤ +0.5 s",
        format!("+{:.2} s", warm_with - warm),
        warm_with - warm <= 0.5,
    );
}

/// Criterion's estimates from `target/criterion`, with Wasm/native ratios.
fn micro(r: &mut Report, target: &Path) {
    r.section("Micro benchmarks (criterion, `cargo bench -p posta --features native-bench --bench micro`)");
    let mut found = Vec::new();
    let mut stack = vec![target.join("criterion")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.ends_with("new/benchmark.json") {
                let meta: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                let est: Value =
                    serde_json::from_str(&std::fs::read_to_string(p.with_file_name("estimates.json")).unwrap())
                        .unwrap();
                found.push((
                    meta["full_id"].as_str().unwrap().to_string(),
                    est["mean"]["point_estimate"].as_f64().unwrap(),
                ));
            }
        }
    }
    if found.is_empty() {
        r.line("(no criterion results found: run the micro benchmarks first; scripts/bench.sh does)");
        return;
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let fmt = |ns: f64| {
        if ns >= 1e6 {
            format!("{:.2} ms", ns / 1e6)
        } else {
            format!("{:.2} µs", ns / 1e3)
        }
    };
    r.line("| benchmark | mean |");
    r.line("|---|---:|");
    for (id, ns) in &found {
        r.line(&format!("| {id} | {} |", fmt(*ns)));
    }
    let get = |id: &str| found.iter().find(|(f, _)| f == id).map(|(_, ns)| *ns);
    r.line("");
    for what in ["personalize", "deliver log"] {
        if let (Some(w), Some(n)) = (
            get(&format!("plugins/{what} (wasm)")),
            get(&format!("plugins/{what} (native)")),
        ) {
            r.line(&format!(
                "- {what}: native/Wasm time ratio {:.2} (Wasm {:.1}× the native time)",
                n / w,
                w / n
            ));
        }
    }
    if let (Some(fresh), Some(reused)) = (
        get("plugins/personalize (wasm, fresh instance per call)"),
        get("plugins/personalize (wasm)"),
    ) {
        r.line(&format!(
            "- instance reuse: a personalize call on a fresh store and instance costs {:.1}× one on a reused \
             instance (instantiation plus recompiling the templates the reused one has cached)",
            fresh / reused
        ));
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1048576.0))
        .unwrap_or_default();
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{cpu}, {cores} cores, {mem}; Linux {}; {}; commit {}",
        cmd("uname", &["-r"]),
        cmd("rustc", &["--version"]),
        cmd("git", &["rev-parse", "--short", "HEAD"])
    )
}

fn main() {
    let args = args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let q = args.quick;
    let mut r = Report {
        md: String::new(),
        targets: Vec::new(),
    };
    let started = Instant::now();
    if args.runs("throughput") {
        throughput(&mut r, if q { 10_000 } else { 100_000 }, if q { 1 } else { 3 });
    }
    if args.runs("newsletter") {
        newsletter(&mut r, if q { 2_000 } else { 20_000 }, if q { 1 } else { 3 });
    }
    if args.runs("latency") {
        api_latency(&mut r, if q { 10_000 } else { 100_000 }, if q { 200 } else { 3_000 });
    }
    if args.runs("million") {
        million(&mut r, if q { 50_000 } else { 1_000_000 });
    }
    if args.runs("csv") {
        csv_import(&mut r, if q { 50_000 } else { 1_000_000 });
    }
    if args.runs("tracking") {
        tracking::tracking(
            &mut r,
            if q { 2_000 } else { 20_000 },
            if q { 1 } else { 3 },
            if q { 3 } else { 10 },
        );
    }
    if args.runs("rate") {
        rate(&mut r, 6_000, if q { 10 } else { 60 });
    }
    if args.runs("smtp") {
        delivery::smtp(&mut r, if q { 1_000 } else { 10_000 }, if q { 1 } else { 3 });
    }
    if args.runs("smtpd") {
        postfix::chunking(&mut r, if q { 1_000 } else { 5_000 }, if q { 1 } else { 3 });
    }
    if args.runs("webhook") {
        delivery::webhook(&mut r, if q { 1_000 } else { 10_000 }, if q { 1 } else { 3 });
    }
    if args.runs("languages") {
        delivery::languages(&mut r, if q { 1_000 } else { 10_000 }, if q { 1 } else { 3 });
    }
    if args.runs("cluster") {
        cluster::cluster(&mut r, if q { 10_000 } else { 100_000 }, if q { 2_000 } else { 20_000 });
        cluster::real_nodes(&mut r, if q { 3_000 } else { 20_000 });
    }
    if args.runs("startup") {
        startup(&mut r, if q { 1 } else { 5 });
    }
    if args.runs("micro") {
        micro(&mut r, &root.join("target"));
    }

    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    let _ = writeln!(
        out,
        "Written by `just bench` (`bash scripts/bench.sh`) on {} UTC{}; the end-to-end part took {:.0} s.\n\nMachine: {}.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        if q {
            " with --quick (small sizes, not comparable)"
        } else {
            ""
        },
        started.elapsed().as_secs_f64(),
        machine()
    );
    out.push_str(
        "Everything runs on one shared 2-core machine: the server, the load and (for the end-to-end \
         numbers) the client polling it. Numbers are measurements, not assertions.\n\n",
    );
    out.push_str("## Targets\n\n| metric | target | measured | |\n|---|---|---|---|\n");
    for (what, target, measured, met) in &r.targets {
        let _ = writeln!(
            out,
            "| {what} | {target} | {measured} | {} |",
            if *met { "met" } else { "**missed**" }
        );
    }
    out.push_str(&r.md);
    std::fs::write(&args.out, out).expect("write report");
    println!("\nwrote {}", args.out.display());
}
