//! A mailbox provider's backoff (`[providers.NAME]`): when the provider
//! defers a message, messages to it wait; when the wait is over one of
//! them probes; a probe accepted ends the backoff, a probe deferred
//! doubles it (capped). Generic over the clock: a process sending alone
//! keeps one on its monotonic clock, PostgreSQL nodes share one on the
//! database's (`store::queue::SharedProvider`), so both run these rules.

use std::ops::Add;
use std::time::Duration;

/// The first backoff; each deferred probe doubles it up to the cap.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long a probe may be out before another message probes in its
/// place: longer than any transport call, so only a probe whose node went
/// away mid-call is replaced.
pub const PROBE_LEASE: Duration = Duration::from_secs(120);

/// How soon a message looks again while another one probes: the probe
/// answers within a call.
pub const PROBE_LOOK: Duration = Duration::from_millis(100);

/// A point in time on some clock (`Instant`, `DateTime<Utc>`).
pub trait Moment: Copy + Ord + Add<Duration, Output = Self> {}
impl<T: Copy + Ord + Add<Duration, Output = T>> Moment for T {}

/// A provider's backoff on clock `T`. Pure; the caller gives the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff<T> {
    state: State<T>,
    /// The current backoff's length.
    wait: Duration,
    /// Backoffs begun (from clear).
    pub backoffs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State<T> {
    Clear,
    Waiting { until: T },
    Probing { lease: T },
}

/// What a message to the provider may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate<T> {
    Go,
    /// Go, as the probe: its answer ends or extends the backoff.
    Probe,
    WaitUntil(T),
}

impl<T> Gate<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Gate<U> {
        match self {
            Gate::Go => Gate::Go,
            Gate::Probe => Gate::Probe,
            Gate::WaitUntil(t) => Gate::WaitUntil(f(t)),
        }
    }
}

/// What happened at the provider (or a message's turn at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A message asks for its turn.
    Turn,
    /// The provider deferred a message (`probe`: the probe's).
    Deferred { probe: bool },
    /// The provider took a message, or refused it for good: it answered.
    Accepted { probe: bool },
    /// A call that told nothing (cancelled, stopped, the relay out).
    Released { probe: bool },
}

impl<T> Default for Backoff<T> {
    fn default() -> Backoff<T> {
        Backoff {
            state: State::Clear,
            wait: FIRST_BACKOFF,
            backoffs: 0,
        }
    }
}

impl<T: Moment> Backoff<T> {
    /// Applies `event` at `now`: for a turn, the gate it gets (maybe the
    /// probe's); for the others, what a message would find now.
    pub fn apply(&mut self, event: Event, now: T) -> Gate<T> {
        match event {
            Event::Turn => return self.gate(now),
            Event::Deferred { probe } => self.deferred(probe, now),
            Event::Accepted { probe } => self.accepted(probe),
            Event::Released { probe } => self.released(probe, now),
        }
        self.peek(now)
    }

    /// A message's turn: go, go as the probe, or wait.
    pub fn gate(&mut self, now: T) -> Gate<T> {
        match self.state {
            State::Clear => Gate::Go,
            State::Waiting { until } | State::Probing { lease: until } if until <= now => {
                self.state = State::Probing {
                    lease: now + PROBE_LEASE,
                };
                Gate::Probe
            }
            State::Waiting { until } => Gate::WaitUntil(until),
            State::Probing { .. } => Gate::WaitUntil(now + PROBE_LOOK),
        }
    }

    /// What a message would find now, changing nothing.
    pub fn peek(&self, now: T) -> Gate<T> {
        match self.state {
            State::Clear => Gate::Go,
            State::Waiting { until } => Gate::WaitUntil(until),
            State::Probing { .. } => Gate::WaitUntil(now + PROBE_LOOK),
        }
    }

    /// Whether messages wait now (a backoff or its probe).
    pub fn backing_off(&self) -> bool {
        self.state != State::Clear
    }

    pub fn deferred(&mut self, probe: bool, now: T) {
        match self.state {
            State::Clear => {
                self.backoffs += 1;
                self.wait = FIRST_BACKOFF;
                self.state = State::Waiting { until: now + self.wait };
            }
            State::Probing { .. } if probe => {
                self.wait = (self.wait * 2).min(MAX_BACKOFF);
                self.state = State::Waiting { until: now + self.wait };
            }
            // A call that started before the backoff: it changes nothing.
            _ => {}
        }
    }

    pub fn accepted(&mut self, probe: bool) {
        if probe || self.state == State::Clear {
            self.state = State::Clear;
            self.wait = FIRST_BACKOFF;
        }
    }

    /// A probe that told nothing: the next message probes.
    pub fn released(&mut self, probe: bool, now: T) {
        if probe && matches!(self.state, State::Probing { .. }) {
            self.state = State::Waiting { until: now };
        }
    }

    /// When the next probe may go, while backing off.
    pub fn retry_at(&self, now: T) -> Option<T> {
        match self.state {
            State::Clear => None,
            State::Waiting { until } => Some(until),
            State::Probing { .. } => Some(now),
        }
    }

    /// As stored: the state's name, its time (a wait's end, a probe's
    /// lease), the current backoff's length and the backoffs so far.
    pub fn parts(&self) -> (&'static str, Option<T>, Duration, u64) {
        let (name, at) = match self.state {
            State::Clear => ("clear", None),
            State::Waiting { until } => ("waiting", Some(until)),
            State::Probing { lease } => ("probing", Some(lease)),
        };
        (name, at, self.wait, self.backoffs)
    }

    /// From `parts`; anything unreadable is clear.
    pub fn from_parts(state: &str, at: Option<T>, wait: Duration, backoffs: u64) -> Backoff<T> {
        let state = match (state, at) {
            ("waiting", Some(until)) => State::Waiting { until },
            ("probing", Some(lease)) => State::Probing { lease },
            _ => State::Clear,
        };
        Backoff {
            state,
            wait: wait.clamp(FIRST_BACKOFF, MAX_BACKOFF),
            backoffs,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

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

    /// A node that went away while probing leaves the probe out: after its
    /// lease another message probes.
    #[test]
    fn a_lost_probe_is_replaced_after_its_lease() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        b.deferred(false, t0);
        let t1 = t0 + FIRST_BACKOFF;
        assert_eq!(b.apply(Event::Turn, t1), Gate::Probe);
        assert_eq!(
            b.apply(Event::Turn, t1 + PROBE_LEASE / 2),
            Gate::WaitUntil(t1 + PROBE_LEASE / 2 + PROBE_LOOK)
        );
        assert_eq!(b.apply(Event::Turn, t1 + PROBE_LEASE), Gate::Probe);
    }

    /// What the database stores reads back as the same backoff, on its
    /// clock.
    #[test]
    fn a_stored_backoff_reads_back_the_same() {
        let t0 = chrono::Utc::now();
        let mut b = Backoff::default();
        b.deferred(false, t0);
        b.gate(t0 + FIRST_BACKOFF);
        b.deferred(true, t0 + FIRST_BACKOFF);
        let (state, at, wait, backoffs) = b.parts();
        assert_eq!((state, wait, backoffs), ("waiting", FIRST_BACKOFF * 2, 1));
        assert_eq!(Backoff::from_parts(state, at, wait, backoffs), b);
        assert_eq!(
            Backoff::<Instant>::from_parts("nonsense", None, Duration::ZERO, 3),
            Backoff {
                backoffs: 3,
                ..Backoff::default()
            }
        );
    }
}
