//! The walking skeleton: a campaign sent end to end, and the API's guards.

use std::collections::HashMap;

use posta_e2e::{Api, Server, Value, json};

fn make_list(api: &Api) -> u64 {
    let list = api.ok_post("/lists", json!({"name": "Readers"}));
    let id = list["id"].as_u64().unwrap();
    let report = api.ok_post(
        &format!("/lists/{id}/subscribers"),
        json!([
            {"email": "ann@example.org", "name": "Ann", "timezone": "Europe/Paris",
             "attributes": {"plan": "pro", "city": "Lyon"}},
            {"email": "bob@example.org", "name": "Bob", "timezone": "America/New_York"},
            {"email": "chen@example.org", "name": "Chen"},
            {"email": "gone@example.org", "name": "Gone", "status": "unsubscribed"}
        ]),
    );
    assert_eq!(report["created"], 4, "{report}");
    id
}

fn draft(list: u64) -> Value {
    json!({
        "name": "Launch",
        "subject": "Hello {{ subscriber.name }}",
        "from_email": "news@example.org",
        "from_name": "News",
        "list_id": list,
        "html": "<p>Hi {{ subscriber.name }} ({{ subscriber.email }}), plan {{ subscriber.attributes.plan }}</p><a href=\"{{ unsubscribe_url }}\">unsubscribe</a>",
        "text": "Hi {{ subscriber.name }}, plan={{ subscriber.attributes.plan }} city={{ subscriber.attributes.city }}\n{{ unsubscribe_url }}"
    })
}

