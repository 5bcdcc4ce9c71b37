//! Mailbox providers (`[providers.NAME]`): the recipient domains behind
//! one provider, with its `rate_limit` (shared by every transport, and on
//! PostgreSQL by every node: a shared pace) and `max_in_flight` (per
//! node). When the provider defers a message (the transport says
//! `deferred:`, as the SMTP transport does for 421 and 4.7.x replies and
//! 450/451 ones about rates), the provider as a whole backs off:
//! messages to it wait, uncharged, and when the wait is over one of them
//! probes; a probe accepted ends the backoff, a probe deferred doubles it
//! (capped). Every other provider, and recipients of none, go on at full
//! speed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::job::Stop;
use super::rate::Pace;

/// The prefix of a transient delivery error that says the receiving side
/// asked to slow down (the plugin contract; `posta_plugin_sdk`'s
/// `DeliveryError::deferred` writes it).
pub const DEFERRED: &str = "deferred: ";

pub fn is_deferral(error: &str) -> bool {
    error.starts_with(DEFERRED)
}

/// The first backoff; each deferred probe doubles it up to the cap.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A provider's backoff. Pure; the caller gives the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    state: State,
    /// The current backoff's length.
    wait: Duration,
    /// Backoffs begun (from clear).
    pub backoffs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Clear,
    Waiting { until: Instant },
    Probing,
}

/// What a message to the provider may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Go, as the probe: its answer ends or extends the backoff.
    Probe,
    WaitUntil(Instant),
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            state: State::Clear,
            wait: FIRST_BACKOFF,
            backoffs: 0,
        }
    }
}

impl Backoff {
    /// A message's turn: go, go as the probe, or wait.
    pub fn gate(&mut self, now: Instant) -> Gate {
        match self.state {
            State::Clear => Gate::Go,
            State::Waiting { until } if until <= now => {
                self.state = State::Probing;
                Gate::Probe
            }
            State::Waiting { until } => Gate::WaitUntil(until),
            // The probe answers within a call; look again shortly.
            State::Probing => Gate::WaitUntil(now + Duration::from_millis(100)),
        }
    }

    /// Whether messages wait now (a backoff or its probe).
    pub fn backing_off(&self) -> bool {
        self.state != State::Clear
    }

    /// The provider deferred a message (`probe`: the probe's).
    pub fn deferred(&mut self, probe: bool, now: Instant) {
        match self.state {
            State::Clear => {
                self.backoffs += 1;
                self.wait = FIRST_BACKOFF;
                self.state = State::Waiting { until: now + self.wait };
            }
            State::Probing if probe => {
                self.wait = (self.wait * 2).min(MAX_BACKOFF);
                self.state = State::Waiting { until: now + self.wait };
            }
            // A call that started before the backoff: it changes nothing.
            _ => {}
        }
    }

    /// The provider took a message (or refused it for good: it answered).
    pub fn accepted(&mut self, probe: bool) {
        if probe || self.state == State::Clear {
            self.state = State::Clear;
            self.wait = FIRST_BACKOFF;
        }
    }

    /// A probe that told nothing (cancelled, stopped, the relay out):
    /// the next message probes.
    pub fn released(&mut self, probe: bool, now: Instant) {
        if probe && self.state == State::Probing {
            self.state = State::Waiting { until: now };
        }
    }

    /// Seconds until the next probe may go, while backing off.
    pub fn retry_in(&self, now: Instant) -> Option<u64> {
        match self.state {
            State::Clear => None,
            State::Waiting { until } => Some(until.saturating_duration_since(now).as_millis().div_ceil(1000) as u64),
            State::Probing => Some(0),
        }
    }
}

pub(super) struct Provider {
    pub(super) name: String,
    pace: Option<Pace>,
    slots: Option<Arc<Semaphore>>,
    backoff: Mutex<Backoff>,
    backing_off: metrics::Gauge,
    deferrals: metrics::Counter,
}

