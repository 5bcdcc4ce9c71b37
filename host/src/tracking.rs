//! Open and click tracking, the I/O part: the public endpoints answer at
//! once and hand each hit here; the recorder stores them in batches
//! (`Engagements::record_hits`), so a flood of opens costs a few commits a
//! second, never a write per request.
//!
//! Durability: a hit is in memory until its batch commits (at most
//! `INTERVAL` plus one commit later); a crash loses at most that batch, a
//! clean stop stores it first. A flood beyond what the recorder takes is
//! answered but not counted: the queue is bounded (`QUEUE`) and each
//! client address may have `[server] tracking_rate_per_ip` hits a second
//! recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::domain::CampaignId;
use crate::domain::tracking::{Action, Hit, Links};
use crate::store::{Store, StoreError};

/// Hits waiting to be stored; more are dropped (answered, not counted).
const QUEUE: usize = 50_000;
/// Hits per transaction.
const BATCH: usize = 2_000;
/// Time between commits: a batch collects this long at most.
const INTERVAL: Duration = Duration::from_millis(250);
/// Campaigns whose links are kept in memory, and for how long: a sent
/// campaign's templates never change, a deleted one's links should stop.
const CACHED: usize = 4_096;
const CACHE_TTL: Duration = Duration::from_secs(60);

/// Hands hits to the recorder task and caches campaigns' links.
pub struct Tracker {
    queue: mpsc::Sender<Hit>,
    stop: Arc<Notify>,
    done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    links: std::sync::Mutex<HashMap<CampaignId, (Arc<Links>, Instant)>>,
    store: Store,
}

impl Tracker {
    pub fn start(store: Store) -> Arc<Tracker> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let stop = Arc::new(Notify::new());
        let done = tokio::spawn(record(store.clone(), rx, stop.clone()));
        Arc::new(Tracker {
            queue,
            stop,
            done: tokio::sync::Mutex::new(Some(done)),
            links: std::sync::Mutex::new(HashMap::new()),
            store,
        })
    }

    /// Queues a hit; false when the queue is full (not counted).
    pub fn hit(&self, hit: Hit) -> bool {
        let kind = match hit.action {
            Action::Open => "open",
            Action::Click(_) => "click",
        };
        let queued = self.queue.try_send(hit).is_ok();
        let outcome = if queued { "queued" } else { "dropped" };
        metrics::counter!(crate::metrics::TRACKING_HITS, "kind" => kind, "outcome" => outcome).increment(1);
        queued
    }

    /// The campaign's tracked links (from its stored templates).
    pub async fn links(&self, id: CampaignId) -> Result<Arc<Links>, StoreError> {
        if let Some((links, at)) = self.links.lock().expect("links lock").get(&id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(links.clone());
        }
        let c = self.store.campaign_by_id(id).await?;
        let links = Arc::new(Links::of_campaign(&c));
        let mut cache = self.links.lock().expect("links lock");
        if cache.len() >= CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHED {
                cache.clear();
            }
        }
        cache.insert(id, (links.clone(), Instant::now()));
        Ok(links)
    }

    /// Stores what is queued and stops the recorder (a clean stop).
    pub async fn flush(&self) {
        self.stop.notify_one();
        if let Some(task) = self.done.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// The recorder: a batch every `INTERVAL` at most, `BATCH` hits at most.
/// A batch that cannot reach storage (an outage) is tried again each
/// second while new hits queue up to `QUEUE`; one storage refuses is
/// logged and dropped.
async fn record(store: Store, mut rx: mpsc::Receiver<Hit>, stop: Arc<Notify>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stopping = false;
    loop {
        if batch.is_empty() && !stopping {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
                _ = stop.notified() => { stopping = true; rx.close(); }
            }
        }
        if !stopping {
            // Let the batch fill for the rest of the interval.
            let deadline = tokio::time::Instant::now() + INTERVAL;
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.notified() => { stopping = true; rx.close(); break }
                }
            }
        } else {
            // Closed: whatever is left, then done.
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(h) => batch.push(h),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        }
        let n = batch.len();
        let started = Instant::now();
        match store.record_hits(batch.clone()).await {
            Ok(counted) => {
                batch.clear();
                metrics::counter!(crate::metrics::TRACKING_RECORDED).increment(counted as u64);
                metrics::histogram!(crate::metrics::TRACKING_BATCH).record(started.elapsed());
            }
            // The database is out of reach: the batch waits for it (the
            // queue behind it fills, then drops).
            Err(e @ StoreError::Unavailable(_)) if !stopping => {
                tracing::warn!(hits = n, "tracking batch waits for storage: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Refused for another reason: kept, it would block the rest.
            Err(e) => {
                tracing::warn!(hits = n, "tracking batch not stored: {e}");
                metrics::counter!(crate::metrics::TRACKING_HITS, "kind" => "any", "outcome" => "lost")
                    .increment(n as u64);
                batch.clear();
            }
        }
    }
}