#[test]
fn campaign_is_sent_end_to_end_through_wasm_plugins() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = make_list(&api);
    let campaign = api.ok_post("/campaigns", draft(list));
    assert_eq!(campaign["status"], "draft");
    let id = campaign["id"].as_u64().unwrap();

    let sending = api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    assert!(
        sending["status"] == "sending" || sending["status"] == "sent",
        "{sending}"
    );
    let done = api.wait_status(id, "sent");
    let stats = &done["stats"];
    assert_eq!(
        (
            stats["total"].as_u64(),
            stats["sent"].as_u64(),
            stats["skipped"].as_u64(),
            stats["pending"].as_u64()
        ),
        (Some(4), Some(3), Some(1), Some(0)),
        "{done}"
    );
    assert!(
        done["started_at"].is_string() && done["completed_at"].is_string(),
        "{done}"
    );

    let outbox = server.outbox();
    let mut by_to: HashMap<String, Vec<&Value>> = HashMap::new();
    for line in &outbox {
        by_to
            .entry(line["to"].as_str().unwrap().to_string())
            .or_default()
            .push(line);
    }
    assert_eq!(outbox.len(), 3, "one message per subscribed subscriber: {outbox:#?}");
    for who in ["ann@example.org", "bob@example.org", "chen@example.org"] {
        assert_eq!(by_to.get(who).map(Vec::len), Some(1), "{who}");
    }
    assert!(!by_to.contains_key("gone@example.org"));

    let ann = by_to["ann@example.org"][0];
    assert_eq!(ann["subject"], "Hello Ann");
    assert_eq!(ann["from"], "news@example.org");
    assert_eq!(ann["from_name"], "News");
    let html = ann["html"].as_str().unwrap();
    assert!(html.contains("<p>Hi Ann (ann@example.org), plan pro</p>"), "{html}");
    let text = ann["text"].as_str().unwrap();
    assert!(text.starts_with("Hi Ann, plan=pro city=Lyon\n"), "{text}");
    let unsubscribe = text.lines().nth(1).unwrap();
    assert!(
        unsubscribe.starts_with(&format!("{}/unsubscribe/{id}/", server.base)),
        "{unsubscribe}"
    );
    assert!(html.contains(unsubscribe), "html carries the same link: {html}");
    let headers: Vec<(String, String)> = serde_json::from_value(ann["headers"].clone()).unwrap();
    assert!(
        headers.contains(&("List-Unsubscribe".into(), format!("<{unsubscribe}>"))),
        "{headers:?}"
    );
    assert!(headers.contains(&("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into())));
    let bob = by_to["bob@example.org"][0];
    assert_eq!(
        bob["text"].as_str().unwrap().lines().next(),
        Some("Hi Bob, plan= city=")
    );

    // Message ids are stable and unique per subscriber.
    let ids: std::collections::HashSet<_> = outbox.iter().map(|l| l["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);

    // The messages endpoint agrees with the stats.
    let messages = api.ok_get(&format!("/campaigns/{id}/messages"));
    let statuses: Vec<&str> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "sent").count(), 3);
    assert_eq!(statuses.iter().filter(|s| **s == "skipped").count(), 1);
    let sent_only = api.ok_get(&format!("/campaigns/{id}/messages?status=sent"));
    assert_eq!(sent_only["items"].as_array().unwrap().len(), 3);

    // The unsubscribe link works: GET only shows a form, POST unsubscribes.
    let http = reqwest::blocking::Client::new();
    assert_eq!(http.get(unsubscribe).send().unwrap().status().as_u16(), 200);
    let subs = api.ok_get(&format!("/lists/{list}/subscribers"));
    assert_eq!(subs["items"][0]["status"], "subscribed");
    assert_eq!(http.post(unsubscribe).send().unwrap().status().as_u16(), 200);
    let subs = api.ok_get(&format!("/lists/{list}/subscribers"));
    assert_eq!(subs["items"][0]["status"], "unsubscribed", "{subs}");
    // Re-importing the list does not bring her back.
    let report = api.ok_post(
        &format!("/lists/{list}/subscribers"),
        json!([{"email": "ann@example.org", "name": "Ann", "attributes": {"plan": "pro"}}]),
    );
    assert_eq!(report["kept_unsubscribed"], 1, "{report}");
    let subs = api.ok_get(&format!("/lists/{list}/subscribers"));
    assert_eq!(subs["items"][0]["status"], "unsubscribed", "{subs}");
    let forged = format!("{}/unsubscribe/{id}/2/00000000000000000000000000000000", server.base);
    assert_eq!(http.post(forged).send().unwrap().status().as_u16(), 404);

    // Mail already in inboxes keeps working after its campaign is deleted.
    let bob_link = bob["text"].as_str().unwrap().lines().nth(1).unwrap().to_string();
    let (status, _) = api.delete(&format!("/campaigns/{id}"));
    assert!(status < 300, "delete the sent campaign: {status}");
    assert_eq!(http.post(&bob_link).send().unwrap().status().as_u16(), 200);
    let subs = api.ok_get(&format!("/lists/{list}/subscribers"));
    let bob_now = subs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["email"] == "bob@example.org")
        .unwrap();
    assert_eq!(bob_now["status"], "unsubscribed", "{subs}");
}

#[test]
fn keys_guard_every_resource() {
    let (server, alice, bob) = Server::with_two_users();
    let a = server.api(&alice);
    let b = server.api(&bob);
    let list = make_list(&a);
    let campaign = a.ok_post("/campaigns", draft(list))["id"].as_u64().unwrap();

    let (status, body) = server.anonymous().get("/campaigns");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(server.api("posta_not_a_key").get("/lists").0, 401);

    for path in [
        format!("/campaigns/{campaign}"),
        format!("/campaigns/{campaign}/messages"),
        format!("/lists/{list}"),
        format!("/lists/{list}/subscribers"),
    ] {
        let (status, body) = b.get(&path);
        assert_eq!(status, 404, "GET {path} with another user's key: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    for action in ["send", "pause", "resume", "cancel", "duplicate"] {
        assert_eq!(
            b.post(&format!("/campaigns/{campaign}/{action}"), json!({})).0,
            404,
            "{action}"
        );
    }
    assert_eq!(
        b.patch(&format!("/campaigns/{campaign}"), json!({"name": "mine"})).0,
        404
    );
    assert_eq!(b.delete(&format!("/campaigns/{campaign}")).0, 404);
    assert_eq!(b.delete(&format!("/lists/{list}")).0, 404);
    assert_eq!(
        b.post(&format!("/lists/{list}/subscribers"), json!({"email": "x@example.org"}))
            .0,
        404
    );
    // Bob cannot aim a campaign at Alice's list either.
    let (status, body) = b.post("/campaigns", draft(list));
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("list_id")),
        "{body}"
    );
    assert_eq!(b.ok_get("/lists")["items"], json!([]));
    assert_eq!(b.ok_get("/campaigns")["items"], json!([]));

    // Nothing of Alice's changed.
    let c = a.ok_get(&format!("/campaigns/{campaign}"));
    assert_eq!(
        (c["name"].as_str(), c["status"].as_str()),
        (Some("Launch"), Some("draft"))
    );
    assert_eq!(a.ok_get(&format!("/lists/{list}"))["subscriber_count"], 4);
}

