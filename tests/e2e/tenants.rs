//! Many users on one host: one user's content cannot starve, crash or
//! bloat the host for another, and public endpoints stay cheap.

use std::time::{Duration, Instant};

use posta_e2e::{Server, Value, json};

#[test]
fn an_oversized_template_fails_its_messages_without_bloating_the_host() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("big", 200);
    // 60 bytes of template, 5 MB per message.
    let id = api.send_campaign(
        list,
        json!({"text": "{% for i in range(500) %}{{ \"x\" * 10000 }}{% endfor %}"}),
    );
    let c = api.wait_campaign(id, Duration::from_secs(120), |c| c["status"] == "sent");
    assert_eq!(c["stats"]["failed"], 200, "{c}");
    assert_eq!(c["stats"]["sent"], 0, "{c}");
    for m in api.all_messages(id, "") {
        let err = m["last_error"].as_str().unwrap();
        assert!(err.contains("limits.max_message_bytes"), "{err}");
        assert_eq!(m["attempts"], 1, "a size error is permanent: {m}");
    }
    assert!(server.outbox().is_empty(), "nothing delivered");
    let peak_mib = server.peak_rss_kib() / 1024;
    assert!(peak_mib < 400, "peak RSS {peak_mib} MiB");
}

#[test]
fn one_users_looping_template_does_not_hold_up_another_user() {
    let (server, alice, bob) = Server::with_two_users();
    let a = server.api(&alice);
    let b = server.api(&bob);
    let a_list = a.list_of("loop", 2_000);
    let looping = a.send_campaign(
        a_list,
        json!({"text": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"}),
    );
    std::thread::sleep(Duration::from_secs(1));

    // Bob's requests while Alice's campaign runs: none may fail with 5xx.
    let start = Instant::now();
    let b_list = b.ok_post("/lists", json!({"name": "fine"}))["id"].as_u64().unwrap();
    let people: Vec<Value> = (0..20).map(|i| json!({"email": format!("f{i}@example.org")})).collect();
    b.ok_post(&format!("/lists/{b_list}/subscribers"), Value::Array(people));
    let (status, created) = b.post(
        "/campaigns",
        json!({"name": "fine", "subject": "Hi", "from_email": "news@example.org",
               "list_id": b_list, "text": "Hello {{ subscriber.email }}"}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();
    let (status, body) = b.post(&format!("/campaigns/{id}/send"), json!({}));
    assert!(status < 300, "{status} {body}");
    loop {
        let (status, c) = b.get(&format!("/campaigns/{id}"));
        assert!(status < 500, "{status} {c}");
        if c["status"] == "sent" {
            assert_eq!(c["stats"]["sent"], 20, "{c}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bob's campaign is stuck: {c}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Alice's messages fail fast with a clear, permanent error.
    let c = a.wait_campaign(looping, Duration::from_secs(120), |c| c["status"] == "sent");
    assert_eq!(c["stats"]["failed"], 2_000, "{c}");
    let m = &a.all_messages(looping, "")[0];
    let err = m["last_error"].as_str().unwrap();
    assert!(err.contains("limits.template_fuel"), "{err}");
    assert_eq!(m["attempts"], 1, "{m}");
}

#[test]
fn a_template_typo_is_refused_with_a_suggestion() {
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let list = api.list_of("t", 1);
    let (status, body) = api.post(
        "/campaigns",
        json!({"name": "typo", "subject": "Hi {{ subscriber.nmae }}", "from_email": "news@example.org",
               "list_id": list, "text": "x"}),
    );
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("nmae") && message.contains("did you mean `name`?"),
        "{message}"
    );
    assert_eq!(body["error"]["field"], "subject", "{body}");
    // Attributes are free-form.
    let (status, body) = api.post(
        "/campaigns",
        json!({"name": "attrs", "subject": "Hi {{ subscriber.attributes.anything }}",
               "from_email": "news@example.org", "list_id": list, "text": "x"}),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn unsubscribe_floods_do_not_slow_a_send_much() {
    flood_does_not_slow_a_send_much("unsubscribe POSTs", json!({}), |line| {
        let link = posta_e2e::unsubscribe_link(line);
        Box::new(move |http| http.post(&link).send())
    });
}

/// Opens and clicks are recorded in batches, at most
/// `tracking_rate_per_ip` a second per client: a flood of valid tracked
/// links from one client costs redirects, not writes.
#[test]
fn tracking_floods_do_not_slow_a_send_much() {
    let html = "<a href=\"https://example.org/read\">read</a>";
    flood_does_not_slow_a_send_much(
        "tracked clicks and pixel loads",
        json!({"html": html, "track_opens": true, "track_clicks": true}),
        |line| {
            let html = line["html"].as_str().unwrap();
            let url = |attr: &str| {
                let at = html.find(attr).unwrap() + attr.len();
                html[at..at + html[at..].find('"').unwrap()].to_string()
            };
            let (click, pixel) = (url("href=\""), url("src=\""));
            let n = std::sync::atomic::AtomicU64::new(0);
            Box::new(move |http| {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                http.get(if i.is_multiple_of(2) { &click } else { &pixel }).send()
            })
        },
    );
}

type Request = Box<dyn Fn(&reqwest::blocking::Client) -> reqwest::Result<reqwest::blocking::Response> + Sync>;

/// Sends a 30,000-message campaign (with `extra`), then again while 16
/// clients repeat the request `flood` makes from the first message's
/// outbox line: the flooded send takes less than three times as long.
fn flood_does_not_slow_a_send_much(what: &str, extra: Value, flood: impl Fn(&Value) -> Request) {
    const N: usize = 30_000;
    let (server, key, _) = Server::with_two_users();
    let api = server.api(&key);
    let first = api.list_of("u", N);
    let send = || {
        let id = api.send_campaign(first, extra.clone());
        api.wait_campaign(id, Duration::from_secs(300), |c| c["status"] == "sent");
    };
    let started = Instant::now();
    send();
    let mut unloaded = started.elapsed();
    let request = flood(&server.outbox()[0]);
    let flooded = || {
        let started = Instant::now();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let mut clients = Vec::new();
            for _ in 0..16 {
                clients.push(s.spawn(|| {
                    let http = reqwest::blocking::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .unwrap();
                    let mut n = 0u64;
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        if let Ok(r) = request(&http) {
                            assert!(r.status().as_u16() < 500, "{what}: answered {}", r.status());
                        }
                        n += 1;
                    }
                    n
                }));
            }
            send();
            let loaded = started.elapsed();
            done.store(true, std::sync::atomic::Ordering::Release);
            (clients.into_iter().map(|c| c.join().unwrap()).sum::<u64>(), loaded)
        })
    };
    let (requests, mut loaded) = flooded();
    println!("unloaded {unloaded:?}, with {requests} {what} {loaded:?}");
    // Wall time on a shared machine, beside other tests: a pair measured
    // while something else took the cores is measured once more, and the
    // better pair counts. A flood that really slows sends fails both.
    if loaded >= unloaded * 3 {
        let started = Instant::now();
        send();
        let again = started.elapsed();
        let (requests, loaded_again) = flooded();
        println!("again: unloaded {again:?}, with {requests} {what} {loaded_again:?}");
        if loaded_again.as_secs_f64() / again.as_secs_f64() < loaded.as_secs_f64() / unloaded.as_secs_f64() {
            (unloaded, loaded) = (again, loaded_again);
        }
    }
    assert!(
        loaded < unloaded * 3,
        "the send took {loaded:?} under the flood of {what}, {unloaded:?} without"
    );
}
