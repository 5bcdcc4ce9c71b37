//! Availability: a stranger's sockets, one user's large report, stalled
//! uploads or slow campaigns cannot stop the service for anyone else.
//! Each test plays the attack against the real binary, then checks that
//! another client is served and that nothing stored was lost. Latencies
//! are printed for the record; the assertions are about being served at
//! all (the attacks this guards against made others wait for ever).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use posta_e2e::peers::{scrape, scrape_raw};
use posta_e2e::{Server, Value, json};

/// The server's socket address.
fn addr(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().expect("host:port")
}

/// A client whose connections come from `source` (another loopback
/// address: per-client limits key on it).
fn client_from(source: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `n` health checks from `client`: every one must answer 200; returns
/// the slowest.
fn health_checks(server: &Server, client: &reqwest::blocking::Client, n: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(format!("{}/api/v1/health", server.base))
            .send()
            .expect("health answers");
        assert_eq!(r.status().as_u16(), 200);
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

/// Opens `n` connections from each of `sources`, each sending `head` and nothing
/// more, on a tokio runtime; returns the runtime (keeping them open), the
/// connections still waiting after a moment, and how many were turned
/// away (closed, or answered 429 or 503 in the JSON shape).
fn open_stalled(
    server: &Server,
    sources: &[String],
    n: usize,
    head: &str,
) -> (tokio::runtime::Runtime, Vec<tokio::net::TcpStream>, usize) {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let to = addr(server);
    let from: Vec<SocketAddr> = sources.iter().map(|s| SocketAddr::new(s.parse().unwrap(), 0)).collect();
    let head = head.to_string();
    let (held, turned_away) = rt.block_on(async move {
        // All at once, as an attacker would: connect and send the head …
        let mut open = Vec::with_capacity(n * from.len());
        for from in from.iter().flat_map(|f| std::iter::repeat_n(*f, n)) {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(from).unwrap();
            let mut s = socket.connect(to).await.expect("connect");
            // A turned-away connection may be closed before the head is
            // written: a failed write is a refusal too.
            let _ = s.write_all(head.as_bytes()).await;
            open.push(s);
        }
        // … then see which the server answered and which it holds.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut held = Vec::new();
        let mut turned_away = 0;
        let mut buf = vec![0u8; 4096];
        for s in open {
            match s.try_read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held.push(s),
                Ok(0) | Err(_) => turned_away += 1,
                Ok(k) => {
                    let text = String::from_utf8_lossy(&buf[..k]);
                    assert!(
                        (text.starts_with("HTTP/1.1 429") || text.starts_with("HTTP/1.1 503"))
                            && text.contains("{\"error\":{\"code\":"),
                        "{text}"
                    );
                    turned_away += 1;
                }
            }
        }
        (held, turned_away)
    });
    (rt, held, turned_away)
}

#[test]
fn two_thousand_stalled_sockets_from_one_client_leave_room_for_everyone_else() {
    let (server, _alice, bob) = Server::with_config(
        "[server]\nmax_body_bytes = 1048576\nmax_connections = 64\nmax_connections_per_client = 16\n\
         body_idle_timeout_ms = 10000\n",
    );
    // Bob, from 127.0.0.2: request heads promising a body that never comes.
    let head = format!(
        "POST /api/v1/users/me/lists HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bob}\r\n\
         content-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    );
    let started = Instant::now();
    let (rt, held, turned_away) = open_stalled(&server, &["127.0.0.2".to_string()], 2_000, &head);
    let opening = started.elapsed();
    assert!(held.len() <= 16, "{} held: more than the client's share", held.len());
    assert_eq!(held.len() + turned_away, 2_000);
    // Another client is served at once, again and again.
    let other = client_from("127.0.0.1");
    let slowest = health_checks(&server, &other, 50);
    let (status, list) = {
        let r = other
            .post(format!("{}/api/v1/users/me/lists", server.base))
            .bearer_auth(&_alice)
            .json(&json!({"name": "served"}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(status, 201, "{list}");
    // The stalled bodies run out of time: 408 in the JSON shape, closed.
    let answers = rt.block_on(async move {
        use tokio::io::AsyncReadExt;
        let mut answers = Vec::new();
        for mut s in held {
            let mut text = String::new();
            let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut text)).await;
            answers.push(r.map(|_| text).unwrap_or_else(|_| "no answer in 20 s".into()));
        }
        answers
    });
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 408") && a.contains("\"body_timeout\""), "{a}");
    }
    println!(
        "F0: 2,000 connections from one client opened in {opening:?}: {} held, {turned_away} turned away (429); \
         another client's slowest of 50 health checks {slowest:?}; the held bodies all ended 408",
        answers.len()
    );
    drop(rt);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let (server, _, _) = Server::with_config("[server]\nmax_body_bytes = 1048576\nidle_timeout_ms = 1000\n");
    let mut s = TcpStream::connect(addr(&server)).unwrap();
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Nothing more is sent: the server closes it after about a second.
    let t = Instant::now();
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed by the server");
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(9), "{waited:?}");
    // A connection that never sends a byte goes the same way.
    let mut silent = TcpStream::connect(addr(&server)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
    println!("an idle keep-alive connection closed after {waited:?} (idle_timeout_ms = 1000)");
}

