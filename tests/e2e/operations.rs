//! What an operator scrapes and administers: `/metrics` read by an
//! independent Prometheus parser, users and keys over the admin API.

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
    // Transport calls are timed and sized: the log transport takes what
    // queued meanwhile in one call, so 1 to 5 calls carried the five.
    let log = [("transport", "log")];
    let delta = |name: &str| value(&after, name, &log) - value(&before, name, &log);
    let calls = delta("posta_transport_call_seconds_count");
    assert!((1.0..=5.0).contains(&calls), "{calls} calls");
    assert_eq!(delta("posta_transport_call_messages_count"), calls);
    assert_eq!(delta("posta_transport_call_messages_sum"), 5.0);
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

#[test]
fn an_admin_manages_users_and_keys_while_a_campaign_sends() {
    let (server, alice, bob) = Server::with_two_users();
    let admin = server.api(&alice);
    let users = format!("{}/api/v1/admin/users", server.base);
    // 200 messages at 1,200/min: sending for about ten seconds.
    let list = admin.list_of("a", 200);
    let campaign = admin.send_campaign(list, json!({"send_rate": 1200}));
    assert_eq!(admin.ok_get(&format!("/campaigns/{campaign}"))["status"], "sending");

    let (status, carol) = admin.post_abs(&users, json!({"email": "carol@example.org"}));
    assert_eq!(status, 201, "{carol}");
    let carol_id = carol["user"]["id"].as_u64().unwrap();
    let first_key = carol["key"].as_str().unwrap().to_string();
    assert_eq!(carol["user"]["admin"], false);
    assert_eq!(server.api(&first_key).get("/lists").0, 200, "the new key works at once");

    let keys = format!("{users}/{carol_id}/keys");
    let (status, second) = admin.post_abs(&keys, json!({}));
    assert_eq!(status, 201, "{second}");
    let second_key = second["key"].as_str().unwrap().to_string();
    let listed = admin.get_abs(&keys).1;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    assert!(
        !listed.to_string().contains(&first_key[6..]) && items.iter().all(|k| k.get("hash").is_none()),
        "keys and their hashes never come back: {listed}"
    );
    assert!(second_key.starts_with(items[1]["hint"].as_str().unwrap()), "{listed}");

    let first_id = carol["key_info"]["id"].as_u64().unwrap();
    assert_eq!(admin.delete_abs(&format!("{keys}/{first_id}")).0, 204);
    assert_eq!(server.api(&first_key).get("/lists").0, 401, "revoked");
    assert_eq!(
        server.api(&second_key).get("/lists").0,
        200,
        "the other key still works"
    );
    assert_eq!(admin.delete_abs(&format!("{keys}/{first_id}")).0, 404);

    let all = admin.get_abs(&users).1;
    let emails: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["alice@example.org", "bob@example.org", "carol@example.org"]);

    // Bad input and other users.
    assert_eq!(admin.post_abs(&users, json!({"email": "carol@example.org"})).0, 409);
    assert_eq!(admin.post_abs(&users, json!({"email": "not an email"})).0, 422);
    assert_eq!(admin.post_abs(&format!("{users}/999999/keys"), json!({})).0, 404);
    let bob = server.api(&bob);
    assert_eq!(bob.get_abs(&users).0, 403);
    assert_eq!(bob.post_abs(&users, json!({"email": "eve@example.org"})).0, 403);
    assert_eq!(bob.post_abs(&keys, json!({})).0, 403);
    assert_eq!(server.anonymous().get_abs(&users).0, 401);

    // The CLI cannot open the database the server holds; it says where to go.
    let out = std::process::Command::new(posta_e2e::posta_bin())
        .args(["user", "add", "dave@example.org", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("POST /api/v1/admin/users"), "{err}");

    // The campaign went on meanwhile.
    let done = admin.wait_status(campaign, "sent");
    assert_eq!(done["stats"]["sent"], 200, "{done}");
}

