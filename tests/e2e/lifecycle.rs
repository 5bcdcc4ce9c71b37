//! The campaign lifecycle of DESIGN.md §2, through the real binary.

use std::time::Duration;

use posta_e2e::{Server, Value, json, per_recipient};

fn finished(c: &Value) -> u64 {
    ["sent", "failed", "skipped", "cancelled"]
        .iter()
        .map(|k| c["stats"][k].as_u64().unwrap())
        .sum()
}

#[test]
fn pause_and_resume_twenty_times_send_each_subscriber_once() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", 5_000);
    let id = api.campaign(list, json!({"send_rate": 12_000}));
    api.ok_post(&format!("/campaigns/{id}/send"), json!({}));

    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let (status, paused) = api.post(&format!("/campaigns/{id}/pause"), json!({}));
        assert_eq!(status, 200, "round {round}: {paused}");
        assert_eq!(paused["status"], "paused");
        let queued_then = paused["stats"]["queued"].as_u64().unwrap();
        let promised = finished(&paused) + queued_then;
        // Queued messages still go out; nothing else does.
        let drained = api.wait_campaign(id, Duration::from_secs(60), |c| c["stats"]["queued"] == 0);
        assert_eq!(
            finished(&drained),
            promised,
            "round {round}: only the {queued_then} queued went out"
        );
        let lines = server.outbox().len();
        std::thread::sleep(Duration::from_millis(150));
        let still = api.ok_get(&format!("/campaigns/{id}"));
        assert_eq!(
            (still["status"].as_str(), finished(&still)),
            (Some("paused"), promised),
            "round {round}"
        );
        assert_eq!(
            server.outbox().len(),
            lines,
            "round {round}: mail went out while paused"
        );
        let resumed = api.ok_post(&format!("/campaigns/{id}/resume"), json!({}));
        assert_eq!(resumed["status"], "sending", "round {round}");
    }
    let done = api.wait_status(id, "sent");
    assert_eq!(done["stats"]["sent"], 5_000, "{done}");
    let counts = per_recipient(&server.outbox());
    assert_eq!(counts.len(), 5_000);
    assert!(counts.values().all(|n| *n == 1), "someone got two messages");
}

#[test]
fn cancel_while_paused_is_final_and_cancels_the_rest() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", 2_000);
    let id = api.campaign(list, json!({"send_rate": 6_000}));
    api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    std::thread::sleep(Duration::from_millis(500));
    api.ok_post(&format!("/campaigns/{id}/pause"), json!({}));
    let cancelled = api.ok_post(&format!("/campaigns/{id}/cancel"), json!({}));
    assert_eq!(cancelled["status"], "cancelled");

    let (status, body) = api.post(&format!("/campaigns/{id}/resume"), json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_transition");
    assert_eq!(body["error"]["status"], "cancelled");
    assert!(body["error"]["message"].as_str().unwrap().contains("resume"));
    for action in ["send", "pause", "cancel"] {
        assert_eq!(
            api.post(&format!("/campaigns/{id}/{action}"), json!({})).0,
            409,
            "{action}"
        );
    }

    let c = api.wait_campaign(id, Duration::from_secs(60), |c| {
        c["stats"]["pending"] == 0 && c["stats"]["queued"] == 0
    });
    let stats = &c["stats"];
    let (sent, cancelled_n) = (stats["sent"].as_u64().unwrap(), stats["cancelled"].as_u64().unwrap());
    assert_eq!(sent + cancelled_n, 2_000, "{c}");
    assert!(cancelled_n > 1_000, "most of the list was never sent: {c}");
    assert_eq!(server.outbox().len() as u64, sent);
    // Stats agree with the messages.
    let counted = api.all_messages(id, "status=cancelled").len() as u64;
    assert_eq!(counted, cancelled_n);
    assert_eq!(api.ok_get(&format!("/campaigns/{id}"))["status"], "cancelled");
}

