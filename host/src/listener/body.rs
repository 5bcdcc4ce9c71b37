//! Deadlines on reading a request body. Hyper times out a request's head
//! only; a client that sends `Content-Length: 1000000` and then nothing
//! would otherwise hold its connection, and whatever the handler holds
//! while it waits, for ever.
//!
//! Two rules. Every body must keep moving: no more than `idle` between
//! two pieces of it. An ordinary body must also be whole within `total`.
//! Uploads meant to stream (CSV, multipart forms) have no total: they may
//! take as long as they keep sending, and are bounded in bytes by
//! `server.max_import_bytes`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub idle: Duration,
    pub total: Duration,
}

/// The error a body that missed its deadline ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// Set when a request's body missed its deadline, so the listener can
/// answer 408 whatever the handler made of the failed read.
#[derive(Clone, Default)]
pub struct Expired(Arc<AtomicBool>);

impl Expired {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Whether a request's body is an upload meant to stream.
pub fn streams(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start().to_ascii_lowercase())
        .is_some_and(|v| v.starts_with("text/csv") || v.starts_with("multipart/form-data"))
}

pub struct DeadlineBody {
    inner: Body,
    idle: Duration,
    /// The next moment the body fails: the idle deadline, or the total
    /// one when that comes first.
    sleep: Pin<Box<Sleep>>,
    end: Option<Instant>,
    expired: Expired,
}

impl DeadlineBody {
    pub fn new(inner: Body, limits: BodyLimits, whole: bool) -> (DeadlineBody, Expired) {
        let now = Instant::now();
        let end = whole.then(|| now + limits.total);
        let expired = Expired::default();
        let body = DeadlineBody {
            inner,
            idle: limits.idle,
            sleep: Box::pin(tokio::time::sleep_until(next(now, limits.idle, end))),
            end,
            expired: expired.clone(),
        };
        (body, expired)
    }
}

fn next(now: Instant, idle: Duration, end: Option<Instant>) -> Instant {
    let idle = now + idle;
    end.map_or(idle, |end| end.min(idle))
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.expired.get() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let at = next(Instant::now(), this.idle, this.end);
                this.sleep.as_mut().reset(at);
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired.0.store(true, Ordering::Release);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn limits(idle_ms: u64, total_ms: u64) -> BodyLimits {
        BodyLimits {
            idle: Duration::from_millis(idle_ms),
            total: Duration::from_millis(total_ms),
        }
    }

    /// A body that sends `pieces` pieces `gap` apart.
    fn trickle(pieces: usize, gap: Duration) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..pieces {
                tokio::time::sleep(gap).await;
                if tx.send(Ok(Bytes::from_static(b"x"))).await.is_err() {
                    return;
                }
            }
        });
        Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_fails_after_the_idle_time() {
        let (body, expired) = DeadlineBody::new(trickle(1, Duration::from_secs(3600)), limits(10_000, 60_000), true);
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("in time"), "{err}");
        assert!(expired.get());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_fails_at_the_total_unless_it_streams() {
        // One byte a second for 100 s: never idle for 10 s.
        let gap = Duration::from_secs(1);
        let (body, expired) = DeadlineBody::new(trickle(100, gap), limits(10_000, 30_000), true);
        assert!(body.collect().await.is_err() && expired.get(), "whole within 30 s");
        let (body, expired) = DeadlineBody::new(trickle(100, gap), limits(10_000, 30_000), false);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            (got.len(), expired.get()),
            (100, false),
            "a streamed upload may take its time"
        );
    }
}