#[test]
fn csv_imports_report_bad_rows_by_line_and_exports_round_trip() {
    let (server, key, other_key) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.ok_post("/lists", json!({"name": "csv"}))["id"].as_u64().unwrap();
    // Someone who left stays gone whatever the file says.
    api.ok_post(
        &format!("/lists/{list}/subscribers"),
        json!({"email": "gone@example.org", "status": "unsubscribed"}),
    );
    let file = "email,name,timezone,plan,zip\r\n\
                ada@example.org,Ada,Europe/London,pro,01234\r\n\
                not-an-email,Nobody,,free,\r\n\
                \"bob@example.org\",\"Bob, \"\"the builder\"\"\nSecond line\",,free,99\r\n\
                cy@example.org,Cy,Mars/Olympus,free,\r\n\
                gone@example.org,Gone,,,\r\n\
                \r\n\
                dee@example.org,Dee\r\n";
    let (status, report) = api.post_as(&format!("/lists/{list}/subscribers"), "text/csv", file);
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["created"], &report["updated"]),
        (&json!(3), &json!(1)),
        "{report}"
    );
    assert_eq!(report["kept_unsubscribed"], 1, "{report}");
    assert_eq!(report["rejected"], 2, "{report}");
    let errors: Vec<(u64, &str)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    // Line numbers count the quoted line break inside Bob's name.
    assert_eq!(errors, [(3, "email"), (6, "timezone")], "{report}");
    // The same file with LF line ends numbers its rows the same.
    let lf_list = api.ok_post("/lists", json!({"name": "csv lf"}))["id"].as_u64().unwrap();
    let (_, lf) = api.post_as(
        &format!("/lists/{lf_list}/subscribers"),
        "text/csv",
        &file.replace("\r\n", "\n"),
    );
    let lf_errors: Vec<(u64, &str)> = lf["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(lf_errors, errors, "{lf}");
    let subs = api.ok_get(&format!("/lists/{list}/subscribers"))["items"].clone();
    let bob = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["email"] == "bob@example.org")
        .unwrap();
    assert_eq!(bob["name"], "Bob, \"the builder\"\nSecond line");
    assert_eq!(bob["attributes"], json!({"plan": "free", "zip": "99"}));

    // Export, import the export into a new list, export again: the same.
    let (status, exported) = api.get(&format!("/lists/{list}/subscribers.csv"));
    assert_eq!(status, 200);
    let exported = exported.as_str().unwrap().to_string();
    assert!(
        exported.starts_with("email,name,timezone,status,plan,zip\n"),
        "{exported}"
    );
    assert!(exported.contains("gone@example.org,Gone,,unsubscribed"), "{exported}");
    let copy = api.ok_post("/lists", json!({"name": "copy"}))["id"].as_u64().unwrap();
    let (status, r) = api.post_as(&format!("/lists/{copy}/subscribers"), "text/csv", &exported);
    assert_eq!((status, &r["created"]), (200, &json!(4)), "{r}");
    let again = api.get(&format!("/lists/{copy}/subscribers.csv")).1;
    assert_eq!(again.as_str().unwrap(), exported, "export → import → export");

    // The CLI streams a file to the running server.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.csv");
    let mut text = String::from("email,name,city\n");
    for i in 0..5_000 {
        text += &format!("p{i}@example.org,Person {i},Town {}\n", i % 17);
    }
    std::fs::write(&big, text).unwrap();
    let report = server.import_csv(&key, copy, &big);
    assert_eq!(report["created"], 5_000, "{report}");
    assert_eq!(api.ok_get(&format!("/lists/{copy}"))["subscriber_count"], 5_004);

    // More attribute names than a CSV header may carry: refused, not cut.
    let wide = api.ok_post("/lists", json!({"name": "wide"}))["id"].as_u64().unwrap();
    let attributes: serde_json::Map<String, Value> = (0..1001).map(|i| (format!("a{i}"), json!("x"))).collect();
    api.ok_post(
        &format!("/lists/{wide}/subscribers"),
        json!({"email": "wide@example.org", "attributes": attributes}),
    );
    let (status, r) = api.get(&format!("/lists/{wide}/subscribers.csv"));
    assert_eq!(status, 422, "{r}");

    // Bad input, other users.
    let (status, r) = api.post_as(&format!("/lists/{list}/subscribers"), "text/csv", "name,plan\nx,y\n");
    assert_eq!(status, 422, "{r}");
    assert!(r.to_string().contains("email"), "{r}");
    let other = server.api(&other_key);
    assert_eq!(
        other.post_as(&format!("/lists/{list}/subscribers"), "text/csv", file).0,
        404
    );
    assert_eq!(other.get(&format!("/lists/{list}/subscribers.csv")).0, 404);
}
