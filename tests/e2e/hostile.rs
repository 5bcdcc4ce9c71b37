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
