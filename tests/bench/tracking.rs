//! Open and click tracking: what rewriting costs a send (the same campaign
//! with and without tracking, alternating), and how many tracked requests
//! the public endpoints answer and record per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use posta_e2e::{Server, Value, json};

use super::{Report, config, import, median, send_and_wait};

/// A newsletter-sized HTML part (~1.7 KB) with five links.
fn html() -> String {
    let mut html = String::from("<html><body><h1>News for {{ subscriber.name }}</h1>");
    for i in 0..5 {
        html.push_str(&format!(
            "<h2>Story {i}</h2><p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
             tempor incididunt ut labore et dolore magna aliqua. \
             <a href=\"https://news.example.org/story/{i}?utm_source=posta&amp;utm_medium=email\">Read more</a></p>"
        ));
    }
    html.push_str("<p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p></body></html>");
    html
}

pub fn tracking(r: &mut Report, n: usize, runs: usize, seconds: u64) {
    r.section(&format!(
        "Tracking: {n}-message sends with and without open and click tracking; tracked requests for {seconds} s"
    ));
    // No per-client recording limit: every request of the load counts.
    let toml = config(false).replace("[server]\n", "[server]\ntracking_rate_per_ip = 0\n");
    let (server, key, _) = Server::with_config(&toml);
    let api = server.api(&key);
    let (list, _) = import(&api, "tracking", n);
    let html = html();
    let body = |tracked: bool| {
        json!({"name": "Tracked", "subject": "News", "from_email": "news@example.org", "list_id": list,
               "html": html, "text": "News: https://news.example.org/story/0", "track_opens": tracked,
               "track_clicks": tracked})
    };
    let (mut plain, mut tracked) = (Vec::new(), Vec::new());
    let mut last = 0;
    for _ in 0..runs {
        for (with, out) in [(false, &mut plain), (true, &mut tracked)] {
            let id = api.ok_post("/campaigns", body(with))["id"].as_u64().unwrap();
            let took = send_and_wait(&api, id, Duration::from_millis(100), |_| {});
            out.push(n as f64 / took.as_secs_f64());
            last = id;
        }
    }
    let (plain, tracked) = (median(plain), median(tracked));
    r.line(&format!(
        "- send, log transport, {n} messages, median of {runs} alternating: untracked **{plain:.0} msg/s**, \
         tracked (5 links rewritten, pixel added) **{tracked:.0} msg/s** ({:.2}×)",
        tracked / plain
    ));

    // The last tracked campaign's links and pixels, one of each per message.
    let lines = server.outbox();
    let marks: Vec<(String, String)> = lines
        .iter()
        .rev()
        .take(n)
        .map(|l| {
            let h = l["html"].as_str().unwrap();
            let url = |attr: &str| {
                let at = h.find(attr).unwrap() + attr.len();
                h[at..at + h[at..].find('"').unwrap()].to_string()
            };
            (url("href=\""), url("src=\""))
        })
        .collect();
    // People click later than a second after delivery.
    std::thread::sleep(Duration::from_millis(1_100));
    let stop = AtomicBool::new(false);
    let answered = AtomicU64::new(0);
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (marks, stop, answered) = (&marks, &stop, &answered);
            s.spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let (click, pixel) = &marks[i % marks.len()];
                    let url = if i.is_multiple_of(2) { click } else { pixel };
                    let status = http.get(url).send().unwrap().status().as_u16();
                    assert!(status == 302 || status == 200, "{url}: {status}");
                    answered.fetch_add(1, Ordering::Relaxed);
                    i += 8;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let took = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let answered = answered.load(Ordering::Relaxed);
    // Every request is recorded within a batch or two.
    let recorded_by = Instant::now();
    let c = api.wait_campaign(last, Duration::from_secs(60), |c| {
        c["stats"]["opens"].as_u64().unwrap() + c["stats"]["clicks"].as_u64().unwrap() >= answered
    });
    let lag = recorded_by.elapsed().as_secs_f64();
    let stats: &Value = &c["stats"];
    let per_second = answered as f64 / took;
    r.line(&format!(
        "- tracked requests (clicks and pixel loads alternating, 8 keep-alive clients, {n} messages' marks): \
         **{per_second:.0} answered/s**, every one recorded ({} opens, {} clicks; {} people opened, {} clicked), \
         the last batch stored {lag:.2} s after the load; server CPU {:.0} µs per request",
        stats["opens"],
        stats["clicks"],
        stats["opened"],
        stats["clicked"],
        cpu / answered as f64 * 1e6
    ));
    r.target(
        "Tracked requests answered and recorded",
        "≥ 2,000/s",
        format!("{per_second:.0}/s"),
        per_second >= 2_000.0,
    );
}
