//! Outgoing event webhooks against a real HTTP receiver
//! (`peers/http_receiver.py`): signed, retried with the same event id,
//! durable across a crash, scoped to their user, and kept off private
//! addresses unless the operator allows them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use posta_e2e::peers::HttpPeer;
use posta_e2e::{Api, Server, Value, json};
use sha2::Sha256;

const FAST_RETRIES: &str = "[webhooks]\nallow_private = true\nretry_base_ms = 200\nretry_max_ms = 1000\n";

/// Requests the receiver got on `path`, waiting until there are `n`.
fn requests_on(peer: &HttpPeer, path: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let got: Vec<Value> = peer.requests().into_iter().filter(|r| r["path"] == path).collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "expected {n} requests on {path}, got {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks `X-Posta-Signature` as a receiver would: `t=UNIX,v1=HEX` with
/// HEX the HMAC-SHA256 of "t.body" under the secret.
fn assert_signed(request: &Value, secret: &str) {
    let header = request["headers"]["x-posta-signature"]
        .as_str()
        .expect("signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature {header}"));
    let t: i64 = t.parse().expect("unix time");
    assert!((chrono::Utc::now().timestamp() - t).abs() < 300, "stale timestamp {t}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", request["body"].as_str().unwrap()).as_bytes());
    mac.verify_slice(&hex::decode(v1).expect("hex"))
        .expect("the signature verifies");
}

fn create_hook(api: &Api, url: &str, events: &[&str], secret: Option<&str>) -> Value {
    let mut body = json!({ "url": url, "events": events });
    if let Some(s) = secret {
        body["secret"] = json!(s);
    }
    let (status, hook) = api.post("/webhooks", body);
    assert_eq!(status, 201, "{hook}");
    hook
}

