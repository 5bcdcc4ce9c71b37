//! A transport's delivery lane: `max_in_flight` worker tasks that take
//! personalized messages from a bounded queue and call the transport one
//! after another, each call on a slot of the transport's rate limit when
//! it has one. The slot is taken here, right before the call, so the
//! calls keep the slots' spacing: taken earlier (in the message's task),
//! the hand-off to a worker added a delay that varies under load, and two
//! seconds' calls could bunch into one.
//!
//! A component that exports `deliver-batch` gets the messages queued
//! when a worker is free in one call (up to the transport's `max_batch`,
//! and no more bytes than one message may have), unless the transport or
//! the campaign is paced or the messages are a cluster node's: an SMTP
//! client then pipelines each envelope behind the last body, one round
//! trip per message instead of two.
//!
//! A worker goes straight from one call to the next while the queue has
//! work. With a semaphore per call instead, every call had to wait until
//! the scheduler polled the task that got the permit, behind every other
//! runnable message task; a transport with one slot (the log writer) then
//! spent most of its time idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use super::job::Stop;
use super::rate::{Pace, Spacing};
use crate::plugins::PluginError;
use crate::plugins::bindings::types;
use crate::plugins::registry::TransportEntry;
use crate::store::fence::Fence;

pub(super) type Delivered = Result<Result<types::Receipt, types::DeliveryError>, PluginError>;

pub(super) enum Reply {
    Delivered(Delivered),
    /// The campaign was cancelled while the message waited in the queue.
    Cancelled,
    /// The fence of the node that claimed the message fell while it waited.
    Fenced,
    /// The server is stopping (SIGTERM came while it waited for its slot).
    Stopped,
}

struct Request {
    message: Arc<types::Message>,
    cancelled: Arc<AtomicBool>,
    fence: Option<Arc<Fence>>,
    /// Its campaign's spacing between calls, for a paced campaign.
    spacing: Option<Arc<Spacing>>,
    reply: oneshot::Sender<Reply>,
}

impl Request {
    /// Whether the message may share a call with others: not a paced
    /// campaign's (each waits its turn), and not one claimed under a
    /// cluster node's fence. A batch's messages go out one after another
    /// within the call, so a node that froze mid-call would send the later
    /// ones past its fence, when another node may own them; alone, only
    /// the message under way can.
    fn batchable(&self) -> bool {
        self.spacing.is_none() && self.fence.is_none()
    }

    /// Why the message must not reach its transport now, if it must not:
    /// after SIGTERM only calls already under way finish, a cancel stops
    /// every message not yet handed over, and past the fence of the node
    /// that claimed it another node may own it (PostgreSQL).
    fn refused(&self, stop: &Stop) -> Option<Reply> {
        if stop.is_stopping() {
            Some(Reply::Stopped)
        } else if self.cancelled.load(Ordering::Acquire) {
            Some(Reply::Cancelled)
        } else if self.fence.as_ref().is_some_and(|f| !f.open()) {
            Some(Reply::Fenced)
        } else {
            None
        }
    }
}

/// Delivers one message on its own call: checked before waiting for a
/// rate slot (a message that will not be sent takes none) and again at
/// the last moment.
async fn one(transport: &TransportEntry, req: &Request, pace: Option<&Pace>, stop: &Stop, calls: &Calls) -> Reply {
    loop {
        if let Some(refused) = req.refused(stop) {
            return refused;
        }
        let slot = match pace {
            Some(pace) => {
                let start_by = pace.until_ready().await;
                if let Some(refused) = req.refused(stop) {
                    return refused;
                }
                start_by
            }
            None => None,
        };
        if let Some(spacing) = &req.spacing {
            tokio::time::sleep_until(spacing.reserve(tokio::time::Instant::now())).await;
            if let Some(refused) = req.refused(stop) {
                return refused;
            }
        }
        // The call must start within its rate slot and before the claim's
        // fence: between the check above and the guest's call there is an
        // instance to take (maybe to make) and a thread to be scheduled on,
        // and a node frozen there must not call once it wakes past its
        // fence. A slot missed is let go and the next one waited for; a
        // fence passed is refused at the top of the loop.
        let fence = req.fence.as_ref().map(|f| f.at());
        let start_by = [slot, fence].into_iter().flatten().min();
        if let Some(reply) = call(transport, req, start_by, calls).await {
            return reply;
        }
    }
}

