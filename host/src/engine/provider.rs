//! Mailbox providers (`[providers.NAME]`): the recipient domains behind
//! one provider, with its `rate_limit` (a pace every transport shares, and
//! on PostgreSQL every node) and `max_in_flight`. When the provider defers
//! a message (the transport says `deferred:`, as the SMTP transport does
//! for 421 and 4.7.x replies and 450/451 ones about rates), the provider as
//! a whole backs off (`domain::backoff`): messages to it wait, uncharged,
//! and one probe at a time decides; every other provider, and recipients
//! of none, go on at full speed.
//!
//! A process sending alone keeps the backoff in memory and its slots in a
//! semaphore. On PostgreSQL both are the database's
//! (`store::queue::SharedProvider`), so they hold for the cluster: a node
//! takes a shared slot for each call (after one of its own, so its waiters
//! do not all poll), and looks at the shared backoff at most every
//! `LOOK_EVERY` while the provider takes mail — a deferral seen by one node
//! holds the others back within that — and for each probe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::job::Stop;
use super::rate::Pace;
use crate::domain::backoff::{Backoff, Event, Gate};
use crate::store::queue::{Looked, SharedProvider};

/// The prefix of a transient delivery error that says the receiving side
/// asked to slow down (the plugin contract; `posta_plugin_sdk`'s
/// `DeliveryError::deferred` writes it).
pub const DEFERRED: &str = "deferred: ";

pub fn is_deferral(error: &str) -> bool {
    error.starts_with(DEFERRED)
}

/// How long a node goes by what it last saw of a shared backoff that was
/// clear before it looks again.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// How long a node waits before asking the database again, when it could
/// not reach it: a message is not sent on a guess.
const RETRY_STORAGE: Duration = Duration::from_millis(250);

/// Between looks for a free shared slot: short at first, as a slot is
/// freed by every call's end.
const SLOT_POLL_FIRST: Duration = Duration::from_millis(5);
const SLOT_POLL_MAX: Duration = Duration::from_millis(100);

pub(super) struct Provider {
    pub(super) name: String,
    config: crate::config::Provider,
    pace: Option<Pace>,
    /// `max_in_flight` on this node.
    slots: Option<Arc<Semaphore>>,
    backing: Backing,
    backing_off: metrics::Gauge,
    deferrals: metrics::Counter,
    delivered: metrics::Counter,
}

enum Backing {
    /// This process is the only sender.
    Local(Mutex<Backoff<Instant>>),
    /// Every node on the database shares it.
    Shared {
        shared: Arc<dyn SharedProvider>,
        /// Slots are shared too (`max_in_flight` set).
        slotted: bool,
        /// What this node last saw; its lock also makes one message at a
        /// time ask.
        seen: tokio::sync::Mutex<Seen>,
    },
}

#[derive(Default, Clone, Copy)]
struct Seen {
    /// When this node last asked (none: never).
    at: Option<Instant>,
    /// Messages wait until then (none: clear).
    wait_until: Option<Instant>,
    backoffs: u64,
}

impl Seen {
    /// The gate a message gets without asking, if what was seen still
    /// holds.
    fn still(&self, now: Instant) -> Option<Gate<Instant>> {
        match self.wait_until {
            Some(until) if until > now => Some(Gate::WaitUntil(until)),
            None if self.at.is_some_and(|at| now < at + LOOK_EVERY) => Some(Gate::Go),
            _ => None,
        }
    }

    fn saw(&mut self, now: Instant, looked: Looked) {
        self.at = Some(now);
        self.backoffs = looked.backoffs;
        self.wait_until = match looked.gate {
            Gate::Go => None,
            // This node probes: its other messages wait for the answer.
            Gate::Probe => Some(now + crate::domain::backoff::PROBE_LOOK),
            Gate::WaitUntil(wait) => Some(now + wait),
        };
    }
}

/// A message's turn at its provider: its `max_in_flight` slots, and
/// whether it is the probe.
pub(super) struct Turn {
    pub(super) probe: bool,
    _slot: Option<OwnedSemaphorePermit>,
    _shared_slot: Option<SharedSlot>,
}

/// A shared slot, given back when the turn ends (by a task: the database
/// may be slow or away, and a slot not given back would stay this node's
/// for as long as its lease holds).
struct SharedSlot {
    shared: Arc<dyn SharedProvider>,
    slot: i32,
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        let (shared, slot) = (self.shared.clone(), self.slot);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            for _ in 0..40 {
                match shared.give_slot(slot).await {
                    Ok(()) => return,
                    Err(_) => tokio::time::sleep(RETRY_STORAGE * 4).await,
                }
            }
            tracing::warn!(
                slot,
                "cannot give a provider slot back; it frees when this node's lease ends"
            );
        });
    }
}