/// A DSN report naming `n` failed recipients.
fn dsn_report(id: &str, recipients: impl Iterator<Item = (String, &'static str)>) -> String {
    let mut blocks = String::new();
    for (email, status) in recipients {
        blocks += &format!("Final-Recipient: rfc822; {email}\r\nAction: failed\r\nStatus: {status}\r\n\r\n");
    }
    format!(
        "From: MAILER-DAEMON@mx.example.com\r\nTo: news@example.org\r\nSubject: Undelivered Mail\r\n\
         Message-ID: <{id}@mx.example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n\
         {blocks}--B--\r\n"
    )
}

#[test]
fn a_large_bounce_report_never_holds_the_writer_from_another_user() {
    let (server, alice, bob) = Server::with_config("[server]\nmax_body_bytes = 20971520\n");
    let (a, b) = (server.api(&alice), server.api(&bob));
    // The largest report accepted: 1,000 soft bounces, all of one address
    // (the quadratic case) and then 1,000 of distinct ones.
    let same = dsn_report("same", (0..1000).map(|_| ("ann@example.com".to_string(), "4.2.2")));
    let distinct = dsn_report("distinct", (0..1000).map(|i| (format!("p{i}@example.com"), "4.2.2")));
    let done = std::sync::atomic::AtomicBool::new(false);
    let writes = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let t = Instant::now();
                a.ok_post("/lists", json!({"name": format!("during {n}")}));
                slowest = slowest.max(t.elapsed());
                n += 1;
            }
            (n, slowest)
        });
        let mut took = Vec::new();
        for body in [&same, &distinct] {
            let t = Instant::now();
            let (status, r) = b.post_as("/bounces/dsn", "message/rfc822", body);
            took.push(t.elapsed());
            assert_eq!(status, 200, "{r}");
            let bounces = r["bounces"].as_array().unwrap();
            assert_eq!(bounces.len(), 1000);
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        (writer.join().unwrap(), took)
    });
    let ((n, slowest), took) = writes;
    // Nothing lost: every bounce stored, the repeated address suppressed
    // at its third soft bounce, each distinct one counted once.
    let ann = b.ok_get("/suppressions/ann@example.com");
    assert_eq!(ann["reason"], "bounced", "{ann}");
    assert_eq!(b.get("/suppressions/p7@example.com").0, 404);
    // Refusals: more recipients than a report may name, at 16 MiB.
    let huge = dsn_report(
        "huge",
        (0..)
            .map(|i| (format!("someone.with.a.long.address{i}@example.com"), "5.1.1"))
            .take(170_000),
    );
    assert!(huge.len() > 16 << 20);
    let t = Instant::now();
    let (status, r) = b.post_as("/bounces/dsn", "message/rfc822", &huge);
    let refused_in = t.elapsed();
    assert_eq!(status, 422, "{r}");
    assert_eq!(r["error"]["field"], "body", "{r}");
    // Posting a report again changes nothing.
    let (status, again) = b.post_as("/bounces/dsn", "message/rfc822", &distinct);
    assert_eq!(status, 200);
    assert!(
        again["bounces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["duplicate"] == true)
    );
    println!(
        "F1: 1,000-recipient reports (one address, distinct addresses) took {:?} and {:?}; another user's {n} \
         list writes meanwhile, slowest {slowest:?}; a {} MiB report refused (422) in {refused_in:?}",
        took[0],
        took[1],
        huge.len() >> 20
    );
}

