//! Delivers users' event webhooks from the durable outbox
//! (`store::redb::webhooks`, `store::pg::webhooks`). One task takes due deliveries, POSTs each signed
//! body through the checked outbound connector (public addresses only
//! unless `webhooks.allow_private`), and stores every attempt with the
//! next due time or the final state. At most `concurrency` requests run
//! at once and `per_webhook` per webhook, so one slow receiver delays only
//! its own events. Delivery is at least once: an attempt cut off by a
//! crash or stop is made again after the restart, same event id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use rustls::ClientConfig;

use crate::config;
use crate::domain::webhook::Attempt;
use crate::domain::webhook::{RetryPolicy, signature};
use crate::domain::{DeliveryId, WebhookId};
use crate::outbound::{ConnectFailure, Connector, PublicOnly};
use crate::store::{DueDelivery, Store};

/// Longest wait between outbox reads when nothing wakes the task: the
/// safety net under the commit signal.
const POLL: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A receiver's answer is read (for connection reuse) up to this much.
const MAX_RESPONSE: usize = 64 << 10;

/// What is under way: delivery ids, and requests per webhook.
#[derive(Default)]
struct Busy {
    deliveries: HashSet<DeliveryId>,
    per_webhook: HashMap<WebhookId, usize>,
}

pub struct Deliverer {
    store: Store,
    client: Client<Connector, Full<Bytes>>,
    cfg: config::Webhooks,
    retry: RetryPolicy,
    busy: Arc<Mutex<Busy>>,
    finished: tokio::sync::Notify,
}

impl Deliverer {
    pub fn new(store: Store, cfg: config::Webhooks, tls: &ClientConfig) -> Arc<Deliverer> {
        let rule = Arc::new(PublicOnly {
            allow_private: cfg.allow_private,
        });
        Arc::new(Deliverer {
            store,
            client: crate::outbound::client(rule, tls, cfg.per_webhook),
            retry: cfg.retry(),
            cfg,
            busy: Arc::default(),
            finished: tokio::sync::Notify::new(),
        })
    }

