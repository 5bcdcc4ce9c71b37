//! Slow readers of a CSV export hold nothing another request needs: the
//! export reads a page only when the client took the last one, so no
//! thread or database connection waits on them (run on redb and, in the
//! `postgres` binary, with a pool of four connections).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use posta_e2e::{Backend, Server, backend, json};

#[test]
fn slow_export_readers_starve_nobody() {
    let (server, alice, bob) =
        Server::with_config("[server]\nmax_body_bytes = 1048576\n[database]\nmax_connections = 4\n");
    let (a, b) = (server.api(&alice), server.api(&bob));
    // A list large enough that its export does not fit in the socket
    // buffers: a reader that stops reading stalls the response.
    let list = b.ok_post("/lists", json!({"name": "big"}))["id"].as_u64().unwrap();
    let people: Vec<_> = (0..50_000)
        .map(|i| json!({"email": format!("p{i}@example.org"), "name": "x".repeat(100)}))
        .collect();
    for chunk in people.chunks(5_000) {
        b.ok_post(&format!("/lists/{list}/subscribers"), json!(chunk));
    }
    let addr = server.base.trim_start_matches("http://").to_string();
    // Bob opens his four exports and reads a few bytes of each, no more.
    let readers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "GET /api/v1/users/me/lists/{list}/subscribers.csv HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bob}\r\n\r\n"
            )
            .unwrap();
            let mut first = [0u8; 64];
            s.read_exact(&mut first).unwrap();
            assert!(first.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first));
            s
        })
        .collect();
    // A fifth is refused at once: four transfers per user.
    let (status, r) = b.get(&format!("/lists/{list}/subscribers.csv"));
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (429, Some("too_many_transfers")),
        "{r}"
    );
    std::thread::sleep(Duration::from_secs(1));
    // Alice is served normally meanwhile, more requests than the pool has
    // connections, and her own export streams whole.
    let t = Instant::now();
    let mine = a.ok_post("/lists", json!({"name": "mine"}))["id"].as_u64().unwrap();
    for i in 0..20 {
        a.ok_post(
            &format!("/lists/{mine}/subscribers"),
            json!({"email": format!("a{i}@example.org")}),
        );
    }
    let (status, csv) = a.get(&format!("/lists/{mine}/subscribers.csv"));
    assert_eq!(status, 200);
    assert_eq!(csv.as_str().unwrap().lines().count(), 21);
    let served = t.elapsed();
    drop(readers);
    println!(
        "P1 ({:?}): 4 stalled exports of 50,000 rows; another user's 21 writes and an export in {served:?}",
        backend()
    );
    if backend() == Backend::Postgres {
        assert!(served < Duration::from_secs(30), "{served:?}");
    }
}