/// Takes, after `first`, the messages already queued that can share its
/// call: up to `max_batch`, only `batchable` ones, and no more bytes in
/// all than the largest message allowed, so a batch asks no more memory
/// of the component than one message may.
/// The first message that does not fit is handed back for the next call.
fn gather(
    first: Request,
    rx: &Mutex<mpsc::Receiver<Request>>,
    max_batch: usize,
    max_bytes: u64,
) -> (Vec<Request>, Option<Request>) {
    let mut bytes = size(&first.message);
    let mut batch = vec![first];
    // Another worker holding the queue is waiting for a message: there is
    // nothing queued to take, and waiting for it would hold this batch
    // until more mail comes (at a campaign's end, forever).
    let Ok(mut rx) = rx.try_lock() else {
        return (batch, None);
    };
    while batch.len() < max_batch {
        let Ok(req) = rx.try_recv() else { break };
        let more = size(&req.message);
        if !req.batchable() || bytes + more > max_bytes {
            return (batch, Some(req));
        }
        bytes += more;
        batch.push(req);
    }
    (batch, None)
}

/// A message's bytes as the component receives them.
fn size(m: &types::Message) -> u64 {
    let headers: usize = m.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    (m.subject.len() + m.html.len() + m.text.len() + headers) as u64
}

/// Delivers a gathered batch in one `deliver-batch` call. Each message is
/// checked right before the call as a lone one would be, and one left over
/// goes alone.
///
/// A call that fails as a whole (a trap, its deadline, the memory cap, an
/// answer of the wrong length) says nothing about which message caused
/// it, so each then goes again alone, at once: a message that makes the
/// plugin trap fails by itself, as it would have without batches, and the
/// others get their own outcomes. (One the plugin had delivered before it
/// failed may arrive twice, as a lone message whose call traps after
/// sending is retried.)
async fn many(transport: &TransportEntry, batch: Vec<Request>, stop: &Stop, calls: &Calls) {
    let mut go = Vec::with_capacity(batch.len());
    for req in batch {
        match req.refused(stop) {
            Some(refused) => {
                let _ = req.reply.send(refused);
            }
            None => go.push(req),
        }
    }
    if go.len() < 2 {
        for req in go {
            let reply = one(transport, &req, None, stop, calls).await;
            let _ = req.reply.send(reply);
        }
        return;
    }
    let messages = go.iter().map(|r| r.message.clone()).collect();
    let started = std::time::Instant::now();
    match transport.deliver_batch(messages).await {
        Ok(results) => {
            calls.record(started, go.len());
            for (req, result) in go.into_iter().zip(results) {
                let _ = req.reply.send(Reply::Delivered(Ok(result)));
            }
        }
        Err(e) => {
            calls.record(started, go.len());
            tracing::debug!(transport = %transport.info.name, "batch failed ({e}); its messages go one by one");
            for req in go {
                let reply = one(transport, &req, None, stop, calls).await;
                let _ = req.reply.send(reply);
            }
        }
    }
}

/// Calls the transport with `req`'s message, unless the call cannot start
/// by `start_by` (`None`).
async fn call(
    transport: &TransportEntry,
    req: &Request,
    start_by: Option<std::time::Instant>,
    calls: &Calls,
) -> Option<Reply> {
    let started = std::time::Instant::now();
    let result = transport.deliver_by(req.message.clone(), start_by).await;
    let result = result.transpose()?;
    calls.record(started, 1);
    Some(Reply::Delivered(result))
}