impl Provider {
    /// Waits for this message's turn: the backoff over (or its probe), a
    /// free slot, its rate slot. While it waits it is parked out of its
    /// campaign's window (`run`). `None` when the server is stopping.
    pub(super) async fn turn(&self, stop: &Stop, run: &Arc<super::Run>) -> Option<Turn> {
        let mut parked = None;
        loop {
            let probe = match self.gate().await {
                Gate::Go => false,
                Gate::Probe => true,
                Gate::WaitUntil(at) => {
                    parked.get_or_insert_with(|| run.park());
                    if !stop.sleep(at.saturating_duration_since(Instant::now())).await {
                        return None;
                    }
                    continue;
                }
            };
            let slot = match &self.slots {
                Some(s) => Some(match s.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        parked.get_or_insert_with(|| run.park());
                        s.clone().acquire_owned().await.expect("never closed")
                    }
                }),
                None => None,
            };
            let shared_slot = match &self.backing {
                Backing::Shared {
                    shared, slotted: true, ..
                } => {
                    parked.get_or_insert_with(|| run.park());
                    Some(take_shared_slot(shared, stop).await?)
                }
                _ => None,
            };
            // A backoff may have begun while it waited for the slots: then
            // only the probe goes.
            if !probe && self.backing_off_now().await {
                if let Some(s) = shared_slot {
                    drop(s);
                }
                continue;
            }
            if let Some(pace) = &self.pace {
                // A limited provider's messages queue for their slots.
                parked.get_or_insert_with(|| run.park());
                pace.until_ready().await;
            }
            return Some(Turn {
                probe,
                _slot: slot,
                _shared_slot: shared_slot,
            });
        }
    }

    async fn gate(&self) -> Gate<Instant> {
        match &self.backing {
            Backing::Local(b) => b.lock().gate(Instant::now()),
            Backing::Shared { shared, seen, .. } => {
                let mut seen = seen.lock().await;
                let now = Instant::now();
                if let Some(gate) = seen.still(now) {
                    return gate;
                }
                match shared.backoff(Event::Turn).await {
                    Ok(looked) => {
                        seen.saw(now, looked);
                        looked.gate.map(|wait| now + wait)
                    }
                    Err(e) => {
                        tracing::debug!(provider = self.name, "provider backoff: {e}");
                        Gate::WaitUntil(now + RETRY_STORAGE)
                    }
                }
            }
        }
    }

    /// Whether messages wait now, by what this node knows.
    async fn backing_off_now(&self) -> bool {
        match &self.backing {
            Backing::Local(b) => b.lock().backing_off(),
            Backing::Shared { seen, .. } => seen.lock().await.wait_until.is_some_and(|t| t > Instant::now()),
        }
    }

    /// What the call taught of the provider (`delivered`: it took the
    /// message).
    pub(super) async fn answered(&self, turn: &Turn, event: Event, delivered: bool) {
        if let Event::Deferred { .. } = event {
            self.deferrals.increment(1);
        }
        if delivered {
            self.delivered.increment(1);
        }
        let (was, now_off) = match &self.backing {
            Backing::Local(b) => {
                let mut b = b.lock();
                let was = b.backing_off();
                b.apply(event, Instant::now());
                (was, b.backing_off())
            }
            Backing::Shared { shared, seen, .. } => {
                // Only a change is worth a round trip: an answer while
                // clear that was not a deferral changes nothing.
                let was = seen.lock().await.wait_until.is_some();
                if !turn.probe && !matches!(event, Event::Deferred { .. }) && !was {
                    return;
                }
                let now = Instant::now();
                match shared.backoff(event).await {
                    Ok(looked) => seen.lock().await.saw(now, looked),
                    // This node holds back by itself, and looks again.
                    Err(e) => {
                        tracing::warn!(provider = self.name, "provider backoff: {e}");
                        if let Event::Deferred { .. } = event {
                            let mut seen = seen.lock().await;
                            seen.wait_until = Some(now + crate::domain::backoff::FIRST_BACKOFF);
                        }
                    }
                }
                (was, seen.lock().await.wait_until.is_some())
            }
        };
        if !was && now_off {
            tracing::warn!(provider = self.name, "deferred: backing off the provider");
        } else if was && !now_off {
            tracing::info!(provider = self.name, "the provider takes messages again");
        }
        self.backing_off.set(if now_off { 1.0 } else { 0.0 });
    }

    /// Its configuration and state, as this node last saw it.
    pub(super) fn state(&self) -> ProviderState {
        let now = Instant::now();
        let (retry_at, backoffs) = match &self.backing {
            Backing::Local(b) => {
                let b = b.lock();
                (b.retry_at(now), b.backoffs)
            }
            Backing::Shared { seen, .. } => {
                let seen = seen.try_lock().map(|s| *s).unwrap_or_default();
                (seen.wait_until, seen.backoffs)
            }
        };
        ProviderState {
            name: self.name.clone(),
            domains: self.config.domains.clone(),
            rate_limit: self.config.rate_limit,
            max_in_flight: self.config.max_in_flight,
            backing_off: retry_at.is_some(),
            retry_in_seconds: retry_at.map(|at| at.saturating_duration_since(now).as_millis().div_ceil(1000) as u64),
            backoffs,
        }
    }
}

