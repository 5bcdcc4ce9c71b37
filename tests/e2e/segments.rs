//! Segments over the API: rules checked (a bad one is a 422 naming it),
//! counts exact against the same data counted here, another user's
//! segments and lists as missing as none, and a list's segments going with
//! it.

use posta_e2e::{Server, json};

#[test]
fn segment_rules_count_exactly_and_bad_ones_are_named() {
    let (server, alice, bob) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.ok_post("/lists", json!({"name": "Readers"}))["id"]
        .as_u64()
        .unwrap();
    // CSV, so `seats` arrives as text: a numeric rule must still compare
    // it as a number ("12" > 9, though "12" < "9" as text).
    let mut csv = String::from("email,name,plan,seats,country\n");
    let n = 60u64;
    for i in 0..n {
        let plan = ["pro", "free", "Pro"][i as usize % 3];
        let name = if i % 5 == 0 { "" } else { "Reader" };
        csv.push_str(&format!(
            "r{i}@example.org,{name},{plan},{},{}\n",
            i % 20,
            ["DE", "fr"][i as usize % 2]
        ));
    }
    let (status, report) = api.post_as(&format!("/lists/{list}/subscribers"), "text/csv", &csv);
    assert_eq!(status, 200, "{report}");
    // Two of them leave.
    for i in [3u64, 6] {
        let subs = api.ok_get(&format!("/lists/{list}/subscribers?limit=1000"));
        let id = subs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["email"] == format!("r{i}@example.org"))
            .unwrap()["id"]
            .as_u64()
            .unwrap();
        let (s, v) = api.patch(
            &format!("/lists/{list}/subscribers/{id}"),
            json!({"status": "unsubscribed"}),
        );
        assert_eq!(s, 200, "{v}");
    }
    let expect = |f: &dyn Fn(u64) -> bool| -> (u64, u64) {
        let all = (0..n).filter(|&i| f(i)).count() as u64;
        let subscribed = (0..n).filter(|&i| f(i) && i != 3 && i != 6).count() as u64;
        (all, subscribed)
    };
    let count = |id: u64| {
        let c = api.ok_get(&format!("/segments/{id}/count"));
        (c["count"].as_u64().unwrap(), c["subscribed"].as_u64().unwrap())
    };

    // "pro" in any case, and more than 9 seats.
    let (s, seg) = api.post(
        "/segments",
        json!({"name": "Big pro teams", "list_id": list, "match": "all", "rules": [
            {"field": "attributes.plan", "op": "eq", "value": "PRO"},
            {"field": "attributes.seats", "op": "gt", "value": 9},
        ]}),
    );
    assert_eq!(s, 201, "{seg}");
    let id = seg["id"].as_u64().unwrap();
    assert_eq!(seg["match"], "all");
    assert_eq!(count(id), expect(&|i| i % 3 != 1 && i % 20 > 9));

    // Any of: no name, or French (case-insensitive), or the two who left.
    let (s, v) = api.patch(
        &format!("/segments/{id}"),
        json!({"match": "any", "rules": [
            {"field": "name", "op": "not_exists"},
            {"field": "attributes.country", "op": "in", "value": ["FR", "it"]},
            {"field": "status", "op": "eq", "value": "unsubscribed"},
        ]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(count(id), expect(&|i| i % 5 == 0 || i % 2 == 1 || i == 3 || i == 6));
    let (s, v) = api.patch(
        &format!("/segments/{id}"),
        json!({"match": "all", "rules": [
            {"field": "email", "op": "starts_with", "value": "R1"},
            {"field": "created_at", "op": "gte", "value": "2020-01-01"},
        ]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(count(id), expect(&|i| format!("r{i}").starts_with("r1")), "r1, r10…r19");

    // A bad rule: 422 naming it, and nothing changed.
    for (rule, says) in [
        (
            json!({"field": "attributes.seats", "op": "between", "value": 1}),
            "unknown op",
        ),
        (json!({"field": "shoe_size", "op": "eq", "value": 44}), "unknown field"),
        (
            json!({"field": "created_at", "op": "gt", "value": "last week"}),
            "not a time",
        ),
        (json!({"field": "email", "op": "lt", "value": "m"}), "does not apply"),
    ] {
        let (s, v) = api.patch(
            &format!("/segments/{id}"),
            json!({"rules": [{"field": "name", "op": "exists"}, rule]}),
        );
        assert_eq!((s, v["error"]["field"].as_str()), (422, Some("rules[1]")), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{v}");
    }
    assert_eq!(
        api.ok_get(&format!("/segments/{id}"))["match"],
        "all",
        "nothing changed"
    );
    let (s, v) = api.post("/segments", json!({"name": "x", "list_id": list, "rules": []}));
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("rules")), "{v}");
    let (s, v) = api.post_raw("/segments", "{\"name\": ");
    assert!(s == 400 || s == 422, "{s} {v}");
    assert!(v["error"]["message"].is_string(), "a JSON error: {v}");
    let (s, v) = api.post(
        "/segments",
        json!({"name": "x", "list_id": list, "rules": [{"field": "name", "op": "exists"}], "colour": 1}),
    );
    assert_eq!(s, 422, "unknown fields are refused: {v}");

    // Bob sees none of it, and cannot use Alice's list.
    let bob = server.api(&bob);
    assert_eq!(bob.get(&format!("/segments/{id}")).0, 404);
    assert_eq!(bob.get(&format!("/segments/{id}/count")).0, 404);
    assert_eq!(bob.patch(&format!("/segments/{id}"), json!({"name": "mine"})).0, 404);
    assert_eq!(bob.delete(&format!("/segments/{id}")).0, 404);
    let (s, v) = bob.post(
        "/segments",
        json!({"name": "x", "list_id": list, "rules": [{"field": "name", "op": "exists"}]}),
    );
    assert_eq!(s, 404, "{v}");
    assert_eq!(bob.ok_get("/segments")["items"], json!([]));
    assert_eq!(api.get("/segments/not-a-number").0, 400);

    // Listed, paged; deleted with its list.
    let second = api.ok_post(
        "/segments",
        json!({"name": "Named", "list_id": list, "rules": [{"field": "name", "op": "exists"}]}),
    )["id"]
        .as_u64()
        .unwrap();
    let page = api.ok_get("/segments?limit=1");
    assert_eq!(page["items"][0]["id"], id);
    let rest = api.ok_get(&format!("/segments?limit=1&after={}", page["next_after"]));
    assert_eq!(rest["items"][0]["id"], second);
    assert_eq!(api.delete(&format!("/segments/{second}")).0, 204);
    assert_eq!(api.get(&format!("/segments/{second}")).0, 404);
    assert_eq!(api.delete(&format!("/lists/{list}")).0, 204);
    assert_eq!(
        api.get(&format!("/segments/{id}")).0,
        404,
        "a list's segments go with it"
    );
}

#[test]
fn a_campaign_sends_to_its_segment_as_it_was_when_the_send_started() {
    let (mut server, alice, bob) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.ok_post("/lists", json!({"name": "Readers"}))["id"]
        .as_u64()
        .unwrap();
    let other = api.ok_post("/lists", json!({"name": "Others"}))["id"].as_u64().unwrap();
    let subs: Vec<_> = (0..40)
        .map(|i| {
            let plan = ["pro", "free"][i % 2];
            json!({"email": format!("m{i}@example.org"), "attributes": {"plan": plan}})
        })
        .collect();
    api.ok_post(&format!("/lists/{list}/subscribers"), json!(subs));
    let segment = api.ok_post(
        "/segments",
        json!({"name": "Pro", "list_id": list, "rules": [{"field": "attributes.plan", "op": "eq", "value": "pro"}]}),
    )["id"]
        .as_u64()
        .unwrap();
    let body = |extra: serde_json::Value| {
        let mut b = json!({"name": "Pro news", "subject": "Hi", "from_email": "news@example.org",
            "text": "Hello {{ subscriber.email }}", "transport": "log", "send_rate": 600});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };

    // The list may be left out (it is the segment's); another list, a
    // missing segment or someone else's is a 422 naming the field.
    let (s, c) = api.post("/campaigns", body(json!({"segment_id": segment})));
    assert_eq!(s, 201, "{c}");
    assert_eq!(
        (c["list_id"].as_u64(), c["segment_id"].as_u64()),
        (Some(list), Some(segment))
    );
    let id = c["id"].as_u64().unwrap();
    for (extra, field) in [
        (json!({"segment_id": segment, "list_id": other}), "list_id"),
        (json!({"segment_id": 999_999}), "segment_id"),
        (json!({}), "list_id"),
    ] {
        let (s, v) = api.post("/campaigns", body(extra));
        assert_eq!((s, v["error"]["field"].as_str()), (422, Some(field)), "{v}");
    }
    let bob = server.api(&bob);
    bob.ok_post("/lists", json!({"name": "Bob's"}));
    let (s, v) = bob.post("/campaigns", body(json!({"segment_id": segment})));
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("segment_id")), "{v}");
    let (s, v) = api.patch(&format!("/campaigns/{id}"), json!({"list_id": other}));
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("list_id")), "{v}");

    // Sending at 10 a second: paused mid-send, the audience is changed
    // every way there is, then the server is killed and started again.
    api.ok_post(&format!("/campaigns/{id}/send"), json!({}));
    api.wait_campaign(id, std::time::Duration::from_secs(60), |c| {
        c["stats"]["sent"].as_u64() >= Some(3)
    });
    let (s, v) = api.post(&format!("/campaigns/{id}/pause"), json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(api.ok_get(&format!("/campaigns/{id}"))["stats"]["total"], 20);
    let all = api.ok_get(&format!("/lists/{list}/subscribers?limit=100"));
    let sub_id = |email: &str| {
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["email"] == email)
            .unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    for (email, plan) in [("m39@example.org", "pro"), ("m38@example.org", "free")] {
        let (s, v) = api.patch(
            &format!("/lists/{list}/subscribers/{}", sub_id(email)),
            json!({"attributes": {"plan": plan}}),
        );
        assert_eq!(s, 200, "{v}");
    }
    api.ok_post(
        &format!("/lists/{list}/subscribers"),
        json!([{"email": "late@example.org", "attributes": {"plan": "pro"}}]),
    );
    let (s, v) = api.patch(
        &format!("/segments/{segment}"),
        json!({"rules": [{"field": "email", "op": "contains", "value": "@"}]}),
    );
    assert_eq!(s, 200, "{v}");
    server.kill();
    server.start_again();
    let api = server.api(&alice);
    api.ok_post(&format!("/campaigns/{id}/resume"), json!({}));
    let done = api.wait_status(id, "sent");
    assert_eq!(
        (done["stats"]["total"].as_u64(), done["stats"]["sent"].as_u64()),
        (Some(20), Some(20)),
        "{done}"
    );
    let mut sent: Vec<String> = api
        .all_messages(id, "status=sent")
        .iter()
        .map(|m| m["email"].as_str().unwrap().to_string())
        .collect();
    sent.sort();
    let mut expected: Vec<String> = (0..40).step_by(2).map(|i| format!("m{i}@example.org")).collect();
    expected.sort();
    assert_eq!(sent, expected, "the even ones, m38 included; not m39 nor late");

    // The segment now matches everyone: a new campaign to it gets 41. One
    // scheduled holds the segment until it is cancelled.
    let later = api.ok_post(
        "/campaigns",
        body(json!({"segment_id": segment, "scheduled_at": "2099-01-01T00:00:00Z"})),
    )["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        api.ok_post(&format!("/campaigns/{later}/send"), json!({}))["status"],
        "scheduled"
    );
    let (s, v) = api.delete(&format!("/segments/{segment}"));
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&later.to_string()),
        "{v}"
    );
    api.ok_post(&format!("/campaigns/{later}/cancel"), json!({}));
    let now = api.send_campaign(list, json!({"segment_id": segment, "transport": "log"}));
    assert_eq!(api.wait_status(now, "sent")["stats"]["sent"], 41);
    assert_eq!(api.delete(&format!("/segments/{segment}")).0, 204);
}
