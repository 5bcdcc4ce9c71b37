//! One message's way through the plugins: personalize, deliver, retry.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, mpsc};

use super::capacity::Capacity;
use super::collector::Reported;
use super::lane::Reply;
use super::provider::is_deferral;
use super::route::is_unreachable;
use crate::domain::backoff::Event;
use crate::domain::message::{Job, Outcome, OutcomeKind};
use crate::domain::{Campaign, MessageId, unsubscribe};
use crate::plugins::Plugins;
use crate::plugins::bindings::types;
use crate::store::queue::Claim;

/// What every message's delivery uses whatever its campaign: made once by
/// the engine and passed in, so a job sees nothing else of it.
pub(super) struct Shared {
    pub(super) plugins: Arc<Plugins>,
    /// Mailbox providers by recipient domain: their pace and backoff.
    pub(super) providers: super::provider::Providers,
    /// Personalize slots and the budget for rendered messages.
    pub(super) capacity: Capacity,
    pub(super) stop: Arc<Stop>,
    /// Where outcomes go (the collector); a retry's attempt too.
    pub(super) outcomes: mpsc::UnboundedSender<Reported>,
    pub(super) retry: Retry,
    /// `PERSONALIZE_CALL`, looked up once: the macro hashes its key into
    /// the recorder's registry on every use, once per message here.
    pub(super) personalize_seconds: metrics::Histogram,
}

/// When to try a message again.
pub(super) struct Retry {
    pub(super) max_attempts: u32,
    pub(super) base_ms: u64,
    pub(super) max_ms: u64,
    /// A recipient refused for good is a hard bounce (`bounces`).
    pub(super) hard_on_reject: bool,
}

/// Set by `Engine::shutdown`: nothing new is queued, retries are deferred.
#[derive(Default)]
pub(super) struct Stop {
    stopping: std::sync::atomic::AtomicBool,
    /// Wakes the retries waiting out a backoff.
    wake: Notify,
}

impl Stop {
    pub(super) fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_waiters();
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits out a retry's backoff; false when a stop cut it short (the
    /// retry then happens after the next start: no transport call starts
    /// after SIGTERM). A stop that lands just as the wait ends is caught by
    /// the lane's check before the transport.
    pub(super) async fn sleep(&self, wait: Duration) -> bool {
        let stop = self.wake.notified();
        tokio::pin!(stop);
        // Registered before the flag is read, so a stop in between still
        // wakes it.
        stop.as_mut().enable();
        if self.is_stopping() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = stop => false,
        }
    }
}

/// What every message of a campaign shares, built once per run (by the
/// engine, which owns the lanes and rate limiters it picks from).
pub(super) struct Context {
    pub(super) run: Arc<super::Run>,
    pub(super) campaign: Campaign,
    pub(super) wit: Arc<types::Campaign>,
    /// Its A/B test's variants, by index, as the personalizer gets them.
    pub(super) variants: Vec<Arc<types::Campaign>>,
    pub(super) transport: Option<Arc<super::route::Route>>,
    /// The campaign's `send_rate` (the transport's own limit is the
    /// lane's).
    pub(super) campaign_rate: Option<super::rate::Pace>,
    /// Keeps its calls a period apart where they start (a campaign paced
    /// by this process alone; a shared pace's slots are the cluster's).
    pub(super) spacing: Option<Arc<super::rate::Spacing>>,
    pub(super) unsubscribe_base: String,
    pub(super) secret: [u8; 32],
    /// Rewrites each rendered message for open and click tracking.
    pub(super) tracking: Option<crate::domain::tracking::Rewriter>,
    /// The campaign owner's share of personalize slots.
    pub(super) user_slots: Arc<tokio::sync::Semaphore>,
    pub(super) max_message_bytes: u64,
    pub(super) counters: crate::metrics::MessageCounters,
}

/// A personalized message and its share of the engine's byte budget, held
/// until the message is done with or waits out a retry's backoff.
struct Held {
    message: Arc<types::Message>,
    _bytes: super::capacity::Hold,
}

/// What a message weighs in memory: its texts and headers.
fn size(m: &types::Message) -> usize {
    m.subject.len()
        + m.html.len()
        + m.text.len()
        + m.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>()
}

enum Failure {
    Transient(String),
    /// The recipient's provider asked to slow down: it backs off as a
    /// whole, and the message tries again when it lets one through.
    Deferred(String),
    Permanent(String),
    /// The receiving server refused the recipient for good.
    Rejected(String),
    Cancelled,
    /// The server is stopping, or this node's fence fell (its claim on the
    /// message may lapse), and the transport was not called.
    Stopped,
}

