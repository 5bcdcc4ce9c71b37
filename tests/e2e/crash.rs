//! Nothing lost: SIGKILL at random moments during a send.

use std::collections::HashSet;
use std::time::Duration;

use posta_e2e::{Server, json, per_recipient};

#[test]
fn sigkill_during_a_send_loses_nothing_and_bounds_duplicates() {
    const N: usize = 20_000;
    const KILLS: usize = 10;
    let (mut server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("c", N);
    // 2,000 per second keeps the send going through every kill below.
    let id = api.send_campaign(list, json!({"send_rate": 120_000}));

    // Pseudo-random but reproducible kill times.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 900));
        server.restart(); // SIGKILL, then start again on the same data
    }
    let api = server.api(&key);
    let done = api.wait_status(id, "sent");
    let stats = &done["stats"];
    assert_eq!(stats["sent"].as_u64(), Some(N as u64), "{done}");
    assert_eq!(
        (stats["queued"].as_u64(), stats["pending"].as_u64()),
        (Some(0), Some(0))
    );

    let (lines, torn) = server.outbox_lenient();
    let per = per_recipient(&lines);
    assert!(torn <= KILLS, "at most one torn line per kill, got {torn}");
    // Every subscriber got the message; a torn line was re-delivered whole.
    assert_eq!(per.len(), N, "missing recipients");
    let extra: u64 = per.values().map(|n| n - 1).sum::<u64>() + torn as u64;
    let flagged = stats["possible_duplicates"].as_u64().unwrap();
    assert!(
        extra <= flagged,
        "{extra} duplicate deliveries but only {flagged} flagged"
    );
    // The window for 2,000/s is 1,000 messages without an outcome per
    // crash, and the driver never queues past it.
    assert!(
        flagged <= (KILLS * 1_000) as u64,
        "{flagged} possible duplicates exceed the in-flight window"
    );
    let messages = api.all_messages(id, "");
    let flagged_emails: HashSet<&str> = messages
        .iter()
        .filter(|m| m["possible_duplicate"] == true)
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        flagged_emails.len() as u64,
        flagged,
        "stats and messages agree on possible duplicates"
    );
    // Recipients are exactly the list, and whoever got the message twice
    // is among the flagged.
    let expected: HashSet<String> = (0..N).map(|i| format!("c{i}@example.org")).collect();
    let got: HashSet<String> = per.keys().cloned().collect();
    assert_eq!(got, expected, "recipients are exactly the list");
    let doubled: Vec<&String> = per.iter().filter(|(_, n)| **n > 1).map(|(e, _)| e).collect();
    for email in &doubled {
        assert!(
            flagged_emails.contains(email.as_str()),
            "{email} got the message twice but is not flagged"
        );
    }
    println!("kills={KILLS} extra deliveries={extra} torn lines={torn} flagged={flagged}");
}

#[test]
fn sigterm_finishes_deliveries_under_way_and_the_restart_completes_the_campaign() {
    const N: usize = 400;
    let (mut server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("t", N);
    let id = api.send_campaign(list, json!({"send_rate": 6_000}));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(server.terminate(), "SIGTERM must end with exit status 0");
    let sent_before = server.outbox().len();
    assert!(
        sent_before > 0 && sent_before < N,
        "stopped mid-campaign: {sent_before}"
    );
    assert!(server.log().contains("stopped cleanly"), "{}", server.log());

    server.start_again();
    let api = server.api(&key);
    let done = api.wait_status(id, "sent");
    assert_eq!(done["stats"]["sent"].as_u64(), Some(N as u64));
    // A clean stop leaves nothing whose delivery is in doubt.
    assert_eq!(done["stats"]["possible_duplicates"], 0, "{done}");
    let per = per_recipient(&server.outbox());
    assert_eq!(per.len(), N);
    assert!(per.values().all(|n| *n == 1), "someone got two messages");
}