/// Peak RSS growth of `server` while `attack` runs, in KiB.
fn peak_growth(server: &Server, attack: impl FnOnce()) -> u64 {
    server.reset_peak_rss();
    let before = server.rss_kib();
    attack();
    server.peak_rss_kib().saturating_sub(before)
}

#[test]
fn amplification_attempts_stay_within_their_caps() {
    const MAX_BODY: u64 = 16 << 20;
    let (server, alice, _) = Server::with_config(&format!("[server]\nmax_body_bytes = {MAX_BODY}\n"));
    let api = server.api(&alice);
    let list = api.ok_post("/lists", json!({"name": "amp"}))["id"].as_u64().unwrap();
    // Warm up the paths once, so first-use allocations are not counted.
    api.post_as(
        &format!("/lists/{list}/subscribers"),
        "text/csv",
        "email\nwarm@example.org\n",
    );
    api.ok_post(
        &format!("/lists/{list}/subscribers"),
        json!([{"email": "warm2@example.org"}]),
    );

    // A JSON array of 15 MiB of small items to a bulk endpoint: 413 at the
    // item limit, items typed as they are read.
    let item = r#"{"email":"a@example.org"},"#;
    let mut array = String::from("[");
    while array.len() < 15 << 20 {
        array.push_str(item);
    }
    array.push_str(r#"{"email":"a@example.org"}]"#);
    let mut status = 0;
    let json_growth = peak_growth(&server, || {
        status = api.post_raw(&format!("/lists/{list}/subscribers"), &array).0;
    });
    assert_eq!(status, 413);

    // A CSV whose one quoted field spans 64 MiB of short lines: the record
    // cap (1 MiB) ends the import, rows before it are kept.
    let mut csv = String::from("email,name\nkept@example.org,Kept\nx@example.org,\"");
    let line = format!("{}\n", "y".repeat(1023));
    while csv.len() < 64 << 20 {
        csv.push_str(&line);
    }
    csv.push_str("\"\n");
    let mut report = Value::Null;
    let csv_growth = peak_growth(&server, || {
        let (s, r) = api.post_as(&format!("/lists/{list}/subscribers"), "text/csv", &csv);
        assert_eq!(s, 200, "{r}");
        report = r;
    });
    assert_eq!(report["created"], 1, "{report}");
    let stop = report["errors"][0]["reason"].as_str().unwrap();
    assert!(stop.contains("longer than 1024 KiB"), "{report}");
    assert_eq!(api.ok_get(&format!("/lists/{list}"))["subscriber_count"], 3);

    // A 64 MiB csrf field on the dashboard's upload: refused after 256 bytes.
    let mut form = String::from("--X\r\ncontent-disposition: form-data; name=\"csrf\"\r\n\r\n");
    while form.len() < 64 << 20 {
        form.push_str(&line);
    }
    form.push_str("\r\n--X--\r\n");
    let session = sign_in(&server, &alice);
    let mut upload_status = 0;
    let form_growth = peak_growth(&server, || {
        upload_status = reqwest::blocking::Client::new()
            .post(format!("{}/lists/{list}/import", server.base))
            .header("cookie", format!("posta_session={session}"))
            .header("content-type", "multipart/form-data; boundary=X")
            .body(form.clone())
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
    });
    assert!(upload_status == 403 || upload_status == 0, "{upload_status}");
    println!(
        "F2: peak RSS growth: 15 MiB JSON array {} KiB (cap {} KiB), 64 MiB quoted CSV field {} KiB (record cap \
         1024 KiB), 64 MiB csrf field {} KiB",
        json_growth,
        MAX_BODY >> 10,
        csv_growth,
        form_growth
    );
    assert!(json_growth <= 2 * (MAX_BODY >> 10), "JSON: {json_growth} KiB");
    // The CSV and form paths hold a record or a token at a time; the
    // margin is the allocator's and the connection's buffers.
    assert!(csv_growth <= 2 * 1024 + 8 * 1024, "CSV: {csv_growth} KiB");
    assert!(form_growth <= 8 * 1024, "form: {form_growth} KiB");
}

/// The id of the user with `email`, from the admin API at `users`.
fn user_id(admin: &posta_e2e::Api, users: &str, email: &str) -> u64 {
    admin.get_abs(users).1["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == email)
        .unwrap()["id"]
        .as_u64()
        .unwrap()
}

/// Signs in to the dashboard with `key`; returns the session cookie.
fn sign_in(server: &Server, key: &str) -> String {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(format!("{}/signin", server.base)).send().unwrap();
    let token = cookie(&form, "posta_signin").expect("the sign-in form's cookie");
    let r = http
        .post(format!("{}/signin", server.base))
        .header("cookie", format!("posta_signin={token}"))
        .form(&[("csrf", token.as_str()), ("key", key)])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed in");
    cookie(&r, "posta_session").expect("a session cookie")
}

fn cookie(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap().to_string())
        })
        .filter(|v| !v.is_empty())
}

