//! send_rate is smooth: spacing read from the outbox's own timestamps.

use posta_e2e::{Server, json};

#[test]
fn send_rate_600_per_minute_spaces_messages_100_ms_apart() {
    const N: usize = 101;
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", N);
    let id = api.send_campaign(list, json!({"send_rate": 600}));
    api.wait_status(id, "sent");

    let mut times: Vec<u64> = server
        .outbox()
        .iter()
        .map(|l| l["logged_at_ms"].as_u64().unwrap())
        .collect();
    times.sort_unstable();
    assert_eq!(times.len(), N);
    // Slots are 100 ms apart; a message that woke late is followed by its
    // successor on schedule, so a gap shrinks only by that lateness (ms on
    // an idle machine, never a period).
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let min_gap = *gaps.iter().min().unwrap();
    assert!(min_gap >= 50, "two messages {min_gap} ms apart: a burst");
    // No second carries more than its share (10) plus one.
    let busiest = times
        .iter()
        .map(|&t| times.iter().filter(|&&u| u >= t && u < t + 1000).count())
        .max()
        .unwrap();
    assert!(busiest <= 11, "{busiest} messages within one second");
    let span = (times[N - 1] - times[0]) as f64 / 1000.0;
    let per_minute = (N - 1) as f64 / span * 60.0;
    println!(
        "600/min: {N} messages over {span:.2} s = {per_minute:.1}/min, smallest gap {min_gap} ms, busiest second {busiest}"
    );
    // Both sides: a pacer too slow fails as surely as one too fast. Slots
    // do not drift, so over 10 s only the first and last wake-ups' lateness
    // counts.
    assert!(
        (per_minute - 600.0).abs() <= 600.0 * 0.03,
        "{per_minute:.1}/min is not within 3% of 600/min"
    );
}

#[test]
fn a_transport_rate_limit_holds_across_campaigns() {
    let (server, key, _) = Server::with_config(
        r#"
[transports.slowlog]
component = "log"
rate_limit = 600
max_in_flight = 1
config = { path = "{data_dir}/outbox/outbox.jsonl" }
capabilities = { dirs = ["{data_dir}/outbox"] }
"#,
    );
    let api = server.api(&key);
    let list = api.list_of("s", 30);
    let ids: Vec<u64> = (0..2)
        .map(|_| api.send_campaign(list, json!({"transport": "slowlog"})))
        .collect();
    for id in &ids {
        api.wait_status(*id, "sent");
    }
    let lines = server.outbox();
    assert_eq!(lines.len(), 60);
    let mut times: Vec<u64> = lines.iter().map(|l| l["logged_at_ms"].as_u64().unwrap()).collect();
    times.sort_unstable();
    let min_gap = times.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(min_gap >= 50, "the two campaigns together went {min_gap} ms apart");
    // And the shared limit is met, not undershot: 60 messages at 600/min.
    let per_minute = 59.0 / ((times[59] - times[0]) as f64 / 60_000.0);
    assert!(
        (per_minute - 600.0).abs() <= 600.0 * 0.05,
        "{per_minute:.1}/min over both campaigns, not within 5% of 600/min"
    );
}