fn deliveries(api: &Api, hook: u64) -> Vec<Value> {
    api.ok_get(&format!("/webhooks/{hook}/deliveries"))["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The webhook's delivery log once `done` holds for it (30 s at most).
fn deliveries_until(api: &Api, hook: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let log = deliveries(api, hook);
        if done(&log) {
            return log;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{log:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn events_are_signed_retried_with_one_id_and_seen_only_by_their_user() {
    let (server, alice_key, bob_key) = Server::with_config(FAST_RETRIES);
    let peer = HttpPeer::start(&server.data_dir);
    let (alice, bob) = (server.api(&alice_key), server.api(&bob_key));
    let secret = "alice-webhook-secret-0123456789";
    let flaky = create_hook(
        &alice,
        &peer.url("/events-flaky"),
        &["campaign.started", "campaign.sent"],
        Some(secret),
    );
    assert_eq!(flaky["secret"], secret);
    let people = create_hook(
        &alice,
        &peer.url("/ok"),
        &["message.bounced", "subscriber.unsubscribed"],
        None,
    );
    let people_secret = people["secret"].as_str().unwrap().to_string();
    assert!(people_secret.len() >= 32, "a generated secret: {people}");
    let bobs = create_hook(&bob, &peer.url("/ok"), &["campaign.sent"], None);
    let (flaky_id, people_id, bob_id) = (
        flaky["id"].as_u64().unwrap(),
        people["id"].as_u64().unwrap(),
        bobs["id"].as_u64().unwrap(),
    );

    // Another user's webhooks are invisible: not listed, 404 by id.
    let listed = bob.ok_get("/webhooks")["items"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], bob_id);
    assert!(listed[0].get("secret").is_none(), "secrets are shown once");
    assert_eq!(bob.get(&format!("/webhooks/{flaky_id}")).0, 404);
    assert_eq!(bob.get(&format!("/webhooks/{flaky_id}/deliveries")).0, 404);
    assert_eq!(bob.delete(&format!("/webhooks/{flaky_id}")).0, 404);

    let list = alice.list_of("w", 3);
    let campaign = alice.send_campaign(list, json!({}));
    alice.wait_status(campaign, "sent");
    let bob_list = bob.list_of("b", 2);
    let bob_campaign = bob.send_campaign(bob_list, json!({}));
    bob.wait_status(bob_campaign, "sent");

    // started and sent, each answered 500, 500, 200: three attempts with
    // the same id, the same body and a valid signature each time.
    let got = requests_on(&peer, "/events-flaky", 6);
    let mut by_event: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &got {
        assert_signed(r, secret);
        by_event
            .entry(r["headers"]["x-posta-event-id"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    assert_eq!(by_event.len(), 2, "{got:?}");
    let mut types = Vec::new();
    for (id, attempts) in &by_event {
        assert_eq!(attempts.len(), 3, "{id}: {attempts:?}");
        assert!(attempts.iter().all(|a| a["body"] == attempts[0]["body"]));
        let body: Value = serde_json::from_str(attempts[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(&body["id"], id);
        assert_eq!(body["data"]["campaign"]["id"], campaign);
        assert_eq!(attempts[0]["headers"]["x-posta-event"], body["type"]);
        types.push(body["type"].as_str().unwrap().to_string());
    }
    types.sort();
    assert_eq!(types, ["campaign.sent", "campaign.started"]);
    // The receiver has answered the last attempts; storing them may
    // still be under way.
    let log = deliveries_until(&alice, flaky_id, |log| {
        log.len() == 2 && log.iter().all(|d| d["state"] != "pending")
    });
    for d in &log {
        assert_eq!(d["state"], "delivered", "{d}");
        let statuses: Vec<&Value> = d["attempts"].as_array().unwrap().iter().map(|a| &a["status"]).collect();
        assert_eq!(statuses, [&json!(500), &json!(500), &json!(200)], "{d}");
    }

    // A bounce and an unsubscribe reach the webhook that asked for them.
    let messages = alice.all_messages(campaign, "");
    let (status, body) = alice.post(
        "/bounces",
        json!({"message_id": messages[0]["message_id"], "type": "hard", "reason": "550 5.1.1 no such user"}),
    );
    assert_eq!(status, 200, "{body}");
    let subscriber = messages[1]["subscriber_id"].as_u64().unwrap();
    let (status, body) = alice.patch(
        &format!("/lists/{list}/subscribers/{subscriber}"),
        json!({"status": "unsubscribed"}),
    );
    assert_eq!(status, 200, "{body}");
    let ok = requests_on(&peer, "/ok", 3);
    let alices: Vec<Value> = ok
        .iter()
        .filter(|r| r["headers"]["x-posta-event"] != "campaign.sent")
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect();
    let bounced = alices
        .iter()
        .find(|b| b["type"] == "message.bounced")
        .expect("bounce event");
    assert_eq!(bounced["data"]["campaign_id"], campaign);
    assert_eq!(bounced["data"]["type"], "hard");
    assert_eq!(bounced["data"]["email"], messages[0]["email"]);
    let unsubscribed = alices
        .iter()
        .find(|b| b["type"] == "subscriber.unsubscribed")
        .expect("unsubscribe event");
    assert_eq!(unsubscribed["data"]["subscriber_id"], subscriber);
    assert_eq!(unsubscribed["data"]["source"], "api");
    // Bob's webhook saw his campaign only; Alice's never saw Bob's.
    let bob_got: Vec<&Value> = ok
        .iter()
        .filter(|r| r["headers"]["x-posta-event"] == "campaign.sent")
        .collect();
    assert_eq!(bob_got.len(), 1, "{ok:?}");
    let body: Value = serde_json::from_str(bob_got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["campaign"]["id"], bob_campaign);
    assert!(
        !got.iter()
            .any(|r| r["body"].as_str().unwrap().contains(&format!("\"id\":{bob_campaign},")))
    );
    assert_eq!(deliveries(&alice, people_id).len(), 2);

    // Deleting a webhook stops its events.
    assert_eq!(alice.delete(&format!("/webhooks/{flaky_id}")).0, 204);
    assert_eq!(alice.get(&format!("/webhooks/{flaky_id}")).0, 404);
    let again = alice.send_campaign(list, json!({}));
    alice.wait_status(again, "sent");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        peer.requests().iter().filter(|r| r["path"] == "/events-flaky").count(),
        6
    );
}

#[test]
fn an_event_committed_before_a_crash_is_delivered_after_the_restart() {
    let (mut server, key, _) = Server::with_config(FAST_RETRIES);
    let peer = HttpPeer::start(&server.data_dir);
    let api = server.api(&key);
    let secret = "crash-test-secret-0123456789";
    let hook = create_hook(&api, &peer.url("/events-hang"), &["campaign.started"], Some(secret));
    let list = api.list_of("c", 2);
    let campaign = api.send_campaign(list, json!({}));
    // The receiver holds the first attempt without answering; the sender
    // dies with it under way.
    let first = requests_on(&peer, "/events-hang", 1);
    server.kill();
    server.start_again();
    let api = server.api(&key);
    let both = requests_on(&peer, "/events-hang", 2);
    assert_eq!(
        both[1]["headers"]["x-posta-event-id"],
        first[0]["headers"]["x-posta-event-id"]
    );
    assert_eq!(both[1]["body"], first[0]["body"]);
    assert_signed(&both[1], secret);
    let body: Value = serde_json::from_str(both[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["campaign"]["id"], campaign);
    let log = deliveries_until(&api, hook["id"].as_u64().unwrap(), |log| {
        log.len() == 1 && log[0]["state"] == "delivered"
    });
    assert_eq!(
        log[0]["attempts"].as_array().unwrap().len(),
        1,
        "the cut-off attempt is not logged"
    );
}

#[test]
fn private_targets_are_refused_unless_the_operator_allows_them() {
    let (server, key, _) = Server::with_two_users();
    let peer = HttpPeer::start(&server.data_dir);
    let api = server.api(&key);
    // A literal private address is refused at once, naming the field.
    let (status, body) = api.post(
        "/webhooks",
        json!({"url": peer.url("/ok"), "events": ["campaign.sent"]}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "url", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("private"), "{body}");
    for bad in [
        json!({"url": "ftp://example.com/", "events": ["campaign.sent"]}),
        json!({"url": "https://example.com/", "events": ["campaign.exploded"]}),
        json!({"url": "https://example.com/", "events": []}),
        json!({"url": "https://u:p@example.com/", "events": ["campaign.sent"]}),
        json!({"url": "https://example.com/", "events": ["campaign.sent"], "secret": "short"}),
        json!({"events": ["campaign.sent"]}),
    ] {
        let (status, body) = api.post("/webhooks", bad.clone());
        assert_eq!(status, 422, "{bad} → {body}");
    }
    // A name that resolves to one is accepted (DNS may change) but never
    // reached: the attempt records why.
    let url = format!("http://localhost:{}/ok", peer.port);
    let hook = create_hook(&api, &url, &["campaign.sent"], None);
    let list = api.list_of("p", 1);
    let campaign = api.send_campaign(list, json!({}));
    api.wait_status(campaign, "sent");
    let log = deliveries_until(&api, hook["id"].as_u64().unwrap(), |log| {
        log.first()
            .is_some_and(|d| !d["attempts"].as_array().unwrap().is_empty())
    });
    let error = log[0]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("private"), "{error}");
    assert_eq!(log[0]["state"], "pending", "retried later: {}", log[0]);
    assert!(peer.requests().is_empty(), "{:?}", peer.requests());
}
