//! A/B tests through the real binary: the test group is the share of the
//! audience split evenly over the variants, each variant's content goes to
//! its group, clicks on the test decide the winner after the wait (a
//! SIGKILL in the wait changes nothing), the rest gets the winner's
//! content, a winner picked early by choice, and every subscriber gets one
//! message whatever happens.

use std::collections::HashMap;
use std::time::Duration;

use posta_e2e::{Server, json, per_recipient};
use serde_json::Value;

/// Outbox lines by recipient.
fn by_recipient(lines: &[Value]) -> HashMap<String, Value> {
    lines
        .iter()
        .map(|l| (l["to"].as_str().unwrap().to_string(), l.clone()))
        .collect()
}

fn subject_of(line: &Value) -> String {
    line["subject"].as_str().unwrap().to_string()
}

#[test]
fn the_test_goes_to_the_share_and_its_clicks_pick_what_the_rest_gets() {
    let (mut server, alice, _) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.list_of("ab", 200);
    let id = api.send_campaign(
        list,
        json!({
            "transport": "log",
            "html": "<p>Hello</p> <a href=\"https://a.example/\">a</a>",
            "track_clicks": true,
            "ab_test": {
                "variants": [
                    {"subject": "Plain news"},
                    {"subject": "Big news, {{ subscriber.name }}",
                     "html": "<p>Big</p> <a href=\"https://b.example/\">b</a>"}
                ],
                "test_share": 0.2,
                "metric": "clicks",
                "wait_minutes": 1
            }
        }),
    );
    // The test: 40 of 200, 20 per variant, then the wait.
    let waiting = api.wait_campaign(id, Duration::from_secs(60), |c| c["ab_test"]["decides_at"].is_string());
    assert_eq!(waiting["status"], "sending", "{waiting}");
    let results = waiting["ab_test"]["results"].as_array().unwrap();
    assert_eq!(
        results
            .iter()
            .map(|r| r["recipients"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [20, 20],
        "{waiting}"
    );
    let test = server.outbox();
    assert_eq!(test.len(), 40);
    let b_lines: Vec<&Value> = test.iter().filter(|l| subject_of(l).starts_with("Big news")).collect();
    assert_eq!(b_lines.len(), 20);
    let messages = api.all_messages(id, "");
    assert_eq!(messages.len(), 40, "nobody outside the test has a message yet");
    assert!(messages.iter().all(|m| m["in_test"] == true));
    // Spread over the list, not its first 40.
    let ids: Vec<u64> = messages.iter().map(|m| m["subscriber_id"].as_u64().unwrap()).collect();
    let first_id = api.ok_get(&format!("/lists/{list}/subscribers?limit=1"))["items"][0]["id"]
        .as_u64()
        .unwrap();
    assert!(ids.iter().any(|&s| s > first_id + 100), "{ids:?}");

    // Five of B's readers click (after the scanner second); nobody of A's.
    std::thread::sleep(Duration::from_millis(1_100));
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for line in &b_lines[..5] {
        let html = line["html"].as_str().unwrap();
        let at = html.find(&format!("{}/t/", server.base)).expect("a tracked link");
        let url = &html[at..at + html[at..].find('"').unwrap()];
        let r = http.get(url).send().unwrap();
        assert_eq!(r.headers()["location"], "https://b.example/", "the variant's own link");
    }
    let c = api.wait_campaign(id, Duration::from_secs(10), |c| {
        c["ab_test"]["results"][1]["clicked"] == 5
    });
    assert_eq!(c["ab_test"]["results"][1]["rate"], 0.25);
    assert_eq!(c["ab_test"]["winner"], Value::Null);

    // A crash in the wait, and a pause: the decision still comes, once.
    server.kill();
    server.start_again();
    let api = server.api(&alice);
    api.ok_post(&format!("/campaigns/{id}/pause"), json!({}));
    api.ok_post(&format!("/campaigns/{id}/resume"), json!({}));
    let done = api.wait_campaign(id, Duration::from_secs(150), |c| c["status"] == "sent");
    let ab = &done["ab_test"];
    assert_eq!(
        (ab["winner"].as_u64(), ab["decided_by"].as_str()),
        (Some(1), Some("metric")),
        "{done}"
    );
    assert_eq!(done["stats"]["sent"], 200);

    let all = server.outbox();
    assert_eq!(all.len(), 200);
    assert!(per_recipient(&all).values().all(|&n| n == 1), "one message each");
    let test_to: std::collections::HashSet<String> =
        test.iter().map(|l| l["to"].as_str().unwrap().to_string()).collect();
    let rest: Vec<Value> = by_recipient(&all)
        .into_iter()
        .filter(|(to, _)| !test_to.contains(to))
        .map(|(_, l)| l)
        .collect();
    assert_eq!(rest.len(), 160);
    assert!(
        rest.iter()
            .all(|l| subject_of(l).starts_with("Big news") && l["html"].as_str().unwrap().contains("Big")),
        "the rest gets the winner"
    );
    let messages = api.all_messages(id, "");
    assert_eq!(messages.iter().filter(|m| m["in_test"] == true).count(), 40);
    assert!(
        messages
            .iter()
            .filter(|m| m["in_test"] != true)
            .all(|m| m["variant"] == 1)
    );
}

#[test]
fn a_winner_picked_early_goes_to_everyone_not_yet_sent_and_bad_setups_are_refused() {
    let (server, alice, bob) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.list_of("early", 60);
    let setup = |share: f64| {
        json!({
            "variants": [{"subject": "A"}, {"subject": "B"}, {"subject": "C", "from_name": "Team C"}],
            "test_share": share, "metric": "opens", "wait_minutes": 60
        })
    };
    // Slow enough to pick while the test is still going out.
    let id = api.send_campaign(
        list,
        json!({"transport": "log", "send_rate": 300, "track_opens": true, "ab_test": setup(0.5)}),
    );
    api.wait_campaign(id, Duration::from_secs(30), |c| c["stats"]["sent"].as_u64() >= Some(3));

    let winner = |key: &str, id: u64, body: Value| server.api(key).post(&format!("/campaigns/{id}/ab/winner"), body).0;
    assert_eq!(winner(&alice, id, json!({"variant": 3})), 422);
    assert_eq!(winner(&alice, id, json!({"variant": "x"})), 422);
    assert_eq!(winner(&alice, id, json!({})), 422);
    assert_eq!(winner(&bob, id, json!({"variant": 0})), 404, "another user's campaign");
    let (status, picked) = api.post(&format!("/campaigns/{id}/ab/winner"), json!({"variant": 2}));
    assert_eq!(status, 200, "{picked}");
    assert_eq!(picked["ab_test"]["decided_by"], "choice");
    assert_eq!(winner(&alice, id, json!({"variant": 1})), 409, "decided once");

    let done = api.wait_status(id, "sent");
    assert_eq!(done["stats"]["sent"], 60);
    let all = server.outbox();
    assert_eq!(all.len(), 60);
    assert!(per_recipient(&all).values().all(|&n| n == 1));
    let tested = api.all_messages(id, "").iter().filter(|m| m["in_test"] == true).count();
    assert!(tested < 30, "picked before the test's 30 were all sent: {tested}");
    let c_lines = all.iter().filter(|l| subject_of(l) == "C").count();
    assert!(
        c_lines >= 60 - tested,
        "the rest got C: {c_lines} of 60, {tested} tested"
    );
    assert!(
        all.iter()
            .filter(|l| subject_of(l) == "C")
            .all(|l| l["from_name"] == "Team C"),
        "with C's sender name"
    );

    // Not a test campaign, not started, or not this user's: refused.
    let plain = api.send_campaign(list, json!({"transport": "log"}));
    assert_eq!(winner(&alice, plain, json!({"variant": 0})), 409);
    let draft = api.campaign(list, json!({"track_opens": true, "ab_test": setup(0.2)}));
    assert_eq!(winner(&alice, draft, json!({"variant": 0})), 409);
    // Each variant previews as it will be sent.
    let preview = api.ok_get(&format!("/campaigns/{draft}/preview?variant=2"));
    assert_eq!(preview["subject"], "C");
    assert_eq!(
        api.ok_get(&format!("/campaigns/{draft}/preview"))["subject"],
        "Hi Sample Subscriber"
    );
    assert_eq!(api.get(&format!("/campaigns/{draft}/preview?variant=3")).0, 422);
    assert_eq!(api.get(&format!("/campaigns/{plain}/preview?variant=0")).0, 422);

    // Setups refused field by field.
    let refused = |extra: Value, field: &str| {
        let mut body = json!({"name": "x", "subject": "s", "from_email": "news@example.org", "list_id": list, "text": "t", "track_opens": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, v) = api.post("/campaigns", body);
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (422, Some(field)),
            "{extra}: {v}"
        );
    };
    refused(
        json!({"ab_test": {"variants": [{"subject": "one"}], "test_share": 0.2, "metric": "opens", "wait_minutes": 5}}),
        "ab_test.variants",
    );
    refused(json!({"ab_test": setup(0.7)}), "ab_test.test_share");
    refused(
        json!({"track_opens": false, "track_clicks": true, "ab_test": setup(0.2)}),
        "ab_test.metric",
    );
    refused(
        json!({"ab_test": {"variants": [{}, {"html": "{% if %}"}], "test_share": 0.2, "metric": "opens", "wait_minutes": 5}}),
        "ab_test.variants[1].html",
    );
    refused(
        json!({"scheduled_at": "2031-01-01T09:00:00Z", "send_at_local_time": true, "ab_test": setup(0.2)}),
        "ab_test",
    );
    let (status, v) = api.post(
        "/campaigns",
        json!({"name": "x", "subject": "s", "from_email": "news@example.org", "list_id": list, "text": "t",
               "ab_test": {"variants": [{}, {}], "test_share": 0.2, "metric": "replies", "wait_minutes": 5}}),
    );
    assert_eq!(status, 422, "{v}");
}

#[test]
fn sigkills_in_the_test_and_in_the_rest_change_no_one_s_variant_or_count() {
    let (mut server, alice, _) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.list_of("crash", 400);
    let id = api.send_campaign(
        list,
        json!({
            "transport": "log", "send_rate": 6000, "track_opens": true,
            "ab_test": {"variants": [{"subject": "A"}, {"subject": "B"}],
                        "test_share": 0.5, "metric": "opens", "wait_minutes": 60}
        }),
    );
    // Killed while the test goes out.
    api.wait_campaign(id, Duration::from_secs(30), |c| c["stats"]["sent"].as_u64() >= Some(40));
    server.restart();
    let api = server.api(&alice);
    let waiting = api.wait_campaign(id, Duration::from_secs(60), |c| c["ab_test"]["decides_at"].is_string());
    let results = waiting["ab_test"]["results"].as_array().unwrap().clone();
    // Picked, then killed while the rest goes out.
    let (status, _) = api.post(&format!("/campaigns/{id}/ab/winner"), json!({"variant": 1}));
    assert_eq!(status, 200);
    api.wait_campaign(id, Duration::from_secs(30), |c| {
        c["stats"]["sent"].as_u64() >= Some(260)
    });
    server.restart();
    let api = server.api(&alice);
    let done = api.wait_status(id, "sent");
    assert_eq!(done["stats"]["sent"], 400, "{done}");

    let messages = api.all_messages(id, "");
    assert_eq!(messages.len(), 400, "one message per subscriber");
    let tested: Vec<&Value> = messages.iter().filter(|m| m["in_test"] == true).collect();
    assert_eq!(tested.len(), 200, "the test group is its share, a crash or not");
    let per_variant = |v: u64| tested.iter().filter(|m| m["variant"] == v).count() as u64;
    assert_eq!((per_variant(0), per_variant(1)), (100, 100));
    assert_eq!(
        results
            .iter()
            .map(|r| r["recipients"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [100, 100]
    );
    assert!(
        messages
            .iter()
            .filter(|m| m["in_test"] != true)
            .all(|m| m["variant"] == 1)
    );
    // Delivered twice only where a kill cut a call short, and flagged.
    let (lines, torn) = server.outbox_lenient();
    let per = per_recipient(&lines);
    assert_eq!(per.len(), 400);
    let extra: u64 = per.values().map(|n| n - 1).sum::<u64>() + torn as u64;
    assert!(
        extra <= done["stats"]["possible_duplicates"].as_u64().unwrap(),
        "{done}"
    );
    let subjects: HashMap<String, String> = lines
        .iter()
        .map(|l| (l["to"].as_str().unwrap().to_string(), subject_of(l)))
        .collect();
    for m in &messages {
        let want = if m["variant"] == 0 { "A" } else { "B" };
        assert_eq!(subjects[m["email"].as_str().unwrap()], want, "{m}");
    }
}
