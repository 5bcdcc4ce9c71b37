//! The whole server run inside the test's process (`server::run`): what a
//! child process would add (signals, the bound port) is not the point here.

use std::time::Duration;

use posta::config::Config;
use posta::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One HTTP/1.1 request on its own connection; the status and body.
async fn request(addr: std::net::SocketAddr, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: posta\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_runs_in_process_and_stops_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(None).unwrap();
    config.server.data_dir = dir.path().to_path_buf();
    let key = {
        let data_dir = server::prepare_data_dir(dir.path()).unwrap();
        let store = server::open_store(&data_dir, 4).unwrap();
        store.create_user("owner@example.org".into()).await.unwrap().1
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server::run(listener, config, async {
        let _ = stopped.await;
    }));

    let mut ready = false;
    for _ in 0..600 {
        if TcpStream::connect(addr).await.is_ok()
            && request(addr, "GET", "/api/v1/users/me/lists", &key, "").await.0 == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the server did not answer");
    let (status, body) = request(addr, "POST", "/api/v1/users/me/lists", &key, r#"{"name":"in process"}"#).await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"in process\""), "{body}");
    let (status, _) = request(addr, "GET", "/api/v1/users/me/lists", "not-a-key", "").await;
    assert_eq!(status, 401);

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the server stops when told")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed after the stop"
    );
}
