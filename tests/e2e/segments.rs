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