/// Delivers `job`, its transport calls starting before `claim`'s fence if
/// it has one; past it the message is handed back (`Deferred`) uncalled.
pub(super) async fn deliver(shared: &Shared, ctx: &Context, job: Job, claim: &Claim) -> Outcome {
    let sub = &job.subscriber;
    let outcome = |attempts, kind| Outcome {
        campaign_id: job.campaign_id,
        subscriber_id: sub.id,
        attempts,
        kind,
    };
    // Attempts made before a stop count: max_attempts is per message.
    let mut attempts = job.attempts;
    let mut message: Option<Held> = None;
    let mut last_error = None;
    // Deferrals are not charged as attempts (the provider's backoff
    // paces them), up to this many.
    let mut deferrals = 0;
    let max_deferrals = shared.retry.max_attempts.saturating_mul(DEFERRALS_PER_ATTEMPT);
    let kind = loop {
        if attempts >= shared.retry.max_attempts {
            let error = last_error.unwrap_or_else(|| "no attempt left".to_string());
            break OutcomeKind::Failed {
                error: format!("{error} (gave up after {attempts} attempts)"),
            };
        }
        attempts += 1;
        match attempt(shared, ctx, &job, &mut message, claim).await {
            Ok(remote_id) => break OutcomeKind::Sent { remote_id },
            Err(Failure::Permanent(error)) => break OutcomeKind::Failed { error },
            Err(Failure::Rejected(error)) if shared.retry.hard_on_reject => break OutcomeKind::Rejected { error },
            Err(Failure::Rejected(error)) => break OutcomeKind::Failed { error },
            Err(Failure::Cancelled) => break OutcomeKind::Cancelled,
            Err(Failure::Stopped) => {
                attempts -= 1;
                break OutcomeKind::Deferred;
            }
            Err(Failure::Deferred(error)) if deferrals >= max_deferrals => {
                break OutcomeKind::Failed {
                    error: format!("{error} (deferred {deferrals} times)"),
                };
            }
            Err(Failure::Transient(error)) if attempts >= shared.retry.max_attempts => {
                last_error = Some(error);
            }
            Err(failure @ (Failure::Transient(_) | Failure::Deferred(_))) => {
                // A deferral is not charged: the provider's backoff paces
                // the next try (its gate in `attempt`), not the message's.
                let deferred = matches!(failure, Failure::Deferred(_));
                let (Failure::Transient(error) | Failure::Deferred(error)) = failure else {
                    unreachable!("matched above")
                };
                if deferred {
                    deferrals += 1;
                    attempts -= 1;
                }
                tracing::debug!(
                    campaign = ctx.campaign.id.get(),
                    subscriber = sub.id.get(),
                    attempts,
                    "retrying: {error}"
                );
                // The attempt is stored before the wait, so neither a stop
                // nor a crash lets a restart count it again.
                let _ = shared.outcomes.send(Reported {
                    outcome: outcome(attempts, OutcomeKind::Retrying { error: error.clone() }),
                    claim: claim.clone(),
                });
                ctx.counters.retried.increment(1);
                last_error = Some(error);
                // A message waiting out a backoff holds none of the budget:
                // it is rendered again (the same bytes: templates are
                // deterministic, the Message-ID is the message's) when its
                // next attempt may be made.
                message = None;
                if !deferred && !shared.stop.sleep(backoff(&shared.retry, attempts)).await {
                    break OutcomeKind::Deferred;
                }
            }
        }
    };
    let c = &ctx.counters;
    match &kind {
        OutcomeKind::Sent { .. } => &c.sent,
        OutcomeKind::Failed { .. } => &c.failed,
        OutcomeKind::Rejected { .. } => &c.rejected,
        OutcomeKind::Cancelled => &c.cancelled,
        OutcomeKind::Retrying { .. } | OutcomeKind::Deferred => &c.deferred,
    }
    .increment(1);
    outcome(attempts, kind)
}

/// Deferrals a message may meet per attempt it is allowed before it fails.
const DEFERRALS_PER_ATTEMPT: u32 = 10;

/// Exponential backoff with jitter: base·2^(n-1), capped, scaled by a
/// random factor in [0.5, 1] so that retries of a burst spread out.
fn backoff(retry: &Retry, attempts: u32) -> Duration {
    let exp = retry.base_ms.saturating_mul(1u64 << (attempts - 1).min(20));
    let capped = exp.min(retry.max_ms);
    let jitter = rand::rng().random_range(0.5..=1.0);
    Duration::from_millis((capped as f64 * jitter) as u64)
}

