//! Hostile plugins fail only their own messages; the host keeps serving.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use posta_e2e::{Api, Server, Value, json, test_plugin};

const HOSTILE: &[&str] = &[
    "loop",
    "memory",
    "recursion",
    "panic",
    "huge",
    "connect",
    "file",
    "permanent",
    "transient1",
    "transient5",
    "ok1",
    "ok2",
    "ok3",
];

fn config(forbidden: u16, granted: u16) -> String {
    format!(
        r#"
[delivery]
max_attempts = 2
retry_base_ms = 50
retry_max_ms = 200

[transports.fixture]
component = "{}"
max_in_flight = 4
config = {{ state = "{{data_dir}}/fixture-state", forbidden = "127.0.0.1:{forbidden}" }}
capabilities = {{ dirs = ["{{data_dir}}/fixture-state"], connect = ["127.0.0.1:{granted}"] }}
limits = {{ memory_mib = 32, deadline_ms = 1000 }}
"#,
        test_plugin("posta-fixture").display()
    )
}

fn messages_by_email(api: &Api, id: u64) -> HashMap<String, Value> {
    let page = api.ok_get(&format!("/campaigns/{id}/messages?limit=1000"));
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().split('@').next().unwrap().to_string(),
                m.clone(),
            )
        })
        .collect()
}

/// A batch transport's call fails as a whole when one of its messages
/// makes the plugin trap; the host then sends each message of it alone,
/// so only that message fails and the others are sent on their first
/// attempt.
#[test]
fn a_message_that_traps_its_batch_fails_alone() {
    let (server, key, _) = Server::with_config(&format!(
        r#"
[delivery]
max_attempts = 2
retry_base_ms = 50
retry_max_ms = 200

[transports.batches]
component = "{}"
max_in_flight = 1
max_batch = 16
limits = {{ memory_mib = 32 }}
"#,
        test_plugin("posta-fixture-v2").display()
    ));
    let api = server.api(&key);
    let metric = |name: &str| {
        let samples = posta_e2e::peers::scrape(&server, None);
        posta_e2e::peers::metric(&samples, name, &[("transport", "batches")])
    };

    // Healthy messages alone first: they go several per call.
    let healthy = api.list_of("healthy", 200);
    let id = api.send_campaign(healthy, json!({"transport": "batches"}));
    assert_eq!(api.wait_status(id, "sent")["stats"]["sent"], 200);
    let batched = metric("posta_transport_call_seconds_count");
    assert!(batched < 200.0, "200 messages took {batched} calls: none was batched");
    assert_eq!(metric("posta_transport_call_messages_sum"), 200.0);

    // Then a list with trapping and failing messages among healthy ones.
    let list = api.ok_post("/lists", json!({"name": "mixed"}))["id"].as_u64().unwrap();
    let people: Vec<Value> = (0..40)
        .map(|i| match i {
            7 => "panic".to_string(),
            19 => "memory".to_string(),
            23 => "permanent".to_string(),
            _ => format!("ok{i}"),
        })
        .map(|l| json!({"email": format!("{l}@example.org")}))
        .collect();
    api.ok_post(&format!("/lists/{list}/subscribers"), Value::Array(people));
    let id = api.send_campaign(list, json!({"transport": "batches"}));
    let done = api.wait_status(id, "sent");
    assert_eq!(
        (done["stats"]["sent"].as_u64(), done["stats"]["failed"].as_u64()),
        (Some(37), Some(3)),
        "{done}"
    );
    let m = messages_by_email(&api, id);
    for (who, needle, attempts) in [
        ("panic", "panics on request", 2),
        ("memory", "memory limit of 32 MiB", 2),
        ("permanent", "rejected", 1),
    ] {
        assert_eq!(m[who]["status"], "failed", "{who}");
        let error = m[who]["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{who}: {error}");
        assert_eq!(m[who]["attempts"], attempts, "{who}");
    }
    for (who, message) in &m {
        if who.starts_with("ok") {
            assert_eq!(message["status"], "sent", "{message}");
            assert_eq!(
                message["attempts"], 1,
                "a batch-mate's trap is not its failure: {message}"
            );
            assert!(message["remote_id"].as_str().unwrap().starts_with("v2:"), "{message}");
        }
    }
}