#[test]
fn a_thousand_stalled_uploads_leave_other_users_served() {
    let (server, alice, bob) = Server::with_config(
        "[server]\nmax_body_bytes = 1048576\nmax_connections = 2048\nbody_idle_timeout_ms = 10000\n",
    );
    let a = server.api(&alice);
    let list_b = server.api(&bob).ok_post("/lists", json!({"name": "b"}))["id"]
        .as_u64()
        .unwrap();
    let list_a = a.ok_post("/lists", json!({"name": "a"}))["id"].as_u64().unwrap();
    a.ok_post(
        &format!("/lists/{list_a}/subscribers"),
        json!([{"email": "kept@example.org"}]),
    );
    // Bob opens 1,000 CSV uploads from 40 addresses and sends no body.
    let head = format!(
        "POST /api/v1/users/me/lists/{list_b}/subscribers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bob}\r\n\
         content-type: text/csv\r\ncontent-length: 10000000\r\n\r\n"
    );
    let sources: Vec<String> = (1..=40).map(|i| format!("127.0.1.{i}")).collect();
    let (rt, held, refused) = open_stalled(&server, &sources, 25, &head);
    let stalled = held.len();
    assert_eq!(stalled + refused, 1_000);
    // Alice is served while they stall: JSON, CSV in and out.
    let t = Instant::now();
    for i in 0..20 {
        a.ok_post(
            &format!("/lists/{list_a}/subscribers"),
            json!({"email": format!("n{i}@example.org")}),
        );
    }
    let (status, r) = a.post_as(
        &format!("/lists/{list_a}/subscribers"),
        "text/csv",
        "email\ncsv@example.org\n",
    );
    assert_eq!((status, &r["created"]), (200, &json!(1)), "{r}");
    let (status, exported) = a.get(&format!("/lists/{list_a}/subscribers.csv"));
    assert_eq!(status, 200);
    assert_eq!(exported.as_str().unwrap().lines().count(), 23, "{exported}");
    let served_in = t.elapsed();
    let slowest = health_checks(&server, &client_from("127.0.0.1"), 20);
    // The stalled uploads end by themselves; nothing of Alice's is lost.
    drop(held);
    drop(rt);
    assert_eq!(a.ok_get(&format!("/lists/{list_a}"))["subscriber_count"], 22);
    println!(
        "F3: 1,000 stalled CSV uploads ({stalled} held by the server, {refused} refused at once): another user's \
         22 writes, a CSV import and an export in {served_in:?}; slowest health check {slowest:?}"
    );
    assert!(stalled <= 4, "at most 4 transfers per user run at once: {stalled}");
}