/// A message's turn at its provider: its `max_in_flight` slot, and
/// whether it is the probe.
pub(super) struct Turn {
    pub(super) probe: bool,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Provider {
    /// Waits for this message's turn: the backoff over (or its probe), a
    /// free slot, its rate slot. `None` when the server is stopping.
    pub(super) async fn turn(&self, stop: &Stop) -> Option<Turn> {
        loop {
            let gate = self.backoff.lock().gate(Instant::now());
            let probe = match gate {
                Gate::Go => false,
                Gate::Probe => true,
                Gate::WaitUntil(at) => {
                    if !stop.sleep(at.saturating_duration_since(Instant::now())).await {
                        return None;
                    }
                    continue;
                }
            };
            let slot = match &self.slots {
                Some(s) => Some(s.clone().acquire_owned().await.expect("never closed")),
                None => None,
            };
            // A backoff may have begun while it waited for the slot: then
            // only the probe goes.
            if !probe && self.backoff.lock().backing_off() {
                continue;
            }
            if let Some(pace) = &self.pace {
                pace.until_ready().await;
            }
            return Some(Turn { probe, _slot: slot });
        }
    }

    pub(super) fn deferred(&self, turn: &Turn) {
        let mut b = self.backoff.lock();
        let before = b.backoffs;
        b.deferred(turn.probe, Instant::now());
        self.deferrals.increment(1);
        if b.backoffs > before {
            tracing::warn!(provider = self.name, "deferred: backing off the provider");
        }
        self.backing_off.set(if b.backing_off() { 1.0 } else { 0.0 });
    }

    pub(super) fn accepted(&self, turn: &Turn) {
        let mut b = self.backoff.lock();
        let was = b.backing_off();
        b.accepted(turn.probe);
        if was && !b.backing_off() {
            tracing::info!(provider = self.name, "the provider takes messages again");
        }
        self.backing_off.set(if b.backing_off() { 1.0 } else { 0.0 });
    }

    pub(super) fn released(&self, turn: &Turn) {
        self.backoff.lock().released(turn.probe, Instant::now());
    }

    /// `(backing off, seconds until the next probe, backoffs so far)`.
    pub(super) fn state(&self) -> (bool, Option<u64>, u64) {
        let b = self.backoff.lock();
        (b.backing_off(), b.retry_in(Instant::now()), b.backoffs)
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
        config: &std::collections::BTreeMap<String, crate::config::Provider>,
    ) -> Result<Providers, crate::store::StoreError> {
        let mut providers = Providers::default();
        for (name, p) in config {
            let labels = [("provider", name.clone())];
            let provider = Arc::new(Provider {
                name: name.clone(),
                pace: Pace::new(store, &format!("provider:{name}"), p.rate_limit).await?,
                slots: p.max_in_flight.map(|n| Arc::new(Semaphore::new(n.max(1)))),
                backoff: Mutex::new(Backoff::default()),
                backing_off: metrics::gauge!(crate::metrics::PROVIDER_BACKING_OFF, &labels),
                deferrals: metrics::counter!(crate::metrics::PROVIDER_DEFERRALS, &labels),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferral_backs_the_provider_off_and_one_probe_at_a_time_decides() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.gate(t0), Gate::Go);
        b.deferred(false, t0);
        assert_eq!(b.gate(t0), Gate::WaitUntil(t0 + FIRST_BACKOFF));
        // Calls that started before it come back deferred too: no change.
        b.deferred(false, t0);
        assert_eq!(b.backoffs, 1);
        let t1 = t0 + FIRST_BACKOFF;
        assert_eq!(b.gate(t1), Gate::Probe);
        assert!(matches!(b.gate(t1), Gate::WaitUntil(_)), "one probe at a time");
        b.accepted(false);
        assert!(b.backing_off(), "only the probe's answer ends it");
        b.deferred(true, t1);
        assert_eq!(b.gate(t1), Gate::WaitUntil(t1 + FIRST_BACKOFF * 2), "doubled");
        let t2 = t1 + FIRST_BACKOFF * 2;
        assert_eq!(b.gate(t2), Gate::Probe);
        b.released(true, t2);
        assert_eq!(b.gate(t2), Gate::Probe, "a probe that told nothing hands its turn on");
        b.accepted(true);
        assert_eq!(b.gate(t2), Gate::Go);
        b.deferred(false, t2);
        assert_eq!(
            b.gate(t2),
            Gate::WaitUntil(t2 + FIRST_BACKOFF),
            "a new backoff starts short"
        );
    }

    #[test]
    fn the_backoff_is_capped() {
        let mut now = Instant::now();
        let mut b = Backoff::default();
        b.deferred(false, now);
        for _ in 0..20 {
            now += MAX_BACKOFF;
            assert_eq!(b.gate(now), Gate::Probe);
            b.deferred(true, now);
        }
        assert_eq!(b.gate(now), Gate::WaitUntil(now + MAX_BACKOFF));
    }
}