#[test]
fn a_schedule_fires_after_a_restart_even_if_its_time_passed_while_down() {
    let (mut server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", 10);
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let id = api.campaign(list, json!({"scheduled_at": at.to_rfc3339()}));
    let scheduled = api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    assert_eq!(scheduled["status"], "scheduled");
    server.kill();
    std::thread::sleep(Duration::from_secs(4));
    server.restart();
    let api = server.api(&key);
    let done = api.wait_status(id, "sent");
    assert_eq!(done["stats"]["sent"], 10);
    assert_eq!(server.outbox().len(), 10);

    // A schedule far ahead can be cancelled; it never sends.
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let id = api.campaign(list, json!({"scheduled_at": later.to_rfc3339()}));
    assert_eq!(
        api.ok_post(&format!("/campaigns/{id}/send"), json!({}))["status"],
        "scheduled"
    );
    assert_eq!(
        api.ok_post(&format!("/campaigns/{id}/cancel"), json!({}))["status"],
        "cancelled"
    );
    assert_eq!(server.outbox().len(), 10);
}

#[test]
fn a_schedule_fires_while_running() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", 5);
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let id = api.campaign(list, json!({"scheduled_at": at.to_rfc3339()}));
    assert_eq!(
        api.ok_post(&format!("/campaigns/{id}/send"), json!({}))["status"],
        "scheduled"
    );
    let done = api.wait_status(id, "sent");
    let started: chrono::DateTime<chrono::Utc> = done["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started >= at, "started {started} before its time {at}");
    // A scheduled_at in the past sends at once.
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let id = api.campaign(list, json!({"scheduled_at": past.to_rfc3339()}));
    assert_eq!(
        api.ok_post(&format!("/campaigns/{id}/send"), json!({}))["status"],
        "sending"
    );
    api.wait_status(id, "sent");
}

#[test]
fn duplicate_keeps_every_setting() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", 3);
    let at = "2031-05-01T09:30:00Z";
    let id = api.campaign(
        list,
        json!({"send_rate": 1200, "send_at_local_time": true, "scheduled_at": at, "from_name": "The Team",
               "html": "<b>{{ subscriber.name }}</b>", "transport": "log"}),
    );
    let original = api.ok_get(&format!("/campaigns/{id}"));
    let (status, copy) = api.post(&format!("/campaigns/{id}/duplicate"), json!({}));
    assert_eq!(status, 201, "{copy}");
    assert_eq!(copy["name"], "Weekly (copy)");
    assert_eq!(copy["status"], "draft");
    assert_ne!(copy["id"], original["id"]);
    for field in [
        "subject",
        "from_email",
        "from_name",
        "list_id",
        "html",
        "text",
        "transport",
        "send_rate",
        "send_at_local_time",
        "scheduled_at",
    ] {
        assert_eq!(copy[field], original[field], "{field}");
    }
    assert_eq!(copy["stats"]["total"], 0);
    assert!(copy["started_at"].is_null() && copy["completed_at"].is_null());

    // Any status can be duplicated; the copy of a sent campaign has empty stats.
    let plain = api.campaign(list, json!({}));
    api.ok_post(&format!("/campaigns/{plain}/send"), json!({}));
    api.wait_status(plain, "sent");
    let copy = api.ok_post(&format!("/campaigns/{plain}/duplicate"), json!({}));
    assert_eq!(
        (copy["status"].as_str(), copy["stats"]["sent"].as_u64()),
        (Some("draft"), Some(0))
    );
}

#[test]
fn edit_and_delete_follow_the_status() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", 3_000);
    let id = api.campaign(list, json!({}));
    let patched = api.patch(
        &format!("/campaigns/{id}"),
        json!({"subject": "New {{ subscriber.name }}", "send_rate": 3000}),
    );
    assert_eq!(patched.0, 200, "{}", patched.1);
    assert_eq!(patched.1["send_rate"], 3000);
    let (status, body) = api.patch(&format!("/campaigns/{id}"), json!({"html": "{% if %}"}));
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("html")), "{body}");

    // Draft → invalid actions answer 409 naming the status.
    for action in ["pause", "resume", "cancel"] {
        let (status, body) = api.post(&format!("/campaigns/{id}/{action}"), json!({}));
        assert_eq!(
            (status, body["error"]["status"].as_str()),
            (409, Some("draft")),
            "{action}: {body}"
        );
    }

    api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    let (status, body) = api.patch(&format!("/campaigns/{id}"), json!({"name": "late"}));
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (409, Some("sending")),
        "{body}"
    );
    let (status, body) = api.delete(&format!("/campaigns/{id}"));
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (409, Some("sending")),
        "{body}"
    );
    let (status, _) = api.post(&format!("/campaigns/{id}/resume"), json!({}));
    assert_eq!(status, 409);

    api.ok_post(&format!("/campaigns/{id}/cancel"), json!({}));
    api.wait_campaign(id, Duration::from_secs(60), |c| {
        c["stats"]["pending"] == 0 && c["stats"]["queued"] == 0
    });
    assert_eq!(api.delete(&format!("/campaigns/{id}")).0, 204);
    assert_eq!(api.get(&format!("/campaigns/{id}")).0, 404);
    assert_eq!(api.get(&format!("/campaigns/{id}/messages")).0, 404);
    let listed = api.ok_get("/campaigns");
    assert!(listed["items"].as_array().unwrap().iter().all(|c| c["id"] != id));
}

#[test]
fn campaigns_list_filters_by_status() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("r", 2);
    let a = api.campaign(list, json!({}));
    let b = api.campaign(list, json!({}));
    api.ok_post(&format!("/campaigns/{b}/send"), json!({}));
    api.wait_status(b, "sent");
    let drafts = api.ok_get("/campaigns?status=draft");
    let ids: Vec<u64> = drafts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![a]);
    let sent = api.ok_get("/campaigns?status=sent");
    assert_eq!(sent["items"][0]["id"].as_u64(), Some(b));
    let page = api.ok_get("/campaigns?limit=1");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next_after"].as_u64().unwrap();
    let page2 = api.ok_get(&format!("/campaigns?limit=1&after={next}"));
    assert_eq!(page2["items"][0]["id"].as_u64(), Some(b));
}