#[test]
fn another_users_campaign_is_not_held_up_by_slow_heavy_campaigns() {
    let (server, alice, bob) = Server::with_config("[delivery]\nheld_message_mib = 8\n");
    let (a, b) = (server.api(&alice), server.api(&bob));
    let send_alone = |name: &str| {
        let list = a.list_of(name, 40);
        let t = Instant::now();
        let id = a.send_campaign(list, json!({}));
        a.wait_campaign(id, Duration::from_secs(60), |c| c["status"] == "sent");
        t.elapsed()
    };
    let alone = send_alone("alone");
    // Bob: six campaigns at one message a minute, each message ~1 MB.
    let big = "x".repeat(500_000);
    let mut slow = Vec::new();
    for i in 0..6 {
        let list = b.list_of(&format!("slow{i}-"), 50);
        slow.push(b.send_campaign(list, json!({"send_rate": 1, "html": big, "text": big})));
    }
    std::thread::sleep(Duration::from_secs(2));
    let beside = send_alone("beside");
    for id in slow {
        b.ok_post(&format!("/campaigns/{id}/cancel"), json!({}));
    }
    println!(
        "F4: a 40-message campaign alone {alone:?}, beside six 1 MB-message campaigns at 1/min {beside:?} ({:.1}x)",
        beside.as_secs_f64() / alone.as_secs_f64()
    );
    assert!(beside < Duration::from_secs(30), "held up: {beside:?}");
}

#[test]
fn dates_out_of_range_are_a_422_never_a_panic() {
    let (server, alice, _) = Server::with_two_users();
    let api = server.api(&alice);
    let list = api.list_of("d", 2);
    for at in [
        "-262143-01-01T00:00:00Z",
        "+262142-12-31T23:59:59Z",
        "1969-12-31T23:59:59Z",
        "+10000-01-01T00:00:00Z",
    ] {
        for local in [true, false] {
            let (status, r) = api.post(
                "/campaigns",
                json!({"name": "d", "subject": "s", "from_email": "news@example.org", "list_id": list,
                       "text": "t", "scheduled_at": at, "send_at_local_time": local}),
            );
            assert!(status == 422 || status == 400, "{at}: {status} {r}");
            if status == 422 {
                assert_eq!(r["error"]["field"], "scheduled_at", "{r}");
            }
        }
        let id = api.campaign(list, json!({}));
        let (status, r) = api.patch(
            &format!("/campaigns/{id}"),
            json!({"scheduled_at": at, "send_at_local_time": true}),
        );
        assert!(status == 422 || status == 400, "{at}: {status} {r}");
        let (status, _) = api.post(&format!("/campaigns/{id}/send"), json!({}));
        assert!(status < 500, "{at}: send {status}");
    }
    // The edges of the range are fine.
    let id = api.campaign(
        list,
        json!({"scheduled_at": "9999-12-31T23:59:59Z", "send_at_local_time": true}),
    );
    let (status, r) = api.post(&format!("/campaigns/{id}/send"), json!({}));
    assert_eq!((status, &r["status"]), (200, &json!("scheduled")), "{r}");
}

#[test]
fn open_metrics_name_no_tenants_work() {
    let (open, alice, _) = Server::with_two_users();
    let api = open.api(&alice);
    let list = api.list_of("m", 200);
    let id = api.send_campaign(list, json!({"send_rate": 600}));
    let (_, text) = scrape_raw(&open, None);
    assert!(
        !text.contains("campaign=\""),
        "campaign ids in an open exposition:\n{text}"
    );
    let samples = scrape(&open, None);
    assert!(samples.iter().any(|s| s["name"] == "posta_queued_messages"));
    api.ok_post(&format!("/campaigns/{id}/cancel"), json!({}));

    let (guarded, alice, _) = Server::with_config("[server]\nmetrics_token = \"t0k\"\n");
    let api = guarded.api(&alice);
    let list = api.list_of("m", 200);
    let id = api.send_campaign(list, json!({"send_rate": 600}));
    let (_, text) = scrape_raw(&guarded, Some("t0k"));
    assert!(text.contains(&format!("campaign=\"{id}\"")), "{text}");
    api.ok_post(&format!("/campaigns/{id}/cancel"), json!({}));
}