async fn attempt(
    shared: &Shared,
    ctx: &Context,
    job: &Job,
    message: &mut Option<Held>,
    claim: &Claim,
) -> Result<Option<String>, Failure> {
    let Some(route) = &ctx.transport else {
        return Err(Failure::Permanent(format!(
            "transport {:?} is not configured",
            ctx.campaign.transport
        )));
    };
    // Both limits hold: the campaign's send_rate here, the transport's own
    // in its lane, which also checks for a stop, a cancel and the fence
    // right before the call. The campaign's slot is taken before the
    // message is rendered, so a slow campaign holds no rendered messages
    // (nor their bytes of the shared budget) while it waits; its rate is
    // exact, but a busy lane can start a call past its slot (no start-by
    // time is kept for it, unlike the transport's).
    if let Some(l) = &ctx.campaign_rate {
        l.until_ready().await;
    }
    // A pool whose members all met their warm-up caps: the next day,
    // before rendering (so the wait holds none of the byte budget).
    if !route.until_uncapped(&shared.stop).await {
        return Err(Failure::Stopped);
    }
    // The recipient's provider: its backoff, its slots, its pace. Waited
    // for before rendering, so a message waiting out a backoff holds
    // none of the byte budget.
    let provider = shared.providers.of(job.subscriber.email.as_str());
    let turn = match provider {
        Some(p) => match p.turn(&shared.stop, &ctx.run).await {
            Some(turn) => Some(turn),
            None => return Err(Failure::Stopped),
        },
        None => None,
    };
    if message.is_none() {
        *message = Some(personalize(shared, ctx, job).await?);
    }
    let msg = message.as_ref().expect("personalized above").message.clone();
    let reply = route
        .deliver(
            msg,
            ctx.run.cancelled.clone(),
            claim.fence().cloned(),
            ctx.spacing.clone(),
            &shared.stop,
        )
        .await;
    if let (Some(p), Some(turn)) = (provider, &turn) {
        let probe = turn.probe;
        let event = match &reply {
            Reply::Delivered(Ok(Err(types::DeliveryError::Transient(e)))) if is_deferral(e) => {
                Event::Deferred { probe }
            }
            Reply::Delivered(Ok(Err(types::DeliveryError::Transient(e)))) if is_unreachable(e) => {
                Event::Released { probe }
            }
            Reply::Delivered(Ok(_)) => Event::Accepted { probe },
            _ => Event::Released { probe },
        };
        p.answered(turn, event, matches!(reply, Reply::Delivered(Ok(Ok(_)))))
            .await;
    }
    match reply {
        Reply::Delivered(Ok(Err(types::DeliveryError::Transient(e)))) if provider.is_some() && is_deferral(&e) => {
            Err(Failure::Deferred(e))
        }
        Reply::Cancelled => Err(Failure::Cancelled),
        Reply::Fenced | Reply::Stopped => Err(Failure::Stopped),
        Reply::Delivered(Ok(Ok(receipt))) => Ok(receipt.remote_id),
        Reply::Delivered(Ok(Err(types::DeliveryError::Permanent(e)))) => Err(Failure::Permanent(e)),
        Reply::Delivered(Ok(Err(types::DeliveryError::Transient(e)))) => Err(Failure::Transient(e)),
        Reply::Delivered(Ok(Err(types::DeliveryError::Rejected(e)))) => Err(Failure::Rejected(e)),
        Reply::Delivered(Err(e)) => Err(Failure::Transient(e.to_string())),
    }
}

async fn personalize(shared: &Shared, ctx: &Context, job: &Job) -> Result<Held, Failure> {
    let s = &job.subscriber;
    let subscriber = types::Subscriber::from(s);
    let token = unsubscribe::token(
        &ctx.secret,
        MessageId {
            campaign: ctx.campaign.id,
            subscriber: s.id,
        },
    );
    let envelope = types::Envelope {
        message_id: ctx.campaign.message_id(s.id),
        unsubscribe_url: format!("{}/{}/{}/{token}", ctx.unsubscribe_base, ctx.campaign.id, s.id),
    };
    let slot = shared.capacity.render_slot(&ctx.user_slots).await;
    let started = std::time::Instant::now();
    let template = job
        .variant
        .and_then(|v| ctx.variants.get(usize::from(v)))
        .unwrap_or(&ctx.wit);
    let result = shared.plugins.personalize(template.clone(), subscriber, envelope).await;
    shared.personalize_seconds.record(started.elapsed());
    let mut message = match result {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Err(Failure::Permanent(format!("personalize: {e}"))),
        Err(e) => return Err(Failure::Transient(e.to_string())),
    };
    if let Some(t) = &ctx.tracking {
        message.html = t.html(&message.html, ctx.campaign.id, s.id);
        message.text = t.text(&message.text, ctx.campaign.id, s.id);
    }
    // The bundled personalizer stops at the limit while rendering; this
    // holds for any other personalizer too (tracked links included).
    let bytes = size(&message);
    if bytes as u64 > ctx.max_message_bytes {
        return Err(Failure::Permanent(format!(
            "the personalized message is {bytes} bytes; the limit is {} (limits.max_message_bytes)",
            ctx.max_message_bytes
        )));
    }
    // The slot is kept until the budget has room, so at most one message
    // per slot waits outside it.
    let held = shared.capacity.hold(ctx.campaign.user_id, bytes).await;
    drop(slot);
    Ok(Held {
        message: Arc::new(message),
        _bytes: held,
    })
}