    /// Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut pruned_at: Option<Instant> = None;
        loop {
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(Instant::now());
                self.prune().await;
            }
            let wait = match self.start_due().await {
                Ok(next) => {
                    self.store.health().ok("webhooks");
                    next
                }
                Err(e) => {
                    self.store.health().failed("webhooks", &e);
                    POLL
                }
            };
            tokio::select! {
                _ = self.store.outbox_written() => {}
                _ = self.finished.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts the due deliveries there is room for; returns how long to
    /// wait before looking again.
    async fn start_due(self: &Arc<Self>) -> anyhow::Result<Duration> {
        let (under_way, per_webhook, room) = {
            let busy = self.busy.lock().expect("busy lock");
            (
                busy.deliveries.clone(),
                busy.per_webhook.clone(),
                self.cfg.concurrency.saturating_sub(busy.deliveries.len()),
            )
        };
        if room == 0 {
            return Ok(POLL);
        }
        let store = self.store.clone();
        let now = Utc::now();
        let per = self.cfg.per_webhook;
        let (mut due, next) = store
            .due_deliveries(
                now,
                Box::new(move |webhook| per.saturating_sub(per_webhook.get(&webhook).copied().unwrap_or(0))),
                Box::new(move |delivery| under_way.contains(&delivery)),
            )
            .await?;
        // In random order: when the overall limit is reached, no webhook is
        // always first in line.
        rand::seq::SliceRandom::shuffle(due.as_mut_slice(), &mut rand::rng());
        for d in due {
            {
                let mut busy = self.busy.lock().expect("busy lock");
                let Busy {
                    deliveries,
                    per_webhook,
                } = &mut *busy;
                let n = per_webhook.get(&d.webhook.id).copied().unwrap_or(0);
                if n >= self.cfg.per_webhook || deliveries.len() >= self.cfg.concurrency {
                    continue;
                }
                per_webhook.insert(d.webhook.id, n + 1);
                deliveries.insert(d.delivery.id);
            }
            let me = self.clone();
            tokio::spawn(async move { me.deliver(d).await });
        }
        Ok(wait_until(next, Utc::now()))
    }

    async fn deliver(self: Arc<Self>, d: DueDelivery) {
        let (attempt, delivered) = self.attempt(&d).await;
        let attempts = d.delivery.attempts.len() as u32 + 1;
        let next = if delivered {
            None
        } else {
            self.retry
                .backoff(attempts)
                .map(|wait| Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
        };
        let result = match (delivered, next) {
            (true, _) => "delivered",
            (false, Some(_)) => "retrying",
            (false, None) => "failed",
        };
        metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "result" => result).increment(1);
        if result == "failed" {
            tracing::warn!(
                webhook = d.webhook.id.get(),
                event = %d.delivery.event_id,
                "webhook delivery given up after {attempts} attempts: {}",
                attempt.error.as_deref().unwrap_or("")
            );
        }
        let (webhook, id) = (d.webhook.id, d.delivery.id);
        // Left in the outbox as it was when this fails: attempted again.
        if let Err(e) = self.store.finish_attempt(webhook, id, attempt, delivered, next).await {
            tracing::error!(
                webhook = webhook.get(),
                delivery = id.get(),
                "cannot store a webhook attempt: {e}"
            );
        }
        {
            let mut busy = self.busy.lock().expect("busy lock");
            busy.deliveries.remove(&id);
            if let Some(n) = busy.per_webhook.get_mut(&webhook) {
                *n -= 1;
                if *n == 0 {
                    busy.per_webhook.remove(&webhook);
                }
            }
        }
        self.finished.notify_one();
    }

    /// One POST; whether the receiver accepted it (2xx).
    async fn attempt(&self, d: &DueDelivery) -> (Attempt, bool) {
        let at = Utc::now();
        let started = Instant::now();
        let body = d.delivery.body.clone();
        let request = http::Request::post(&d.webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("Posta-Webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-posta-event", d.delivery.event.as_str())
            .header("x-posta-event-id", &d.delivery.event_id)
            .header("x-posta-delivery", d.delivery.id.to_string())
            .header(
                "x-posta-signature",
                signature(d.webhook.secret.as_bytes(), at.timestamp(), body.as_bytes()),
            )
            .body(Full::new(Bytes::from(body)));
        let outcome = match request {
            Err(e) => Err(format!("invalid request: {e}")),
            Ok(request) => {
                let timeout = Duration::from_millis(self.cfg.timeout_ms);
                match tokio::time::timeout(timeout, self.exchange(request)).await {
                    Err(_) => Err(format!("no answer within {} ms", self.cfg.timeout_ms)),
                    Ok(r) => r,
                }
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(status) => {
                let ok = status.is_success();
                let attempt = Attempt {
                    at,
                    status: Some(status.as_u16()),
                    error: (!ok).then(|| format!("HTTP {status}")),
                    duration_ms,
                };
                (attempt, ok)
            }
            Err(error) => {
                let attempt = Attempt {
                    at,
                    status: None,
                    error: Some(error),
                    duration_ms,
                };
                (attempt, false)
            }
        }
    }

    /// Sends the request and reads (a bounded part of) the answer.
    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<http::StatusCode, String> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| match ConnectFailure::find(&e) {
                Some(f) => f.to_string(),
                None => chain(&e),
            })?;
        let status = response.status();
        // Read the answer so the connection can be reused; a receiver that
        // answers with more than MAX_RESPONSE just loses its connection.
        let _ = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await;
        Ok(status)
    }

    async fn prune(&self) {
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(self.cfg.keep_days));
        match self.store.prune_deliveries(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "pruned finished webhook deliveries"),
            Err(e) => tracing::error!("pruning webhook deliveries: {e}"),
        }
    }
}

/// How long to sleep before the next look at the outbox: until `next` is
/// due (at least 5 ms), and never longer than `POLL` — also when nothing
/// is waiting at all, where commits and finished requests wake the task.
fn wait_until(next: Option<chrono::DateTime<Utc>>, now: chrono::DateTime<Utc>) -> Duration {
    next.map_or(POLL, |t| (t - now).to_std().unwrap_or(Duration::ZERO))
        .clamp(Duration::from_millis(5), POLL)
}

/// An error with its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_outbox_is_polled_slowly_and_a_due_one_at_once() {
        let now = Utc::now();
        assert_eq!(wait_until(None, now), POLL);
        assert_eq!(
            wait_until(Some(now - chrono::Duration::seconds(1)), now),
            Duration::from_millis(5)
        );
        assert_eq!(
            wait_until(Some(now + chrono::Duration::milliseconds(300)), now),
            Duration::from_millis(300)
        );
        assert_eq!(wait_until(Some(now + chrono::Duration::hours(1)), now), POLL);
    }
}
