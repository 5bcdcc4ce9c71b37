//! A transport's delivery lane: `max_in_flight` worker tasks that take
//! personalized messages from a bounded queue and call the transport one
//! after another, each call on a slot of the transport's rate limit when
//! it has one. The slot is taken here, right before the call, so the
//! calls keep the slots' spacing: taken earlier (in the message's task),
//! the hand-off to a worker added a delay that varies under load, and two
//! seconds' calls could bunch into one.
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

/// Calls the transport with `req`'s message, unless the call cannot start
/// by `start_by` (`None`).
async fn call(
    transport: &TransportEntry,
    req: &Request,
    start_by: Option<std::time::Instant>,
    call_seconds: &metrics::Histogram,
) -> Option<Reply> {
    let started = std::time::Instant::now();
    let result = transport.deliver_by(req.message.clone(), start_by).await;
    let result = result.transpose()?;
    call_seconds.record(started.elapsed());
    Some(Reply::Delivered(result))
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
    ) -> Lane {
        let workers = transport.info.max_in_flight.max(1);
        // Room for each worker's next message, so none waits on a wake-up.
        let (tx, rx) = mpsc::channel::<Request>(workers * 2);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
            let rx = rx.clone();
            let transport = transport.clone();
            let (pace, stop) = (pace.clone(), stop.clone());
            let call_seconds =
                metrics::histogram!(crate::metrics::TRANSPORT_CALL, "transport" => transport.info.name.clone());
            rt.spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(req) = next else { return };
                    // Checked before waiting for a rate slot (a message
                    // that will not be sent takes none) and again at the
                    // last moment.
                    let reply = loop {
                        if let Some(refused) = req.refused(&stop) {
                            break refused;
                        }
                        let slot = match &pace {
                            Some(pace) => {
                                let start_by = pace.until_ready().await;
                                if let Some(refused) = req.refused(&stop) {
                                    break refused;
                                }
                                start_by
                            }
                            None => None,
                        };
                        if let Some(spacing) = &req.spacing {
                            tokio::time::sleep_until(spacing.reserve(tokio::time::Instant::now())).await;
                            if let Some(refused) = req.refused(&stop) {
                                break refused;
                            }
                        }
                        // The call must start within its rate slot and
                        // before the claim's fence: between the check above
                        // and the guest's call there is an instance to take
                        // (maybe to make) and a thread to be scheduled on,
                        // and a node frozen there must not call once it
                        // wakes past its fence. A slot missed is let go and
                        // the next one waited for; a fence passed is
                        // refused at the top of the loop.
                        let fence = req.fence.as_ref().map(|f| f.at());
                        let start_by = [slot, fence].into_iter().flatten().min();
                        if let Some(reply) = call(&transport, &req, start_by, &call_seconds).await {
                            break reply;
                        }
                    };
                    let _ = req.reply.send(reply);
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