#[test]
fn revoking_a_key_ends_the_dashboard_sessions_it_opened() {
    let (server, alice, bob) = Server::with_two_users();
    let session = sign_in(&server, &bob);
    let page = |session: &str| {
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/campaigns", server.base))
            .header("cookie", format!("posta_session={session}"))
            .send()
            .unwrap()
    };
    assert_eq!(page(&session).status().as_u16(), 200);
    let admin = server.api(&alice);
    let users = format!("{}/api/v1/admin/users", server.base);
    let bob_id = user_id(&admin, &users, "bob@example.org");
    let keys = admin.get_abs(&format!("{users}/{bob_id}/keys")).1;
    for k in keys["items"].as_array().unwrap() {
        let (status, _) = admin.delete_abs(&format!("{users}/{bob_id}/keys/{}", k["id"]));
        assert_eq!(status, 204);
    }
    assert_eq!(server.api(&bob).get("/lists").0, 401);
    let r = page(&session);
    assert_eq!(r.status().as_u16(), 303, "the session ended with its key");
    assert_eq!(r.headers()["location"], "/signin");
}

#[test]
fn a_user_sends_only_from_its_own_sender_domains() {
    let (server, alice, bob) = Server::with_two_users();
    let (admin, b) = (server.api(&alice), server.api(&bob));
    let list = b.list_of("d", 3);
    let from = |domain: &str| json!({"from_email": format!("ceo@{domain}")});
    // Bob has the test domains, not the bank's.
    let mine = b.ok_get("/domains");
    assert!(
        mine["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["domain"] == "example.org"),
        "{mine}"
    );
    let mut draft = json!({"name": "x", "subject": "s", "list_id": list, "text": "t"});
    draft["from_email"] = from("bank.example")["from_email"].clone();
    let (status, r) = b.post("/campaigns", draft.clone());
    assert_eq!((status, r["error"]["field"].as_str()), (422, Some("from_email")), "{r}");
    let id = b.campaign(list, json!({}));
    let (status, r) = b.patch(&format!("/campaigns/{id}"), from("Bank.Example"));
    assert_eq!((status, r["error"]["field"].as_str()), (422, Some("from_email")), "{r}");

    // An admin grants it; only admins may.
    let users = format!("{}/api/v1/admin/users", server.base);
    let bob_id = user_id(&admin, &users, "bob@example.org");
    let domains = format!("{users}/{bob_id}/domains");
    assert_eq!(b.post_abs(&domains, json!({"domain": "bank.example"})).0, 403);
    let (status, r) = admin.post_abs(&domains, json!({"domain": "not a domain"}));
    assert_eq!((status, r["error"]["field"].as_str()), (422, Some("domain")), "{r}");
    let (status, r) = admin.post_abs(&domains, json!({"domain": "Bank.Example."}));
    assert_eq!((status, &r["domain"]), (201, &json!("bank.example")), "{r}");
    let (status, r) = b.patch(&format!("/campaigns/{id}"), from("bank.example"));
    assert_eq!(status, 200, "{r}");

    // Taken away again: the draft can no longer be sent.
    assert_eq!(admin.delete_abs(&format!("{domains}/bank.example")).0, 204);
    assert_eq!(admin.delete_abs(&format!("{domains}/bank.example")).0, 404);
    let (status, r) = b.post(&format!("/campaigns/{id}/send"), json!({}));
    assert_eq!((status, r["error"]["field"].as_str()), (422, Some("from_email")), "{r}");
    assert_eq!(b.ok_get(&format!("/campaigns/{id}"))["status"], "draft");
    assert!(server.outbox().is_empty(), "nothing was sent as the bank");
}

#[test]
fn behind_a_trusted_proxy_limits_key_on_the_forwarded_client() {
    let (server, _, _) = Server::with_config(
        "[server]\nmax_body_bytes = 1048576\npublic_rate_per_ip = 2\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let health = |client: &reqwest::blocking::Client, forwarded: &str| {
        client
            .get(format!("{}/api/v1/health", server.base))
            .header("x-forwarded-for", forwarded)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Through the proxy: one forwarded client spends its burst (4) …
    let proxy = client_from("127.0.0.1");
    let statuses: Vec<u16> = (0..8).map(|_| health(&proxy, "203.0.113.1")).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    // … and another forwarded client is not held to it.
    assert_eq!(health(&proxy, "198.51.100.7, 203.0.113.2"), 200);
    // A direct client's own header is not believed: it keys on its address.
    let direct = client_from("127.0.0.5");
    let statuses: Vec<u16> = (0..8).map(|i| health(&direct, &format!("192.0.2.{i}"))).collect();
    assert!(
        statuses.contains(&429),
        "a spoofed header escaped the limit: {statuses:?}"
    );
}
