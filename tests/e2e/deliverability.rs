//! Mail that must not go out: people who left stay left, and the user's
//! suppression list holds across all their lists and campaigns.

use std::collections::HashMap;

use posta_e2e::{Api, Server, Value, json};

/// Message status (and skip reason) per recipient address.
fn outcome(api: &Api, campaign: u64) -> HashMap<String, (String, Option<String>)> {
    api.all_messages(campaign, "")
        .into_iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_string(),
                (
                    m["status"].as_str().unwrap().to_string(),
                    m["skip_reason"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

/// A list of `LOCAL@example.org` for each name and a first campaign sent
/// to it: (list, campaign).
fn sent_to(api: &Api, names: &[&str]) -> (u64, u64) {
    let list = api.ok_post("/lists", json!({"name": "news"}))["id"].as_u64().unwrap();
    let people: Vec<Value> = names
        .iter()
        .map(|p| json!({"email": format!("{p}@example.org")}))
        .collect();
    api.ok_post(&format!("/lists/{list}/subscribers"), Value::Array(people));
    let first = api.send_campaign(list, json!({}));
    api.wait_status(first, "sent");
    (list, first)
}

fn assert_skipped(o: &HashMap<String, (String, Option<String>)>, email: &str, reason: &str) {
    assert_eq!(o[email], ("skipped".to_string(), Some(reason.to_string())), "{email}");
}

#[test]
fn unsubscribed_and_suppressed_addresses_are_skipped_until_released() {
    let (server, key, other_key) = Server::with_two_users();
    let api = server.api(&key);
    let other = server.api(&other_key);
    let people = ["ann@example.org", "bob@example.org", "cy@example.org", "di@example.org"];
    let list = api.ok_post("/lists", json!({"name": "news"}))["id"].as_u64().unwrap();
    let import = Value::Array(people.iter().map(|e| json!({"email": e})).collect());
    api.ok_post(&format!("/lists/{list}/subscribers"), import.clone());

    // Ann unsubscribes through the link of the first campaign.
    let first = api.send_campaign(list, json!({}));
    api.wait_status(first, "sent");
    let line = server
        .outbox()
        .into_iter()
        .find(|l| l["to"] == "ann@example.org")
        .expect("ann's message");
    let link = posta_e2e::unsubscribe_link(&line);
    let status = reqwest::blocking::Client::new().post(&link).send().unwrap().status();
    assert!(status.is_success(), "{status}");
    // A re-import of the whole list does not bring her back.
    let report = api.ok_post(&format!("/lists/{list}/subscribers"), import);
    assert_eq!(report["kept_unsubscribed"], 1, "{report}");

    // Bob bounced elsewhere, Cy asked by mail: suppressed for every list.
    let report = api.ok_post(
        "/suppressions",
        json!([
            {"email": "BOB@example.org", "reason": "bounced", "detail": "550 5.1.1 no such user"},
            {"email": "cy@example.org"},
        ]),
    );
    assert_eq!(report["added"], 2, "{report}");
    let second = api.send_campaign(list, json!({}));
    let done = api.wait_status(second, "sent");
    assert_eq!(
        (done["stats"]["sent"].as_u64(), done["stats"]["skipped"].as_u64()),
        (Some(1), Some(3))
    );
    let o = outcome(&api, second);
    assert_skipped(&o, "ann@example.org", "unsubscribed");
    assert_skipped(&o, "bob@example.org", "suppressed: bounced");
    assert_skipped(&o, "cy@example.org", "suppressed: manual");
    assert_eq!(o["di@example.org"].0, "sent");

    // Listing, filtering, and one address by itself.
    let page = api.ok_get("/suppressions");
    let emails: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["bob@example.org", "cy@example.org"]);
    let bounced = api.ok_get("/suppressions?reason=bounced");
    assert_eq!(bounced["items"].as_array().unwrap().len(), 1);
    let paged = api.ok_get("/suppressions?limit=1");
    assert_eq!(paged["next_after"], "bob@example.org");
    let next = api.ok_get("/suppressions?limit=1&after=bob@example.org");
    assert_eq!(next["items"][0]["email"], "cy@example.org");
    assert_eq!(
        api.ok_get("/suppressions/Bob@Example.org")["detail"],
        "550 5.1.1 no such user"
    );

    // Another user sees none of it and cannot remove it.
    assert_eq!(other.ok_get("/suppressions")["items"], json!([]));
    assert_eq!(other.get("/suppressions/bob@example.org").0, 404);
    assert_eq!(other.delete("/suppressions/bob@example.org").0, 404);

    // Bad input names the field and changes nothing.
    let (status, body) = api.post(
        "/suppressions",
        json!([{"email": "di@example.org"}, {"email": "not-an-address"}]),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("suppressions[1].email"), "{body}");
    assert_eq!(
        api.get("/suppressions/di@example.org").0,
        404,
        "nothing of a refused batch is kept"
    );
    assert_eq!(api.get("/suppressions?reason=spam").0, 422);
    assert_eq!(
        api.post("/suppressions", json!({"email": "x@example.org", "reason": "spam"}))
            .0,
        422
    );

    // Ann comes back: only an explicit change of her status does it, and
    // it is recorded.
    let ann = api.ok_get(&format!("/lists/{list}/subscribers"))["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["email"] == "ann@example.org")
        .cloned()
        .unwrap();
    assert_eq!(ann["status_changed"]["by"], "unsubscribe_link", "{ann}");
    let sid = ann["id"].as_u64().unwrap();
    let back = api.patch(
        &format!("/lists/{list}/subscribers/{sid}"),
        json!({"status": "subscribed"}),
    );
    assert_eq!(back.0, 200, "{}", back.1);
    assert_eq!(
        (
            &back.1["status"],
            &back.1["status_changed"]["from"],
            &back.1["status_changed"]["by"]
        ),
        (&json!("subscribed"), &json!("unsubscribed"), &json!("api"))
    );
    assert_eq!(other.get(&format!("/lists/{list}/subscribers/{sid}")).0, 404);
    assert_eq!(
        other
            .patch(
                &format!("/lists/{list}/subscribers/{sid}"),
                json!({"status": "subscribed"})
            )
            .0,
        404
    );
    assert_eq!(
        api.patch(
            &format!("/lists/{list}/subscribers/{sid}"),
            json!({"timezone": "Mars/Olympus"})
        )
        .0,
        422
    );

    // Released: the next campaign mails Bob again.
    assert_eq!(api.delete("/suppressions/bob@example.org").0, 204);
    assert_eq!(api.delete("/suppressions/bob@example.org").0, 404);
    let third = api.send_campaign(list, json!({}));
    api.wait_status(third, "sent");
    let o = outcome(&api, third);
    assert_eq!(
        (o["bob@example.org"].0.as_str(), o["ann@example.org"].0.as_str()),
        ("sent", "sent")
    );
}

#[test]
fn bounces_and_complaints_suppress_by_policy() {
    let (server, key, other_key) = Server::with_two_users();
    let api = server.api(&key);
    let other = server.api(&other_key);
    let (list, first) = sent_to(&api, &["hard", "soft2", "soft3", "spam", "fine"]);
    let message_id = |who: &str| -> String {
        api.all_messages(first, "")
            .into_iter()
            .find(|m| m["email"] == format!("{who}@example.org"))
            .map(|m| m["message_id"].as_str().unwrap().to_string())
            .unwrap()
    };

    // A hard bounce by Message-ID (as an MTA's DSN names it), twice.
    let hard =
        json!({"message_id": format!("<{}>", message_id("hard")), "type": "hard", "reason": "550 5.1.1 no such user"});
    let report = api.ok_post("/bounces", hard.clone());
    assert_eq!(
        (report["duplicate"].as_bool(), report["suppressed"].as_str()),
        (Some(false), Some("bounced")),
        "{report}"
    );
    assert_eq!(report["bounce"]["email"], "hard@example.org");
    let again = api.ok_post("/bounces", hard);
    assert_eq!(again["duplicate"], true, "the same bounce twice counts once: {again}");

    // Soft bounces: two do not suppress, three within the window do.
    for n in 1..=2 {
        let r = api.ok_post(
            "/bounces",
            json!({"email": "soft2@example.org", "type": "soft", "reason": "452 mailbox full"}),
        );
        assert_eq!(
            (r["soft_in_window"].as_u64(), r.get("suppressed")),
            (Some(n), None),
            "{r}"
        );
    }
    for n in 1..=3 {
        let r = api.ok_post("/bounces", json!({"email": "SOFT3@example.org", "type": "soft"}));
        assert_eq!(r["soft_in_window"].as_u64(), Some(n), "{r}");
    }
    // A complaint (feedback loop) suppresses at once.
    let r = api.ok_post(
        "/bounces",
        json!({"message_id": message_id("spam"), "type": "complaint"}),
    );
    assert_eq!(r["suppressed"], "complained", "{r}");

    let c = api.ok_get(&format!("/campaigns/{first}"));
    assert_eq!(
        (c["stats"]["bounced"].as_u64(), c["stats"]["complained"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
    let hard_message = api
        .all_messages(first, "")
        .into_iter()
        .find(|m| m["email"] == "hard@example.org")
        .unwrap();
    assert_eq!(hard_message["bounces"][0]["type"], "hard", "{hard_message}");
    assert_eq!(hard_message["bounces"].as_array().unwrap().len(), 1);

    let second = api.send_campaign(list, json!({}));
    api.wait_status(second, "sent");
    let o = outcome(&api, second);
    assert_skipped(&o, "hard@example.org", "suppressed: bounced");
    assert_skipped(&o, "soft3@example.org", "suppressed: bounced");
    assert_skipped(&o, "spam@example.org", "suppressed: complained");
    assert_eq!(o["soft2@example.org"].0, "sent");
    assert_eq!(o["fine@example.org"].0, "sent");

    // Another user's message is a 404 and leaves no trace.
    let (status, body) = other.post("/bounces", json!({"message_id": message_id("fine"), "type": "hard"}));
    assert_eq!(status, 404, "{body}");
    assert_eq!(other.ok_get("/suppressions")["items"], json!([]));
    assert_eq!(api.get("/suppressions/fine@example.org").0, 404);
    // Bad input names the field.
    for (body, field) in [
        (json!({"type": "hard"}), "email"),
        (json!({"message_id": "<abc@example.org>", "type": "hard"}), "message_id"),
        (json!({"email": "nope", "type": "hard"}), "email"),
    ] {
        let (status, reply) = api.post("/bounces", body);
        assert_eq!(status, 422, "{reply}");
        assert!(reply.to_string().contains(field), "{reply}");
    }
    assert_eq!(
        api.post("/bounces", json!({"email": "a@example.org", "type": "bogus"}))
            .0,
        422
    );
    let unknown = format!("posta.{first}.999999@example.org");
    assert_eq!(
        api.post("/bounces", json!({"message_id": unknown, "type": "hard"})).0,
        404
    );
}

/// A hand-written report in the shape an MTA sends, addressed to `rcpt`
/// about the Posta message `message_id`.
fn report(name: &str, rcpt: &str, message_id: &str) -> String {
    let path = format!("{}/../host/tests/fixtures/dsn/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .replace("RCPT@example.com", rcpt)
        .replace("MSGID", message_id)
}

#[test]
fn delivery_status_notifications_and_complaints_are_read_from_raw_reports() {
    let (server, key, other_key) = Server::with_two_users();
    let api = server.api(&key);
    let other = server.api(&other_key);
    let (list, first) = sent_to(&api, &["postfix", "microsoft", "exim", "gmail", "arf"]);
    let ids: HashMap<String, String> = api
        .all_messages(first, "")
        .into_iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_string(),
                m["message_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let raw = |name: &str, who: &str| {
        let rcpt = format!("{who}@example.org");
        report(name, &rcpt.to_uppercase(), &ids[&rcpt])
    };

    for (name, who, kind, suppressed) in [
        ("postfix-hard.eml", "postfix", "hard", Some("bounced")),
        ("microsoft-hard.eml", "microsoft", "hard", Some("bounced")),
        ("exim-hard.eml", "exim", "hard", Some("bounced")),
        ("gmail-soft.eml", "gmail", "soft", None),
        ("arf-complaint.eml", "arf", "complaint", Some("complained")),
    ] {
        let (status, reply) = api.post_as("/bounces/dsn", "message/rfc822", &raw(name, who));
        assert_eq!(status, 200, "{name}: {reply}");
        let b = &reply["bounces"][0];
        assert_eq!(b["bounce"]["type"], kind, "{name}: {reply}");
        assert_eq!(b["bounce"]["email"], format!("{who}@example.org"), "{name}");
        assert_eq!(
            b["bounce"]["message_id"],
            ids[&format!("{who}@example.org")],
            "{name}: matched to its message"
        );
        assert_eq!(b["suppressed"].as_str(), suppressed, "{name}: {reply}");
    }
    // The same report again counts nothing.
    let (_, again) = api.post_as("/bounces/dsn", "message/rfc822", &raw("postfix-hard.eml", "postfix"));
    assert_eq!(again["bounces"][0]["duplicate"], true, "{again}");
    let c = api.ok_get(&format!("/campaigns/{first}"));
    assert_eq!(
        (c["stats"]["bounced"].as_u64(), c["stats"]["complained"].as_u64()),
        (Some(4), Some(1)),
        "{c}"
    );

    // A report that quotes no Posta message is still read once: posted
    // three times, its soft bounce counts once (three would suppress).
    let foreign = report("gmail-soft.eml", "stranger@example.org", "not-ours@elsewhere.example")
        .replace("<5f3e.0a1@mx.google.com>", "<another.report@mx.google.com>");
    for n in 0..3 {
        let (status, reply) = api.post_as("/bounces/dsn", "message/rfc822", &foreign);
        assert_eq!(status, 200, "{reply}");
        let b = &reply["bounces"][0];
        assert_eq!(b["duplicate"], n > 0, "posting {n}: {reply}");
        assert_eq!(b["suppressed"], Value::Null, "{reply}");
    }
    assert_eq!(api.get("/suppressions/stranger@example.org").0, 404);

    let second = api.send_campaign(list, json!({}));
    api.wait_status(second, "sent");
    let o = outcome(&api, second);
    for who in ["postfix", "microsoft", "exim", "arf"] {
        assert_eq!(o[&format!("{who}@example.org")].0, "skipped", "{who}");
    }
    assert_eq!(o["gmail@example.org"].0, "sent", "one soft bounce does not suppress");

    // Bad input: not a report (422 says what is missing), another user's
    // message (404).
    let (status, reply) = api.post_as("/bounces/dsn", "message/rfc822", "Subject: hi\r\n\r\nplain text\r\n");
    assert_eq!(status, 422, "{reply}");
    assert!(reply.to_string().contains("delivery-status"), "{reply}");
    let (status, reply) = other.post_as("/bounces/dsn", "message/rfc822", &raw("postfix-hard.eml", "microsoft"));
    assert_eq!(status, 404, "{reply}");
}