#[test]
fn each_hostile_behaviour_fails_only_its_own_message() {
    // A real listener the plugin is not allowed to reach: it must never
    // see a connection.
    let forbidden = TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let (server, key, _) = Server::with_config(&config(
        forbidden.local_addr().unwrap().port(),
        granted.local_addr().unwrap().port(),
    ));
    let api = server.api(&key);
    let hostile = api.ok_post("/lists", json!({"name": "hostile"}))["id"]
        .as_u64()
        .unwrap();
    let people: Vec<Value> = HOSTILE
        .iter()
        .map(|l| json!({"email": format!("{l}@example.org")}))
        .collect();
    api.ok_post(&format!("/lists/{hostile}/subscribers"), Value::Array(people));
    let healthy = api.list_of("h", 2_000);

    let bad = api.send_campaign(hostile, json!({"transport": "fixture"}));
    // Another campaign on a healthy transport keeps sending meanwhile.
    let good = api.send_campaign(healthy, json!({"transport": "log"}));
    let done = api.wait_status(good, "sent");
    assert_eq!(done["stats"]["sent"], 2_000);
    let done = api.wait_status(bad, "sent");
    assert_eq!(
        (done["stats"]["sent"].as_u64(), done["stats"]["failed"].as_u64()),
        (Some(5), Some(8)),
        "{done}"
    );

    let m = messages_by_email(&api, bad);
    let error = |who: &str| m[who]["last_error"].as_str().unwrap_or_default().to_string();
    let attempts = |who: &str| m[who]["attempts"].as_u64().unwrap();
    for (who, needle) in [
        ("loop", "deadline of 1000 ms"),
        ("memory", "memory limit of 32 MiB"),
        ("recursion", "stack"),
        ("panic", "panics on request"),
        ("transient5", "gave up after 2 attempts"),
    ] {
        assert_eq!(m[who]["status"], "failed", "{who}");
        assert!(error(who).contains(needle), "{who}: {}", error(who));
        assert_eq!(attempts(who), 2, "{who} is transient: retried once");
    }
    for (who, needle) in [
        ("connect", "connect 127.0.0.1:"),
        ("file", "/etc/passwd"),
        ("permanent", "rejected"),
    ] {
        assert_eq!(m[who]["status"], "failed", "{who}");
        assert!(error(who).contains(needle), "{who}: {}", error(who));
        assert_eq!(attempts(who), 1, "{who} is permanent: not retried");
    }
    assert!(forbidden.accept().is_err(), "the forbidden listener was reached");
    assert_eq!(
        (m["transient1"]["status"].as_str(), attempts("transient1")),
        (Some("sent"), 2)
    );
    assert_eq!(m["huge"]["status"], "sent");
    assert!(
        m["huge"]["remote_id"].as_str().unwrap().len() < 2_000,
        "stored receipts are clipped"
    );
    for who in ["ok1", "ok2", "ok3"] {
        assert_eq!(m[who]["status"], "sent");
        assert!(
            m[who]["remote_id"].as_str().unwrap().starts_with("v1:posta."),
            "{}",
            m[who]
        );
    }
    assert_eq!(api.get("/campaigns").0, 200, "still serving");
    // The sandbox's stops are counted for the operator, per kind: each
    // hostile message was tried twice.
    let samples = posta_e2e::peers::scrape(&server, None);
    for (kind, at_least) in [("deadline", 2.0), ("memory", 2.0), ("trap", 4.0)] {
        let n = posta_e2e::peers::metric(
            &samples,
            "posta_plugin_failures_total",
            &[("plugin", "fixture"), ("kind", kind)],
        );
        assert!(n >= at_least, "{kind}: {n}");
    }
    println!(
        "errors: {:#?}",
        HOSTILE.iter().map(|w| (w, error(w))).collect::<Vec<_>>()
    );

    // The sandbox leaks nothing: running the hostile campaign again does not
    // grow the host's memory.
    let before = server.rss_kib();
    for round in 0..2 {
        let again = api.ok_post(&format!("/campaigns/{bad}/duplicate"), json!({}))["id"]
            .as_u64()
            .unwrap();
        api.ok_post(&format!("/campaigns/{again}/send"), json!({}));
        api.wait_status(again, "sent");
        std::thread::sleep(Duration::from_millis(300));
        println!(
            "rss after hostile round {round}: {} KiB (before {before} KiB)",
            server.rss_kib()
        );
    }
    let after = server.rss_kib();
    assert!(
        after < before + 32 * 1024,
        "host memory grew from {before} KiB to {after} KiB"
    );
}