/// A transport's call histograms: how long each call took and how many
/// messages it carried (1, or a batch's).
struct Calls {
    seconds: metrics::Histogram,
    messages: metrics::Histogram,
}

impl Calls {
    fn new(transport: &str) -> Calls {
        Calls {
            seconds: metrics::histogram!(crate::metrics::TRANSPORT_CALL, "transport" => transport.to_string()),
            messages: metrics::histogram!(crate::metrics::TRANSPORT_CALL_MESSAGES, "transport" => transport.to_string()),
        }
    }

    fn record(&self, started: std::time::Instant, messages: usize) {
        self.seconds.record(started.elapsed());
        self.messages.record(messages as f64);
    }
}

#[derive(Clone)]
pub(super) struct Lane {
    tx: mpsc::Sender<Request>,
    /// The transport's `rate_limit` per minute, if it has one.
    rate_limit: Option<u32>,
}

impl Lane {
    pub(super) fn start(
        rt: &tokio::runtime::Handle,
        transport: Arc<TransportEntry>,
        pace: Option<Arc<Pace>>,
        stop: Arc<Stop>,
        fenced: bool,
    ) -> Lane {
        let workers = transport.info.max_in_flight.max(1);
        // Room for each worker's next message, so none waits on a wake-up;
        // a batch is what has queued meanwhile. Where batches may form
        // (the only sender, no pace), room for a whole batch per worker:
        // at one connection a batch of two or three pays a round trip to
        // open each pipelined run. A message waiting here costs what one
        // waiting in a blocked `send` does (the engine's window bounds
        // both), and both wait in order. A cluster's node keeps two per
        // worker: a message here waits with its claim's lease running,
        // and its node must call before its fence.
        let depth = if fenced || pace.is_some() {
            workers * 2
        } else {
            workers * (transport.max_batch() + 1)
        };
        let (tx, rx) = mpsc::channel::<Request>(depth);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
            let rx = rx.clone();
            let transport = transport.clone();
            let (pace, stop) = (pace.clone(), stop.clone());
            let calls = Calls::new(&transport.info.name);
            rt.spawn(async move {
                let mut carried: Option<Request> = None;
                loop {
                    let first = match carried.take() {
                        Some(req) => req,
                        None => match rx.lock().await.recv().await {
                            Some(req) => req,
                            None => return,
                        },
                    };
                    // A paced transport's calls each take a rate slot:
                    // those go one per call.
                    let max_batch = if pace.is_some() { 1 } else { transport.max_batch() };
                    if max_batch < 2 || !first.batchable() {
                        let reply = one(&transport, &first, pace.as_deref(), &stop, &calls).await;
                        let _ = first.reply.send(reply);
                        continue;
                    }
                    let (batch, next) = gather(first, &rx, max_batch, transport.info.limits.max_message_bytes);
                    carried = next;
                    many(&transport, batch, &stop, &calls).await;
                }
            });
        }
        Lane {
            tx,
            rate_limit: transport.info.rate_limit.filter(|n| *n > 0),
        }
    }

    /// A lane no worker serves (tests of what picks a lane).
    #[cfg(test)]
    pub(super) fn detached() -> Lane {
        Lane {
            tx: mpsc::channel(1).0,
            rate_limit: None,
        }
    }

    /// The transport's `rate_limit` per minute, if it has one.
    pub(super) fn rate_limit(&self) -> Option<u32> {
        self.rate_limit
    }

    /// Hands a message to the transport and waits for its result.
    pub(super) async fn deliver(
        &self,
        message: Arc<types::Message>,
        cancelled: Arc<AtomicBool>,
        fence: Option<Arc<Fence>>,
        spacing: Option<Arc<Spacing>>,
    ) -> Reply {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            message,
            cancelled,
            fence,
            spacing,
            reply,
        };
        if self.tx.send(req).await.is_err() {
            return Reply::Cancelled;
        }
        rx.await.unwrap_or(Reply::Cancelled)
    }
}
