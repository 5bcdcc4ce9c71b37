//! Whether storage answers, as the process's long-running loops see it.
//!
//! Every loop that must outlive a database outage (the campaign drivers,
//! the outcome collector, heartbeats, the status watch, the scheduler, the
//! webhook deliverer) retries what failed with a capped backoff and reports
//! here: each loop's failure is logged once when it starts and once when
//! it ends (not per attempt), `/api/v1/health` says `degraded` while any
//! loop fails, and `posta_storage_up` is 0 meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// The loops failing now: since when, and the last error.
#[derive(Default)]
pub struct Health {
    failing: Mutex<HashMap<&'static str, (Instant, String)>>,
    /// Whether `failing` has entries: `ok` is on hot paths (every shared
    /// rate slot) and must not take the lock when nothing fails.
    any: AtomicBool,
}

/// One loop's failure, as `/api/v1/health` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failing {
    pub task: &'static str,
    pub for_seconds: u64,
    pub error: String,
}

impl Health {
    /// `task` could not reach storage: logged if it was not failing yet.
    pub fn failed(&self, task: &'static str, error: &dyn std::fmt::Display) {
        let error = error.to_string();
        let mut failing = self.failing.lock();
        match failing.get_mut(task) {
            Some((_, last)) => *last = error,
            None => {
                tracing::warn!(task, %error, "storage unreachable; retrying until it answers");
                failing.insert(task, (Instant::now(), error));
                self.any.store(true, Ordering::Release);
            }
        }
    }

    /// `task` reached storage: logged if it was failing.
    /// Calls `f` until it succeeds: each failure reported as `task`'s,
    /// the tries a capped backoff apart (for work that must happen
    /// whenever storage is back, such as storing outcomes or joining).
    pub async fn until_ok<T, E, Fut>(&self, task: &'static str, cap: Duration, mut f: impl FnMut() -> Fut) -> T
    where
        E: std::fmt::Display,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut backoff = Backoff::new(cap);
        loop {
            match f().await {
                Ok(v) => {
                    self.ok(task);
                    return v;
                }
                Err(e) => {
                    self.failed(task, &e);
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
    }

    pub fn ok(&self, task: &'static str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let ended = {
            let mut failing = self.failing.lock();
            let ended = failing.remove(task);
            self.any.store(!failing.is_empty(), Ordering::Release);
            ended
        };
        if let Some((since, _)) = ended {
            tracing::info!(
                task,
                after_ms = since.elapsed().as_millis() as u64,
                "storage answers again"
            );
        }
    }

    /// The loops failing now, longest first.
    pub fn failing(&self) -> Vec<Failing> {
        let mut out: Vec<Failing> = self
            .failing
            .lock()
            .iter()
            .map(|(task, (since, error))| Failing {
                task,
                for_seconds: since.elapsed().as_secs(),
                error: error.clone(),
            })
            .collect();
        out.sort_by(|a, b| b.for_seconds.cmp(&a.for_seconds).then(a.task.cmp(b.task)));
        out
    }
}

/// Capped exponential backoff for a loop retrying storage: 100 ms doubling
/// to `cap`.
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            cap,
        }
    }

    /// How long to wait before the next try.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next.min(self.cap);
        self.next = (self.next * 2).min(self.cap);
        wait
    }

    /// After a success: the next failure starts short again.
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_fails_once_and_recovers_once() {
        let h = Health::default();
        h.failed("driver", &"connection refused");
        h.failed("driver", &"still refused");
        h.failed("heartbeat", &"refused");
        let failing = h.failing();
        assert_eq!(failing.len(), 2);
        assert!(failing.iter().any(|f| f.task == "driver" && f.error == "still refused"));
        h.ok("driver");
        assert_eq!(h.failing().len(), 1);
        h.ok("heartbeat");
        assert!(h.failing().is_empty());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let waits: Vec<u64> = (0..5).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }
}
