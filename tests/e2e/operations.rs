//! What an operator scrapes and administers: `/metrics` read by an
//! independent Prometheus parser.

use posta_e2e::peers::{metric as value, scrape, scrape_raw};
use posta_e2e::{Server, Value, json};

#[test]
fn metrics_count_what_happened_in_a_real_scrape() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let before = scrape(&server, None);
    let sent = [("status", "sent"), ("transport", "log")];
    let list = api.list_of("m", 5);
    let id = api.send_campaign(list, json!({}));
    api.wait_status(id, "sent");
    let after = scrape(&server, None);
    assert_eq!(
        value(&after, "posta_messages_total", &sent) - value(&before, "posta_messages_total", &sent),
        5.0
    );
    // Transport calls are timed: five more observations in the histogram.
    let calls = |s: &[Value]| value(s, "posta_transport_call_seconds_count", &[("transport", "log")]);
    assert_eq!(calls(&after) - calls(&before), 5.0);
    // Requests are counted by route pattern, never by raw path.
    let route = "/api/v1/users/me/campaigns/{id}";
    assert!(
        value(
            &after,
            "posta_http_requests_total",
            &[("route", route), ("status", "200")]
        ) >= 1.0,
        "no {route} series"
    );
    assert!(
        !after.iter().any(|s| s["labels"]["route"]
            .as_str()
            .is_some_and(|r| r.ends_with(&format!("/campaigns/{id}")))),
        "a raw path leaked into a label"
    );
    assert!(value(&after, "posta_db_commit_seconds_count", &[("kind", "interactive")]) > 0.0);
}

#[test]
fn metrics_need_the_configured_token() {
    let (server, _, _) = Server::with_config("[server]\nmetrics_token = \"scrape-me\"\n");
    assert_eq!(scrape_raw(&server, None).0, 401);
    assert_eq!(scrape_raw(&server, Some("scrape-mE")).0, 401);
    let samples = scrape(&server, Some("scrape-me"));
    assert!(!samples.is_empty());
}
