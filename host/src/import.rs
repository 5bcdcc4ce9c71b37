//! `posta import FILE.csv --list ID`: streams a CSV file to a running
//! server's import endpoint (the server holds the database, so the CLI goes
//! through its API), with a progress bar over the bytes sent. The file is
//! read a chunk at a time; a million rows never sit in memory here either.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;

const CHUNK: usize = 256 << 10;

/// Uploads `file` to list `list` at `base` (`http://host:port`) with `key`;
/// returns the server's report (JSON).
pub async fn run(file: &Path, list: u64, base: &str, key: &str) -> anyhow::Result<serde_json::Value> {
    let base = base.trim_end_matches('/');
    if !base.starts_with("http://") {
        bail!(
            "--url must be http://HOST:PORT (for a server behind TLS, run this next to it or use curl --data-binary @{})",
            file.display()
        );
    }
    let mut f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let size = f.metadata().await?.len();
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let progress = bar.clone();
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    progress.inc(n as u64);
                    if tx.send(Ok(Frame::data(Bytes::from(buf)))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let body = StreamBody::new(stream);
    let req = hyper::Request::post(format!("{base}/api/v1/users/me/lists/{list}/subscribers"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "text/csv")
        .body(body)?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.context("the server did not answer")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    reader.abort();
    bar.finish_and_clear();
    let report: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    if !status.is_success() {
        bail!("the server answered {status}: {report}");
    }
    Ok(report)
}
