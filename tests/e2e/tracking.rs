//! Open and click tracking through the real binary: what the sent mail
//! carries, where its links lead (the target stored with the campaign,
//! never one read from the URL), tampered and unknown links, people
//! counted once, HEAD and scanners on arrival not counted, and the counts
//! as the API shows them.

use std::time::{Duration, Instant};

use posta_e2e::{Server, json};
use serde_json::Value;

/// The `href`s and `src`s in an outbox line's HTML part.
fn urls(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const HTML: &str = r#"<html><body><p>Hi {{ subscriber.name }}</p>
<a href="https://one.example/">one</a>
<a href="https://two.example/?a=1&amp;b=2">two</a>
<a href="mailto:help@example.org">mail us</a>
<a href="{{ unsubscribe_url }}">unsubscribe</a></body></html>"#;

#[test]
fn tracked_links_lead_to_stored_targets_and_count_people_once() {
    let (server, alice, bob) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.list_of("t", 3);
    let id = api.send_campaign(
        list,
        json!({"html": HTML, "text": "Read https://one.example/ now.\n{{ unsubscribe_url }}",
               "track_opens": true, "track_clicks": true, "transport": "log"}),
    );
    let c = api.wait_status(id, "sent");
    assert_eq!(
        (c["track_opens"].as_bool(), c["track_clicks"].as_bool()),
        (Some(true), Some(true))
    );
    let mut lines = server.outbox();
    lines.sort_by_key(|l| l["to"].as_str().unwrap().to_string());
    assert_eq!(lines.len(), 3);

    // What the mail carries: two tracked links, mailto and unsubscribe as
    // written, the pixel last in the body; the text part's link tracked.
    let mut clicks = Vec::new();
    let mut pixels = Vec::new();
    for line in &lines {
        let html = line["html"].as_str().unwrap();
        let hrefs = urls(html, "href");
        assert_eq!(hrefs.len(), 4, "{html}");
        assert!(hrefs[0].starts_with(&format!("{}/t/", server.base)), "{html}");
        assert!(hrefs[1].starts_with(&format!("{}/t/", server.base)), "{html}");
        assert_eq!(hrefs[2], "mailto:help@example.org");
        assert!(hrefs[3].contains("/unsubscribe/"), "{html}");
        assert!(!html.contains("one.example") && !html.contains("two.example"), "{html}");
        let src = urls(html, "src");
        assert!(src[0].starts_with(&format!("{}/o/", server.base)), "{html}");
        assert!(html.find(&src[0]).unwrap() < html.find("</body>").unwrap());
        let text = line["text"].as_str().unwrap();
        assert!(text.contains(&hrefs[0]), "the text part's link is link 0 too: {text}");
        assert!(!text.contains("one.example"), "{text}");
        clicks.push(hrefs);
        pixels.push(src[0].clone());
    }
    assert_ne!(clicks[0][0], clicks[1][0], "each message its own mark");

    // People take longer than a second after delivery; scanners do not.
    std::thread::sleep(Duration::from_millis(1_100));
    let http = client();
    let go = |url: &str| {
        let r = http.get(url).send().unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        (status, location)
    };
    // Reader 0: the pixel twice, link 0 twice, link 1 once.
    for _ in 0..2 {
        let r = http.get(&pixels[0]).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert_eq!(r.bytes().unwrap().len(), 43);
        assert_eq!(go(&clicks[0][0]), (302, Some("https://one.example/".into())));
    }
    assert_eq!(go(&clicks[0][1]), (302, Some("https://two.example/?a=1&b=2".into())));
    // Reader 1: link 1 only (images off): opened by clicking.
    assert_eq!(go(&clicks[1][1]), (302, Some("https://two.example/?a=1&b=2".into())));
    // Reader 2: a link checker's HEAD, answered, not counted.
    let head = http.head(&clicks[2][0]).send().unwrap();
    assert_eq!(head.status(), 302);
    assert_eq!(http.head(&pixels[2]).send().unwrap().status(), 200);

    // Tampered or made-up links lead nowhere and count nothing.
    let good = &clicks[0][0];
    let (base, token) = good.rsplit_once('/').unwrap();
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{base}/{}", String::from_utf8(bytes).unwrap());
    for bad in [
        tampered,
        format!("{}/t/AAAAAAAAAAAAAAAAAAAAAAAAAAAA", server.base),
        format!("{}/t/", server.base),
        format!("{}/t/{}", server.base, pixels[0].rsplit_once('/').unwrap().1),
        format!("{}/o/{token}", server.base),
        format!("{}/t/https%3A%2F%2Fevil.example%2F", server.base),
    ] {
        let r = http.get(&bad).send().unwrap();
        assert_eq!(r.status(), 404, "{bad}");
        assert!(r.headers().get("location").is_none());
        let body: Value = r.json().unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    // Recorded within a batch (a quarter second).
    let started = Instant::now();
    api.wait_campaign(id, Duration::from_secs(10), |c| c["stats"]["clicks"] == 4);
    println!("recorded after {:?}", started.elapsed());
    // Nothing more comes in a later batch.
    std::thread::sleep(Duration::from_millis(600));
    let c = api.ok_get(&format!("/campaigns/{id}"));
    let s = &c["stats"];
    assert_eq!(
        (&s["opened"], &s["opens"], &s["clicked"], &s["clicks"]),
        (&json!(2), &json!(2), &json!(2), &json!(4)),
        "{c}"
    );
    let links = api.ok_get(&format!("/campaigns/{id}/links"));
    assert_eq!(
        links["items"],
        json!([
            {"url": "https://one.example/", "clicks": 2, "unique_clicks": 1},
            {"url": "https://two.example/?a=1&b=2", "clicks": 2, "unique_clicks": 2},
        ])
    );
    let bob = server.api(&bob);
    assert_eq!(bob.get(&format!("/campaigns/{id}/links")).0, 404);
    let subs = api.ok_get(&format!("/lists/{list}/subscribers"));
    let engaged: Vec<(bool, bool)> = subs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["last_opened_at"].is_string(), s["last_clicked_at"].is_string()))
        .collect();
    assert_eq!(engaged, [(true, true), (true, true), (false, false)]);

    // Segments on what people did: counted, and a follow-up sent to those
    // who did not open (reader 2 only).
    let count = |op: &str| {
        let seg = api.ok_post(
            "/segments",
            json!({"name": op, "list_id": list, "rules": [{"field": "engagement", "op": op, "value": id}]}),
        )["id"]
            .as_u64()
            .unwrap();
        (
            seg,
            api.ok_get(&format!("/segments/{seg}/count"))["count"].as_u64().unwrap(),
        )
    };
    assert_eq!(count("opened").1, 2);
    assert_eq!(count("clicked").1, 2);
    assert_eq!(count("not_clicked").1, 1);
    let (unopened, n) = count("not_opened");
    assert_eq!(n, 1);
    let before = server.outbox().len();
    let follow_up = api.send_campaign(list, json!({"segment_id": unopened, "transport": "log"}));
    assert_eq!(api.wait_status(follow_up, "sent")["stats"]["sent"], 1);
    let sent: Vec<Value> = server.outbox().into_iter().skip(before).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], lines[2]["to"], "the reader who did not open");
    // Another user's campaign is as unknown as none.
    let bobs = bob.ok_post(
        "/segments",
        json!({"name": "x", "list_id": bob.ok_post("/lists", json!({"name": "b"}))["id"],
               "rules": [{"field": "engagement", "op": "opened", "value": id}]}),
    )["id"]
        .as_u64()
        .unwrap();
    let (s, v) = bob.get(&format!("/segments/{bobs}/count"));
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("rules[0]")), "{v}");

    let metrics = reqwest::blocking::get(format!("{}/metrics", server.base))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"posta_tracking_hits_total{kind="click",outcome="unrecorded"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_click_on_arrival_is_a_scanner_and_untracked_campaigns_have_no_links() {
    let (server, alice, _) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.list_of("s", 1);
    let id = api.send_campaign(list, json!({"html": HTML, "track_clicks": true, "transport": "log"}));
    // Fetched as soon as the message is out, as security gateways do.
    let started = Instant::now();
    let link = loop {
        if let Some(line) = server.outbox().first() {
            break urls(line["html"].as_str().unwrap(), "href")[0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(client().get(&link).send().unwrap().status(), 302);
    api.wait_status(id, "sent");
    std::thread::sleep(Duration::from_millis(800));
    let c = api.ok_get(&format!("/campaigns/{id}"));
    assert_eq!(
        (&c["stats"]["clicks"], &c["stats"]["opened"]),
        (&json!(0), &json!(0)),
        "{c}"
    );
    assert!(
        !server.outbox()[0]["html"].as_str().unwrap().contains("/o/"),
        "no pixel without track_opens"
    );

    // Without tracking, links stay as written and none are listed.
    let plain = api.send_campaign(list, json!({"html": HTML, "transport": "log"}));
    api.wait_status(plain, "sent");
    let line = server.outbox().into_iter().last().unwrap();
    assert!(line["html"].as_str().unwrap().contains("href=\"https://one.example/\""));
    assert_eq!(api.ok_get(&format!("/campaigns/{plain}/links"))["items"], json!([]));
}