#[test]
fn bad_input_gets_clear_errors() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = make_list(&api);

    let (status, body) = api.post_raw("/lists", "{\"name\": ");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    // serde reads an array into a struct field by field; the API must not.
    let (status, body) = api.post("/lists", json!(["by position"]));
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("body")), "{body}");
    let (status, body) = api.post(&format!("/lists/{list}/subscribers"), json!([["a@example.org"]]));
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("subscribers[0]")),
        "{body}"
    );
    // Emails are parsed on the way in, and the error names the field once.
    let (status, body) = api.post("/bounces", json!({"email": "nope", "type": "hard"}));
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("email")),
        "{body}"
    );
    assert_eq!(
        body["error"]["message"], "email: \"nope\" is not a valid email address: missing @",
        "{body}"
    );

    let (status, body) = api.post(
        &format!("/lists/{list}/subscribers"),
        json!([{"email": "ok@example.org"}, {"email": "not-an-email"}]),
    );
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("subscribers[1].email")),
        "{body}"
    );
    let (status, body) = api.post(
        &format!("/lists/{list}/subscribers"),
        json!({"email": "tz@example.org", "timezone": "Mars/Base"}),
    );
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("timezone")),
        "{body}"
    );
    // The refused batch stored nothing.
    assert_eq!(api.ok_get(&format!("/lists/{list}"))["subscriber_count"], 4);

    let mut bad = draft(list);
    bad["html"] = json!("<p>{{ subscriber.name </p>");
    let (status, body) = api.post("/campaigns", bad);
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("html")), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("syntax error"),
        "{body}"
    );

    let mut bad = draft(list);
    bad["transport"] = json!("carrier-pigeon");
    assert_eq!(api.post("/campaigns", bad).1["error"]["field"], "transport");
    let mut bad = draft(list);
    bad["send_rate"] = json!(0);
    assert_eq!(api.post("/campaigns", bad).1["error"]["field"], "send_rate");
    let mut bad = draft(list);
    bad["send_rate"] = json!(-5);
    let (status, body) = api.post("/campaigns", bad);
    assert_eq!(status, 422, "{body}");
    let mut bad = draft(list);
    bad["list_id"] = json!(999);
    assert_eq!(api.post("/campaigns", bad).1["error"]["field"], "list_id");

    assert_eq!(api.get("/campaigns/12345").0, 404);
    // Ids past the largest one (2^63 - 1) name nothing, on every backend.
    let huge = u64::MAX;
    for path in [
        format!("/campaigns/{huge}"),
        format!("/lists/{huge}"),
        format!("/lists/{list}/subscribers/{huge}"),
        format!("/webhooks/{huge}"),
        format!("/campaigns/{huge}/messages"),
    ] {
        let (status, body) = api.get(&path);
        assert_eq!(status, 404, "{path}: {body}");
    }
    let mut bad = draft(list);
    bad["list_id"] = json!(huge);
    let (status, body) = api.post("/campaigns", bad);
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("list_id")),
        "{body}"
    );
    assert_eq!(api.get("/campaigns?status=flying").0, 422);
    assert_eq!(api.get("/campaigns?limit=0").0, 422);

    let id = api.ok_post("/campaigns", draft(list))["id"].as_u64().unwrap();
    api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    api.wait_status(id, "sent");
    let (status, body) = api.post(&format!("/campaigns/{id}/send"), json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["status"], "sent");
    assert!(body["error"]["message"].as_str().unwrap().contains("send"), "{body}");

    let huge = "x".repeat(1536 * 1024);
    let (status, _) = api.post_raw("/lists", &format!("{{\"name\": \"{huge}\"}}"));
    assert_eq!(status, 413);

    // Still serving.
    assert_eq!(api.get("/lists").0, 200);
    assert!(
        api.ok_get("/transports")
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "log")
    );
    let openapi: Value = reqwest::blocking::get(format!("{}/api/v1/openapi.json", server.base))
        .unwrap()
        .json()
        .unwrap();
    let paths = openapi["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/users/me/lists", "post"),
        ("/api/v1/users/me/lists", "get"),
        ("/api/v1/users/me/lists/{id}", "get"),
        ("/api/v1/users/me/lists/{id}", "delete"),
        ("/api/v1/users/me/lists/{id}/subscribers", "post"),
        ("/api/v1/users/me/lists/{id}/subscribers", "get"),
        ("/api/v1/users/me/campaigns", "post"),
        ("/api/v1/users/me/campaigns", "get"),
        ("/api/v1/users/me/campaigns/{id}", "get"),
        ("/api/v1/users/me/campaigns/{id}", "patch"),
        ("/api/v1/users/me/campaigns/{id}", "delete"),
        ("/api/v1/users/me/campaigns/{id}/send", "post"),
        ("/api/v1/users/me/campaigns/{id}/pause", "post"),
        ("/api/v1/users/me/campaigns/{id}/resume", "post"),
        ("/api/v1/users/me/campaigns/{id}/cancel", "post"),
        ("/api/v1/users/me/campaigns/{id}/duplicate", "post"),
        ("/api/v1/users/me/campaigns/{id}/messages", "get"),
        ("/api/v1/users/me/transports", "get"),
        ("/unsubscribe/{campaign}/{subscriber}/{token}", "get"),
        ("/unsubscribe/{campaign}/{subscriber}/{token}", "post"),
        ("/api/v1/health", "get"),
        ("/api/v1/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from OpenAPI"
        );
    }
    for schema in [
        "Campaign",
        "CampaignDraft",
        "CampaignPatch",
        "Stats",
        "Subscriber",
        "List",
        "MessageRecord",
        "ErrorBody",
    ] {
        assert!(
            openapi["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
}