/// A mailbox provider as `GET /providers` and the dashboard show it: its
/// configuration, and its backoff as the serving node last saw it (on
/// PostgreSQL, within half a second while it has mail for it).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderState {
    pub name: String,
    /// The recipient domains it serves.
    pub domains: Vec<String>,
    /// Messages per minute to it, over every transport and node.
    pub rate_limit: Option<u32>,
    /// Calls to it under way at once, over every node.
    pub max_in_flight: Option<usize>,
    /// It deferred: its messages wait while one probe at a time decides.
    pub backing_off: bool,
    /// While backing off: seconds until the next probe may go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<u64>,
    /// Backoffs begun (since the server started; on PostgreSQL, ever).
    pub backoffs: u64,
}

/// Takes one of the provider's shared slots, looking again until one is
/// free; `None` when the server is stopping.
async fn take_shared_slot(shared: &Arc<dyn SharedProvider>, stop: &Stop) -> Option<SharedSlot> {
    let mut poll = SLOT_POLL_FIRST;
    loop {
        let wait = match shared.take_slot().await {
            Ok(Some(slot)) => {
                return Some(SharedSlot {
                    shared: shared.clone(),
                    slot,
                });
            }
            Ok(None) => {
                poll = (poll * 2).min(SLOT_POLL_MAX);
                poll
            }
            Err(_) => RETRY_STORAGE,
        };
        if !stop.sleep(wait).await {
            return None;
        }
    }
}

/// Providers by recipient domain.
#[derive(Default)]
pub(super) struct Providers {
    by_domain: HashMap<String, Arc<Provider>>,
    pub(super) all: Vec<Arc<Provider>>,
}

impl Providers {
    pub(super) async fn new(
        store: &crate::store::Store,
        queue: &dyn crate::store::queue::Queue,
        config: &std::collections::BTreeMap<String, crate::config::Provider>,
    ) -> Result<Providers, crate::store::StoreError> {
        let mut providers = Providers::default();
        for (name, p) in config {
            let labels = [("provider", name.clone())];
            let max_in_flight = p.max_in_flight.map(|n| n.max(1));
            let backing = match queue
                .provider(name, max_in_flight.map(|n| n.min(u32::MAX as usize) as u32))
                .await?
            {
                Some(shared) => Backing::Shared {
                    shared,
                    slotted: max_in_flight.is_some(),
                    seen: tokio::sync::Mutex::new(Seen::default()),
                },
                None => Backing::Local(Mutex::new(Backoff::default())),
            };
            let provider = Arc::new(Provider {
                name: name.clone(),
                config: p.clone(),
                pace: Pace::new(store, &format!("provider:{name}"), p.rate_limit).await?,
                slots: max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
                backing,
                backing_off: metrics::gauge!(crate::metrics::PROVIDER_BACKING_OFF, &labels),
                deferrals: metrics::counter!(crate::metrics::PROVIDER_DEFERRALS, &labels),
                delivered: metrics::counter!(crate::metrics::PROVIDER_DELIVERED, &labels),
            });
            for d in &p.domains {
                providers.by_domain.insert(d.to_ascii_lowercase(), provider.clone());
            }
            providers.all.push(provider);
        }
        Ok(providers)
    }

    /// The provider behind an address, if one is configured for its domain.
    pub(super) fn of(&self, email: &str) -> Option<&Arc<Provider>> {
        // Nothing to look up (and no lower-cased copy) without providers.
        if self.by_domain.is_empty() {
            return None;
        }
        let domain = email.rsplit_once('@')?.1.to_ascii_lowercase();
        self.by_domain.get(&domain)
    }
}