/// A plugin that hoards host resources (sockets, header sets) or floods
/// stderr and the log is held to its caps: the host's descriptors and
/// memory stay bounded and it keeps answering.
#[test]
fn hoarding_plugins_stay_within_their_caps() {
    const MAX_SOCKETS: usize = 8;
    const IN_FLIGHT: usize = 4;
    // Accepts every connection and keeps it, as a patient server would.
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = granted.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in granted.incoming() {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
    let (server, key, _) = Server::with_config(&format!(
        r#"
[transports.fixture]
component = "{}"
max_in_flight = {IN_FLIGHT}
config = {{ granted = "127.0.0.1:{port}" }}
capabilities = {{ connect = ["127.0.0.1:{port}"] }}
limits = {{ max_sockets = {MAX_SOCKETS}, deadline_ms = 5000 }}
"#,
        test_plugin("posta-fixture").display()
    ));
    let api = server.api(&key);
    let list = api.ok_post("/lists", json!({"name": "hoarders"}))["id"]
        .as_u64()
        .unwrap();
    let people: Vec<Value> = (0..20)
        .flat_map(|i| ["sockets", "headers", "chatty"].map(|who| json!({"email": format!("{who}@h{i}.example")})))
        .collect();
    api.ok_post(&format!("/lists/{list}/subscribers"), Value::Array(people));

    let fds_before = server.open_fds();
    let rss_before = server.rss_kib();
    let done = std::sync::atomic::AtomicBool::new(false);
    let id = api.campaign(list, json!({"transport": "fixture"}));
    let (peak_fds, health_checks) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let http = reqwest::blocking::Client::new();
            let health = format!("{}/api/v1/health", server.base);
            let (mut peak, mut checks) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                peak = peak.max(server.open_fds());
                let status = http.get(&health).send().map(|r| r.status().as_u16());
                assert!(matches!(status, Ok(200)), "health answered {status:?}");
                checks += 1;
                // Under the per-client rate limit on public endpoints.
                std::thread::sleep(Duration::from_millis(40));
            }
            (peak, checks)
        });
        api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
        api.wait_status(id, "sent");
        done.store(true, std::sync::atomic::Ordering::Release);
        watcher.join().unwrap()
    });

    let messages = api.all_messages(id, "");
    let by = |who: &str| -> Vec<&Value> {
        messages
            .iter()
            .filter(|m| m["email"].as_str().unwrap().starts_with(&format!("{who}@")))
            .collect()
    };
    for m in by("sockets") {
        let error = m["last_error"].as_str().unwrap_or_default();
        assert_eq!(m["status"], "failed", "{m}");
        let kept: usize = error
            .split(", ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("socket count in {error:?}"));
        assert!(kept <= MAX_SOCKETS, "{error}");
    }
    for m in by("headers") {
        assert_eq!(m["status"], "failed", "{m}");
        assert!(m["last_error"].as_str().unwrap().contains("limits.max_handles"), "{m}");
    }
    for m in by("chatty") {
        assert_eq!(m["status"], "sent", "stderr and log floods are not errors: {m}");
    }
    println!(
        "sockets: {:?}\nheaders: {:?}",
        by("sockets")[0]["last_error"],
        by("headers")[0]["last_error"]
    );
    let rss_after = server.rss_kib();
    println!(
        "fds {fds_before} before, peak {peak_fds}; rss {rss_before} KiB before, {rss_after} KiB after; {health_checks} health checks"
    );
    // Each instance of the transport (at most the calls in flight, and as
    // many idle) keeps at most MAX_SOCKETS; without the cap one call opens
    // sockets until the process runs out of descriptors.
    assert!(
        peak_fds <= fds_before + 2 * IN_FLIGHT * MAX_SOCKETS + 16,
        "descriptors grew from {fds_before} to {peak_fds}"
    );
    assert!(
        rss_after < rss_before + 128 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    let log = server.log();
    assert!(
        log.contains("log lines in one call"),
        "the log flood is cut and says so"
    );
    assert!(
        log.matches("chatty line").count() <= 20 * 100,
        "at most 100 lines per call reach the log"
    );
}
