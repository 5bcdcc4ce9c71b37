//! Whether a connection is in use: requests under way (until their
//! response body is written out, which for a live-progress stream is as
//! long as the page is open) and when the last one ended. A keep-alive
//! connection idle longer than the idle timeout is closed, so idle sockets
//! cannot hold connection slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::body::Body;
use tokio::time::Instant;

pub struct Activity {
    started: Instant,
    active: AtomicUsize,
    /// Milliseconds after `started` when a request last ended.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// A request begins; it counts until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// When the connection became idle, or `None` while a request is under
    /// way.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.started + std::time::Duration::from_millis(self.last_ms.load(Ordering::Acquire)))
    }
}

/// A request under way on its connection.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.started.elapsed().as_millis() as u64;
        self.0.last_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `body`, keeping its request counted until it is written out (or
/// dropped: the client went away).
pub fn hold_until_written(body: Body, busy: Busy) -> Body {
    use http_body_util::BodyExt;
    Body::new(body.map_frame(move |frame| {
        let _ = &busy;
        frame
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_requests() {
        let a = Activity::new();
        assert!(a.idle_since().is_some(), "a new connection is idle");
        let busy = a.begin();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert!(a.idle_since().is_none());
        drop(busy);
        let since = a.idle_since().unwrap();
        assert!(since >= a.started + std::time::Duration::from_secs(5));
    }
}
